//! `goscope attach --dot-dir DIR`: a deadlock's wait-for graph as a Graphviz DOT file, rendered
//! with Debian's graphviz (`dot -Tsvg`): both goroutines, the channels they send on, where they
//! blocked, and the cycle.
use std::{fs, process::Command, time::Duration};

use anyhow::{Context as _, Result, ensure};
use goscope_tests::fixture::main_go_line;
use goscope_tests::{GoFixture, Goscope, Variant, require_bpf};

fn graphviz_present() -> bool {
    if Command::new("dot").arg("-V").output().is_ok_and(|o| o.status.success()) {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but graphviz (dot) is not installed");
    }
    eprintln!("SKIP: graphviz (dot) is not installed");
    false
}

#[test]
fn a_deadlock_graph_renders_with_graphviz() -> Result<()> {
    if !require_bpf()? || !graphviz_present() {
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("goscope-dot-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let fixture = GoFixture::build("deadlocked", None, Variant::Plain)?;
    let mut target = fixture.spawn(&[])?;
    let info = target.expect_json("deadlocked", Duration::from_secs(30))?;
    let dir_arg = dir.to_string_lossy().into_owned();
    let mut goscope = Goscope::attach(target.pid(), &["--no-events", "--block-threshold", "1s", "--dot-dir", &dir_arg])?;
    goscope.wait_attached(Duration::from_secs(60))?;
    let finding = goscope.events_until(|v| v["kind"] == "finding" && v["type"] == "deadlock", Duration::from_secs(60))?;
    let id = finding.last().and_then(|f| f["id"].as_str()).context("finding without id")?.to_string();
    goscope.stop(Duration::from_secs(30))?;

    let file = dir.join(format!("{}.dot", id.replace(':', "_")));
    let text = fs::read_to_string(&file).with_context(|| format!("{} (for finding {id})", file.display()))?;
    let out = Command::new("dot").arg("-Tsvg").arg(&file).output().context("running dot")?;
    let _ = fs::remove_dir_all(&dir);
    ensure!(out.status.success(), "dot failed on {}: {}\n{text}", file.display(), String::from_utf8_lossy(&out.stderr));
    let svg = String::from_utf8_lossy(&out.stdout);
    for g in info["deadlocked"].as_array().context("fixture line")? {
        let goid = g["goid"].as_u64().context("goid")?;
        let channel = g["channel"].as_str().context("channel")?;
        let send = if g["function"] == "main.deadlockA" { "\taToB <- 1" } else { "\tbToA <- 1" };
        let site = format!("main.go:{}", main_go_line("deadlocked", send)?);
        for wanted in [format!("goroutine {goid}"), format!("chan {channel}"), site, "chan send".to_string()] {
            ensure!(svg.contains(&wanted), "{wanted:?} not drawn:\n{text}");
        }
    }
    // The cycle: two dashed edges from the channels back to the goroutines.
    ensure!(text.matches("style=dashed").count() == 2, "no wait-for cycle:\n{text}");
    Ok(())
}
