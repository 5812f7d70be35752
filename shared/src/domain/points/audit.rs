//! The ledger audit reconcile runs on every changed account.

use serde::Serialize;

use super::ledger::{Account, Entry};
use super::lots_total;

/// Something wrong with an account's ledger, found by [`audit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// Entry `seq` values skip or repeat.
    SeqGap { expected: u64, found: u64 },
    /// An entry's `balance_before` is not the previous entry's `balance_after`.
    BrokenChain {
        seq: u64,
        balance_before: u64,
        previous_balance_after: u64,
    },
    /// An entry's `amount` is not `balance_after - balance_before`.
    AmountMismatch {
        seq: u64,
        amount: i64,
        balance_before: u64,
        balance_after: u64,
    },
    /// The account's balance is not the sum of its entries.
    BalanceMismatch { balance: u64, sum_of_entries: i128 },
    /// The account's `seq` is not the newest entry's.
    SeqMismatch {
        account_seq: u64,
        newest_entry_seq: u64,
    },
    /// The account's lots, available and held, do not add up to its balance.
    LotsMismatch { balance: u64, sum_of_lots: u128 },
    /// An entry's `held_before` is not the previous entry's `held_after`.
    BrokenHeldChain {
        seq: u64,
        held_before: u64,
        previous_held_after: u64,
    },
    /// The points in open holds are not the newest entry's `held_after`.
    HeldMismatch { held: u64, newest_held_after: u64 },
    /// An entry's `booked_at` is not a time, or is before its `created_at`
    /// or the previous entry's `booked_at` (only entries that carry one are checked).
    BookedOutOfOrder {
        seq: u64,
        booked_at: String,
        previous_booked_at: String,
    },
}

/// Checks an account against its entries (oldest first): `seq` gapless from 1,
/// each `balance_before` the previous `balance_after`, each amount the difference,
/// each `held_before` the previous `held_after`, and the balance, points held,
/// `seq` and lots agreeing with the newest entry.
pub fn audit(account: &Account, entries: &[Entry]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut previous_after = 0u64;
    let mut previous_held_after = 0u64;
    // Stored numbers may be anything a hand edit made them: sums are taken wide.
    let mut sum = 0i128;
    let mut previous_booked: Option<(time::OffsetDateTime, &str)> = None;
    for (i, entry) in entries.iter().enumerate() {
        if let Some(booked_at) = &entry.booked_at {
            let booked = entry.booked_time();
            let created = crate::domain::timestamp::parse(&entry.created_at);
            let ordered = match (booked, previous_booked) {
                (Some(booked), Some((previous, _))) => booked >= previous,
                (Some(_), None) => true,
                (None, _) => false,
            } && created.is_none_or(|created| booked.is_some_and(|b| b >= created));
            if !ordered {
                findings.push(Finding::BookedOutOfOrder {
                    seq: entry.seq,
                    booked_at: booked_at.clone(),
                    previous_booked_at: previous_booked
                        .map_or_else(String::new, |(_, text)| text.to_owned()),
                });
            }
            previous_booked = booked.map(|b| (b, booked_at.as_str()));
        }
        let expected = i as u64 + 1; // a ledger never holds 2^64 entries
        if entry.seq != expected {
            findings.push(Finding::SeqGap {
                expected,
                found: entry.seq,
            });
        }
        if entry.balance_before != previous_after {
            findings.push(Finding::BrokenChain {
                seq: entry.seq,
                balance_before: entry.balance_before,
                previous_balance_after: previous_after,
            });
        }
        if i128::from(entry.balance_after) - i128::from(entry.balance_before)
            != i128::from(entry.amount)
        {
            findings.push(Finding::AmountMismatch {
                seq: entry.seq,
                amount: entry.amount,
                balance_before: entry.balance_before,
                balance_after: entry.balance_after,
            });
        }
        if entry.held_before != previous_held_after {
            findings.push(Finding::BrokenHeldChain {
                seq: entry.seq,
                held_before: entry.held_before,
                previous_held_after,
            });
        }
        previous_after = entry.balance_after;
        previous_held_after = entry.held_after;
        sum += i128::from(entry.amount);
    }
    if sum != i128::from(account.balance) {
        findings.push(Finding::BalanceMismatch {
            balance: account.balance,
            sum_of_entries: sum,
        });
    }
    let newest_entry_seq = entries.last().map_or(0, |e| e.seq);
    if account.seq != newest_entry_seq {
        findings.push(Finding::SeqMismatch {
            account_seq: account.seq,
            newest_entry_seq,
        });
    }
    if account.held() != previous_held_after {
        findings.push(Finding::HeldMismatch {
            held: account.held(),
            newest_held_after: previous_held_after,
        });
    }
    let sum_of_lots: u128 = lots_total(&account.lots)
        + account
            .holds
            .values()
            .map(|hold| lots_total(&hold.lots))
            .sum::<u128>();
    if sum_of_lots != u128::from(account.balance) {
        findings.push(Finding::LotsMismatch {
            balance: account.balance,
            sum_of_lots,
        });
    }
    findings
}
