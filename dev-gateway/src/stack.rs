//! Creates `template.yaml`'s resources on the emulator, as CloudFormation would
//! on AWS: the table (keys, indexes, projections, TTL, streams), the queues
//! (FIFO, visibility, retention, redrive to their dead-letter queues), the
//! event bus and its archive, and for
//! each function an IAM role holding exactly its template policy, which its
//! SDK clients assume through STS, as Lambda does.
//!
//! Local names are `{prefix}-{LogicalId}` (queues add `.fifo` when FIFO). The
//! emulator evaluates actions and resources, not condition keys: a statement's
//! `dynamodb:LeadingKeys` condition is not checked locally.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_dynamodb::error::ProvideErrorMetadata as _;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_yaml_ng::Value;

use crate::template::{Function, LocalResource, Resolver, Template, TemplateError, scalar};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("creating {resource} on the emulator failed")]
    Create {
        resource: String,
        #[source]
        source: BoxError,
    },
}

fn creating<E: Into<BoxError>>(resource: &str) -> impl FnOnce(E) -> ProvisionError + '_ {
    move |err| ProvisionError::Create {
        resource: resource.to_owned(),
        source: err.into(),
    }
}

/// A queue's local record of where its redrive policy sends messages (not a
/// CloudFormation attribute: the stack keeps it so the dev gateway can pair
/// each queue with its dead-letter queue).
pub const DEAD_LETTER_TARGET: &str = "local:DeadLetterTargetArn";

/// Queue timing for tests, in place of the template's: a failed message comes
/// back after `visibility_timeout` and reaches its dead-letter queue after
/// `max_receive_count` receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueTiming {
    pub visibility_timeout: Duration,
    pub max_receive_count: u32,
}

/// One deployed function: its template entry, its environment as deployed, and
/// the AWS settings its clients use (its role's credentials, its timeouts).
#[derive(Debug, Clone)]
pub struct LocalFunction {
    pub spec: Function,
    pub environment: BTreeMap<String, String>,
    pub aws: SdkConfig,
}

impl LocalFunction {
    /// A variable of its environment, as the function would read it.
    pub fn env(&self, name: &str) -> Result<&str, TemplateError> {
        self.environment
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| {
                TemplateError::Shape(format!("{} does not set {name}", self.spec.logical_id))
            })
    }
}

/// What [`provision`] created.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// By logical id: what `!Ref` and `!GetAtt` name locally (a queue's
    /// reference is its URL, a table's its name).
    pub resources: BTreeMap<String, LocalResource>,
    /// By logical id.
    pub functions: BTreeMap<String, LocalFunction>,
}

impl Provisioned {
    /// The function built from `binary`.
    pub fn function(&self, binary: &str) -> Result<&LocalFunction, TemplateError> {
        self.functions
            .values()
            .find(|function| function.spec.binary == binary)
            .ok_or_else(|| TemplateError::Shape(format!("no function is built from {binary}")))
    }
}

/// Creates the template's resources (or finds them) and a role per function.
/// `timeouts(binary)` gives each function's SDK timeouts.
pub async fn provision(
    operator: &SdkConfig,
    template: &Template,
    prefix: &str,
    timing: Option<QueueTiming>,
    timeouts: impl Fn(&str) -> Option<shared::config::Timeouts>,
) -> Result<Provisioned, ProvisionError> {
    check_names(template, prefix)?;
    let iam = aws_sdk_iam::Client::new(operator);
    let operator_arn = iam
        .get_user()
        .send()
        .await
        .map_err(creating("the operator's identity"))?
        .user
        .map(|user| user.arn)
        .unwrap_or_default();
    // arn:aws:iam::<account>:user/<name>
    let account = operator_arn.split(':').nth(4).unwrap_or("123456789012");
    let region = operator
        .region()
        .map_or("us-east-1".to_owned(), ToString::to_string);
    let mut resolver = Resolver::new(template, &region, account, prefix);

    for (id, resource) in template.of_type("AWS::DynamoDB::Table") {
        let created = create_table(operator, &resolver, prefix, id, resource).await?;
        resolver.insert(id, created);
    }
    create_queues(operator, template, &mut resolver, prefix, timing).await?;
    let events = aws_sdk_eventbridge::Client::new(operator);
    for (id, resource) in template.of_type("AWS::Events::EventBus") {
        let created = create_event_bus(&events, &resolver, id, resource).await?;
        resolver.insert(id, created);
    }
    for (id, resource) in template.of_type("AWS::Events::Archive") {
        let created = create_archive(&events, &resolver, prefix, id, resource).await?;
        resolver.insert(id, created);
    }

    let mut functions = BTreeMap::new();
    for (id, spec) in template.functions()? {
        let mut environment = BTreeMap::new();
        for (name, value) in &spec.environment {
            environment.insert(name.clone(), resolver.resolve_text(value)?);
        }
        let statements = spec
            .statements
            .iter()
            .map(|statement| resolver.resolve(statement))
            .collect::<Result<Vec<_>, _>>()?;
        let function_timeouts = timeouts(&spec.binary).ok_or_else(|| {
            TemplateError::Shape(format!(
                "{id}: no SDK timeouts for the binary {} (dev_gateway::function_timeouts)",
                spec.binary
            ))
        })?;
        let role = format!("{prefix}-{id}");
        let credentials = assume_role(operator, &iam, &operator_arn, &role, &statements).await?;
        let aws = operator
            .to_builder()
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                credentials,
            ))
            .timeout_config(function_timeouts.config())
            .build();
        functions.insert(
            id,
            LocalFunction {
                spec,
                environment,
                aws,
            },
        );
    }
    let resources = template
        .resources()
        .keys()
        .filter_map(|id| Some((id.clone(), resolver.get(id)?.clone())))
        .collect();
    Ok(Provisioned {
        resources,
        functions,
    })
}

/// Resource types created locally, and those that only exist on AWS (the dev
/// gateway plays the HTTP API and the schedule; alarms and their topic have
/// nothing to do locally). Any other type fails provisioning, so a resource
/// added to the template never silently lacks its local twin.
const CREATED: &[&str] = &[
    "AWS::DynamoDB::Table",
    "AWS::SQS::Queue",
    "AWS::Events::EventBus",
    "AWS::Events::Archive",
    "AWS::Serverless::Function",
];
const DEPLOYED_ONLY: &[&str] = &[
    "AWS::Serverless::HttpApi",
    "AWS::CloudWatch::Alarm",
    "AWS::SNS::Topic",
    "AWS::SNS::Subscription",
    "AWS::Logs::LogGroup",
    "AWS::CloudWatch::Dashboard",
];

/// Every resource type is known, and every local name is one AWS accepts:
/// IAM role names up to 64 characters, queue names up to 80 (with `.fifo`),
/// both of letters, digits and `-` here.
fn check_names(template: &Template, prefix: &str) -> Result<(), TemplateError> {
    let fail = |message: String| Err(TemplateError::Shape(message));
    if prefix.is_empty()
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return fail(format!(
            "the stack name {prefix:?} must be letters, digits and '-'"
        ));
    }
    for (id, resource) in template.resources() {
        let kind = resource.kind.as_str();
        if !CREATED.contains(&kind) && !DEPLOYED_ONLY.contains(&kind) {
            return fail(format!("{id}: {kind} is not played locally"));
        }
        let name = format!("{prefix}-{id}");
        let limit = match kind {
            "AWS::Serverless::Function" => 64,
            "AWS::SQS::Queue" => 80 - ".fifo".len(),
            "AWS::DynamoDB::Table" => 255,
            "AWS::Events::Archive" => 48,
            _ => continue,
        };
        if name.len() > limit {
            return fail(format!(
                "{name} is longer than the {limit} characters AWS allows: use a shorter stack name"
            ));
        }
    }
    Ok(())
}

/// `AWS::DynamoDB::Table` properties: `CreateTable`'s fields. An unknown
/// property fails provisioning, so the template never carries a setting the
/// local table silently lacks.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct TableProperties {
    billing_mode: Option<String>,
    attribute_definitions: Vec<AttributeSpec>,
    key_schema: Vec<KeySpec>,
    #[serde(default)]
    global_secondary_indexes: Vec<IndexSpec>,
    time_to_live_specification: Option<TtlSpec>,
    stream_specification: Option<StreamSpec>,
    // Deletion protection and backups change nothing a request sees.
    #[allow(dead_code)]
    deletion_protection_enabled: Option<IgnoredAny>,
    #[allow(dead_code)]
    point_in_time_recovery_specification: Option<IgnoredAny>,
    // Tags are for cost reports: nothing a request sees.
    #[allow(dead_code)]
    tags: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttributeSpec {
    attribute_name: String,
    attribute_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeySpec {
    attribute_name: String,
    key_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IndexSpec {
    index_name: String,
    key_schema: Vec<KeySpec>,
    projection: ProjectionSpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProjectionSpec {
    projection_type: String,
    #[serde(default)]
    non_key_attributes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TtlSpec {
    attribute_name: String,
    enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StreamSpec {
    stream_view_type: String,
}

fn key_schema(keys: &[KeySpec]) -> Result<Vec<KeySchemaElement>, BoxError> {
    keys.iter()
        .map(|key| {
            Ok(KeySchemaElement::builder()
                .attribute_name(&key.attribute_name)
                .key_type(KeyType::from(key.key_type.as_str()))
                .build()?)
        })
        .collect()
}

async fn create_table(
    operator: &SdkConfig,
    resolver: &Resolver<'_>,
    prefix: &str,
    id: &str,
    resource: &crate::template::Resource,
) -> Result<LocalResource, ProvisionError> {
    let properties = resolver.resolve(&Value::Mapping(resource.properties.clone()))?;
    let properties: TableProperties = serde_yaml_ng::from_value(properties)
        .map_err(|err| TemplateError::Shape(format!("{id}: {err}")))?;
    let name = format!("{prefix}-{id}");
    let client = aws_sdk_dynamodb::Client::new(operator);
    let build = || -> Result<_, BoxError> {
        let mut request = client
            .create_table()
            .table_name(&name)
            .set_key_schema(Some(key_schema(&properties.key_schema)?));
        if let Some(mode) = &properties.billing_mode {
            request = request.billing_mode(BillingMode::from(mode.as_str()));
        }
        for attribute in &properties.attribute_definitions {
            request = request.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(&attribute.attribute_name)
                    .attribute_type(ScalarAttributeType::from(attribute.attribute_type.as_str()))
                    .build()?,
            );
        }
        for index in &properties.global_secondary_indexes {
            let projection = Projection::builder()
                .projection_type(ProjectionType::from(
                    index.projection.projection_type.as_str(),
                ))
                .set_non_key_attributes(
                    (!index.projection.non_key_attributes.is_empty())
                        .then(|| index.projection.non_key_attributes.clone()),
                )
                .build();
            request = request.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(&index.index_name)
                    .set_key_schema(Some(key_schema(&index.key_schema)?))
                    .projection(projection)
                    .build()?,
            );
        }
        if let Some(stream) = &properties.stream_specification {
            request = request.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::from(stream.stream_view_type.as_str()))
                    .build()?,
            );
        }
        Ok(request)
    };
    let request = build().map_err(creating(&name))?;
    let description = match request.send().await {
        Ok(created) => created.table_description,
        Err(err) if err.code() == Some("ResourceInUseException") => {
            client
                .describe_table()
                .table_name(&name)
                .send()
                .await
                .map_err(creating(&name))?
                .table
        }
        Err(err) => return Err(creating(&name)(err)),
    };
    if let Some(ttl) = &properties.time_to_live_specification {
        let specification = TimeToLiveSpecification::builder()
            .attribute_name(&ttl.attribute_name)
            .enabled(ttl.enabled)
            .build()
            .map_err(creating(&name))?;
        client
            .update_time_to_live()
            .table_name(&name)
            .time_to_live_specification(specification)
            .send()
            .await
            .map_err(creating(&name))?;
    }
    let mut attributes = BTreeMap::new();
    let description = description.ok_or_else(|| creating(&name)("no table description"))?;
    attributes.insert("Arn".to_owned(), description.table_arn.unwrap_or_default());
    if let Some(stream) = description.latest_stream_arn {
        attributes.insert("StreamArn".to_owned(), stream);
    }
    Ok(LocalResource {
        reference: name,
        attributes,
    })
}

/// Creates every `AWS::SQS::Queue`, each after the queues its properties name
/// (a dead-letter queue before the queue that redrives to it).
async fn create_queues(
    operator: &SdkConfig,
    template: &Template,
    resolver: &mut Resolver<'_>,
    prefix: &str,
    timing: Option<QueueTiming>,
) -> Result<(), ProvisionError> {
    let client = aws_sdk_sqs::Client::new(operator);
    let mut waiting: Vec<(&str, &crate::template::Resource)> =
        template.of_type("AWS::SQS::Queue").collect();
    while !waiting.is_empty() {
        let mut next = Vec::new();
        let before = waiting.len();
        for (id, resource) in waiting {
            match resolver.resolve(&Value::Mapping(resource.properties.clone())) {
                Ok(properties) => {
                    let created = create_queue(&client, prefix, id, &properties, timing).await?;
                    resolver.insert(id, created);
                }
                Err(_) => next.push((id, resource)),
            }
        }
        if next.len() == before {
            // Nothing could be created: report the first queue's own error.
            if let Some((_, resource)) = next.first() {
                resolver.resolve(&Value::Mapping(resource.properties.clone()))?;
            }
        }
        waiting = next;
    }
    Ok(())
}

/// `AWS::SQS::Queue` properties are `CreateQueue`'s attributes, by name.
async fn create_queue(
    client: &aws_sdk_sqs::Client,
    prefix: &str,
    id: &str,
    properties: &Value,
    timing: Option<QueueTiming>,
) -> Result<LocalResource, ProvisionError> {
    let fifo = properties.get("FifoQueue").and_then(Value::as_bool) == Some(true);
    let name = format!("{prefix}-{id}{}", if fifo { ".fifo" } else { "" });
    let mut request = client.create_queue().queue_name(&name);
    let mut dead_letter_target = None;
    for (key, value) in properties.as_mapping().into_iter().flatten() {
        let key = key.as_str().unwrap_or_default();
        let value = match (key, timing) {
            ("QueueName" | "Tags", _) => continue,
            ("VisibilityTimeout", Some(timing)) => timing.visibility_timeout.as_secs().to_string(),
            ("RedrivePolicy", timing) => {
                let mut policy: serde_json::Value = serde_json::to_value(value)
                    .map_err(|err| TemplateError::Shape(format!("{id}.RedrivePolicy: {err}")))?;
                if let (Some(timing), Some(fields)) = (timing, policy.as_object_mut()) {
                    fields.insert(
                        "maxReceiveCount".to_owned(),
                        timing.max_receive_count.into(),
                    );
                }
                dead_letter_target = policy
                    .get("deadLetterTargetArn")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned);
                policy.to_string()
            }
            _ => scalar(value)
                .ok_or_else(|| TemplateError::Shape(format!("{id}.{key} is not a scalar")))?,
        };
        request = request.attributes(QueueAttributeName::from(key), value);
    }
    let url = request
        .send()
        .await
        .map_err(creating(&name))?
        .queue_url
        .unwrap_or_default();
    let arn = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(creating(&name))?
        .attributes
        .and_then(|mut attributes| attributes.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| creating(&name)("the queue has no QueueArn"))?;
    let mut attributes = BTreeMap::from([
        ("Arn".to_owned(), arn),
        ("QueueName".to_owned(), name),
        ("QueueUrl".to_owned(), url.clone()),
    ]);
    if let Some(target) = dead_letter_target {
        attributes.insert(DEAD_LETTER_TARGET.to_owned(), target);
    }
    Ok(LocalResource {
        reference: url,
        attributes,
    })
}

/// `AWS::Events::EventBus`: its `Name` (the stack's name in Tally's template).
async fn create_event_bus(
    client: &aws_sdk_eventbridge::Client,
    resolver: &Resolver<'_>,
    id: &str,
    resource: &crate::template::Resource,
) -> Result<LocalResource, ProvisionError> {
    let properties = resolver.resolve(&Value::Mapping(resource.properties.clone()))?;
    let name = properties
        .get("Name")
        .and_then(scalar)
        .ok_or_else(|| TemplateError::Shape(format!("{id} has no Name")))?;
    let arn = match client.create_event_bus().name(&name).send().await {
        Ok(created) => created.event_bus_arn.unwrap_or_default(),
        Err(err) if err.code() == Some("ResourceAlreadyExistsException") => client
            .describe_event_bus()
            .name(&name)
            .send()
            .await
            .map_err(creating(&name))?
            .arn
            .unwrap_or_default(),
        Err(err) => return Err(creating(&name)(err)),
    };
    Ok(LocalResource {
        reference: name.clone(),
        attributes: BTreeMap::from([("Arn".to_owned(), arn), ("Name".to_owned(), name)]),
    })
}

/// `AWS::Events::Archive`: named `{prefix}-{LogicalId}`, of its `SourceArn`.
async fn create_archive(
    client: &aws_sdk_eventbridge::Client,
    resolver: &Resolver<'_>,
    prefix: &str,
    id: &str,
    resource: &crate::template::Resource,
) -> Result<LocalResource, ProvisionError> {
    let properties = resolver.resolve(&Value::Mapping(resource.properties.clone()))?;
    let text = |key: &str| properties.get(key).and_then(scalar);
    let name = format!("{prefix}-{id}");
    let source =
        text("SourceArn").ok_or_else(|| TemplateError::Shape(format!("{id} has no SourceArn")))?;
    let mut request = client
        .create_archive()
        .archive_name(&name)
        .event_source_arn(source)
        .set_description(text("Description"));
    if let Some(days) = text("RetentionDays").and_then(|days| days.parse().ok()) {
        request = request.retention_days(days);
    }
    let arn = match request.send().await {
        Ok(created) => created.archive_arn.unwrap_or_default(),
        Err(err) if err.code() == Some("ResourceAlreadyExistsException") => client
            .describe_archive()
            .archive_name(&name)
            .send()
            .await
            .map_err(creating(&name))?
            .archive_arn
            .unwrap_or_default(),
        Err(err) => return Err(creating(&name)(err)),
    };
    Ok(LocalResource {
        reference: name,
        attributes: BTreeMap::from([("Arn".to_owned(), arn)]),
    })
}

/// A role `name` that the operator may assume, holding `statements`, and a
/// provider of its (refreshed) session credentials.
async fn assume_role(
    operator: &SdkConfig,
    iam: &aws_sdk_iam::Client,
    operator_arn: &str,
    name: &str,
    statements: &[Value],
) -> Result<AssumeRoleProvider, ProvisionError> {
    // On AWS the trusted principal is lambda.amazonaws.com; locally the
    // operator plays Lambda and assumes the role for the function.
    let trust = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "AWS": operator_arn },
            "Action": "sts:AssumeRole",
        }],
    });
    let policy = serde_json::json!({ "Version": "2012-10-17", "Statement": statements });
    let role_arn = match iam
        .create_role()
        .role_name(name)
        .assume_role_policy_document(trust.to_string())
        .send()
        .await
    {
        Ok(created) => created.role.map(|role| role.arn).unwrap_or_default(),
        Err(err) if err.code() == Some("EntityAlreadyExists") => iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .map_err(creating(name))?
            .role
            .map(|role| role.arn)
            .unwrap_or_default(),
        Err(err) => return Err(creating(name)(err)),
    };
    iam.put_role_policy()
        .role_name(name)
        .policy_name("template")
        .policy_document(policy.to_string())
        .send()
        .await
        .map_err(creating(name))?;
    Ok(AssumeRoleProvider::builder(role_arn)
        .session_name(name.chars().take(64).collect::<String>())
        .configure(operator)
        .build()
        .await)
}
