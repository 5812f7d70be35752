//! The auditor's own model: what must be true, kept from the workload and the
//! answers the client saw, never from Tally's tables alone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::Value;

/// One points write as the client made it.
#[derive(Debug, Clone)]
pub struct Write {
    pub caller: String,
    pub key: String,
    pub body: Value,
    pub kind: WriteKind,
    /// Where it was sent (a holder's capture or release names the hold in it).
    pub uri: String,
    /// The sim clock when it was sent (the accept time, within the skew bound).
    pub sent_at_micros: i64,
    /// Every status the client was answered, in order.
    pub answers: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Grant,
    Spend,
    Transfer,
    Hold,
    Capture,
    Release,
    Refund,
    Adjust,
}

impl Write {
    pub fn amount(&self) -> i64 {
        self.body["amount"].as_i64().unwrap_or(0)
    }

    /// The account whose operations this one is ordered with: the one the
    /// points come from, or the one it credits or acts on.
    pub fn ordering_account(&self) -> String {
        match self.kind {
            WriteKind::Spend | WriteKind::Transfer | WriteKind::Hold => self.caller.clone(),
            // A holder's own capture or release names no user: it is the caller.
            _ => self.body["user_id"]
                .as_str()
                .unwrap_or(&self.caller)
                .to_owned(),
        }
    }

    pub fn accepted(&self) -> bool {
        self.answers.contains(&202)
    }

    /// Answered only 5xx so far: Tally could not confirm it was recorded.
    pub fn uncertain(&self) -> bool {
        !self.answers.is_empty() && self.answers.iter().all(|s| *s >= 500)
    }
}

/// A queued message the sim put on a queue directly, as another service would.
#[derive(Debug, Clone)]
pub struct Direct {
    pub caller: String,
    pub operation_id: String,
    /// `Some(body)` for a valid points operation (it must apply or be rejected);
    /// `None` for an invalid one naming its caller (it must end `invalid_operation`).
    pub valid: Option<Write>,
}

#[derive(Debug, Default)]
pub struct Model {
    /// Points writes by (caller, key).
    pub writes: BTreeMap<(String, String), Write>,
    /// Points operations put on the queue directly.
    pub direct: Vec<Direct>,
    /// The latest version seen on the likes queue per (user, post), and whether it likes.
    pub registers: HashMap<(String, String), (String, bool)>,
    /// Like operation ids answered 202 by the like function.
    pub likes_accepted: HashSet<String>,
    /// Like operation ids seen on the queue (valid ones only).
    pub likes_queued: HashSet<String>,
    /// Like operation ids that break a rule (never to take effect).
    pub likes_invalid: HashSet<String>,
    /// Users who ever liked each post: no count may exceed it.
    pub likers: HashMap<String, BTreeSet<String>>,
    /// Points operation ids per ordering account, in the order first seen on the queue.
    pub queued_order: HashMap<String, Vec<String>>,
    /// Rejections observed during the run: (caller, id) -> reason. They never change.
    pub rejections: HashMap<(String, String), String>,
    /// Posts whose counter was edited by hand (wrong until reconcile repairs it).
    pub tampered_posts: HashSet<String>,
    /// Each valid like operation seen on the queue: (user, post, is a like, version).
    pub like_ops: HashMap<String, (String, String, bool, String)>,
}

impl Model {
    /// A like message seen on the queue.
    pub fn queued_like(&mut self, envelope: &Value) {
        let id = envelope["operation_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if self.likes_invalid.contains(&id) {
            return;
        }
        let user = envelope["caller"].as_str().unwrap_or_default().to_owned();
        let post = envelope["operation"]["post_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let liked = envelope["operation"]["type"] == "like";
        let accepted_at = envelope["accepted_at"].as_str().unwrap_or_default();
        let at = time::OffsetDateTime::parse(
            accepted_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t.unix_timestamp_nanos() / 1000)
        .unwrap_or_default();
        // The register's total order: accept time, then operation id.
        let version = format!("{at:020}#{id}");
        if liked {
            self.likers
                .entry(post.clone())
                .or_default()
                .insert(user.clone());
        }
        self.like_ops.insert(
            id.clone(),
            (user.clone(), post.clone(), liked, version.clone()),
        );
        let register = self
            .registers
            .entry((user, post))
            .or_insert((String::new(), false));
        if version > register.0 {
            *register = (version, liked);
        }
        self.likes_queued.insert(id);
    }

    /// A points message seen on the queue.
    pub fn queued_points(&mut self, envelope: &Value) {
        let id = envelope["operation_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let caller = envelope["caller"].as_str().unwrap_or_default().to_owned();
        let account = match envelope["operation"]["type"].as_str() {
            Some("spend" | "transfer" | "hold") => caller,
            _ => envelope["operation"]["user_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        let order = self.queued_order.entry(account).or_default();
        if !order.contains(&id) {
            order.push(id);
        }
    }

    /// The number of users whose latest accepted operation on `post` is a like.
    pub fn count(&self, post: &str) -> u64 {
        self.registers
            .iter()
            .filter(|((_, p), (_, liked))| p == post && *liked)
            .count() as u64
    }

    pub fn likes_of(&self, user: &str) -> BTreeSet<String> {
        self.registers
            .iter()
            .filter(|((u, _), (_, liked))| u == user && *liked)
            .map(|((_, p), _)| p.clone())
            .collect()
    }

    /// The users whose latest accepted operation on `post` is a like.
    pub fn likers_of(&self, post: &str) -> BTreeSet<String> {
        self.registers
            .iter()
            .filter(|((_, p), (_, liked))| p == post && *liked)
            .map(|((u, _), _)| u.clone())
            .collect()
    }

    pub fn posts(&self) -> BTreeSet<String> {
        self.registers.keys().map(|(_, p)| p.clone()).collect()
    }
}

/// The model's own lot rules: points expire at the first UTC midnight at or
/// after their grant plus their type's lifetime (`sign_in` 30 days, `purchase`
/// 365, `bonus` never), and debits take the soonest-expiring points first.
/// `i64::MAX` stands for "never".
fn lot_expiry(granted_at: time::OffsetDateTime, point_type: &str) -> i64 {
    let days = match point_type {
        "sign_in" => 30,
        "purchase" => 365,
        _ => return i64::MAX,
    };
    let due = granted_at + time::Duration::days(days);
    let midnight = due.replace_time(time::Time::MIDNIGHT);
    let expiry = if midnight == due {
        due
    } else {
        midnight + time::Duration::days(1)
    };
    expiry.unix_timestamp()
}

/// Lots by expiry (Unix seconds, `i64::MAX` for never).
pub type Lots = BTreeMap<i64, i64>;

/// What the replay ends with, per account: its available lots, and the lots
/// of each open hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub available: Lots,
    pub holds: BTreeMap<String, Lots>,
}

/// Takes `amount` from `lots`, soonest first (or latest first); answers what it
/// took, or how much was missing.
fn take(lots: &mut Lots, amount: i64, latest_first: bool) -> Result<Lots, i64> {
    let mut left = amount;
    let mut taken = Lots::new();
    let keys: Vec<i64> = if latest_first {
        lots.keys().rev().copied().collect()
    } else {
        lots.keys().copied().collect()
    };
    for expiry in keys {
        let held = lots.get_mut(&expiry).expect("a key");
        let n = left.min(*held);
        *held -= n;
        left -= n;
        if n > 0 {
            *taken.entry(expiry).or_default() += n;
        }
    }
    lots.retain(|_, n| *n > 0);
    if left > 0 { Err(left) } else { Ok(taken) }
}

fn add(lots: &mut Lots, more: &Lots) {
    for (expiry, amount) in more {
        *lots.entry(*expiry).or_default() += amount;
    }
}

/// Replays every account's ledger with the model's lot rules, transfers
/// moving lots between accounts in the order they committed. Answers each
/// account's lots and holds, or the first entry the rules cannot explain:
/// points spent or held after they had expired, a debit beyond the live
/// points, an expiry that took the wrong amount, a capture or release of a
/// hold that is not open, a refund beyond what its original took.
///
/// The rules, as SPEC section 3 gives them: a hold moves the soonest-expiring
/// available points into the hold; a capture spends the hold's soonest points
/// and returns the rest; a release returns all; held points still expire at
/// their time; a refund gives back what its spend or capture took, latest
/// expiry first, each point with its own expiry.
pub fn replay_lots(
    ledgers: &BTreeMap<String, Vec<shared::domain::points::Entry>>,
) -> Result<BTreeMap<String, Replayed>, String> {
    use shared::domain::points::EntryKind;
    let parse = |text: &str| {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| format!("created_at {text:?}: {e}"))
    };
    let mut state: BTreeMap<String, Replayed> = BTreeMap::new();
    let mut next: BTreeMap<String, usize> = ledgers.keys().map(|a| (a.clone(), 0)).collect();
    let mut moved: HashMap<String, Lots> = HashMap::new();
    // What refunds may still give back, by (account, spend or hold id); and
    // which hold a capture's own id stands for.
    let mut refundable: HashMap<(String, String), Lots> = HashMap::new();
    let mut captured_hold: HashMap<String, String> = HashMap::new();
    loop {
        let mut progressed = false;
        for (account, entries) in ledgers {
            while let Some(entry) = entries.get(next[account]) {
                let id = entry.operation_id.to_string();
                if entry.kind == EntryKind::TransferIn && !moved.contains_key(&id) {
                    break; // its debit has not been replayed yet
                }
                let here = state.entry(account.clone()).or_default();
                let at = parse(&entry.created_at)?.unix_timestamp();
                let context = || {
                    format!(
                        "{account} entry {} ({:?} {})",
                        entry.seq, entry.kind, entry.amount
                    )
                };
                let held_change = entry.held_after as i64 - entry.held_before as i64;
                let hold_id = entry.hold_id.as_ref().map(|h| h.to_string());
                // Accepted at `at` by a clock up to the skew bound ahead of the
                // worker's: lots due by then, less the bound, were gone.
                let no_stale = |lots: &Lots| {
                    let bound = at - super::MAX_SKEW_MICROS / 1_000_000;
                    let stale: i64 = lots.range(..=bound).map(|(_, n)| n).sum();
                    if stale > 0 {
                        Err(format!(
                            "{}: {stale} points had expired before it was accepted, and no expire entry came first",
                            context()
                        ))
                    } else {
                        Ok(())
                    }
                };
                match entry.kind {
                    EntryKind::Erase => {
                        return Err(format!(
                            "{}: an erase entry, and the simulator erases no one",
                            context()
                        ));
                    }
                    EntryKind::Grant => {
                        let expiry = lot_expiry(
                            parse(&entry.created_at)?,
                            entry.point_type.as_deref().unwrap_or(""),
                        );
                        *here.available.entry(expiry).or_default() += entry.amount;
                    }
                    EntryKind::Adjust if entry.amount > 0 => {
                        let expiry = lot_expiry(
                            parse(&entry.created_at)?,
                            entry.point_type.as_deref().unwrap_or("bonus"),
                        );
                        *here.available.entry(expiry).or_default() += entry.amount;
                    }
                    EntryKind::Expire => {
                        let mut total = 0;
                        let mut from_holds = 0;
                        let expire = |lots: &mut Lots| {
                            let due: Vec<i64> = lots.range(..=at).map(|(e, _)| *e).collect();
                            due.iter().map(|e| lots.remove(e).unwrap_or(0)).sum::<i64>()
                        };
                        total += expire(&mut here.available);
                        for hold in here.holds.values_mut() {
                            from_holds += expire(hold);
                        }
                        total += from_holds;
                        if total != -entry.amount || from_holds != -held_change {
                            return Err(format!(
                                "{}: the lots due by then held {total} ({from_holds} held), held moved {held_change}",
                                context()
                            ));
                        }
                    }
                    EntryKind::Spend | EntryKind::TransferOut | EntryKind::Adjust => {
                        no_stale(&here.available)?;
                        let taken =
                            take(&mut here.available, -entry.amount, false).map_err(|left| {
                                format!("{}: {left} more than the live points", context())
                            })?;
                        if entry.kind == EntryKind::Spend {
                            refundable.insert((account.clone(), id.clone()), taken.clone());
                        }
                        moved.insert(id, taken);
                    }
                    EntryKind::TransferIn => {
                        let taken = moved.get(&id).cloned().unwrap_or_default();
                        if taken.values().sum::<i64>() != entry.amount {
                            return Err(format!(
                                "{}: credited {} for a debit of {taken:?}",
                                context(),
                                entry.amount
                            ));
                        }
                        add(&mut here.available, &taken);
                    }
                    EntryKind::Hold => {
                        let hold_id =
                            hold_id.ok_or_else(|| format!("{}: no hold_id", context()))?;
                        no_stale(&here.available)?;
                        let taken =
                            take(&mut here.available, held_change, false).map_err(|left| {
                                format!("{}: {left} more than the live points", context())
                            })?;
                        if entry.amount != 0 || here.holds.insert(hold_id, taken).is_some() {
                            return Err(format!("{}: a hold moves no balance, once", context()));
                        }
                    }
                    EntryKind::Capture | EntryKind::Release => {
                        let hold_id =
                            hold_id.ok_or_else(|| format!("{}: no hold_id", context()))?;
                        let Some(mut hold) = here.holds.remove(&hold_id) else {
                            return Err(format!("{}: hold {hold_id} is not open", context()));
                        };
                        if held_change != -hold.values().sum::<i64>() {
                            return Err(format!(
                                "{}: held moved {held_change}, the hold held {hold:?}",
                                context()
                            ));
                        }
                        if entry.kind == EntryKind::Capture {
                            let captured =
                                take(&mut hold, -entry.amount, false).map_err(|left| {
                                    format!("{}: {left} more than the hold held", context())
                                })?;
                            refundable.insert((account.clone(), hold_id.clone()), captured);
                            captured_hold.insert(id, hold_id);
                        } else if entry.amount != 0 {
                            return Err(format!("{}: a release moves no balance", context()));
                        }
                        add(&mut here.available, &hold);
                    }
                    EntryKind::Refund => {
                        let named = entry
                            .refund_of
                            .as_ref()
                            .map(|r| r.to_string())
                            .ok_or_else(|| format!("{}: no refund_of", context()))?;
                        let original = captured_hold.get(&named).cloned().unwrap_or(named);
                        let Some(left) = refundable.get_mut(&(account.clone(), original.clone()))
                        else {
                            return Err(format!(
                                "{}: {original} took nothing to refund",
                                context()
                            ));
                        };
                        let given = take(left, entry.amount, true).map_err(|over| {
                            format!("{}: {over} more than {original} took", context())
                        })?;
                        add(&mut here.available, &given);
                    }
                }
                *next.get_mut(account).expect("an account") += 1;
                progressed = true;
            }
        }
        if next.iter().all(|(a, n)| *n == ledgers[a].len()) {
            return Ok(state);
        }
        if !progressed {
            return Err(format!("credits without their debits: stuck at {next:?}"));
        }
    }
}
