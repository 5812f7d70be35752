//! `make simulate`: seeds of the fault simulator against the emulator.
//!
//! ```text
//! simulate [--seed S | --first S --seeds K] [--ops N] [--min-faults M] [--first-failure]
//! ```
//! Prints, per seed, the operations, faults by kind, invariants checked and PASS,
//! or the first broken invariant with the steps that led to it, a shorter run
//! that still fails, and the command that replays it. `--min-faults M` fails
//! the whole run unless every fault kind was injected at least M times;
//! `--first-failure` stops at the first failing seed, without shrinking it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::collections::BTreeMap;
use std::time::Instant;

use tests::simulation;

struct Args {
    first: u64,
    seeds: u64,
    ops: usize,
    min_faults: u64,
    first_failure: bool,
}

fn args() -> Args {
    let mut args = Args {
        first: 1,
        seeds: 3,
        ops: 300,
        min_faults: 0,
        first_failure: false,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let mut value = || given.next().and_then(|v| v.parse::<u64>().ok());
        match flag.as_str() {
            "--seed" => {
                args.first = value().expect("--seed takes a number");
                args.seeds = 1;
            }
            "--first" => args.first = value().expect("--first takes a number"),
            "--seeds" => args.seeds = value().expect("--seeds takes a number"),
            "--ops" => args.ops = value().expect("--ops takes a number") as usize,
            "--min-faults" => args.min_faults = value().expect("--min-faults takes a number"),
            "--first-failure" => args.first_failure = true,
            other => panic!("unknown argument {other}; see the module docs"),
        }
    }
    args
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = args();
    let started = Instant::now();
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    let (mut failed, mut checks, mut ops) = (0, 0, 0);
    for seed in args.first..args.first + args.seeds {
        let began = Instant::now();
        let outcome = simulation::run(seed, args.ops).await;
        for (kind, count) in &outcome.faults {
            *totals.entry(kind).or_default() += count;
        }
        checks += outcome.checks;
        ops += outcome.ops;
        let faults: Vec<String> = outcome
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        match &outcome.failure {
            None => println!(
                "seed {seed}: {} ops, {} steps, {} checks, faults: {}; entries: {} — PASS ({:.0} s: steps {:.0}, settle {:.0}, audit {:.0})",
                outcome.ops,
                outcome.steps,
                outcome.checks,
                faults.join(", "),
                outcome
                    .entries
                    .iter()
                    .map(|(kind, n)| format!("{kind} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                began.elapsed().as_secs_f64(),
                outcome.seconds[0],
                outcome.seconds[1],
                outcome.seconds[2],
            ),
            Some(failure) => {
                failed += 1;
                println!(
                    "seed {seed}: {} ops, faults: {} — FAIL: {failure}",
                    outcome.ops,
                    faults.join(", ")
                );
                let log = format!(".tally/simulate-seed-{seed}.log");
                let _ = std::fs::create_dir_all(".tally");
                let _ = std::fs::write(&log, outcome.history.join("\n") + "\n");
                println!(
                    "  the last steps that led to it (all {} in {log}):",
                    outcome.history.len()
                );
                for line in outcome.history.iter().rev().take(40).rev() {
                    println!("    {line}");
                }
                if args.first_failure {
                    println!("  replay: make simulate SEED={seed} OPS={}", args.ops);
                    break;
                }
                let shortest = shrink(seed, args.ops).await;
                println!("  shortest failing run found: {shortest} ops");
                println!("  replay: make simulate SEED={seed} OPS={shortest}");
            }
        }
    }
    println!(
        "{} seeds, {ops} operations, {checks} invariant checks, {failed} failed, {:.0} s",
        args.seeds,
        started.elapsed().as_secs_f64()
    );
    let kinds: Vec<String> = totals.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("faults injected: {}", kinds.join(", "));
    let short: Vec<&&str> = simulation::FAULT_KINDS
        .iter()
        .filter(|kind| totals.get(**kind).copied().unwrap_or(0) < args.min_faults)
        .collect();
    if !short.is_empty() {
        println!("fewer than {} of: {short:?}", args.min_faults);
        return std::process::ExitCode::FAILURE;
    }
    if failed > 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// A seed replays the same schedule, so a shorter run is a prefix of it: halve
/// the operations while the seed still fails.
async fn shrink(seed: u64, ops: usize) -> usize {
    let mut shortest = ops;
    let mut next = ops / 2;
    while next >= 1 {
        if simulation::run(seed, next).await.failure.is_none() {
            break;
        }
        shortest = next;
        next /= 2;
    }
    shortest
}
