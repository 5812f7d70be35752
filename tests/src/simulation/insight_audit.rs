//! The auditor's checks of points insight: each entry's booked time, the
//! balance at random instants, statements over random windows (paged at
//! random sizes), and the leaderboards, each against the model's own reading
//! of the ledgers the final audit already checked entry by entry.
//!
//! The model's rule for a booked time, kept apart from Tally's code: a ledger
//! takes an entry when the worker or reconcile runs, never before the entry's
//! `created_at` or the previous entry's booked time; so a booked time is one
//! of those two, or a moment the sim ran the worker or reconcile, and never
//! before the first such moment after the operation was sent.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::http::{Method, StatusCode};
use rand::Rng as _;
use serde_json::{Value, json};
use shared::domain::points::insight::Period;
use shared::domain::points::{Entry, EntryKind};
use shared::domain::timestamp;
use time::{Duration, OffsetDateTime};

use super::{MAX_SKEW_MICROS, Sim, Violation};

/// Instants asked about per audit, and statements read.
const INSTANTS: usize = 8;
const STATEMENTS: usize = 4;

fn micros(at: OffsetDateTime) -> i64 {
    timestamp::unix_micros(at) as i64
}

/// Each entry with its booked time, once the model accepts it (see the module docs).
fn booked_times<'a>(
    account: &str,
    entries: &'a [Entry],
    apply_times: &BTreeSet<i64>,
    sent_at: &HashMap<String, i64>,
) -> Result<Vec<(OffsetDateTime, &'a Entry)>, String> {
    let mut previous: Option<OffsetDateTime> = None;
    let mut counted = Vec::new();
    for entry in entries {
        let what = || format!("{account} entry {} ({:?})", entry.seq, entry.kind);
        let created = timestamp::parse(&entry.created_at)
            .ok_or_else(|| format!("{}: created_at {:?}", what(), entry.created_at))?;
        let booked = entry
            .booked_time()
            .ok_or_else(|| format!("{}: booked {:?} is not a time", what(), entry.booked()))?;
        let floor = previous.map_or(created, |p| p.max(created));
        // Sent at, or (an operation the sim queued itself, an expiry) created less the skew bound.
        let sent = sent_at
            .get(&entry.operation_id.to_string())
            .copied()
            .unwrap_or(micros(created) - MAX_SKEW_MICROS);
        let first_run = apply_times.range(sent..).next().copied();
        if booked < floor
            || (booked != floor && !apply_times.contains(&micros(booked)))
            || first_run.is_some_and(|first| micros(booked) < first)
        {
            return Err(format!(
                "{}: booked {}, where the floor is {} and the first run after it was sent {:?}",
                what(),
                entry.booked(),
                timestamp::format(floor),
                first_run
            ));
        }
        previous = Some(booked);
        counted.push((booked, entry));
    }
    Ok(counted)
}

/// The model's account at `at`: (seq, balance, held), zeros before the first entry.
fn standing_at(counted: &[(OffsetDateTime, &Entry)], at: OffsetDateTime) -> (u64, u64, u64) {
    counted
        .iter()
        .take_while(|(from, _)| *from <= at)
        .last()
        .map_or((0, 0, 0), |(_, e)| (e.seq, e.balance_after, e.held_after))
}

fn standing_json((seq, balance, held): (u64, u64, u64)) -> Value {
    json!({"seq": seq, "balance": balance, "held": held, "available": balance - held})
}

/// Points earned, by the model: grants, incoming transfers and credits.
fn earned(entry: &Entry) -> u64 {
    match entry.kind {
        EntryKind::Grant | EntryKind::TransferIn => entry.amount as u64,
        EntryKind::Adjust if entry.amount > 0 => entry.amount as u64,
        _ => 0,
    }
}

impl Sim {
    pub(super) async fn audit_insight(
        &mut self,
        ledgers: &BTreeMap<String, Vec<Entry>>,
    ) -> Result<(), Violation> {
        let sent_at: HashMap<String, i64> = self
            .model
            .writes
            .values()
            .map(|w| (w.key.clone(), w.sent_at_micros))
            .collect();
        let mut counted: BTreeMap<&String, Vec<(OffsetDateTime, &Entry)>> = BTreeMap::new();
        for (account, entries) in ledgers {
            let booked = booked_times(account, entries, &self.apply_times, &sent_at);
            check!(
                self,
                booked.is_ok(),
                "{}",
                booked.as_ref().err().cloned().unwrap_or_default()
            );
            counted.insert(account, booked.unwrap_or_default());
        }
        // Instants from before the run to now, less the handlers' clock skew
        // (an instant after a handler's now is refused as in the future).
        let start = time::macros::datetime!(2026-06-01 09:00 UTC) - Duration::hours(1);
        let latest = self.now() - Duration::microseconds(MAX_SKEW_MICROS) - Duration::seconds(1);
        let span = (latest - start).whole_microseconds().max(1) as i64;
        let accounts: Vec<&String> = counted.keys().copied().collect();
        let instant = |sim: &mut Sim, account: &str| -> OffsetDateTime {
            // Half the time exactly an entry's moment, where "at or before" matters.
            let entries = &counted[&account.to_owned()];
            if !entries.is_empty() && sim.rng.random_bool(0.5) {
                let (from, _) = entries[sim.rng.random_range(0..entries.len())];
                if from <= latest {
                    return from;
                }
            }
            start + Duration::microseconds(sim.rng.random_range(0..span))
        };
        for _ in 0..INSTANTS {
            let account = accounts[self.rng.random_range(0..accounts.len())].clone();
            let at = instant(self, &account);
            let expected = standing_at(&counted[&account], at);
            let uri = format!("/v1/me/points?at={}", timestamp::format(at));
            let (status, body) = self.http(&account, Method::GET, &uri, None, None).await?;
            let mut want = standing_json(expected);
            want["at"] = json!(timestamp::format(at));
            check!(
                self,
                status == StatusCode::OK && body == want,
                "{account} at {}: answered {status} {body}, the model {want}",
                timestamp::format(at)
            );
        }
        for _ in 0..STATEMENTS {
            let account = accounts[self.rng.random_range(0..accounts.len())].clone();
            let (mut from, mut to) = (instant(self, &account), instant(self, &account));
            if from > to {
                std::mem::swap(&mut from, &mut to);
            }
            if from == to {
                continue;
            }
            let entries = &counted[&account];
            let opening = standing_at(entries, from);
            let closing = standing_at(entries, to);
            let window: Vec<&Entry> = entries
                .iter()
                .filter(|(at, _)| *at > from && *at <= to)
                .map(|(_, e)| *e)
                .collect();
            let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
            for entry in &window {
                *totals.entry(entry.kind.name()).or_default() += entry.amount;
            }
            let limit = self.rng.random_range(1..=5);
            let mut seqs = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut uri = format!(
                    "/v1/me/points/statement?from={}&to={}&limit={limit}",
                    timestamp::format(from),
                    timestamp::format(to)
                );
                if let Some(cursor) = &cursor {
                    uri.push_str(&format!("&cursor={cursor}"));
                }
                let (status, page) = self.http(&account, Method::GET, &uri, None, None).await?;
                let sum: i64 = page["totals"]
                    .as_object()
                    .map(|t| t.values().filter_map(Value::as_i64).sum())
                    .unwrap_or(i64::MIN);
                check!(
                    self,
                    status == StatusCode::OK
                        && page["opening"] == standing_json(opening)
                        && page["closing"] == standing_json(closing)
                        && page["totals"] == json!(totals)
                        && page["entry_count"] == window.len()
                        && page["opening"]["balance"].as_i64().map(|o| o + sum)
                            == page["closing"]["balance"].as_i64(),
                    "{account} statement {uri}: {status} {page}; the model opens {opening:?}, closes {closing:?}, totals {totals:?}"
                );
                seqs.extend(
                    page["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e["seq"].as_u64()),
                );
                match page["next_cursor"].as_str() {
                    Some(next) if seqs.len() <= window.len() => cursor = Some(next.to_owned()),
                    _ => break,
                }
            }
            let want: Vec<u64> = window.iter().map(|e| e.seq).collect();
            check!(
                self,
                seqs == want,
                "{account} statement {} to {}: entries {seqs:?}, the model {want:?}",
                timestamp::format(from),
                timestamp::format(to)
            );
        }
        self.audit_leaderboards(&counted).await
    }

    /// After a reconcile run with nothing left to apply, every board is the
    /// model's ranking of the points earned in its period.
    async fn audit_leaderboards(
        &mut self,
        counted: &BTreeMap<&String, Vec<(OffsetDateTime, &Entry)>>,
    ) -> Result<(), Violation> {
        // At the settled clock, as the tamper check's runs after it are.
        let run_at = self.now();
        let report = self
            .app
            .reconciler()
            .run(run_at)
            .await
            .map_err(|e| Violation(format!("reconcile: {e}")))?;
        self.log(format!("reconcile for the leaderboards: {report:?}"));
        for period in Period::EVERY {
            let start = period.start(run_at);
            let mut want: Vec<(u64, String)> = counted
                .iter()
                .map(|(account, entries)| {
                    let earned = entries
                        .iter()
                        .filter(|(at, _)| *at <= run_at && start.is_none_or(|s| *at >= s))
                        .map(|(_, e)| earned(e))
                        .sum::<u64>();
                    (earned, (*account).clone())
                })
                .filter(|(earned, _)| *earned > 0)
                .collect();
            want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let uri = format!("/v1/points/leaderboard?period={}&limit=100", period.name());
            let (status, board) = self.http("auditor", Method::GET, &uri, None, None).await?;
            let got: Vec<(u64, String)> = board["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|l| {
                    (
                        l["earned"].as_u64().unwrap_or(0),
                        l["user_id"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            check!(
                self,
                status == StatusCode::OK
                    && board["as_of"] == json!(timestamp::format(run_at))
                    && got == want,
                "{} board as of {}: {status} {board}; the model {want:?}",
                period.name(),
                timestamp::format(run_at)
            );
            // Each account's rank: 1 + how many earned more.
            for (earned, account) in want.iter().take(3) {
                let ahead = want.iter().filter(|(e, _)| e > earned).count() as u64;
                let uri = format!("/v1/me/points/rank?period={}", period.name());
                let (_, rank) = self.http(account, Method::GET, &uri, None, None).await?;
                check!(
                    self,
                    rank["earned"] == *earned && rank["rank"] == ahead + 1,
                    "{account} on the {} board: {rank}, the model {earned} at rank {}",
                    period.name(),
                    ahead + 1
                );
            }
        }
        Ok(())
    }
}
