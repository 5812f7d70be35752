use lambda_runtime::{LambdaEvent, service_fn};

// mimalloc: fewer CPU cycles per request than the system allocator (BENCHMARKS.md, "CPU per like").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// One invocation at a time, mostly waiting on DynamoDB and SQS: a single-threaded
// runtime spends no CPU handing work between threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let reconciler = reconcile::Reconciler::from_env().await?;
    let reconciler = &reconciler;
    // The schedule's payload carries nothing reconcile needs; the clock is now.
    // An operator's `{"migrate_like_registers": true}` runs the layout migration
    // instead (README "Upgrading").
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            let migrate =
                event.payload.get("migrate_like_registers") == Some(&serde_json::Value::Bool(true));
            if migrate {
                let report = reconciler.migrate_like_registers().await?;
                Ok::<_, lambda_runtime::Error>(serde_json::to_value(report)?)
            } else {
                let report = reconciler.run(time::OffsetDateTime::now_utc()).await?;
                Ok(serde_json::to_value(report)?)
            }
        },
    ))
    .await
}
