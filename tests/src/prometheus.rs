//! A real Prometheus for the alerting tests: Prometheus 3 and promtool, built from source through
//! the Go module proxy (see [`crate::goprogram`]), run on loopback with its OTLP receiver on, and
//! read back through its HTTP API.
//!
//! - [`prometheus_binary`] / [`promtool_binary`] build `cmd/prometheus` and `cmd/promtool` of
//!   `github.com/prometheus/prometheus` at [`PROMETHEUS_VERSION`] once (with the `remove_all_sd`
//!   tag: no cloud service discovery, which the tests do not use) and reuse them afterwards.
//! - [`Prometheus::start`] writes a config that loads the given rule files and evaluates them every
//!   second, starts Prometheus with `--web.enable-otlp-receiver` and waits until it is ready.
//! - [`Prometheus::query`] and [`Prometheus::alerts`] read what it holds.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use std::{fs, thread};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::backend::{free_ports, http_get};
use crate::goprogram::{GoProgram, Replaces};
use crate::process::ChildGuard;

/// The module-proxy version of Prometheus 3 (`v0.316.0` is Prometheus 3.16's module version).
pub const PROMETHEUS_VERSION: &str = "v0.316.0";

/// The Prometheus server.
pub const PROMETHEUS: GoProgram = GoProgram {
    name: "prometheus",
    module: "github.com/prometheus/prometheus",
    version: PROMETHEUS_VERSION,
    package: "github.com/prometheus/prometheus/cmd/prometheus",
    replaces: Replaces::Upstream,
    prebuilt_env: "GOSCOPE_PROMETHEUS_BIN",
    build_tags: "remove_all_sd",
};

/// promtool, from the same module and version.
pub const PROMTOOL: GoProgram = GoProgram {
    name: "promtool",
    package: "github.com/prometheus/prometheus/cmd/promtool",
    prebuilt_env: "GOSCOPE_PROMTOOL_BIN",
    ..PROMETHEUS
};

/// The Prometheus binary: `$GOSCOPE_PROMETHEUS_BIN`, else the cached build (built first if
/// missing: many minutes on two cores the first time).
pub fn prometheus_binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| PROMETHEUS.binary().map_err(|e| format!("{e:#}"))).clone().map_err(anyhow::Error::msg)
}

/// The promtool binary: `$GOSCOPE_PROMTOOL_BIN`, else the cached build.
pub fn promtool_binary() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| PROMTOOL.binary().map_err(|e| format!("{e:#}"))).clone().map_err(anyhow::Error::msg)
}

/// Runs `promtool ARGS` in `dir`; its output (stdout and stderr) when it succeeds.
pub fn promtool(args: &[&str], dir: &Path) -> Result<String> {
    let out = Command::new(promtool_binary()?)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running promtool {}", args.join(" ")))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("promtool {} failed ({}):\n{text}", args.join(" "), out.status);
    }
    Ok(text)
}

/// A running Prometheus; killed when dropped (its data directory stays for a look afterwards).
pub struct Prometheus {
    pub port: u16,
    child: ChildGuard,
}

static RUNS: AtomicU64 = AtomicU64::new(0);

impl Prometheus {
    /// Builds (if needed) and starts Prometheus on a free loopback port, evaluating `rule_files`
    /// every second, with its OTLP receiver at [`Self::otlp_metrics_endpoint`].
    pub fn start(rule_files: &[&Path]) -> Result<Prometheus> {
        let bin = prometheus_binary()?;
        let port = free_ports(1)?[0];
        let dir = PROMETHEUS.dir().join("runs").join(format!("{}-{}", std::process::id(), RUNS.fetch_add(1, Ordering::Relaxed)));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let mut config = String::from("global:\n  evaluation_interval: 1s\nrule_files:\n");
        for f in rule_files {
            let f = f.canonicalize().with_context(|| format!("rule file {}", f.display()))?;
            writeln!(config, "  - {}", f.display())?;
        }
        fs::write(dir.join("prometheus.yml"), config)?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-otlp-receiver")
            .current_dir(&dir);
        let mut p = Prometheus { port, child: ChildGuard::spawn("prometheus", cmd)? };
        p.wait_ready(Duration::from_secs(60))?;
        Ok(p)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if matches!(http_get(self.port, "/-/ready"), Ok((200, _))) {
                return Ok(());
            }
            if !self.child.is_running() {
                bail!("Prometheus exited at start: {}", self.child.stderr_text());
            }
            if Instant::now() > deadline {
                bail!("Prometheus not ready within {timeout:?}: {}", self.child.stderr_text());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The OTLP/HTTP metrics endpoint, to give as `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` (used as
    /// is; Prometheus takes metrics only, so the other signals stay off).
    pub fn otlp_metrics_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/otlp/v1/metrics", self.port)
    }

    /// GET `path` of the HTTP API; the `data` of a `"status":"success"` answer.
    fn api(&self, path: &str) -> Result<Value> {
        let (status, body) = http_get(self.port, path).with_context(|| format!("GET {path}"))?;
        let v: Value = serde_json::from_str(&body).with_context(|| format!("GET {path}: HTTP {status}: {body}"))?;
        if status != 200 || v["status"] != "success" {
            bail!("GET {path}: HTTP {status}: {body}");
        }
        Ok(v["data"].clone())
    }

    /// An instant query: the result vector (`[{"metric":{…},"value":[t,"v"]}, …]`).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(expr)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Every metric name Prometheus holds.
    pub fn metric_names(&self) -> Result<Vec<String>> {
        let data = self.api("/api/v1/label/__name__/values")?;
        Ok(data.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect())
    }

    /// The active alerts (pending and firing).
    pub fn alerts(&self) -> Result<Vec<Value>> {
        Ok(self.api("/api/v1/alerts")?["alerts"].as_array().cloned().unwrap_or_default())
    }

    /// The loaded rule groups and their rules' health (`/api/v1/rules`).
    pub fn rules(&self) -> Result<Vec<Value>> {
        Ok(self.api("/api/v1/rules")?["groups"].as_array().cloned().unwrap_or_default())
    }

    /// Polls `check` every 200 ms until it gives `Some`, or fails after `timeout` with what the
    /// last check said and Prometheus's log.
    pub fn wait_for<T>(&mut self, timeout: Duration, mut check: impl FnMut(&Self) -> Result<Option<T>>) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match check(self) {
                Ok(Some(t)) => return Ok(t),
                Ok(None) => String::from("not yet"),
                Err(e) => format!("{e:#}"),
            };
            if !self.child.is_running() {
                bail!("Prometheus exited: {}", self.child.stderr_text());
            }
            if Instant::now() > deadline {
                bail!("not within {timeout:?} ({last}); Prometheus log:\n{}", self.log_tail(40));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last `lines` lines of Prometheus's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.child.stderr_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// `s` as a URL query value: every byte but unreserved ones percent-encoded.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::percent_encode;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent_encode(r#"up{job="a b"} > 0"#), "up%7Bjob%3D%22a%20b%22%7D%20%3E%200");
        assert_eq!(percent_encode("a_b.c-d~"), "a_b.c-d~");
    }
}
