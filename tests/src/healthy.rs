//! The healthy programs (`tests/fixtures/go/healthy/`, one mode per process): long-parked
//! goroutines that something will still wake. goscope must make no leak or deadlock finding about
//! them; `blocked` findings are expected (they are idle-time metrics, not defects).
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde_json::Value;

use crate::WatchMode;
use crate::fixture::{GoFixture, Variant};
use crate::goker::is_leak_or_deadlock;
use crate::goscope::{Goscope, kind};

/// Every mode of the fixture.
pub const MODES: [&str; 10] =
    ["pool", "pipeline", "ticker", "http", "cond", "mutex", "waitgroup", "context", "signal", "selectnone"];

/// What goscope said about one healthy program.
#[derive(Debug)]
pub struct HealthyRun {
    pub mode: &'static str,
    /// Leak and deadlock findings: each one is a false finding.
    pub false_findings: Vec<Value>,
    /// `blocked` findings (expected).
    pub blocked: usize,
}

/// Runs every mode at once, each watched by its own `goscope` (binary `goscope`) with
/// `--block-threshold threshold` for `watch`; results in [`MODES`] order.
pub fn watch_all(goscope: &Path, watch: Duration, threshold: Duration) -> Vec<Result<HealthyRun>> {
    watch_all_in(WatchMode::Probes, goscope, watch, threshold)
}

/// [`watch_all`] with goscope watching in `how`.
pub fn watch_all_in(how: WatchMode, goscope: &Path, watch: Duration, threshold: Duration) -> Vec<Result<HealthyRun>> {
    let fixture = match GoFixture::build("healthy", None, Variant::Plain) {
        Ok(f) => f,
        Err(e) => return MODES.iter().map(|_| Err(anyhow!("building the healthy fixture: {e:#}"))).collect(),
    };
    let fixture = &fixture;
    thread::scope(|s| {
        let runs: Vec<_> =
            MODES.iter().map(|&mode| s.spawn(move || watch_one(how, goscope, fixture, mode, watch, threshold))).collect();
        runs.into_iter().map(|r| r.join().unwrap_or_else(|_| Err(anyhow!("watch thread panicked")))).collect()
    })
}

fn watch_one(
    how: WatchMode,
    goscope: &Path,
    fixture: &GoFixture,
    mode: &'static str,
    watch: Duration,
    threshold: Duration,
) -> Result<HealthyRun> {
    // Quiet spells of a third of the watch: long past the threshold, and each ends within it.
    let idle = format!("{}ms", (watch / 3).as_millis());
    let mut program = fixture.spawn(&["-mode", mode, "-idle", &idle])?;
    program.expect_json("ready", Duration::from_secs(30))?;
    let threshold = format!("{}ms", threshold.as_millis());
    let mut agent = Goscope::attach_with(goscope, program.pid(), &how.args(&["--no-events", "--block-threshold", &threshold]))?;
    agent.wait_attached(Duration::from_secs(60))?;
    agent.watch_until(Instant::now() + watch, |_| false)?;
    agent.stop(Duration::from_secs(30))?;
    if !program.is_running() {
        return Err(anyhow!("healthy -mode {mode} exited early; stderr: {}", program.stderr_text()));
    }
    let findings = agent.events().iter().filter(|l| kind(l) == "finding");
    let (false_findings, blocked): (Vec<&Value>, Vec<&Value>) = findings.partition(|l| is_leak_or_deadlock(l));
    Ok(HealthyRun { mode, false_findings: false_findings.into_iter().cloned().collect(), blocked: blocked.len() })
}
