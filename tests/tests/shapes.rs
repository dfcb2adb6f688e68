//! What kind of finding each stuck shape is, when it formed before goscope attached (the
//! `shapes` fixture, one shape a run): goroutines that merely share a stuck channel are one
//! `leak` per park site naming all of them, never a `deadlock`; a ring of goroutines each waiting
//! for the next is a `deadlock` with the ring as its chain; a fan-out (main in WaitGroup.Wait,
//! workers sending on a full buffered channel only main would drain) is a proven `deadlock` of
//! main and the stuck workers. On the installed Go and on Go 1.22.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use goscope_tests::{GoFixture, Goscope, Variant, require_bpf};
use serde_json::Value;

/// The fixture's goroutines by role.
type Roles = BTreeMap<String, Vec<u64>>;

fn goids(v: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = v["goroutines"].as_array().into_iter().flatten().filter_map(|g| g["goid"].as_u64()).collect();
    ids.sort_unstable();
    ids
}

fn is_judgement(v: &Value) -> bool {
    v["kind"] == "finding" && (v["type"] == "leak" || v["type"] == "deadlock")
}

/// Runs `shape` with goscope attached until a proven finding names all of `stuck` (or the time is
/// up); returns every leak/deadlock finding it printed and the fixture's roles.
fn run(fixture: &GoFixture, shape: &str) -> Result<(Vec<Value>, Roles)> {
    let mut target = fixture.spawn(&["-shape", shape])?;
    let info = target.expect_json("goids", Duration::from_secs(30))?;
    let roles: Roles = serde_json::from_value(info["goids"].clone()).context("goids")?;
    let stuck = expected_stuck(&roles);
    let mut goscope = Goscope::attach(target.pid(), &["--block-threshold", "1s", "--no-events"])?;
    goscope.wait_attached(Duration::from_secs(60))?;
    let all_proven = |v: &Value| is_judgement(v) && v["grade"] == "proven" && goids(v) == stuck;
    // Proof takes a few scans (about 5 s idle); on a loaded machine scans run late and later ones
    // re-prove, so the bound is generous: it only costs time when the proof never comes.
    goscope.watch_until(Instant::now() + Duration::from_secs(60), all_proven)?;
    // A moment more, for anything reported next to it.
    std::thread::sleep(Duration::from_secs(2));
    goscope.stop(Duration::from_secs(30))?;
    target.kill();
    Ok((goscope.events().iter().filter(|v| is_judgement(v)).cloned().collect(), roles))
}

/// The goroutines of the shape that are stuck: every "stuck" one, plus main and the workers that
/// did not get through in the fan-out.
fn expected_stuck(roles: &Roles) -> Vec<u64> {
    let role = |r: &str| roles.get(r).cloned().unwrap_or_default();
    let sent = role("sent");
    let mut stuck: Vec<u64> = role("stuck").into_iter().chain(role("main")).collect();
    stuck.extend(role("worker").into_iter().filter(|g| !sent.contains(g)));
    stuck.sort_unstable();
    stuck
}

/// The shapes every release must get right: (shape, the type of its proven finding).
const SHAPES: [(&str, &str); 4] = [("senders", "leak"), ("consumers", "leak"), ("ring", "deadlock"), ("fanout", "deadlock")];

fn check(version: Option<&str>) -> Result<()> {
    check_shapes(version, &SHAPES)
}

fn check_shapes(version: Option<&str>, shapes: &[(&str, &str)]) -> Result<()> {
    let fixture = GoFixture::build("shapes", version, Variant::Plain)?;
    let mut problems = Vec::new();
    for &(shape, want_type) in shapes {
        let (findings, roles) = run(&fixture, shape)?;
        let stuck = expected_stuck(&roles);
        // Never a goroutine that is not stuck, and never the other type.
        for f in &findings {
            if goids(f).iter().any(|g| !stuck.contains(g)) || f["type"] != want_type {
                problems.push(format!("{shape}: {f}"));
            }
        }
        let proven: Vec<&Value> = findings.iter().filter(|f| f["grade"] == "proven").collect();
        if !proven.iter().any(|f| goids(f) == stuck) {
            problems.push(format!("{shape}: no proven {want_type} naming {stuck:?}: {findings:?}"));
        }
        if shape.starts_with("ring") {
            let chain_ok = proven.iter().any(|f| {
                let mut chain: Vec<u64> = f["chain"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
                chain.sort_unstable();
                chain == stuck
            });
            if !chain_ok {
                problems.push(format!("{shape}: the chain is not the ring {stuck:?}: {proven:?}"));
            }
        }
        eprintln!("{} {shape}: {} finding(s)", fixture.label(), findings.len());
    }
    ensure!(problems.is_empty(), "{}:\n{}", fixture.label(), problems.join("\n"));
    Ok(())
}

#[test]
fn shared_stuck_channels_are_leaks_and_rings_are_deadlocks_installed_go() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    check(None)
}

#[test]
fn shared_stuck_channels_are_leaks_and_rings_are_deadlocks_go1_22() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    check(Some("1.22.12"))
}

/// Main's frame keeps the ring's channels in dead locals (and in a dead stack object, the slice's
/// backing array): only the runtime's stack maps say those slots are dead.
#[test]
fn a_ring_made_in_mains_frame_is_a_proven_deadlock() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    check_shapes(None, &[("ringmain", "deadlock")])
}

/// A repeated leak (a hand-written errgroup run 4 times in main's frame): every batch's stuck
/// workers are proven, the last one's too, whose channel main's dead locals still hold.
#[test]
fn every_batch_of_a_repeated_leak_is_proven() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    check_shapes(None, &[("batches", "leak")])?;
    check_shapes(Some("1.22.12"), &[("batches", "leak")])
}

/// The same on Go 1.22 (malloc headers, no Green Tea) and 1.19 (the oldest release; `_func` without
/// `startLine`, stack maps in `.rodata`'s `go:func.*`).
#[test]
fn a_ring_made_in_mains_frame_is_a_proven_deadlock_go1_22_and_go1_19() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    check_shapes(Some("1.22.12"), &[("ringmain", "deadlock")])?;
    check_shapes(Some("1.19.13"), &[("ringmain", "deadlock")])
}
