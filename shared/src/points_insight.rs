//! Points insight (SPEC section 3): the flows between the rules
//! ([`crate::domain::points::insight`]) and the reads ([`crate::store::insight`]).
//!
//! - [`balance_at`]: `GET /v1/me/points?at=`.
//! - [`statement`]: `GET /v1/me/points/statement`.
//! - [`leaderboard`] and [`rank`]: read what reconcile built with
//!   [`update_boards`], exact as of the run that last built every board.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

use crate::domain::ids::UserId;
use crate::domain::points::Entry;
use crate::domain::points::insight::{
    InvalidInsight, Period, Ranked, Standing, Window, rank as ranked,
};
use crate::domain::timestamp;
use crate::store::insight::BoardLine;
use crate::store::{Store, StoreError, decode_cursor, encode_cursor};

/// How deep `rank` counts: a rank costs reading the index entries above it
/// (about 120 bytes each), so past this many it answers "outside the top"
/// rather than read a million of them.
pub const MAX_EXACT_RANK: u64 = 10_000;

/// The account at `at`, after the last entry booked at or before it (zeros
/// before the first).
pub async fn balance_at(
    store: &Store,
    user: &UserId,
    at: OffsetDateTime,
) -> Result<Standing, StoreError> {
    let account = store.account(user).await?;
    let entry = store.entry_booked_by(user, account.seq, at).await?;
    Ok(Standing::after(entry.as_ref()))
}

/// One page of a statement: the same opening, closing and totals on every page.
#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    #[serde(with = "timestamp::serde_fixed")]
    pub from: OffsetDateTime,
    #[serde(with = "timestamp::serde_fixed")]
    pub to: OffsetDateTime,
    /// The account at `from`.
    pub opening: Standing,
    /// The account at `to`.
    pub closing: Standing,
    /// The sum of `amount` of the window's entries, by kind: `opening.balance`
    /// plus every total is `closing.balance`.
    pub totals: BTreeMap<&'static str, i64>,
    /// How many entries the window holds (over every page).
    pub entry_count: usize,
    /// This page's entries, oldest first.
    pub items: Vec<Entry>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error(transparent)]
    Invalid(#[from] InvalidInsight),
    #[error("cursor is not one this statement returned")]
    InvalidCursor,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the next page starts, and the window's end the first page fixed
/// (`to` defaults to the first page's now: the pages after it keep it).
#[derive(Debug, Serialize, serde::Deserialize)]
struct StatementCursor {
    after: u64,
    to: String,
}

/// What a caller asked for: the query's `from`, `to` and `cursor`, as text.
#[derive(Debug, Clone, Copy)]
pub struct StatementQuery<'a> {
    pub from: &'a str,
    pub to: Option<&'a str>,
    pub cursor: Option<&'a str>,
}

/// A statement of `user`'s account, `limit` entries a page, read at `now`.
/// Each page reads the whole window again (its totals need every entry): a
/// window of `w` entries costs about `w × 300` bytes of reads per page.
pub async fn statement(
    store: &Store,
    user: &UserId,
    query: StatementQuery<'_>,
    limit: u32,
    now: OffsetDateTime,
) -> Result<Statement, StatementError> {
    let cursor = match query.cursor {
        None => None,
        Some(text) => {
            Some(decode_cursor::<StatementCursor>(text).ok_or(StatementError::InvalidCursor)?)
        }
    };
    let window = match (&cursor, query.to) {
        (Some(cursor), None) => Window::parse(query.from, Some(&cursor.to), now)?,
        (_, to) => Window::parse(query.from, to, now)?,
    };
    let account = store.account(user).await?;
    let closing = store.entry_booked_by(user, account.seq, window.to).await?;
    let closing = Standing::after(closing.as_ref());
    let opening = store
        .entry_booked_by(user, closing.seq, window.from)
        .await?;
    let opening = Standing::after(opening.as_ref());
    let to = timestamp::format(window.to);
    let after = match cursor {
        None => opening.seq,
        Some(cursor) => {
            Some(cursor)
                .filter(|c| c.to == to && (opening.seq..closing.seq).contains(&c.after))
                .ok_or(StatementError::InvalidCursor)?
                .after
        }
    };
    let entries = store
        .entries_between(user, opening.seq, closing.seq)
        .await?;
    let totals = crate::domain::points::insight::totals_by_kind(&entries);
    let entry_count = entries.len();
    let items: Vec<Entry> = entries
        .into_iter()
        .filter(|entry| entry.seq > after)
        .take(limit as usize)
        .collect();
    let next_cursor = items
        .last()
        .filter(|last| last.seq < closing.seq)
        .map(|last| {
            encode_cursor(&StatementCursor {
                after: last.seq,
                to: to.clone(),
            })
        });
    Ok(Statement {
        from: window.from,
        to: window.to,
        opening,
        closing,
        totals,
        entry_count,
        items,
        next_cursor,
    })
}

/// When the leaderboards were last built in full, and the period's board then.
#[derive(Debug, Clone, Serialize)]
pub struct Leaderboard {
    pub period: &'static str,
    /// When the period started (`null` for all time).
    #[serde(with = "timestamp::serde_fixed_option")]
    pub from: Option<OffsetDateTime>,
    /// The start of the last reconcile run that brought every board up to
    /// date: the board counts every entry applied before then and none booked
    /// after (`null` until a run has).
    #[serde(with = "timestamp::serde_fixed_option")]
    pub as_of: Option<OffsetDateTime>,
    pub items: Vec<Ranked>,
}

/// Where the boards stand: reconcile's `leaderboard_as_of`.
async fn boards_as_of(store: &Store) -> Result<Option<OffsetDateTime>, StoreError> {
    let state = store.reconcile_state().await?;
    // Read back from the table: a time no period can hold is no `as_of`.
    Ok(state
        .leaderboard_as_of
        .as_deref()
        .and_then(timestamp::parse)
        .filter(|at| Period::Day.start(*at).is_some()))
}

/// The first `limit` lines of `period`'s board as of the last full build.
pub async fn leaderboard(
    store: &Store,
    period: Period,
    limit: usize,
) -> Result<Leaderboard, StoreError> {
    let as_of = boards_as_of(store).await?;
    let items = match as_of {
        Some(as_of) => ranked(store.board_top(&period.board(as_of), limit).await?),
        None => Vec::new(),
    };
    Ok(Leaderboard {
        period: period.name(),
        from: as_of.and_then(|as_of| period.start(as_of)),
        as_of,
        items,
    })
}

/// A user's place on a board.
#[derive(Debug, Clone, Serialize)]
pub struct Rank {
    pub period: &'static str,
    #[serde(with = "timestamp::serde_fixed_option")]
    pub from: Option<OffsetDateTime>,
    #[serde(with = "timestamp::serde_fixed_option")]
    pub as_of: Option<OffsetDateTime>,
    pub user_id: UserId,
    /// Points earned in the period (0 when not on the board).
    pub earned: u64,
    /// 1 + how many earned more; `null` when not on the board, or outside
    /// the top [`MAX_EXACT_RANK`].
    pub rank: Option<u64>,
    /// Set when the rank is past [`MAX_EXACT_RANK`]: the user is outside the top this many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outside_top: Option<u64>,
}

pub async fn rank(store: &Store, user: &UserId, period: Period) -> Result<Rank, StoreError> {
    let as_of = boards_as_of(store).await?;
    let mut answer = Rank {
        period: period.name(),
        from: as_of.and_then(|as_of| period.start(as_of)),
        as_of,
        user_id: user.clone(),
        earned: 0,
        rank: None,
        outside_top: None,
    };
    let Some(as_of) = as_of else {
        return Ok(answer);
    };
    let board = period.board(as_of);
    let Some(earned) = store.board_earned(user, &board).await? else {
        return Ok(answer);
    };
    answer.earned = earned;
    match store
        .board_count_ahead(&board, earned, MAX_EXACT_RANK - 1)
        .await?
    {
        Some(ahead) => answer.rank = Some(ahead + 1),
        None => answer.outside_top = Some(MAX_EXACT_RANK),
    }
    Ok(answer)
}

/// Puts an account on the boards its ledger (`entries`, as reconcile just
/// read them) earns it at `now`: one line per period it earned in, written
/// only where the stored line is smaller. Answers the lines written.
pub async fn update_boards(
    store: &Store,
    user: &UserId,
    entries: &[Entry],
    now: OffsetDateTime,
) -> Result<u64, StoreError> {
    // An erased user's ledger, kept under its pseudonym, is on no board.
    if user
        .as_str()
        .starts_with(crate::domain::erasure::PSEUDONYM_PREFIX)
    {
        return Ok(0);
    }
    let wanted = lines_at(entries, now);
    if wanted.is_empty() {
        return Ok(0);
    }
    let stored: BTreeMap<String, u64> = store
        .board_lines(user)
        .await?
        .into_iter()
        .map(|line| (line.board, line.earned))
        .collect();
    let mut written = 0;
    for (board, (line, expires)) in wanted {
        let replacing = match stored.get(&board) {
            Some(earned) if *earned >= line.earned => continue,
            Some(_) => true,
            None => false,
        };
        let wrote = store
            .put_board_line(user, &line, expires, replacing)
            .await?;
        written += u64::from(wrote);
    }
    Ok(written)
}

/// How long a past period's line is kept after the period ends (the table's
/// TTL then removes it).
const PAST_BOARD_KEPT: time::Duration = time::Duration::days(31);

/// The lines an account's ledger puts it on at `now`, keyed by board: one
/// per period it earned points in, each with when it may go.
fn lines_at(
    entries: &[Entry],
    now: OffsetDateTime,
) -> BTreeMap<String, (BoardLine, Option<OffsetDateTime>)> {
    Period::EVERY
        .into_iter()
        .filter_map(|period| {
            let (board, earned) = crate::domain::points::insight::earned_in(entries, period, now)?;
            let expires = period.end(now).map(|end| end + PAST_BOARD_KEPT);
            Some((board.clone(), (BoardLine { board, earned }, expires)))
        })
        .collect()
}
