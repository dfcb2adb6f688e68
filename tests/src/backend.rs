//! A real tracing backend for the OTLP tests: Jaeger v2, built from source through the Go module
//! proxy, run on loopback with in-memory storage, and read back through its query API.
//!
//! - [`jaeger_binary`] builds `github.com/jaegertracing/jaeger/cmd/jaeger` once into
//!   `<target>/otlp-backend/jaeger-<version>/bin/jaeger` and reuses it afterwards.
//! - [`Jaeger::start`] writes a minimal config (OTLP gRPC and HTTP receivers, traces into memory,
//!   metrics to a Prometheus endpoint, logs to the `debug` exporter on stderr; every listener on
//!   127.0.0.1 with a free port) and waits until it is healthy.
//! - [`Jaeger::traces`] and friends read what arrived; [`Proxy`] sits between goscope and Jaeger
//!   to make the backend slow or unresponsive.
use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use std::{fs, thread};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use crate::goprogram::{GoProgram, Replaces};
use crate::process::ChildGuard;

/// The Go module and version built. Jaeger publishes its v2 binary (`cmd/jaeger`) from the module
/// `github.com/jaegertracing/jaeger`, whose module-proxy tags stay on the v1 line: `v1.76.0` is the
/// release tagged v2.13.0.
pub const JAEGER_MODULE: &str = "github.com/jaegertracing/jaeger";
pub const JAEGER_VERSION: &str = "v1.76.0";

/// `<target>/otlp-backend/jaeger-<version>/`.
pub fn jaeger_dir() -> PathBuf {
    crate::target_dir().join("otlp-backend").join(format!("jaeger-{JAEGER_VERSION}"))
}

/// Jaeger's build: a throwaway module requiring Jaeger at [`JAEGER_VERSION`] with Jaeger's own
/// `replace` directives and `go.sum` (see [`crate::goprogram`]).
pub const JAEGER: GoProgram = GoProgram {
    name: "jaeger",
    module: JAEGER_MODULE,
    version: JAEGER_VERSION,
    package: "github.com/jaegertracing/jaeger/cmd/jaeger",
    replaces: Replaces::Upstream,
    prebuilt_env: "GOSCOPE_JAEGER_BIN",
    build_tags: "",
};

/// The Jaeger binary: `$GOSCOPE_JAEGER_BIN` if set, else the cached build in [`jaeger_dir`],
/// built first if missing (several minutes on two cores the first time).
pub fn jaeger_binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| JAEGER.binary_in(&jaeger_dir()).map_err(|e| format!("{e:#}"))).clone().map_err(anyhow::Error::msg)
}

/// A throwaway certificate authority and a server certificate for 127.0.0.1 signed by it, made
/// with the `openssl` command line tool in `dir`.
pub struct TestCa {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    pub fn create(dir: &Path) -> Result<TestCa> {
        fs::create_dir_all(dir)?;
        let openssl = |args: &[&str]| -> Result<()> {
            let out =
                Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().context("running openssl")?;
            ensure_ok(&out, &format!("openssl {}", args.join(" ")))
        };
        fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )?;
        fs::write(dir.join("ca.ext"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")?;
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.csr",
            "-subj",
            "/CN=goscope test CA",
        ])?;
        openssl(&["x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-out", "ca.pem", "-days", "2", "-extfile", "ca.ext"])?;
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ])?;
        Ok(TestCa { ca_cert: dir.join("ca.pem"), server_cert: dir.join("server.pem"), server_key: dir.join("server.key") })
    }
}

fn ensure_ok(out: &std::process::Output, what: &str) -> Result<()> {
    if !out.status.success() {
        bail!("{what} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Reserves `n` distinct free loopback ports (bound together, then released).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Ports of one Jaeger instance, all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct JaegerPorts {
    pub otlp_grpc: u16,
    pub otlp_http: u16,
    pub query_http: u16,
    pub query_grpc: u16,
    pub health: u16,
    pub prometheus: u16,
}

/// A running Jaeger; killed when dropped.
pub struct Jaeger {
    pub ports: JaegerPorts,
    dir: PathBuf,
    child: Option<ChildGuard>,
    /// stderr of earlier runs of this instance (before a restart).
    old_logs: String,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

impl Jaeger {
    /// Builds (if needed) and starts Jaeger on free loopback ports.
    pub fn start() -> Result<Jaeger> {
        Self::start_with(None)
    }

    /// Like [`Self::start`], with the OTLP receivers serving TLS with this certificate and key
    /// (PEM files); see [`TestCa`].
    pub fn start_tls(cert: &Path, key: &Path) -> Result<Jaeger> {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> Result<Jaeger> {
        let bin = jaeger_binary()?;
        let p = free_ports(6)?;
        let ports =
            JaegerPorts { otlp_grpc: p[0], otlp_http: p[1], query_http: p[2], query_grpc: p[3], health: p[4], prometheus: p[5] };
        let dir = jaeger_dir().join("runs").join(format!("{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir_all(&dir)?;
        let mut config = config_yaml(&ports);
        if let Some((cert, key)) = tls {
            let tls = format!("\n        tls:\n          cert_file: {}\n          key_file: {}", cert.display(), key.display());
            for proto in [ports.otlp_grpc, ports.otlp_http] {
                let line = format!("endpoint: 127.0.0.1:{proto}");
                config = config.replacen(&line, &format!("{line}{tls}"), 1);
            }
        }
        fs::write(dir.join("config.yaml"), config)?;
        let mut j = Jaeger { ports, dir, child: None, old_logs: String::new() };
        j.spawn(&bin)?;
        Ok(j)
    }

    fn spawn(&mut self, bin: &Path) -> Result<()> {
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(format!("file:{}", self.dir.join("config.yaml").display()));
        let child = ChildGuard::spawn("jaeger", cmd)?;
        self.child = Some(child);
        self.wait_healthy(Duration::from_secs(60))
    }

    fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, body)) = http_get(self.ports.health, "/status")
                && (body.contains("\"healthy\":true") || body.contains("StatusOK"))
            {
                return Ok(());
            }
            let child = self.child.as_mut().expect("running");
            if !child.is_running() {
                bail!("Jaeger exited at start: {}", child.stderr_text());
            }
            if Instant::now() > deadline {
                bail!("Jaeger not healthy within {timeout:?}: {}", child.stderr_text());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills Jaeger (the backend goes away; its in-memory data with it).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
            self.old_logs.push_str(&c.stderr_text());
        }
    }

    /// Starts it again on the same ports (after [`Self::stop`]).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let bin = jaeger_binary()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn(&bin) {
                Ok(()) => return Ok(()),
                // A port may linger for a moment after the kill.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("goscope-tests: Jaeger restart retry: {e:#}");
                    self.stop();
                    thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn otlp_grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.otlp_grpc)
    }

    /// The endpoints with `https://`, for a [`Self::start_tls`] instance.
    pub fn otlp_grpcs_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.otlp_grpc)
    }

    pub fn otlp_https_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.otlp_http)
    }

    pub fn otlp_http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.otlp_http)
    }

    /// GET on the query API; the parsed JSON.
    pub fn query(&self, path: &str) -> Result<Value> {
        let (status, body) = http_get(self.ports.query_http, path)?;
        if status != 200 {
            bail!("GET {path}: HTTP {status}: {body}");
        }
        serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON: {body}"))
    }

    /// Services that sent spans.
    pub fn services(&self) -> Result<Vec<String>> {
        let v = self.query("/api/services")?;
        Ok(v["data"].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default())
    }

    /// Every trace of `service` from the last hour (Jaeger's JSON: `traceID`, `spans`, `processes`).
    pub fn traces(&self, service: &str) -> Result<Vec<Value>> {
        let v = self.query(&format!("/api/traces?service={}&limit=10000&lookback=1h", urlencode(service)))?;
        Ok(v["data"].as_array().cloned().unwrap_or_default())
    }

    /// Every span of `service`, flattened, each with its trace's process under `"process"`.
    pub fn spans(&self, service: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for t in self.traces(service)? {
            for s in t["spans"].as_array().into_iter().flatten() {
                let mut s = s.clone();
                let pid = s["processID"].as_str().unwrap_or_default().to_owned();
                s["process"] = t["processes"][&pid].clone();
                out.push(s);
            }
        }
        // A span can come back in several traces' results (references); keep one of each.
        out.sort_by_key(|s| s["spanID"].as_str().unwrap_or_default().to_owned());
        out.dedup_by_key(|s| s["spanID"].as_str().unwrap_or_default().to_owned());
        Ok(out)
    }

    /// Polls [`Self::spans`] until `pred` holds for the list, or fails with what was there.
    pub fn wait_spans(&self, service: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans(service).unwrap_or_default();
            if pred(&spans) {
                return Ok(spans);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for spans of {service:?}; have {}: {}",
                    spans.len(),
                    spans.iter().map(|s| s["operationName"].to_string()).collect::<Vec<_>>().join(", ")
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// The Prometheus exposition of the metrics Jaeger received over OTLP.
    pub fn metrics_text(&self) -> Result<String> {
        let (status, body) = http_get(self.ports.prometheus, "/metrics")?;
        if status != 200 {
            bail!("GET /metrics: HTTP {status}");
        }
        Ok(body)
    }

    /// Jaeger's stderr, all runs: its own log and the `debug` exporter's dump of received log
    /// records (`LogRecord #n`, `SeverityText: ...`, `-> key: Str(value)`).
    pub fn logs_text(&self) -> String {
        let mut s = self.old_logs.clone();
        if let Some(c) = &self.child {
            s.push_str(&c.stderr_text());
        }
        s
    }

    /// Received log records, parsed from the `debug` exporter's output.
    pub fn log_records(&self) -> Vec<LogRecord> {
        parse_debug_logs(&self.logs_text())
    }

    /// Polls [`Self::log_records`] until `pred` holds.
    pub fn wait_logs(&self, timeout: Duration, pred: impl Fn(&[LogRecord]) -> bool) -> Result<Vec<LogRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.log_records();
            if pred(&logs) {
                return Ok(logs);
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for log records; have {}: {logs:?}", logs.len());
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn config_yaml(p: &JaegerPorts) -> String {
    format!(
        r#"# Written by goscope-tests: OTLP in, traces to memory, metrics to Prometheus, logs to stderr.
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
    metrics:
      receivers: [otlp]
      exporters: [prometheus]
    logs:
      receivers: [otlp]
      exporters: [debug]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
  jaeger_query:
    storage:
      traces: memstore
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc}
      http:
        endpoint: 127.0.0.1:{otlp_http}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
  prometheus:
    endpoint: 127.0.0.1:{prometheus}
  debug:
    verbosity: detailed
"#,
        health = p.health,
        query_http = p.query_http,
        query_grpc = p.query_grpc,
        otlp_grpc = p.otlp_grpc,
        otlp_http = p.otlp_http,
        prometheus = p.prometheus,
    )
}

/// One log record as the `debug` exporter printed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRecord {
    pub severity_text: String,
    pub event_name: String,
    pub body: String,
    /// Attribute → value as printed (`Str(x)` → `x`, `Int(5)` → `5`, `Bool(true)` → `true`,
    /// `Slice([...])` → `[...]`).
    pub attributes: Vec<(String, String)>,
    pub trace_id: String,
    pub span_id: String,
}

impl LogRecord {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// `Str(abc)` → `abc`; other `Kind(x)` → `x`.
fn unwrap_debug_value(v: &str) -> String {
    let v = v.trim();
    match (v.find('('), v.ends_with(')')) {
        (Some(i), true) => v[i + 1..v.len() - 1].to_owned(),
        _ => v.to_owned(),
    }
}

pub fn parse_debug_logs(text: &str) -> Vec<LogRecord> {
    let mut out = Vec::new();
    let mut cur: Option<LogRecord> = None;
    let mut in_attrs = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("LogRecord #") {
            out.extend(cur.take());
            cur = Some(LogRecord::default());
            in_attrs = false;
            continue;
        }
        let Some(rec) = cur.as_mut() else { continue };
        if let Some(v) = t.strip_prefix("SeverityText: ") {
            rec.severity_text = v.trim().to_owned();
        } else if let Some(v) = t.strip_prefix("EventName: ") {
            rec.event_name = v.trim().to_owned();
        } else if let Some(v) = t.strip_prefix("Body: ") {
            rec.body = unwrap_debug_value(v);
        } else if t.starts_with("Attributes:") {
            in_attrs = true;
        } else if let (true, Some(kv)) = (in_attrs, t.strip_prefix("-> ")) {
            if let Some((k, v)) = kv.split_once(": ") {
                rec.attributes.push((k.to_owned(), unwrap_debug_value(v)));
            }
        } else if let Some(v) = t.strip_prefix("Trace ID: ") {
            rec.trace_id = v.trim().to_owned();
            in_attrs = false;
        } else if let Some(v) = t.strip_prefix("Span ID: ") {
            rec.span_id = v.trim().to_owned();
        } else if !t.starts_with("-> ") {
            in_attrs = false;
            if t.starts_with("ResourceLog #") || t.starts_with("ScopeLogs #") || line.contains("\tinfo\t") {
                out.extend(cur.take());
            }
        }
    }
    out.extend(cur);
    out
}

/// A tag of a span in Jaeger's JSON (`tags: [{key, type, value}]`).
pub fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"].as_array()?.iter().find(|t| t["key"] == key).map(|t| &t["value"])
}

/// A tag of a span's process (the OTLP resource).
pub fn process_tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["process"]["tags"].as_array()?.iter().find(|t| t["key"] == key).map(|t| &t["value"])
}

/// The span's references as (refType, traceID, spanID).
pub fn references(span: &Value) -> Vec<(String, String, String)> {
    span["references"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("refType"), s("traceID"), s("spanID"))
        })
        .collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.1 GET to 127.0.0.1:`port` (`Connection: close`); returns status and body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: */*\r\nConnection: close\r\n\r\n")?;
    let mut r = BufReader::new(s);
    let mut status_line = String::new();
    r.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line {status_line:?}"))?;
    let (mut chunked, mut length) = (false, None);
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<usize>().ok();
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| anyhow!("bad chunk size {size:?}"))?;
            if n == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + n, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// What a [`Proxy`] does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards both ways.
    Forward,
    /// Forwards, holding every chunk from the client this long first (a slow backend).
    Delay(Duration),
    /// Accepts connections and reads requests, never forwards or answers (a hung backend).
    Blackhole,
}

/// A TCP proxy on 127.0.0.1 in front of a loopback port, whose behaviour can change at run time.
/// Stops (and closes its connections) when dropped.
pub struct Proxy {
    pub port: u16,
    mode: Arc<Mutex<ProxyMode>>,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(upstream_port: u16, mode: ProxyMode) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let mode = Arc::new(Mutex::new(mode));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (m, st, acc) = (Arc::clone(&mode), Arc::clone(&stop), Arc::clone(&accepted));
        thread::Builder::new().name("otlp-proxy".into()).spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        acc.fetch_add(1, Ordering::Relaxed);
                        let _ = client.set_nonblocking(false);
                        let (m, st) = (Arc::clone(&m), Arc::clone(&st));
                        let _ = thread::Builder::new()
                            .name("otlp-proxy-conn".into())
                            .spawn(move || serve(client, upstream_port, &m, &st));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        })?;
        Ok(Proxy { port, mode, stop, accepted })
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(client: TcpStream, upstream_port: u16, mode: &Mutex<ProxyMode>, stop: &AtomicBool) {
    let tick = Duration::from_millis(100);
    let _ = client.set_read_timeout(Some(tick));
    let upstream = match TcpStream::connect(("127.0.0.1", upstream_port)) {
        Ok(u) => u,
        Err(_) => return, // backend down: the client sees the connection close
    };
    let _ = upstream.set_read_timeout(Some(tick));
    let (Ok(mut c_read), Ok(mut u_write)) = (client.try_clone(), upstream.try_clone()) else { return };
    let (mut u_read, mut c_write) = (upstream, client);
    let current = || *mode.lock().unwrap_or_else(|e| e.into_inner());
    thread::scope(|s| {
        s.spawn(|| {
            // client → upstream
            let mut buf = [0u8; 16 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match c_read.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => match current() {
                        ProxyMode::Forward => {
                            if u_write.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        ProxyMode::Delay(d) => {
                            thread::sleep(d);
                            if u_write.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        ProxyMode::Blackhole => {}
                    },
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            let _ = u_write.shutdown(Shutdown::Both);
            let _ = c_read.shutdown(Shutdown::Both);
        });
        // upstream → client
        let mut buf = [0u8; 16 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match u_read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if current() == ProxyMode::Blackhole {
                        continue;
                    }
                    if c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let _ = c_write.shutdown(Shutdown::Both);
        let _ = u_read.shutdown(Shutdown::Both);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_exporter_output_parses() {
        let text = "2026-11-22T05:09:11.353Z\tinfo\tLogs\t{\"resource logs\": 1}\n\
ResourceLog #0\nScopeLogs #0\nLogRecord #0\nObservedTimestamp: 2026\nSeverityText: ERROR\n\
SeverityNumber: Error(17)\nEventName: goscope.finding\nBody: Str(g1 and g2 wait)\nAttributes:\n\
     -> goscope.finding.id: Str(deadlock:1:2-3)\n     -> goscope.finding.goroutine.ids: Slice([2,3])\n\
Trace ID: abcd\nSpan ID: ef01\nFlags: 1\nLogRecord #1\nSeverityText: INFO\nBody: Str(retracted: x)\n";
        let recs = parse_debug_logs(text);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].severity_text, "ERROR");
        assert_eq!(recs[0].event_name, "goscope.finding");
        assert_eq!(recs[0].body, "g1 and g2 wait");
        assert_eq!(recs[0].attr("goscope.finding.id"), Some("deadlock:1:2-3"));
        assert_eq!(recs[0].attr("goscope.finding.goroutine.ids"), Some("[2,3]"));
        assert_eq!((recs[0].trace_id.as_str(), recs[0].span_id.as_str()), ("abcd", "ef01"));
        assert_eq!(recs[1].body, "retracted: x");
    }
}
