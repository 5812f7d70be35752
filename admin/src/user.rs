//! `tally-admin user export USER` and `tally-admin audit USER`.

use serde::Serialize;
use serde_json::{Value, json};
use shared::domain::ids::UserId;
use shared::domain::likes::MAX_PAGE_SIZE;
use shared::domain::points::{self, audit::Finding};
use shared::store::likes::LikedPost;

use crate::{BoxError, Tally};

/// Everything Tally holds on `user`, one JSON object per line, each with a
/// `record` field saying what it is:
///
/// - `like`: a post the user likes now, with when; newest first (the timeline);
/// - `account`: the points account (balance, held, available, seq, lots);
/// - `hold`: each open hold;
/// - `entry`: each ledger entry, oldest first;
/// - `operation`: each points operation the user asked for, with its status.
///
/// Not included, because it is not the user's own record: another account's
/// entry naming the user as its `counterparty` (each has its twin among the
/// user's entries), and an unlike's tombstone (which stops an older like
/// from coming back; it holds no more than the key and expires after 30 days).
pub async fn export(
    tally: &Tally,
    user: &UserId,
    mut line: impl FnMut(Value) -> Result<(), BoxError>,
) -> Result<usize, BoxError> {
    let mut lines = 0;
    for like in liked_posts(tally, user).await? {
        line(
            json!({"record": "like", "user_id": user, "post_id": like.post_id, "liked_at": like.liked_at}),
        )?;
        lines += 1;
    }
    let records = tally.store.account_records(user).await?;
    if let Some(account) = &records.account {
        let lots: Vec<Value> = account
            .lots
            .iter()
            .map(|(expiry, amount)| json!({"expires": expiry.key(), "amount": amount}))
            .collect();
        line(json!({
            "record": "account",
            "user_id": user,
            "balance": account.balance,
            "held": account.held(),
            "available": account.available(),
            "seq": account.seq,
            "lots": lots,
        }))?;
        lines += 1;
        for (hold_id, hold) in &account.holds {
            let mut value = serde_json::to_value(hold)?;
            if let Value::Object(map) = &mut value {
                map.insert("record".into(), json!("hold"));
                map.insert("user_id".into(), json!(user));
                map.insert("hold_id".into(), json!(hold_id));
                map.insert("amount".into(), json!(hold.amount()));
            }
            line(value)?;
            lines += 1;
        }
    }
    for entry in &records.entries {
        line(tagged("entry", user, entry)?)?;
        lines += 1;
    }
    for operation in &records.operations {
        line(tagged("operation", user, operation)?)?;
        lines += 1;
    }
    for board_line in &records.board_lines {
        line(json!({
            "record": "leaderboard",
            "user_id": user,
            "board": board_line.board,
            "earned": board_line.earned,
        }))?;
        lines += 1;
    }
    Ok(lines)
}

/// Every post `user` likes now, newest first (every page of "my likes").
pub async fn liked_posts(tally: &Tally, user: &UserId) -> Result<Vec<LikedPost>, BoxError> {
    let mut posts = Vec::new();
    let mut cursor = None;
    loop {
        let page = tally
            .store
            .my_likes(user, MAX_PAGE_SIZE, cursor.as_deref())
            .await
            .map_err(|err| err.to_string())?;
        posts.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(posts),
        }
    }
}

fn tagged(record: &str, user: &UserId, value: &impl Serialize) -> Result<Value, BoxError> {
    let mut value = serde_json::to_value(value)?;
    if let Value::Object(map) = &mut value {
        map.insert("record".into(), json!(record));
        map.insert("user_id".into(), json!(user));
    }
    Ok(value)
}

/// One account's ledger audit, as reconcile runs it.
#[derive(Debug, Serialize)]
pub struct Audit {
    pub user_id: UserId,
    pub exists: bool,
    pub balance: u64,
    pub held: u64,
    pub seq: u64,
    pub entries: usize,
    /// Empty when the ledger adds up.
    pub findings: Vec<Finding>,
}

pub async fn audit(tally: &Tally, user: &UserId) -> Result<Audit, BoxError> {
    let records = tally.store.account_records(user).await?;
    let account = records.account.clone().unwrap_or_default();
    Ok(Audit {
        user_id: user.clone(),
        exists: records.account.is_some(),
        balance: account.balance,
        held: account.held(),
        seq: account.seq,
        entries: records.entries.len(),
        findings: points::audit(&account, &records.entries),
    })
}

impl std::fmt::Display for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.exists {
            return writeln!(f, "{}: no points account", self.user_id);
        }
        writeln!(
            f,
            "{}: balance {} (held {}), seq {}, {} entries",
            self.user_id, self.balance, self.held, self.seq, self.entries
        )?;
        if self.findings.is_empty() {
            return writeln!(
                f,
                "ledger adds up: every entry chains, and the balance, holds and lots agree with the newest"
            );
        }
        writeln!(f, "LEDGER MISMATCH: {} findings", self.findings.len())?;
        for finding in &self.findings {
            writeln!(
                f,
                "  {}",
                serde_json::to_string(finding).unwrap_or_default()
            )?;
        }
        Ok(())
    }
}
