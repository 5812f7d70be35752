//! The auditor's own model: what must be true, kept from the workload and the
//! answers the client saw, never from Tally's tables alone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::Value;

/// One points write as the client made it.
#[derive(Debug, Clone)]
pub struct Write {
    pub caller: String,
    pub key: String,
    pub body: Value,
    pub kind: WriteKind,
    /// The sim clock when it was sent (the accept time, within the skew bound).
    pub sent_at_micros: i64,
    /// Every status the client was answered, in order.
    pub answers: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Grant,
    Spend,
    Transfer,
}

impl Write {
    pub fn amount(&self) -> i64 {
        self.body["amount"].as_i64().unwrap_or(0)
    }

    /// The account the points come from (a grant: the one they go to).
    pub fn ordering_account(&self) -> String {
        match self.kind {
            WriteKind::Grant => self.body["user_id"].as_str().unwrap_or_default().to_owned(),
            _ => self.caller.clone(),
        }
    }

    pub fn accepted(&self) -> bool {
        self.answers.contains(&202)
    }

    /// Answered only 5xx so far: Tally could not confirm it was recorded.
    pub fn uncertain(&self) -> bool {
        !self.answers.is_empty() && self.answers.iter().all(|s| *s >= 500)
    }
}

/// A queued message the sim put on a queue directly, as another service would.
#[derive(Debug, Clone)]
pub struct Direct {
    pub caller: String,
    pub operation_id: String,
    /// `Some(body)` for a valid points operation (it must apply or be rejected);
    /// `None` for an invalid one naming its caller (it must end `invalid_operation`).
    pub valid: Option<Write>,
}

#[derive(Debug, Default)]
pub struct Model {
    /// Points writes by (caller, key).
    pub writes: BTreeMap<(String, String), Write>,
    /// Points operations put on the queue directly.
    pub direct: Vec<Direct>,
    /// The latest version seen on the likes queue per (user, post), and whether it likes.
    pub registers: HashMap<(String, String), (String, bool)>,
    /// Like operation ids answered 202 by the like function.
    pub likes_accepted: HashSet<String>,
    /// Like operation ids seen on the queue (valid ones only).
    pub likes_queued: HashSet<String>,
    /// Like operation ids that break a rule (never to take effect).
    pub likes_invalid: HashSet<String>,
    /// Users who ever liked each post: no count may exceed it.
    pub likers: HashMap<String, BTreeSet<String>>,
    /// Points operation ids per ordering account, in the order first seen on the queue.
    pub queued_order: HashMap<String, Vec<String>>,
    /// Rejections observed during the run: (caller, id) -> reason. They never change.
    pub rejections: HashMap<(String, String), String>,
    /// Posts whose counter was edited by hand (wrong until reconcile repairs it).
    pub tampered_posts: HashSet<String>,
}

impl Model {
    /// A like message seen on the queue.
    pub fn queued_like(&mut self, envelope: &Value) {
        let id = envelope["operation_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if self.likes_invalid.contains(&id) {
            return;
        }
        let user = envelope["caller"].as_str().unwrap_or_default().to_owned();
        let post = envelope["operation"]["post_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let liked = envelope["operation"]["type"] == "like";
        let accepted_at = envelope["accepted_at"].as_str().unwrap_or_default();
        let at = time::OffsetDateTime::parse(
            accepted_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|t| t.unix_timestamp_nanos() / 1000)
        .unwrap_or_default();
        // The register's total order: accept time, then operation id.
        let version = format!("{at:020}#{id}");
        if liked {
            self.likers
                .entry(post.clone())
                .or_default()
                .insert(user.clone());
        }
        let register = self
            .registers
            .entry((user, post))
            .or_insert((String::new(), false));
        if version > register.0 {
            *register = (version, liked);
        }
        self.likes_queued.insert(id);
    }

    /// A points message seen on the queue.
    pub fn queued_points(&mut self, envelope: &Value) {
        let id = envelope["operation_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let caller = envelope["caller"].as_str().unwrap_or_default().to_owned();
        let account = match envelope["operation"]["type"].as_str() {
            Some("grant") => envelope["operation"]["user_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            _ => caller,
        };
        let order = self.queued_order.entry(account).or_default();
        if !order.contains(&id) {
            order.push(id);
        }
    }

    /// The number of users whose latest accepted operation on `post` is a like.
    pub fn count(&self, post: &str) -> u64 {
        self.registers
            .iter()
            .filter(|((_, p), (_, liked))| p == post && *liked)
            .count() as u64
    }

    pub fn likes_of(&self, user: &str) -> BTreeSet<String> {
        self.registers
            .iter()
            .filter(|((u, _), (_, liked))| u == user && *liked)
            .map(|((_, p), _)| p.clone())
            .collect()
    }

    pub fn posts(&self) -> BTreeSet<String> {
        self.registers.keys().map(|(_, p)| p.clone()).collect()
    }
}
