//! `make bench`: what Tally costs per operation and how fast it goes against
//! the emulator, measured in one run. Prints a table and writes it as JSON.
//!
//! ```text
//! bench [--scale 0.2] [--json bench-results.json] [--arm64-dir target/lambda]
//!       [--skip-functions] [--only hot|mixed|points|expiry|checkout|leaderboard|toggling|reads|events|naive|functions]
//! ```
//! Needs the emulator at `AWS_ENDPOINT_URL` (`make bench` starts one) and, for
//! the function figures, the release binaries beside this one (`make bench` builds them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

mod cost;
mod functions;
mod harness;
mod limits;
mod naive;
mod published;
mod reads;
mod scenarios;

use std::path::PathBuf;

use serde::Serialize;

#[derive(Serialize)]
struct Results {
    command: String,
    machine: Machine,
    scale: f64,
    limits: Vec<limits::Limits>,
    rows: Vec<scenarios::Row>,
    hot_post: Option<scenarios::HotPost>,
    read_storm: Option<reads::ReadStorm>,
    likers_page: Option<reads::LikersPageCost>,
    events: Option<published::EventsResult>,
    /// Mean messages per worker invocation while the mixed feed's backlog drained.
    backlogged_batch: Option<f64>,
    functions: Vec<functions::Function>,
    /// The naive designs, measured in the same run.
    naive: Vec<naive::NaiveRow>,
    /// Dollars per million operations: Tally's rows, then the naive designs'.
    costs: Vec<cost::Cost>,
    /// Tally's CPU per like ÷ the SDK's own CPU for the requests a like needs.
    cpu_to_sdk_floor: Vec<CpuToFloor>,
}

#[derive(Serialize)]
struct CpuToFloor {
    scenario: &'static str,
    cpu_us_per_like: f64,
    sdk_floor_us: f64,
    ratio: f64,
}

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    memory_gib: f64,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let mem_kb: f64 = field(&meminfo, "MemTotal")
        .trim_end_matches(" kB")
        .parse()
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: field(&cpuinfo, "model name"),
        memory_gib: (mem_kb / 1_048_576.0 * 10.0).round() / 10.0,
    }
}

struct Args {
    scale: f64,
    json: PathBuf,
    arm64_dir: Option<PathBuf>,
    skip_functions: bool,
    /// Run one part only: hot, mixed, points, expiry, checkout, toggling, reads, events, naive or functions.
    only: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        scale: 0.2,
        json: PathBuf::from("bench-results.json"),
        arm64_dir: None,
        skip_functions: false,
        only: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        match flag.as_str() {
            "--scale" => {
                args.scale = given
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--scale takes a number")
            }
            "--json" => args.json = given.next().expect("--json takes a path").into(),
            "--arm64-dir" => {
                args.arm64_dir = Some(given.next().expect("--arm64-dir takes a path").into())
            }
            "--skip-functions" => args.skip_functions = true,
            "--only" => args.only = Some(given.next().expect(
                "--only takes hot, mixed, points, expiry, checkout, leaderboard, toggling, reads, events, naive or functions",
            )),
            other => panic!("unknown argument {other}; see the module docs"),
        }
    }
    args
}

// The functions' allocator (BENCHMARKS.md, "CPU per like"), so the functions
// measured in this process allocate as they do deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let args = args();
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL must name the emulator: run `make bench`");
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        // The emulator's operator, whose keys `scripts/emulator.sh` exports:
        // the emulator checks IAM on every request.
        .load()
        .await;
    // Raw-rate samples: enough for a second or more of each request kind at any scale.
    let raw_requests = 400;
    let wanted = |name: &str| args.only.as_deref().is_none_or(|only| only == name);
    let mut rows = Vec::new();
    let mut all_limits = Vec::new();
    let mut hot_post = None;
    let mut backlogged_batch = None;
    if wanted("hot") {
        eprintln!("bench: hot post");
        let (row, result, limits) = scenarios::hot_post(&aws, args.scale, raw_requests).await;
        rows.push(row);
        hot_post = Some(result);
        all_limits.push(limits);
    }
    if wanted("mixed") {
        eprintln!("bench: mixed feed");
        let (mixed, limits, batch) = scenarios::mixed(&aws, args.scale, raw_requests).await;
        rows.extend(mixed);
        all_limits.push(limits);
        backlogged_batch = Some(batch);
    }
    if wanted("points") {
        eprintln!("bench: points");
        let (points, limits) = scenarios::points(&aws, args.scale, raw_requests).await;
        rows.extend(points);
        all_limits.extend(limits);
    }
    if wanted("expiry") {
        eprintln!("bench: expiry");
        rows.push(scenarios::expiry(&aws, args.scale).await);
    }
    if wanted("checkout") {
        eprintln!("bench: checkout");
        rows.extend(scenarios::checkout(&aws, args.scale).await);
    }
    if wanted("leaderboard") {
        eprintln!("bench: leaderboard");
        rows.extend(scenarios::leaderboard(&aws, args.scale).await);
    }
    if wanted("toggling") {
        eprintln!("bench: toggling");
        rows.push(scenarios::toggling(&aws, args.scale).await);
    }
    let (mut read_storm, mut likers_page) = (None, None);
    if wanted("reads") {
        eprintln!("bench: read storm");
        read_storm = Some(reads::read_storm(&aws, args.scale).await);
        eprintln!("bench: likers page on a post with 10,000 likers");
        likers_page = Some(reads::likers_page(&aws, 10_000).await);
    }
    let events = if wanted("events") {
        eprintln!("bench: events");
        Some(published::measure(&aws, args.scale).await)
    } else {
        None
    };
    let naive = if wanted("naive") {
        eprintln!("bench: naive designs");
        naive::measure_all(&aws, args.scale).await
    } else {
        Vec::new()
    };
    let mut costs: Vec<cost::Cost> = rows
        .iter()
        .map(|row| cost::per_million(row.scenario, row.kind, row.into()))
        .collect();
    costs.extend(
        naive
            .iter()
            .map(|n| cost::per_million(&format!("naive: {}", n.design), n.kind, n.per_op())),
    );
    let cpu_to_sdk_floor = cpu_to_floor(&rows, &all_limits);
    let functions = if args.skip_functions || !wanted("functions") {
        Vec::new()
    } else {
        eprintln!("bench: functions (size, init, peak RSS)");
        functions::measure(&aws, args.arm64_dir.clone()).await
    };
    let results = Results {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: machine(),
        scale: args.scale,
        limits: all_limits,
        rows,
        hot_post,
        read_storm,
        likers_page,
        events,
        backlogged_batch,
        functions,
        naive,
        costs,
        cpu_to_sdk_floor,
    };
    print_table(&results);
    if let Some(events) = &results.events {
        published::print(events);
    }
    std::fs::write(
        &args.json,
        serde_json::to_string_pretty(&results).unwrap() + "\n",
    )
    .unwrap();
    eprintln!("bench: wrote {}", args.json.display());
}

/// A like's SDK floor is one SendMessage and one conditional write per
/// delivery (the hot post delivers each twice), measured in the same run.
fn cpu_to_floor(rows: &[scenarios::Row], limits: &[limits::Limits]) -> Vec<CpuToFloor> {
    [
        ("hot post", "like (each delivered twice)", 2.0),
        ("mixed feed", "like/unlike, backlogged", 1.0),
    ]
    .into_iter()
    .filter_map(|(scenario, kind, deliveries)| {
        let row = rows
            .iter()
            .find(|r| r.scenario == scenario && r.kind == kind)?;
        let l = limits.iter().find(|l| l.scenario == scenario)?;
        let floor =
            l.sdk_cpu_us_per_send_message + deliveries * l.sdk_cpu_us_per_conditional_update;
        Some(CpuToFloor {
            scenario,
            cpu_us_per_like: row.cpu_us_per_op,
            sdk_floor_us: floor,
            ratio: row.cpu_us_per_op / floor,
        })
    })
    .collect()
}

/// Tally ÷ naive, per million operations, for the kinds both do.
fn ratios(costs: &[cost::Cost]) -> Vec<(String, f64)> {
    let find = |scenario: &str, kind: &str| {
        costs
            .iter()
            .find(|c| c.scenario == scenario && c.kind == kind)
            .map(|c| c.total)
    };
    [
        (
            "mixed feed",
            "like/unlike",
            "naive: insert + increment",
            "like",
        ),
        (
            "mixed feed",
            "like/unlike",
            "naive: transaction per like",
            "like",
        ),
        (
            "mixed feed",
            "like/unlike, backlogged",
            "naive: insert + increment",
            "like",
        ),
        (
            "mixed feed",
            "like/unlike, backlogged",
            "naive: transaction per like",
            "like",
        ),
        (
            "points",
            "spend",
            "naive: balance + ledger transaction",
            "spend",
        ),
    ]
    .into_iter()
    .filter_map(|(scenario, kind, naive, naive_kind)| {
        let ratio = find(scenario, kind)? / find(naive, naive_kind)?;
        Some((format!("{scenario} {kind} ÷ {naive}"), ratio))
    })
    .collect()
}

fn print_costs(r: &Results) {
    let p = &cost::PRICES;
    println!();
    println!(
        "dollars per million operations (on-demand, {}, prices of {} in bench/src/cost.rs; Lambda arm64 at {} MB, duration = this run's CPU at that memory's vCPU share + {} ms per request waited on)",
        p.region,
        p.date,
        cost::lambda_memory_gb() * 1024.0,
        cost::ASSUMED_REQUEST_MS
    );
    println!(
        "{:<40} {:<28} {:>9} {:>7} {:>7} {:>7} {:>8}",
        "scenario", "kind", "DynamoDB", "SQS", "Lambda", "API GW", "total"
    );
    for c in &r.costs {
        println!(
            "{:<40} {:<28} {:>9.2} {:>7.2} {:>7.2} {:>7.2} {:>8.2}",
            c.scenario, c.kind, c.dynamodb, c.sqs, c.lambda, c.api_gateway, c.total
        );
    }
    for n in &r.naive {
        println!(
            "naive {:<34}: {} ops, {:.2} DynamoDB requests, {:.2} WCU per {}, CPU {:.0} µs, handler {:.2} ms against the emulator",
            n.design,
            n.ops,
            n.dynamodb_requests_per_op,
            n.write_units_per_op,
            n.kind,
            n.cpu_us_per_op,
            n.handler_mean_ms
        );
    }
    for (what, ratio) in ratios(&r.costs) {
        println!("cost ratio {what}: {ratio:.2}");
    }
    for c in &r.cpu_to_sdk_floor {
        println!(
            "CPU per like, {}: {:.0} µs = {:.2} × the SDK floor ({:.0} µs: SendMessage + conditional write per delivery)",
            c.scenario, c.cpu_us_per_like, c.ratio, c.sdk_floor_us
        );
    }
}

fn print_table(r: &Results) {
    for l in &r.limits {
        println!(
            "emulator after {:<10}: SendMessage {:.0}/s, conditional UpdateItem {:.0}/s, 3-item transaction {:.0}/s, 20-key BatchGetItem {:.0}/s (32 in flight); SDK CPU per request: SendMessage {:.0} µs, UpdateItem {:.0} µs, transaction {:.0} µs",
            l.scenario,
            l.send_message_per_s,
            l.conditional_update_per_s,
            l.transaction_3_items_per_s,
            l.batch_get_20_per_s,
            l.sdk_cpu_us_per_send_message,
            l.sdk_cpu_us_per_conditional_update,
            l.sdk_cpu_us_per_transaction
        );
    }
    println!();
    println!(
        "{:<11} {:<28} {:>6} {:>8} {:>8} {:>6} {:>7} {:>6} {:>6} {:>7} {:>8} {:>7} {:>7}",
        "scenario",
        "kind",
        "ops",
        "ops/s",
        "limit",
        "ratio",
        "DDB req",
        "WCU",
        "RCU",
        "SQS req",
        "CPU µs",
        "p50 ms",
        "p99 ms"
    );
    for row in &r.rows {
        println!(
            "{:<11} {:<28} {:>6} {:>8.1} {:>8} {:>6} {:>7.2} {:>6.2} {:>6.2} {:>7.2} {:>8.0} {:>7.2} {:>7.2}",
            row.scenario,
            row.kind,
            row.ops,
            row.ops_per_s,
            row.limit_ops_per_s
                .map_or("-".to_owned(), |l| format!("{l:.1}")),
            row.ratio_to_limit
                .map_or("-".to_owned(), |r| format!("{:.0}%", r * 100.0)),
            row.dynamodb_requests_per_op,
            row.write_units_per_op,
            row.read_units_per_op,
            row.sqs_requests_per_op,
            row.cpu_us_per_op,
            row.handler_p50_ms,
            row.handler_p99_ms
        );
    }
    if let Some(h) = &r.hot_post {
        println!();
        println!(
            "hot post: {} likes → count {} ({}), {} worker invocations, {:.2} counter writes per invocation, {} failed messages, {} throttled",
            h.likes,
            h.final_count,
            if h.final_count == h.likes {
                "exact"
            } else {
                "NOT EXACT"
            },
            h.worker_invocations,
            h.counter_writes_per_invocation,
            h.failed_messages,
            h.throttled
        );
        println!(
            "hot post register writes per partition key: busiest {:.2}/s, mean {:.2}/s over {} of {} keys (busiest ÷ mean {:.2}); at 50,000 likes/s, each delivered twice, a mean key takes {:.0}/s (limit 1,000; the busiest of a 50,000-user burst: shared::capacity)",
            h.busiest_key_writes_per_s,
            h.mean_key_writes_per_s,
            h.register_keys_used,
            shared::store::keys::LIKE_PARTITIONS,
            h.busiest_to_mean,
            shared::capacity::register_writes_per_key(shared::capacity::HOT_POST_LIKES_PER_SECOND)
        );
    }
    if let Some(s) = &r.read_storm {
        println!();
        println!(
            "read storm: {} count reads of one post in {:.1} s ({:.0}/s) over {} function instances, {} s cache window → {} DynamoDB reads, {:.5} per count read, {:.5} read units per count read",
            s.count_reads,
            s.seconds,
            s.count_reads_per_s,
            s.instances,
            s.cache_window_s,
            s.dynamodb_reads,
            s.dynamodb_reads_per_count_read,
            s.read_units_per_count_read
        );
    }
    if let Some(p) = &r.likers_page {
        println!(
            "likers page ({} per page) of a post with {} likers over {} partitions: first page {} DynamoDB requests, {:.1} read units; later pages {} requests, {:.1} read units (mean of {})",
            p.limit,
            p.likers,
            p.partitions_used,
            p.first_page.requests,
            p.first_page.read_units,
            p.later_page.requests,
            p.later_page.read_units,
            p.pages_read - 1
        );
    }
    if let Some(batch) = r.backlogged_batch {
        println!(
            "mixed feed, backlogged: {batch:.0} messages per worker invocation (batch size {}, window {} s)",
            shared::queue::mapping::BATCH_SIZE,
            shared::queue::mapping::BATCHING_WINDOW.as_secs()
        );
    }
    print_costs(r);
    if !r.functions.is_empty() {
        println!();
        println!(
            "{:<11} {:>12} {:>11} {:>16} {:>14}",
            "function", "x86_64 MB", "arm64 MB", "init ms (med 5)", "peak RSS MB"
        );
        for f in &r.functions {
            println!(
                "{:<11} {:>12.2} {:>11} {:>16.1} {:>14.1}",
                f.name,
                f.size_x86_64_mb,
                f.size_arm64_mb
                    .map_or("n/a".to_owned(), |s| format!("{s:.2}")),
                f.init_ms_median,
                f.peak_rss_mb
            );
        }
    }
}
