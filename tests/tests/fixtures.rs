//! The Go fixtures themselves, without goscope (no root or eBPF needed): they build in every
//! variant, speak their stdin/stdout protocol, and the build cache works.
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use goscope_tests::fixture::{binary_go_version, fixture_source_dir};
use goscope_tests::{GoFixture, Variant};
use serde_json::Value;

/// Runs the chanrecv10 protocol by hand and checks what the fixture reports.
fn check_chanrecv10_protocol(fixture: &GoFixture) -> Result<()> {
    let label = fixture.label();
    let mut child = fixture.spawn(&[])?;
    let start = child.expect_json("main_goid", Duration::from_secs(20))?;
    ensure!(start["pid"].as_u64() == Some(u64::from(child.pid())), "{label}: pid mismatch in {start}");
    ensure!(start["go_version"].as_str() == Some(fixture.go_version.as_str()), "{label}: go_version in {start}");
    let main_goid = start["main_goid"].as_u64().context("main_goid")?;
    child.send_line("go")?;
    let workers = child.expect_json("worker_goids", Duration::from_secs(20))?;
    let mut goids: Vec<u64> =
        workers["worker_goids"].as_array().context("worker_goids")?.iter().filter_map(Value::as_u64).collect();
    goids.sort_unstable();
    goids.dedup();
    ensure!(goids.len() == 10 && !goids.contains(&main_goid), "{label}: bad worker goids in {workers}");
    ensure!(workers["release_chan"].as_str().is_some_and(|c| c.starts_with("0x")), "{label}: release_chan in {workers}");
    let source = std::fs::read_to_string(fixture_source_dir("chanrecv10").join("main.go"))?;
    for w in workers["workers"].as_array().context("workers")? {
        ensure!(w["created_by"] == "main.main", "{label}: worker {w}");
        ensure!(w["file"].as_str().is_some_and(|f| f.ends_with("chanrecv10/main.go")), "{label}: worker {w}");
        let line = w["line"].as_u64().context("line")? as usize;
        let text = source.lines().nth(line.wrapping_sub(1)).unwrap_or_default();
        ensure!(text.trim() == "go worker()", "{label}: worker {w}: line {line} of main.go is {text:?}, not the go statement");
    }
    child.expect_json("done", Duration::from_secs(20))?;
    child.close_stdin();
    let status = child.wait_exit(Duration::from_secs(10))?;
    ensure!(status.is_some_and(|s| s.success()), "{label}: expected exit 0 after stdin EOF, got {status:?}");
    Ok(())
}

#[test]
fn chanrecv10_protocol_all_variants() -> Result<()> {
    let specs: Vec<_> = Variant::ALL.iter().map(|&v| ("chanrecv10", None, v)).collect();
    for fixture in GoFixture::build_many(&specs) {
        check_chanrecv10_protocol(&fixture?)?;
    }
    Ok(())
}

/// The oldest and newest Go of the version matrix, plain: the fixture's traceback parsing works
/// on both the old ("created by main.main") and new ("... in goroutine 1") formats.
#[test]
fn chanrecv10_protocol_oldest_and_newest_go() -> Result<()> {
    let oldest = goscope_tests::GO_VERSIONS.first().copied();
    let newest = goscope_tests::GO_VERSIONS.last().copied();
    for fixture in GoFixture::build_many(&[("chanrecv10", oldest, Variant::Plain), ("chanrecv10", newest, Variant::Plain)]) {
        check_chanrecv10_protocol(&fixture?)?;
    }
    Ok(())
}

#[test]
fn chanrecv10_exits_on_eof_before_go() -> Result<()> {
    let fixture = GoFixture::build("chanrecv10", None, Variant::Plain)?;
    let mut child = fixture.spawn(&[])?;
    child.expect_json("main_goid", Duration::from_secs(20))?;
    child.close_stdin();
    let status = child.wait_exit(Duration::from_secs(10))?;
    ensure!(status.is_some_and(|s| s.success()), "expected exit 0, got {status:?}");
    Ok(())
}

#[test]
fn deadlocked_protocol() -> Result<()> {
    let fixture = GoFixture::build("deadlocked", None, Variant::Plain)?;
    let mut child = fixture.spawn(&[])?;
    let facts = child.expect_json("deadlocked", Duration::from_secs(20))?;
    let pair = facts["deadlocked"].as_array().context("deadlocked array")?;
    ensure!(pair.len() == 2, "expected a pair: {facts}");
    let (a, b) = (&pair[0], &pair[1]);
    ensure!(a["function"] == "main.deadlockA" && b["function"] == "main.deadlockB", "{facts}");
    ensure!(a["waits_on"] == b["goid"] && b["waits_on"] == a["goid"], "{facts}");
    ensure!(a["wait_reason"] == "chan send" && b["wait_reason"] == "chan send", "{facts}");
    ensure!(a["channel"] != b["channel"] && a["channel"].as_str().is_some_and(|c| c.starts_with("0x")), "{facts}");
    // Still alive a while later: the ticker keeps the runtime from declaring a global deadlock.
    std::thread::sleep(Duration::from_millis(500));
    ensure!(child.is_running(), "deadlocked exited: {}", child.stderr_text());
    child.close_stdin();
    let status = child.wait_exit(Duration::from_secs(10))?;
    ensure!(status.is_some_and(|s| s.success()), "expected exit 0 after stdin EOF, got {status:?}");
    Ok(())
}

#[test]
fn demo_prints_pid_and_legend_and_keeps_running() -> Result<()> {
    let fixture = GoFixture::build("demo", None, Variant::Plain)?;
    let mut child = fixture.spawn(&[])?;
    let mut text = Vec::new();
    while !text.iter().any(|l: &String| l.starts_with("running")) {
        match child.next_line(Duration::from_secs(20)) {
            goscope_tests::Line::Line(l) => text.push(l),
            other => bail!("demo stopped printing before \"running\" ({other:?}): {text:?}; stderr: {}", child.stderr_text()),
        }
    }
    let head = format!("goscope demo: pid {}, {}", child.pid(), fixture.go_version);
    ensure!(text[0] == head, "first line {:?}, expected {head:?}", text[0]);
    let all = text.join("\n");
    for name in ["main.poolWorker", "main.slowLookup", "main.deadlockA/B", "main.mutexHolder", "main.mutexWaiter", "main.ticker"]
    {
        ensure!(all.contains(name), "the legend does not mention {name}: {all}");
    }
    std::thread::sleep(Duration::from_secs(3));
    ensure!(child.is_running(), "the demo exited: {}", child.stderr_text());
    Ok(())
}

#[test]
fn fixture_cache_hits_and_reports_the_right_version() -> Result<()> {
    let first = GoFixture::build("deadlocked", None, Variant::Stripped)?;
    let second = GoFixture::build("deadlocked", None, Variant::Stripped)?;
    ensure!(first.path == second.path, "{:?} vs {:?}", first.path, second.path);
    ensure!(second.build_time.is_none(), "the second build of the same fixture was not a cache hit");
    ensure!(binary_go_version(&second.path)? == second.go_version, "go version of {}", second.path.display());
    let pie = GoFixture::build("deadlocked", None, Variant::Pie)?;
    ensure!(pie.path != first.path, "variants must not share a cache entry");
    Ok(())
}
