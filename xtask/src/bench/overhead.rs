//! What watching costs: every workload with no tracing, with runtime/trace and with each goscope
//! mode, one fresh process per measurement, modes interleaved (rotated each round), medians.
use std::{
    io::BufReader,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    Options, proc_stat,
    workloads::{self, Programs, Shape, Workload},
};
use crate::{ChildGuard, check};

/// Load on a fresh server before it is measured.
const WARM_UP: Duration = Duration::from_secs(1);

/// How a measurement watches the workload.
#[derive(Clone, Copy)]
pub enum Watch {
    Off,
    RuntimeTrace,
    /// `goscope attach` with these arguments after `--pid P`.
    Goscope(&'static [&'static str]),
}

pub struct Mode {
    pub name: &'static str,
    pub watch: Watch,
}

/// Every mode, `off` first (the base of every ratio).
/// `goscope findings` keeps every probe (no budget governor); `goscope governed` is what
/// findings-only attach does by default (a 1% budget); `goscope scan` attaches no probe.
pub const MODES: [Mode; 6] = [
    Mode { name: "off", watch: Watch::Off },
    Mode { name: "runtime/trace", watch: Watch::RuntimeTrace },
    Mode { name: "goscope events", watch: Watch::Goscope(&["--format", "json"]) },
    Mode { name: "goscope findings", watch: Watch::Goscope(&["--format", "json", "--no-events", "--overhead-budget", "off"]) },
    Mode { name: "goscope governed", watch: Watch::Goscope(&["--format", "json", "--no-events"]) },
    Mode { name: "goscope scan", watch: Watch::Goscope(&["--format", "json", "--no-events", "--scan-only"]) },
];

/// One measurement of one mode.
#[derive(Default, Clone)]
struct Sample {
    /// Operations (requests, round trips, goroutines) a second at saturation.
    throughput: f64,
    p99_ns: Option<f64>,
    /// Target CPU ns per request at the fixed rate.
    cpu_per_request_ns: Option<f64>,
    /// Operations the workload did while goscope watched (both windows).
    ops: f64,
    agent: Option<AgentFigures>,
}

#[derive(Default, Clone)]
struct AgentFigures {
    cpu_ns: f64,
    events: f64,
    lost: f64,
    dropped: f64,
    rss_kib: f64,
    window_s: f64,
}

pub fn run(root: &Path, options: &Options, window: Duration) -> anyhow::Result<()> {
    let programs = Programs::build(root)?;
    let goscope = root.join("target/release/goscope");
    let modes: Vec<&Mode> = MODES
        .iter()
        .filter(|m| matches!(m.watch, Watch::Off) || options.mode.as_ref().is_none_or(|re| re.is_match(m.name)))
        .collect();
    for workload in Workload::ALL {
        if options.workload.as_ref().is_some_and(|re| !re.is_match(workload.name())) {
            continue;
        }
        if workload == Workload::Caddy && programs.caddy.is_none() {
            continue;
        }
        let bench = WorkloadBench { workload, programs: &programs, goscope: goscope.clone(), window };
        bench.run(&modes, options.rounds.max(1))?;
    }
    Ok(())
}

struct WorkloadBench<'a> {
    workload: Workload,
    programs: &'a Programs,
    goscope: PathBuf,
    window: Duration,
}

impl WorkloadBench<'_> {
    fn run(&self, modes: &[&Mode], rounds: usize) -> anyhow::Result<()> {
        // Half of saturation, from a warm-up run with nothing watching.
        let fixed_rate = match self.workload.shape() {
            Shape::Server => Some(self.measure(&MODES[0], None)?.throughput / 2.0),
            Shape::Loop => None,
        };
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); modes.len()];
        for round in 0..rounds {
            for i in (0..modes.len()).map(|i| (i + round) % modes.len()) {
                eprint!("\rbench {}: round {}/{rounds}, {:<20}", self.workload.name(), round + 1, modes[i].name);
                samples[i].push(self.measure(modes[i], fixed_rate)?);
            }
        }
        eprint!("\r{:80}\r", "");
        print_table(self.workload, modes, &samples, fixed_rate, rounds, self.window);
        Ok(())
    }

    fn measure(&self, mode: &Mode, fixed_rate: Option<f64>) -> anyhow::Result<Sample> {
        let trace = matches!(mode.watch, Watch::RuntimeTrace);
        let sample = match self.workload.shape() {
            Shape::Server => self.measure_server(mode, trace, fixed_rate),
            Shape::Loop => self.measure_loop(mode, trace),
        };
        let _ = std::fs::remove_file(self.programs.trace_file());
        sample
    }

    fn measure_server(&self, mode: &Mode, trace: bool, fixed_rate: Option<f64>) -> anyhow::Result<Sample> {
        let server = workloads::start_server(self.workload, self.programs, trace)?;
        // A fresh server is slow for its first second (connections, caches, heap growth): warm it
        // up before anything is measured or attached, in every mode alike.
        workloads::wrk(&server.url, WARM_UP)?;
        let agent = self.start_agent(mode, server.pid)?;
        let windows = if fixed_rate.is_some() { 2 } else { 1 };
        let tracer = server.trace_url.clone().map(|url| workloads::stream_trace(url, windows * self.window.as_secs() + 2));
        let agent_cpu_start = agent.as_ref().map(|a| proc_stat::cpu_ns(a.pid)).transpose()?;
        let wrk = workloads::wrk(&server.url, self.window)?;
        let mut sample =
            Sample { throughput: wrk.requests_per_s, p99_ns: Some(wrk.p99_ns), ops: wrk.requests, ..Sample::default() };
        if let Some(rate) = fixed_rate {
            let cpu_before = proc_stat::cpu_ns(server.pid)?;
            let load = workloads::fixed_rate(self.programs, &server.url, rate, self.window)?;
            let cpu = proc_stat::cpu_ns(server.pid)?.saturating_sub(cpu_before);
            if load.errors > 0.0 {
                eprintln!("\nbench {}: {} failed requests at the fixed rate", self.workload.name(), load.errors);
            }
            sample.cpu_per_request_ns = Some(cpu as f64 / load.requests.max(1.0));
            sample.ops += load.requests;
        }
        if let Some(agent) = agent {
            sample.agent = Some(agent.stop(agent_cpu_start.unwrap_or(0), windows as f64 * self.window.as_secs_f64())?);
        }
        if let Some(tracer) = tracer {
            let bytes = tracer.join().map_err(|_| anyhow::anyhow!("trace reader panicked"))??;
            if bytes == 0 {
                bail!("runtime/trace from {} gave nothing", self.workload.name());
            }
        }
        drop(server);
        Ok(sample)
    }

    fn measure_loop(&self, mode: &Mode, trace: bool) -> anyhow::Result<Sample> {
        let mut process = workloads::start_loop(self.workload, self.programs, trace)?;
        let agent = self.start_agent(mode, process.pid)?;
        let agent_cpu_start = agent.as_ref().map(|a| proc_stat::cpu_ns(a.pid)).transpose()?;
        let (ops, throughput) = process.run(self.window)?;
        let mut sample = Sample { throughput, ops, ..Sample::default() };
        if let Some(agent) = agent {
            sample.agent = Some(agent.stop(agent_cpu_start.unwrap_or(0), self.window.as_secs_f64())?);
        }
        drop(process);
        Ok(sample)
    }

    fn start_agent(&self, mode: &Mode, pid: u32) -> anyhow::Result<Option<Agent>> {
        match mode.watch {
            Watch::Goscope(args) => Agent::attach(&self.goscope, pid, args).map(Some),
            Watch::Off | Watch::RuntimeTrace => Ok(None),
        }
    }
}

/// A `goscope attach` session whose output is read (and dropped) as fast as goscope writes it.
struct Agent {
    process: ChildGuard,
    pid: u32,
    summary: mpsc::Receiver<String>,
}

impl Agent {
    fn attach(goscope: &Path, target: u32, args: &[&str]) -> anyhow::Result<Self> {
        let mut process = ChildGuard(
            Command::new(goscope)
                .args(["attach", "--pid", &target.to_string()])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting goscope")?,
        );
        let stdout = BufReader::new(process.0.stdout.take().context("goscope stdout")?);
        let (attached_tx, attached_rx) = mpsc::channel();
        let (summary_tx, summary) = mpsc::channel();
        thread::spawn(move || {
            use std::io::BufRead as _;
            for line in stdout.lines().map_while(Result::ok) {
                if line.contains("\"kind\":\"attached\"") {
                    let _ = attached_tx.send(());
                } else if line.contains("\"kind\":\"summary\"") {
                    let _ = summary_tx.send(line);
                }
            }
        });
        attached_rx.recv_timeout(Duration::from_secs(60)).context("goscope did not attach within 60 s")?;
        Ok(Self { pid: process.0.id(), process, summary })
    }

    /// SIGINT (goscope drains, detaches and prints its summary), then its figures.
    fn stop(self, cpu_start_ns: u64, window_s: f64) -> anyhow::Result<AgentFigures> {
        let rss_kib = proc_stat::rss_kib(self.pid)? as f64;
        let cpu_ns = proc_stat::cpu_ns(self.pid)?.saturating_sub(cpu_start_ns) as f64;
        check(Command::new("kill").args(["-INT", &self.pid.to_string()]))?;
        let line = self.summary.recv_timeout(Duration::from_secs(30)).context("goscope printed no summary")?;
        drop(self.process);
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("goscope summary {line:?}"))?;
        let field = |k: &str| v[k].as_f64().unwrap_or(0.0);
        Ok(AgentFigures { cpu_ns, events: field("events"), lost: field("lost"), dropped: field("dropped"), rss_kib, window_s })
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

/// Medians over rounds of one mode's figures.
struct Medians {
    throughput: f64,
    p99_ns: Option<f64>,
    cpu_per_request_ns: Option<f64>,
    /// Events goscope saw per workload operation.
    events_per_op: Option<f64>,
    agent_ns_per_event: Option<f64>,
    rss_mib: Option<f64>,
    events_per_s: Option<f64>,
    lost_and_dropped: Option<f64>,
}

impl Medians {
    fn of(samples: &[Sample]) -> Self {
        let pick = |f: &dyn Fn(&Sample) -> Option<f64>| median(samples.iter().filter_map(f).collect());
        Self {
            throughput: pick(&|s| Some(s.throughput)).unwrap_or(0.0),
            p99_ns: pick(&|s| s.p99_ns),
            cpu_per_request_ns: pick(&|s| s.cpu_per_request_ns),
            events_per_op: pick(&|s| s.agent.as_ref().map(|a| a.events / s.ops.max(1.0))),
            agent_ns_per_event: pick(&|s| s.agent.as_ref().filter(|a| a.events > 0.0).map(|a| a.cpu_ns / a.events)),
            rss_mib: pick(&|s| s.agent.as_ref().map(|a| a.rss_kib / 1024.0)),
            events_per_s: pick(&|s| s.agent.as_ref().map(|a| a.events / a.window_s)),
            lost_and_dropped: pick(&|s| s.agent.as_ref().map(|a| a.lost + a.dropped)),
        }
    }

    /// Extra target CPU per goscope event: from CPU per request at the fixed rate (servers),
    /// or from time per operation at saturation (loops, which use one CPU all the time).
    fn target_ns_per_event(&self, base: &Medians) -> Option<f64> {
        let events_per_op = self.events_per_op.filter(|e| *e > 0.0)?;
        let extra_per_op = match (self.cpu_per_request_ns, base.cpu_per_request_ns) {
            (Some(with), Some(without)) => with - without,
            _ => 1e9 / self.throughput - 1e9 / base.throughput,
        };
        Some(extra_per_op / events_per_op)
    }
}

fn print_table(
    workload: Workload,
    modes: &[&Mode],
    samples: &[Vec<Sample>],
    fixed_rate: Option<f64>,
    rounds: usize,
    window: Duration,
) {
    let medians: Vec<Medians> = samples.iter().map(|s| Medians::of(s)).collect();
    let base = &medians[0];
    println!();
    println!("{} — {}", workload.name(), workload.description());
    let rate = fixed_rate.map_or(String::new(), |r| format!(", fixed rate {r:.0}/s for CPU per request"));
    println!("  medians of {rounds} interleaved rounds, {}s windows{rate}", window.as_secs());
    println!(
        "  {:<18} {:>11} {:>6} {:>9} {:>6} {:>12} {:>6} {:>10} {:>10} {:>8} {:>10} {:>9}",
        "mode", "ops/s", "×", "p99", "×", "CPU/request", "×", "target/ev", "agent/ev", "RSS", "events/s", "lost+drop"
    );
    for (mode, m) in modes.iter().zip(&medians) {
        let ratio = |with: Option<f64>, without: Option<f64>| match (with, without) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".to_owned(),
        };
        let us = |v: Option<f64>| v.map_or("-".to_owned(), |ns| format!("{:.2}µs", ns / 1e3));
        let agent = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".to_owned(), f);
        println!(
            "  {:<18} {:>11.0} {:>6} {:>9} {:>6} {:>12} {:>6} {:>10} {:>10} {:>8} {:>10} {:>9}",
            mode.name,
            m.throughput,
            ratio(Some(m.throughput), Some(base.throughput)),
            m.p99_ns.map_or("-".to_owned(), |ns| format!("{:.2}ms", ns / 1e6)),
            ratio(m.p99_ns, base.p99_ns),
            us(m.cpu_per_request_ns),
            ratio(m.cpu_per_request_ns, base.cpu_per_request_ns),
            us(m.target_ns_per_event(base)),
            us(m.agent_ns_per_event),
            agent(m.rss_mib, &|v| format!("{v:.0}MiB")),
            agent(m.events_per_s, &|v| format!("{v:.0}")),
            agent(m.lost_and_dropped, &|v| format!("{v:.0}")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(4.0));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn target_cost_per_event_from_loop_time() {
        let base = Medians::of(&[Sample { throughput: 1e6, ..Sample::default() }]);
        let agent = AgentFigures { events: 4e6, window_s: 2.0, ..AgentFigures::default() };
        // 1 µs per op without, 5 µs with, 4 events per op: 1 µs per event.
        let with = Medians::of(&[Sample { throughput: 2e5, ops: 1e6, agent: Some(agent), ..Sample::default() }]);
        assert!((with.target_ns_per_event(&base).unwrap() - 1000.0).abs() < 1e-6);
    }
}
