//! `goscope run`, the node agent: it attaches to the Go processes it is told to watch, also those
//! that start after it, reports each one's findings under its pid, ignores what it is not told to
//! watch (and what is not Go), and ends a process's session when the process exits.
use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use goscope_tests::{ChildGuard, GoFixture, Goscope, Variant, require_bpf};
use serde_json::Value;

fn pid_of(v: &Value) -> Option<u32> {
    v["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

#[test]
fn run_watches_matching_go_processes_as_they_come_and_go() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let stuckall = GoFixture::build("stuckall", None, Variant::Plain)?;
    let deadlocked = GoFixture::build("deadlocked", None, Variant::Plain)?;
    let ignored = GoFixture::build("chanrecv10", None, Variant::Plain)?;
    // Running before goscope starts: found by the first scan.
    let mut early = stuckall.spawn(&[])?;
    early.expect_json("worker", Duration::from_secs(30))?;
    let other = ignored.spawn(&[])?;
    let not_go = ChildGuard::spawn("sleep", {
        let mut c = Command::new("sleep");
        c.arg("300");
        c
    })?;
    let mut goscope =
        Goscope::run(&["--match", "stuckall", "--match", "deadlocked", "--scan-every", "500ms", "--block-threshold", "1s"])?;
    let early_pid = early.pid();
    let whole =
        |v: &Value| v["kind"] == "finding" && v["type"] == "deadlock" && v["grade"] == "proven" && pid_of(v) == Some(early_pid);
    goscope.events_until(whole, Duration::from_secs(60)).context("the process running before the agent")?;
    // Started after the agent: found by a later scan.
    let mut late = deadlocked.spawn(&[])?;
    late.expect_json("deadlocked", Duration::from_secs(30))?;
    let late_pid = late.pid();
    let deadlock = |v: &Value| v["kind"] == "finding" && v["type"] == "deadlock" && pid_of(v) == Some(late_pid);
    goscope.events_until(deadlock, Duration::from_secs(60)).context("the process started after the agent")?;
    // Its exit ends its session: a summary for that pid saying so.
    late.kill();
    let ended = |v: &Value| v["kind"] == "summary" && pid_of(v) == Some(late_pid) && v["target_exited"] == true;
    goscope.events_until(ended, Duration::from_secs(30)).context("the session of the exited process")?;
    let started = Instant::now();
    goscope.stop(Duration::from_secs(30))?;
    ensure!(started.elapsed() < Duration::from_secs(30));
    let attached: Vec<u32> = goscope.events().iter().filter(|v| v["kind"] == "attached").filter_map(pid_of).collect();
    ensure!(attached.contains(&early_pid) && attached.contains(&late_pid), "attached to {attached:?}");
    ensure!(!attached.contains(&other.pid()), "attached to {} which --match does not name", other.pid());
    ensure!(!attached.contains(&not_go.pid()), "attached to a non-Go process");
    ensure!(
        goscope.events().iter().any(|v| v["kind"] == "summary" && pid_of(v) == Some(early_pid)),
        "no summary for {early_pid} on SIGINT: {:?}",
        goscope.events()
    );
    Ok(())
}

/// Two processes of one executable: the agent analyses it once and shares the result (its debug
/// log says so), and watches both.
#[test]
fn run_analyses_an_executable_once_for_all_its_processes() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let stuckall = GoFixture::build("stuckall", None, Variant::Plain)?;
    let mut first = stuckall.spawn(&[])?;
    let mut second = stuckall.spawn(&[])?;
    first.expect_json("worker", Duration::from_secs(30))?;
    second.expect_json("worker", Duration::from_secs(30))?;
    let mut goscope = Goscope::run_as(&["env", "RUST_LOG=goscope=debug"], &["--match", "stuckall", "--scan-every", "500ms"])?;
    let pids = [first.pid(), second.pid()];
    let mut waiting: Vec<u32> = pids.to_vec();
    let all_attached = |v: &Value| {
        waiting.retain(|&p| !(v["kind"] == "attached" && pid_of(v) == Some(p)));
        waiting.is_empty()
    };
    goscope.events_until(all_attached, Duration::from_secs(60)).with_context(|| format!("attaching to {pids:?}"))?;
    let stopped = goscope.stop(Duration::from_secs(30))?;
    let log = stopped.stderr;
    // Other tests of this binary may run stuckall processes of the same build meanwhile, which
    // `--match stuckall` also watches: every process of the executable counts, ours included.
    let exe = stuckall.path.display().to_string();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(exe.as_str())).collect();
    let analysed = lines.iter().filter(|l| l.contains(": analysing ")).count();
    let shared = lines.iter().filter(|l| l.contains("is already analysed")).count();
    let ours = pids.iter().all(|p| lines.iter().any(|l| l.contains(&format!("PID {p}: "))));
    ensure!(
        analysed == 1 && shared + 1 == lines.len() && ours,
        "analysed {analysed} times, shared {shared} times (PIDs {pids:?} among them: {ours}); log:\n{log}"
    );
    Ok(())
}
