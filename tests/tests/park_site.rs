//! What goscope captures at a park, on every Go release (`GO_VERSIONS`) and the installed Go,
//! plain and stripped: the syncwait fixture blocks one goroutine each on a sync.Mutex, an
//! RWMutex's write and read side, a WaitGroup and a Cond; their `parked` events must carry the
//! primitive's address (`lock`) and the blocking call's function and line (`park_site`).
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use goscope_tests::goscope::{Goscope, kind, parse_hex};
use goscope_tests::{GoFixture, Variant, require_bpf};
use serde_json::Value;

const VARIANTS: [Variant; 2] = [Variant::Plain, Variant::Stripped];

fn run(fixture: &GoFixture) -> Result<()> {
    let mut target = fixture.spawn(&[])?;
    let start = target.expect_json("fixture", Duration::from_secs(20))?;
    let mut gs = Goscope::attach(target.pid(), &[])?;
    gs.wait_attached(Duration::from_secs(90))?;
    target.send_line("go")?;
    let waits = target.expect_json("waits", Duration::from_secs(60))?;
    target.expect_json("done", Duration::from_secs(30))?;
    // The last blocker's events follow its release; give goscope a moment to print them.
    std::thread::sleep(Duration::from_millis(500));
    gs.stop(Duration::from_secs(20))?;
    target.close_stdin();
    let waits = waits["waits"].as_array().ok_or_else(|| anyhow!("no waits array: {waits}"))?;
    if waits.len() != 5 {
        bail!("the fixture ({start}) reported {} waits, expected 5: {waits:?}", waits.len());
    }
    let mut problems = Vec::new();
    for w in waits {
        let goid = w["goid"].as_u64().context("goid")?;
        let want_lock = parse_hex(w["lock"].as_str().context("lock")?)?;
        let want_site = (w["function"].as_str(), w["line"].as_u64());
        let parked: Vec<&Value> =
            gs.events().iter().filter(|e| kind(e) == "parked" && e["goid"].as_u64() == Some(goid)).collect();
        // Other parks of the goroutine (e.g. on a runtime semaphore while a GC runs) are not at the
        // blocking call; a woken Mutex waiter that loses the race parks there again. A woken Cond
        // waiter re-locks the Cond's Mutex inside Wait, so it may park at the same line on that.
        let relocks_cond_mutex = |e: &Value| w["wait"] == "cond" && e["wait_reason"] == "sync.Mutex.Lock";
        let at_call: Vec<&&Value> = parked
            .iter()
            .filter(|e| {
                (e["park_site"]["function"].as_str(), e["park_site"]["line"].as_u64()) == want_site && !relocks_cond_mutex(e)
            })
            .collect();
        if at_call.is_empty() {
            problems.push(format!("{}: no parked event of goid {goid} at {want_site:?}; observed {parked:?}", w["wait"]));
        }
        for e in at_call {
            let lock = e["lock"].as_str().map(parse_hex).transpose()?;
            if lock != Some(want_lock) || e["park_site"]["file"] != w["file"] {
                problems.push(format!("{}: expected lock {want_lock:#x} and file {}, observed {e}", w["wait"], w["file"]));
            }
        }
    }
    if !problems.is_empty() {
        bail!("{}:\n  {}\nstderr: {}", fixture.label(), problems.join("\n  "), gs.stderr().trim());
    }
    Ok(())
}

fn matrix(version: Option<&str>) -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let specs: Vec<_> = VARIANTS.iter().map(|&v| ("syncwait", version, v)).collect();
    let mut failures = Vec::new();
    for built in GoFixture::build_many(&specs) {
        match built.and_then(|f| run(&f).map(|()| eprintln!("ok: {}", f.label()))) {
            Ok(()) => {}
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if !failures.is_empty() {
        bail!("{} of {} variant(s) failed:\n{}", failures.len(), VARIANTS.len(), failures.join("\n\n"));
    }
    Ok(())
}

#[test]
fn installed_go() -> Result<()> {
    matrix(None)
}

goscope_tests::go_version_tests!(matrix);
