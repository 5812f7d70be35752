//! The dev gateway plays the event source mapping with the figures in
//! `shared::queue::mapping`; `template.yaml` must deploy the same ones.

use shared::queue::mapping;

fn template() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap()
}

#[test]
fn the_template_deploys_the_event_source_mapping_the_dev_gateway_plays() {
    let template = template();
    for expected in [
        format!("BatchSize: {}", mapping::BATCH_SIZE),
        format!("BatchSize: {}", mapping::POINTS_BATCH_SIZE),
        format!(
            "MaximumBatchingWindowInSeconds: {}",
            mapping::BATCHING_WINDOW.as_secs()
        ),
        format!(
            "VisibilityTimeout: {}",
            mapping::VISIBILITY_TIMEOUT.as_secs()
        ),
        format!("maxReceiveCount: {}", mapping::MAX_RECEIVE_COUNT),
        format!("MaximumConcurrency: {}", mapping::MAX_CONCURRENCY),
        format!("Timeout: {}", mapping::WORKER_TIMEOUT.as_secs()),
        "FunctionResponseTypes: [ReportBatchItemFailures]".to_owned(),
    ] {
        assert!(
            template.contains(&expected),
            "template.yaml lacks `{expected}`"
        );
    }
    assert!(mapping::VISIBILITY_TIMEOUT >= mapping::WORKER_TIMEOUT * 6);
}

#[test]
fn the_template_sets_every_environment_variable_the_functions_read() {
    let template = template();
    for name in [
        shared::config::TABLE_NAME,
        shared::config::LIKES_QUEUE_URL,
        shared::config::POINTS_QUEUE_URL,
        shared::config::POINTS_DEAD_LETTER_QUEUE_URL,
    ] {
        assert!(template.contains(name), "template.yaml does not set {name}");
    }
}
