//! The workload: what clients do. Requests through the dev gateway's router
//! (likes, points writes, a key used again, reads) and operations another
//! service puts on the points queue directly.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use rand::Rng as _;
use rand::seq::IndexedRandom as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::model::{Direct, Write, WriteKind};
use super::{MAX_SKEW_MICROS, Sim, Violation};

pub(super) const USERS: &[&str] = &[
    "u0",
    "u1",
    "u2",
    "u3",
    "u4",
    "u5",
    "u6",
    "u7",
    "u8",
    "u9",
    "ana@example.com",
    "auth0|5f7c8e",
    "google-oauth2|1087",
];

/// Every account the workload writes to: the users, the shop and the admin.
pub(super) fn accounts() -> Vec<String> {
    USERS
        .iter()
        .copied()
        .chain(["shop", "admin"])
        .map(str::to_owned)
        .collect()
}
const POSTS: usize = 12;
/// Users who like: few, so one user's operations on one post often wait in the
/// queue together and get delivered out of order.
const LIKERS: usize = 3;

impl Sim {
    /// A request through the dev gateway's router, as a client sends it. Every
    /// error must be problem+json, and a 5xx only when a fault was injected.
    pub(super) async fn http(
        &mut self,
        user: &str,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Violation> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header("x-dev-user", user)
            .header("content-type", "application/json");
        if uri.starts_with("/v1/points/") {
            request = request.header("x-dev-scopes", "points:admin");
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        // Clock skew between handler instances.
        let skew = if self.rng.random_bool(0.2) {
            *self.faults_by_kind.entry("clock_skew").or_default() += 1;
            self.rng.random_range(-MAX_SKEW_MICROS..=MAX_SKEW_MICROS)
        } else {
            0
        };
        self.advance(skew);
        let response = self
            .app
            .gateway
            .clone()
            .oneshot(request.body(body).expect("a valid request"))
            .await
            .expect("the router never fails");
        self.advance(-skew);
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.log(format!("{user}: {method} {uri} -> {status} {json}"));
        if !status.is_success() {
            check!(
                self,
                content_type == "application/problem+json",
                "{method} {uri}: error {status} is not problem+json: {json}"
            );
        }
        check!(
            self,
            !status.is_server_error() || self.faulty_step,
            "{method} {uri}: {status} with no fault injected: {json}"
        );
        Ok((status, json))
    }

    pub(super) fn user(&mut self) -> &'static str {
        match self.checkout_user.take() {
            Some(user) => user,
            None => USERS.choose(&mut self.rng).expect("users"),
        }
    }

    /// Zipf-like: a few hot posts take most likes.
    pub(super) fn post(&mut self) -> String {
        let x: f64 = self.rng.random();
        format!("p{}", ((POSTS as f64).powf(x) as usize).saturating_sub(1))
    }

    pub(super) async fn like(&mut self) -> Result<(), Violation> {
        let user = USERS[self.rng.random_range(0..LIKERS)];
        let post = self.post();
        let like = self.rng.random_bool(0.6);
        // Now and then the user changes their mind at once (a toggle): two
        // operations on one register, in flight together.
        let toggles = if self.rng.random_bool(0.3) { 2 } else { 1 };
        for turn in 0..toggles {
            let method = if like == (turn == 0) {
                Method::PUT
            } else {
                Method::DELETE
            };
            let (status, body) = self
                .http(user, method, &format!("/v1/posts/{post}/like"), None, None)
                .await?;
            if status == StatusCode::ACCEPTED {
                let id = body["operation_id"].as_str().unwrap_or_default().to_owned();
                self.model.likes_accepted.insert(id);
            }
            let pause = self.rng.random_range(0..1_000_000);
            self.advance(pause);
        }
        self.collect().await
    }

    pub(super) async fn read_likes(&mut self) -> Result<(), Violation> {
        let posts: Vec<String> = (0..3).map(|_| self.post()).collect();
        let user = self.user();
        // One post's count (GetItem), then three at once (BatchGetItem).
        let (status, body) = self
            .http(
                user,
                Method::GET,
                &format!("/v1/posts/{}/likes", posts[0]),
                None,
                None,
            )
            .await?;
        let mut counts = vec![(posts[0].clone(), status, body["count"].clone())];
        let (status, body) = self
            .http(
                user,
                Method::GET,
                &format!("/v1/likes/counts?post_ids={}", posts.join(",")),
                None,
                None,
            )
            .await?;
        counts.extend(
            posts
                .iter()
                .map(|p| (p.clone(), status, body["counts"][p].clone())),
        );
        for (post, status, count) in counts {
            if status != StatusCode::OK {
                continue;
            }
            let count = count.as_u64().unwrap_or(u64::MAX);
            let bound = self.model.likers.get(&post).map_or(0, |l| l.len() as u64);
            // A counter edited by hand is wrong until reconcile repairs it.
            let tampered = self.model.tampered_posts.contains(&post);
            check!(
                self,
                tampered || count <= bound,
                "{post}: count {count} exceeds the {bound} users who ever liked it"
            );
        }
        Ok(())
    }

    /// A hold some user placed and was answered 202 for (holder, id, amount),
    /// or now and then one nobody placed.
    fn some_hold(&mut self) -> (&'static str, String, i64) {
        let mut holds = self.recent(&[WriteKind::Hold]);
        if std::mem::take(&mut self.close_newest_hold) {
            holds = holds.split_off(holds.len().saturating_sub(1));
        }
        match holds.choose(&mut self.rng) {
            Some((holder, id, amount)) if self.rng.random_bool(0.9) => {
                let holder = USERS
                    .iter()
                    .find(|u| **u == holder.as_str())
                    .copied()
                    .unwrap_or("alice");
                (holder, id.clone(), *amount)
            }
            _ => (self.user(), "no-such-hold".into(), 0),
        }
    }

    /// Accepted writes of these kinds, (caller, key, amount): mostly the three
    /// latest (a checkout captures the hold it just placed), now and then any.
    fn recent(&mut self, kinds: &[WriteKind]) -> Vec<(String, String, i64)> {
        let mut found: Vec<&Write> = self
            .model
            .writes
            .values()
            .filter(|w| kinds.contains(&w.kind) && w.accepted())
            .collect();
        found.sort_by_key(|w| w.sent_at_micros);
        if self.rng.random_bool(0.8) {
            found = found.split_off(found.len().saturating_sub(3));
        }
        found
            .into_iter()
            .map(|w| (w.caller.clone(), w.key.clone(), w.amount()))
            .collect()
    }

    fn fresh_key(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    pub(super) async fn points_write(&mut self, kind: WriteKind) -> Result<(), Violation> {
        let (caller, uri, body): (&str, String, Value) = match kind {
            WriteKind::Grant => {
                let point_type = *["sign_in", "purchase", "bonus"]
                    .choose(&mut self.rng)
                    .expect("types");
                let to = self.user();
                let amount = self.rng.random_range(1..=200);
                (
                    "admin",
                    "/v1/points/grants".into(),
                    json!({"user_id": to, "amount": amount, "point_type": point_type}),
                )
            }
            WriteKind::Spend => {
                let amount = self.rng.random_range(1..=150);
                (
                    self.user(),
                    "/v1/me/points/spend".into(),
                    json!({"amount": amount}),
                )
            }
            WriteKind::Hold => {
                let amount = self.rng.random_range(1..=15);
                // Some short enough to expire while the run goes on.
                let seconds = *[60, 86_400, 604_800, 604_800]
                    .choose(&mut self.rng)
                    .expect("lifetimes");
                let reference = self.fresh_key("order-");
                (
                    self.user(),
                    "/v1/me/points/holds".into(),
                    json!({"amount": amount, "expires_in_seconds": seconds, "reference": reference}),
                )
            }
            WriteKind::Capture | WriteKind::Release => {
                let (holder, hold_id, held) = self.some_hold();
                let amount = (held > 0 && self.rng.random_bool(0.6))
                    .then(|| self.rng.random_range(1..=held + 10));
                let mut body = match amount {
                    Some(amount) if kind == WriteKind::Capture => json!({"amount": amount}),
                    _ => json!({}),
                };
                let verb = if kind == WriteKind::Capture {
                    "capture"
                } else {
                    "release"
                };
                if self.rng.random_bool(0.5) {
                    (
                        holder,
                        format!("/v1/me/points/holds/{hold_id}/{verb}"),
                        body,
                    )
                } else {
                    body["user_id"] = json!(holder);
                    body["hold_id"] = json!(hold_id);
                    ("shop", format!("/v1/points/holds/{verb}"), body)
                }
            }
            WriteKind::Refund => {
                // A spend, a hold or a capture of someone's, or nothing at all.
                // Mostly what took points; now and then a hold (refundable once captured).
                let kinds: &[WriteKind] = if self.rng.random_bool(0.8) {
                    &[WriteKind::Spend, WriteKind::Capture]
                } else {
                    &[WriteKind::Hold]
                };
                let recent = self.recent(kinds);
                let originals: Vec<(String, String)> = recent
                    .into_iter()
                    .map(|(caller, key, _)| {
                        let write = &self.model.writes[&(caller, key.clone())];
                        (write.ordering_account(), key)
                    })
                    .collect();
                let (user, original) = originals
                    .choose(&mut self.rng)
                    .cloned()
                    .unwrap_or_else(|| ("alice".into(), "none".into()));
                let mut body =
                    json!({"user_id": user, "operation_id": original, "reason": "returned"});
                if self.rng.random_bool(0.6) {
                    body["amount"] = json!(self.rng.random_range(1..=80));
                }
                ("shop", "/v1/points/refunds".into(), body)
            }
            WriteKind::Adjust => {
                let to = self.user();
                let amount =
                    self.rng.random_range(1..=100) * if self.rng.random_bool(0.5) { 1 } else { -1 };
                (
                    "support",
                    "/v1/points/adjustments".into(),
                    json!({"user_id": to, "amount": amount, "reason": "ticket"}),
                )
            }
            WriteKind::Transfer => {
                let (from, to) = (self.user(), self.user());
                let amount = self.rng.random_range(1..=100);
                // Now and then a transfer to self: 400, never applied.
                (
                    from,
                    "/v1/me/points/transfers".into(),
                    json!({"to_user_id": to, "amount": amount}),
                )
            }
        };
        let key = self.fresh_key("k");
        let mut write = Write {
            caller: caller.to_owned(),
            key: key.clone(),
            body: body.clone(),
            kind,
            uri: uri.clone(),
            sent_at_micros: self.micros.load(Ordering::SeqCst),
            answers: Vec::new(),
        };
        let (status, answer) = self
            .http(caller, Method::POST, &uri, Some(&key), Some(&body))
            .await?;
        write.answers.push(status.as_u16());
        if status == StatusCode::ACCEPTED {
            check!(
                self,
                answer["operation_id"] == key.as_str(),
                "{key}: 202 names another operation: {answer}"
            );
        }
        let self_transfer = kind == WriteKind::Transfer && body["to_user_id"] == caller;
        check!(
            self,
            !self_transfer || status == StatusCode::BAD_REQUEST,
            "a transfer to self answered {status}"
        );
        self.model.writes.insert((caller.to_owned(), key), write);
        self.collect().await
    }

    /// The same key again: with the same body (the same answer) or another (422).
    pub(super) async fn reuse_key(&mut self) -> Result<(), Violation> {
        let accepted: Vec<(String, String)> = self
            .model
            .writes
            .iter()
            .filter(|(_, w)| w.accepted())
            .map(|(k, _)| k.clone())
            .collect();
        let Some(id) = accepted.choose(&mut self.rng).cloned() else {
            return Ok(());
        };
        let write = self.model.writes[&id].clone();
        let same = self.rng.random_bool(0.6);
        let mut body = write.body.clone();
        if !same {
            // Refunds and adjustments carry a reason; the others a description.
            let field = if body.get("reason").is_some() {
                "reason"
            } else {
                "description"
            };
            body[field] = json!("another request");
        }
        let (status, answer) = self
            .http(
                &write.caller,
                Method::POST,
                &write.uri,
                Some(&write.key),
                Some(&body),
            )
            .await?;
        if status.is_server_error() {
            return Ok(());
        }
        if same {
            check!(
                self,
                status == StatusCode::ACCEPTED,
                "{}: the same key and body answered {status}: {answer}",
                write.key
            );
        } else {
            check!(
                self,
                status == StatusCode::UNPROCESSABLE_ENTITY,
                "{}: the same key with another body answered {status}: {answer}",
                write.key
            );
        }
        self.collect().await
    }

    pub(super) async fn read_points(&mut self) -> Result<(), Violation> {
        let mine: Vec<(String, String)> = self.model.writes.keys().cloned().collect();
        let Some((caller, key)) = mine.choose(&mut self.rng).cloned() else {
            return Ok(());
        };
        let (status, body) = self
            .http(
                &caller,
                Method::GET,
                &format!("/v1/me/points/operations/{key}"),
                None,
                None,
            )
            .await?;
        if status == StatusCode::OK && body["status"] == "rejected" {
            let reason = body["reason"].as_str().unwrap_or_default().to_owned();
            let seen = self
                .model
                .rejections
                .entry((caller.clone(), key.clone()))
                .or_insert(reason.clone());
            let seen = seen.clone();
            check!(
                self,
                seen == reason,
                "{caller}/{key}: a rejection changed from {seen} to {reason}"
            );
        }
        let (status, body) = self
            .http(&caller, Method::GET, "/v1/me/points", None, None)
            .await?;
        if status == StatusCode::OK {
            check!(
                self,
                body["balance"].as_i64().is_some_and(|b| b >= 0),
                "{caller}: balance {body}"
            );
        }
        // History pages, newest first, each continuing where the last stopped.
        let mut uri = "/v1/me/points/history?limit=3".to_owned();
        let mut last_seq: Option<u64> = None;
        for _ in 0..3 {
            let (status, page) = self.http(&caller, Method::GET, &uri, None, None).await?;
            if status != StatusCode::OK {
                break;
            }
            for entry in page["items"].as_array().cloned().unwrap_or_default() {
                let seq = entry["seq"].as_u64().unwrap_or(0);
                check!(
                    self,
                    last_seq.is_none_or(|last| seq + 1 == last),
                    "{caller}: history skips from {last_seq:?} to {seq}"
                );
                last_seq = Some(seq);
            }
            match page["next_cursor"].as_str() {
                Some(cursor) => uri = format!("/v1/me/points/history?limit=3&cursor={cursor}"),
                None => {
                    check!(
                        self,
                        last_seq.is_none_or(|last| last == 1),
                        "{caller}: history ends at {last_seq:?}, not at 1"
                    );
                    break;
                }
            }
        }
        Ok(())
    }

    /// Another service puts an operation on the points queue directly: valid,
    /// or breaking a rule (it must end rejected), or naming nobody (set aside).
    pub(super) async fn direct_message(&mut self) -> Result<(), Violation> {
        let id = self.fresh_key("d");
        let now = shared::domain::timestamp::format(self.now());
        let to = self.user();
        let choice = self.rng.random_range(0..4);
        let (group, envelope, direct) = match choice {
            0 | 1 => {
                let amount = self.rng.random_range(1..=50);
                let body = json!({"user_id": to, "amount": amount, "point_type": "bonus"});
                let envelope = json!({"version": 1, "operation_id": id, "caller": "shop", "accepted_at": now,
                    "operation": {"type": "grant", "user_id": to, "amount": amount, "point_type": "bonus"}});
                let write = Write {
                    caller: "shop".into(),
                    key: id.clone(),
                    body,
                    kind: WriteKind::Grant,
                    uri: "/v1/points/grants".into(),
                    sent_at_micros: self.micros.load(Ordering::SeqCst),
                    answers: vec![202],
                };
                (
                    to.to_owned(),
                    envelope,
                    Some(Direct {
                        caller: "shop".into(),
                        operation_id: id.clone(),
                        valid: Some(write),
                    }),
                )
            }
            2 => {
                let envelope = json!({"version": 1, "operation_id": id, "caller": to, "accepted_at": now,
                    "operation": {"type": "transfer", "to_user_id": to, "amount": 5}});
                (
                    to.to_owned(),
                    envelope,
                    Some(Direct {
                        caller: to.into(),
                        operation_id: id.clone(),
                        valid: None,
                    }),
                )
            }
            _ => (
                to.to_owned(),
                json!({"version": 1, "caller": to, "operation": {"type": "spend"}}),
                None,
            ),
        };
        self.points_queue
            .forward(&envelope.to_string(), Some(&group), &id)
            .await
            .map_err(|e| Violation(format!("the simulator could not send: {e}")))?;
        self.log(format!("direct: {envelope}"));
        if let Some(direct) = direct {
            self.model.direct.push(direct);
        }
        self.collect().await
    }
}
