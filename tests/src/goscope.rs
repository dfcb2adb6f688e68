//! [`Goscope`]: the real `goscope attach --format json` running against a target process.
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use std::{env, fmt};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use crate::process::{ChildGuard, Line};

/// The goscope binary: `$GOSCOPE_BIN` if set, otherwise `<target>/debug/goscope`, built once per
/// test process with `cargo build -p goscope` (same target directory as the tests).
pub fn goscope_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = env::var_os("GOSCOPE_BIN").filter(|b| !b.is_empty()) {
            let bin = PathBuf::from(bin);
            return if bin.is_file() { Ok(bin) } else { Err(format!("GOSCOPE_BIN={} is not a file", bin.display())) };
        }
        let target = crate::target_dir();
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let start = Instant::now();
        let out = Command::new(&cargo)
            .args(["build", "-p", "goscope", "--bin", "goscope"])
            .current_dir(crate::workspace_root())
            .env("CARGO_TARGET_DIR", &target)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {} build -p goscope: {e}", cargo.to_string_lossy()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: String = {
                let lines: Vec<&str> = stderr.lines().collect();
                lines[lines.len().saturating_sub(60)..].join("\n")
            };
            return Err(format!("`cargo build -p goscope` failed ({}):\n{tail}", out.status));
        }
        let bin = target.join("debug").join("goscope");
        if !bin.is_file() {
            return Err(format!("`cargo build -p goscope` succeeded but {} does not exist", bin.display()));
        }
        eprintln!("goscope-tests: cargo build -p goscope took {:.1}s", start.elapsed().as_secs_f64());
        Ok(bin)
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// A `goscope attach --pid P --format json` run. Every stdout line must be a JSON object; they
/// are kept in [`Goscope::events`] in arrival order (including `attached`, `lost`, `summary`).
/// Dropping it SIGKILLs goscope; the kernel then detaches its probes.
pub struct Goscope {
    target_pid: u32,
    child: ChildGuard,
    events: Vec<Value>,
    attached: Option<Value>,
}

/// What [`Goscope::stop`] saw.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    /// Lines that arrived during `stop` (after the last `events_until`).
    pub new_events: Vec<Value>,
    pub stderr: String,
}

impl Goscope {
    /// Starts `goscope attach --pid <pid> --format json <extra_args>`.
    pub fn attach(pid: u32, extra_args: &[&str]) -> Result<Goscope> {
        Self::attach_with(&goscope_bin()?, pid, extra_args)
    }

    /// [`Goscope::attach`] with another goscope binary (benchmarks use the release build).
    pub fn attach_with(bin: &Path, pid: u32, extra_args: &[&str]) -> Result<Goscope> {
        let mut cmd = Command::new(bin);
        cmd.args(["attach", "--pid", &pid.to_string(), "--format", "json"]).args(extra_args);
        let child = ChildGuard::spawn(format!("goscope attach --pid {pid}"), cmd)?;
        Ok(Goscope { target_pid: pid, child, events: Vec::new(), attached: None })
    }

    /// Starts the node agent, `goscope run --format json <extra_args>` (its target pid is 0: it
    /// watches many).
    pub fn run(extra_args: &[&str]) -> Result<Goscope> {
        Self::run_as(&[], extra_args)
    }

    /// [`Goscope::attach`] through a command `prefix` that ends by executing its arguments, e.g.
    /// `setpriv --reuid=65534 ...` to run goscope as another user with other capabilities.
    pub fn attach_as(prefix: &[&str], pid: u32, extra_args: &[&str]) -> Result<Goscope> {
        let mut cmd = prefixed(prefix, &goscope_bin()?);
        cmd.args(["attach", "--pid", &pid.to_string(), "--format", "json"]).args(extra_args);
        let child = ChildGuard::spawn(format!("goscope attach --pid {pid}"), cmd)?;
        Ok(Goscope { target_pid: pid, child, events: Vec::new(), attached: None })
    }

    /// [`Goscope::run`] through a command `prefix` (see [`Goscope::attach_as`]).
    pub fn run_as(prefix: &[&str], extra_args: &[&str]) -> Result<Goscope> {
        let mut cmd = prefixed(prefix, &goscope_bin()?);
        cmd.args(["run", "--format", "json"]).args(extra_args);
        let child = ChildGuard::spawn("goscope run".to_string(), cmd)?;
        Ok(Goscope { target_pid: 0, child, events: Vec::new(), attached: None })
    }

    /// goscope's own pid.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn target_pid(&self) -> u32 {
        self.target_pid
    }

    /// Every JSON line received so far, in order.
    pub fn events(&self) -> &[Value] {
        &self.events
    }

    /// The `attached` line, once seen.
    pub fn attached(&self) -> Option<&Value> {
        self.attached.as_ref()
    }

    pub fn stderr(&self) -> String {
        self.child.stderr_text()
    }

    /// Reads one line (at most `timeout`) and records it.
    fn pump(&mut self, timeout: Duration) -> Result<Pumped> {
        match self.child.next_line(timeout) {
            Line::Line(line) => {
                let value: Value = serde_json::from_str(&line).map_err(|e| {
                    anyhow!("goscope printed a stdout line that is not JSON ({e}): {line:?}\nstderr: {}", self.stderr())
                })?;
                if !value.is_object() || !value.get("kind").is_some_and(Value::is_string) {
                    bail!("goscope printed a JSON line without a string \"kind\": {line}");
                }
                if kind(&value) == "attached" && self.attached.is_none() {
                    self.attached = Some(value.clone());
                }
                self.events.push(value);
                Ok(Pumped::Line)
            }
            Line::Eof => Ok(Pumped::Eof),
            Line::Timeout => Ok(Pumped::Timeout),
        }
    }

    fn exited_early(&mut self, waiting_for: &str) -> anyhow::Error {
        let status = self.child.wait_exit(Duration::from_secs(5)).ok().flatten();
        anyhow!(
            "goscope ended its output before {waiting_for} (exit status {}); stderr:\n{}",
            status.map_or_else(|| "still running".to_string(), |s| s.to_string()),
            self.stderr()
        )
    }

    /// Waits for the `attached` line (goscope prints it once its probes are live) and returns it.
    pub fn wait_attached(&mut self, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        while self.attached.is_none() {
            match self.pump(deadline.saturating_duration_since(Instant::now()))? {
                Pumped::Line => {}
                Pumped::Eof => return Err(self.exited_early("its \"attached\" line")),
                Pumped::Timeout => bail!(
                    "goscope printed no \"attached\" line within {timeout:?} ({} other lines); stderr:\n{}",
                    self.events.len(),
                    self.stderr()
                ),
            }
        }
        Ok(self.attached.clone().expect("set above"))
    }

    /// Reads lines until `pred` returns true for one (that line included) and returns the lines
    /// read during this call. Fails on timeout, on EOF, or on a line that is not a JSON object;
    /// whatever was read stays in [`Goscope::events`] either way.
    pub fn events_until(&mut self, mut pred: impl FnMut(&Value) -> bool, timeout: Duration) -> Result<Vec<Value>> {
        let first = self.events.len();
        let deadline = Instant::now() + timeout;
        loop {
            match self.pump(deadline.saturating_duration_since(Instant::now()))? {
                Pumped::Line => {
                    if pred(self.events.last().expect("just pushed")) {
                        return Ok(self.events[first..].to_vec());
                    }
                }
                Pumped::Eof => return Err(self.exited_early("the awaited event")),
                Pumped::Timeout => {
                    bail!("the awaited event did not come within {timeout:?} ({} lines in that time)", self.events.len() - first)
                }
            }
        }
    }

    /// Reads lines until `deadline`, or until `done` returns true for one (`Ok(true)`). Like
    /// [`Goscope::events_until`] but running out of time is an answer (`Ok(false)`), not an error.
    pub fn watch_until(&mut self, deadline: Instant, mut done: impl FnMut(&Value) -> bool) -> Result<bool> {
        loop {
            match self.pump(deadline.saturating_duration_since(Instant::now()))? {
                Pumped::Line => {
                    if done(self.events.last().expect("just pushed")) {
                        return Ok(true);
                    }
                }
                Pumped::Eof => return Err(self.exited_early("the end of the watch")),
                Pumped::Timeout => return Ok(false),
            }
        }
    }

    /// Sends SIGINT, reads the remaining lines until goscope closes stdout, and reaps it.
    /// Fails if it is still running after `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> Result<Stopped> {
        self.stop_with(libc::SIGINT, timeout)
    }

    /// Like [`Goscope::stop`] with another signal (e.g. `libc::SIGTERM`).
    pub fn stop_with(&mut self, signal: libc::c_int, timeout: Duration) -> Result<Stopped> {
        let first = self.events.len();
        if self.child.is_running() {
            self.child.signal(signal)?;
        }
        self.finish(first, timeout)
    }

    /// Waits (at most `timeout`) for goscope to end on its own (`--duration`, target exit), reading
    /// its remaining lines.
    pub fn wait_end(&mut self, timeout: Duration) -> Result<Stopped> {
        let first = self.events.len();
        self.finish(first, timeout)
    }

    fn finish(&mut self, first: usize, timeout: Duration) -> Result<Stopped> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.pump(deadline.saturating_duration_since(Instant::now()))? {
                Pumped::Line => {}
                Pumped::Eof => break,
                Pumped::Timeout => {
                    self.child.kill();
                    bail!("goscope did not end within {timeout:?}; stderr:\n{}", self.stderr());
                }
            }
        }
        let status = self
            .child
            .wait_exit(deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1)))?
            .ok_or_else(|| anyhow!("goscope closed stdout but did not exit within {timeout:?}"))?;
        Ok(Stopped { status, new_events: self.events[first..].to_vec(), stderr: self.stderr() })
    }
}

enum Pumped {
    Line,
    Eof,
    Timeout,
}

/// The `kind` of a goscope JSON line ("" if missing).
pub fn kind(v: &Value) -> &str {
    v.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// A whole goscope run that is expected to end by itself (errors, `--duration`).
#[derive(Debug)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: String,
    pub took: Duration,
}

impl fmt::Display for RunOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit status: {}\nstdout ({} lines):", self.status, self.stdout.len())?;
        for l in self.stdout.iter().take(20) {
            write!(f, "\n  {l}")?;
        }
        write!(f, "\nstderr:\n{}", self.stderr)
    }
}

/// `bin` run through `prefix` (a command that executes its arguments), or `bin` itself.
fn prefixed(prefix: &[&str], bin: &Path) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(bin);
            cmd
        }
        None => Command::new(bin),
    }
}

/// Runs `goscope <args>` to completion (SIGKILLed after `timeout`, which is an error).
/// `RUST_LOG` and `RUST_BACKTRACE` are removed so stderr is what a user sees by default.
pub fn run_goscope(args: &[&str], timeout: Duration) -> Result<RunOutput> {
    run_goscope_as(&[], args, timeout)
}

/// [`run_goscope`] through a command `prefix` (see [`Goscope::attach_as`]).
pub fn run_goscope_as(prefix: &[&str], args: &[&str], timeout: Duration) -> Result<RunOutput> {
    let bin = goscope_bin()?;
    let mut cmd = prefixed(prefix, &bin);
    cmd.args(args).env_remove("RUST_LOG").env_remove("RUST_BACKTRACE");
    let start = Instant::now();
    let mut child = ChildGuard::spawn(format!("goscope {}", args.join(" ")), cmd)?;
    child.close_stdin();
    let status = child.wait_exit(timeout)?;
    let Some(status) = status else {
        let stdout = child.drain_lines();
        child.kill();
        bail!(
            "`goscope {}` still ran after {timeout:?}; stdout so far: {stdout:?}; stderr:\n{}",
            args.join(" "),
            child.stderr_text()
        );
    };
    let took = start.elapsed();
    // The stdout reader may still hold lines the child wrote just before exiting.
    let stdout = child.lines_to_eof(Duration::from_secs(2));
    Ok(RunOutput { status, stdout, stderr: child.stderr_text(), took })
}

/// Parses a `"0x…"` address.
pub fn parse_hex(s: &str) -> Result<u64> {
    let digits = s.strip_prefix("0x").ok_or_else(|| anyhow!("{s:?} does not start with 0x"))?;
    u64::from_str_radix(digits, 16).with_context(|| format!("{s:?} is not hex"))
}
