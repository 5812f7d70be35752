//! No panic is reachable from input: arbitrary queue messages, and arbitrary
//! stored accounts and ledgers, go through decoding, validation, planning,
//! expiry and the audit, and every path answers instead of panicking.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{Value, json};
use shared::domain::ids::{OperationId, UserId};
use shared::domain::points::{
    self, Account, Amount, Entry, EntryKind, Expiry, Hold, Lots, OpenHold, OperationRecord,
    OperationStatus, PointTypes, PointsOperation, PointsRequest, Snapshot,
};
use shared::domain::timestamp;
use shared::message::{Envelope, Read};
use time::OffsetDateTime;

/// Any JSON scalar, including the edges of every number type.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(1_000_000_000),
            Just(1_000_000_001),
            Just(u64::MAX)
        ]
        .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        "[A-Za-z0-9._:|@#-]{0,140}".prop_map(Value::from),
        prop_oneof![Just(499usize), Just(500), Just(501), Just(5000)]
            .prop_map(|n| Value::from("é".repeat(n))),
    ]
}

/// Times anywhere the calendar goes, written in every RFC 3339 shape.
fn time_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        (
            0i32..=9999,
            1u8..=12,
            1u8..=28,
            0u8..=23,
            0u8..=59,
            -23i8..=23
        )
            .prop_map(|(y, mo, d, h, mi, off)| Value::from(format!(
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:59.999999{}",
                if off == 0 {
                    "Z".to_owned()
                } else {
                    format!("{off:+03}:00")
                }
            ))),
        Just(Value::from("9999-12-31T23:59:59.999999Z")),
        Just(Value::from("0000-01-01T00:00:00Z")),
        Just(Value::from(timestamp::format(OffsetDateTime::now_utc()))),
        scalar(),
    ]
}

fn operation() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("like"),
            Just("unlike"),
            Just("grant"),
            Just("spend"),
            Just("transfer"),
            Just("hold"),
            Just("capture"),
            Just("release"),
            Just("refund"),
            Just("adjust"),
            Just("poke")
        ],
        prop::collection::btree_map(
            prop_oneof![
                Just("post_id"),
                Just("user_id"),
                Just("to_user_id"),
                Just("amount"),
                Just("point_type"),
                Just("description"),
                Just("hold_id"),
                Just("operation_id"),
                Just("expires_in_seconds"),
                Just("reason"),
                Just("reference"),
                Just("extra")
            ],
            prop_oneof![
                scalar(),
                Just(Value::from("alice")),
                Just(Value::from("sign_in")),
                Just(Value::from(30)),
                Just(Value::from(-30)),
                Just(Value::from("h1"))
            ],
            0..8,
        ),
    )
        .prop_map(|(kind, fields)| {
            let mut op = json!({ "type": kind });
            for (name, value) in fields {
                op[name] = value;
            }
            op
        })
}

fn envelope() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just(Value::from(1)), scalar()],
        prop_oneof![Just(Value::from("op-1")), scalar()],
        prop_oneof![
            Just(Value::from("alice")),
            Just(Value::from("auth0|5f7c")),
            scalar()
        ],
        time_text(),
        prop_oneof![operation(), scalar()],
    )
        .prop_map(|(version, operation_id, caller, accepted_at, operation)| {
            json!({
                "version": version,
                "operation_id": operation_id,
                "caller": caller,
                "accepted_at": accepted_at,
                "operation": operation,
            })
        })
}

fn any_time() -> impl Strategy<Value = OffsetDateTime> {
    (-377_705_116_800i64..=253_402_300_799)
        .prop_map(|t| OffsetDateTime::from_unix_timestamp(t).unwrap())
}

fn stored_lots() -> impl Strategy<Value = Lots> {
    prop::collection::btree_map(
        prop_oneof![Just(Expiry::Never), any_time().prop_map(Expiry::At)],
        prop_oneof![any::<u64>(), 0u64..1000],
        0..4,
    )
}

fn stored_account() -> impl Strategy<Value = Account> {
    (
        any::<u64>(),
        any::<u64>(),
        stored_lots(),
        prop::collection::btree_map(
            prop_oneof![Just("h1"), Just("h2"), Just("expire:x")]
                .prop_map(|id| OperationId::parse(id).unwrap()),
            (stored_lots(), any_time()).prop_map(|(lots, expires_at)| OpenHold {
                lots,
                expires_at,
                reference: None,
            }),
            0..3,
        ),
    )
        .prop_map(|(balance, seq, lots, holds)| Account {
            balance,
            seq,
            lots,
            holds,
            booked_at: None,
        })
}

fn stored_record() -> impl Strategy<Value = Option<OperationRecord>> {
    prop::option::of((stored_lots(), any::<bool>()).prop_map(|(lots, closed)| {
        let op = PointsOperation {
            operation_id: OperationId::parse("h1").unwrap(),
            caller: UserId::parse("alice").unwrap(),
            request: PointsRequest::Hold(Hold {
                amount: Amount::new(30).unwrap(),
                expires_in_seconds: None,
                description: None,
                reference: None,
            }),
            accepted_at: OffsetDateTime::now_utc(),
        };
        OperationRecord {
            status: OperationStatus::Applied,
            refundable: Some(lots),
            closed_by: closed.then(|| OperationId::parse("c1").unwrap()),
            ..OperationRecord::pending(&op)
        }
    }))
}

fn stored_entry() -> impl Strategy<Value = Entry> {
    (any::<u64>(), any::<i64>(), any::<u64>(), any::<u64>()).prop_map(
        |(seq, amount, balance_before, balance_after)| Entry {
            seq,
            kind: EntryKind::Adjust,
            amount,
            balance_before,
            balance_after,
            operation_id: OperationId::parse("tampered").unwrap(),
            held_before: balance_before / 2,
            held_after: balance_after / 3,
            point_type: None,
            counterparty: None,
            hold_id: None,
            refund_of: None,
            reference: None,
            description: None,
            hold_expired: false,
            booked_at: None,
            created_at: String::new(),
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever arrives on a queue, reading it answers, and whatever reads as
    /// valid plans against any stored accounts without a panic.
    #[test]
    fn any_message_is_read_and_planned_without_panicking(
        message in envelope(),
        sender in stored_account(),
        receiver in stored_account(),
        linked in stored_record(),
        now_offset in -400_000_000i64..400_000_000,
    ) {
        let types = PointTypes::shipped();
        let now = OffsetDateTime::now_utc() + time::Duration::seconds(now_offset);
        let body = message.to_string();
        match Envelope::read(&body, &types, now) {
            Read::Valid(envelope) => {
                if let Some(like) = envelope.like_operation() {
                    let _ = like.version();
                    let _ = like.tombstone_expires_at();
                }
                if let Some(op) = envelope.points_operation() {
                    let mut accounts = HashMap::new();
                    accounts.insert(op.caller.clone(), sender);
                    for user in op.request.accounts(&op.caller) {
                        accounts.entry(user.clone()).or_insert_with(|| receiver.clone());
                    }
                    let found = Snapshot { accounts, linked };
                    if let Ok(plan) = points::plan(&op, &found, &types, now) {
                        for change in plan.changes {
                            prop_assert!(change.after.balance <= points::MAX_BALANCE);
                        }
                    }
                    let _ = Envelope::for_points(&op).encode();
                }
            }
            Read::Invalid { detail, .. } | Read::Unattributable(detail) => {
                prop_assert!(!detail.to_string().is_empty());
            }
        }
    }

    /// Arbitrary stored state (what a hand edit can leave): the balance read,
    /// the expiry run and the audit all answer.
    #[test]
    fn any_stored_account_and_ledger_expire_and_audit_without_panicking(
        account in stored_account(),
        entries in prop::collection::vec(stored_entry(), 0..5),
        now in -377_705_116_800i64..=253_402_300_799,
    ) {
        let now = OffsetDateTime::from_unix_timestamp(now).unwrap();
        let user = UserId::parse("auth0|5f7c").unwrap();
        let current = account.as_of(now);
        prop_assert!(current.balance <= account.balance);
        prop_assert!(current.held() <= account.held());
        if let Some(change) = points::settle_due(&user, &account, now) {
            prop_assert!(change.entries.iter().all(|entry| entry.amount <= 0));
        }
        let _ = points::audit(&account, &entries);
    }
}
