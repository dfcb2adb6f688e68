//! Healthy programs (an idle worker pool, a pipeline, tickers, HTTP keep-alive, cond waiters, lock
//! contention, WaitGroups, contexts, signal waiters, `select {}` in main: tests/src/healthy.rs) draw
//! no leak or deadlock finding from goscope, even with a 1s block threshold.
use std::time::Duration;

use anyhow::{Result, ensure};
use goscope_tests::{WatchMode, goscope_bin, healthy, require_bpf};

fn healthy_programs_draw_no_leak_or_deadlock_finding(how: WatchMode) -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let goscope = goscope_bin()?;
    // All modes at once, so the test takes one watch: ~25 s, each mode quiet for a third of it.
    let runs = healthy::watch_all_in(how, &goscope, Duration::from_secs(25), Duration::from_secs(1));
    let mut failures = Vec::new();
    for (mode, run) in healthy::MODES.iter().zip(runs) {
        match run {
            Err(e) => failures.push(format!("{mode}: {e:#}")),
            Ok(run) => {
                eprintln!("healthy -mode {mode}: {} blocked findings, {} leak/deadlock", run.blocked, run.false_findings.len());
                failures.extend(run.false_findings.iter().map(|f| format!("{mode}: false {} [{}]: {f}", f["type"], f["grade"])));
            }
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

goscope_tests::in_each_watch_mode!(healthy_programs_draw_no_leak_or_deadlock_finding);
