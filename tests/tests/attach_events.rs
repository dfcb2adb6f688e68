//! goscope attached to real Go programs built with the installed Go: the exact event stream of
//! the chanrecv10 scenario, and how an attach session ends (--duration, SIGTERM, target exit).
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use goscope_tests::goscope::kind;
use goscope_tests::scenario::run_chanrecv10;
use goscope_tests::{GoFixture, Goscope, Stopped, Variant, require_bpf};
use serde_json::Value;

/// Ten workers created by main, parked on one channel, readied by main's close, exited: every
/// field of the 40 events (see tests/fixtures/go/chanrecv10/main.go for the exact expectations).
#[test]
fn chanrecv10_exact_events() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let fixture = GoFixture::build("chanrecv10", None, Variant::Plain)?;
    let run = run_chanrecv10(&fixture)?;
    eprintln!(
        "{}: {} lines, attached in {:.2}s, scenario {:.2}s",
        fixture.label(),
        run.events.len(),
        run.attach_time.as_secs_f64(),
        run.total_time.as_secs_f64()
    );
    Ok(())
}

/// Starts the deadlocked fixture (a quiet process: two goroutines stuck forever, a ticker) and
/// attaches goscope to it with `extra_args`.
fn attach_to_deadlocked(extra_args: &[&str]) -> Result<(goscope_tests::ChildGuard, Goscope)> {
    let fixture = GoFixture::build("deadlocked", None, Variant::Plain)?;
    let mut target = fixture.spawn(&[])?;
    target.expect_json("deadlocked", Duration::from_secs(20))?;
    let mut gs = Goscope::attach(target.pid(), extra_args)?;
    gs.wait_attached(Duration::from_secs(90))?;
    Ok((target, gs))
}

/// A clean end: exit 0, a single `summary` as the last line with events = the goroutine events
/// printed.
fn check_clean_end(how: &str, stop: &Stopped, lines: &[Value]) -> Result<()> {
    ensure!(stop.status.success(), "{how}: goscope exited with {}, expected 0; stderr: {}", stop.status, stop.stderr.trim());
    let Some(last) = lines.last().filter(|l| kind(l) == "summary") else {
        bail!("{how}: expected a `summary` last line, observed {:?}", lines.last());
    };
    let printed = lines.iter().filter(|l| ["created", "parked", "ready", "exited"].contains(&kind(l))).count();
    ensure!(
        last.get("events").and_then(Value::as_u64) == Some(printed as u64),
        "{how}: summary {last} but goscope printed {printed} goroutine events"
    );
    ensure!(!stop.stderr.contains("panicked"), "{how}: goscope panicked: {}", stop.stderr);
    Ok(())
}

#[test]
fn duration_ends_the_session() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let (_target, mut gs) = attach_to_deadlocked(&["--duration", "2s"])?;
    let start = Instant::now();
    let stop = gs.wait_end(Duration::from_secs(30))?;
    let took = start.elapsed();
    check_clean_end("--duration 2s", &stop, gs.events())?;
    ensure!(took < Duration::from_secs(15), "--duration 2s: goscope took {took:?} after attaching to end");
    Ok(())
}

#[test]
fn sigterm_ends_the_session() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let (_target, mut gs) = attach_to_deadlocked(&[])?;
    std::thread::sleep(Duration::from_millis(300));
    let stop = gs.stop_with(libc::SIGTERM, Duration::from_secs(15))?;
    check_clean_end("SIGTERM", &stop, gs.events())
}

#[test]
fn sigint_ends_the_session() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let (_target, mut gs) = attach_to_deadlocked(&[])?;
    std::thread::sleep(Duration::from_millis(300));
    let stop = gs.stop(Duration::from_secs(15))?;
    check_clean_end("SIGINT", &stop, gs.events())
}

/// The README's summary has `target_exited`: goscope notices its target is gone and ends by itself.
#[test]
fn target_exit_ends_the_session() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let (mut target, mut gs) = attach_to_deadlocked(&[])?;
    target.close_stdin(); // the fixture exits 0 on stdin EOF
    ensure!(
        target.wait_exit(Duration::from_secs(10))?.is_some_and(|s| s.success()),
        "the deadlocked fixture did not exit 0 on stdin EOF"
    );
    let stop = gs.wait_end(Duration::from_secs(20))?;
    check_clean_end("target exit", &stop, gs.events())?;
    let summary = gs.events().last().expect("checked above");
    ensure!(
        summary.get("target_exited") == Some(&Value::Bool(true)),
        "target exit: expected \"target_exited\":true in {summary}"
    );
    Ok(())
}

/// A layout that is wrong for the target (here a test knob breaks the `g.goid` offset the probes
/// get) makes the probes' reads fail: each failure is counted per probe, the first one of a probe
/// is a `warning` line naming it, the summary has the counts, and the probes' own log (aya-log)
/// reaches goscope's stderr. The target is unharmed.
#[test]
fn failed_probe_reads_are_counted_and_reported() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let fixture = GoFixture::build("deadlocked", None, Variant::Plain)?;
    let mut target = fixture.spawn(&[])?;
    target.expect_json("deadlocked", Duration::from_secs(20))?;
    let mut gs = Goscope::attach_as(&["env", "GOSCOPE_TEST_BREAK_PROBE_READS=1"], target.pid(), &["--duration", "3s"])?;
    let stop = gs.wait_end(Duration::from_secs(90))?;
    let lines = gs.events();
    let warnings: Vec<&str> = lines.iter().filter(|l| kind(l) == "warning").filter_map(|l| l["message"].as_str()).collect();
    // The ticker's goroutine parks and is readied every 50 ms: both probes fail.
    for probe in ["goroutine_parked", "goroutine_ready"] {
        let named = warnings.iter().filter(|w| w.starts_with(&format!("probe {probe}: "))).count();
        ensure!(named == 1, "{named} warnings name {probe} (one expected): {warnings:?}");
    }
    let Some(summary) = lines.last().filter(|l| kind(l) == "summary") else {
        bail!("no summary last: {:?}", lines.last());
    };
    let failures = |probe: &str| summary["read_failures"][probe].as_u64().unwrap_or(0);
    ensure!(failures("goroutine_parked") >= 10 && failures("goroutine_ready") >= 10, "summary {summary}");
    ensure!(summary["events"].as_u64() == Some(0), "events got through a broken offset: {summary}");
    ensure!(stop.stderr.contains("goroutine_parked: reading the target's memory failed"), "stderr: {}", stop.stderr);
    ensure!(target.is_running(), "the target died");
    Ok(())
}

/// Once its last process exited, an executable may be truncated in place (`cp new old` does)
/// while goscope still reads it to end the session: goscope must end as cleanly as ever, with
/// a warning when its reads found the file gone. `--state-every` (below the 500 ms tick) makes
/// every tick symbolize each goroutine's start function, so the tick that notices the exit reads
/// the truncated file.
#[test]
fn executable_truncated_after_the_target_exits_ends_the_session_cleanly() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let fixture = GoFixture::build("deadlocked", None, Variant::Plain)?;
    let dir = std::env::temp_dir().join(format!("goscope-truncated-exe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let exe = dir.join("deadlocked");
    std::fs::copy(&fixture.path, &exe)?;
    let mut target = goscope_tests::ChildGuard::spawn("deadlocked (a copy)", std::process::Command::new(&exe))?;
    target.expect_json("deadlocked", Duration::from_secs(20))?;
    let mut gs = Goscope::attach(target.pid(), &["--state-every", "100ms"])?;
    gs.wait_attached(Duration::from_secs(90))?;
    // Once goscope knows the fixture's goroutines (from its snapshot), each state line
    // symbolizes their start functions.
    gs.events_until(|l| kind(l) == "state" && l["goroutines"].as_u64().is_some_and(|n| n > 0), Duration::from_secs(30))?;
    target.close_stdin(); // the fixture exits 0 on stdin EOF
    ensure!(target.wait_exit(Duration::from_secs(10))?.is_some_and(|s| s.success()), "the fixture did not exit 0");
    // In place: the inode goscope mapped loses its pages.
    std::fs::File::create(&exe)?;
    let truncated_ns = monotonic_ns();
    let stop = gs.wait_end(Duration::from_secs(20))?;
    std::fs::remove_dir_all(&dir)?;
    check_clean_end("executable truncated", &stop, gs.events())?;
    let states_after: Vec<&Value> =
        gs.events().iter().filter(|l| kind(l) == "state" && l["ts_ns"].as_u64().is_some_and(|t| t > truncated_ns)).collect();
    let warned =
        gs.events().iter().any(|l| kind(l) == "warning" && l["message"].as_str().is_some_and(|m| m.contains("truncated")));
    eprintln!("state lines after the truncation: {}; truncation warning: {warned}", states_after.len());
    // A state line made after the truncation read the file: its reads found the pages gone.
    ensure!(states_after.is_empty() || warned, "state lines after the truncation but no warning: {states_after:?}");
    Ok(())
}

/// CLOCK_MONOTONIC in ns, the clock of goscope's `ts_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
