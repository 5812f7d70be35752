//! `tally-admin user erase USER`: the right to erasure, as SPEC section 9
//! defines it (docs/operations.md, "Erasing a user").
//!
//! 1. **Refused** while the user has an open hold or a pending operation
//!    (their own, or another caller's naming them), or while their ledger
//!    does not add up.
//! 2. **Likes** are removed as unlikes, through the worker's own path, so
//!    counts and recent likers follow; reconcile runs at the end recount
//!    every post touched.
//! 3. **Points**: the account is closed by one `erase` entry taking what is
//!    left (published as `Points Erased`).
//! 4. **Other accounts' items** that name the user (entries' `counterparty`,
//!    operation records' request and entries) get the pseudonym instead, and
//!    nothing else in them changes.
//! 5. **The account's partition** moves under the pseudonym, free text
//!    dropped; the account item moves last.
//!
//! Every step finds what is done already done, so a run cut short is run
//! again; the audits before and after cover the account and every account
//! touched.

use serde::Serialize;
use shared::domain::erasure::{self, ErasureKey};
use shared::domain::ids::{OperationId, UserId};
use shared::domain::likes::{LikeAction, LikeOperation};
use shared::domain::points::{self, Account, Entry, Finding, OperationStatus};
use shared::likes_service::LikesService;
use shared::store::keys;
use shared::store::points::Commit;
use shared::store::users::AccountRecords;
use time::OffsetDateTime;

use crate::import::{BATCH_ROWS, apply, recount_marked};
use crate::{BoxError, Tally};

/// Operations pending anywhere that are read to find those naming the user.
const PENDING_CHECKED: usize = 10_000;
/// Tries of a step that lost a race with the worker (the account moved).
const ATTEMPTS: u32 = 5;
/// Erasures of one user id at most (each after the id was used again).
const MAX_GENERATIONS: u32 = 100;
/// How far ahead of this machine's clock the unlikes are stamped: a like
/// accepted by a function whose clock runs ahead is still overtaken.
const CLOCK_MARGIN: time::Duration = time::Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "{0} has {1} open hold(s): capture or release them first (tally-admin user export shows them)"
    )]
    OpenHolds(UserId, usize),
    #[error(
        "{0} has operations pending ({1}): wait for the worker (tally-admin status), then run erase again"
    )]
    Pending(UserId, String),
    #[error(
        "the ledger of {0} does not add up ({1} findings): tally-admin audit shows them; erasure keeps a ledger that audits, so fix it first"
    )]
    LedgerMismatch(UserId, usize),
}

/// One account's audit, before or after.
#[derive(Debug, Serialize)]
pub struct Audited {
    pub account: UserId,
    pub balance: u64,
    pub entries: usize,
    pub findings: Vec<Finding>,
}

/// What an erasure did (the user's id appears only where the operator gave it).
#[derive(Debug, Serialize)]
pub struct Erased {
    pub pseudonym: UserId,
    pub likes_removed: u64,
    /// Points the `erase` entry took (0 when nothing was left, or a run before took them).
    pub points_erased: u64,
    pub items_moved: usize,
    pub mentions_renamed: usize,
    /// Accounts whose items named the user.
    pub accounts_touched: Vec<UserId>,
    pub audits_before: Vec<Audited>,
    pub audits_after: Vec<Audited>,
    pub posts_recounted: u64,
    pub counters_repaired: u64,
}

fn audited(account_id: &UserId, account: &Account, entries: &[Entry]) -> Audited {
    Audited {
        account: account_id.clone(),
        balance: account.balance,
        entries: entries.len(),
        findings: points::audit(account, entries),
    }
}

/// One account's audit from the table, as reconcile makes it.
async fn audit(tally: &Tally, user: &UserId) -> Result<Audited, BoxError> {
    let records = tally.store.account_records(user).await?;
    Ok(audited(
        user,
        &records.account.unwrap_or_default(),
        &records.entries,
    ))
}

/// Whether a points request names `user` (a grant to them, a capture of their hold, ...).
fn names(request: &points::PointsRequest, user: &UserId) -> bool {
    let value = serde_json::to_value(request).unwrap_or_default();
    ["user_id", "to_user_id"]
        .iter()
        .any(|field| value.get(field).and_then(|v| v.as_str()) == Some(user.as_str()))
}

pub async fn erase(
    tally: &Tally,
    user: &UserId,
    key: &ErasureKey,
    now: OffsetDateTime,
) -> Result<Erased, BoxError> {
    refuse_unless_settled(tally, user, now).await?;
    // The ledger as a run cut short may have left it: part under the user,
    // part under the pseudonym, the account item under either.
    let mine = tally.store.account_records(user).await?;
    let (pseudonym, moved) = pseudonym_for(tally, user, key, &mine).await?;
    let mut report = Erased {
        pseudonym: pseudonym.clone(),
        likes_removed: 0,
        points_erased: 0,
        items_moved: 0,
        mentions_renamed: 0,
        accounts_touched: Vec::new(),
        audits_before: Vec::new(),
        audits_after: Vec::new(),
        posts_recounted: 0,
        counters_repaired: 0,
    };
    let mut entries: Vec<Entry> = mine.entries.iter().chain(&moved.entries).cloned().collect();
    entries.sort_by_key(|e| e.seq);
    let account = mine
        .account
        .clone()
        .or(moved.account.clone())
        .unwrap_or_default();
    let before = audited(user, &account, &entries);
    if !before.findings.is_empty() {
        return Err(Refused::LedgerMismatch(user.clone(), before.findings.len()).into());
    }
    if let Some(account) = &mine.account
        && let Err(holds) =
            points::close_for_erasure(user, account, &erasure::erase_operation_id(), now)
    {
        return Err(Refused::OpenHolds(user.clone(), holds).into());
    }
    report.audits_before.push(before);

    report.likes_removed = remove_likes(tally, user, now).await?;
    report.points_erased = close_account(tally, user, now).await?;
    let (moved_items, erased_later) = move_partition(tally, user, &pseudonym, now).await?;
    report.items_moved = moved_items;
    report.points_erased += erased_later;

    // After the move: what an operation applied before it wrote is found too.
    let mentions = tally.store.items_naming(user).await?;
    for account in &mentions.accounts {
        report.audits_before.push(audit(tally, account).await?);
    }
    for (key, paths) in &mentions.items {
        if tally
            .store
            .rename_mentions(key, paths, user, &pseudonym)
            .await?
        {
            report.mentions_renamed += 1;
        }
    }
    report.accounts_touched = mentions.accounts.clone();

    report.audits_after.push(audit(tally, &pseudonym).await?);
    for account in &mentions.accounts {
        report.audits_after.push(audit(tally, account).await?);
    }
    (report.posts_recounted, report.counters_repaired) = recount_marked(tally).await?;
    Ok(report)
}

/// The pseudonym this erasure keeps the ledger under, and what it holds so
/// far: the first generation's, unless that one holds a closed account (an
/// erasure finished) while the user has an account again (opened by an
/// operation after it): then the next generation's, and so on.
async fn pseudonym_for(
    tally: &Tally,
    user: &UserId,
    key: &ErasureKey,
    mine: &AccountRecords,
) -> Result<(UserId, AccountRecords), BoxError> {
    let has_account_again =
        mine.account.is_some() || !mine.entries.is_empty() || !mine.operations.is_empty();
    for generation in 1..=MAX_GENERATIONS {
        let pseudonym = erasure::pseudonym(key, user, generation);
        let kept = tally.store.account_records(&pseudonym).await?;
        if kept.account.is_none() || !has_account_again {
            return Ok((pseudonym, kept));
        }
    }
    Err(format!("{user} was erased {MAX_GENERATIONS} times already: stop sending operations for an erased user").into())
}

async fn refuse_unless_settled(
    tally: &Tally,
    user: &UserId,
    now: OffsetDateTime,
) -> Result<(), BoxError> {
    let far = now + time::Duration::days(3650);
    let mut pending = Vec::new();
    let found = tally.store.pending_operations(far, PENDING_CHECKED).await?;
    if found.len() >= PENDING_CHECKED {
        return Err(format!(
            "over {PENDING_CHECKED} operations are pending: wait for the worker to apply them (tally-admin status), \
             then run erase again"
        )
        .into());
    }
    for found in found {
        let Ok((caller, operation_id)) = found else {
            continue;
        };
        let named = if &caller == user {
            true
        } else {
            let record = tally.store.operation(&caller, &operation_id).await?;
            record.is_some_and(|r| {
                r.status == OperationStatus::Pending
                    && r.request.as_ref().is_some_and(|q| names(q, user))
            })
        };
        if named {
            pending.push(format!("{caller}/{operation_id}"));
        }
    }
    if pending.is_empty() {
        Ok(())
    } else {
        Err(Refused::Pending(user.clone(), pending.join(", ")).into())
    }
}

/// Unlikes every post the user likes, through the worker's path: each
/// unlike flips its register (the count and recent likers follow) and leaves
/// the tombstone that keeps an older like from coming back. Each post is
/// first marked for a recount, so a run cut short between a register and its
/// counter still ends exact: the rerun no longer lists the post (its register
/// is unliked), but the closing reconcile recounts it and rebuilds its recent
/// likers.
async fn remove_likes(tally: &Tally, user: &UserId, now: OffsetDateTime) -> Result<u64, BoxError> {
    let posts: Vec<_> = crate::user::liked_posts(tally, user)
        .await?
        .into_iter()
        .map(|liked| liked.post_id)
        .collect();
    let partition = std::collections::BTreeSet::from([keys::like_partition(user)]);
    for post in &posts {
        tally
            .store
            .add_to_like_count(post, 0, &partition, &[])
            .await?;
    }
    let likes = LikesService::new(tally.store.clone());
    let mut removed = 0;
    for chunk in posts.chunks(BATCH_ROWS) {
        let batch: Vec<(u64, LikeOperation)> = chunk
            .iter()
            .enumerate()
            .map(|(i, post)| {
                (
                    i as u64,
                    LikeOperation {
                        // A fresh id: one derived from the user or the
                        // pseudonym would tie the two in `Like Removed`.
                        operation_id: OperationId::generate(),
                        user: user.clone(),
                        post: post.clone(),
                        action: LikeAction::Unlike,
                        accepted_at: now + CLOCK_MARGIN,
                    },
                )
            })
            .collect();
        removed += apply(&likes, &batch).await?.0;
    }
    Ok(removed)
}

/// Writes the `erase` entry; answers the points it took.
async fn close_account(tally: &Tally, user: &UserId, now: OffsetDateTime) -> Result<u64, BoxError> {
    for _ in 0..ATTEMPTS {
        let Some(account) = tally.store.account_records(user).await?.account else {
            return Ok(0); // moved by a run before, or never had points
        };
        let change =
            match points::close_for_erasure(user, &account, &erasure::erase_operation_id(), now) {
                Err(holds) => return Err(Refused::OpenHolds(user.clone(), holds).into()),
                Ok(None) => return Ok(0),
                Ok(Some(change)) => change,
            };
        let taken = change.own_entry().map_or(0, |e| e.amount.unsigned_abs());
        match tally.store.commit_account_change(&change).await? {
            Commit::Done => return Ok(taken),
            Commit::AlreadyDone | Commit::Conflict => continue,
        }
    }
    Err("the account kept changing while it was being closed: run erase again".into())
}

/// Moves the partition under the pseudonym, the account item last; answers
/// the items moved and the points of any `erase` entry an operation applied
/// meanwhile called for. An operation still pending stops it (its record
/// would be moved from under the worker).
async fn move_partition(
    tally: &Tally,
    user: &UserId,
    pseudonym: &UserId,
    now: OffsetDateTime,
) -> Result<(usize, u64), BoxError> {
    let (mut moved, mut erased) = (0, 0);
    for _ in 0..ATTEMPTS {
        let items = tally.store.account_items(user).await?;
        if items.is_empty() {
            return Ok((moved, erased));
        }
        let text = |item: &shared::store::Item, name: &str| {
            item.get(name).and_then(|v| v.as_s().ok()).cloned()
        };
        if let Some(pending) = items
            .iter()
            .find(|item| text(item, "status").as_deref() == Some("pending"))
        {
            let id = text(pending, "operation_id").unwrap_or_default();
            return Err(Refused::Pending(user.clone(), format!("{user}/{id}")).into());
        }
        let (state, rest): (Vec<_>, Vec<_>) = items
            .into_iter()
            .partition(|item| text(item, keys::SK).as_deref() == Some(keys::ACCOUNT_SK));
        if tally
            .store
            .move_under_pseudonym(&rest, user, pseudonym)
            .await?
            != Commit::Done
        {
            continue;
        }
        moved += rest.len();
        if tally
            .store
            .move_under_pseudonym(&state, user, pseudonym)
            .await?
            == Commit::Done
        {
            return Ok((moved + state.len(), erased));
        }
        // Points arrived (or a hold) since the account was closed: close it again.
        erased += close_account(tally, user, now).await?;
    }
    Err("the account kept changing while it was being moved: run erase again".into())
}

impl std::fmt::Display for Erased {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "erased; the ledger is kept as {}", self.pseudonym)?;
        writeln!(f, "  likes removed (as unlikes): {}", self.likes_removed)?;
        writeln!(
            f,
            "  points taken by the erase entry: {}",
            self.points_erased
        )?;
        writeln!(f, "  items moved under the pseudonym: {}", self.items_moved)?;
        writeln!(
            f,
            "  other accounts' items renamed: {} (in {} accounts)",
            self.mentions_renamed,
            self.accounts_touched.len()
        )?;
        for (when, audits) in [
            ("before", &self.audits_before),
            ("after", &self.audits_after),
        ] {
            let failed = audits.iter().filter(|a| !a.findings.is_empty()).count();
            writeln!(
                f,
                "  audit {when}: {} accounts, {failed} not adding up",
                audits.len()
            )?;
        }
        writeln!(
            f,
            "  reconcile recounted {} posts, repaired {} counters",
            self.posts_recounted, self.counters_repaired
        )
    }
}
