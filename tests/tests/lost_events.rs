//! Events lost to a full ring buffer never make a finding: after a loss goscope re-reads the
//! goroutines from memory instead of judging a state that missed wake-ups and exits (a goroutine
//! whose exit was lost would otherwise stay "blocked" for good).
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use goscope_tests::goscope::kind;
use goscope_tests::{GoFixture, Goscope, Variant, require_bpf};
use serde_json::Value;

mod lost_events_resync_from_memory_and_make_no_finding {
    /// Every probe stays attached (no budget governor): the probes' losses alone.
    #[test]
    fn every_probe() -> anyhow::Result<()> {
        super::flood("off")
    }

    /// The default for findings only: the governor also detaches the probes during the flood.
    #[test]
    fn governed() -> anyhow::Result<()> {
        super::flood("1")
    }
}

/// A flood under `--overhead-budget budget`.
fn flood(budget: &str) -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let fixture = GoFixture::build("flood", None, Variant::Plain)?;
    let mut target = fixture.spawn(&["-duration", "3s"])?;
    target.expect_json("pid", Duration::from_secs(20))?;
    // One page of ring buffer: a flood of parks, wake-ups and exits overflows it at once.
    let args = ["--no-events", "--ring-buffer-size", "4096", "--block-threshold", "1s", "--overhead-budget", budget];
    let mut gs = Goscope::attach(target.pid(), &args)?;
    gs.wait_attached(Duration::from_secs(90))?;
    if budget != "off" {
        // Governed, the session starts in scan mode: the flood must meet the probes.
        let up = gs.events_until(|l| kind(l) == "mode", Duration::from_secs(30))?;
        let up = up.last().context("a mode line")?;
        ensure!(up.get("mode").and_then(Value::as_str) == Some("probes"), "the idle flood fixture gets its probes: {up}");
    }
    target.send_line("go")?;
    let flooded = target.expect_json("flooded", Duration::from_secs(60))?;
    // Quiet now: anything still "blocked" after the threshold and its confirmation is a ghost.
    std::thread::sleep(Duration::from_secs(4));
    let stop = gs.stop(Duration::from_secs(30))?;
    ensure!(stop.status.success(), "goscope exited with {}; stderr: {}", stop.status, stop.stderr);
    let lines = gs.events();
    let summary = lines.iter().rfind(|l| kind(l) == "summary").context("no summary line")?;
    let count = |key: &str| summary.get(key).and_then(Value::as_u64).unwrap_or(0);
    ensure!(count("lost") + count("dropped") > 0, "a one-page ring buffer lost nothing ({flooded}): {summary}");
    let resynced = lines.iter().any(|l| {
        kind(l) == "warning" && l.get("message").and_then(Value::as_str).is_some_and(|m| m.contains("re-reads the goroutines"))
    });
    // Governed, the flood may instead send it to scan mode at once: the lost events then belong to
    // probes that are gone, and the scans are memory's view already.
    let to_scan = lines.iter().any(|l| kind(l) == "mode" && l.get("mode").and_then(Value::as_str) == Some("scan"));
    ensure!(
        resynced || (budget != "off" && to_scan),
        "no resync warning (nor, governed, a step down to scan mode) after {} lost events",
        count("lost")
    );
    let findings: Vec<&Value> = lines.iter().filter(|l| kind(l) == "finding").collect();
    ensure!(findings.is_empty(), "findings on a process with nothing blocked, after lost events: {findings:#?}");
    Ok(())
}
