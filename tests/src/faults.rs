//! Faults injected between Tally's code and the emulator, at the SDK layer.
//!
//! [`FaultInjector`] is an SDK interceptor (`aws_smithy_runtime_api`'s
//! `Intercept`): a client built with it behaves as usual until a test arms a
//! fault for an operation, then has that operation's calls go wrong in a way the
//! emulator never produces by itself. "The request was applied but the answer
//! was lost" is honest this way: the request really reaches the emulator, and
//! only the answer is replaced.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemOutput;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use aws_sdk_eventbridge::operation::put_events::PutEventsOutput;
use aws_sdk_eventbridge::types::PutEventsResultEntry;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
    FinalizerInterceptorContextMut,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;

/// What goes wrong with the calls of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request is applied, then its answer is replaced by a 500: the
    /// caller cannot tell whether it took effect.
    LoseAnswer,
    /// A Query answers at most this many items and a `LastEvaluatedKey`, as
    /// DynamoDB does when a page reaches its 1 MB limit.
    ShortPage(usize),
    /// DynamoDB refuses the request without applying it: the request that
    /// reaches the emulator is emptied (so it changes nothing) and its answer
    /// replaced by this refusal.
    Refuse(Refusal),
    /// A BatchGetItem answers none of its keys: every one comes back in
    /// `UnprocessedKeys`, as DynamoDB does under load.
    Unprocessed,
    /// A PutEvents takes every entry but the one at this position (if there is
    /// one): that entry is cut from the request, so it is never published,
    /// and the answer marks it failed (`FailedEntryCount` 1), as EventBridge
    /// does for an entry it could not take.
    FailEntry(usize),
}

/// Answers DynamoDB gives that the emulator never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `TransactionCanceledException` with a `TransactionConflict` reason: another
    /// transaction held one of the items.
    TransactionConflict,
    /// `ProvisionedThroughputExceededException` (the SDK retries it).
    Throttled,
    /// A 500 before anything was applied (the SDK retries it).
    ServerError,
}

impl Refusal {
    fn answer(self) -> (u16, &'static str) {
        match self {
            Refusal::TransactionConflict => (
                400,
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","Message":"Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]","CancellationReasons":[{"Code":"None"},{"Code":"TransactionConflict","Message":"Transaction is ongoing for the item"}]}"#,
            ),
            Refusal::Throttled => (
                400,
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"injected: the request rate is too high"}"#,
            ),
            Refusal::ServerError => (
                500,
                r#"{"__type":"InternalFailure","message":"injected: nothing was applied"}"#,
            ),
        }
    }
}

#[derive(Debug)]
struct Armed {
    operation: &'static str,
    fault: Fault,
    /// Calls (attempts, SDK retries included) still to be hit.
    remaining: u32,
}

/// The faults armed on the clients built with [`FaultInjector::interceptor`].
#[derive(Debug, Clone, Default)]
pub struct FaultInjector {
    armed: Arc<Mutex<Vec<Armed>>>,
    hits: Arc<Mutex<Vec<(&'static str, Fault)>>>,
    /// A crash: calls left before the process "dies"; every later call fails
    /// before it is sent, as if nothing after that point ever ran.
    crash: Arc<Mutex<Option<u32>>>,
}

impl FaultInjector {
    /// The process dies after `calls` more SDK calls (any operation).
    pub fn crash_after(&self, calls: u32) {
        *self.crash.lock().unwrap() = Some(calls);
    }

    /// A new process: calls go through again. Answers whether the crash happened.
    pub fn restart(&self) -> bool {
        self.crash.lock().unwrap().take() == Some(0)
    }

    /// Whether any armed fault is still waiting for its calls.
    pub fn armed(&self) -> bool {
        self.armed.lock().unwrap().iter().any(|a| a.remaining > 0)
    }

    /// Arms `fault` for the next `calls` attempts of `operation` (`"SendMessage"`,
    /// `"Query"`; `"*"`: any).
    pub fn arm(&self, operation: &'static str, fault: Fault, calls: u32) {
        self.armed.lock().unwrap().push(Armed {
            operation,
            fault,
            remaining: calls,
        });
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        self.armed.lock().unwrap().clear();
    }

    /// Every (operation, fault) injected so far, in order.
    pub fn injected(&self) -> Vec<(&'static str, Fault)> {
        self.hits.lock().unwrap().clone()
    }

    /// How many calls a fault was injected into.
    pub fn hits(&self, fault: Fault) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, f)| *f == fault)
            .count()
    }

    /// The interceptor to add to a client's config.
    pub fn interceptor(&self) -> Interceptor {
        Interceptor(self.clone())
    }

    fn take(&self, cfg: &ConfigBag, matches: impl Fn(Fault) -> bool) -> Option<Fault> {
        let operation = cfg.load::<Metadata>()?.name().to_owned();
        let mut armed = self.armed.lock().unwrap();
        let found = armed.iter_mut().find(|a| {
            (a.operation == operation || a.operation == "*") && a.remaining > 0 && matches(a.fault)
        })?;
        found.remaining -= 1;
        let hit = (found.operation, found.fault);
        self.hits.lock().unwrap().push(hit);
        Some(hit.1)
    }
}

#[derive(Debug)]
pub struct Interceptor(FaultInjector);

/// A BatchGetItem request as sent.
#[derive(Debug, Clone)]
struct Asked(serde_json::Value);

impl aws_smithy_types::config_bag::Storable for Asked {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

/// `RequestItems` as sent (DynamoDB JSON), as the `UnprocessedKeys` of an answer.
fn unprocessed(
    request_items: &serde_json::Value,
) -> Result<std::collections::HashMap<String, KeysAndAttributes>, BoxError> {
    let value = |v: &serde_json::Value| -> AttributeValue {
        match (v.get("S"), v.get("N")) {
            (Some(s), _) => AttributeValue::S(s.as_str().unwrap_or_default().to_owned()),
            (_, Some(n)) => AttributeValue::N(n.as_str().unwrap_or_default().to_owned()),
            _ => AttributeValue::Null(true),
        }
    };
    let mut tables = std::collections::HashMap::new();
    for (table, asked) in request_items.as_object().into_iter().flatten() {
        let keys = asked["Keys"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|key| {
                key.as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, v)| (name.clone(), value(v)))
                    .collect()
            })
            .collect();
        let mut request = KeysAndAttributes::builder().set_keys(Some(keys));
        if let Some(projection) = asked["ProjectionExpression"].as_str() {
            request = request.projection_expression(projection);
        }
        for (placeholder, name) in asked["ExpressionAttributeNames"]
            .as_object()
            .into_iter()
            .flatten()
        {
            request =
                request.expression_attribute_names(placeholder, name.as_str().unwrap_or_default());
        }
        tables.insert(table.clone(), request.build()?);
    }
    Ok(tables)
}

/// The position of the PutEvents entry cut from this attempt's request.
#[derive(Debug, Clone)]
struct CutEntry(usize);

impl aws_smithy_types::config_bag::Storable for CutEntry {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

/// The fault this attempt carries, from transmit to deserialization.
#[derive(Debug, Clone)]
struct Injected(Option<Fault>);

impl aws_smithy_types::config_bag::Storable for Injected {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

impl Intercept for Interceptor {
    fn name(&self) -> &'static str {
        "FaultInjector"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Before signing: the emulator checks the signature over the body.
        cfg.interceptor_state().unset::<CutEntry>();
        if cfg.load::<Metadata>().map(Metadata::name) != Some("PutEvents") {
            return Ok(());
        }
        let Some(bytes) = context.request().body().bytes() else {
            return Ok(());
        };
        let mut asked: serde_json::Value = serde_json::from_slice(bytes)?;
        let entries = asked["Entries"].as_array_mut().ok_or("no Entries")?;
        let sent = entries.len();
        // Only a call with an entry at that position is hit.
        if let Some(Fault::FailEntry(position)) = self
            .0
            .take(cfg, |f| matches!(f, Fault::FailEntry(p) if p < sent))
        {
            entries.remove(position);
            let body = asked.to_string();
            let request = context.request_mut();
            request
                .headers_mut()
                .insert("content-length", body.len().to_string());
            *request.body_mut() = SdkBody::from(body);
            cfg.interceptor_state().store_put(CutEntry(position));
        }
        Ok(())
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(left) = self.0.crash.lock().unwrap().as_mut() {
            if *left == 0 {
                return Err("injected: the process crashed before this call".into());
            }
            *left -= 1;
        }
        // Decided here, once per attempt, and remembered for the answer.
        let fault = self.0.take(cfg, |f| {
            f == Fault::LoseAnswer || matches!(f, Fault::Refuse(_))
        });
        if context.request().method() == "POST"
            && self
                .0
                .armed
                .lock()
                .unwrap()
                .iter()
                .any(|a| a.fault == Fault::Unprocessed)
        {
            // Keep what was asked, to hand it back as unprocessed.
            if let Some(bytes) = context.request().body().bytes() {
                let asked: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
                cfg.interceptor_state().store_put(Asked(asked));
            }
        }
        if let Some(Fault::Refuse(_)) = fault {
            // An empty request: the emulator answers a validation error and
            // changes nothing.
            let request = context.request_mut();
            *request.body_mut() = SdkBody::from("{}");
            request.headers_mut().insert("content-length", "2");
        }
        cfg.interceptor_state().store_put(Injected(fault));
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (status, body) = match cfg.load::<Injected>().and_then(|injected| injected.0) {
            Some(Fault::LoseAnswer) => (
                500,
                r#"{"__type":"InternalFailure","message":"injected: the answer was lost"}"#,
            ),
            Some(Fault::Refuse(refusal)) => refusal.answer(),
            _ => return Ok(()),
        };
        *context.response_mut() = HttpResponse::new(status.try_into()?, SdkBody::from(body));
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Ok(output)) = context.output_or_error_mut() else {
            return Ok(());
        };
        if let Some(put) = output.downcast_mut::<PutEventsOutput>() {
            if let Some(CutEntry(position)) = cfg.load::<CutEntry>().cloned() {
                let entries = put.entries.get_or_insert_with(Vec::new);
                let failed = PutEventsResultEntry::builder()
                    .error_code("InternalFailure")
                    .error_message("injected: this entry was not taken")
                    .build();
                entries.insert(position.min(entries.len()), failed);
                put.failed_entry_count += 1;
            }
            return Ok(());
        }
        if let Some(batch) = output.downcast_mut::<BatchGetItemOutput>() {
            let asked = cfg.load::<Asked>().map(|a| a.0.clone());
            if let Some(asked) = asked
                && self.0.take(cfg, |f| f == Fault::Unprocessed).is_some()
            {
                batch.responses = Some(Default::default());
                batch.unprocessed_keys = Some(unprocessed(&asked["RequestItems"])?);
            }
            return Ok(());
        }
        let Some(query) = output.downcast_mut::<QueryOutput>() else {
            return Ok(());
        };
        let keep = match self.0.take(cfg, |f| matches!(f, Fault::ShortPage(_))) {
            Some(Fault::ShortPage(keep)) => keep,
            _ => return Ok(()),
        };
        let items = query.items.get_or_insert_with(Vec::new);
        if items.len() > keep {
            items.truncate(keep);
            let last = items.last().cloned().unwrap_or_default();
            let key = last
                .into_iter()
                .filter(|(name, _)| name == "pk" || name == "sk")
                .collect();
            query.count = keep as i32;
            query.last_evaluated_key = Some(key);
        }
        Ok(())
    }
}
