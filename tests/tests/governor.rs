//! The budget governor on a real process: a target that idles, bursts to ~100k goroutine events
//! per second and idles again makes goscope (findings only, so governed with the default 1% budget)
//! start in scan mode and attach the probes while the target idles, detach every probe during the
//! burst and attach them again after it — each change a `mode`
//! line with its reason — while a goroutine leaked mid-burst is still proven, and nothing else is
//! ever called leaked or deadlocked.
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use goscope_tests::goscope::kind;
use goscope_tests::{GoFixture, Goscope, Variant, require_bpf};
use serde_json::Value;

fn is_mode(v: &Value, mode: &str) -> bool {
    kind(v) == "mode" && v["mode"] == mode
}

#[test]
fn a_burst_steps_down_to_scan_mode_and_back_and_its_leak_is_still_proven() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let fixture = GoFixture::build("burst", None, Variant::Plain)?;
    let mut target = fixture.spawn(&["-idle", "2s", "-burst", "6s"])?;
    target.expect_json("pid", Duration::from_secs(20))?;
    let mut gs = Goscope::attach(target.pid(), &["--no-events", "--block-threshold", "1s"])?;
    let attached = gs.wait_attached(Duration::from_secs(60))?;
    ensure!(attached["mode"] == "scan", "a governed attach starts in scan mode: {attached}");
    // Idle: two scans show the probes fit the budget.
    let first = gs.events_until(|v| kind(v) == "mode", Duration::from_secs(20))?;
    let first = first.last().context("a mode line")?;
    ensure!(
        is_mode(first, "probes")
            && first["probes_attached"].as_u64() > Some(0)
            && first["reason"].as_str().is_some_and(|r| r.starts_with("the load is light")),
        "an idle target gets every probe: {first}"
    );
    target.send_line("go")?;
    target.expect_json("phase", Duration::from_secs(20))?;
    let down = gs.events_until(|v| kind(v) == "mode", Duration::from_secs(20))?;
    let down = down.last().context("a mode line")?;
    ensure!(is_mode(down, "scan") && down["probes_attached"] == 0, "the burst must end in scan mode: {down}");
    let cost = down["estimated_cost_pct"].as_f64().context("estimated_cost_pct")?;
    ensure!(cost > 1.0 && down["budget_pct"] == 1.0, "stepped down under budget? {down}");
    let leaked = target.expect_json("leaked", Duration::from_secs(20))?["leaked"].as_u64().context("leaked goid")?;
    let proven = |v: &Value| {
        kind(v) == "finding"
            && v["type"] == "leak"
            && v["grade"] == "proven"
            && v["goroutines"].as_array().is_some_and(|g| g.iter().any(|g| g["goid"] == leaked))
    };
    gs.events_until(proven, Duration::from_secs(30)).context("the goroutine leaked mid-burst, proven")?;
    target.expect_json("round_trips", Duration::from_secs(20))?;
    // Quiet again: after the back-off (10 s from the step down) the probes come back.
    let up = gs.events_until(|v| kind(v) == "mode", Duration::from_secs(30))?;
    let up = up.last().context("a mode line")?;
    ensure!(is_mode(up, "probes") && up["probes_attached"].as_u64() > Some(0), "probes back after the burst: {up}");
    std::thread::sleep(Duration::from_secs(2));
    gs.stop(Duration::from_secs(30))?;
    let wrong: Vec<&Value> = gs
        .events()
        .iter()
        .filter(|v| kind(v) == "finding" && (v["type"] == "leak" || v["type"] == "deadlock"))
        .filter(|v| v["goroutines"].as_array().is_none_or(|g| g.iter().any(|g| g["goid"] != leaked)))
        .collect();
    ensure!(wrong.is_empty(), "only goroutine {leaked} leaked: {wrong:#?}");
    let modes: Vec<&Value> = gs.events().iter().filter(|v| kind(v) == "mode").collect();
    ensure!(modes.len() == 3, "probes attached, one step down, one up, no oscillation: {modes:#?}");
    target.close_stdin();
    Ok(())
}
