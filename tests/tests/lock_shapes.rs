//! What type of finding each stuck lock shape gets (the `lockshapes` fixture, one shape a run,
//! formed before goscope attaches). A `deadlock` needs evidence of a cycle in memory: each
//! goroutine's live stack (or what it alone reaches) holds the lock another one waits for. Lock
//! cycles with that evidence are proven deadlocks, whether the Unlocks are deferred, explicit,
//! in a defer record of a loop, or in a method of the other object. Goroutines that only wait
//! for one lock (its holder returned without unlocking it) are a `leak`, also when their mutexes
//! sit in one 16-byte block; so are the cycles memory cannot show: a goroutine waiting for a
//! lock it holds itself (Go's Mutex records no owner), or a first lock no frame refers to.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use goscope_tests::{GoFixture, Goscope, Variant, WatchMode, require_bpf};
use serde_json::Value;

fn goids(v: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = v["goroutines"].as_array().into_iter().flatten().filter_map(|g| g["goid"].as_u64()).collect();
    ids.sort_unstable();
    ids
}

fn is_judgement(v: &Value) -> bool {
    v["kind"] == "finding" && (v["type"] == "leak" || v["type"] == "deadlock")
}

/// What a shape must get.
struct Expect {
    shape: &'static str,
    /// The type of every proven finding.
    proven: &'static str,
    /// A suspect `deadlock` may come before the proof (a reader and a writer waiting on one
    /// RWMutex: the suspect detector's evidence of a recursive read lock).
    suspect_deadlock: bool,
    /// Every stuck goroutine must be proven (not for `doubles`: a tiny block may also hold a
    /// reachable object, which keeps its mutex reachable).
    all_proven: bool,
}

const fn expect(shape: &'static str, proven: &'static str) -> Expect {
    Expect { shape, proven, suspect_deadlock: false, all_proven: true }
}

const SHAPES: [Expect; 10] = [
    expect("abba-defer", "deadlock"),
    expect("abba-explicit", "deadlock"),
    expect("abba-methods", "deadlock"),
    expect("abba-deferloop", "deadlock"),
    expect("abandoned", "leak"),
    Expect { suspect_deadlock: true, ..expect("rwabandoned", "leak") },
    Expect { all_proven: false, ..expect("doubles", "leak") },
    // Real cycles memory cannot show (see the file comment): leaks, never a made-up chain.
    expect("double", "leak"),
    expect("abba-forgot", "leak"),
    Expect { suspect_deadlock: true, ..expect("rwr", "leak") },
];

/// Runs `shape` with goscope attached until proven findings name all its stuck goroutines (or
/// the time is up); returns every leak/deadlock finding and the stuck goroutines.
fn run(fixture: &GoFixture, mode: WatchMode, shape: &str) -> Result<(Vec<Value>, Vec<u64>)> {
    let mut target = fixture.spawn(&["-shape", shape])?;
    let info = target.expect_json("goids", Duration::from_secs(30))?;
    let roles: BTreeMap<String, Vec<u64>> = serde_json::from_value(info["goids"].clone()).context("goids")?;
    let mut stuck = roles.get("stuck").cloned().unwrap_or_default();
    stuck.sort_unstable();
    let mut goscope = Goscope::attach(target.pid(), &mode.args(&["--block-threshold", "1s", "--no-events"]))?;
    goscope.wait_attached(Duration::from_secs(60))?;
    let mut proven: Vec<u64> = Vec::new();
    goscope.watch_until(Instant::now() + Duration::from_secs(60), |v| {
        if is_judgement(v) && v["grade"] == "proven" {
            proven.extend(goids(v));
            proven.sort_unstable();
            proven.dedup();
        }
        proven == stuck
    })?;
    // A moment more, for anything reported next to it.
    std::thread::sleep(Duration::from_secs(2));
    goscope.stop(Duration::from_secs(30))?;
    target.kill();
    Ok((goscope.events().iter().filter(|v| is_judgement(v)).cloned().collect(), stuck))
}

fn lock_shapes_get_the_type_memory_proves(mode: WatchMode) -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let fixture = GoFixture::build("lockshapes", None, Variant::Plain)?;
    let mut problems = Vec::new();
    for e in &SHAPES {
        let (findings, stuck) = run(&fixture, mode, e.shape)?;
        for f in &findings {
            let allowed = f["grade"] == "proven" && f["type"] == e.proven
                || f["grade"] == "suspect" && (f["type"] == e.proven || f["type"] == "deadlock" && e.suspect_deadlock);
            if !allowed || goids(f).iter().any(|g| !stuck.contains(g)) {
                problems.push(format!("{}: {f}", e.shape));
            }
        }
        let mut proven: Vec<u64> = findings.iter().filter(|f| f["grade"] == "proven").flat_map(goids).collect();
        proven.sort_unstable();
        proven.dedup();
        if proven.is_empty() || e.all_proven && proven != stuck {
            problems.push(format!("{}: proven {proven:?} of stuck {stuck:?}: {findings:?}", e.shape));
        }
        eprintln!("{} {mode:?} {}: {} finding(s)", fixture.label(), e.shape, findings.len());
    }
    ensure!(problems.is_empty(), "{}:\n{}", fixture.label(), problems.join("\n"));
    Ok(())
}

goscope_tests::in_each_watch_mode!(lock_shapes_get_the_type_memory_proves);
