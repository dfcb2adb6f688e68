//! The `goscope` command line. Errors end here as one line on stderr and a non-zero exit.
use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use goscope::{
    attach::{self, AttachOptions},
    dump_cmd, inspect_cmd,
    output::Format,
};

#[derive(Parser)]
#[command(name = "goscope", version, about = "Watch running Go programs from the outside: goroutines, channels, blocking")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to a running Go process and stream goroutine events until Ctrl-C or --duration.
    Attach {
        /// Process to watch.
        #[arg(long)]
        pid: u32,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Stop after this long (e.g. 30s, 5m, 1h30m).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Size of the kernel ring buffer in bytes (a power of two, multiple of the page size).
        #[arg(long, default_value_t = agent_ebpf::DEFAULT_RING_BYTES, value_parser = parse_ring_bytes)]
        ring_buffer_size: u32,
        /// Report goroutines blocked on a channel, select or lock for longer than this.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        block_threshold: Duration,
        /// Print only findings, not every goroutine event.
        #[arg(long)]
        no_events: bool,
        /// Show a live summary (goroutines by state and wait reason, longest blocked) that
        /// refreshes in place, instead of the event stream.
        #[arg(long, conflicts_with = "format")]
        top: bool,
        /// With --format json: print a {"kind":"state"} line (goroutine counts by state and wait
        /// reason) this often, e.g. 5s.
        #[arg(long, value_parser = humantime::parse_duration)]
        state_every: Option<Duration>,
        /// Stop and exit with status 3 as soon as a finding of this type is made (repeatable),
        /// e.g. to guard an integration test run.
        #[arg(long, value_enum)]
        fail_on: Vec<goscope::detect::FindingType>,
        /// Most memory (MiB) one leak proof may read: it follows every pointer the goroutines and
        /// globals reach. Past it, leaks and deadlocks are only reported as suspects.
        #[arg(long, default_value_t = 256)]
        leak_scan_budget_mib: u64,
        #[command(flatten)]
        otlp: goscope::export::OtlpArgs,
    },
    /// Analyse a Go binary (or a running process's binary): version, offsets, probe sites, support.
    Inspect {
        /// Path of the binary.
        #[arg(required_unless_present = "pid", conflicts_with = "pid")]
        path: Option<PathBuf>,
        /// Inspect the binary a running process executes.
        #[arg(long)]
        pid: Option<u32>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print every goroutine of a running Go process (state, wait reason, stack, channels), read
    /// from its memory without stopping it.
    Dump {
        /// Process to read.
        #[arg(long)]
        pid: u32,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err("must be a power of two of at least 4096".into());
    }
    Ok(n)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Attach {
            pid,
            format,
            duration,
            ring_buffer_size,
            block_threshold,
            no_events,
            top,
            state_every,
            fail_on,
            leak_scan_budget_mib,
            otlp,
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(attach::run(AttachOptions {
                    pid,
                    format,
                    duration,
                    ring_bytes: ring_buffer_size,
                    queue_len: 65_536,
                    show_events: !no_events,
                    block_threshold,
                    top,
                    state_every,
                    fail_on,
                    leak_scan_budget: leak_scan_budget_mib << 20,
                    otlp,
                }))
                .map_err(anyhow::Error::from)
            }),
        Command::Inspect { path, pid, format } => inspect_cmd::run(path, pid, format).map_err(anyhow::Error::from),
        Command::Dump { pid, format } => dump_cmd::run(pid, format).map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every error's message already names its cause: print it once, on one line.
            eprintln!("goscope: {e}");
            match e.downcast_ref::<attach::AttachError>() {
                // Distinct from operational failures (1), so scripts can tell them apart.
                Some(attach::AttachError::FailOn(_)) => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
