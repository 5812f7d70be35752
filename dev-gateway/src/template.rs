//! `template.yaml`, read as the local stack's one definition.
//!
//! What AWS deploys and what `make dev`, the tests and the simulator run are
//! the same resources: the table, the queues, each function's environment and
//! IAM policy, its routes and its event source mappings are all read from the
//! template. A resource's properties are the API's own shapes (CloudFormation's
//! `AWS::DynamoDB::Table` properties are `CreateTable`'s fields, an
//! `AWS::SQS::Queue`'s are `CreateQueue`'s attributes), so [`crate::stack`] hands
//! them to the emulator as they are. Intrinsic functions (`!Ref`, `!GetAtt`,
//! `!Sub`) are resolved against the local resources by [`Resolver`].

use std::collections::BTreeMap;

use serde::Deserialize;
pub use serde_yaml_ng::{Mapping, Value};

/// The template the repository deploys, built into the binary.
const DEPLOYED: &str = include_str!("../../template.yaml");

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template.yaml does not parse: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("template.yaml: {0}")]
    Shape(String),
}

fn shape(message: impl Into<String>) -> TemplateError {
    TemplateError::Shape(message.into())
}

/// A parsed SAM template.
#[derive(Debug, Clone)]
pub struct Template {
    parameters: Mapping,
    globals: Mapping,
    resources: BTreeMap<String, Resource>,
}

/// One entry of `Resources`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resource {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(default)]
    pub properties: Mapping,
    #[serde(default)]
    pub metadata: Mapping,
}

/// An `AWS::Serverless::Function`, with `Globals.Function` applied.
#[derive(Debug, Clone)]
pub struct Function {
    pub logical_id: String,
    /// The cargo binary it is built from (`Metadata.BuildProperties.Binary`).
    pub binary: String,
    /// `Timeout`, in seconds.
    pub timeout_secs: u64,
    /// `Environment.Variables`, unresolved.
    pub environment: BTreeMap<String, Value>,
    /// The statements of its inline `Policies`, unresolved.
    pub statements: Vec<Value>,
    pub events: Vec<Event>,
}

/// An entry of a function's `Events`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A route of the HTTP API (`Method` upper case; `ANY` for catch-alls),
    /// with the scopes its authorizer requires.
    Http {
        method: String,
        path: String,
        scopes: Vec<String>,
    },
    /// An SQS event source mapping.
    Sqs(SqsMapping),
    /// A DynamoDB stream event source mapping.
    Stream(StreamMapping),
    /// A schedule (reconcile's); played locally by the dev gateway's timer.
    Schedule { expression: Value },
}

/// An SQS event source mapping's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsMapping {
    /// The logical id of the queue it reads.
    pub queue: String,
    pub batch_size: usize,
    pub batching_window_secs: u64,
    pub maximum_concurrency: Option<u32>,
    pub report_batch_item_failures: bool,
}

/// A DynamoDB stream event source mapping's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamMapping {
    /// The logical id of the table whose stream it reads.
    pub table: String,
    pub batch_size: usize,
    pub batching_window_secs: u64,
    /// `TRIM_HORIZON` or `LATEST`.
    pub starting_position: String,
    pub report_batch_item_failures: bool,
    pub bisect_on_error: bool,
    /// -1: until the record reaches its maximum age.
    pub maximum_retry_attempts: i64,
    /// -1: as long as the stream keeps it.
    pub maximum_record_age_secs: i64,
    /// The logical id of the queue a batch given up on is reported to.
    pub on_failure: Option<String>,
}

impl Template {
    /// The repository's `template.yaml`.
    pub fn deployed() -> Result<Self, TemplateError> {
        Self::parse(DEPLOYED)
    }

    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Document {
            #[serde(default)]
            parameters: Mapping,
            #[serde(default)]
            globals: Mapping,
            resources: BTreeMap<String, Resource>,
        }
        let document: Document = serde_yaml_ng::from_str(text)?;
        Ok(Self {
            parameters: document.parameters,
            globals: document.globals,
            resources: document.resources,
        })
    }

    pub fn resources(&self) -> &BTreeMap<String, Resource> {
        &self.resources
    }

    /// Logical ids of the resources of type `kind`, in name order.
    pub fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'a str, &'a Resource)> {
        self.resources
            .iter()
            .filter(move |(_, resource)| resource.kind == kind)
            .map(|(id, resource)| (id.as_str(), resource))
    }

    /// The default of a parameter, as CloudFormation would use it when none is given.
    pub fn parameter_default(&self, name: &str) -> Option<String> {
        let parameter = self.parameters.get(name)?;
        scalar(parameter.get("Default")?)
    }

    /// Every function, by logical id.
    pub fn functions(&self) -> Result<BTreeMap<String, Function>, TemplateError> {
        self.of_type("AWS::Serverless::Function")
            .map(|(id, _)| Ok((id.to_owned(), self.function(id)?)))
            .collect()
    }

    /// One function, `Globals.Function` applied beneath its own properties.
    pub fn function(&self, logical_id: &str) -> Result<Function, TemplateError> {
        let resource = self
            .resources
            .get(logical_id)
            .filter(|resource| resource.kind == "AWS::Serverless::Function")
            .ok_or_else(|| shape(format!("no function {logical_id}")))?;
        let globals = self
            .globals
            .get("Function")
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default();
        let property = |name: &str| resource.properties.get(name).or_else(|| globals.get(name));
        let binary = resource
            .metadata
            .get("BuildProperties")
            .and_then(|build| build.get("Binary"))
            .and_then(scalar)
            .ok_or_else(|| {
                shape(format!(
                    "{logical_id} names no Metadata.BuildProperties.Binary"
                ))
            })?;
        let timeout_secs = property("Timeout")
            .and_then(Value::as_u64)
            .ok_or_else(|| shape(format!("{logical_id} has no Timeout")))?;
        let mut environment = BTreeMap::new();
        for source in [
            globals.get("Environment"),
            resource.properties.get("Environment"),
        ] {
            let variables = source
                .and_then(|environment| environment.get("Variables"))
                .and_then(Value::as_mapping);
            for (name, value) in variables.into_iter().flatten() {
                let name = name.as_str().ok_or_else(|| {
                    shape(format!("{logical_id}: a variable name is not a string"))
                })?;
                environment.insert(name.to_owned(), value.clone());
            }
        }
        let mut statements = Vec::new();
        for policy in resource
            .properties
            .get("Policies")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let policy_statements = policy
                .get("Statement")
                .and_then(Value::as_sequence)
                .ok_or_else(|| {
                    shape(format!(
                        "{logical_id}: only inline policies (a `Statement` list) are played locally"
                    ))
                })?;
            statements.extend(policy_statements.iter().cloned());
        }
        let mut events = Vec::new();
        for (name, event) in resource
            .properties
            .get("Events")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
        {
            events.push(event_of(logical_id, name, event)?);
        }
        Ok(Function {
            logical_id: logical_id.to_owned(),
            binary,
            timeout_secs,
            environment,
            statements,
            events,
        })
    }

    /// The function built from `binary`.
    pub fn function_of_binary(&self, binary: &str) -> Result<Function, TemplateError> {
        self.functions()?
            .into_values()
            .find(|function| function.binary == binary)
            .ok_or_else(|| shape(format!("no function is built from the binary {binary}")))
    }

    /// Mutable access to a resource, for tests that deploy a changed template.
    pub fn resource_mut(&mut self, logical_id: &str) -> Option<&mut Resource> {
        self.resources.get_mut(logical_id)
    }
}

fn event_of(function: &str, name: &Value, event: &Value) -> Result<Event, TemplateError> {
    let name = name.as_str().unwrap_or("?");
    let what = |detail: &str| shape(format!("{function} event {name}: {detail}"));
    let kind = event.get("Type").and_then(Value::as_str).unwrap_or("");
    let properties = event
        .get("Properties")
        .ok_or_else(|| what("no Properties"))?;
    let text = |key: &str| properties.get(key).and_then(scalar);
    match kind {
        "HttpApi" => Ok(Event::Http {
            method: text("Method")
                .ok_or_else(|| what("no Method"))?
                .to_ascii_uppercase(),
            path: text("Path").ok_or_else(|| what("no Path"))?,
            scopes: properties
                .get("Auth")
                .and_then(|auth| auth.get("AuthorizationScopes"))
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .filter_map(scalar)
                .collect(),
        }),
        "SQS" => {
            let queue = properties
                .get("Queue")
                .and_then(get_att_target)
                .ok_or_else(|| what("Queue is not a !GetAtt <queue>.Arn"))?;
            let batch_size = properties
                .get("BatchSize")
                .and_then(Value::as_u64)
                .unwrap_or(10);
            let batching_window_secs = properties
                .get("MaximumBatchingWindowInSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let maximum_concurrency = properties
                .get("ScalingConfig")
                .and_then(|scaling| scaling.get("MaximumConcurrency"))
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok());
            let report_batch_item_failures = reports_batch_item_failures(properties);
            Ok(Event::Sqs(SqsMapping {
                queue,
                batch_size: usize::try_from(batch_size).map_err(|_| what("BatchSize"))?,
                batching_window_secs,
                maximum_concurrency,
                report_batch_item_failures,
            }))
        }
        "DynamoDB" => {
            let table = properties
                .get("Stream")
                .and_then(get_att_target)
                .ok_or_else(|| what("Stream is not a !GetAtt <table>.StreamArn"))?;
            let number = |key: &str| properties.get(key).and_then(Value::as_i64);
            Ok(Event::Stream(StreamMapping {
                table,
                batch_size: usize::try_from(number("BatchSize").unwrap_or(100))
                    .map_err(|_| what("BatchSize"))?,
                batching_window_secs: number("MaximumBatchingWindowInSeconds")
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                starting_position: text("StartingPosition")
                    .ok_or_else(|| what("no StartingPosition"))?,
                report_batch_item_failures: reports_batch_item_failures(properties),
                bisect_on_error: properties
                    .get("BisectBatchOnFunctionError")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                maximum_retry_attempts: number("MaximumRetryAttempts").unwrap_or(-1),
                maximum_record_age_secs: number("MaximumRecordAgeInSeconds").unwrap_or(-1),
                on_failure: properties
                    .get("DestinationConfig")
                    .and_then(|config| config.get("OnFailure"))
                    .and_then(|on_failure| on_failure.get("Destination"))
                    .and_then(get_att_target),
            }))
        }
        "ScheduleV2" | "Schedule" => Ok(Event::Schedule {
            expression: properties
                .get("ScheduleExpression")
                .cloned()
                .unwrap_or(Value::Null),
        }),
        other => Err(what(&format!("event type {other} is not played locally"))),
    }
}

fn reports_batch_item_failures(properties: &Value) -> bool {
    properties
        .get("FunctionResponseTypes")
        .and_then(Value::as_sequence)
        .is_some_and(|types| {
            types
                .iter()
                .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
        })
}

/// The logical id `!GetAtt X.Arn` (or `Fn::GetAtt: [X, Arn]`) names.
fn get_att_target(value: &Value) -> Option<String> {
    let target = match value {
        Value::Tagged(tagged) if tagged.tag == "GetAtt" => tagged.value.clone(),
        Value::Mapping(map) => map.get("Fn::GetAtt")?.clone(),
        _ => return None,
    };
    match target {
        Value::String(dotted) => dotted.split_once('.').map(|(id, _)| id.to_owned()),
        Value::Sequence(parts) => parts.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// A scalar as CloudFormation passes it on: strings, numbers and booleans as text.
pub fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What a local resource answers to `!Ref` and `!GetAtt`.
#[derive(Debug, Clone, Default)]
pub struct LocalResource {
    pub reference: String,
    pub attributes: BTreeMap<String, String>,
}

/// Resolves `!Ref`, `!GetAtt` and `!Sub` against the resources created so far,
/// the template's parameter defaults and the pseudo parameters.
#[derive(Debug, Clone)]
pub struct Resolver<'a> {
    template: &'a Template,
    region: String,
    account: String,
    /// What `AWS::StackName` names: the local prefix.
    stack_name: String,
    resources: BTreeMap<String, LocalResource>,
}

impl<'a> Resolver<'a> {
    pub fn new(template: &'a Template, region: &str, account: &str, stack_name: &str) -> Self {
        Self {
            template,
            region: region.to_owned(),
            account: account.to_owned(),
            stack_name: stack_name.to_owned(),
            resources: BTreeMap::new(),
        }
    }

    /// Records a created resource, so later properties can name it.
    pub fn insert(&mut self, logical_id: &str, resource: LocalResource) {
        self.resources.insert(logical_id.to_owned(), resource);
    }

    pub fn get(&self, logical_id: &str) -> Option<&LocalResource> {
        self.resources.get(logical_id)
    }

    /// `value` with every intrinsic function replaced by what it names.
    pub fn resolve(&self, value: &Value) -> Result<Value, TemplateError> {
        match value {
            Value::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                self.intrinsic(tag.trim_start_matches('!'), &tagged.value)
            }
            Value::Mapping(map) => {
                if map.len() == 1
                    && let Some((Value::String(key), argument)) = map.iter().next()
                    && (key == "Ref" || key.starts_with("Fn::"))
                {
                    return self.intrinsic(key.trim_start_matches("Fn::"), argument);
                }
                let mut resolved = Mapping::new();
                for (key, item) in map {
                    resolved.insert(key.clone(), self.resolve(item)?);
                }
                Ok(Value::Mapping(resolved))
            }
            Value::Sequence(items) => Ok(Value::Sequence(
                items
                    .iter()
                    .map(|item| self.resolve(item))
                    .collect::<Result<_, _>>()?,
            )),
            other => Ok(other.clone()),
        }
    }

    /// A resolved scalar, as text.
    pub fn resolve_text(&self, value: &Value) -> Result<String, TemplateError> {
        let resolved = self.resolve(value)?;
        scalar(&resolved).ok_or_else(|| shape(format!("{value:?} is not a scalar")))
    }

    fn intrinsic(&self, name: &str, argument: &Value) -> Result<Value, TemplateError> {
        match name {
            "Ref" => {
                let target = argument
                    .as_str()
                    .ok_or_else(|| shape("!Ref of a non-string"))?;
                self.reference(target).map(Value::String)
            }
            "GetAtt" => {
                let (id, attribute) = match argument {
                    Value::String(dotted) => dotted
                        .split_once('.')
                        .map(|(id, attribute)| (id.to_owned(), attribute.to_owned())),
                    Value::Sequence(parts) => match (parts.first(), parts.get(1)) {
                        (Some(Value::String(id)), Some(Value::String(attribute))) => {
                            Some((id.clone(), attribute.clone()))
                        }
                        _ => None,
                    },
                    _ => None,
                }
                .ok_or_else(|| shape(format!("malformed !GetAtt {argument:?}")))?;
                self.attribute(&id, &attribute).map(Value::String)
            }
            "Sub" => {
                let text = argument
                    .as_str()
                    .ok_or_else(|| shape("only the one-argument !Sub is played locally"))?;
                self.substitute(text).map(Value::String)
            }
            other => Err(shape(format!(
                "the intrinsic function {other} is not played locally"
            ))),
        }
    }

    fn reference(&self, target: &str) -> Result<String, TemplateError> {
        match target {
            "AWS::Region" => return Ok(self.region.clone()),
            "AWS::AccountId" => return Ok(self.account.clone()),
            "AWS::StackName" => return Ok(self.stack_name.clone()),
            "AWS::Partition" => return Ok("aws".to_owned()),
            "AWS::URLSuffix" => return Ok("amazonaws.com".to_owned()),
            _ => {}
        }
        if let Some(resource) = self.resources.get(target) {
            return Ok(resource.reference.clone());
        }
        self.template.parameter_default(target).ok_or_else(|| {
            shape(format!(
                "!Ref {target}: not a local resource, nor a parameter with a default"
            ))
        })
    }

    fn attribute(&self, id: &str, attribute: &str) -> Result<String, TemplateError> {
        self.resources
            .get(id)
            .and_then(|resource| resource.attributes.get(attribute))
            .cloned()
            .ok_or_else(|| shape(format!("!GetAtt {id}.{attribute}: no such local attribute")))
    }

    fn substitute(&self, text: &str) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some((before, after)) = rest.split_once("${") {
            out.push_str(before);
            let (name, tail) = after
                .split_once('}')
                .ok_or_else(|| shape(format!("unclosed ${{ in !Sub {text}")))?;
            let value = match name.split_once('.') {
                Some((id, attribute)) if !name.starts_with("AWS::") => {
                    self.attribute(id, attribute)?
                }
                _ => self.reference(name)?,
            };
            out.push_str(&value);
            rest = tail;
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Parameters:
  Stage: { Type: String, Default: dev }
Globals:
  Function:
    Timeout: 10
    Environment: { Variables: { SHARED: !Ref Stage } }
Resources:
  Queue: { Type: AWS::SQS::Queue }
  Fn:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: fn } }
    Properties:
      Timeout: 30
      Environment:
        Variables:
          URL: !Ref Queue
          ARN: { "Fn::GetAtt": [Queue, Arn] }
          SUB: !Sub "${Queue.Arn}/x/${AWS::Region}/${Stage}"
      Events:
        Get: { Type: HttpApi, Properties: { Method: get, Path: /a } }
"#;

    fn resolved(name: &str) -> Result<String, TemplateError> {
        let template = Template::parse(TEMPLATE)?;
        let function = template.function("Fn")?;
        let mut resolver = Resolver::new(&template, "eu-west-1", "111122223333", "tally");
        resolver.insert(
            "Queue",
            LocalResource {
                reference: "http://q".to_owned(),
                attributes: BTreeMap::from([("Arn".to_owned(), "arn:q".to_owned())]),
            },
        );
        resolver.resolve_text(&function.environment[name])
    }

    #[test]
    fn intrinsics_resolve_in_short_and_long_form() {
        assert_eq!(resolved("URL").unwrap(), "http://q");
        assert_eq!(resolved("ARN").unwrap(), "arn:q");
        assert_eq!(resolved("SUB").unwrap(), "arn:q/x/eu-west-1/dev");
        assert_eq!(resolved("SHARED").unwrap(), "dev", "a parameter's default");
    }

    #[test]
    fn a_function_has_its_globals_beneath_its_own_properties() {
        let function = Template::parse(TEMPLATE).unwrap().function("Fn").unwrap();
        assert_eq!(function.timeout_secs, 30);
        assert_eq!(function.binary, "fn");
        assert!(function.environment.contains_key("SHARED"));
        assert_eq!(
            function.events,
            vec![Event::Http {
                method: "GET".to_owned(),
                path: "/a".to_owned(),
                scopes: vec![]
            }]
        );
    }

    #[test]
    fn what_cannot_be_resolved_is_an_error_naming_it() {
        let template = Template::parse(TEMPLATE).unwrap();
        let resolver = Resolver::new(&template, "eu-west-1", "111122223333", "tally");
        let unknown = resolver.resolve_text(&Value::Tagged(Box::new(
            serde_yaml_ng::value::TaggedValue {
                tag: serde_yaml_ng::value::Tag::new("Ref"),
                value: Value::String("Missing".to_owned()),
            },
        )));
        assert!(unknown.unwrap_err().to_string().contains("Missing"));
    }
}
