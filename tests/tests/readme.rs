//! What the README states that no walkthrough runs: the limits it lists are
//! the ones the code enforces. (The walkthroughs themselves run in
//! `make test-readme`, scripts/readme-check.py.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use shared::domain::points::{MAX_AMOUNT, MAX_DESCRIPTION_CHARS};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap()
}

/// 1000000000 as the README writes it: 1,000,000,000.
fn with_commas(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn the_readme_states_the_limits_the_code_enforces() {
    let readme = readme();
    for limit in [
        format!("amounts: integers from 1 to {}", with_commas(MAX_AMOUNT)),
        format!("descriptions and reasons: at most {MAX_DESCRIPTION_CHARS} characters"),
        "1–128 of `[A-Za-z0-9._:-]`".to_owned(),
    ] {
        assert!(readme.contains(&limit), "README lacks: {limit}");
    }
    assert_eq!(with_commas(1_000_000_000), "1,000,000,000");
}

#[test]
fn every_walkthrough_block_is_one_the_readme_check_runs() {
    // A ```sh block in the walkthrough sections without the marker would go
    // unchecked: each of these sections has exactly its marked blocks.
    let readme = readme();
    let marked = readme.matches("<!-- readme: run -->\n```sh").count();
    assert_eq!(
        marked, 6,
        "Try it, Points, Points for checkout, Events, Reconcile, Points insight"
    );
}
