//! The auditor: the checks of the state itself. A like register as soon as
//! its operations are all delivered, and at the end every count, register,
//! operation, ledger and lot, and reconcile against edited balances.

use std::collections::{BTreeMap, HashSet};

use aws_sdk_dynamodb::types::AttributeValue::N;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use shared::domain::ids::{OperationId, UserId};

use super::delivery::register_of;
use super::model::{self, Write, WriteKind};
use super::workload::USERS;
use super::{Sim, Violation};

impl Sim {
    /// A (user, post) none of whose operations waits for delivery any more
    /// holds its latest accepted operation: "last accepted wins", checked as soon
    /// as it can be, before a later redelivery could hide a wrong write.
    pub(super) async fn check_settled_registers(
        &mut self,
        touched: Vec<(String, String)>,
    ) -> Result<(), Violation> {
        let waiting: HashSet<(String, String)> = self
            .likes
            .iter()
            .chain(self.dead.iter())
            .map(|p| register_of(&p.message))
            .collect();
        let settled: std::collections::BTreeSet<(String, String)> = touched
            .into_iter()
            .filter(|pair| !waiting.contains(pair))
            .collect();
        for (user, post) in settled {
            let Some((_, liked)) = self
                .model
                .registers
                .get(&(user.clone(), post.clone()))
                .cloned()
            else {
                continue;
            };
            let (status, body) = self
                .http(
                    &user,
                    Method::GET,
                    &format!("/v1/me/likes?post_ids={post}"),
                    None,
                    None,
                )
                .await?;
            if status == StatusCode::OK {
                check!(
                    self,
                    body["liked"][&post].as_bool() == Some(liked),
                    "{user}/{post}: every operation delivered, the register says {} but the latest accepted says {liked}",
                    body["liked"][&post]
                );
            }
        }
        Ok(())
    }

    pub(super) async fn final_audit(&mut self) -> Result<(), Violation> {
        self.audit_likes().await?;
        self.audit_points().await?;
        self.audit_events().await
    }

    async fn audit_likes(&mut self) -> Result<(), Violation> {
        let accepted: Vec<String> = self.model.likes_accepted.iter().cloned().collect();
        for id in accepted {
            check!(
                self,
                self.model.likes_queued.contains(&id),
                "like {id} was answered 202 but never reached the queue"
            );
        }
        for post in self.model.posts() {
            let expected = self.model.count(&post);
            let (_, body) = self
                .http(
                    "auditor",
                    Method::GET,
                    &format!("/v1/posts/{post}/likes"),
                    None,
                    None,
                )
                .await?;
            check!(
                self,
                body["count"].as_u64() == Some(expected),
                "{post}: count {} but {expected} users' latest operation is a like",
                body["count"]
            );
        }
        for post in self.model.posts() {
            self.audit_likers(&post).await?;
        }
        let posts: Vec<String> = self.model.posts().into_iter().collect();
        for user in USERS {
            let mine = self.model.likes_of(user);
            for chunk in posts.chunks(100) {
                let (_, body) = self
                    .http(
                        user,
                        Method::GET,
                        &format!("/v1/me/likes?post_ids={}", chunk.join(",")),
                        None,
                        None,
                    )
                    .await?;
                for post in chunk {
                    let liked = body["liked"][post].as_bool();
                    check!(
                        self,
                        liked == Some(mine.contains(post)),
                        "{user}/{post}: \"did I like\" says {liked:?}"
                    );
                }
            }
            let mut listed = std::collections::BTreeSet::new();
            let mut uri = "/v1/me/likes?limit=7".to_owned();
            loop {
                let (_, page) = self.http(user, Method::GET, &uri, None, None).await?;
                for item in page["items"].as_array().cloned().unwrap_or_default() {
                    listed.insert(item["post_id"].as_str().unwrap_or_default().to_owned());
                }
                match page["next_cursor"].as_str() {
                    Some(cursor) => uri = format!("/v1/me/likes?limit=7&cursor={cursor}"),
                    None => break,
                }
            }
            check!(
                self,
                listed == mine,
                "{user}: \"my likes\" lists {listed:?}, the registers say {mine:?}"
            );
        }
        Ok(())
    }

    /// A post's likers pages list exactly the users the model says like it,
    /// each once, newest first; the recent likers a count read names are the
    /// first of them. (Which like's time a register keeps depends on the
    /// order of delivery, so the times are checked for order only.)
    async fn audit_likers(&mut self, post: &str) -> Result<(), Violation> {
        let expected = self.model.likers_of(post);
        let mut listed: Vec<(String, String)> = Vec::new();
        let mut uri = format!("/v1/posts/{post}/likers?limit=3");
        loop {
            let (_, page) = self.http("auditor", Method::GET, &uri, None, None).await?;
            for item in page["items"].as_array().cloned().unwrap_or_default() {
                listed.push((
                    item["liked_at"].as_str().unwrap_or_default().to_owned(),
                    item["user_id"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            match page["next_cursor"].as_str() {
                Some(cursor) => uri = format!("/v1/posts/{post}/likers?limit=3&cursor={cursor}"),
                None => break,
            }
        }
        let users: Vec<String> = listed.iter().map(|(_, user)| user.clone()).collect();
        let distinct: std::collections::BTreeSet<String> = users.iter().cloned().collect();
        check!(
            self,
            distinct == expected && distinct.len() == users.len(),
            "{post}: likers pages list {users:?}, the registers say {expected:?}"
        );
        check!(
            self,
            listed.windows(2).all(|pair| pair[0] > pair[1]),
            "{post}: likers not newest first: {listed:?}"
        );
        let (_, body) = self
            .http(
                "auditor",
                Method::GET,
                &format!("/v1/likes/counts?post_ids={post}&likers=3"),
                None,
                None,
            )
            .await?;
        let recent: Vec<String> = body["likers"][post]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|user| user.as_str().unwrap_or_default().to_owned())
            .collect();
        let newest: Vec<String> = users.iter().take(3).cloned().collect();
        check!(
            self,
            recent == newest,
            "{post}: recent likers {recent:?}, but the newest likers are {newest:?}"
        );
        Ok(())
    }

    async fn audit_points(&mut self) -> Result<(), Violation> {
        let writes: Vec<Write> = self.model.writes.values().cloned().collect();
        // Every operation the client was answered 202 for ends applied or rejected.
        let mut outcomes: BTreeMap<(String, String), Value> = BTreeMap::new();
        for write in &writes {
            let (status, body) = self
                .http(
                    &write.caller,
                    Method::GET,
                    &format!("/v1/me/points/operations/{}", write.key),
                    None,
                    None,
                )
                .await?;
            if write.accepted() {
                check!(
                    self,
                    status == StatusCode::OK
                        && (body["status"] == "applied" || body["status"] == "rejected"),
                    "{}/{}: answered 202, now {status} {body}",
                    write.caller,
                    write.key
                );
            } else if write.answers.iter().all(|s| (400..500).contains(s)) {
                check!(
                    self,
                    status == StatusCode::NOT_FOUND,
                    "{}/{}: answered {:?}, yet recorded: {body}",
                    write.caller,
                    write.key,
                    write.answers
                );
            }
            if let Some(reason) = self
                .model
                .rejections
                .get(&(write.caller.clone(), write.key.clone()))
            {
                check!(
                    self,
                    body["reason"] == reason.as_str(),
                    "{}/{}: the rejection {reason} became {body}",
                    write.caller,
                    write.key
                );
            }
            outcomes.insert((write.caller.clone(), write.key.clone()), body);
        }
        for direct in self.model.direct.clone() {
            let record = self
                .store
                .operation(
                    &UserId::parse(&direct.caller).expect("a sim user"),
                    &OperationId::parse(&direct.operation_id).expect("a sim id"),
                )
                .await
                .map_err(|e| Violation(format!("read: {e}")))?;
            let status = record
                .as_ref()
                .map(|r| format!("{:?}", r.status).to_lowercase());
            match &direct.valid {
                Some(write) => {
                    check!(
                        self,
                        status.as_deref() == Some("applied")
                            || status.as_deref() == Some("rejected"),
                        "direct {}: {status:?}",
                        direct.operation_id
                    );
                    let body = json!({"status": status, "entry": record.and_then(|r| r.entry).map(|e| json!({"amount": e.amount}))});
                    outcomes.insert(("shop".into(), write.key.clone()), body);
                }
                None => {
                    let reason = record.as_ref().and_then(|r| r.reason).map(|r| r.code());
                    check!(
                        self,
                        reason == Some("invalid_operation"),
                        "direct {} broke a rule, yet ended {status:?} {reason:?}",
                        direct.operation_id
                    );
                }
            }
        }
        // Each account's ledger: a gapless, linked chain that adds up, each
        // operation at most once.
        let mut balances = 0i64;
        let mut by_kind: BTreeMap<&'static str, i64> = BTreeMap::new();
        let mut applied_entries: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
        // How each operation's entries moved `held`, by (operation, kind).
        let mut held_moves: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
        let mut stored_holds: BTreeMap<String, BTreeMap<String, model::Lots>> = BTreeMap::new();
        let mut ledgers: BTreeMap<String, Vec<shared::domain::points::Entry>> = BTreeMap::new();
        let mut stored_lots: BTreeMap<String, BTreeMap<i64, i64>> = BTreeMap::new();
        let accounts = super::workload::accounts();
        for account in &accounts {
            let user = UserId::parse(account).expect("a sim user");
            let mut entries = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = self
                    .store
                    .history(&user, 100, cursor.as_deref())
                    .await
                    .map_err(|e| Violation(format!("history: {e}")))?;
                entries.extend(page.items);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            entries.reverse();
            let state = self
                .store
                .account(&user)
                .await
                .map_err(|e| Violation(format!("account: {e}")))?;
            let mut balance = 0i64;
            let mut held = 0u64;
            let mut seen_ops = HashSet::new();
            for (i, entry) in entries.iter().enumerate() {
                check!(
                    self,
                    entry.seq == i as u64 + 1,
                    "{account}: seq {} where {} was due",
                    entry.seq,
                    i + 1
                );
                check!(
                    self,
                    entry.balance_before as i64 == balance,
                    "{account}: entry {} starts at {} after {balance}",
                    entry.seq,
                    entry.balance_before
                );
                balance += entry.amount;
                check!(
                    self,
                    balance >= 0 && entry.balance_after as i64 == balance,
                    "{account}: entry {} ends at {} (sum {balance})",
                    entry.seq,
                    entry.balance_after
                );
                let kind = entry.kind.name();
                *by_kind.entry(kind).or_default() += entry.amount;
                *self.entries_by_kind.entry(kind).or_default() += 1;
                check!(
                    self,
                    entry.held_before == held,
                    "{account}: entry {} holds {} after {held}",
                    entry.seq,
                    entry.held_before
                );
                held = entry.held_after;
                // A hold's release at its expiry is marked as such.
                let expiry_release =
                    entry.kind == shared::domain::points::EntryKind::Release && entry.hold_expired;
                if kind != "expire" && !expiry_release {
                    held_moves
                        .entry((entry.operation_id.to_string(), kind.to_owned()))
                        .or_default()
                        .push(entry.held_after as i64 - entry.held_before as i64);
                    check!(
                        self,
                        seen_ops.insert(entry.operation_id.to_string()),
                        "{account}: operation {} applied twice",
                        entry.operation_id
                    );
                    applied_entries
                        .entry((entry.operation_id.to_string(), kind.to_owned()))
                        .or_default()
                        .push(entry.amount);
                }
            }
            check!(
                self,
                state.balance as i64 == balance && state.seq == entries.len() as u64,
                "{account}: account says {} at seq {}, its ledger {balance} at {}",
                state.balance,
                state.seq,
                entries.len()
            );
            check!(
                self,
                state.lots.values().sum::<u64>() + state.held() == state.balance
                    && state.held() == held,
                "{account}: lots {:?} and holds {:?} do not add up to {} (ledger: {held} held)",
                state.lots,
                state.holds,
                state.balance
            );
            let (_, shown) = self
                .http(account, Method::GET, "/v1/me/points", None, None)
                .await?;
            let live = state.as_of(self.now());
            check!(
                self,
                shown["balance"].as_u64() == Some(live.balance)
                    && shown["held"].as_u64() == Some(live.held())
                    && shown["available"].as_u64() == Some(live.balance - live.held()),
                "{account}: shows {shown} with {} unexpired, {} held",
                live.balance,
                live.held()
            );
            // The account's own operations applied in the order they were queued.
            let order = self
                .model
                .queued_order
                .get(account)
                .cloned()
                .unwrap_or_default();
            let applied: Vec<String> = entries
                .iter()
                .filter(|e| {
                    matches!(
                        e.kind,
                        shared::domain::points::EntryKind::Spend
                            | shared::domain::points::EntryKind::TransferOut
                            | shared::domain::points::EntryKind::Hold
                    )
                })
                .map(|e| e.operation_id.to_string())
                .collect();
            let positions: Vec<usize> = applied
                .iter()
                .filter_map(|id| order.iter().position(|o| o == id))
                .collect();
            check!(
                self,
                positions.windows(2).all(|w| w[0] < w[1]),
                "{account}: operations applied in the order {applied:?}, queued as {order:?}"
            );
            balances += balance;
            let lots = |lots: &shared::domain::points::Lots| -> model::Lots {
                lots.iter()
                    .map(|(expiry, amount)| {
                        let at = match expiry {
                            shared::domain::points::Expiry::At(at) => at.unix_timestamp(),
                            shared::domain::points::Expiry::Never => i64::MAX,
                        };
                        (at, *amount as i64)
                    })
                    .collect()
            };
            stored_lots.insert(account.clone(), lots(&state.lots));
            stored_holds.insert(
                account.clone(),
                state
                    .holds
                    .iter()
                    .map(|(id, hold)| (id.to_string(), lots(&hold.lots)))
                    .collect(),
            );
            ledgers.insert(account.clone(), entries);
        }
        // The lots, replayed by the model's own rules, are the ones Tally holds.
        match model::replay_lots(&ledgers) {
            Err(broken) => check!(self, false, "lot replay: {broken}"),
            Ok(replayed) => {
                for (account, replay) in replayed {
                    let stored = stored_lots.get(&account).cloned().unwrap_or_default();
                    check!(
                        self,
                        replay.available == stored,
                        "{account}: holds lots {stored:?}, the model's replay {:?}",
                        replay.available
                    );
                    let holds = stored_holds.get(&account).cloned().unwrap_or_default();
                    check!(
                        self,
                        replay.holds == holds,
                        "{account}: open holds {holds:?}, the model's replay {:?}",
                        replay.holds
                    );
                }
            }
        }
        self.audit_insight(&ledgers).await?;
        // Conservation: what came in (grants, refunds, credits) is owned or
        // went out (spends, captures, expiry, debits); transfers only move it.
        let net: i64 = by_kind
            .iter()
            .filter(|(kind, _)| !kind.starts_with("transfer"))
            .map(|(_, amount)| amount)
            .sum();
        check!(
            self,
            net == balances,
            "entries other than transfers add up to {net}, balances to {balances}: {by_kind:?}"
        );
        let moved_in = by_kind.get("transfer_in").copied().unwrap_or(0);
        let moved_out = -by_kind.get("transfer_out").copied().unwrap_or(0);
        check!(
            self,
            moved_in == moved_out,
            "transfers credited {moved_in}, debited {moved_out}"
        );
        // Each applied operation moved exactly what the client asked for.
        for write in writes
            .iter()
            .chain(self.model.direct.iter().filter_map(|d| d.valid.as_ref()))
        {
            let Some(outcome) = outcomes.get(&(write.caller.clone(), write.key.clone())) else {
                continue;
            };
            if outcome["status"] != "applied" {
                continue;
            }
            let amount = write.amount();
            let entries = |kind: &str| {
                applied_entries
                    .get(&(write.key.clone(), kind.to_owned()))
                    .cloned()
                    .unwrap_or_default()
            };
            match write.kind {
                WriteKind::Grant => check!(
                    self,
                    entries("grant") == [amount],
                    "{}: granted {amount}, entries {:?}",
                    write.key,
                    entries("grant")
                ),
                WriteKind::Spend => check!(
                    self,
                    entries("spend") == [-amount],
                    "{}: spent {amount}, entries {:?}",
                    write.key,
                    entries("spend")
                ),
                WriteKind::Transfer => check!(
                    self,
                    entries("transfer_out") == [-amount] && entries("transfer_in") == [amount],
                    "{}: transferred {amount}, entries out {:?} in {:?}",
                    write.key,
                    entries("transfer_out"),
                    entries("transfer_in")
                ),
                WriteKind::Adjust => check!(
                    self,
                    entries("adjust") == [amount],
                    "{}: adjusted by {amount}, entries {:?}",
                    write.key,
                    entries("adjust")
                ),
                WriteKind::Hold => {
                    let moved = held_moves
                        .get(&(write.key.clone(), "hold".to_owned()))
                        .cloned()
                        .unwrap_or_default();
                    check!(
                        self,
                        entries("hold") == [0] && moved == [amount],
                        "{}: held {amount}, entries {:?} moving held by {moved:?}",
                        write.key,
                        entries("hold")
                    )
                }
                WriteKind::Capture => {
                    let taken = entries("capture");
                    check!(
                        self,
                        taken.len() == 1
                            && (write.body.get("amount").is_none() || taken == [-amount]),
                        "{}: captured {:?}, entries {taken:?}",
                        write.key,
                        write.body.get("amount")
                    )
                }
                WriteKind::Release => check!(
                    self,
                    entries("release") == [0],
                    "{}: released, entries {:?}",
                    write.key,
                    entries("release")
                ),
                WriteKind::Refund => {
                    let given = entries("refund");
                    check!(
                        self,
                        given.len() == 1
                            && (write.body.get("amount").is_none() || given == [amount]),
                        "{}: refunded {:?}, entries {given:?}",
                        write.key,
                        write.body.get("amount")
                    )
                }
            }
        }
        // No operation applied that the client never had accepted.
        let known: HashSet<String> = writes
            .iter()
            .map(|w| w.key.clone())
            .chain(self.model.direct.iter().map(|d| d.operation_id.clone()))
            .collect();
        for (id, _) in applied_entries.keys() {
            check!(
                self,
                known.contains(id),
                "operation {id} applied, yet nobody sent it"
            );
        }
        for write in &writes {
            if !write.accepted() {
                let applied = applied_entries.keys().any(|(id, _)| *id == write.key);
                check!(
                    self,
                    !applied,
                    "{}: answered {:?}, yet applied",
                    write.key,
                    write.answers
                );
            }
        }
        self.tamper_balance_at_the_end().await
    }

    /// Balances edited behind the service's back: reconcile's background sweep
    /// finds and reports each, never rewrites history, and reports nothing
    /// once they are put back.
    async fn tamper_balance_at_the_end(&mut self) -> Result<(), Violation> {
        let mut tampered = Vec::new();
        for account in USERS {
            let user = UserId::parse(*account).expect("a sim user");
            let before = self
                .store
                .account(&user)
                .await
                .map_err(|e| Violation(format!("account: {e}")))?;
            if before.seq == 0 {
                continue;
            }
            let ledger = self
                .store
                .ledger(&user)
                .await
                .map_err(|e| Violation(format!("ledger: {e}")))?;
            crate::set_attribute(
                &self.store,
                &format!("ACCOUNT#{account}"),
                "STATE",
                "balance",
                N((before.balance + 7).to_string()),
            )
            .await;
            self.fault("tampered_balance");
            tampered.push((user, before.balance, ledger));
        }
        // No write marked them: the sweep must come to each, within one pass.
        let reconciler = self.app.reconciler();
        let mut reported = 0;
        for _ in 0..60 {
            let report = reconciler
                .run(self.now())
                .await
                .map_err(|e| Violation(format!("reconcile: {e}")))?;
            reported += report.mismatches;
            if reported >= tampered.len() as u64 {
                break;
            }
        }
        check!(
            self,
            reported >= tampered.len() as u64,
            "{} balances edited, reconcile reported {reported}",
            tampered.len()
        );
        for (user, balance, ledger) in tampered {
            let after = self
                .store
                .ledger(&user)
                .await
                .map_err(|e| Violation(format!("ledger: {e}")))?;
            check!(self, after == ledger, "{user}: reconcile rewrote history");
            crate::set_attribute(
                &self.store,
                &format!("ACCOUNT#{user}"),
                "STATE",
                "balance",
                N(balance.to_string()),
            )
            .await;
        }
        Ok(())
    }
}
