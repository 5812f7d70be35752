//! The reads behind points insight (SPEC section 3), and the leaderboard lines
//! reconcile writes.
//!
//! - **An instant.** Booked times never go back along a ledger, so the entry
//!   an account stood at after, at any instant, is found by binary search over
//!   `seq`: one GetItem per step, about `log2(entries) + 1` in all.
//! - **A window.** The entries between two such entries are one key range.
//! - **Leaderboards.** One line per (account, board) in the account's own
//!   partition, listed by `gsi1` most earned first (`keys::board_gsi1sk`).

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::Select;
use time::OffsetDateTime;

use super::keys::{self, GSI1, GSI1_PK, GSI1_SK, PK, SK};
use super::points::from_item;
use super::{Item, Store, StoreError, corrupt, get_i64, get_s, n, s};
use crate::domain::ids::UserId;
use crate::domain::points::Entry;

/// A leaderboard line as stored: its board and the points earned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardLine {
    pub board: String,
    pub earned: u64,
}

impl Store {
    /// The last entry booked at or before `at` among entries 1 to `newest`
    /// (strongly consistent reads), or `None` if none was.
    pub async fn entry_booked_by(
        &self,
        user: &UserId,
        newest: u64,
        at: OffsetDateTime,
    ) -> Result<Option<Entry>, StoreError> {
        if newest == 0 {
            return Ok(None);
        }
        // Most instants asked about are after the newest entry: one read.
        let last = self.entry(user, newest).await?;
        if booked(&last)? <= at {
            return Ok(Some(last));
        }
        // Invariant: entry `low` (none when 0) is booked by `at`, entry `high` after it.
        let (mut low, mut high) = (0u64, newest);
        let mut found = None;
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            let entry = self.entry(user, middle).await?;
            if booked(&entry)? <= at {
                low = middle;
                found = Some(entry);
            } else {
                high = middle;
            }
        }
        Ok(found)
    }

    /// One ledger entry, which must exist (its account's `seq` counts it).
    async fn entry(&self, user: &UserId, seq: u64) -> Result<Entry, StoreError> {
        let key = Item::from([
            (PK.to_owned(), s(keys::account_pk(user))),
            (SK.to_owned(), s(keys::entry_sk(seq))),
        ]);
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        self.usage.record("dynamodb:GetItem entry", 0.0, 1.0);
        match output.item {
            Some(item) => from_item(item),
            None => Err(corrupt(
                &key,
                "the account's seq counts this entry; it is missing",
            )),
        }
    }

    /// The entries after `after` up to and including `through`, oldest first
    /// (strongly consistent, every page).
    pub async fn entries_between(
        &self,
        user: &UserId,
        after: u64,
        through: u64,
    ) -> Result<Vec<Entry>, StoreError> {
        if through <= after {
            return Ok(Vec::new());
        }
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :first AND :last")
            .expression_attribute_values(":pk", s(keys::account_pk(user)))
            .expression_attribute_values(":first", s(keys::entry_sk(after + 1)))
            .expression_attribute_values(":last", s(keys::entry_sk(through)));
        // Ledger entries are about 300 bytes.
        let items = self
            .query_all("dynamodb:Query entries_between", query, 300, true)
            .await?;
        let entries = items
            .into_iter()
            .map(from_item)
            .collect::<Result<Vec<Entry>, _>>()?;
        Ok(entries)
    }

    /// An account's leaderboard lines (every board it is on).
    pub async fn board_lines(&self, user: &UserId) -> Result<Vec<BoardLine>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :boards)")
            .expression_attribute_values(":pk", s(keys::account_pk(user)))
            .expression_attribute_values(":boards", s(keys::BOARD_SK_PREFIX));
        let items = self
            .query_all("dynamodb:Query board_lines", query, 150, false)
            .await?;
        let lines = items
            .iter()
            .map(board_line)
            .collect::<Result<Vec<BoardLine>, _>>()?;
        Ok(lines)
    }

    /// Writes an account's line on a board, kept until `expires` (the table's
    /// TTL). Points earned in a period only grow, so a line is written only
    /// over a smaller one: a slower run that read the ledger earlier never
    /// lowers it. `replacing`: a line was stored (its index entry moves).
    /// Answers whether it wrote.
    pub async fn put_board_line(
        &self,
        user: &UserId,
        line: &BoardLine,
        expires: Option<OffsetDateTime>,
        replacing: bool,
    ) -> Result<bool, StoreError> {
        let mut item = Item::from([
            (PK.to_owned(), s(keys::account_pk(user))),
            (SK.to_owned(), s(keys::board_sk(&line.board))),
            ("earned".to_owned(), n(line.earned)),
            (GSI1_PK.to_owned(), s(keys::board_gsi1pk(&line.board))),
            (GSI1_SK.to_owned(), s(keys::board_gsi1sk(line.earned, user))),
        ]);
        if let Some(expires) = expires {
            item.insert(keys::EXPIRES_AT.to_owned(), n(expires.unix_timestamp()));
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            // A line read before is only raised where it still is: one an
            // erasure moved away meanwhile stays gone.
            .condition_expression(if replacing {
                "earned < :earned"
            } else {
                "attribute_not_exists(earned) OR earned < :earned"
            })
            .expression_attribute_values(":earned", n(line.earned))
            .send()
            .await;
        match result {
            Ok(_) => {
                // The line, and its index entry: put, or moved (a delete and a put).
                let units = if replacing { 3.0 } else { 2.0 };
                self.usage.record("dynamodb:PutItem board_line", units, 0.0);
                Ok(true)
            }
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => {
                    self.usage.record("dynamodb:PutItem board_line", 1.0, 0.0);
                    Ok(false)
                }
                _ => Err(StoreError::from_sdk(err)),
            },
        }
    }

    /// A board's first `limit` lines, most earned first (ties by user id),
    /// from the index (eventually consistent: it follows the table within a
    /// second or so).
    pub async fn board_top(
        &self,
        board: &str,
        limit: usize,
    ) -> Result<Vec<(UserId, u64)>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression("gsi1pk = :board")
            .expression_attribute_values(":board", s(keys::board_gsi1pk(board)));
        // An index entry holds the four keys: about 120 bytes.
        let rows = self
            .query_up_to("dynamodb:Query board_top", query, limit, 120)
            .await?;
        rows.iter()
            .map(|item| {
                get_s(item, GSI1_SK)
                    .and_then(keys::parse_board_gsi1sk)
                    .map(|(earned, user)| (user, earned))
                    .ok_or_else(|| {
                        corrupt(item, "a leaderboard line's index key is not earned#user")
                    })
            })
            .collect()
    }

    /// One account's points earned on a board (`None`: not on it).
    pub async fn board_earned(
        &self,
        user: &UserId,
        board: &str,
    ) -> Result<Option<u64>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(keys::account_pk(user)))
            .key(SK, s(keys::board_sk(board)))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        self.usage.record("dynamodb:GetItem board_line", 0.0, 0.5);
        output
            .item
            .map(|item| board_line(&item).map(|line| line.earned))
            .transpose()
    }

    /// How many lines of a board earned more than `earned`, counting at most
    /// `at_most` (`None` when there are more): a rank costs reading the index
    /// entries above it, about 120 bytes each.
    pub async fn board_count_ahead(
        &self,
        board: &str,
        earned: u64,
        at_most: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut counted = 0u64;
        let mut start = None;
        loop {
            // No page reads past the bound: one more than asked says "more".
            let room = at_most.saturating_add(1).saturating_sub(counted);
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI1)
                .key_condition_expression("gsi1pk = :board AND gsi1sk < :ahead")
                .expression_attribute_values(":board", s(keys::board_gsi1pk(board)))
                .expression_attribute_values(":ahead", s(keys::board_rank_key(earned)))
                .select(Select::Count)
                .limit(i32::try_from(room).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(StoreError::from_sdk)?;
            let found = u64::try_from(output.count).unwrap_or(0);
            self.usage.record(
                "dynamodb:Query board_count_ahead",
                0.0,
                crate::usage::read_units(found as usize, 120, false),
            );
            counted += found;
            if counted > at_most {
                return Ok(None);
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(Some(counted))
    }
}

fn booked(entry: &Entry) -> Result<OffsetDateTime, StoreError> {
    entry.booked_time().ok_or_else(|| StoreError::Corrupt {
        key: format!("entry {}", entry.seq),
        problem: format!("booked time {:?} is not a time", entry.booked()),
        source: None,
    })
}

pub(super) fn board_line(item: &Item) -> Result<BoardLine, StoreError> {
    let board = get_s(item, SK)
        .and_then(|sk| sk.strip_prefix(keys::BOARD_SK_PREFIX))
        .ok_or_else(|| corrupt(item, "not a leaderboard line"))?;
    let earned = get_i64(item, "earned")
        .and_then(|earned| u64::try_from(earned).ok())
        .ok_or_else(|| corrupt(item, "earned is not a non-negative number"))?;
    Ok(BoardLine {
        board: board.to_owned(),
        earned,
    })
}
