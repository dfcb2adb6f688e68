//! `goscope attach --top` in a real terminal: a tmux pane 120 columns wide, read back with
//! `tmux capture-pane`. Every line fits; the start function and the park site are columns of
//! their own; goscope's event rate, lost and dropped counts and probe modes are shown.
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use goscope_tests::fixture::main_go_line;
use goscope_tests::{GoFixture, Variant, goscope_bin, require_bpf};

const COLUMNS: usize = 120;

/// A tmux server of our own (its own socket), killed on drop with everything in it.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str) -> Result<Tmux> {
        let tmux = Tmux { socket: format!("goscope-top-test-{}", std::process::id()) };
        let status = tmux
            .cmd()
            .args(["new-session", "-d", "-s", "top", "-x", &COLUMNS.to_string(), "-y", "60", command])
            .status()
            .context("running tmux")?;
        ensure!(status.success(), "tmux new-session failed: {status}");
        Ok(tmux)
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn capture(&self) -> Result<String> {
        let out = self.cmd().args(["capture-pane", "-p", "-t", "top"]).output().context("tmux capture-pane")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

fn tmux_present() -> bool {
    if Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but tmux is not installed");
    }
    eprintln!("SKIP: tmux is not installed");
    false
}

#[test]
fn top_fits_120_columns_and_labels_start_function_and_park_site() -> Result<()> {
    if !require_bpf()? || !tmux_present() {
        return Ok(());
    }
    let fixture = GoFixture::build("deadlocked", None, Variant::Plain)?;
    let mut target = fixture.spawn(&[])?;
    let info = target.expect_json("deadlocked", Duration::from_secs(30))?;
    let a = &info["deadlocked"][0];
    let goid = a["goid"].as_u64().context("fixture line without deadlocked[0].goid")?;
    let line = main_go_line("deadlocked", "\taToB <- 1")?;
    let command = format!("{} attach --pid {} --top --block-threshold 1s", goscope_bin()?.display(), target.pid());
    let tmux = Tmux::start(&command)?;

    let row_start = format!("g{goid} ");
    let deadline = Instant::now() + Duration::from_secs(60);
    let screen = loop {
        let screen = tmux.capture()?;
        if screen.lines().any(|l| l.trim_start().starts_with(&row_start) && l.contains("main.go:")) {
            break screen;
        }
        if Instant::now() > deadline {
            bail!("no row for g{goid} with its park site on the --top screen within 60 s:\n{screen}");
        }
        thread::sleep(Duration::from_millis(500));
    };
    // Once more after a refresh, so the event rate has two samples.
    thread::sleep(Duration::from_millis(1500));
    let screen = {
        let again = tmux.capture()?;
        if again.contains(&row_start) { again } else { screen }
    };
    for l in screen.lines() {
        ensure!(l.chars().count() <= COLUMNS, "a line wider than {COLUMNS} columns:\n{l}\n\n{screen}");
    }
    // tmux wraps what does not fit: a wrapped row would start a line with its tail.
    ensure!(!screen.lines().any(|l| l.starts_with("main.go:")), "a wrapped row:\n{screen}");
    for label in
        ["START FUNCTION", "PARKED AT", "WAIT REASON", "BLOCKED", "events ", "/s)", "lost ", "dropped ", "mode ", "probes: "]
    {
        ensure!(screen.contains(label), "{label:?} missing from the --top screen:\n{screen}");
    }
    let row = screen.lines().find(|l| l.trim_start().starts_with(&row_start)).context("row")?;
    // The goroutine's function, main.deadlockA, also where (Go 1.22+) `go deadlockA(a, b)` starts
    // the goroutine in a wrapper the compiler made (main.main.gowrap1).
    let start = row.find("main.deadlockA").with_context(|| format!("start function missing from {row:?}"))?;
    let site = row.find(&format!("main.go:{line}")).with_context(|| format!("park site main.go:{line} missing from {row:?}"))?;
    ensure!(start < site, "start function and park site out of order: {row:?}");
    ensure!(!row.contains(" at main.go"), "start function and park site joined: {row:?}");
    Ok(())
}
