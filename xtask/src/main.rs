//! Developer tasks. `cargo xtask demo` and `cargo xtask test` are the README's two commands; both
//! bootstrap what they need first, idempotently.
mod bench;
mod bootstrap;
mod demo;
mod fuzz;
mod goker;
mod offsets;

use std::{
    path::PathBuf,
    process::{Child, Command},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the pinned nightly, bpf-linker and check Go/kernel prerequisites (idempotent).
    Bootstrap,
    /// Build goscope, start the bundled Go demo and attach goscope to it.
    Demo {
        /// How long to watch (e.g. 20s).
        #[arg(long, default_value = "20s")]
        duration: String,
        /// Output format passed to goscope.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Benchmarks that report figures: probe overhead on a live Go program, state model throughput.
    Bench,
    /// Score goscope on the GoKer blocking-bug kernels Go ships (recall by bug class against the
    /// runtime's own leak profile, chain completeness, time to detection) and check it makes no
    /// leak/deadlock finding on healthy programs.
    Goker {
        /// Runs per kernel (many kernels manifest their bug only on some runs).
        #[arg(long, default_value_t = 2)]
        runs: usize,
        /// Only the kernels whose name matches this regex (e.g. 'Cockroach|Etcd').
        #[arg(long)]
        kernel: Option<regex::Regex>,
        /// How long goscope watches a kernel at most (it stops early once every leaked goroutine is named).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// goscope's --block-threshold.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        threshold: std::time::Duration,
        /// Kernels run at once.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// How long goscope watches each healthy program (all at once); 0s skips them.
        #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
        healthy_duration: std::time::Duration,
    },
    /// Regenerate agent/inspect/offsets/go1.NN.txt from binaries built with every tested Go
    /// release (GO_VERSIONS in tests/src/fixture.rs).
    Offsets {
        /// Generate into target/ and fail with a diff if the checked-in tables differ.
        #[arg(long)]
        check: bool,
    },
    /// Run the whole test suite (unit, integration against real Go processes, eBPF attach tests).
    Test {
        /// Extra arguments passed to `cargo test` after `--`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Bootstrap => bootstrap::ensure_all(),
        Task::Demo { duration, format } => {
            bootstrap::ensure_all()?;
            demo::run(&duration, &format)
        }
        Task::Bench => {
            bootstrap::ensure_all()?;
            bench::run()
        }
        Task::Goker { runs, kernel, duration, threshold, jobs, healthy_duration } => {
            bootstrap::ensure_all()?;
            goker::run(&goker::Options { runs, kernel, duration, threshold, jobs, healthy_duration })
        }
        Task::Offsets { check } => {
            bootstrap::ensure_all()?;
            offsets::run(check)
        }
        Task::Test { args } => {
            bootstrap::ensure_all()?;
            run_tests(&args)
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// Kills and reaps a child process however the task ends.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command with inherited stdio; fails with the command line if it fails.
pub fn check(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn run_tests(args: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    if std::env::var("CI").as_deref() == Ok("true") {
        eprintln!("xtask: CI=true: eBPF tests must attach for real and fail if they cannot");
    }
    // The default members: everything but agent-ebpf's BPF-only binary, which the agent's build
    // script compiles for the BPF target.
    check(Command::new("cargo").current_dir(&root).args(["build", "--all-targets"]))?;
    let tests = check(Command::new("cargo").current_dir(&root).args(["test", "--no-fail-fast", "--"]).args(args));
    // The checked-in offsets tables still match what every tested Go release generates: ~3 s with
    // its binaries cached under target/go-offsets/; on a fresh target/ one link per release, the
    // compile work being already in the Go build cache from goscope-inspect's tests above.
    let offsets = offsets::run(true);
    tests?;
    offsets?;
    // goscope-inspect's fuzz targets over their checked-in corpus (~20 s; GOSCOPE_FUZZ_SECONDS).
    fuzz::run_briefly()
}
