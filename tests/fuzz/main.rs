//! Fuzzing on stable Rust: proptest-driven targets in one binary (`harness = false`).
//!
//! - `admission-bytes`: arbitrary bytes and byte-edited corpus files through the admission path;
//! - `admission-reviews`: structured edits of AdmissionReviews through the admission path;
//! - `plan`: generated worlds through `plan` (see `plan.rs`).
//!
//! `FUZZ_INPUTS` sets the total number of inputs (default 100,000: `make test`); `make fuzz` runs
//! 10,000,000 in the release profile. Every input runs with the peak RSS reset before it
//! (`/proc/self/clear_refs`), and may grow it by at most [`MEMORY_BOUND_KIB`]. A failing input is
//! shrunk, printed, and its seed kept in `proptest-regressions/` (replayed first on every run).

mod admission;
mod memory;
mod plan;
mod worlds;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};
use std::cell::Cell;
use std::fmt::Debug;
use std::time::Instant;

/// The most one input may grow the process's resident memory. The largest generated bodies are
/// ~2 MiB (200,000-character strings, 20,000-element arrays); decoding keeps only what the rules read.
const MEMORY_BOUND_KIB: u64 = 64 * 1024;

fn main() {
    // `cargo test` may pass harness flags; a listing (`--list`) has no tests to show.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let total: u64 = std::env::var("FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(100_000);
    let world = worlds::admission_world();
    let started = Instant::now();
    let results = [
        run(
            "admission-bytes",
            total * 55 / 100,
            "proptest-regressions/fuzz/admission.txt",
            admission::bytes_strategy(),
            |(input, setup)| admission::check(&input, &setup, &world),
        ),
        run(
            "admission-reviews",
            total * 43 / 100,
            "proptest-regressions/fuzz/admission.txt",
            admission::review_strategy(),
            |(input, setup)| admission::check(&input, &setup, &world),
        ),
        run(
            "plan",
            total * 2 / 100,
            "proptest-regressions/fuzz/plan.txt",
            plan::strategy(),
            |scenario| plan::check(&scenario),
        ),
    ];
    let inputs: u64 = results.iter().map(|r| r.inputs).sum();
    let failed = results.iter().filter(|r| !r.passed).count();
    println!(
        "fuzz: {inputs} inputs in {:.1} s, {failed} targets failed, peak RSS {} MiB (bound: +{} MiB per input)",
        started.elapsed().as_secs_f64(),
        memory::highest_kib() / 1024,
        MEMORY_BOUND_KIB / 1024,
    );
    println!("{} passed, {failed} failed", results.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}

struct Outcome {
    inputs: u64,
    passed: bool,
}

fn run<S, F>(name: &str, cases: u64, regressions: &'static str, strategy: S, check: F) -> Outcome
where
    S: Strategy,
    S::Value: Debug,
    F: Fn(S::Value) -> Result<(), TestCaseError>,
{
    let config = Config {
        cases: u32::try_from(cases).unwrap_or(u32::MAX),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let inputs = Cell::new(0u64);
    let started = Instant::now();
    let result = runner.run(&strategy, |value| {
        inputs.set(inputs.get() + 1);
        if inputs.get().is_multiple_of(1_000_000) {
            eprintln!(
                "fuzz: {name}: {} inputs, {:.0} s",
                inputs.get(),
                started.elapsed().as_secs_f64()
            );
        }
        let before = memory::reset_peak();
        let outcome = check(value);
        let grown = memory::peak_since_reset_kib().saturating_sub(before);
        if grown > MEMORY_BOUND_KIB {
            return Err(TestCaseError::fail(format!(
                "resident memory grew by {grown} KiB (bound {MEMORY_BOUND_KIB} KiB)"
            )));
        }
        outcome
    });
    let seconds = started.elapsed().as_secs_f64();
    let passed = match result {
        Ok(()) => true,
        Err(TestError::Fail(why, value)) => {
            eprintln!("fuzz: {name}: FAILED: {why}\nminimal input: {value:#?}");
            false
        }
        Err(TestError::Abort(why)) => {
            eprintln!("fuzz: {name}: aborted: {why}");
            false
        }
    };
    println!(
        "fuzz: {name}: {} inputs in {seconds:.1} s ({:.0}/s), {}",
        inputs.get(),
        inputs.get() as f64 / seconds.max(1e-9),
        if passed { "0 failures" } else { "FAILED" },
    );
    Outcome {
        inputs: inputs.get(),
        passed,
    }
}
