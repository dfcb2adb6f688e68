//! The fuzz step of `cargo xtask test` (issue #3): every cargo-fuzz target of
//! `agent/inspect/fuzz` runs for a short while over its checked-in corpus, all targets at once.
//! A crash, timeout or out-of-memory (>512 MB RSS or a single malloc >512 MB) fails the step and
//! names the input that caused it. New inputs the fuzzers find go to `target/fuzz/`, never into
//! the checked-in corpus (grow that by hand: see agent/inspect/fuzz/Cargo.toml).
//!
//! `GOSCOPE_FUZZ_SECONDS` sets the time per target (default 20; 0 skips the step).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context as _, bail};

use crate::{check, workspace_root};

const DEFAULT_SECONDS: u64 = 20;

pub fn run_briefly() -> anyhow::Result<()> {
    let seconds = match std::env::var("GOSCOPE_FUZZ_SECONDS") {
        Ok(s) => s.trim().parse().with_context(|| format!("GOSCOPE_FUZZ_SECONDS={s:?} is not a number"))?,
        Err(_) => DEFAULT_SECONDS,
    };
    if seconds == 0 {
        eprintln!("xtask: GOSCOPE_FUZZ_SECONDS=0: skipping the fuzz targets");
        return Ok(());
    }
    let root = workspace_root();
    let fuzz_dir = root.join("agent/inspect/fuzz");
    check(crate::bootstrap::cargo().current_dir(&fuzz_dir).args(["fuzz", "build"]))?;
    let out = crate::bootstrap::cargo()
        .current_dir(&fuzz_dir)
        .args(["fuzz", "list"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo fuzz list")?;
    let targets: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();
    if !out.status.success() || targets.is_empty() {
        bail!("cargo fuzz list found no fuzz targets in {}", fuzz_dir.display());
    }
    eprintln!("xtask: fuzzing {} for {seconds} s each: {}", fuzz_dir.display(), targets.join(", "));

    let work = root.join("target/fuzz");
    let mut running = Vec::new();
    for t in &targets {
        let dir = work.join(t);
        let _ = fs::remove_dir_all(&dir);
        let (scratch, artifacts) = (dir.join("new-corpus"), dir.join("artifacts"));
        fs::create_dir_all(&scratch)?;
        fs::create_dir_all(&artifacts)?;
        let log = fs::File::create(dir.join("fuzz.log"))?;
        // The first corpus directory receives new inputs; the checked-in one is only read.
        let child = crate::bootstrap::cargo()
            .current_dir(&fuzz_dir)
            .args(["fuzz", "run", t])
            .arg(&scratch)
            .arg(fuzz_dir.join("corpus").join(t))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .args(["-rss_limit_mb=512", "-malloc_limit_mb=512", "-timeout=10"])
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning cargo fuzz run {t}"))?;
        running.push((t, dir, artifacts, crate::ChildGuard(child)));
    }
    let mut failures = Vec::new();
    for (t, dir, artifacts, mut child) in running {
        let status = child.0.wait()?;
        let found = artifact_files(&artifacts);
        let log = dir.join("fuzz.log");
        if status.success() && found.is_empty() {
            eprintln!("xtask: fuzz {t}: ok ({})", last_stats(&log));
            continue;
        }
        eprintln!("xtask: fuzz {t} FAILED ({status}); log: {}", log.display());
        eprintln!("{}", tail(&log, 40));
        for f in &found {
            eprintln!(
                "xtask: fuzz {t}: failing input {}\n  reproduce: (cd agent/inspect/fuzz && cargo fuzz run {t} {})",
                f.display(),
                f.display()
            );
        }
        failures.push(if found.is_empty() {
            format!("{t} (no input saved; see {})", log.display())
        } else {
            format!("{t}: {}", found.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "))
        });
    }
    if !failures.is_empty() {
        bail!("fuzzing found failures: {}", failures.join("; "));
    }
    Ok(())
}

/// crash-*, timeout-*, oom-*, leak-*, slow-unit-* files libFuzzer wrote.
fn artifact_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        fs::read_dir(dir).map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// libFuzzer's final "Done N runs in S second(s)" line.
fn last_stats(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default().lines().rev().find(|l| l.starts_with("Done ")).unwrap_or("no summary").to_owned()
}
