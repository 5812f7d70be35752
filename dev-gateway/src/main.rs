//! `make dev`: the whole of Tally on one machine, against the emulator at
//! `AWS_ENDPOINT_URL`. Serves the HTTP API on `TALLY_DEV_ADDR` (default
//! 127.0.0.1:3000), pumps the queues into the worker and the table's stream
//! into the events function (publishing to the bus `tally`), and runs reconcile every
//! `TALLY_RECONCILE_INTERVAL_SECS` (default 60) until Ctrl-C.
//! `POST /_dev/reconcile` (what `make reconcile` calls) runs it once and
//! answers the report.
//!
//! Everything is created from `template.yaml` (names `{TALLY_STACK_NAME}-{LogicalId}`,
//! default `tally`), each function signing as a role that holds its template
//! policy. `dev-gateway provision` only creates the stack and prints the
//! environment the functions read (for `cargo lambda watch --env-file`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use shared::http::Problem;
use time::OffsetDateTime;

use dev_gateway::{LocalStack, StackOptions};
use tracing_subscriber::EnvFilter;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Pollers per event source mapping on one machine.
const LOCAL_POLLERS: u32 = 2;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        // Colours for a terminal only: a log redirected to a file stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        return Err(
            "AWS_ENDPOINT_URL must point at the local emulator (run `make dev`); \
                    the dev gateway never talks to real AWS"
                .into(),
        );
    }
    let prefix = env_or("TALLY_STACK_NAME", "tally");
    let addr: SocketAddr = env_or("TALLY_DEV_ADDR", "127.0.0.1:3000").parse()?;
    // It trusts X-Dev-User and unchecked bearer tokens: it stays on this
    // machine, in front of the emulator, unless told otherwise.
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    if std::env::var_os("TALLY_DEV_ALLOW_REMOTE").is_none()
        && (!is_loopback_url(&endpoint) || !addr.ip().is_loopback())
    {
        return Err(format!(
            "the dev gateway trusts any caller's identity, so it serves on 127.0.0.1 \
             in front of a local emulator only (AWS_ENDPOINT_URL={endpoint}, \
             TALLY_DEV_ADDR={addr}); set TALLY_DEV_ALLOW_REMOTE=1 to override"
        )
        .into());
    }

    let operator = shared::config::aws(dev_gateway::OPERATOR_TIMEOUTS).await;
    let stack = LocalStack::provision(&operator, &StackOptions::deployed(&prefix)?).await?;
    if std::env::args().nth(1).as_deref() == Some("provision") {
        println!("AWS_ENDPOINT_URL={}", std::env::var("AWS_ENDPOINT_URL")?);
        for (name, value) in stack.environment() {
            println!("{name}={value}");
        }
        return Ok(());
    }
    let worker = stack.worker()?;
    for mapping in stack.mappings(None)? {
        // Lambda starts five pollers and scales up to the mapping's maximum
        // concurrency; one machine runs the first few.
        let pollers = mapping
            .settings()
            .maximum_concurrency
            .unwrap_or(LOCAL_POLLERS)
            .min(LOCAL_POLLERS);
        for _ in 0..pollers {
            tokio::spawn(mapping.clone().run(worker.clone()));
        }
    }

    // Lambda reads each shard with one poller (ParallelizationFactor 1).
    tokio::spawn(stack.stream_mapping()?.run(stack.publisher()?));

    let reconciler = stack.reconciler()?;
    let every = Duration::from_secs(env_or("TALLY_RECONCILE_INTERVAL_SECS", "60").parse()?);
    tokio::spawn(reconcile_every(reconciler.clone(), every));
    let dev_routes = Router::new().route(
        "/_dev/reconcile",
        post(move || {
            let reconciler = reconciler.clone();
            async move {
                match reconciler.run(OffsetDateTime::now_utc()).await {
                    Ok(report) => Json(report).into_response(),
                    Err(err) => Problem::unavailable(&err).into_response(),
                }
            }
        })
        .fallback(|| async {
            Problem::method_not_allowed("POST /_dev/reconcile runs reconcile once").into_response()
        }),
    );

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, table = stack.store.table_name(), "Tally dev gateway listening");
    axum::serve(listener, dev_routes.merge(stack.gateway()?.router()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await?;
    Ok(())
}

/// Whether a URL names this machine (`http://127.0.0.1:…`, `localhost`, `[::1]`).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Plays the EventBridge schedule: one run per interval, the report in the log.
async fn reconcile_every(reconciler: reconcile::Reconciler, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        // A failed run has logged why; the next tick resumes.
        let _ = reconciler.run(OffsetDateTime::now_utc()).await;
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_this_machine_is_a_local_endpoint() {
        for local in [
            "http://127.0.0.1:5000",
            "http://localhost:1",
            "http://[::1]:80/x",
        ] {
            assert!(super::is_loopback_url(local), "{local}");
        }
        for remote in [
            "https://dynamodb.eu-west-1.amazonaws.com",
            "http://10.0.0.5:5000",
            "",
        ] {
            assert!(!super::is_loopback_url(remote), "{remote}");
        }
    }
}
