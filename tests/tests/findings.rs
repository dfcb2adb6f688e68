//! Findings against real processes: a deadlock formed before goscope attached is reported with
//! its chain, and the healthy parts of the demo service (an idle worker pool, a ticker) are not.
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use goscope_tests::{GoFixture, Goscope, Variant, require_bpf};
use serde_json::Value;

fn is_deadlock(v: &Value) -> bool {
    v["kind"] == "finding" && v["type"] == "deadlock"
}

fn goids(finding: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = finding["goroutines"].as_array().into_iter().flatten().filter_map(|g| g["goid"].as_u64()).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn deadlock_formed_before_attach_is_reported_with_its_chain() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let fixture = GoFixture::build("deadlocked", None, Variant::Plain)?;
    let mut target = fixture.spawn(&[])?;
    let info = target.expect_json("deadlocked", Duration::from_secs(30))?;
    let stuck = info["deadlocked"].as_array().context("fixture report")?;
    let mut expected: Vec<u64> = stuck.iter().filter_map(|g| g["goid"].as_u64()).collect();
    expected.sort_unstable();

    let mut goscope = Goscope::attach(target.pid(), &["--block-threshold", "1s", "--no-events"])?;
    goscope.wait_attached(Duration::from_secs(60))?;
    let lines = goscope.events_until(is_deadlock, Duration::from_secs(30))?;
    let finding = lines.last().context("a deadlock finding")?;
    ensure!(goids(finding) == expected, "deadlock goroutines {:?}, fixture says {expected:?}: {finding}", goids(finding));
    let mut chain: Vec<u64> = finding["chain"].as_array().context("chain")?.iter().filter_map(Value::as_u64).collect();
    ensure!(chain.len() == 2, "chain {chain:?}");
    chain.sort_unstable();
    ensure!(chain == expected, "chain {chain:?} vs {expected:?}");
    ensure!(finding["grade"] == "suspect", "{finding}");
    for g in finding["goroutines"].as_array().context("goroutines")? {
        let fx = stuck.iter().find(|s| s["goid"] == g["goid"]).context("fixture goroutine")?;
        ensure!(g["wait_reason"] == "chan send", "{g}");
        ensure!(g["channel"] == fx["channel"], "channel {} but the fixture printed {}", g["channel"], fx["channel"]);
        let stack = g["stack"].as_array().context("stack")?;
        ensure!(
            stack.iter().any(|f| f["file"].as_str().is_some_and(|p| p.ends_with("deadlocked/main.go"))),
            "park stack without the fixture's own frame: {g}"
        );
    }
    goscope.stop(Duration::from_secs(30))?;
    Ok(())
}

#[test]
fn demo_reports_its_deadlock_and_nothing_about_its_idle_pool() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let fixture = GoFixture::build("demo", None, Variant::Plain)?;
    let mut target = fixture.spawn(&[])?;
    let mut goscope = Goscope::attach(target.pid(), &["--block-threshold", "2s", "--no-events"])?;
    goscope.wait_attached(Duration::from_secs(60))?;
    // Past the threshold plus the confirmation re-check, with the pool idle between jobs.
    std::thread::sleep(Duration::from_secs(8));
    goscope.stop(Duration::from_secs(30))?;
    let deadlocks: Vec<&Value> = goscope.events().iter().filter(|v| is_deadlock(v)).collect();
    ensure!(deadlocks.len() == 1, "expected the demo's one deadlocked pair, got {deadlocks:?}");
    for g in deadlocks[0]["goroutines"].as_array().context("goroutines")? {
        ensure!(g["wait_reason"] == "chan send", "the pool's idle receivers are not deadlocked: {g}");
    }
    target.kill();
    Ok(())
}

#[test]
fn fail_on_deadlock_exits_3_at_the_first_deadlock_and_0_without_one() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let fixture = GoFixture::build("deadlocked", None, Variant::Plain)?;
    let mut target = fixture.spawn(&[])?;
    target.expect_json("deadlocked", Duration::from_secs(30))?;
    let pid = target.pid().to_string();
    let args = ["attach", "--pid", &pid, "--format", "json", "--no-events", "--block-threshold", "1s", "--fail-on", "deadlock"];
    let out = goscope_tests::run_goscope(&args, Duration::from_secs(60))?;
    ensure!(out.status.code() == Some(3), "exit {:?}, stderr {}", out.status, out.stderr);
    ensure!(out.stderr.contains("--fail-on deadlock"), "{}", out.stderr);
    ensure!(
        out.stdout.iter().any(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| is_deadlock(&v))),
        "no deadlock finding printed before exiting: {:?}",
        out.stdout
    );
    target.kill();

    // A process with no deadlock: the session ends normally.
    let healthy = GoFixture::build("chanrecv10", None, Variant::Plain)?;
    let target = healthy.spawn(&[])?;
    let pid = target.pid().to_string();
    let args = ["attach", "--pid", &pid, "--no-events", "--block-threshold", "1s", "--duration", "4s", "--fail-on", "deadlock"];
    let out = goscope_tests::run_goscope(&args, Duration::from_secs(60))?;
    ensure!(out.status.success(), "exit {:?}, stderr {}", out.status, out.stderr);
    Ok(())
}
