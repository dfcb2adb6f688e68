//! The `goscope` command line. Errors end here as one line on stderr and a non-zero exit.
use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use goscope::{
    attach::{self, AttachOptions},
    detect::FindingType,
    dump_cmd, inspect_cmd, node,
    output::Format,
};

#[derive(Parser)]
#[command(name = "goscope", version, about = "Watch running Go programs from the outside: goroutines, channels, blocking")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What every watching session takes (`attach` for one process, `run` for each of many).
#[derive(clap::Args)]
struct SessionArgs {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Stop after this long (e.g. 30s, 5m, 1h30m).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Report goroutines blocked on a channel, select or lock for longer than this.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    block_threshold: Duration,
    /// With --format json: print a {"kind":"state"} line (goroutine counts by state and wait
    /// reason) this often, e.g. 5s.
    #[arg(long, value_parser = humantime::parse_duration)]
    state_every: Option<Duration>,
    /// Most memory (MiB) one leak proof may read: it follows every pointer the goroutines and
    /// globals reach. Past it, leaks and deadlocks are only reported as suspects.
    #[arg(long, default_value_t = 256)]
    leak_scan_budget_mib: u64,
    #[command(flatten)]
    otlp: goscope::export::OtlpArgs,
}

impl SessionArgs {
    fn options(self, pid: u32, ring_bytes: u32, show_events: bool, top: bool, fail_on: Vec<FindingType>) -> AttachOptions {
        AttachOptions {
            pid,
            format: self.format,
            duration: self.duration,
            ring_bytes,
            queue_len: 65_536,
            show_events,
            block_threshold: self.block_threshold,
            top,
            state_every: self.state_every,
            fail_on,
            leak_scan_budget: self.leak_scan_budget_mib << 20,
            otlp: self.otlp,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Attach to a running Go process and stream goroutine events until Ctrl-C or --duration.
    Attach {
        /// Process to watch.
        #[arg(long)]
        pid: u32,
        /// Size of the kernel ring buffer in bytes (a power of two, multiple of the page size).
        #[arg(long, default_value_t = agent_ebpf::DEFAULT_RING_BYTES, value_parser = parse_ring_bytes)]
        ring_buffer_size: u32,
        /// Print only findings, not every goroutine event.
        #[arg(long)]
        no_events: bool,
        /// Show a live summary (goroutines by state and wait reason, longest blocked) that
        /// refreshes in place, instead of the event stream.
        #[arg(long, conflicts_with = "format")]
        top: bool,
        /// Stop and exit with status 3 as soon as a finding of this type is made (repeatable),
        /// e.g. to guard an integration test run.
        #[arg(long, value_enum)]
        fail_on: Vec<FindingType>,
        #[command(flatten)]
        session: SessionArgs,
    },
    /// Node agent: watch every Go process on the host (or those --match names), attaching to
    /// processes as they start; findings (and OTLP) per process. For a DaemonSet or a service.
    Run {
        /// Watch processes whose executable path or command name contains this (repeatable;
        /// default: every Go process).
        #[arg(long = "match", value_name = "TEXT")]
        include: Vec<String>,
        /// Never watch processes whose executable path or command name contains this.
        #[arg(long, value_name = "TEXT")]
        exclude: Vec<String>,
        /// How often to look for new processes.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        scan_every: Duration,
        /// Kernel ring buffer per watched process, in bytes.
        #[arg(long, default_value_t = 1 << 20, value_parser = parse_ring_bytes)]
        ring_buffer_size: u32,
        /// Also print every goroutine event (off by default: a node has many processes).
        #[arg(long)]
        events: bool,
        #[command(flatten)]
        session: SessionArgs,
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
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
        Command::Attach { pid, ring_buffer_size, no_events, top, fail_on, session } => {
            let options = session.options(pid, ring_buffer_size, !no_events, top, fail_on);
            runtime().and_then(|rt| rt.block_on(attach::run(options)).map_err(anyhow::Error::from))
        }
        Command::Run { include, exclude, scan_every, ring_buffer_size, events, session } => {
            let duration = session.duration;
            let options = node::RunOptions {
                selection: node::Selection { include, exclude },
                scan_every,
                duration,
                session: session.options(0, ring_buffer_size, events, false, Vec::new()),
            };
            runtime().and_then(|rt| rt.block_on(node::run(options)).map_err(anyhow::Error::from))
        }
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
