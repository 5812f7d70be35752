#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let api = points::PointsApi::from_env().await?;
    lambda_http::run(points::router(api)).await
}
