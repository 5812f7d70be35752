//! The dev gateway: what CloudFormation, API Gateway and Lambda's SQS event
//! source mapping do on AWS, played on one machine against the emulator.
//!
//! - [`template`] reads `template.yaml`, and [`stack`] creates what it declares
//!   on the emulator: the table, the queues, and a role per function holding
//!   exactly its template policy.
//! - [`Gateway`] turns each HTTP request into the API Gateway HTTP API (v2) event
//!   a Lambda would receive, with the JWT authorizer context built from the
//!   `X-Dev-User` / `X-Dev-Scopes` headers, and hands it to the function's
//!   router in-process, as `lambda_http` would.
//! - [`EventSourceMapping`] pumps the queue into the worker in batches shaped as
//!   Lambda delivers them, and deletes only what the worker did not report failed.
//! - [`StreamMapping`] reads the table's stream into the events function, which
//!   publishes to the emulator's event bus, checkpointing past what it did not
//!   report failed.

mod gateway;
mod pump;
pub mod stack;
mod stream;
pub mod template;

pub use gateway::Gateway;
pub use pump::{EventSourceMapping, Fault, MappingSettings, PollResult};
pub use stack::{LocalFunction, Provisioned, QueueTiming};
pub use stream::{StreamFault, StreamMapping, StreamPoll, StreamSettings};
pub use template::Template;

use std::time::Duration;

use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
use shared::bus::EventBus;
use shared::config::{
    COUNT_CACHE_SECONDS, EVENT_BUS_NAME, EVENTS_DEAD_LETTER_QUEUE_URL, LIKES_QUEUE_URL,
    POINTS_DEAD_LETTER_QUEUE_URL, POINTS_QUEUE_URL, TABLE_NAME, Timeouts,
};
use shared::queue::{OperationQueue, QueuePair};
use shared::store::Store;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The operator's timeouts (provisioning, and the event source mappings'
/// polling): long polls wait up to 20 s for a message.
pub const OPERATOR_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(1),
    attempt: Duration::from_secs(25),
    operation: Duration::from_secs(60),
};

/// How the functions' SDK clients differ from deployed ones, for tests: an
/// interceptor that injects faults, quicker retries, another endpoint (a proxy
/// that can stall).
#[derive(Debug, Clone, Default)]
pub struct ClientTuning {
    pub interceptor: Option<SharedInterceptor>,
    pub retry: Option<aws_config::retry::RetryConfig>,
    pub endpoint: Option<String>,
}

/// A client of `$sdk` from the shared config, with the tuning applied.
macro_rules! tuned_client {
    ($name:ident, $sdk:ident) => {
        fn $name(&self, aws: &aws_config::SdkConfig) -> $sdk::Client {
            let mut config = $sdk::config::Builder::from(aws);
            if let Some(interceptor) = &self.interceptor {
                config.push_interceptor(interceptor.clone());
            }
            if let Some(retry) = &self.retry {
                config.set_retry_config(Some(retry.clone()));
            }
            // On the service's config: it takes precedence over the shared
            // config's `AWS_ENDPOINT_URL`.
            if let Some(endpoint) = &self.endpoint {
                config.set_endpoint_url(Some(endpoint.clone()));
            }
            $sdk::Client::from_conf(config.build())
        }
    };
}

impl ClientTuning {
    tuned_client!(dynamodb, aws_sdk_dynamodb);
    tuned_client!(sqs, aws_sdk_sqs);
    tuned_client!(eventbridge, aws_sdk_eventbridge);
}

/// How to build one local Tally.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Local names are `{prefix}-{LogicalId}`.
    pub prefix: String,
    /// What to deploy: the repository's template, or a test's changed copy.
    pub template: Template,
    /// Queue timing in place of the template's (tests: seconds, not minutes).
    pub timing: Option<QueueTiming>,
    /// Applied to every client the functions use (but for the endpoint, to the
    /// operator's and the mappings' too).
    pub tuning: ClientTuning,
    /// Each function's SDK timeouts, by binary: [`function_timeouts`], as deployed.
    pub timeouts: fn(&str) -> Option<Timeouts>,
}

impl StackOptions {
    /// The repository's template, as deployed.
    pub fn deployed(prefix: &str) -> Result<Self, template::TemplateError> {
        Ok(Self {
            prefix: prefix.to_owned(),
            template: Template::deployed()?,
            timing: None,
            tuning: ClientTuning::default(),
            timeouts: function_timeouts,
        })
    }
}

/// The SDK timeouts each function builds its clients with; `None` for a
/// binary the dev gateway does not know (provisioning then fails, naming it).
pub fn function_timeouts(binary: &str) -> Option<Timeouts> {
    match binary {
        "like" => Some(like::TIMEOUTS),
        "points" => Some(points::TIMEOUTS),
        "sqs-worker" => Some(sqs_worker::TIMEOUTS),
        "reconcile" => Some(reconcile::TIMEOUTS),
        "events" => Some(events::TIMEOUTS),
        _ => None,
    }
}

/// One local Tally: the template's resources on the emulator, and the
/// functions wired to them as deployed, each signing as its own role.
#[derive(Debug, Clone)]
pub struct LocalStack {
    /// The table, as the operator sees it (tests read and edit behind the
    /// functions' backs through it).
    pub store: Store,
    /// The likes queue and its dead-letter queue, as the operator sees them.
    pub likes: QueuePair,
    /// The points FIFO queue and its dead-letter queue.
    pub points: QueuePair,
    /// Where stream records the events function cannot read are set aside,
    /// as the operator sees it.
    pub events_dead_letters: OperationQueue,
    /// The event bus's name.
    pub event_bus: String,
    /// The functions' clock (the system clock but under the fault simulator).
    pub clock: shared::clock::Clock,
    /// How long the like function caches count reads: `None` takes the
    /// template's `TALLY_COUNT_CACHE_SECONDS`.
    pub count_cache: Option<Duration>,
    pub deployed: Provisioned,
    tuning: ClientTuning,
    /// The operator's AWS settings (the stream mapping reads with them, as
    /// Lambda's poller does outside the function).
    operator: aws_config::SdkConfig,
}

impl LocalStack {
    pub async fn provision(
        operator: &aws_config::SdkConfig,
        options: &StackOptions,
    ) -> Result<Self, BoxError> {
        let deployed = stack::provision(
            operator,
            &options.template,
            &options.prefix,
            options.timing,
            options.timeouts,
        )
        .await?;
        let tuning = options.tuning.clone();
        // The operator's handles (and the mappings' polling) carry the tests'
        // interceptor too, but reach the emulator directly: a stalled endpoint
        // is a dependency of the functions.
        let direct = ClientTuning {
            endpoint: None,
            ..tuning.clone()
        };
        let dynamodb = direct.dynamodb(operator);
        let sqs = direct.sqs(operator);
        let like = deployed.function("like")?;
        let points = deployed.function("points")?;
        let likes_url = like.env(LIKES_QUEUE_URL)?;
        let points_url = points.env(POINTS_QUEUE_URL)?;
        let publisher = deployed.function("events")?;
        let pair = |queue: &str, dead_letters: &str| QueuePair {
            queue: OperationQueue::new(sqs.clone(), queue),
            dead_letters: OperationQueue::new(sqs.clone(), dead_letters),
        };
        Ok(Self {
            store: Store::new(dynamodb, like.env(TABLE_NAME)?),
            likes: pair(likes_url, &dead_letter_url(&deployed, likes_url)?),
            points: pair(points_url, &dead_letter_url(&deployed, points_url)?),
            events_dead_letters: OperationQueue::new(
                sqs.clone(),
                publisher.env(EVENTS_DEAD_LETTER_QUEUE_URL)?,
            ),
            event_bus: publisher.env(EVENT_BUS_NAME)?.to_owned(),
            clock: shared::clock::Clock::system(),
            count_cache: None,
            tuning,
            deployed,
            operator: operator.clone(),
        })
    }

    /// A function's table and SQS clients: its role's credentials and timeouts.
    fn clients(
        &self,
        binary: &str,
    ) -> Result<
        (
            &LocalFunction,
            aws_sdk_dynamodb::Client,
            aws_sdk_sqs::Client,
        ),
        BoxError,
    > {
        let function = self.deployed.function(binary)?;
        Ok((
            function,
            self.tuning.dynamodb(&function.aws),
            self.tuning.sqs(&function.aws),
        ))
    }

    /// The like function, as deployed: its role, its environment.
    pub fn like_api(&self) -> Result<like::LikeApi, BoxError> {
        let (function, dynamodb, sqs) = self.clients("like")?;
        let window = match self.count_cache {
            Some(window) => window,
            None => {
                let seconds = function.env(COUNT_CACHE_SECONDS)?;
                shared::config::parse_count_cache_window(seconds).ok_or_else(|| {
                    format!("{COUNT_CACHE_SECONDS} is {seconds:?}: whole seconds from 0 to 60")
                })?
            }
        };
        let mut api = like::LikeApi::new(
            Store::new(dynamodb, function.env(TABLE_NAME)?),
            OperationQueue::new(sqs, function.env(LIKES_QUEUE_URL)?),
        )
        .with_count_cache(window);
        api.service.clock = self.clock.clone();
        Ok(api)
    }

    /// The points function, as deployed.
    pub fn points_api(&self) -> Result<points::PointsApi, BoxError> {
        let (function, dynamodb, sqs) = self.clients("points")?;
        let mut api = points::PointsApi::new(
            Store::new(dynamodb, function.env(TABLE_NAME)?),
            OperationQueue::new(sqs, function.env(POINTS_QUEUE_URL)?),
        );
        api.service.clock = self.clock.clone();
        Ok(api)
    }

    /// The HTTP API, wired to this stack's table and queues.
    pub fn gateway(&self) -> Result<Gateway, BoxError> {
        let like_api = self.like_api()?;
        let points_api = self.points_api()?;
        Ok(Gateway::new(
            like::router(like_api),
            points::router(points_api),
        ))
    }

    /// The worker, setting unusable points messages aside on the points dead-letter queue.
    pub fn worker(&self) -> Result<sqs_worker::Worker, BoxError> {
        let (function, dynamodb, sqs) = self.clients("sqs-worker")?;
        let mut worker = sqs_worker::Worker::new(Store::new(dynamodb, function.env(TABLE_NAME)?))
            .with_dead_letters(OperationQueue::new(
                sqs,
                function.env(POINTS_DEAD_LETTER_QUEUE_URL)?,
            ));
        worker.clock = self.clock.clone();
        Ok(worker)
    }

    /// Reconcile, as its schedule runs it.
    pub fn reconciler(&self) -> Result<reconcile::Reconciler, BoxError> {
        let (function, dynamodb, sqs) = self.clients("reconcile")?;
        Ok(reconcile::Reconciler::new(
            Store::new(dynamodb, function.env(TABLE_NAME)?),
            OperationQueue::new(sqs, function.env(POINTS_QUEUE_URL)?),
        ))
    }

    /// The events function, as deployed: its role, its bus.
    pub fn publisher(&self) -> Result<events::Publisher, BoxError> {
        let (function, _, sqs) = self.clients("events")?;
        Ok(events::Publisher::new(
            EventBus::new(
                self.tuning.eventbridge(&function.aws),
                function.env(EVENT_BUS_NAME)?,
            ),
            OperationQueue::new(sqs, function.env(EVENTS_DEAD_LETTER_QUEUE_URL)?),
        ))
    }

    /// A queue `{bus}-{name}` and a rule of that name on the stack's bus that
    /// delivers the events `pattern` (an EventBridge event pattern) matches to
    /// it, as a subscriber would set them up. Answers the queue's URL.
    pub async fn subscribe(&self, name: &str, pattern: &str) -> Result<String, BoxError> {
        let sqs = aws_sdk_sqs::Client::new(&self.operator);
        let events = aws_sdk_eventbridge::Client::new(&self.operator);
        let queue = format!("{}-{name}", self.event_bus);
        let url = sqs
            .create_queue()
            .queue_name(&queue)
            .send()
            .await?
            .queue_url
            .ok_or("CreateQueue answered no URL")?;
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await?
            .attributes
            .and_then(|mut attributes| {
                attributes.remove(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            })
            .ok_or("the queue has no QueueArn")?;
        events
            .put_rule()
            .name(&queue)
            .event_bus_name(&self.event_bus)
            .event_pattern(pattern)
            .send()
            .await?;
        events
            .put_targets()
            .rule(&queue)
            .event_bus_name(&self.event_bus)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("queue")
                    .arn(arn)
                    .build()?,
            )
            .send()
            .await?;
        Ok(url)
    }

    /// The events function's stream mapping as the template sets it up.
    pub fn stream_mapping(&self) -> Result<StreamMapping, BoxError> {
        let function = self.deployed.function("events")?;
        let mapping = function
            .spec
            .events
            .iter()
            .find_map(|event| match event {
                template::Event::Stream(stream) => Some(stream),
                _ => None,
            })
            .ok_or("the events function has no stream event source mapping")?;
        if mapping.starting_position != "TRIM_HORIZON" {
            return Err("only StartingPosition TRIM_HORIZON is played locally".into());
        }
        let resource = |id: &str| {
            self.deployed
                .resources
                .get(id)
                .ok_or_else(|| format!("{id} is not in the stack"))
        };
        let stream_arn = resource(&mapping.table)?
            .attributes
            .get("StreamArn")
            .ok_or_else(|| format!("{} has no stream", mapping.table))?;
        let on_failure = match &mapping.on_failure {
            Some(queue) => Some(OperationQueue::new(
                ClientTuning {
                    endpoint: None,
                    ..self.tuning.clone()
                }
                .sqs(&self.operator),
                resource(queue)?.reference.clone(),
            )),
            None => None,
        };
        let streams = aws_sdk_dynamodbstreams::Client::new(&self.operator);
        Ok(StreamMapping::new(
            streams,
            stream_arn,
            StreamSettings {
                batch_size: mapping.batch_size,
                maximum_retry_attempts: mapping.maximum_retry_attempts,
                function_timeout: Duration::from_secs(function.spec.timeout_secs),
            },
            on_failure,
        ))
    }

    /// The worker's event source mappings as the template sets them up: the
    /// likes queue's, then the points FIFO queue's. `batching_window` replaces
    /// the template's window when given (tests close batches sooner).
    pub fn mappings(
        &self,
        batching_window: Option<Duration>,
    ) -> Result<[EventSourceMapping; 2], BoxError> {
        let worker = self.deployed.function("sqs-worker")?;
        let mapping = |queue: &OperationQueue| -> Result<EventSourceMapping, BoxError> {
            let (sqs, source) = worker
                .spec
                .events
                .iter()
                .find_map(|event| match event {
                    template::Event::Sqs(sqs) => {
                        let source = self.deployed.resources.get(&sqs.queue)?;
                        (source.reference == queue.url()).then_some((sqs, source))
                    }
                    _ => None,
                })
                .ok_or_else(|| {
                    format!("the worker has no event source mapping for {}", queue.url())
                })?;
            let source_arn = source
                .attributes
                .get("Arn")
                .ok_or_else(|| format!("{} has no Arn", sqs.queue))?;
            let settings = MappingSettings {
                batch_size: sqs.batch_size,
                batching_window: batching_window
                    .unwrap_or(Duration::from_secs(sqs.batching_window_secs)),
                maximum_concurrency: sqs.maximum_concurrency,
                function_timeout: Duration::from_secs(worker.spec.timeout_secs),
            };
            Ok(EventSourceMapping::new(queue.clone(), source_arn, settings))
        };
        Ok([mapping(&self.likes.queue)?, mapping(&self.points.queue)?])
    }

    /// What the functions read from their environment, all functions together
    /// (for `cargo lambda watch --env-file`).
    pub fn environment(&self) -> std::collections::BTreeMap<String, String> {
        self.deployed
            .functions
            .values()
            .flat_map(|function| function.environment.clone())
            .collect()
    }
}

/// The dead-letter queue a queue's redrive policy names.
fn dead_letter_url(deployed: &Provisioned, queue_url: &str) -> Result<String, BoxError> {
    let resources = deployed.resources.values();
    let target = resources
        .clone()
        .find(|resource| resource.reference == queue_url)
        .and_then(|queue| queue.attributes.get(stack::DEAD_LETTER_TARGET))
        .ok_or_else(|| format!("{queue_url} has no dead-letter queue"))?;
    resources
        .clone()
        .find(|resource| resource.attributes.get("Arn") == Some(target))
        .map(|dead_letters| dead_letters.reference.clone())
        .ok_or_else(|| format!("{target} is not in the stack").into())
}
