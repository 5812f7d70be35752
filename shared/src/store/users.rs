//! Everything the points side of the table holds under one user's account:
//! what `tally-admin user export` writes out.

use super::keys::{self, ACCOUNT_SK, PK, SK};
use super::points::{account_from_item, from_item};
use super::{Item, Store, StoreError, corrupt, get_s, s};
use crate::domain::ids::UserId;
use crate::domain::points::{Account, Entry, OperationRecord};

/// The items under `ACCOUNT#{user}`, each read back into Tally's types.
#[derive(Debug, Default)]
pub struct AccountRecords {
    /// `None` for a user who never had points.
    pub account: Option<Account>,
    /// The ledger, oldest first.
    pub entries: Vec<Entry>,
    /// The operations the user asked for (as caller), oldest key first.
    pub operations: Vec<OperationRecord>,
    /// The user's lines on the leaderboards (what reconcile last counted).
    pub board_lines: Vec<super::insight::BoardLine>,
}

impl Store {
    /// The items of `user`'s account partition as stored (strongly
    /// consistent, page by page).
    pub async fn account_items(&self, user: &UserId) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::new();
        let mut items = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(keys::account_pk(user)))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = items.next().await {
            found.push(item.map_err(StoreError::from_sdk)?);
        }
        self.usage.record("dynamodb:Query account_items", 0.0, 1.0);
        Ok(found)
    }

    /// [`account_items`](Self::account_items) read into Tally's types. An
    /// item of another shape is an error naming its key.
    pub async fn account_records(&self, user: &UserId) -> Result<AccountRecords, StoreError> {
        let mut records = AccountRecords::default();
        for item in self.account_items(user).await? {
            let sort_key = get_s(&item, SK).unwrap_or_default().to_owned();
            if sort_key == ACCOUNT_SK {
                records.account = Some(account_from_item(&item)?);
            } else if sort_key.starts_with(keys::ENTRY_SK_PREFIX) {
                records.entries.push(from_item(item)?);
            } else if sort_key.starts_with(keys::OPERATION_SK_PREFIX) {
                records.operations.push(from_item(item)?);
            } else if sort_key.starts_with(keys::BOARD_SK_PREFIX) {
                records.board_lines.push(super::insight::board_line(&item)?);
            } else {
                return Err(corrupt(
                    &item,
                    format!("unknown item in {}", get_s(&item, PK).unwrap_or_default()),
                ));
            }
        }
        Ok(records)
    }
}
