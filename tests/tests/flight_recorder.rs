//! `goscope attach --flight-recorder DIR`: when a deadlock is found, the seconds before it as a
//! Chrome trace (the format Perfetto UI and chrome://tracing open): a track per goroutine, the
//! deadlocked pair first with a blocked slice named by its wait reason, and the ticker goroutine's
//! recent wake-ups and parks, all within the window.
use std::{fs, time::Duration};

use anyhow::{Context as _, Result, ensure};
use goscope_tests::{GoFixture, Goscope, Variant, require_bpf};
use serde_json::Value;

const WINDOW_SECS: f64 = 5.0;

#[test]
fn a_deadlock_leaves_a_trace_of_the_seconds_before_it() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("goscope-flight-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let fixture = GoFixture::build("deadlocked", None, Variant::Plain)?;
    let mut target = fixture.spawn(&[])?;
    let info = target.expect_json("deadlocked", Duration::from_secs(30))?;
    let dir_arg = dir.to_string_lossy().into_owned();
    // No budget: the probes stay on, so the ticker's events reach the recorder.
    let args = ["--no-events", "--overhead-budget", "off", "--block-threshold", "1s", "--flight-recorder", &dir_arg];
    let mut goscope = Goscope::attach(target.pid(), &[&args[..], &["--flight-recorder-seconds", "5s"]].concat())?;
    goscope.wait_attached(Duration::from_secs(60))?;
    let finding = goscope.events_until(|v| v["kind"] == "finding" && v["type"] == "deadlock", Duration::from_secs(60))?;
    let id = finding.last().and_then(|f| f["id"].as_str()).context("finding without id")?.to_string();
    goscope.stop(Duration::from_secs(30))?;

    let safe: String = id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
    let file = dir.join(format!("{safe}.trace.json"));
    let text = fs::read_to_string(&file).with_context(|| format!("{} (for finding {id})", file.display()));
    let _ = fs::remove_dir_all(&dir);
    let trace: Value = serde_json::from_str(&text?).context("the trace is not JSON")?;
    let events = trace["traceEvents"].as_array().context("no traceEvents array")?;
    check_required_fields(events)?;

    let pair: Vec<(u64, String, String)> = info["deadlocked"]
        .as_array()
        .context("fixture line")?
        .iter()
        .map(|g| Some((g["goid"].as_u64()?, g["function"].as_str()?.to_string(), g["channel"].as_str()?.to_string())))
        .collect::<Option<_>>()
        .context("fixture's deadlocked goroutines")?;
    for (goid, function, channel) in &pair {
        let name = metadata(events, "thread_name", *goid).context("no thread name")?;
        ensure!(name["name"] == format!("goroutine {goid} {function}"), "track of goroutine {goid} named {name}");
        let sort = metadata(events, "thread_sort_index", *goid).and_then(|a| a["sort_index"].as_u64());
        ensure!(sort.is_some_and(|i| i < 2), "goroutine {goid} of the finding is not among the first tracks ({sort:?})");
        let blocked = slices(events, *goid).into_iter().find(|s| s["name"] == "chan send" && s["cat"] == "blocked");
        let blocked = blocked.with_context(|| format!("no blocked `chan send` slice for goroutine {goid}"))?;
        ensure!(blocked["args"]["on"] == format!("chan {channel}"), "goroutine {goid} blocked on {}", blocked["args"]);
        ensure!(blocked["args"]["park_site"].as_str().is_some_and(|s| s.starts_with(function.as_str())), "{blocked}");
        let end_us = blocked["ts"].as_f64().unwrap_or(-1.0) + blocked["dur"].as_f64().unwrap_or(-1.0);
        ensure!((end_us - WINDOW_SECS * 1e6).abs() < 1.0, "goroutine {goid} not blocked until the finding: {blocked}");
    }
    // Some activity before the deadlock was found: the ticker's events (not scan samples).
    let from_events = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["args"]["sampled"] == false && pair.iter().all(|(g, ..)| e["tid"] != *g))
        .count();
    ensure!(from_events >= 5, "only {from_events} slices from events besides the deadlocked pair");
    let marker = events.iter().find(|e| e["cat"] == "finding").context("no finding marker")?;
    ensure!(marker["args"]["id"] == id.as_str(), "marker {marker}");
    ensure!(trace["otherData"]["finding_id"] == id.as_str(), "{}", trace["otherData"]);
    Ok(())
}

/// Every event has `ph`, `name` and `pid`; slices and instants have `tid` and a `ts` within the
/// window; slices have a `dur`.
fn check_required_fields(events: &[Value]) -> Result<()> {
    ensure!(!events.is_empty(), "empty trace");
    for e in events {
        ensure!(e["ph"].is_string() && e["name"].is_string() && e["pid"].is_u64(), "incomplete event {e}");
        if e["ph"] == "M" {
            continue;
        }
        let ts = e["ts"].as_f64().with_context(|| format!("no ts: {e}"))?;
        ensure!(e["tid"].is_u64(), "no tid: {e}");
        ensure!((0.0..=WINDOW_SECS * 1e6).contains(&ts), "outside the window: {e}");
        if e["ph"] == "X" {
            let dur = e["dur"].as_f64().with_context(|| format!("no dur: {e}"))?;
            ensure!(dur >= 0.0 && ts + dur <= WINDOW_SECS * 1e6 + 1.0, "past the finding: {e}");
        }
    }
    Ok(())
}

fn metadata<'a>(events: &'a [Value], name: &str, tid: u64) -> Option<&'a Value> {
    events.iter().find(|e| e["ph"] == "M" && e["name"] == name && e["tid"] == tid).map(|e| &e["args"])
}

fn slices(events: &[Value], tid: u64) -> Vec<&Value> {
    events.iter().filter(|e| e["ph"] == "X" && e["tid"] == tid).collect()
}
