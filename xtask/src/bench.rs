//! `cargo xtask bench`: figures, not pass/fail.
//! - what watching costs (`overhead`): Go workloads measured with no tracing, with Go's
//!   runtime/trace and with each goscope mode, side by side and interleaved, medians of rounds;
//! - the state model: events/s absorbed on one core and memory per tracked goroutine
//!   (`agent/benches/state.rs`);
//! - leak proof by reachability (`goscope_memory::find_leaked`): time and bytes read on the
//!   leaks fixture with 100k extra goroutines and a 300 MiB pointer-rich heap.
mod overhead;
mod proc_stat;
mod workloads;

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, bail};

use crate::{ChildGuard, check, workspace_root};

/// What `cargo xtask bench` runs.
pub struct Options {
    /// Short windows and only the overhead table (a few minutes).
    pub quick: bool,
    /// Rounds per workload; every mode runs once per round, in a rotated order.
    pub rounds: usize,
    /// Length of one measurement window (None: 2 s quick, 5 s otherwise).
    pub window: Option<Duration>,
    /// Only the workloads whose name matches.
    pub workload: Option<regex::Regex>,
    /// Only the modes whose name matches (plus `off`, every ratio's base).
    pub mode: Option<regex::Regex>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let root = workspace_root();
    check(crate::bootstrap::cargo().current_dir(&root).args(["build", "--release", "-p", "goscope"]))?;
    let window = options.window.unwrap_or(Duration::from_secs(if options.quick { 2 } else { 5 }));
    overhead::run(&root, options, window)?;
    if options.quick {
        return Ok(());
    }
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
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting the leaks fixture")?,
    );
    let mut prog_out = std::io::BufReader::new(prog.0.stdout.take().context("leaks stdout")?);
    let ready = workloads::read_line(&mut prog_out)?;
    if !ready.contains("\"goids\"") {
        bail!("the leaks fixture did not start: {ready:?}");
    }
    println!("leak proof by reachability (leaks fixture, {HERD} extra goroutines, {HEAP_MIB} MiB heap; 3 rounds):");
    check(Command::new(root.join("target/release/examples/snapshot-bench")).args([&prog.0.id().to_string(), "3", "--reach"]))
}
