//! A ledger entry, and the kinds of entry there are.

use serde::{Deserialize, Serialize};

use crate::domain::ids::{OperationId, Reference, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Grant,
    Spend,
    TransferIn,
    TransferOut,
    Expire,
    Adjust,
    Hold,
    Capture,
    Release,
    Refund,
    /// The account closed by erasure (SPEC section 9): its remaining points leave.
    Erase,
}

impl EntryKind {
    /// The kind as the API writes it.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::Spend => "spend",
            EntryKind::TransferIn => "transfer_in",
            EntryKind::TransferOut => "transfer_out",
            EntryKind::Expire => "expire",
            EntryKind::Adjust => "adjust",
            EntryKind::Hold => "hold",
            EntryKind::Capture => "capture",
            EntryKind::Release => "release",
            EntryKind::Refund => "refund",
            EntryKind::Erase => "erase",
        }
    }
}

/// One line of an account's ledger. Never edited, never deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    pub kind: EntryKind,
    /// The change to the balance: `balance_after - balance_before`.
    pub amount: i64,
    pub balance_before: u64,
    pub balance_after: u64,
    /// Points held by open holds before and after this entry.
    #[serde(default)]
    pub held_before: u64,
    #[serde(default)]
    pub held_after: u64,
    pub operation_id: OperationId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterparty: Option<UserId>,
    /// The hold a `hold`, `capture` or `release` entry is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<OperationId>,
    /// The operation a `refund` gives back from, as the refund named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_of: Option<OperationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// On a `release` that the hold's expiry wrote (not a caller's release):
    /// what the `Hold Expired` event is published from.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold_expired: bool,
    pub created_at: String,
    /// When the entry counts in the balance (`?at=`, statements, leaderboards):
    /// when the ledger took it (the clock of the worker or reconcile run that
    /// wrote it), or its `created_at` or the previous entry's `booked_at` if
    /// either is later. An operation accepted earlier may apply after a later
    /// one (an expiry written first, a transfer from a busy account, a message
    /// re-driven), and `created_at` then goes back along a ledger; booked
    /// times never do, and none is ever in a past already answered for: a
    /// balance at an instant is one the ledger held then, and stays so.
    /// Absent on entries written before it existed: read [`Entry::booked`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booked_at: Option<String>,
}

impl Entry {
    /// When the entry counts: `booked_at`, or `created_at` on an older entry.
    pub fn booked(&self) -> &str {
        self.booked_at.as_deref().unwrap_or(&self.created_at)
    }

    /// [`booked`](Self::booked) as a time (`None` if the stored text is not one).
    pub fn booked_time(&self) -> Option<time::OffsetDateTime> {
        crate::domain::timestamp::parse(self.booked())
    }
}
