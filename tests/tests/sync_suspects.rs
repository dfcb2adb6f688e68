//! Deadlocks through package-level locks, a WaitGroup and a Cond (which reachability cannot
//! prove: every goroutine can reach a package-level variable) are suspected, each as one finding
//! naming all its goroutines with the primitive each waits on, while healthy twins of the same
//! shapes in the same process, served by a goroutine asleep between items, draw nothing
//! (`tests/fixtures/go/syncstuck`). On the installed Go and on releases whose sync waits are found
//! in the runtime's semaphore table and notify lists (1.19, 1.22).
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use goscope_tests::{GoFixture, Goscope, Variant, WatchMode, require_bpf};
use serde_json::Value;

/// How long the test waits for both deadlocks (found within a few seconds on an idle machine).
const DEADLINE: Duration = Duration::from_secs(60);
/// The healthy producers' sleep: every twin stays parked past the threshold for this long.
const IDLE: &str = "4s";
/// At least this long watched in all, however early the deadlocks came: several quiet spells of
/// the twins, each past the threshold and the confirmation re-check.
const WATCH: Duration = Duration::from_secs(16);

fn goids(v: &Value) -> BTreeSet<u64> {
    v.as_array().into_iter().flatten().filter_map(|g| g.as_u64().or_else(|| g["goid"].as_u64())).collect()
}

fn suspected_with_their_primitives_twins_silent(mode: WatchMode, go_version: Option<&str>) -> Result<()> {
    suspected_in(mode, go_version, Variant::Plain)
}

fn suspected_in(mode: WatchMode, go_version: Option<&str>, variant: Variant) -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let fixture = GoFixture::build("syncstuck", go_version, variant)?;
    let mut target = fixture.spawn(&["-idle", IDLE])?;
    let info = target.expect_json("locks", Duration::from_secs(30))?;
    let mut locks = goids(&info["locks"]);
    locks.extend(goids(&info["collector"]));
    let cond = goids(&info["cond"]);
    ensure!(locks.len() == 17 && cond.len() == 5, "{info}");

    let mut goscope = Goscope::attach(target.pid(), &mode.args(&["--block-threshold", "1s", "--no-events"]))?;
    goscope.wait_attached(Duration::from_secs(60))?;
    let from = Instant::now();
    let is_deadlock_of =
        |v: &Value, set: &BTreeSet<u64>| v["kind"] == "finding" && v["type"] == "deadlock" && goids(&v["goroutines"]) == *set;
    let (mut seen_locks, mut seen_cond) = (false, false);
    goscope.watch_until(from + DEADLINE, |v| {
        seen_locks |= is_deadlock_of(v, &locks);
        seen_cond |= is_deadlock_of(v, &cond);
        seen_locks && seen_cond
    })?;
    let found_after = from.elapsed();
    goscope.watch_until(Instant::now() + WATCH.saturating_sub(from.elapsed()).max(Duration::from_secs(4)), |_| false)?;
    goscope.stop(Duration::from_secs(30))?;
    eprintln!("syncstuck {}: both deadlocks after {found_after:?}, watched {:?}", fixture.label(), from.elapsed());

    let events = goscope.events();
    let findings: Vec<&Value> =
        events.iter().filter(|v| v["kind"] == "finding" && (v["type"] == "deadlock" || v["type"] == "leak")).collect();
    // Nothing but the two deadlocks: no twin, and no part of a deadlock on its own.
    for f in &findings {
        let set = goids(&f["goroutines"]);
        ensure!(set == locks || set == cond, "false or partial finding {f}\nexpected {locks:?} and {cond:?}");
        ensure!(f["type"] == "deadlock" && f["grade"] == "suspect", "{f}");
    }
    ensure!(
        !events.iter().any(|v| v["kind"] == "retraction" && v["type"] != "blocked"),
        "a deadlock was retracted: {findings:?}"
    );
    let lock_deadlock = findings.iter().find(|f| goids(&f["goroutines"]) == locks).context("the lock deadlock")?;
    let cond_deadlock = findings.iter().find(|f| goids(&f["goroutines"]) == cond).context("the Cond deadlock")?;
    // Each goroutine is named with the primitive it waits on, found in memory where the park
    // predates the probes.
    let collector = goids(&info["collector"]);
    let lock_of = |f: &Value, goid: u64| -> Option<String> {
        f["goroutines"].as_array()?.iter().find(|g| g["goid"] == goid)?["lock"].as_str().map(str::to_owned)
    };
    let (wg, mu, rw) = (info["lock_wg"].as_str(), info["lock_mu"].as_str(), info["lock_rw"].as_str());
    for &g in &locks {
        let lock = lock_of(lock_deadlock, g);
        let want = if collector.contains(&g) { vec![wg] } else { vec![mu, rw] };
        ensure!(want.contains(&lock.as_deref()), "goroutine {g} waits on {lock:?}, expected one of {want:?}: {lock_deadlock}");
    }
    let (cv, gate) = (info["cond_addr"].as_str(), info["gate"].as_str());
    for &g in &cond {
        let lock = lock_of(cond_deadlock, g);
        ensure!([cv, gate].contains(&lock.as_deref()), "goroutine {g} waits on {lock:?}: {cond_deadlock}");
    }
    let chain = goids(&lock_deadlock["chain"]);
    ensure!(chain.len() >= 2 && chain.is_subset(&locks), "chain {chain:?}");
    target.kill();
    Ok(())
}

fn sync_deadlocks_are_suspected_and_their_healthy_twins_are_not(mode: WatchMode) -> Result<()> {
    suspected_with_their_primitives_twins_silent(mode, None)
}

/// Go 1.22: the lock, WaitGroup and Cond of waits that began before goscope attached come from the
/// runtime's semaphore table and the Cond's notify list.
#[test]
fn sync_deadlocks_on_go1_22_in_scan_mode() -> Result<()> {
    suspected_with_their_primitives_twins_silent(WatchMode::Scan, Some("1.22.12"))
}

/// Go 1.19: every sync wait but a Cond's is "semacquire" (the stack names the primitive), and
/// all of them predate the probes.
#[test]
fn sync_deadlocks_on_go1_19() -> Result<()> {
    suspected_with_their_primitives_twins_silent(WatchMode::Probes, Some("1.19.13"))
}

/// A stripped binary: no heap metadata, so the other goroutines' stacks are read whole from their
/// stack pointers and what they point to by windows; the twins must stay silent all the same.
#[test]
fn sync_deadlocks_in_a_stripped_binary() -> Result<()> {
    suspected_in(WatchMode::Probes, None, Variant::Stripped)
}

goscope_tests::in_each_watch_mode!(sync_deadlocks_are_suspected_and_their_healthy_twins_are_not);
