//! One watching session of one process: the [`reader`] drains the ring buffer into a bounded
//! queue; the [`processor`] owns the state, applies events in order, runs the detectors on a
//! clock tick and writes to the sinks; [`findings`] confirms findings over ticks.
pub mod findings;
pub mod governor;
pub mod leakscan;
pub mod memory;
pub mod probe_hits;
pub mod processor;
pub mod reader;

use std::time::Duration;

use crate::{
    detect::FindingType,
    sink::{Format, otlp::OtlpArgs},
    target::k8s::K8sLookup,
};

/// Everything a watching session is configured with, from the command line: `attach` builds one,
/// `run` one for all its processes. The flags every session takes are parsed here; the rest
/// (`#[arg(skip)]`) the subcommand sets from its own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SessionConfig {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Stop after this long (e.g. 30s, 5m, 1h30m).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Report goroutines blocked on a channel, select or lock for longer than this.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub block_threshold: Duration,
    /// With --format json: print a {"kind":"state"} line (goroutine counts by state and wait
    /// reason) this often, e.g. 5s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub state_every: Option<Duration>,
    /// Most memory (MiB) one leak proof may read: it follows every pointer the goroutines and
    /// globals reach. Past it, leaks and deadlocks are only reported as suspects.
    #[arg(long, default_value_t = 256)]
    pub leak_scan_budget_mib: u64,
    /// Attach no uprobe at all: goroutine states, waits and findings come from periodic reads of
    /// the target's memory alone (the target pays only for the reads; no event stream). Blocked
    /// durations are then lower bounds, and a finding comes about one scan later.
    #[arg(long)]
    pub scan_only: bool,
    /// Attach every probe but the semaphore probe (the governor's `no_semaphore` level; sync
    /// waits' lock addresses then come from memory). For tests of each level.
    #[arg(long, hide = true, conflicts_with = "scan_only")]
    pub no_semaphore_probe: bool,
    /// Most CPU watching may cost the target, in percent of one CPU (`1`, `0.5%`), or `off`.
    /// A governed session starts in scan mode and attaches the probes once memory shows their
    /// estimated cost fits; over the budget, probes are detached (down to scan mode) until the
    /// estimate fits, and they come back when the load falls. Default: 1 when events are not
    /// printed, off when they are.
    #[arg(long, value_name = "PCT", value_parser = parse_budget)]
    pub overhead_budget: Option<Budget>,
    #[command(flatten)]
    pub otlp: OtlpArgs,
    /// Write each deadlock and leak finding's wait-for graph as Graphviz DOT into this directory,
    /// one `<finding id>.dot` file per finding (`dot -Tsvg FILE` draws it).
    #[arg(long, value_name = "DIR")]
    pub dot_dir: Option<std::path::PathBuf>,
    /// Keep the last seconds of goroutine events of each target, and write them for each
    /// deadlock and leak finding into this directory as `<finding id>.trace.json`, a Chrome trace
    /// (open it in ui.perfetto.dev or chrome://tracing). Scan mode records what the scans saw.
    #[arg(long, value_name = "DIR")]
    pub flight_recorder: Option<std::path::PathBuf>,
    /// How far back the flight recorder reaches (e.g. 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub flight_recorder_seconds: Duration,
    /// Size of the kernel ring buffer in bytes.
    #[arg(skip = agent_ebpf::DEFAULT_RING_BYTES)]
    pub ring_bytes: u32,
    /// Capacity of the queue from the reader to the processor, in events.
    #[arg(skip = 65_536_usize)]
    pub queue_len: usize,
    /// Print every goroutine event (otherwise only findings and summaries).
    #[arg(skip)]
    pub show_events: bool,
    /// Redraw the live summary on every tick instead of printing events.
    #[arg(skip)]
    pub top: bool,
    /// Stop (and make goscope exit non-zero) at the first finding of one of these types.
    #[arg(skip)]
    pub fail_on: Vec<FindingType>,
    /// Where `goscope run` looks up the Kubernetes pod of each process.
    #[arg(skip)]
    pub k8s: K8sLookup,
}

/// `--overhead-budget` when not given (and events are not printed).
pub const DEFAULT_BUDGET_PCT: f64 = 1.0;

/// A `--overhead-budget` value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    Off,
    /// Percent of one CPU.
    Percent(f64),
}

fn parse_budget(s: &str) -> Result<Budget, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Budget::Off);
    }
    let pct: f64 = s.trim_end_matches('%').trim().parse().map_err(|_| format!("{s:?} is neither a percentage nor `off`"))?;
    if !(pct > 0.0 && pct <= 100.0) {
        return Err(format!("{s}: the budget is a percentage of one CPU, above 0 and at most 100"));
    }
    Ok(Budget::Percent(pct))
}

impl SessionConfig {
    /// Bytes one leak proof may read.
    pub fn leak_scan_budget(&self) -> u64 {
        self.leak_scan_budget_mib << 20
    }

    /// The governor's budget in percent of one CPU, None when nothing governs what is attached
    /// (`--scan-only`, `--overhead-budget off`, or events printed without a budget given).
    pub fn governed_budget_pct(&self) -> Option<f64> {
        if self.scan_only {
            return None;
        }
        match self.overhead_budget {
            Some(Budget::Percent(p)) => Some(p),
            Some(Budget::Off) => None,
            None if self.show_events => None,
            None => Some(DEFAULT_BUDGET_PCT),
        }
    }

    /// Whether the session starts without probes: `--scan-only`, and every governed session
    /// (the governor attaches the probes once two scans show the load fits the budget, so a busy
    /// target never pays for probes the budget would not allow, not even at attach).
    pub fn starts_in_scan(&self) -> bool {
        self.scan_only || self.governed_budget_pct().is_some()
    }

    /// What watches the target at attach.
    pub fn start_level(&self) -> governor::Level {
        if self.starts_in_scan() {
            governor::Level::Scan
        } else if self.no_semaphore_probe {
            governor::Level::NoSemaphore
        } else {
            governor::Level::Probes
        }
    }

    /// Memory scans in scan mode happen every this many ticks (of [`reader::TICK`]): each tick
    /// when the threshold is short (a finding needs several agreeing scans within it), else
    /// every other.
    pub fn scan_every_ticks(&self) -> u64 {
        if self.block_threshold < Duration::from_secs(10) { 1 } else { 2 }
    }

    /// Whether events are printed: not while `--top` owns the screen.
    pub fn prints_events(&self) -> bool {
        self.show_events && !self.top
    }
}
