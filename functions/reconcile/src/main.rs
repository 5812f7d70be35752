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
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        reconciler.handle(event)
    }))
    .await
}
