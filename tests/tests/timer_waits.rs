//! A wait that includes a timer's channel is not `blocked`: a loop that waits for work or a
//! `time.After` timeout is woken by the timer, whatever the threshold. A goroutine blocked on a
//! plain channel next to it is reported, which shows the watch saw long enough waits.
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use goscope_tests::{GoFixture, Goscope, Variant, WatchMode, require_bpf};
use serde_json::Value;

fn blocked_goids(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .filter(|v| v["kind"] == "finding" && v["type"] == "blocked")
        .flat_map(|f| f["goroutines"].as_array().into_iter().flatten().filter_map(|g| g["goid"].as_u64()))
        .collect()
}

fn a_time_after_select_loop_is_never_reported_blocked(mode: WatchMode) -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let fixture = GoFixture::build("timerwait", None, Variant::Plain)?;
    let mut target = fixture.spawn(&[])?;
    let info = target.expect_json("timer_loop", Duration::from_secs(30))?;
    let timer_loop = info["timer_loop"].as_u64().context("timer_loop")?;
    let plain = info["plain"].as_u64().context("plain")?;
    // The loop waits 2 s at a time: past the 1 s threshold on every round.
    let mut goscope = Goscope::attach(target.pid(), &mode.args(&["--block-threshold", "1s", "--no-events"]))?;
    goscope.wait_attached(Duration::from_secs(60))?;
    let plain_reported = |v: &Value| blocked_goids(std::slice::from_ref(v)).contains(&plain);
    goscope.events_until(plain_reported, Duration::from_secs(30))?;
    // Three more rounds of the loop, each a fresh timer channel and a fresh park.
    std::thread::sleep(Duration::from_secs(6));
    goscope.stop(Duration::from_secs(30))?;
    let blocked = blocked_goids(goscope.events());
    ensure!(!blocked.contains(&timer_loop), "the time.After loop {timer_loop} was reported blocked: {:?}", goscope.events());
    target.kill();
    Ok(())
}

goscope_tests::in_each_watch_mode!(a_time_after_select_loop_is_never_reported_blocked);
