//! An account's state: its balance, its available lots, its open holds, and
//! how points are taken from lots (soonest or latest expiring first).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::ids::{OperationId, Reference};
use crate::domain::points::operation::Rejection;
use crate::domain::points::{Expiry, Lots, MAX_BALANCE, lots_total};
use crate::domain::timestamp;

/// Holds one account may have open at once (each is kept in the account item).
pub const MAX_OPEN_HOLDS: usize = 100;

/// Points reserved for a checkout, with the lots they came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenHold {
    pub lots: Lots,
    #[serde(with = "timestamp::serde_fixed")]
    pub expires_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
}

impl OpenHold {
    pub fn amount(&self) -> u64 {
        u64::try_from(lots_total(&self.lots)).unwrap_or(u64::MAX)
    }
}

/// An account's current state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    /// Every point the account owns, held ones included.
    pub balance: u64,
    /// `seq` of the newest entry; 0 for an account without entries.
    pub seq: u64,
    /// The available points, by expiry.
    pub lots: Lots,
    /// Open holds by id (the id of the operation that placed each).
    pub holds: BTreeMap<OperationId, OpenHold>,
    /// The newest entry's `booked_at` (`None` before the first, or on an
    /// account last written before entries had one).
    pub booked_at: Option<OffsetDateTime>,
}

impl Account {
    /// Points in open holds.
    pub fn held(&self) -> u64 {
        self.holds
            .values()
            .fold(0u64, |sum, hold| sum.saturating_add(hold.amount()))
    }

    /// Points that may be spent, transferred or held.
    pub fn available(&self) -> u64 {
        self.balance.saturating_sub(self.held())
    }

    /// The account as it stands at `now`: holds past their expiry are released
    /// and lots past theirs are gone, whether or not their entries were written
    /// yet (SPEC section 3).
    pub fn as_of(&self, now: OffsetDateTime) -> Account {
        let mut current = self.clone();
        for hold_id in self.holds_due(now) {
            if let Some(hold) = current.holds.remove(&hold_id) {
                current.return_lots(&hold.lots);
            }
        }
        current.remove_due(now);
        current
    }

    /// The open holds whose expiry has passed at `now`.
    pub(super) fn holds_due(&self, now: OffsetDateTime) -> Vec<OperationId> {
        self.holds
            .iter()
            .filter(|(_, hold)| hold.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// When something next falls due: a lot's expiry (available or held) or a
    /// hold's. The expiry run finds the account by it.
    pub fn next_expiry(&self) -> Option<OffsetDateTime> {
        let held = self.holds.values().flat_map(|hold| {
            expiring(&hold.lots)
                .map(|(at, _)| at)
                .chain(std::iter::once(hold.expires_at))
        });
        expiring(&self.lots).map(|(at, _)| at).chain(held).min()
    }

    /// The available lots that expire, soonest first (points that never expire
    /// are left out).
    pub fn expiring(&self) -> impl Iterator<Item = (OffsetDateTime, u64)> + '_ {
        expiring(&self.lots)
    }

    pub(super) fn add_lots(&mut self, lots: &Lots) -> Result<(), Rejection> {
        for (expiry, amount) in lots {
            let balance = self
                .balance
                .checked_add(*amount)
                .filter(|balance| *balance <= MAX_BALANCE)
                .ok_or(Rejection::BalanceLimitExceeded)?;
            let lot = self.lots.entry(*expiry).or_default();
            *lot = lot
                .checked_add(*amount)
                .ok_or(Rejection::BalanceLimitExceeded)?;
            self.balance = balance;
        }
        Ok(())
    }

    /// Puts held lots back among the available ones (the balance already counts them).
    pub(super) fn return_lots(&mut self, lots: &Lots) {
        for (expiry, amount) in lots {
            let lot = self.lots.entry(*expiry).or_default();
            *lot = lot.saturating_add(*amount);
        }
    }

    /// Takes `amount` available points, soonest expiring first, out of the balance.
    pub(super) fn take_available(&mut self, amount: u64) -> Result<Lots, Rejection> {
        if self.available() < amount {
            return Err(Rejection::InsufficientPoints);
        }
        let taken = split_soonest(&mut self.lots, amount);
        // Lots always sum to the available points; if they ever did not, the debit is still exact.
        self.balance -= amount;
        Ok(taken)
    }

    /// Removes the lots due at `now`, available and held; answers how many
    /// points fell due at each moment, soonest first.
    pub(super) fn remove_due(&mut self, now: OffsetDateTime) -> BTreeMap<OffsetDateTime, u64> {
        let mut due = BTreeMap::new();
        let mut take_due = |lots: &mut Lots| {
            for (at, amount) in expiring(lots).take_while(|(at, _)| *at <= now) {
                let sum = due.entry(at).or_insert(0u64);
                *sum = sum.saturating_add(amount);
            }
            lots.retain(|expiry, _| !matches!(expiry, Expiry::At(at) if *at <= now));
        };
        take_due(&mut self.lots);
        for hold in self.holds.values_mut() {
            take_due(&mut hold.lots);
        }
        let total = due
            .values()
            .fold(0u64, |sum, amount| sum.saturating_add(*amount));
        self.balance = self.balance.saturating_sub(total);
        due
    }
}

fn expiring(lots: &Lots) -> impl Iterator<Item = (OffsetDateTime, u64)> + '_ {
    lots.iter().filter_map(|(expiry, amount)| match expiry {
        Expiry::At(at) => Some((*at, *amount)),
        Expiry::Never => None,
    })
}

/// Takes up to `amount` from `lots`, soonest expiring first (spends, holds,
/// captures); answers what it took.
pub(super) fn split_soonest(lots: &mut Lots, amount: u64) -> Lots {
    let taken = take_in_order(lots.iter_mut(), amount);
    lots.retain(|_, held| *held > 0);
    taken
}

/// Takes `amount` from `lots`, latest expiring first (a refund undoes a spend
/// from its last-taken points back).
pub(super) fn split_latest(lots: &mut Lots, amount: u64) -> Lots {
    let taken = take_in_order(lots.iter_mut().rev(), amount);
    lots.retain(|_, held| *held > 0);
    taken
}

fn take_in_order<'a>(lots: impl Iterator<Item = (&'a Expiry, &'a mut u64)>, amount: u64) -> Lots {
    let mut left = amount;
    let mut taken = Lots::new();
    for (expiry, held) in lots {
        if left == 0 {
            break;
        }
        let take = left.min(*held);
        *held -= take;
        left -= take;
        if take > 0 {
            taken.insert(*expiry, take);
        }
    }
    taken
}
