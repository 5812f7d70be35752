use lambda_runtime::{LambdaEvent, service_fn};

// mimalloc, as the other functions (BENCHMARKS.md, "CPU per like").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// One batch at a time, mostly waiting on EventBridge: a single-threaded runtime.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let publisher = events::Publisher::from_env().await?;
    let publisher = &publisher;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| async move {
        publisher.handle(event).await
    }))
    .await
}
