//! `cargo xtask bench`: figures, not pass/fail.
//! - probe overhead on a live Go program: the pingpong fixture's round-trip time without and
//!   with goscope attached, per round trip and per probe hit;
//! - the state model: events/s absorbed on one core and memory per tracked goroutine
//!   (`agent/benches/state.rs`);
//! - leak proof by reachability (`goscope_memory::find_leaked`): time and bytes read on the
//!   leaks fixture with 100k extra goroutines and a 300 MiB pointer-rich heap.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{ChildStdout, Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{ChildGuard, check, workspace_root};

const ROUND_TRIPS: u64 = 200_000;
const RUNS: usize = 3;

pub fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    check(crate::bootstrap::cargo().current_dir(&root).args(["build", "--release", "-p", "goscope"]))?;
    let pingpong = root.join("target/bench/pingpong");
    check(Command::new("go").current_dir(root.join("tests/fixtures/go/pingpong")).args(["build", "-o"]).arg(&pingpong).arg("."))?;
    let goscope = root.join("target/release/goscope");

    let mut base = Vec::new();
    let mut with = Vec::new();
    let mut events = Vec::new();
    for _ in 0..RUNS {
        base.push(pingpong_ns(&pingpong, None)?.0);
        let (ns, ev) = pingpong_ns(&pingpong, Some(&goscope))?;
        with.push(ns);
        events.push(ev);
    }
    let (base, with) = (median(&mut base), median(&mut with));
    let events = median(&mut events);
    let per_trip = (with.saturating_sub(base)) as f64 / ROUND_TRIPS as f64;
    println!("probe overhead (pingpong, {ROUND_TRIPS} round trips, median of {RUNS} runs):");
    println!("  without goscope  {:>8.1} ns/round trip", base as f64 / ROUND_TRIPS as f64);
    println!("  with goscope     {:>8.1} ns/round trip  ({events} events)", with as f64 / ROUND_TRIPS as f64);
    println!(
        "  overhead         {per_trip:>8.1} ns/round trip, {:.2} us per event",
        per_trip * ROUND_TRIPS as f64 / events.max(1) as f64 / 1e3
    );

    reach_figures(&root)?;
    check(crate::bootstrap::cargo().current_dir(&root).args(["bench", "-p", "goscope", "--bench", "state"]))
}

/// Snapshot + `find_leaked` on a big process, through goscope-memory's `snapshot-bench --reach`.
fn reach_figures(root: &Path) -> anyhow::Result<()> {
    const HERD: &str = "100000";
    const HEAP_MIB: &str = "300";
    let leaks = root.join("target/bench/leaks");
    check(Command::new("go").current_dir(root.join("tests/fixtures/go/leaks")).args(["build", "-o"]).arg(&leaks).arg("."))?;
    let example = ["build", "--release", "-p", "goscope-memory", "--example", "snapshot-bench"];
    check(crate::bootstrap::cargo().current_dir(root).args(example))?;
    let mut prog = ChildGuard(
        Command::new(&leaks)
            .args(["-herd", HERD, "-heap", HEAP_MIB])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the leaks fixture")?,
    );
    let mut prog_out = BufReader::new(prog.0.stdout.take().context("leaks stdout")?);
    let ready = read_line(&mut prog_out)?;
    if !ready.contains("\"goids\"") {
        bail!("the leaks fixture did not start: {ready:?}");
    }
    println!("leak proof by reachability (leaks fixture, {HERD} extra goroutines, {HEAP_MIB} MiB heap; 3 rounds):");
    check(Command::new(root.join("target/release/examples/snapshot-bench")).args([&prog.0.id().to_string(), "3", "--reach"]))
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Runs pingpong once, optionally with goscope attached; returns (elapsed ns, events seen).
fn pingpong_ns(pingpong: &Path, goscope: Option<&Path>) -> anyhow::Result<(u64, u64)> {
    let mut prog = ChildGuard(
        Command::new(pingpong)
            .arg(format!("-n={ROUND_TRIPS}"))
            .env("GOMAXPROCS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting pingpong")?,
    );
    let mut prog_out = BufReader::new(prog.0.stdout.take().context("pingpong stdout")?);
    let pid = json_field(&read_line(&mut prog_out)?, "pid")?;
    let mut agent = match goscope {
        Some(goscope) => {
            let mut agent = ChildGuard(
                Command::new(goscope)
                    .args(["attach", "--pid", &pid.to_string(), "--format", "json", "--no-events"])
                    .stdout(Stdio::piped())
                    .spawn()
                    .context("starting goscope")?,
            );
            let mut out = BufReader::new(agent.0.stdout.take().context("goscope stdout")?);
            let attached = read_line(&mut out)?;
            if !attached.contains("\"attached\"") {
                bail!("goscope did not attach: {attached}");
            }
            Some((agent, out))
        }
        None => None,
    };
    writeln!(prog.0.stdin.as_mut().context("pingpong stdin")?, "go")?;
    let ns = json_field(&read_line(&mut prog_out)?, "ns")?;
    let events = match agent.as_mut() {
        Some((agent, out)) => {
            // SIGINT: goscope drains, detaches and prints its summary line.
            check(Command::new("kill").args(["-INT", &agent.0.id().to_string()]))?;
            let summary = out.lines().map_while(Result::ok).find(|l| l.contains("\"summary\"")).unwrap_or_default();
            json_field(&summary, "events")?
        }
        None => 0,
    };
    Ok((ns, events))
}

fn read_line(r: &mut BufReader<ChildStdout>) -> anyhow::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    Ok(line)
}

/// The unsigned integer `key` of a one-line JSON object.
fn json_field(line: &str, key: &str) -> anyhow::Result<u64> {
    let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line:?}"))?;
    v[key].as_u64().with_context(|| format!("no integer {key} in {line:?}"))
}
