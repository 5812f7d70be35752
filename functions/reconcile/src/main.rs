use lambda_runtime::{LambdaEvent, service_fn};

// One invocation at a time, mostly waiting on DynamoDB and SQS: a single-threaded
// runtime spends no CPU handing work between threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let reconciler = reconcile::Reconciler::from_env().await?;
    let reconciler = &reconciler;
    // The schedule's payload carries nothing reconcile needs; the clock is now.
    lambda_runtime::run(service_fn(
        move |_: LambdaEvent<serde_json::Value>| async move {
            reconciler.run(time::OffsetDateTime::now_utc()).await
        },
    ))
    .await
}
