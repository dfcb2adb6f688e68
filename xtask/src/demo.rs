//! `cargo xtask demo`: build goscope and the bundled demo service, run the service, attach.
use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{ChildGuard, check, workspace_root};

pub fn run(duration: &str, format: &str) -> anyhow::Result<()> {
    let root = workspace_root();
    check(crate::bootstrap::cargo().current_dir(&root).args(["build", "--release", "-p", "goscope"]))?;
    let demo_dir = root.join("tests/fixtures/go/demo");
    let demo_bin = root.join("target/demo/goscope-demo");
    check(Command::new("go").current_dir(&demo_dir).args(["build", "-o"]).arg(&demo_bin).arg("."))?;
    // The attach needs root; a clear message beats a BPF permission error.
    if !Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0")) {
        bail!("the demo attaches eBPF probes: run it as root (sudo -E cargo xtask demo)");
    }
    let mut demo = ChildGuard(
        Command::new(&demo_bin)
            .arg("-wait")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the demo program")?,
    );
    let pid = demo.0.id();
    // The demo prints a legend, then waits for a line on stdin before it starts its goroutines,
    // so goscope sees them from their creation.
    let mut lines = BufReader::new(demo.0.stdout.take().context("demo stdout")?).lines();
    if let Some(Ok(first)) = lines.next() {
        eprintln!("demo: {first}");
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("demo: {line}");
        }
    });
    let mut goscope = Command::new(root.join("target/release/goscope"))
        // A short threshold so the demo's stuck goroutines are reported within its run.
        .args(["attach", "--pid", &pid.to_string(), "--duration", duration, "--format", format, "--block-threshold", "3s"])
        .spawn()
        .context("starting goscope")?;
    // Give goscope a moment to attach, then let the demo start its scenario.
    std::thread::sleep(std::time::Duration::from_secs(2));
    if let Some(stdin) = demo.0.stdin.as_mut() {
        use std::io::Write as _;
        let _ = writeln!(stdin, "go");
    }
    let status = goscope.wait()?;
    if !status.success() {
        bail!("goscope exited with {status}");
    }
    Ok(())
}
