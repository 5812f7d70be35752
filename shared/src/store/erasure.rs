//! Erasure's writes (SPEC section 9). The erased user's account partition is
//! moved under the pseudonym, item by item, each move one transaction (the
//! copy written, the original deleted); other items that name the user have
//! that name replaced in place, under the condition that it is still there.
//! Every step can be run again: what was done is not found again.

use aws_sdk_dynamodb::types::{AttributeValue, Delete, TransactWriteItem};

use super::keys::{self, GSI1_PK, GSI1_SK, GSI2_PK, GSI2_SK, PK, SK};
use super::points::{Commit, put};
use super::{Item, Store, StoreError, get_s, s};
use crate::domain::ids::UserId;

/// Marks an item copied under a pseudonym: the stream's reader publishes
/// nothing for it (its events were published when it was first written).
pub const PSEUDONYMIZED: &str = "pseudonymized";
/// Free text a user may have written, dropped from an erased account's items.
const FREE_TEXT: [&str; 3] = ["description", "reason", "detail"];
/// Moves per transaction (two items each).
const MOVES_PER_TRANSACTION: usize = 25;

fn rename(value: &mut AttributeValue, user: &UserId, pseudonym: &UserId) {
    if value.as_s().is_ok_and(|v| v == user.as_str()) {
        *value = s(pseudonym.as_str());
    }
}

/// An item of `user`'s account partition as it is kept under `pseudonym`:
/// the user's id replaced wherever it is a field's whole value (the key,
/// `user_id`, `caller`, a request's user, an entry list's user), free text
/// dropped (descriptions, a refund's or adjustment's reason, a rejection's
/// detail), index attributes removed (an erased account expires nothing and
/// lists nothing), and [`PSEUDONYMIZED`] set. Amounts, balances, `seq`,
/// `counterparty` and operation ids are kept as they are. (Pure.)
pub fn pseudonymized(item: &Item, user: &UserId, pseudonym: &UserId) -> Item {
    let mut item = item.clone();
    item.insert(PK.to_owned(), s(keys::account_pk(pseudonym)));
    for name in [GSI1_PK, GSI1_SK, GSI2_PK, GSI2_SK] {
        item.remove(name);
    }
    for name in ["user_id", "caller"] {
        if let Some(value) = item.get_mut(name) {
            rename(value, user, pseudonym);
        }
    }
    // `reason` at the top of a record is a rejection's code, not free text.
    item.remove("description");
    item.remove("detail");
    for name in ["request", "entry"] {
        if let Some(AttributeValue::M(map)) = item.get_mut(name) {
            for text in FREE_TEXT {
                map.remove(text);
            }
            for field in ["user_id", "to_user_id"] {
                if let Some(value) = map.get_mut(field) {
                    rename(value, user, pseudonym);
                }
            }
        }
    }
    if let Some(AttributeValue::L(entries)) = item.get_mut("entries") {
        for entry in entries {
            if let AttributeValue::M(map) = entry
                && let Some(value) = map.get_mut("user_id")
            {
                rename(value, user, pseudonym);
            }
        }
    }
    item.insert(PSEUDONYMIZED.to_owned(), AttributeValue::Bool(true));
    item
}

/// Where in another account's item `user` is named: attribute paths, each a
/// list of (map key or list index) steps. (Pure.)
pub fn mentions(item: &Item, user: &UserId) -> Vec<Vec<Step>> {
    let is_user = |value: Option<&AttributeValue>| {
        value.is_some_and(|v| v.as_s().is_ok_and(|v| v == user.as_str()))
    };
    let mut paths = Vec::new();
    if is_user(item.get("counterparty")) {
        paths.push(vec![Step::Key("counterparty".into())]);
    }
    // An operation record keeps a copy of its caller's entry.
    if let Some(AttributeValue::M(entry)) = item.get("entry")
        && is_user(entry.get("counterparty"))
    {
        paths.push(vec![
            Step::Key("entry".into()),
            Step::Key("counterparty".into()),
        ]);
    }
    if let Some(AttributeValue::M(request)) = item.get("request") {
        for field in ["user_id", "to_user_id"] {
            if is_user(request.get(field)) {
                paths.push(vec![Step::Key("request".into()), Step::Key(field.into())]);
            }
        }
    }
    if let Some(AttributeValue::L(entries)) = item.get("entries") {
        for (i, entry) in entries.iter().enumerate() {
            if let AttributeValue::M(map) = entry
                && is_user(map.get("user_id"))
            {
                paths.push(vec![
                    Step::Key("entries".into()),
                    Step::Index(i),
                    Step::Key("user_id".into()),
                ]);
            }
        }
    }
    paths
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// What the scan for items naming the user found outside its own partition.
#[derive(Debug, Default)]
pub struct Mentions {
    /// (item's key, where the user is named in it).
    pub items: Vec<(Item, Vec<Vec<Step>>)>,
    /// Accounts whose items name the user (entries' and operations' owners).
    pub accounts: Vec<UserId>,
}

impl Store {
    /// Every item outside `user`'s own partition that names `user`: other
    /// accounts' entries with the user as `counterparty`, and operation
    /// records whose request names the user (a grant to them, a transfer to
    /// them, a capture of their hold). One Scan of the whole table: an
    /// erasure reads every item once (docs/operations.md says what that costs).
    pub async fn items_naming(&self, user: &UserId) -> Result<Mentions, StoreError> {
        let mut found = Mentions::default();
        let mut items = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression(
                "pk <> :own AND (counterparty = :u OR #rq.user_id = :u OR #rq.to_user_id = :u)",
            )
            .expression_attribute_names("#rq", "request")
            .expression_attribute_values(":own", s(keys::account_pk(user)))
            .expression_attribute_values(":u", s(user.as_str()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = items.next().await {
            let item = item.map_err(StoreError::from_sdk)?;
            let paths = mentions(&item, user);
            if paths.is_empty() {
                continue;
            }
            if let Some(owner) = get_s(&item, PK)
                .and_then(|pk| pk.strip_prefix("ACCOUNT#"))
                .and_then(|id| UserId::parse(id).ok())
                && !found.accounts.contains(&owner)
            {
                found.accounts.push(owner);
            }
            let key = super::key(
                get_s(&item, PK).unwrap_or_default().to_owned(),
                get_s(&item, SK).unwrap_or_default().to_owned(),
            );
            found.items.push((key, paths));
        }
        self.usage.record("dynamodb:Scan items_naming", 0.0, 0.0);
        Ok(found)
    }

    /// Replaces `user` by `pseudonym` at `paths` of the item at `key`, on
    /// the condition that each still holds `user` (a rerun finds it done, and
    /// a concurrent write to other attributes is kept). Answers whether it wrote.
    pub async fn rename_mentions(
        &self,
        key: &Item,
        paths: &[Vec<Step>],
        user: &UserId,
        pseudonym: &UserId,
    ) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key.clone()))
            .expression_attribute_values(":u", s(user.as_str()))
            .expression_attribute_values(":p", s(pseudonym.as_str()));
        let mut names = std::collections::BTreeMap::new();
        let mut sets = Vec::new();
        let mut conditions = Vec::new();
        for path in paths {
            let mut text = String::new();
            for step in path {
                match step {
                    Step::Key(name) => {
                        let alias = format!("#n{}", names.len());
                        let alias = names.entry(name.clone()).or_insert(alias).clone();
                        if !text.is_empty() {
                            text.push('.');
                        }
                        text.push_str(&alias);
                    }
                    Step::Index(i) => text.push_str(&format!("[{i}]")),
                }
            }
            sets.push(format!("{text} = :p"));
            conditions.push(format!("{text} = :u"));
        }
        for (name, alias) in names {
            request = request.expression_attribute_names(alias, name);
        }
        let result = request
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression(conditions.join(" AND "))
            .send()
            .await;
        self.usage
            .record("dynamodb:UpdateItem rename_mentions", 1.0, 0.0);
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(StoreError::from_sdk(err)),
        }
    }

    /// Moves items of `user`'s partition under `pseudonym`
    /// ([`pseudonymized`]), each in a transaction with its original's delete.
    /// The account item (`STATE`) is deleted only at the `seq` it was read
    /// with, closed (balance 0, no holds), so an operation applied meanwhile
    /// cancels the move (answered [`Commit::Conflict`]: close it again, read
    /// again and go on).
    pub async fn move_under_pseudonym(
        &self,
        originals: &[Item],
        user: &UserId,
        pseudonym: &UserId,
    ) -> Result<Commit, StoreError> {
        for chunk in originals.chunks(MOVES_PER_TRANSACTION) {
            let mut items = Vec::with_capacity(chunk.len() * 2);
            for original in chunk {
                let mut copy = pseudonymized(original, user, pseudonym);
                if get_s(original, SK) == Some(keys::ACCOUNT_SK) {
                    // Audited once more under its new name by reconcile.
                    copy.insert(GSI1_PK.to_owned(), s(keys::dirty_account_gsi1pk(pseudonym)));
                    copy.insert(GSI1_SK.to_owned(), s(pseudonym.as_str()));
                }
                // Never over an item already there: a ledger kept under
                // this pseudonym is never written again.
                items.push(put(self
                    .put(copy)
                    .condition_expression("attribute_not_exists(pk)")));
                let key = super::key(
                    get_s(original, PK).unwrap_or_default().to_owned(),
                    get_s(original, SK).unwrap_or_default().to_owned(),
                );
                let delete = Delete::builder().table_name(&self.table).set_key(Some(key));
                let delete = match original.get("seq") {
                    // Closed, and not moved since: an operation applied
                    // meanwhile cancels the move.
                    Some(seq) if get_s(original, SK) == Some(keys::ACCOUNT_SK) => delete
                        .condition_expression(
                            "seq = :seq AND balance = :zero AND attribute_not_exists(holds)",
                        )
                        .expression_attribute_values(":seq", seq.clone())
                        .expression_attribute_values(":zero", AttributeValue::N("0".into())),
                    _ => delete.condition_expression("attribute_exists(pk)"),
                };
                #[allow(clippy::expect_used, reason = "the table and key are set")]
                let delete = delete.build().expect("the table and key are set");
                items.push(TransactWriteItem::builder().delete(delete).build());
            }
            match self.transact(items, false, 0).await? {
                Commit::Done => {}
                other => return Ok(other),
            }
        }
        Ok(Commit::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::super::n;
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn map(pairs: &[(&str, AttributeValue)]) -> AttributeValue {
        AttributeValue::M(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn an_erased_accounts_item_keeps_its_numbers_and_loses_the_user_and_free_text() {
        let (u, p) = (user("alice"), user("erased-00"));
        let record: Item = [
            (PK, s("ACCOUNT#alice")),
            (SK, s("OPERATION#t1")),
            ("caller", s("alice")),
            ("status", s("applied")),
            ("reason", s("insufficient_points")),
            ("detail", s("alice had 3")),
            (
                "request",
                map(&[
                    ("type", s("transfer")),
                    ("to_user_id", s("bob")),
                    ("amount", n(5)),
                    ("description", s("for alice's lunch")),
                ]),
            ),
            (
                "entries",
                AttributeValue::L(vec![
                    map(&[("user_id", s("alice")), ("seq", n(4))]),
                    map(&[("user_id", s("bob")), ("seq", n(9))]),
                ]),
            ),
            (GSI1_PK, s("PENDING#1")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let moved = pseudonymized(&record, &u, &p);
        assert_eq!(moved[PK], s("ACCOUNT#erased-00"));
        assert_eq!(moved[SK], s("OPERATION#t1"));
        assert_eq!(moved["caller"], s("erased-00"));
        assert_eq!(moved["reason"], s("insufficient_points"));
        assert!(!moved.contains_key("detail"));
        assert!(!moved.contains_key(GSI1_PK));
        assert_eq!(
            moved["request"],
            map(&[
                ("type", s("transfer")),
                ("to_user_id", s("bob")),
                ("amount", n(5))
            ])
        );
        assert_eq!(
            moved["entries"],
            AttributeValue::L(vec![
                map(&[("user_id", s("erased-00")), ("seq", n(4))]),
                map(&[("user_id", s("bob")), ("seq", n(9))])
            ])
        );
        assert_eq!(moved[PSEUDONYMIZED], AttributeValue::Bool(true));
        let text = format!("{moved:?}");
        assert!(!text.contains("alice"), "{text}");
    }

    #[test]
    fn mentions_are_the_fields_whose_whole_value_is_the_user() {
        let u = user("alice");
        let entry: Item = [
            ("counterparty".to_owned(), s("alice")),
            ("description".to_owned(), s("from alice")),
        ]
        .into();
        assert_eq!(
            mentions(&entry, &u),
            vec![vec![Step::Key("counterparty".into())]]
        );
        let grant: Item = [
            ("request".to_owned(), map(&[("user_id", s("alice"))])),
            (
                "entries".to_owned(),
                AttributeValue::L(vec![map(&[("user_id", s("alice"))])]),
            ),
        ]
        .into();
        assert_eq!(
            mentions(&grant, &u),
            vec![
                vec![Step::Key("request".into()), Step::Key("user_id".into())],
                vec![
                    Step::Key("entries".into()),
                    Step::Index(0),
                    Step::Key("user_id".into())
                ],
            ]
        );
        let record: Item = [(
            "entry".to_owned(),
            map(&[("counterparty", s("alice")), ("description", s("to alice"))]),
        )]
        .into();
        assert_eq!(
            mentions(&record, &u),
            vec![vec![
                Step::Key("entry".into()),
                Step::Key("counterparty".into())
            ]]
        );
        let other: Item = [("counterparty".to_owned(), s("alice2"))].into();
        assert!(mentions(&other, &u).is_empty());
    }
}
