// mimalloc: fewer CPU cycles per request than the system allocator (BENCHMARKS.md, "CPU per like").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// One invocation at a time, mostly waiting on DynamoDB and SQS: a single-threaded
// runtime spends no CPU handing work between threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let api = like::LikeApi::from_env().await?;
    lambda_http::run(like::router(api)).await
}
