//! Metrics in CloudWatch Embedded Metric Format: one JSON log line that
//! CloudWatch turns into metrics, with no agent and no extra call.

use serde_json::{Map, Value, json};

/// The namespace of every Tally metric.
pub const NAMESPACE: &str = "Tally";

/// One EMF line with the given dimensions (name, value) and count metrics.
pub fn emf_line(
    dimensions: &[(&str, &str)],
    counts: &[(&str, f64)],
    at: time::OffsetDateTime,
) -> String {
    let mut root = Map::new();
    let metrics: Vec<Value> = counts
        .iter()
        .map(|(name, _)| json!({"Name": name, "Unit": if name.ends_with("Ms") { "Milliseconds" } else { "Count" }}))
        .collect();
    root.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": at.unix_timestamp() * 1000 + i64::from(at.millisecond()),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions.iter().map(|(name, _)| *name).collect::<Vec<_>>()],
                "Metrics": metrics,
            }],
        }),
    );
    for (name, value) in dimensions {
        root.insert((*name).to_owned(), json!(value));
    }
    for (name, value) in counts {
        root.insert((*name).to_owned(), json!(value));
    }
    Value::Object(root).to_string()
}

/// Writes an EMF line to stdout, where Lambda sends it to CloudWatch Logs.
///
/// Outside Lambda (`make dev`, tests, the benchmark) no agent reads stdout, so
/// the line is left out and the text logs stay readable.
pub fn emit(dimensions: &[(&str, &str)], counts: &[(&str, f64)]) {
    if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
        println!(
            "{}",
            emf_line(dimensions, counts, time::OffsetDateTime::now_utc())
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emf_line_declares_each_metric_and_carries_its_value() {
        let line = emf_line(
            &[("Function", "reconcile")],
            &[("CountersRepaired", 2.0), ("DurationMs", 15.0)],
            time::macros::datetime!(2026-11-21 00:00:01 UTC),
        );
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["_aws"]["Timestamp"], 1_795_219_201_000i64);
        let declared = &value["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], "Tally");
        assert_eq!(declared["Dimensions"], json!([["Function"]]));
        assert_eq!(
            declared["Metrics"][1],
            json!({"Name": "DurationMs", "Unit": "Milliseconds"})
        );
        assert_eq!(value["Function"], "reconcile");
        assert_eq!(value["CountersRepaired"], 2.0);
    }
}
