#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let api = like::LikeApi::from_env().await?;
    lambda_http::run(like::router(api)).await
}
