//! How accounts change, and the entries that explain each change.
//!
//! Grants add a lot; spends, outgoing transfers and debit adjustments take from
//! the available lots that expire soonest; a transfer hands the taken lots,
//! expiry dates included, to the receiver. A **hold** moves points from the
//! available lots into the hold, lots and all: they stay in the balance but
//! cannot be spent, transferred or held again. A capture spends all or part of
//! them (soonest expiring first) and returns the rest; a release returns all; a
//! hold past its expiry is released by the next write to its account (or by
//! reconcile). Held points still expire at their lot's time, like any points:
//! the hold then holds less. A refund gives back what a spend or capture took,
//! latest-expiring first, each point with the expiry it had; points whose
//! expiry has passed expire again at once, so a return never lengthens a
//! point's life.
//!
//! Every change appends one entry per step to each account it touches: `seq`
//! is the previous one plus one, `balance_before` / `held_before` the previous
//! entry's `balance_after` / `held_after`, so `balance` and `held` can both be
//! recomputed from the ledger.
//!
//! `account` holds an account's state and its lots, `entry` the entries,
//! `planning` the rule of each operation.

mod account;
mod entry;
mod planning;

pub use account::{Account, MAX_OPEN_HOLDS, OpenHold};
pub use entry::{Entry, EntryKind};
pub use planning::{
    AccountChange, LinkedUpdate, Plan, Snapshot, close_for_erasure, plan, settle_due,
};

#[cfg(test)]
mod tests;
