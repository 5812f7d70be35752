//! `template.yaml` is the one definition of the stack: the dev gateway, the
//! tests and the simulator create it from the template, and these tests hold
//! the template (parsed, never searched as text) against what the code relies
//! on: key and index names, queue settings, the event source mappings'
//! figures, and each function's environment. The last test provisions the
//! template on the emulator and reads back what was created.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::collections::{BTreeMap, BTreeSet};

use dev_gateway::template::{Event, Function, SqsMapping, StreamMapping, Template, Value};
use shared::config;
use shared::queue::mapping;
use shared::store::keys;

/// An index: its name, key schema and projection type.
type Index = (String, Vec<(String, String)>, String);

fn template() -> Template {
    Template::deployed().expect("template.yaml parses")
}

fn properties(template: &Template, logical_id: &str) -> Value {
    Value::Mapping(
        template
            .resources()
            .get(logical_id)
            .unwrap_or_else(|| panic!("no resource {logical_id}"))
            .properties
            .clone(),
    )
}

fn function(template: &Template, binary: &str) -> Function {
    template.function_of_binary(binary).unwrap()
}

/// The logical id a `!Ref X` or `!GetAtt X.Arn` names.
fn target(value: &Value) -> String {
    let Value::Tagged(tagged) = value else {
        panic!("{value:?} is not a !Ref or !GetAtt");
    };
    let text = tagged.value.as_str().unwrap();
    text.split('.').next().unwrap().to_owned()
}

/// The queue a function's environment variable names.
fn queue_named_by(template: &Template, binary: &str, variable: &str) -> String {
    let function = function(template, binary);
    target(
        function
            .environment
            .get(variable)
            .unwrap_or_else(|| panic!("{binary} does not set {variable}")),
    )
}

fn worker_mapping(template: &Template, queue: &str) -> SqsMapping {
    function(template, "sqs-worker")
        .events
        .into_iter()
        .find_map(|event| match event {
            Event::Sqs(mapping) if mapping.queue == queue => Some(mapping),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the worker does not read {queue}"))
}

fn dead_letter_queue(template: &Template, queue: &str) -> String {
    target(&properties(template, queue)["RedrivePolicy"]["deadLetterTargetArn"])
}

/// A key schema as declared: (attribute, key type) pairs.
fn declared_keys(value: &Value) -> Vec<(String, String)> {
    value
        .as_sequence()
        .unwrap()
        .iter()
        .map(|key| {
            (
                key["AttributeName"].as_str().unwrap().to_owned(),
                key["KeyType"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A table's global secondary indexes as declared.
fn declared_indexes(table: &Value) -> Vec<Index> {
    table["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|index| {
            (
                index["IndexName"].as_str().unwrap().to_owned(),
                declared_keys(&index["KeySchema"]),
                index["Projection"]["ProjectionType"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_table_has_the_keys_indexes_and_ttl_the_code_uses() {
    let template = template();
    let tables: Vec<_> = template.of_type("AWS::DynamoDB::Table").collect();
    assert_eq!(tables.len(), 1, "one table");
    let table = properties(&template, "Table");
    let hash_range = |pk: &str, sk: &str| {
        vec![
            (pk.to_owned(), "HASH".to_owned()),
            (sk.to_owned(), "RANGE".to_owned()),
        ]
    };
    assert_eq!(
        declared_keys(&table["KeySchema"]),
        hash_range(keys::PK, keys::SK)
    );
    let indexes = declared_indexes(&table);
    // Every index projects keys only: the code reads items by their keys after
    // querying an index, and rewriting an item then writes the index only when
    // its index keys change.
    assert_eq!(
        indexes,
        vec![
            (
                keys::GSI1.to_owned(),
                hash_range(keys::GSI1_PK, keys::GSI1_SK),
                "KEYS_ONLY".to_owned()
            ),
            (
                keys::GSI2.to_owned(),
                hash_range(keys::GSI2_PK, keys::GSI2_SK),
                "KEYS_ONLY".to_owned()
            ),
            // Keyed by the register's own partition key: a viral post's
            // index writes spread as its register writes do.
            (
                keys::LIKERS.to_owned(),
                hash_range(keys::PK, keys::LIKERS_SK),
                "KEYS_ONLY".to_owned()
            ),
        ]
    );
    let defined: BTreeSet<(String, String)> = table["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|attribute| {
            (
                attribute["AttributeName"].as_str().unwrap().to_owned(),
                attribute["AttributeType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        keys::PK,
        keys::SK,
        keys::GSI1_PK,
        keys::GSI1_SK,
        keys::GSI2_PK,
        keys::GSI2_SK,
        keys::LIKERS_SK,
    ]
    .into_iter()
    .map(|name| (name.to_owned(), "S".to_owned()))
    .collect();
    assert_eq!(defined, expected);
    assert_eq!(table["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    assert_eq!(
        table["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some(keys::EXPIRES_AT)
    );
    assert_eq!(
        table["TimeToLiveSpecification"]["Enabled"].as_bool(),
        Some(true)
    );
}

#[test]
fn the_likes_mapping_is_deployed_with_the_figures_the_capacity_plan_uses() {
    let template = template();
    let likes = queue_named_by(&template, "like", config::LIKES_QUEUE_URL);
    let mapping = worker_mapping(&template, &likes);
    assert_eq!(mapping.batch_size, mapping::BATCH_SIZE);
    assert_eq!(
        mapping.batching_window_secs,
        mapping::BATCHING_WINDOW.as_secs()
    );
    assert_eq!(mapping.maximum_concurrency, Some(mapping::MAX_CONCURRENCY));
    assert!(mapping.report_batch_item_failures);
}

#[test]
fn points_go_through_a_fifo_queue_with_content_based_deduplication() {
    let template = template();
    let points = queue_named_by(&template, "points", config::POINTS_QUEUE_URL);
    assert_eq!(
        queue_named_by(&template, "reconcile", config::POINTS_QUEUE_URL),
        points,
        "reconcile re-drives onto the queue the points function sends to"
    );
    let queue = properties(&template, &points);
    assert_eq!(queue["FifoQueue"].as_bool(), Some(true));
    assert_eq!(queue["ContentBasedDeduplication"].as_bool(), Some(true));
    let mapping = worker_mapping(&template, &points);
    assert!(mapping.batch_size <= 10, "FIFO sources take at most 10");
    assert!(mapping.report_batch_item_failures);
    // The worker moves unusable points messages to the dead-letter queue
    // itself: it must be the one the queue's redrive policy names, and FIFO.
    let dead_letters = dead_letter_queue(&template, &points);
    assert_eq!(
        queue_named_by(
            &template,
            "sqs-worker",
            config::POINTS_DEAD_LETTER_QUEUE_URL
        ),
        dead_letters
    );
    assert_eq!(
        properties(&template, &dead_letters)["FifoQueue"].as_bool(),
        Some(true)
    );
}

/// Reconcile re-drives an operation left pending after SQS has made every
/// delivery it would (`REDRIVE_AFTER` = receives × visibility): both figures
/// must be the deployed ones, and the visibility six times the worker's timeout.
#[test]
fn every_queue_the_worker_reads_redrives_as_reconcile_assumes() {
    let template = template();
    let worker = function(&template, "sqs-worker");
    for event in &worker.events {
        let Event::Sqs(mapping) = event else { continue };
        let queue = properties(&template, &mapping.queue);
        assert_eq!(
            queue["VisibilityTimeout"].as_u64(),
            Some(mapping::VISIBILITY_TIMEOUT.as_secs()),
            "{}",
            mapping.queue
        );
        assert!(mapping::VISIBILITY_TIMEOUT.as_secs() >= 6 * worker.timeout_secs);
        assert_eq!(
            queue["RedrivePolicy"]["maxReceiveCount"].as_u64(),
            Some(u64::from(mapping::MAX_RECEIVE_COUNT)),
            "{}",
            mapping.queue
        );
        let dead_letters = properties(&template, &dead_letter_queue(&template, &mapping.queue));
        assert_eq!(
            dead_letters["MessageRetentionPeriod"].as_u64(),
            Some(14 * 24 * 3600),
            "dead letters are kept the longest SQS allows"
        );
    }
}

/// Each function's environment in the template is exactly what its code reads.
#[test]
fn each_function_is_given_exactly_the_environment_its_code_reads() {
    let template = template();
    for (binary, reads) in [
        ("like", like::ENVIRONMENT),
        ("points", points::ENVIRONMENT),
        ("sqs-worker", sqs_worker::ENVIRONMENT),
        ("reconcile", reconcile::ENVIRONMENT),
        ("events", events::ENVIRONMENT),
    ] {
        let given: BTreeSet<String> = function(&template, binary)
            .environment
            .into_keys()
            .collect();
        let read: BTreeSet<String> = reads.iter().map(|name| name.to_string()).collect();
        assert_eq!(given, read, "{binary}");
    }
}

/// What the emulator holds after provisioning is what the template declares.
#[tokio::test]
async fn the_local_stack_is_created_from_the_template() {
    let app = tests::TestApp::spawn().await;
    let template = template();
    let aws = tests::emulator().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let table = dynamodb
        .describe_table()
        .table_name(app.store().table_name())
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let declared = properties(&template, "Table");
    let key_names = |keys: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> Vec<(String, String)> {
        keys.iter()
            .map(|key| (key.attribute_name.clone(), key.key_type.as_str().to_owned()))
            .collect()
    };
    assert_eq!(
        key_names(table.key_schema()),
        declared_keys(&declared["KeySchema"])
    );
    let created: Vec<_> = table
        .global_secondary_indexes()
        .iter()
        .map(|index| {
            (
                index.index_name().unwrap().to_owned(),
                key_names(index.key_schema()),
                index
                    .projection()
                    .and_then(|p| p.projection_type())
                    .unwrap()
                    .as_str()
                    .to_owned(),
            )
        })
        .collect();
    let wanted = declared_indexes(&declared);
    assert_eq!(created, wanted);
    let ttl = dynamodb
        .describe_time_to_live()
        .table_name(app.store().table_name())
        .send()
        .await
        .unwrap()
        .time_to_live_description
        .unwrap();
    assert_eq!(ttl.attribute_name(), Some(keys::EXPIRES_AT));

    // The queues: as declared, but for the tests' shorter timing.
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let attributes = |url: String| {
        let sqs = sqs.clone();
        async move {
            sqs.get_queue_attributes()
                .queue_url(url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
                .send()
                .await
                .unwrap()
                .attributes
                .unwrap()
        }
    };
    use aws_sdk_sqs::types::QueueAttributeName as Attr;
    let points = attributes(app.stack.points.queue.url().to_owned()).await;
    assert_eq!(
        points.get(&Attr::FifoQueue).map(String::as_str),
        Some("true")
    );
    assert_eq!(
        points
            .get(&Attr::ContentBasedDeduplication)
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        points.get(&Attr::VisibilityTimeout).map(String::as_str),
        Some("1"),
        "the tests' timing"
    );
    let redrive: serde_json::Value =
        serde_json::from_str(points.get(&Attr::RedrivePolicy).unwrap()).unwrap();
    let dead_letters = attributes(app.stack.points.dead_letters.url().to_owned()).await;
    assert_eq!(
        redrive["deadLetterTargetArn"].as_str(),
        dead_letters.get(&Attr::QueueArn).map(String::as_str)
    );
    assert_eq!(redrive["maxReceiveCount"], 3);
    assert_eq!(
        dead_letters
            .get(&Attr::MessageRetentionPeriod)
            .map(String::as_str),
        Some("1209600")
    );
    let likes = attributes(app.stack.likes.queue.url().to_owned()).await;
    assert_eq!(likes.get(&Attr::FifoQueue), None);
    let redrive: serde_json::Value =
        serde_json::from_str(likes.get(&Attr::RedrivePolicy).unwrap()).unwrap();
    let likes_dead_letters = attributes(app.stack.likes.dead_letters.url().to_owned()).await;
    assert_eq!(
        redrive["deadLetterTargetArn"].as_str(),
        likes_dead_letters.get(&Attr::QueueArn).map(String::as_str)
    );
}

/// Each function's SDK timeouts fit inside its template `Timeout`, with time to
/// answer (what a stalled call does within them: tests/tests/timeouts.rs).
#[test]
fn every_function_answers_before_its_lambda_timeout() {
    use std::time::Duration;
    let template = template();
    let lambda_timeout =
        |binary: &str| Duration::from_secs(function(&template, binary).timeout_secs);
    let timeouts = |binary: &str| dev_gateway::function_timeouts(binary).unwrap();
    for binary in ["like", "points"] {
        // A write's two calls fit the request budget, which leaves the
        // function time to answer 503 itself; API Gateway waits 30 s at most.
        assert!(timeouts(binary).operation * 2 <= shared::http::REQUEST_BUDGET);
        assert!(shared::http::REQUEST_BUDGET + Duration::from_secs(1) < lambda_timeout(binary));
        assert!(lambda_timeout(binary) < Duration::from_secs(30));
        assert!(timeouts(binary).attempt < timeouts(binary).operation);
    }
    // A stalled write fails its message well before the batch's deadline.
    let worker = timeouts("sqs-worker");
    assert!(
        worker.operation * 2 + sqs_worker::DEADLINE_MARGIN <= lambda_timeout("sqs-worker"),
        "{worker:?}"
    );
    // A stalled step ends the run well inside the time reconcile keeps back.
    let reconcile = timeouts("reconcile");
    assert!(reconcile.operation * 2 <= lambda_timeout("reconcile") - reconcile::RUN_BUDGET);
    assert!(dev_gateway::function_timeouts("no-such-function").is_none());
}

/// The logical id a `!Ref` names.
fn reference(value: &Value) -> Option<&str> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "Ref" => tagged.value.as_str(),
        _ => None,
    }
}

/// The alarms watching `metric` of `function` (by its `FunctionName` dimension).
fn alarms_on(template: &Template, function: &str, metric: &str) -> Vec<String> {
    template
        .of_type("AWS::CloudWatch::Alarm")
        .filter(|(_, alarm)| {
            let p = &alarm.properties;
            p["Namespace"].as_str() == Some("AWS/Lambda")
                && p["MetricName"].as_str() == Some(metric)
                && p["Dimensions"].as_sequence().is_some_and(|dims| {
                    dims.iter().any(|d| {
                        d["Name"].as_str() == Some("FunctionName")
                            && reference(&d["Value"]) == Some(function)
                    })
                })
        })
        .map(|(id, _)| id.to_owned())
        .collect()
}

#[test]
fn every_alarm_notifies_the_topic_when_it_fires_and_when_it_clears() {
    let template = template();
    let alarms: Vec<_> = template.of_type("AWS::CloudWatch::Alarm").collect();
    assert!(alarms.len() >= 13, "{}", alarms.len());
    for (id, alarm) in alarms {
        for actions in ["AlarmActions", "OKActions"] {
            let topics: Vec<_> = alarm.properties[actions]
                .as_sequence()
                .unwrap_or_else(|| panic!("{id} has no {actions}"))
                .iter()
                .map(reference)
                .collect();
            assert_eq!(topics, [Some("AlarmTopic")], "{id}.{actions}");
        }
    }
}

#[test]
fn every_function_is_alarmed_on_errors_and_throttles_and_the_api_on_5xx() {
    let template = template();
    let functions: Vec<String> = template
        .of_type("AWS::Serverless::Function")
        .map(|(id, _)| id.to_owned())
        .collect();
    assert_eq!(functions.len(), 5);
    for function in &functions {
        for metric in ["Errors", "Throttles"] {
            assert_eq!(
                alarms_on(&template, function, metric).len(),
                1,
                "{function}: one alarm on {metric}"
            );
        }
    }
    let api_5xx = properties(&template, "ApiServerErrorAlarm");
    assert_eq!(api_5xx["Namespace"].as_str(), Some("AWS/ApiGateway"));
    assert_eq!(api_5xx["MetricName"].as_str(), Some("5xx"));
    assert_eq!(
        reference(&api_5xx["Dimensions"][0]["Value"]),
        Some("HttpApi")
    );
}

#[test]
fn the_http_functions_roll_out_gradually_and_roll_back_on_their_alarms() {
    let template = template();
    for function in ["LikeFunction", "PointsFunction"] {
        let p = properties(&template, function);
        assert_eq!(p["AutoPublishAlias"].as_str(), Some("live"), "{function}");
        let preference = &p["DeploymentPreference"];
        assert_eq!(reference(&preference["Type"]), Some("DeploymentType"));
        let rollback: BTreeSet<&str> = preference["Alarms"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(reference)
            .collect();
        // Its own errors only: the API's alarm would close a dependency loop.
        let errors = alarms_on(&template, function, "Errors");
        assert_eq!(rollback, BTreeSet::from([errors[0].as_str()]), "{function}");
    }
    assert_eq!(
        template.parameter_default("DeploymentType").as_deref(),
        Some("Canary10Percent5Minutes")
    );
}

#[test]
fn production_settings_are_the_defaults_and_a_trial_can_leave_nothing_behind() {
    let template = template();
    let api = properties(&template, "HttpApi");
    let destination = &api["AccessLogSettings"]["DestinationArn"];
    let Value::Tagged(get_att) = destination else {
        panic!("access logs go to a log group: {destination:?}")
    };
    assert_eq!(get_att.value.as_str(), Some("ApiAccessLogs.Arn"));
    let format = api["AccessLogSettings"]["Format"].as_str().unwrap();
    let line: serde_json::Value = serde_json::from_str(format).expect("access log lines are JSON");
    for field in [
        "requestId",
        "routeKey",
        "status",
        "authorizerError",
        "integrationError",
    ] {
        assert!(line.get(field).is_some(), "access logs carry {field}");
    }
    // Resource attributes and globals, read from the document itself.
    let document: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        reference(&document["Globals"]["Function"]["Tracing"]),
        Some("Tracing")
    );
    assert_eq!(
        template.parameter_default("Tracing").as_deref(),
        Some("Active")
    );
    // The table's fate follows a parameter whose default keeps it; a trial's
    // parameter file deletes it.
    assert_eq!(
        reference(&document["Resources"]["Table"]["DeletionPolicy"]),
        Some("TableRetention")
    );
    assert_eq!(
        template.parameter_default("TableRetention").as_deref(),
        Some("Retain")
    );
    assert_eq!(
        template
            .parameter_default("TableDeletionProtection")
            .as_deref(),
        Some("true")
    );
    let trial = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/trial.params"
    ))
    .unwrap();
    for setting in ["TableRetention=Delete", "TableDeletionProtection=false"] {
        assert!(
            trial.lines().any(|l| l == setting),
            "trial.params sets {setting}"
        );
    }
}

/// The events function reads the table's stream the way its guarantees need
/// (docs/events.md): every change with both images, in order per item, a
/// failed event delivered again from its record, retried for as long as the
/// stream keeps records, and a batch given up on reported, not dropped.
#[test]
fn the_events_function_reads_the_stream_as_its_guarantees_need() {
    let template = template();
    let table = properties(&template, "Table");
    assert_eq!(
        table["StreamSpecification"]["StreamViewType"].as_str(),
        Some("NEW_AND_OLD_IMAGES")
    );
    let publisher = function(&template, "events");
    let streams: Vec<&StreamMapping> = publisher
        .events
        .iter()
        .filter_map(|event| match event {
            Event::Stream(stream) => Some(stream),
            _ => None,
        })
        .collect();
    let [stream] = streams.as_slice() else {
        panic!("one stream mapping: {streams:?}");
    };
    assert_eq!(stream.table, "Table");
    assert_eq!(
        stream.starting_position, "TRIM_HORIZON",
        "nothing missed at deploy"
    );
    assert!(stream.report_batch_item_failures && stream.bisect_on_error);
    assert_eq!(
        stream.maximum_retry_attempts, -1,
        "a bus outage costs delay only"
    );
    // DynamoDB Streams keeps records 24 hours: the age bound must hand a
    // batch to the dead-letter queue while the stream still holds it.
    assert!((1..24 * 3600).contains(&stream.maximum_record_age_secs));
    assert_eq!(stream.on_failure.as_deref(), Some("EventsDeadLetterQueue"));
    let resource = properties(&template, "EventsFunction");
    let settings = &resource["Events"]["Stream"]["Properties"];
    assert_eq!(
        settings["ParallelizationFactor"].as_u64(),
        Some(1),
        "in order per item"
    );
    // It may publish to its own bus only.
    let statements = &publisher.statements;
    let put_events: Vec<&Value> = statements
        .iter()
        .filter(|s| s["Action"].as_str() == Some("events:PutEvents"))
        .collect();
    assert_eq!(put_events.len(), 1);
    assert_eq!(target(&put_events[0]["Resource"]), "EventBus");
    assert_eq!(
        target(&publisher.environment[config::EVENT_BUS_NAME]),
        "EventBus"
    );
    // Falling behind alarms long before the stream's 24 hours run out.
    let age = properties(&template, "EventsIteratorAgeAlarm");
    assert_eq!(age["MetricName"].as_str(), Some("IteratorAge"));
    let threshold_ms = age["Threshold"].as_u64().unwrap();
    let periods = age["EvaluationPeriods"].as_u64().unwrap() * age["Period"].as_u64().unwrap();
    assert!(
        threshold_ms / 1000 + periods <= 3600,
        "alarmed within the hour"
    );
    let archive = properties(&template, "EventArchive");
    assert_eq!(target(&archive["SourceArn"]), "EventBus");
}

fn read(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// template.yaml as a YAML document: its `Globals`, `Conditions` and
/// parameters as written, which [`Template`] does not keep.
fn document() -> Value {
    serde_yaml_ng::from_str(&read("template.yaml")).unwrap()
}

/// What `!GetAtt X.Attribute` names, as `X.Attribute`.
fn get_att(value: &Value) -> Option<&str> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "GetAtt" => tagged.value.as_str(),
        _ => None,
    }
}

/// The `(Key, Value)` pairs of a `Key=Value` parameter file in deploy/.
fn parameter_file(name: &str) -> BTreeMap<String, String> {
    read(&format!("deploy/{name}"))
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

/// The retention periods CloudWatch Logs accepts (`PutRetentionPolicy`).
const LOG_RETENTION_DAYS: [u64; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// Lambda's own log group (`/aws/lambda/<name>`, created on first use) keeps
/// every line forever and outlives the stack: each function logs JSON to a
/// log group of the stack's instead, kept as long as a parameter says, and
/// so does the API's access log.
#[test]
fn every_function_logs_json_to_its_own_log_group_kept_as_the_parameter_says() {
    let template = template();
    let mut groups = BTreeSet::new();
    for (id, _) in template.of_type("AWS::Serverless::Function") {
        let logging = &properties(&template, id)["LoggingConfig"];
        assert_eq!(logging["LogFormat"].as_str(), Some("JSON"), "{id}");
        let group = reference(&logging["LogGroup"])
            .unwrap_or_else(|| panic!("{id} logs to a log group of the stack's"))
            .to_owned();
        assert_eq!(
            template.resources()[&group].kind,
            "AWS::Logs::LogGroup",
            "{id}"
        );
        assert!(groups.insert(group), "{id} shares its log group");
    }
    assert_eq!(groups.len(), 5);
    let log_groups: Vec<_> = template.of_type("AWS::Logs::LogGroup").collect();
    assert_eq!(log_groups.len(), groups.len() + 1, "and the access logs");
    for (id, group) in log_groups {
        assert_eq!(
            reference(&group.properties["RetentionInDays"]),
            Some("LogRetentionDays"),
            "{id}"
        );
    }
    let parameter = &document()["Parameters"]["LogRetentionDays"];
    let allowed: Vec<u64> = parameter["AllowedValues"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|days| days.as_u64().unwrap())
        .collect();
    assert_eq!(allowed, LOG_RETENTION_DAYS);
    assert_eq!(
        template.parameter_default("LogRetentionDays").as_deref(),
        Some("30")
    );
    for (file, at_most) in [("production.params", 3653), ("trial.params", 7)] {
        let days: u64 = parameter_file(file)["LogRetentionDays"].parse().unwrap();
        assert!(
            LOG_RETENTION_DAYS.contains(&days) && days <= at_most,
            "{file}"
        );
    }
}

/// The tags a cost allocation report groups by.
const TAGS: [&str; 2] = ["app", "tally:stack"];

/// Resource types CloudFormation cannot tag.
const UNTAGGABLE: &[&str] = &[
    "AWS::Events::Archive",
    "AWS::SNS::Subscription",
    "AWS::CloudWatch::Dashboard",
];

/// The tags of a resource as `Key → Value`: CloudFormation resources list
/// `{Key, Value}` pairs, SAM resources take a map on top of `Globals`.
fn tags(globals: &Value, id: &str, resource: &Value) -> BTreeMap<String, Value> {
    let kind = resource["Type"].as_str().unwrap();
    let own = &resource["Properties"]["Tags"];
    let mut tags = BTreeMap::new();
    if let Some(sam_kind) = kind.strip_prefix("AWS::Serverless::") {
        let global = &globals[sam_kind];
        // PropagateTags: the role, alias and the rest SAM makes carry them too.
        let propagate = resource["Properties"]["PropagateTags"]
            .as_bool()
            .or_else(|| global["PropagateTags"].as_bool());
        assert_eq!(propagate, Some(true), "{id} propagates its tags");
        for map in [&global["Tags"], own] {
            for (key, value) in map.as_mapping().into_iter().flatten() {
                tags.insert(key.as_str().unwrap().to_owned(), value.clone());
            }
        }
    } else {
        for tag in own.as_sequence().into_iter().flatten() {
            tags.insert(
                tag["Key"].as_str().unwrap().to_owned(),
                tag["Value"].clone(),
            );
        }
    }
    tags
}

#[test]
fn every_resource_that_takes_tags_carries_the_cost_allocation_tags() {
    let document = document();
    let globals = &document["Globals"];
    let mut tagged = 0;
    for (id, resource) in document["Resources"].as_mapping().unwrap() {
        let id = id.as_str().unwrap();
        let kind = resource["Type"].as_str().unwrap();
        let tags = tags(globals, id, resource);
        if UNTAGGABLE.contains(&kind) {
            assert!(tags.is_empty(), "{id}: {kind} is listed as untagged");
            continue;
        }
        assert_eq!(
            tags.keys().map(String::as_str).collect::<Vec<_>>(),
            TAGS,
            "{id}"
        );
        assert_eq!(tags["app"].as_str(), Some("tally"), "{id}");
        assert_eq!(
            reference(&tags["tally:stack"]),
            Some("AWS::StackName"),
            "{id}"
        );
        tagged += 1;
    }
    assert!(tagged >= 30, "{tagged}");
}

/// Every value a parameter name or intrinsic mentions, anywhere in `value`.
fn references(value: &Value) -> Vec<String> {
    match value {
        Value::Tagged(tagged) => {
            let mut found = references(&tagged.value);
            if let Some(name) = tagged.value.as_str() {
                found.push(name.to_owned());
            }
            found
        }
        Value::Sequence(items) => items.iter().flat_map(references).collect(),
        Value::Mapping(map) => map.values().flat_map(references).collect(),
        _ => Vec::new(),
    }
}

/// Header names `openapi.yaml` declares, lower case: the request headers
/// (`in: header` parameters) or the response headers (`headers` maps).
fn openapi_headers(value: &Value, requests: bool) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    match value {
        Value::Mapping(map) => {
            if requests && value["in"].as_str() == Some("header") {
                found.insert(value["name"].as_str().unwrap().to_ascii_lowercase());
            }
            for (key, item) in map {
                // A response's headers (a response has a description; the
                // reusable ones under `components` are named by their $ref).
                if !requests && key.as_str() == Some("headers") && map.contains_key("description") {
                    for name in item.as_mapping().into_iter().flatten().map(|(k, _)| k) {
                        found.insert(name.as_str().unwrap().to_ascii_lowercase());
                    }
                }
                found.extend(openapi_headers(item, requests));
            }
        }
        Value::Sequence(items) => {
            for item in items {
                found.extend(openapi_headers(item, requests));
            }
        }
        _ => {}
    }
    found
}

/// Browser apps call the API from the origins a parameter names, sending
/// their users' bearer tokens: every method the routes take (and OPTIONS)
/// and every header the API reads may be sent, and every response header a
/// script needs may be read. No origin (the default) configures no CORS.
#[test]
fn browsers_may_call_the_api_from_the_origins_the_parameter_names() {
    let template = template();
    let document = document();
    let cors = &properties(&template, "HttpApi")["CorsConfiguration"];
    let Value::Tagged(condition) = cors else {
        panic!("CORS follows a condition: {cors:?}");
    };
    assert_eq!(condition.tag, "If");
    let [name, config, otherwise] = condition.value.as_sequence().unwrap().as_slice() else {
        panic!("!If [condition, then, else]");
    };
    let name = name.as_str().unwrap();
    assert_eq!(reference(otherwise), Some("AWS::NoValue"));
    assert!(
        references(&document["Conditions"][name]).contains(&"CorsAllowedOrigins".to_owned()),
        "{name} tests the origins"
    );
    let parameter = &document["Parameters"]["CorsAllowedOrigins"];
    assert_eq!(parameter["Type"].as_str(), Some("CommaDelimitedList"));
    assert_eq!(
        template.parameter_default("CorsAllowedOrigins").as_deref(),
        Some(""),
        "no origin unless one is named"
    );
    assert_eq!(
        reference(&config["AllowOrigins"]),
        Some("CorsAllowedOrigins")
    );
    assert_eq!(
        config["AllowCredentials"].as_bool(),
        Some(false),
        "tokens, not cookies"
    );
    assert!(config["MaxAge"].as_u64().is_some_and(|secs| secs > 0));
    // SAM rewrites an intrinsic CORS configuration by replacing these words
    // in its JSON text, names included: no name in it may contain one.
    for word in [
        "AllowOrigins",
        "AllowHeaders",
        "AllowMethods",
        "ExposeHeaders",
        "MaxAge",
        "AllowCredentials",
    ] {
        for named in references(cors).iter().chain([&name.to_owned()]) {
            assert!(!named.contains(word), "{named} contains {word}");
        }
    }
    let list = |key: &str| -> BTreeSet<String> {
        config[key]
            .as_sequence()
            .unwrap_or_else(|| panic!("{key} is a list"))
            .iter()
            .map(|item| item.as_str().unwrap().to_ascii_lowercase())
            .collect()
    };
    let mut methods: BTreeSet<String> = template
        .functions()
        .unwrap()
        .into_values()
        .flat_map(|function| function.events)
        .filter_map(|event| match event {
            Event::Http { method, .. } if method != "ANY" => Some(method.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    methods.insert("options".to_owned());
    assert!(list("AllowMethods").is_superset(&methods), "{methods:?}");
    let openapi: Value = serde_yaml_ng::from_str(&read("openapi.yaml")).unwrap();
    let mut request_headers = openapi_headers(&openapi, true);
    assert!(request_headers.contains("idempotency-key"));
    // The bearer token, and the JSON bodies' type (not a "simple" one).
    request_headers.extend(["authorization".to_owned(), "content-type".to_owned()]);
    assert_eq!(list("AllowHeaders"), request_headers);
    // Response headers a script reads without their being exposed.
    let safelisted = [
        "cache-control",
        "content-language",
        "content-length",
        "content-type",
        "expires",
        "last-modified",
        "pragma",
    ];
    let response_headers = openapi_headers(&openapi, false);
    assert!(response_headers.contains("cache-control"));
    for header in response_headers {
        assert!(
            safelisted.contains(&header.as_str()) || list("ExposeHeaders").contains(&header),
            "{header} is exposed"
        );
    }
}

/// The route key (`METHOD /path`, or `$default`) of each route of the API.
fn route_keys(template: &Template) -> BTreeSet<String> {
    template
        .functions()
        .unwrap()
        .into_values()
        .flat_map(|function| function.events)
        .filter_map(|event| match event {
            Event::Http { path, .. } if path == "$default" => Some(path),
            Event::Http { method, path, .. } => Some(format!("{method} {path}")),
            _ => None,
        })
        .collect()
}

/// Every route is throttled, all callers together (HTTP APIs have no limits
/// per caller), so one route cannot spend the account's quota: by default
/// under it, the catch-alls far under it, the likes up to it.
#[test]
fn every_route_is_throttled_below_the_accounts_quota() {
    const ACCOUNT_RATE: u64 = 10_000;
    const ACCOUNT_BURST: u64 = 5_000;
    let template = template();
    let api = properties(&template, "HttpApi");
    let default = |name: &str| -> u64 {
        template
            .parameter_default(name)
            .unwrap_or_else(|| panic!("{name} has a default"))
            .parse()
            .unwrap()
    };
    // A limit: a number, or a parameter's default.
    let limit = |value: &Value| value.as_u64().or_else(|| reference(value).map(default));
    let defaults = &api["DefaultRouteSettings"];
    assert_eq!(
        reference(&defaults["ThrottlingRateLimit"]),
        Some("ApiThrottlingRateLimit")
    );
    assert_eq!(
        reference(&defaults["ThrottlingBurstLimit"]),
        Some("ApiThrottlingBurstLimit")
    );
    let rate = limit(&defaults["ThrottlingRateLimit"]).unwrap();
    assert!(rate < ACCOUNT_RATE, "{rate}");
    assert!(limit(&defaults["ThrottlingBurstLimit"]).unwrap() < ACCOUNT_BURST);
    let routes = route_keys(&template);
    let settings = api["RouteSettings"].as_mapping().unwrap();
    for (route, setting) in settings {
        let route = route.as_str().unwrap();
        assert!(routes.contains(route), "{route} is a route of the API");
        let rate = limit(&setting["ThrottlingRateLimit"]).unwrap();
        let burst = limit(&setting["ThrottlingBurstLimit"]).unwrap();
        assert!(rate <= ACCOUNT_RATE && burst <= ACCOUNT_BURST, "{route}");
    }
    // The catch-alls skip the authorizer: capped far lower.
    for route in routes
        .iter()
        .filter(|route| *route == "$default" || route.starts_with("ANY "))
    {
        let setting = &settings[route.as_str()];
        assert!(
            limit(&setting["ThrottlingRateLimit"]).unwrap() <= 50,
            "{route}"
        );
    }
    // Likes, and the count reads of a viral feed, are the load
    // docs/capacity.md sizes for: all of the account's quota.
    for route in [
        "PUT /v1/posts/{post_id}/like",
        "DELETE /v1/posts/{post_id}/like",
        "GET /v1/posts/{post_id}/likes",
        "GET /v1/likes/counts",
    ] {
        let setting = &settings[route];
        assert_eq!(
            limit(&setting["ThrottlingRateLimit"]),
            Some(ACCOUNT_RATE),
            "{route}"
        );
    }
}

/// A queue whose oldest message waits longer than its retries can explain is
/// one the worker is not draining: each queue the worker reads alarms on it,
/// above the longest a retried message waits (every receive, a visibility
/// timeout apart) and within the hour.
#[test]
fn each_queue_alarms_when_its_oldest_message_waits_longer_than_its_retries() {
    let template = template();
    let worker = function(&template, "sqs-worker");
    let queues: Vec<String> = worker
        .events
        .iter()
        .filter_map(|event| match event {
            Event::Sqs(mapping) => Some(mapping.queue.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(queues.len(), 2);
    for queue in queues {
        let alarms: Vec<_> = template
            .of_type("AWS::CloudWatch::Alarm")
            .filter(|(_, alarm)| {
                let p = &alarm.properties;
                p["MetricName"].as_str() == Some("ApproximateAgeOfOldestMessage")
                    && get_att(&p["Dimensions"][0]["Value"])
                        == Some(format!("{queue}.QueueName").as_str())
            })
            .collect();
        let [(id, alarm)] = alarms.as_slice() else {
            panic!("one age alarm on {queue}: {alarms:?}");
        };
        let p = &alarm.properties;
        assert_eq!(p["Namespace"].as_str(), Some("AWS/SQS"), "{id}");
        assert_eq!(
            p["Dimensions"][0]["Name"].as_str(),
            Some("QueueName"),
            "{id}"
        );
        assert_eq!(p["Statistic"].as_str(), Some("Maximum"), "{id}");
        assert_eq!(
            p["ComparisonOperator"].as_str(),
            Some("GreaterThanThreshold")
        );
        let declared = properties(&template, &queue);
        let retried_for = declared["VisibilityTimeout"].as_u64().unwrap()
            * declared["RedrivePolicy"]["maxReceiveCount"]
                .as_u64()
                .unwrap();
        let threshold = p["Threshold"].as_u64().unwrap();
        assert!(
            threshold >= retried_for,
            "{id}: {threshold} s < {retried_for} s"
        );
        let periods = p["EvaluationPeriods"].as_u64().unwrap() * p["Period"].as_u64().unwrap();
        assert!(threshold + periods <= 3600, "{id}: alarmed within the hour");
        assert_eq!(reference(&p["AlarmActions"][0]), Some("AlarmTopic"), "{id}");
    }
}

/// The dashboard's body, its `${...}` references replaced by `<...>`, parsed.
fn dashboard_body(template: &Template) -> (serde_json::Value, BTreeSet<String>) {
    let dashboards: Vec<_> = template.of_type("AWS::CloudWatch::Dashboard").collect();
    let [(_, dashboard)] = dashboards.as_slice() else {
        panic!("one dashboard");
    };
    let body = &dashboard.properties["DashboardBody"];
    let Value::Tagged(sub) = body else {
        panic!("the body is a !Sub: {body:?}");
    };
    assert_eq!(sub.tag, "Sub");
    let mut text = sub.value.as_str().unwrap();
    let mut named = BTreeSet::new();
    let mut out = String::new();
    while let Some((before, after)) = text.split_once("${") {
        let (name, rest) = after.split_once('}').unwrap();
        out.push_str(before);
        out.push_str(&format!("<{name}>"));
        named.insert(name.to_owned());
        text = rest;
    }
    out.push_str(text);
    (
        serde_json::from_str(&out).expect("the dashboard body is JSON"),
        named,
    )
}

/// A metric of a dashboard widget: namespace, name, dimensions, statistic.
type Shown = (String, String, BTreeMap<String, String>, Option<String>);

#[test]
fn the_dashboard_shows_the_queues_the_worker_reconcile_events_and_the_api() {
    let template = template();
    let (body, named) = dashboard_body(&template);
    // Every `${...}` names a resource's attribute or a pseudo parameter.
    for name in &named {
        let id = name.split('.').next().unwrap();
        assert!(
            name.starts_with("AWS::") || template.resources().contains_key(id),
            "${{{name}}} names nothing"
        );
    }
    let mut shown: Vec<Shown> = Vec::new();
    let mut searches = Vec::new();
    let mut alarms = BTreeSet::new();
    for widget in body["widgets"].as_array().unwrap() {
        let p = &widget["properties"];
        if widget["type"] == "alarm" {
            alarms.extend(
                p["alarms"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_owned()),
            );
            continue;
        }
        assert_eq!(p["region"], "<AWS::Region>", "{}", p["title"]);
        for metric in p["metrics"].as_array().unwrap() {
            let parts = metric.as_array().unwrap();
            if let Some(expression) = parts[0]["expression"].as_str() {
                searches.push(expression.to_owned());
                continue;
            }
            let text: Vec<&str> = parts.iter().filter_map(|part| part.as_str()).collect();
            let stat = parts
                .last()
                .and_then(|options| options["stat"].as_str())
                .or_else(|| p["stat"].as_str())
                .map(str::to_owned);
            let dimensions = text[2..]
                .chunks(2)
                .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
                .collect();
            shown.push((text[0].to_owned(), text[1].to_owned(), dimensions, stat));
        }
    }
    let is_shown = |namespace: &str, metric: &str, dimension: (&str, &str), stat: Option<&str>| {
        shown.iter().any(|(ns, name, dims, s)| {
            ns == namespace
                && name == metric
                && dims.get(dimension.0).map(String::as_str) == Some(dimension.1)
                && stat.is_none_or(|stat| s.as_deref() == Some(stat))
        })
    };
    // Every queue's depth; the queues the worker reads, their oldest message.
    for (queue, resource) in template.of_type("AWS::SQS::Queue") {
        let name = format!("<{queue}.QueueName>");
        let dimension = ("QueueName", name.as_str());
        assert!(
            is_shown(
                "AWS/SQS",
                "ApproximateNumberOfMessagesVisible",
                dimension,
                None
            ),
            "{queue}"
        );
        if resource.properties.contains_key("RedrivePolicy") {
            assert!(
                is_shown("AWS/SQS", "ApproximateAgeOfOldestMessage", dimension, None),
                "{queue}"
            );
        }
    }
    let worker = ("FunctionName", "<WorkerFunction>");
    assert!(is_shown("AWS/Lambda", "Errors", worker, None));
    for stat in ["p50", "p99", "Maximum"] {
        assert!(
            is_shown("AWS/Lambda", "Duration", worker, Some(stat)),
            "{stat}"
        );
    }
    // What the worker applied, by kind (its dimensions: Function, Kind).
    assert!(
        searches
            .iter()
            .any(|search| search.contains("{Tally,Function,Kind}")
                && search.contains("\"sqs-worker\"")
                && search.contains("MetricName=\"Applied\""))
    );
    // Reconcile's report: at least every figure an alarm watches.
    for (id, alarm) in template.of_type("AWS::CloudWatch::Alarm") {
        let p = &alarm.properties;
        if p["Namespace"].as_str() == Some(shared::metrics::NAMESPACE) {
            let dimension = &p["Dimensions"][0];
            let dimension = (
                dimension["Name"].as_str().unwrap(),
                dimension["Value"].as_str().unwrap(),
            );
            assert!(
                is_shown("Tally", p["MetricName"].as_str().unwrap(), dimension, None),
                "{id}"
            );
        }
        assert!(
            alarms.contains(&format!("<{id}.Arn>")),
            "{id}'s state is shown"
        );
    }
    assert!(is_shown(
        "Tally",
        "CountersRepaired",
        ("Function", "reconcile"),
        None
    ));
    assert!(is_shown(
        "AWS/Lambda",
        "IteratorAge",
        ("FunctionName", "<EventsFunction>"),
        None
    ));
    for metric in ["4xx", "5xx", "Latency"] {
        assert!(
            is_shown("AWS/ApiGateway", metric, ("ApiId", "<HttpApi>"), None),
            "{metric}"
        );
    }
}
