use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::domain::ids::{OperationId, Reference, UserId};
use crate::domain::points::operation::{OperationRecord, OperationStatus, Rejection};
use crate::domain::points::request::*;
use crate::domain::points::{
    Amount, Expiry, Finding, Lots, MAX_AMOUNT, PointTypes, SignedAmount, audit,
};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn op(caller: &str, request: PointsRequest, at: OffsetDateTime) -> PointsOperation {
    PointsOperation {
        operation_id: OperationId::generate(),
        caller: user(caller),
        request,
        accepted_at: at,
    }
}

fn grant(to: &str, amount: u64, point_type: &str) -> PointsRequest {
    PointsRequest::Grant(Grant {
        user_id: user(to),
        amount: Amount::new(amount).unwrap(),
        point_type: point_type.to_owned(),
        description: None,
        reference: None,
    })
}

fn spend(amount: u64) -> PointsRequest {
    PointsRequest::Spend(Spend {
        amount: Amount::new(amount).unwrap(),
        description: None,
        reference: None,
    })
}

fn apply(
    accounts: &mut HashMap<UserId, Account>,
    op: &PointsOperation,
) -> Result<Vec<AccountChange>, Rejection> {
    apply_at(accounts, op, None, op.accepted_at).map(|plan| plan.changes)
}

/// Plans `op` at `now` against `accounts` (and a linked record) and applies it to them.
fn apply_at(
    accounts: &mut HashMap<UserId, Account>,
    op: &PointsOperation,
    linked: Option<OperationRecord>,
    now: OffsetDateTime,
) -> Result<Plan, Rejection> {
    let found = Snapshot {
        accounts: accounts.clone(),
        linked,
    };
    let plan = plan(op, &found, &PointTypes::shipped(), now)?;
    for c in &plan.changes {
        accounts.insert(c.user.clone(), c.after.clone());
    }
    Ok(plan)
}

fn own(changes: &[AccountChange], i: usize) -> &Entry {
    changes[i].own_entry().unwrap()
}

#[test]
fn the_shipped_point_types_parse_with_their_lifetimes() {
    let types = PointTypes::shipped();
    assert_eq!(types.lifetime("sign_in"), Some(Some(Duration::days(30))));
    assert_eq!(types.lifetime("purchase"), Some(Some(Duration::days(365))));
    assert_eq!(types.lifetime("bonus"), Some(None));
    assert_eq!(types.lifetime("gift"), None);
}

#[test]
fn amounts_are_bounded() {
    assert!(Amount::new(0).is_err());
    assert!(Amount::new(1).is_ok());
    assert!(Amount::new(MAX_AMOUNT).is_ok());
    assert!(Amount::new(MAX_AMOUNT + 1).is_err());
}

#[test]
fn amounts_read_any_whole_json_number_and_write_integers() {
    let read = |json: &str| serde_json::from_str::<Amount>(json).map(Amount::get);
    assert_eq!(read("30").unwrap(), 30);
    assert_eq!(read("30.0").unwrap(), 30);
    assert_eq!(read("3e1").unwrap(), 30);
    assert_eq!(serde_json::to_string(&read("3e1").unwrap()).unwrap(), "30");
    for (json, needle) in [
        ("30.5", "whole number"),
        ("0", "from 1"),
        ("-3", "from 1"),
        ("1e10", "from 1"),
        ("\"30\"", "whole number"),
    ] {
        let err = read(json).unwrap_err().to_string();
        assert!(err.contains(needle), "{json}: {err}");
    }
}

#[test]
fn expiry_rounds_up_to_the_next_utc_midnight() {
    let at = datetime!(2026-11-21 05:30 UTC);
    assert_eq!(
        Expiry::after(at, Some(Duration::days(30))),
        Expiry::At(datetime!(2026-12-22 00:00 UTC))
    );
    let midnight = datetime!(2026-11-21 00:00 UTC);
    assert_eq!(
        Expiry::after(midnight, Some(Duration::days(1))),
        Expiry::At(datetime!(2026-11-22 00:00 UTC))
    );
    assert_eq!(Expiry::after(at, None), Expiry::Never);
    assert!(Expiry::At(datetime!(9999-01-01 00:00 UTC)) < Expiry::Never);
    for expiry in [Expiry::Never, Expiry::At(datetime!(2026-12-22 00:00 UTC))] {
        assert_eq!(Expiry::from_key(&expiry.key()), Some(expiry));
    }
}

#[test]
fn spends_take_the_soonest_expiring_lots_first() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    apply(&mut accounts, &op("admin", grant("alice", 50, "bonus"), t)).unwrap();
    apply(
        &mut accounts,
        &op("admin", grant("alice", 40, "purchase"), t),
    )
    .unwrap();
    apply(
        &mut accounts,
        &op("admin", grant("alice", 30, "sign_in"), t),
    )
    .unwrap();
    apply(&mut accounts, &op("alice", spend(45), t)).unwrap();
    let alice = &accounts[&user("alice")];
    assert_eq!(alice.balance, 75);
    let expiring: Vec<_> = alice.expiring().collect();
    assert_eq!(expiring, vec![(datetime!(2027-11-22 00:00 UTC), 25)]);
    assert_eq!(alice.lots[&Expiry::Never], 50);
}

#[test]
fn entries_chain_seq_and_balances() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    let mut entries = Vec::new();
    for request in [grant("alice", 100, "sign_in"), spend(30), spend(70)] {
        let caller = if matches!(request, PointsRequest::Grant(_)) {
            "admin"
        } else {
            "alice"
        };
        entries.push(
            apply(&mut accounts, &op(caller, request, t)).unwrap()[0]
                .own_entry()
                .unwrap()
                .clone(),
        );
    }
    for (i, pair) in entries.windows(2).enumerate() {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "entry {i}");
        assert_eq!(pair[1].balance_before, pair[0].balance_after);
    }
    assert_eq!(entries.iter().map(|e| e.amount).sum::<i64>(), 0);
    assert_eq!(entries[0].seq, 1);
}

#[test]
fn overspending_is_rejected_and_changes_nothing() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    apply(&mut accounts, &op("admin", grant("alice", 10, "bonus"), t)).unwrap();
    let before = accounts.clone();
    assert_eq!(
        apply(&mut accounts, &op("alice", spend(11), t)),
        Err(Rejection::InsufficientPoints)
    );
    assert_eq!(accounts, before);
}

#[test]
fn transfers_move_lots_with_their_expiry_and_conserve_points() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    apply(
        &mut accounts,
        &op("admin", grant("alice", 30, "sign_in"), t),
    )
    .unwrap();
    apply(&mut accounts, &op("admin", grant("alice", 30, "bonus"), t)).unwrap();
    let transfer = PointsRequest::Transfer(Transfer {
        to_user_id: user("bob"),
        amount: Amount::new(40).unwrap(),
        description: Some("thanks".into()),
        reference: None,
    });
    let changes = apply(&mut accounts, &op("alice", transfer, t)).unwrap();
    assert_eq!(own(&changes, 0).kind, EntryKind::TransferOut);
    assert_eq!(own(&changes, 0).amount, -40);
    assert_eq!(own(&changes, 1).kind, EntryKind::TransferIn);
    assert_eq!(own(&changes, 1).counterparty, Some(user("alice")));
    let bob = &accounts[&user("bob")];
    assert_eq!(bob.balance, 40);
    assert_eq!(bob.lots[&Expiry::after(t, Some(Duration::days(30)))], 30);
    assert_eq!(bob.lots[&Expiry::Never], 10);
    assert_eq!(accounts[&user("alice")].balance + bob.balance, 60);
}

#[test]
fn due_lots_expire_as_one_entry_and_later_lots_stay() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    apply(
        &mut accounts,
        &op("admin", grant("alice", 30, "sign_in"), t),
    )
    .unwrap();
    apply(
        &mut accounts,
        &op(
            "admin",
            grant("alice", 40, "sign_in"),
            t + Duration::days(2),
        ),
    )
    .unwrap();
    apply(&mut accounts, &op("admin", grant("alice", 50, "bonus"), t)).unwrap();
    apply(&mut accounts, &op("alice", spend(10), t)).unwrap();
    let alice = accounts[&user("alice")].clone();
    assert_eq!(
        settle_due(&user("alice"), &alice, t + Duration::days(30)),
        None,
        "nothing due yet"
    );
    let change = settle_due(&user("alice"), &alice, t + Duration::days(31)).unwrap();
    assert_eq!(change.entries[0].kind, EntryKind::Expire);
    assert_eq!((change.entries[0].amount, change.entries[0].seq), (-20, 5));
    assert_eq!((change.after.balance, change.after.seq), (90, 5));
    assert_eq!(
        change.after.next_expiry(),
        Some(datetime!(2026-12-24 00:00 UTC))
    );
    assert_eq!(
        audit(&change.after, &[]).len(),
        2,
        "an empty ledger cannot explain a balance"
    );
    let all = settle_due(&user("alice"), &change.after, t + Duration::days(400)).unwrap();
    assert_eq!((all.after.balance, all.entries[0].amount), (50, -40));
    assert_eq!(all.after.next_expiry(), None);
}

#[test]
fn booked_times_never_go_back_along_a_ledger() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    let mut entries = Vec::new();
    let mut run = |op: PointsOperation, now: OffsetDateTime| {
        let plan = apply_at(&mut accounts, &op, None, now).unwrap();
        entries.extend(plan.changes[0].entries.clone());
    };
    run(op("admin", grant("alice", 30, "sign_in"), t), t);
    run(op("admin", grant("alice", 50, "bonus"), t), t);
    // Accepted just before the sign-in lot expired, applied a day later: the
    // expiry is written (at the worker's time) before the spend's entry.
    let due = datetime!(2026-12-22 00:00 UTC);
    let late = due + Duration::days(1);
    run(op("alice", spend(10), due - Duration::seconds(1)), late);
    // A grant accepted before all of it, applied last.
    run(op("admin", grant("alice", 5, "bonus"), t), late);
    let kinds: Vec<_> = entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EntryKind::Grant,
            EntryKind::Grant,
            EntryKind::Expire,
            EntryKind::Spend,
            EntryKind::Grant
        ]
    );
    let booked: Vec<&str> = entries.iter().map(Entry::booked).collect();
    let late_text = crate::domain::timestamp::format(late);
    assert_eq!(booked[2..], [late_text.as_str(); 3]);
    assert_eq!(
        entries[3].created_at,
        crate::domain::timestamp::format(due - Duration::seconds(1))
    );
    let alice = &accounts[&user("alice")];
    assert_eq!(alice.booked_at, Some(late));
    assert_eq!(audit(alice, &entries), vec![]);
    let mut edited = entries.clone();
    edited[3].booked_at = Some(crate::domain::timestamp::format(t));
    assert!(matches!(
        audit(alice, &edited)[..],
        [Finding::BookedOutOfOrder { seq: 4, .. }]
    ));
    // A quiet account's first entry, applied late: booked when applied.
    let mut quiet = HashMap::new();
    let plan = apply_at(
        &mut quiet,
        &op("admin", grant("bob", 5, "bonus"), t),
        None,
        late,
    )
    .unwrap();
    assert_eq!(plan.changes[0].entries[0].booked(), late_text);
    assert_eq!(
        plan.changes[0].entries[0].created_at,
        crate::domain::timestamp::format(t)
    );
}

#[test]
fn the_audit_accepts_a_consistent_ledger_and_names_each_inconsistency() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    let mut entries = Vec::new();
    for (caller, request) in [
        ("admin", grant("alice", 100, "bonus")),
        ("alice", spend(30)),
        ("alice", spend(20)),
    ] {
        entries.push(
            apply(&mut accounts, &op(caller, request, t)).unwrap()[0]
                .own_entry()
                .unwrap()
                .clone(),
        );
    }
    let alice = accounts[&user("alice")].clone();
    assert_eq!(audit(&alice, &entries), vec![]);

    let mut tampered = entries.clone();
    tampered[1].amount = -25;
    tampered[1].balance_after = 75;
    let findings = audit(&alice, &tampered);
    assert!(
        findings.contains(&Finding::BrokenChain {
            seq: 3,
            balance_before: 70,
            previous_balance_after: 75
        }),
        "{findings:?}"
    );
    assert!(
        findings.contains(&Finding::BalanceMismatch {
            balance: 50,
            sum_of_entries: 55
        }),
        "{findings:?}"
    );

    let edited = Account {
        balance: 500,
        ..alice.clone()
    };
    let findings = audit(&edited, &entries);
    assert!(findings.contains(&Finding::BalanceMismatch {
        balance: 500,
        sum_of_entries: 50
    }));
    assert!(findings.contains(&Finding::LotsMismatch {
        balance: 500,
        sum_of_lots: 50
    }));

    let findings = audit(&alice, &[entries[0].clone(), entries[2].clone()]);
    assert!(
        findings.contains(&Finding::SeqGap {
            expected: 2,
            found: 3
        }),
        "{findings:?}"
    );
}

#[test]
fn an_unknown_point_type_is_rejected() {
    let mut accounts = HashMap::new();
    let t = datetime!(2026-11-21 05:30 UTC);
    assert_eq!(
        apply(&mut accounts, &op("admin", grant("alice", 10, "gift"), t)),
        Err(Rejection::UnknownPointType)
    );
}

fn id(text: &str) -> OperationId {
    OperationId::parse(text).unwrap()
}

fn hold(amount: u64, seconds: Option<u64>) -> PointsRequest {
    PointsRequest::Hold(Hold {
        amount: Amount::new(amount).unwrap(),
        expires_in_seconds: seconds,
        description: None,
        reference: Some(Reference::parse("order-4711").unwrap()),
    })
}

fn capture(holder: &str, hold_id: &str, amount: Option<u64>) -> PointsRequest {
    PointsRequest::Capture(Capture {
        user_id: user(holder),
        hold_id: id(hold_id),
        amount: amount.map(|a| Amount::new(a).unwrap()),
        description: None,
        reference: None,
    })
}

fn release(holder: &str, hold_id: &str) -> PointsRequest {
    PointsRequest::Release(Release {
        user_id: user(holder),
        hold_id: id(hold_id),
        description: None,
        reference: None,
    })
}

fn refund(of: &str, original: &str, amount: Option<u64>) -> PointsRequest {
    PointsRequest::Refund(Refund {
        user_id: user(of),
        operation_id: id(original),
        amount: amount.map(|a| Amount::new(a).unwrap()),
        reason: Some("goods returned".into()),
        reference: None,
    })
}

fn with_id(mut op: PointsOperation, operation_id: &str) -> PointsOperation {
    op.operation_id = id(operation_id);
    op
}

/// The record an applied operation leaves, as the store would keep it.
fn applied(op: &PointsOperation, plan: &Plan) -> OperationRecord {
    OperationRecord {
        status: OperationStatus::Applied,
        entry: plan.own_entry().cloned(),
        refundable: plan.refundable.clone(),
        ..OperationRecord::pending(op)
    }
}

/// Applies a linked update to the record it names.
fn update(record: &mut OperationRecord, plan: &Plan) {
    let linked = plan.linked.as_ref().unwrap();
    assert_eq!(linked.operation_id, record.operation_id);
    if let Some(closed_by) = &linked.closed_by {
        record.closed_by = Some(closed_by.clone());
    }
    if let Some(refundable) = &linked.refundable {
        record.refundable = Some(refundable.clone());
    }
}

fn ledger_of(plans: &[&Plan], user_id: &str) -> Vec<Entry> {
    plans
        .iter()
        .flat_map(|plan| plan.changes.iter())
        .filter(|change| change.user == user(user_id))
        .flat_map(|change| change.entries.clone())
        .collect()
}

#[test]
fn a_hold_reserves_points_and_a_partial_capture_spends_them_and_returns_the_rest() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    let granted = apply_at(
        &mut accounts,
        &op("admin", grant("alice", 500, "bonus"), t),
        None,
        t,
    )
    .unwrap();
    let hold_op = with_id(op("alice", hold(300, None), t), "h1");
    let held = apply_at(&mut accounts, &hold_op, None, t).unwrap();
    let alice = accounts[&user("alice")].clone();
    assert_eq!(
        (alice.balance, alice.held(), alice.available()),
        (500, 300, 200)
    );
    let entry = held.own_entry().unwrap();
    assert_eq!(
        (entry.kind, entry.amount, entry.held_after),
        (EntryKind::Hold, 0, 300)
    );
    assert_eq!(
        entry.reference.as_ref().map(Reference::as_str),
        Some("order-4711")
    );

    assert_eq!(
        apply_at(&mut accounts, &op("alice", spend(201), t), None, t).unwrap_err(),
        Rejection::InsufficientPoints,
        "held points cannot be spent"
    );
    assert_eq!(
        apply_at(&mut accounts, &op("alice", hold(201, None), t), None, t).unwrap_err(),
        Rejection::InsufficientPoints,
        "nor held again"
    );

    let mut hold_record = applied(&hold_op, &held);
    let captured = apply_at(
        &mut accounts,
        &with_id(op("shop", capture("alice", "h1", Some(250)), t), "c1"),
        Some(hold_record.clone()),
        t,
    )
    .unwrap();
    let entry = captured.own_entry().unwrap();
    assert_eq!(
        (
            entry.kind,
            entry.amount,
            entry.held_before,
            entry.held_after
        ),
        (EntryKind::Capture, -250, 300, 0)
    );
    assert_eq!(
        entry.reference.as_ref().map(Reference::as_str),
        Some("order-4711"),
        "the hold's reference"
    );
    let alice = accounts[&user("alice")].clone();
    assert_eq!(
        (alice.balance, alice.held(), alice.available()),
        (250, 0, 250)
    );
    update(&mut hold_record, &captured);
    assert_eq!(hold_record.closed_by, Some(id("c1")));
    assert_eq!(
        hold_record.refundable,
        Some(Lots::from([(Expiry::Never, 250)]))
    );

    for (request, rejection) in [
        (capture("alice", "h1", None), Rejection::HoldClosed),
        (release("alice", "h1"), Rejection::HoldClosed),
        (capture("alice", "h9", None), Rejection::HoldNotFound),
    ] {
        let linked = (request.hold().unwrap().1 == &id("h1")).then(|| hold_record.clone());
        assert_eq!(
            apply_at(&mut accounts, &op("shop", request, t), linked, t).unwrap_err(),
            rejection
        );
    }
    let entries = ledger_of(&[&granted, &held, &captured], "alice");
    assert_eq!(audit(&accounts[&user("alice")], &entries), vec![]);
}

#[test]
fn a_hold_is_released_by_its_holder_or_by_its_expiry_and_then_cannot_be_captured() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    let granted = apply_at(
        &mut accounts,
        &op("admin", grant("alice", 100, "bonus"), t),
        None,
        t,
    )
    .unwrap();
    let h1 = with_id(op("alice", hold(60, None), t), "h1");
    let placed = apply_at(&mut accounts, &h1, None, t).unwrap();
    let released = apply_at(
        &mut accounts,
        &op("alice", release("alice", "h1"), t),
        Some(applied(&h1, &placed)),
        t,
    )
    .unwrap();
    assert_eq!(accounts[&user("alice")].available(), 100);
    assert_eq!(released.own_entry().unwrap().held_after, 0);

    let h2 = with_id(op("alice", hold(70, Some(60)), t), "h2");
    let placed2 = apply_at(&mut accounts, &h2, None, t).unwrap();
    let alice = accounts[&user("alice")].clone();
    assert_eq!(alice.next_expiry(), Some(t + Duration::seconds(60)));
    let later = t + Duration::seconds(61);
    assert_eq!(
        alice.as_of(later).available(),
        100,
        "released at its expiry, entry or not"
    );
    // A capture after the expiry is refused even before anything wrote the release.
    let record = applied(&h2, &placed2);
    assert_eq!(
        apply_at(
            &mut accounts,
            &op("shop", capture("alice", "h2", None), later),
            Some(record),
            later
        )
        .unwrap_err(),
        Rejection::HoldExpired
    );
    // The expiry run writes the release.
    let change = settle_due(&user("alice"), &alice, later).unwrap();
    assert_eq!(change.entries.len(), 1);
    let entry = &change.entries[0];
    assert_eq!(
        (
            entry.kind,
            entry.amount,
            entry.held_before,
            entry.held_after
        ),
        (EntryKind::Release, 0, 70, 0)
    );
    assert_eq!(entry.hold_id, Some(id("h2")));
    assert_eq!(
        settle_due(&user("alice"), &change.after, later),
        None,
        "a rerun finds nothing due"
    );
    let mut entries = ledger_of(&[&granted, &placed, &released, &placed2], "alice");
    entries.extend(change.entries.clone());
    assert_eq!(audit(&change.after, &entries), vec![]);
}

#[test]
fn held_points_still_expire_at_their_lots_time_and_the_hold_then_holds_less() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    apply_at(
        &mut accounts,
        &op("admin", grant("alice", 30, "sign_in"), t),
        None,
        t,
    )
    .unwrap();
    apply_at(
        &mut accounts,
        &op("admin", grant("alice", 50, "bonus"), t),
        None,
        t,
    )
    .unwrap();
    // Held 29 days 23 hours later for a week: the sign_in lot expires meanwhile.
    let at = datetime!(2026-12-21 23:00 UTC);
    let h1 = with_id(op("alice", hold(60, Some(604_800)), at), "h1");
    let placed = apply_at(&mut accounts, &h1, None, at).unwrap();
    let alice = accounts[&user("alice")].clone();
    assert_eq!(
        alice.holds[&id("h1")].lots,
        Lots::from([
            (Expiry::At(datetime!(2026-12-22 00:00 UTC)), 30),
            (Expiry::Never, 30)
        ])
    );
    let after = datetime!(2026-12-22 01:00 UTC);
    let now = alice.as_of(after);
    assert_eq!(
        (now.balance, now.held(), now.available()),
        (50, 30, 20),
        "never in balance past expiry, held or not"
    );
    let record = applied(&h1, &placed);
    assert_eq!(
        apply_at(
            &mut accounts,
            &op("shop", capture("alice", "h1", Some(31)), after),
            Some(record.clone()),
            after
        )
        .unwrap_err(),
        Rejection::CaptureExceedsHold
    );
    let captured = apply_at(
        &mut accounts,
        &op("shop", capture("alice", "h1", None), after),
        Some(record),
        after,
    )
    .unwrap();
    let entries = &captured.changes[0].entries;
    assert_eq!(
        entries.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EntryKind::Expire, EntryKind::Capture]
    );
    assert_eq!((entries[0].amount, entries[0].held_after), (-30, 30));
    assert_eq!(
        (
            entries[1].amount,
            entries[1].balance_after,
            entries[1].held_after
        ),
        (-30, 20, 0)
    );
}

#[test]
fn refunds_give_back_at_most_what_was_taken_latest_expiring_first() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    apply_at(
        &mut accounts,
        &op("admin", grant("alice", 30, "sign_in"), t),
        None,
        t,
    )
    .unwrap();
    apply_at(
        &mut accounts,
        &op("admin", grant("alice", 100, "bonus"), t),
        None,
        t,
    )
    .unwrap();
    let s1 = with_id(op("alice", spend(80), t), "s1");
    let spent = apply_at(&mut accounts, &s1, None, t).unwrap();
    let sign_in = Expiry::after(t, Some(Duration::days(30)));
    assert_eq!(
        spent.refundable,
        Some(Lots::from([(sign_in, 30), (Expiry::Never, 50)]))
    );
    let mut record = applied(&s1, &spent);

    let first = apply_at(
        &mut accounts,
        &op("shop", refund("alice", "s1", Some(60)), t),
        Some(record.clone()),
        t,
    )
    .unwrap();
    let entry = first.own_entry().unwrap();
    assert_eq!(
        (entry.kind, entry.amount, entry.refund_of.clone()),
        (EntryKind::Refund, 60, Some(id("s1")))
    );
    assert_eq!(entry.description.as_deref(), Some("goods returned"));
    update(&mut record, &first);
    assert_eq!(
        record.refundable,
        Some(Lots::from([(sign_in, 20)])),
        "the never-expiring 50 and 10 of the sign_in lot came back"
    );
    assert_eq!(
        apply_at(
            &mut accounts,
            &op("shop", refund("alice", "s1", Some(21)), t),
            Some(record.clone()),
            t
        )
        .unwrap_err(),
        Rejection::RefundExceedsOriginal
    );
    // The rest, after the sign_in lot's expiry: it comes back and expires again at once.
    let later = t + Duration::days(40);
    let rest = apply_at(
        &mut accounts,
        &op("shop", refund("alice", "s1", None), later),
        Some(record.clone()),
        later,
    )
    .unwrap();
    let entries = &rest.changes[0].entries;
    assert_eq!(
        entries
            .iter()
            .map(|e| (e.kind, e.amount))
            .collect::<Vec<_>>(),
        vec![
            (EntryKind::Expire, -10), // the 10 sign_in points the first refund gave back
            (EntryKind::Refund, 20),
            (EntryKind::Expire, -20),
        ]
    );
    assert_eq!(accounts[&user("alice")].balance, 100);
    update(&mut record, &rest);
    assert_eq!(
        apply_at(
            &mut accounts,
            &op("shop", refund("alice", "s1", None), later),
            Some(record),
            later
        )
        .unwrap_err(),
        Rejection::RefundExceedsOriginal
    );
    assert_eq!(
        apply_at(
            &mut accounts,
            &op("shop", refund("alice", "nope", None), later),
            None,
            later
        )
        .unwrap_err(),
        Rejection::OriginalNotFound
    );
}

#[test]
fn adjustments_credit_with_a_point_type_or_debit_never_below_available() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    let adjust = |amount: i64, point_type: Option<&str>| {
        PointsRequest::Adjust(Adjustment {
            user_id: user("bob"),
            amount: SignedAmount::new(amount).unwrap(),
            reason: Some("ticket 12".into()),
            point_type: point_type.map(str::to_owned),
            reference: Some(Reference::parse("ticket-12").unwrap()),
        })
    };
    let up = apply_at(
        &mut accounts,
        &op("support", adjust(100, Some("sign_in")), t),
        None,
        t,
    )
    .unwrap();
    let entry = up.own_entry().unwrap();
    assert_eq!(
        (entry.kind, entry.amount, entry.description.as_deref()),
        (EntryKind::Adjust, 100, Some("ticket 12"))
    );
    assert_eq!(
        accounts[&user("bob")].next_expiry(),
        Some(datetime!(2026-12-22 00:00 UTC))
    );
    apply_at(&mut accounts, &op("support", adjust(-40, None), t), None, t).unwrap();
    assert_eq!(accounts[&user("bob")].balance, 60);
    assert_eq!(
        apply_at(&mut accounts, &op("support", adjust(-61, None), t), None, t).unwrap_err(),
        Rejection::InsufficientPoints
    );
    let request = adjust(-5, Some("bonus"));
    assert_eq!(
        request.validate(&user("support"), &PointTypes::shipped()),
        Err(InvalidRequest::PointTypeOnDebit)
    );
    let mut no_reason = adjust(5, None);
    if let PointsRequest::Adjust(a) = &mut no_reason {
        a.reason = Some("  ".into());
    }
    assert_eq!(
        no_reason.validate(&user("support"), &PointTypes::shipped()),
        Err(InvalidRequest::ReasonRequired)
    );
}

#[test]
fn an_account_holds_at_most_max_open_holds() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    apply_at(
        &mut accounts,
        &op("admin", grant("alice", 1000, "bonus"), t),
        None,
        t,
    )
    .unwrap();
    for _ in 0..MAX_OPEN_HOLDS {
        apply_at(&mut accounts, &op("alice", hold(1, None), t), None, t).unwrap();
    }
    assert_eq!(
        apply_at(&mut accounts, &op("alice", hold(1, None), t), None, t).unwrap_err(),
        Rejection::TooManyHolds
    );
}

#[test]
fn request_bodies_name_the_field_and_the_rule() {
    let code = |json: &str| {
        parse_body::<Adjustment>(json.as_bytes())
            .unwrap_err()
            .code()
    };
    assert_eq!(
        code(r#"{"user_id":"bob","amount":0,"reason":"x"}"#),
        "amount_out_of_range"
    );
    assert_eq!(
        code(r#"{"user_id":"bob","amount":-1.5,"reason":"x"}"#),
        "invalid_amount"
    );
    assert_eq!(
        code(r#"{"user_id":"bob","amount":-5,"reason":"x","reference":"a b"}"#),
        "invalid_reference"
    );
    assert!(parse_body::<Adjustment>(br#"{"user_id":"bob","amount":-5,"reason":"x"}"#).is_ok());
    let code = |json: &str| parse_body::<Spend>(json.as_bytes()).unwrap_err().code();
    assert_eq!(code(r#"{"amount":-5}"#), "amount_out_of_range");
    assert_eq!(code(r#"{"amount":"5"}"#), "invalid_amount");
    assert_eq!(code(r#"[]"#), "invalid_body");
    assert_eq!(code(r#"{"#), "invalid_json");
    assert_eq!(code(r#"{"amount":5,"extra":1}"#), "invalid_body");
    assert_eq!(
        code(r#"{"amount":null}"#),
        "invalid_amount",
        "a spend needs its amount"
    );
    let refund = parse_body::<Refund>(br#"{"user_id":"bob","operation_id":"s1","amount":null}"#);
    assert_eq!(
        refund.unwrap().amount,
        None,
        "null is the same as leaving it out"
    );
    assert_eq!(
        parse_body::<Refund>(br#"{"user_id":"bob","operation_id":"a b"}"#)
            .unwrap_err()
            .code(),
        "invalid_operation_id"
    );
    assert_eq!(
        parse_body::<Capture>(br#"{"user_id":"bob","hold_id":""}"#)
            .unwrap_err()
            .code(),
        "invalid_hold_id"
    );
}

#[test]
fn the_audit_recomputes_held_from_the_ledger_too() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let mut accounts = HashMap::new();
    let granted = apply_at(
        &mut accounts,
        &op("admin", grant("alice", 100, "bonus"), t),
        None,
        t,
    )
    .unwrap();
    let held = apply_at(
        &mut accounts,
        &with_id(op("alice", hold(40, None), t), "h1"),
        None,
        t,
    )
    .unwrap();
    let alice = accounts[&user("alice")].clone();
    let entries = ledger_of(&[&granted, &held], "alice");
    assert_eq!(audit(&alice, &entries), vec![]);

    let mut tampered = entries.clone();
    tampered[1].held_after = 50;
    assert_eq!(
        audit(&alice, &tampered),
        vec![Finding::HeldMismatch {
            held: 40,
            newest_held_after: 50
        }]
    );
    let mut unlinked = entries.clone();
    unlinked[1].held_before = 5;
    assert!(
        audit(&alice, &unlinked).contains(&Finding::BrokenHeldChain {
            seq: 2,
            held_before: 5,
            previous_held_after: 0
        })
    );
    let mut emptied = alice.clone();
    emptied.holds.clear();
    let findings = audit(&emptied, &entries);
    assert!(
        findings.contains(&Finding::HeldMismatch {
            held: 0,
            newest_held_after: 40
        }),
        "{findings:?}"
    );
    assert!(
        findings.contains(&Finding::LotsMismatch {
            balance: 100,
            sum_of_lots: 60
        }),
        "{findings:?}"
    );
}

#[test]
fn a_capture_on_a_hand_edited_account_never_underflows() {
    let t = datetime!(2026-11-21 05:30 UTC);
    let edited = Account {
        balance: 50,
        seq: 3,
        lots: Lots::new(),
        holds: BTreeMap::from([(
            id("h1"),
            OpenHold {
                lots: Lots::from([(Expiry::Never, 100)]),
                expires_at: t + Duration::hours(1),
                reference: None,
            },
        )]),
        booked_at: None,
    };
    let mut accounts = HashMap::from([(user("alice"), edited)]);
    let plan = apply_at(
        &mut accounts,
        &op("shop", capture("alice", "h1", None), t),
        None,
        t,
    )
    .unwrap();
    assert_eq!(plan.changes[0].after.balance, 0);
}
