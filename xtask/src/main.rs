//! Developer tasks. `cargo xtask demo` and `cargo xtask test` are the README's two commands; both
//! bootstrap what they need first, idempotently.
mod bench;
mod bootstrap;
mod demo;
mod fresh;
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
    /// Install the pinned nightly, bpf-linker, cargo-fuzz and check Go (idempotent).
    Bootstrap,
    /// Format the workspace with the pinned nightly's rustfmt and the repo's rustfmt.toml.
    Fmt,
    /// Build the release goscope binary (target/release/goscope) with the pinned nightly.
    Build,
    /// Build goscope, start the bundled Go demo and attach goscope to it.
    Demo {
        /// How long to watch (e.g. 20s).
        #[arg(long, default_value = "20s")]
        duration: String,
        /// Output format passed to goscope.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Benchmarks that report figures: what watching costs Go workloads (no tracing vs
    /// runtime/trace vs each goscope mode), state model throughput, leak proof cost.
    Bench {
        /// Only the overhead table, with 2 s windows: a few minutes.
        #[arg(long)]
        quick: bool,
        /// Rounds per workload (each runs every mode once, interleaved); medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// One measurement window (default 2s with --quick, else 5s).
        #[arg(long, value_parser = humantime::parse_duration)]
        window: Option<std::time::Duration>,
        /// Only the workloads whose name matches (http-handoff, pingpong, churn, caddy).
        #[arg(long)]
        workload: Option<regex::Regex>,
        /// Only the modes whose name matches (off always runs: it is every ratio's base).
        #[arg(long)]
        mode: Option<regex::Regex>,
    },
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
    /// Check that the README's commands work on a fresh machine: a fresh clone, run under a new
    /// RUSTUP_HOME/CARGO_HOME that holds only the stable toolchain, with RUSTUP_AUTO_INSTALL=0;
    /// each command twice, the second run must install nothing.
    FreshMachine {
        /// The xtask commands to run there (default: the demo).
        #[arg(default_values_t = ["demo --duration 8s".to_owned()])]
        commands: Vec<String>,
        /// Keep the temporary folder (clone, homes, logs) instead of deleting it.
        #[arg(long)]
        keep: bool,
    },
    /// Run the whole test suite: formatting and clippy checks, unit tests, integration tests
    /// against real Go processes and eBPF attach tests, the offsets check, brief fuzzing.
    Test {
        /// Extra arguments passed to `cargo test` after `--`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Bootstrap => bootstrap::ensure_test_tools(),
        Task::Build => {
            bootstrap::ensure_build_tools()?;
            check(bootstrap::cargo().args(["build", "--release", "-p", "goscope"]))?;
            eprintln!("xtask: built {}", workspace_root().join("target/release/goscope").display());
            Ok(())
        }
        Task::Fmt => {
            bootstrap::ensure_build_tools()?;
            check(bootstrap::cargo().args(["fmt", "--all"]))
        }
        Task::FreshMachine { commands, keep } => fresh::run(&commands, keep),
        Task::Demo { duration, format } => {
            bootstrap::ensure_build_tools()?;
            demo::run(&duration, &format)
        }
        Task::Bench { quick, rounds, window, workload, mode } => {
            bootstrap::ensure_build_tools()?;
            bootstrap::ensure_wrk()?;
            bench::run(&bench::Options { quick, rounds, window, workload, mode })
        }
        Task::Goker { runs, kernel, duration, threshold, jobs, healthy_duration } => {
            bootstrap::ensure_build_tools()?;
            goker::run(&goker::Options { runs, kernel, duration, threshold, jobs, healthy_duration })
        }
        Task::Offsets { check } => {
            bootstrap::ensure_build_tools()?;
            offsets::run(check)
        }
        Task::Test { args } => {
            bootstrap::ensure_test_tools()?;
            run_tests(&args)
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// Clippy with `-D warnings` ([workspace.lints] in Cargo.toml) on the host crates, then on the
/// eBPF programs for the BPF target (check only: no linker involved), in a target dir of its own.
fn clippy() -> anyhow::Result<()> {
    let hint = "clippy found warnings (lints are [workspace.lints] in Cargo.toml)";
    // agent-ebpf's binary builds only for the BPF target; its library is linted through the agent.
    check(bootstrap::cargo().args(["clippy", "--workspace", "--exclude", "agent-ebpf", "--all-targets", "--", "-D", "warnings"]))
        .context(hint)?;
    let bpf = ["clippy", "-p", "agent-ebpf", "--bin", "goscope-probes", "--target", "bpfel-unknown-none", "-Z", "build-std=core"];
    check(bootstrap::cargo().args(bpf).args(["--target-dir", "target/bpf-clippy", "--", "-D", "warnings"])).context(hint)
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
    if std::env::var("CI").as_deref() == Ok("true") {
        eprintln!("xtask: CI=true: eBPF tests must attach for real and fail if they cannot");
    }
    // Formatting and lints first: they fail in seconds, the suite takes many minutes.
    check(bootstrap::cargo().args(["fmt", "--all", "--check"])).context("formatting: run `cargo xtask fmt`")?;
    // The default members: everything but agent-ebpf's BPF-only binary, which the agent's build
    // script compiles for the BPF target. Lints are [workspace.lints] in Cargo.toml.
    clippy()?;
    check(bootstrap::cargo().args(["build", "--all-targets"]))?;
    let tests = check(bootstrap::cargo().args(["test", "--no-fail-fast", "--"]).args(args));
    // The checked-in offsets tables still match what every tested Go release generates: ~3 s with
    // its binaries cached under target/go-offsets/; on a fresh target/ one link per release, the
    // compile work being already in the Go build cache from goscope-inspect's tests above.
    let offsets = offsets::run(true);
    tests?;
    offsets?;
    // goscope-inspect's fuzz targets over their checked-in corpus (~20 s; GOSCOPE_FUZZ_SECONDS).
    fuzz::run_briefly()
}
