//! The bench's Go workloads (xtask/bench-go: benchload) and a real server from the Go module
//! proxy (caddy), how to start them with and without runtime/trace, and how to load them.
use std::{
    io::{BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{ChildGuard, check};

/// Pinned so that every bench run measures the same server.
const CADDY_MODULE: &str = "github.com/caddyserver/caddy/v2/cmd/caddy@v2.11.9";

/// The programs the bench runs, built once per bench run (Go's build cache makes later builds
/// cheap; caddy's first build takes minutes).
pub struct Programs {
    pub benchload: PathBuf,
    /// None when caddy could not be built (offline): its rows are skipped with a note.
    pub caddy: Option<PathBuf>,
    pub scratch: PathBuf,
}

impl Programs {
    pub fn build(root: &Path) -> anyhow::Result<Self> {
        let scratch = root.join("target/bench");
        std::fs::create_dir_all(scratch.join("bin"))?;
        let benchload = scratch.join("bin/benchload");
        check(Command::new("go").current_dir(root.join("xtask/bench-go")).args(["build", "-o"]).arg(&benchload).arg("."))?;
        let caddy = scratch.join("bin/caddy");
        let built = caddy.exists()
            || Command::new("go")
                .args(["install", CADDY_MODULE])
                .env("GOBIN", scratch.join("bin"))
                .current_dir(&scratch)
                .status()
                .is_ok_and(|s| s.success());
        if !built {
            eprintln!("xtask bench: could not build {CADDY_MODULE} (is the Go module proxy reachable?): no caddy rows");
        }
        Ok(Self { benchload, caddy: built.then_some(caddy), scratch })
    }

    pub fn trace_file(&self) -> PathBuf {
        self.scratch.join("runtime-trace.out")
    }
}

/// What a workload is measured by.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// An HTTP server: wrk at saturation (throughput, p99), then a fixed rate (CPU per request).
    Server,
    /// A loop that counts operations for a window: throughput only.
    Loop,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    HttpHandoff,
    PingPong,
    Churn,
    Caddy,
}

impl Workload {
    pub const ALL: [Workload; 4] = [Workload::HttpHandoff, Workload::PingPong, Workload::Churn, Workload::Caddy];

    pub fn name(self) -> &'static str {
        match self {
            Workload::HttpHandoff => "http-handoff",
            Workload::PingPong => "pingpong",
            Workload::Churn => "churn",
            Workload::Caddy => "caddy",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Workload::HttpHandoff => "net/http server, a goroutine + channel handoff per request (wrk -t1 -c32)",
            Workload::PingPong => "channel ping-pong, GOMAXPROCS=1 (round trips/s)",
            Workload::Churn => "goroutine churn, batches of 64 (goroutines/s)",
            Workload::Caddy => "caddy v2.11.9 file server, 4 KiB file (wrk -t1 -c32)",
        }
    }

    pub fn shape(self) -> Shape {
        match self {
            Workload::HttpHandoff | Workload::Caddy => Shape::Server,
            Workload::PingPong | Workload::Churn => Shape::Loop,
        }
    }
}

/// A running HTTP server.
pub struct Server {
    /// Kills the server when the measurement ends.
    _process: ChildGuard,
    pub pid: u32,
    pub url: String,
    /// Where runtime/trace is streamed from while a window is measured (caddy's admin
    /// endpoint); None when the server writes its own trace or traces nothing.
    pub trace_url: Option<String>,
}

pub fn start_server(workload: Workload, programs: &Programs, trace: bool) -> anyhow::Result<Server> {
    match workload {
        Workload::HttpHandoff => start_benchload_server(programs, trace),
        Workload::Caddy => start_caddy(programs, trace),
        _ => bail!("{} is not a server", workload.name()),
    }
}

fn start_benchload_server(programs: &Programs, trace: bool) -> anyhow::Result<Server> {
    let mut cmd = Command::new(&programs.benchload);
    cmd.arg("server");
    if trace {
        cmd.arg("-trace").arg(programs.trace_file());
    }
    let mut process = ChildGuard(cmd.stdout(Stdio::piped()).spawn().context("starting benchload server")?);
    let mut out = BufReader::new(process.0.stdout.take().context("benchload stdout")?);
    let ready: serde_json::Value = serde_json::from_str(&read_line(&mut out)?).context("benchload server did not start")?;
    let addr = ready["addr"].as_str().context("no addr from benchload server")?;
    Ok(Server { pid: process.0.id(), url: format!("http://{addr}/hello"), _process: process, trace_url: None })
}

fn start_caddy(programs: &Programs, trace: bool) -> anyhow::Result<Server> {
    let caddy = programs.caddy.as_ref().context("caddy was not built")?;
    let site = programs.scratch.join("caddy-site");
    std::fs::create_dir_all(&site)?;
    std::fs::write(site.join("index.html"), "x".repeat(4096))?;
    let (port, admin_port) = (free_port()?, free_port()?);
    let config = serde_json::json!({
        "admin": {"listen": format!("127.0.0.1:{admin_port}")},
        "apps": {"http": {"servers": {"bench": {
            "listen": [format!("127.0.0.1:{port}")],
            "automatic_https": {"disable": true},
            "routes": [{"handle": [{"handler": "file_server", "root": site}]}],
        }}}},
    });
    let config_path = programs.scratch.join("caddy.json");
    std::fs::write(&config_path, config.to_string())?;
    let process = ChildGuard(
        Command::new(caddy)
            .args(["run", "--config"])
            .arg(&config_path)
            .env("XDG_DATA_HOME", programs.scratch.join("caddy-data"))
            .env("XDG_CONFIG_HOME", programs.scratch.join("caddy-config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting caddy")?,
    );
    wait_for_port(port, Duration::from_secs(15)).context("caddy did not listen")?;
    let trace_url = trace.then(|| format!("127.0.0.1:{admin_port}"));
    Ok(Server { pid: process.0.id(), url: format!("http://127.0.0.1:{port}/"), _process: process, trace_url })
}

/// Streams runtime/trace from a Go server's `/debug/pprof/trace` for `seconds`, discarding it
/// (the reader stands in for a trace consumer). Returns when the trace ends.
pub fn stream_trace(admin: String, seconds: u64) -> thread::JoinHandle<anyhow::Result<u64>> {
    thread::spawn(move || {
        let mut conn = TcpStream::connect(&admin).with_context(|| format!("connecting to {admin}"))?;
        write!(conn, "GET /debug/pprof/trace?seconds={seconds} HTTP/1.0\r\nHost: {admin}\r\n\r\n")?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > timeout {
            bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// What wrk measured at saturation.
pub struct WrkResult {
    pub requests_per_s: f64,
    pub requests: f64,
    pub p99_ns: f64,
}

pub fn wrk(url: &str, window: Duration) -> anyhow::Result<WrkResult> {
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{}s", window.as_secs().max(1)), "--latency", url])
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("unexpected wrk output: {text}"))
}

fn parse_wrk(text: &str) -> Option<WrkResult> {
    let requests_per_s = text.lines().find_map(|l| l.trim().strip_prefix("Requests/sec:"))?.trim().parse().ok()?;
    let requests = text.lines().find(|l| l.contains(" requests in "))?.split_whitespace().next()?.parse().ok()?;
    let p99 = text.lines().find_map(|l| l.trim().strip_prefix("99%"))?.trim();
    Some(WrkResult { requests_per_s, requests, p99_ns: parse_wrk_duration(p99)? })
}

/// wrk's latency figures: "812.00us", "20.84ms", "1.02s", "2.00m".
fn parse_wrk_duration(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().ok()?;
    let scale = match unit {
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        _ => return None,
    };
    Some(value * scale)
}

/// What the fixed-rate load generator measured.
pub struct FixedRateResult {
    pub requests: f64,
    pub errors: f64,
}

pub fn fixed_rate(programs: &Programs, url: &str, rate: f64, window: Duration) -> anyhow::Result<FixedRateResult> {
    let out = Command::new(&programs.benchload)
        .args(["load", "-url", url, "-rate", &format!("{rate:.0}"), "-duration", &format!("{}ms", window.as_millis())])
        .output()
        .context("running benchload load")?;
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).with_context(|| format!("benchload load said {line:?}"))?;
    Ok(FixedRateResult {
        requests: v["requests"].as_f64().context("no requests")?,
        errors: v["errors"].as_f64().context("no errors")?,
    })
}

/// A workload that counts operations for a window each time it is asked to.
pub struct LoopProcess {
    /// Kills the workload when the measurement ends.
    _process: ChildGuard,
    pub pid: u32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

pub fn start_loop(workload: Workload, programs: &Programs, trace: bool) -> anyhow::Result<LoopProcess> {
    let mut cmd = Command::new(&programs.benchload);
    cmd.arg(workload.name());
    if workload == Workload::PingPong {
        cmd.env("GOMAXPROCS", "1");
    }
    if trace {
        cmd.arg("-trace").arg(programs.trace_file());
    }
    let mut process = ChildGuard(cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().context("starting benchload")?);
    let stdin = process.0.stdin.take().context("benchload stdin")?;
    let mut stdout = BufReader::new(process.0.stdout.take().context("benchload stdout")?);
    let ready = read_line(&mut stdout)?;
    if !ready.contains("\"pid\"") {
        bail!("benchload {} did not start: {ready:?}", workload.name());
    }
    Ok(LoopProcess { pid: process.0.id(), _process: process, stdin, stdout })
}

impl LoopProcess {
    /// Runs the loop for `window`; returns operations per second.
    pub fn run(&mut self, window: Duration) -> anyhow::Result<(f64, f64)> {
        writeln!(self.stdin, "run {}ms", window.as_millis())?;
        let line = read_line(&mut self.stdout)?;
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("benchload said {line:?}"))?;
        let ops = v["ops"].as_f64().context("no ops")?;
        let ns = v["ns"].as_f64().context("no ns")?;
        Ok((ops, ops / ns * 1e9))
    }
}

pub fn read_line(r: &mut impl std::io::BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 2s test @ http://127.0.0.1:1/x
  1 threads and 32 connections
  Latency Distribution
     50%  780.00us
     75%    1.49ms
     90%    4.19ms
     99%   20.84ms
  97016 requests in 3.06s, 11.75MB read
Requests/sec:  31663.46
Transfer/sec:      3.83MB
";

    #[test]
    fn wrk_output_gives_rate_count_and_p99() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests, 97016.0);
        assert!((r.requests_per_s - 31663.46).abs() < 1e-6);
        assert!((r.p99_ns - 20.84e6).abs() < 1.0);
    }

    #[test]
    fn wrk_durations_in_every_unit() {
        assert_eq!(parse_wrk_duration("812.00us"), Some(812_000.0));
        assert_eq!(parse_wrk_duration("1.50s"), Some(1.5e9));
        assert_eq!(parse_wrk_duration("12"), None);
        assert_eq!(parse_wrk_duration("3.0h"), None);
    }
}
