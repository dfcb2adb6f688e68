//! The command line: `attach` one process, `run` as the node agent, `dump` a process's
//! goroutines, `inspect` a binary. Each subcommand puts the stages together; `main` dispatches.
pub mod attach;
pub mod dump;
pub mod inspect;
pub mod run;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

use crate::{detect::FindingType, session::SessionConfig, sink::Format};

#[derive(Parser)]
#[command(name = "goscope", version, about = "Watch running Go programs from the outside: goroutines, channels, blocking")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        session: SessionConfig,
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
        k8s: K8sArgs,
        #[command(flatten)]
        session: SessionConfig,
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

/// Where `run` finds the Kubernetes API server that names each process's pod and workload. In a
/// pod (`KUBERNETES_SERVICE_HOST` set) the in-cluster address and service account are used.
#[derive(Debug, Clone, clap::Args)]
pub struct K8sArgs {
    /// API server URL (default: in-cluster, from KUBERNETES_SERVICE_HOST/PORT).
    #[arg(long, value_name = "URL")]
    pub k8s_api_server: Option<String>,
    /// File holding the bearer token (default: the pod's service-account token).
    #[arg(long, value_name = "PATH", requires = "k8s_api_server")]
    pub k8s_token_file: Option<PathBuf>,
    /// CA certificate (PEM) of the API server (default: the pod's service-account CA).
    #[arg(long, value_name = "PATH", requires = "k8s_api_server")]
    pub k8s_ca_file: Option<PathBuf>,
    /// This node's name: only its pods are listed and watched (set it from the downward API).
    #[arg(long, value_name = "NAME", env = "K8S_NODE_NAME")]
    pub k8s_node_name: Option<String>,
    /// Never ask the API server (identity from cgroups and the environment only).
    #[arg(long, conflicts_with = "k8s_api_server")]
    pub no_k8s_api: bool,
}

fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err("must be a power of two of at least 4096".into());
    }
    Ok(n)
}
