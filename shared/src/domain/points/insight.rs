//! Points insight (SPEC section 3): the balance at an instant, statements, and
//! points earned per period for leaderboards. Pure rules over ledger entries;
//! the store finds the entries.
//!
//! Every rule here reads an entry's booked time ([`Entry::booked`]), which never
//! goes back along a ledger: the balance at an instant is the one after the
//! last entry booked at or before it, a statement from `from` to `to` lists the
//! entries booked after `from` and at or before `to`, so its opening balance is
//! the balance at `from` and its closing balance the balance at `to`.

use std::collections::BTreeMap;

use serde::Serialize;
use time::{Duration, OffsetDateTime, Time};

use super::ledger::{Entry, EntryKind};
use crate::domain::ids::UserId;
use crate::domain::timestamp;

/// The longest window a statement covers: a year, leap day included.
pub const MAX_STATEMENT_DAYS: i64 = 366;
/// The most entries a leaderboard page lists.
pub const MAX_LEADERBOARD_LIMIT: usize = 100;
/// A leaderboard lists this many unless asked otherwise.
pub const DEFAULT_LEADERBOARD_LIMIT: usize = 10;

/// A query parameter of an insight route that Tally cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInsight {
    #[error("period must be one of day, week, month, all; got {0:?}")]
    UnknownPeriod(String),
    #[error("{name} {text:?} is not an RFC 3339 time")]
    NotATime { name: &'static str, text: String },
    #[error("{name} {at} is in the future (now {now}): no ledger knows it yet")]
    InTheFuture {
        name: &'static str,
        at: String,
        now: String,
    },
    #[error("from {from} must be before to {to}")]
    Inverted { from: String, to: String },
    #[error("a statement covers at most {MAX_STATEMENT_DAYS} days; {from} to {to} is longer")]
    TooLong { from: String, to: String },
    #[error("limit must be a whole number from 1 to {MAX_LEADERBOARD_LIMIT}, got {0:?}")]
    Limit(String),
}

impl InvalidInsight {
    /// The problem `code` the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            InvalidInsight::UnknownPeriod(_) => "invalid_period",
            InvalidInsight::NotATime { .. } => "invalid_time",
            InvalidInsight::InTheFuture { .. } => "time_in_future",
            InvalidInsight::Inverted { .. } => "invalid_window",
            InvalidInsight::TooLong { .. } => "window_too_long",
            InvalidInsight::Limit(_) => "invalid_limit",
        }
    }
}

/// Reads an instant a caller named (`at`, `from`, `to`): RFC 3339, not after `now`.
pub fn past_instant(
    name: &'static str,
    text: &str,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, InvalidInsight> {
    let at = timestamp::parse(text)
        // In UTC, within the fixed-width years: no ledger holds an entry
        // outside them (and converting one past year 9999 would panic).
        .and_then(|at| at.checked_to_offset(time::UtcOffset::UTC))
        .filter(|at| (0..=9999).contains(&at.year()))
        .ok_or_else(|| InvalidInsight::NotATime {
            name,
            text: text.to_owned(),
        })?;
    if at > now {
        return Err(InvalidInsight::InTheFuture {
            name,
            at: timestamp::format(at),
            now: timestamp::format(now),
        });
    }
    Ok(at)
}

/// A statement's window: entries booked after `from`, up to and including `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
}

impl Window {
    /// Reads `from` and `to` (`to` defaults to `now`): both in the past, `from`
    /// before `to`, at most [`MAX_STATEMENT_DAYS`] apart.
    pub fn parse(
        from: &str,
        to: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Self, InvalidInsight> {
        let from = past_instant("from", from, now)?;
        let to = match to {
            Some(to) => past_instant("to", to, now)?,
            None => now,
        };
        let texts = || (timestamp::format(from), timestamp::format(to));
        if from >= to {
            let (from, to) = texts();
            return Err(InvalidInsight::Inverted { from, to });
        }
        if to - from > Duration::days(MAX_STATEMENT_DAYS) {
            let (from, to) = texts();
            return Err(InvalidInsight::TooLong { from, to });
        }
        Ok(Window { from, to })
    }
}

/// An account as one entry left it: what `?at=` and a statement's ends show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Standing {
    /// The entry it is after (0: before the first).
    pub seq: u64,
    pub balance: u64,
    pub held: u64,
    pub available: u64,
}

impl Standing {
    /// After `entry`; zeros before the first.
    pub fn after(entry: Option<&Entry>) -> Self {
        entry.map_or_else(Standing::default, |entry| Standing {
            seq: entry.seq,
            balance: entry.balance_after,
            held: entry.held_after,
            available: entry.balance_after.saturating_sub(entry.held_after),
        })
    }
}

/// The sum of `amount` by entry kind (every kind present, a hold's 0 too):
/// opening balance plus every total is the closing balance.
pub fn totals_by_kind(entries: &[Entry]) -> BTreeMap<&'static str, i64> {
    let mut totals = BTreeMap::new();
    for entry in entries {
        let total = totals.entry(entry.kind.name()).or_insert(0i64);
        *total = total.saturating_add(entry.amount);
    }
    totals
}

/// A leaderboard's period: the UTC day, the ISO week (from Monday), the UTC
/// month, or all time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    Day,
    Week,
    Month,
    All,
}

impl Period {
    pub const EVERY: [Period; 4] = [Period::Day, Period::Week, Period::Month, Period::All];

    pub fn parse(text: &str) -> Result<Self, InvalidInsight> {
        Period::EVERY
            .into_iter()
            .find(|period| period.name() == text)
            .ok_or_else(|| InvalidInsight::UnknownPeriod(text.to_owned()))
    }

    pub fn name(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::All => "all",
        }
    }

    /// When the period holding `at` starts (`None`: all time).
    pub fn start(self, at: OffsetDateTime) -> Option<OffsetDateTime> {
        let day = at
            .checked_to_offset(time::UtcOffset::UTC)?
            .replace_time(Time::MIDNIGHT);
        match self {
            Period::Day => Some(day),
            Period::Week => {
                Some(day - Duration::days(day.weekday().number_days_from_monday().into()))
            }
            Period::Month => day.replace_day(1).ok(),
            Period::All => None,
        }
    }

    /// When the period holding `at` ends (`None`: never).
    pub fn end(self, at: OffsetDateTime) -> Option<OffsetDateTime> {
        let start = self.start(at)?;
        match self {
            Period::Day => start.checked_add(Duration::days(1)),
            Period::Week => start.checked_add(Duration::weeks(1)),
            Period::Month => {
                let (year, month) = match start.month() {
                    time::Month::December => (start.year() + 1, time::Month::January),
                    month => (start.year(), month.next()),
                };
                start.replace_year(year).ok()?.replace_month(month).ok()
            }
            Period::All => None,
        }
    }

    /// Names the leaderboard of the period holding `at`: `day#2026-12-04`,
    /// `week#2026-11-30` (its Monday), `month#2026-12`, `all`.
    pub fn board(self, at: OffsetDateTime) -> String {
        let Some(start) = self.start(at) else {
            return "all".to_owned();
        };
        let date = start.date();
        match self {
            Period::Month => format!("month#{:04}-{:02}", date.year(), u8::from(date.month())),
            _ => format!(
                "{}#{:04}-{:02}-{:02}",
                self.name(),
                date.year(),
                u8::from(date.month()),
                date.day()
            ),
        }
    }
}

/// What an entry adds to "points earned": grants, incoming transfers and
/// credit adjustments. Refunds give back what was spent, so they do not count;
/// neither do debits, expiry, holds or erasure.
pub fn earned(entry: &Entry) -> u64 {
    match entry.kind {
        EntryKind::Grant | EntryKind::TransferIn | EntryKind::Adjust => {
            entry.amount.max(0).unsigned_abs()
        }
        _ => 0,
    }
}

/// Points earned in the period holding `now`, by the entries booked up to
/// `now`, with the board it belongs on; `None` for a period with nothing earned.
pub fn earned_in(entries: &[Entry], period: Period, now: OffsetDateTime) -> Option<(String, u64)> {
    let start = period.start(now);
    let total = entries
        .iter()
        .filter(|entry| {
            entry
                .booked_time()
                .is_some_and(|booked| booked <= now && start.is_none_or(|start| booked >= start))
        })
        .fold(0u64, |sum, entry| sum.saturating_add(earned(entry)));
    (total > 0).then(|| (period.board(now), total))
}

/// One line of a leaderboard: competition ranking (equal points, equal rank;
/// the next rank skips), ties listed by user id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ranked {
    pub rank: u64,
    pub user_id: UserId,
    pub earned: u64,
}

/// Ranks a leaderboard's first lines, given most earned first.
pub fn rank(lines: Vec<(UserId, u64)>) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = Vec::with_capacity(lines.len());
    for (i, (user_id, earned)) in lines.into_iter().enumerate() {
        let rank = match ranked.last() {
            Some(last) if last.earned == earned => last.rank,
            _ => i as u64 + 1,
        };
        ranked.push(Ranked {
            rank,
            user_id,
            earned,
        });
    }
    ranked
}

/// Reads a leaderboard's `limit`: 1 to [`MAX_LEADERBOARD_LIMIT`].
pub fn leaderboard_limit(text: Option<&str>) -> Result<usize, InvalidInsight> {
    let Some(text) = text else {
        return Ok(DEFAULT_LEADERBOARD_LIMIT);
    };
    text.parse::<usize>()
        .ok()
        .filter(|limit| (1..=MAX_LEADERBOARD_LIMIT).contains(limit))
        .ok_or_else(|| InvalidInsight::Limit(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::OperationId;
    use time::macros::datetime;

    fn entry(seq: u64, kind: EntryKind, amount: i64, booked: OffsetDateTime) -> Entry {
        Entry {
            seq,
            kind,
            amount,
            balance_before: 0,
            balance_after: 0,
            held_before: 0,
            held_after: 0,
            operation_id: OperationId::parse(format!("op{seq}")).unwrap(),
            point_type: None,
            counterparty: None,
            hold_id: None,
            refund_of: None,
            reference: None,
            description: None,
            hold_expired: false,
            created_at: timestamp::format(booked),
            booked_at: Some(timestamp::format(booked)),
        }
    }

    #[test]
    fn periods_start_at_utc_midnight_monday_and_the_first() {
        let at = datetime!(2026-12-04 15:30 +02:00); // a Friday
        assert_eq!(Period::Day.start(at), Some(datetime!(2026-12-04 0:00 UTC)));
        assert_eq!(Period::Week.start(at), Some(datetime!(2026-11-30 0:00 UTC)));
        assert_eq!(
            Period::Month.start(at),
            Some(datetime!(2026-12-01 0:00 UTC))
        );
        assert_eq!(Period::Month.end(at), Some(datetime!(2027-01-01 0:00 UTC)));
        assert_eq!(Period::Week.end(at), Some(datetime!(2026-12-07 0:00 UTC)));
        assert_eq!(Period::All.start(at), None);
        assert_eq!(Period::Day.board(at), "day#2026-12-04");
        assert_eq!(Period::Week.board(at), "week#2026-11-30");
        assert_eq!(Period::Month.board(at), "month#2026-12");
        assert_eq!(Period::All.board(at), "all");
        // 23:30 on the 4th at -01:00 is already the 5th in UTC.
        let late = datetime!(2026-12-04 23:30 -01:00);
        assert_eq!(Period::Day.board(late), "day#2026-12-05");
        assert_eq!(
            Period::parse("fortnight").unwrap_err().code(),
            "invalid_period"
        );
        assert_eq!(Period::parse("Day").unwrap_err().code(), "invalid_period");
    }

    #[test]
    fn earned_counts_grants_incoming_transfers_and_credits_only() {
        let t = datetime!(2026-12-04 10:00 UTC);
        let entries = vec![
            entry(1, EntryKind::Grant, 100, t - Duration::days(40)),
            entry(2, EntryKind::Grant, 50, t - Duration::days(3)),
            entry(3, EntryKind::TransferIn, 20, t - Duration::hours(2)),
            entry(4, EntryKind::Adjust, 7, t - Duration::hours(1)),
            entry(5, EntryKind::Adjust, -5, t - Duration::hours(1)),
            entry(6, EntryKind::Refund, 30, t - Duration::hours(1)),
            entry(7, EntryKind::Spend, -10, t - Duration::hours(1)),
            entry(8, EntryKind::Grant, 1000, t + Duration::seconds(1)),
        ];
        assert_eq!(
            earned_in(&entries, Period::Day, t),
            Some(("day#2026-12-04".into(), 27))
        );
        assert_eq!(
            earned_in(&entries, Period::Week, t),
            Some(("week#2026-11-30".into(), 77))
        );
        assert_eq!(
            earned_in(&entries, Period::All, t),
            Some(("all".into(), 177))
        );
        assert_eq!(earned_in(&entries[4..7], Period::All, t), None);
    }

    #[test]
    fn ties_share_a_rank_and_the_next_rank_skips() {
        let u = |name: &str| UserId::parse(name).unwrap();
        let ranked = rank(vec![(u("a"), 9), (u("b"), 5), (u("c"), 5), (u("d"), 1)]);
        let ranks: Vec<u64> = ranked.iter().map(|r| r.rank).collect();
        assert_eq!(ranks, [1, 2, 2, 4]);
    }

    #[test]
    fn windows_are_past_ordered_and_at_most_a_year() {
        let now = datetime!(2026-12-04 10:00 UTC);
        let w = Window::parse("2026-11-01T00:00:00Z", Some("2026-12-01T00:00:00Z"), now).unwrap();
        assert_eq!(w.to - w.from, Duration::days(30));
        assert_eq!(
            Window::parse("2026-11-01T00:00:00Z", None, now).unwrap().to,
            now
        );
        let code = |from: &str, to: Option<&str>| Window::parse(from, to, now).unwrap_err().code();
        assert_eq!(
            code("2026-12-01T00:00:00Z", Some("2026-11-01T00:00:00Z")),
            "invalid_window"
        );
        assert_eq!(
            code("2026-12-01T00:00:00Z", Some("2026-12-01T00:00:00Z")),
            "invalid_window"
        );
        assert_eq!(
            code("2025-12-01T00:00:00Z", Some("2026-12-03T00:00:00Z")),
            "window_too_long"
        );
        assert_eq!(
            code("2026-12-01T00:00:00Z", Some("2026-12-05T00:00:00Z")),
            "time_in_future"
        );
        assert_eq!(code("yesterday", None), "invalid_time");
        assert_eq!(code("2026-12-01", None), "invalid_time");
        // A leap year's 366 days is the longest window.
        assert!(Window::parse("2023-12-04T10:00:00Z", Some("2024-12-04T10:00:00Z"), now).is_ok());
        assert_eq!(
            past_instant("at", "2026-12-04T10:00:00.000001Z", now)
                .unwrap_err()
                .code(),
            "time_in_future"
        );
        // Past year 9999 in UTC: refused, not a panic.
        for text in ["9999-12-31T23:59:59-01:00", "0000-01-01T00:30:00+01:00"] {
            assert_eq!(
                past_instant("at", text, now).unwrap_err().code(),
                "invalid_time"
            );
        }
        assert_eq!(
            past_instant("at", "2026-12-04T12:00:00+02:00", now),
            Ok(now)
        );
    }

    #[test]
    fn totals_by_kind_add_the_opening_to_the_closing() {
        let t = datetime!(2026-12-04 10:00 UTC);
        let entries = vec![
            entry(1, EntryKind::Grant, 100, t),
            entry(2, EntryKind::Hold, 0, t),
            entry(3, EntryKind::Capture, -30, t),
            entry(4, EntryKind::Grant, 5, t),
        ];
        let totals = totals_by_kind(&entries);
        assert_eq!(totals.get("grant"), Some(&105));
        assert_eq!(totals.get("hold"), Some(&0));
        assert_eq!(totals.values().sum::<i64>(), 75);
    }

    #[test]
    fn leaderboard_limits_are_1_to_100() {
        assert_eq!(leaderboard_limit(None), Ok(DEFAULT_LEADERBOARD_LIMIT));
        assert_eq!(leaderboard_limit(Some("100")), Ok(100));
        for bad in ["0", "101", "-1", "ten", ""] {
            assert_eq!(
                leaderboard_limit(Some(bad)).unwrap_err().code(),
                "invalid_limit"
            );
        }
    }
}
