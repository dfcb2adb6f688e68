//! [`ChildGuard`]: a child process that is SIGKILLed and reaped when the guard drops.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

/// One read from a child's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line, without its line terminator (invalid UTF-8 replaced).
    Line(String),
    /// The child closed its stdout (usually: it exited).
    Eof,
    /// Nothing arrived in time.
    Timeout,
}

/// A running child with piped stdin, stdout (read line by line on a thread) and stderr
/// (collected on a thread). Dropping the guard SIGKILLs the child if it still runs and reaps it.
///
/// The child also gets `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the test thread that spawned
/// it even if this process is killed before the guard can drop.
pub struct ChildGuard {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    eof: bool,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin, stdout and stderr piped. `name` labels error messages.
    pub fn spawn(name: impl Into<String>, mut cmd: Command) -> Result<Self> {
        let name = name.into();
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe and the closure touches nothing else.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().with_context(|| format!("spawning {name}: {cmd:?}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");

        let (tx, lines) = mpsc::channel();
        thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                let mut reader = BufReader::new(stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                                buf.pop();
                            }
                            if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                                break;
                            }
                        }
                    }
                }
            })
            .context("spawning the stdout reader thread")?;

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stderr);
        let stderr_reader = thread::Builder::new()
            .name(format!("{name}-stderr"))
            .spawn(move || {
                let mut pipe = stderr_pipe;
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(&chunk[..n]);
                }
            })
            .context("spawning the stderr reader thread")?;

        Ok(Self { name, child, stdin, lines, eof: false, stderr, stderr_reader: Some(stderr_reader), status: None })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes `line` and a newline to the child's stdin.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("{}: stdin already closed", self.name))?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{}: writing {line:?} to stdin", self.name))
    }

    /// Closes the child's stdin (it reads EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next stdout line, waiting at most `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Line {
        if self.eof {
            return Line::Eof;
        }
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Line::Line(line),
            Err(RecvTimeoutError::Timeout) => Line::Timeout,
            Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                Line::Eof
            }
        }
    }

    /// The rest of stdout once the child has exited: every line up to EOF, waiting at most
    /// `timeout` for the reader to see the pipe close (a bare drain can miss the last lines).
    pub fn lines_to_eof(&mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while let Line::Line(l) = self.next_line(deadline.saturating_duration_since(Instant::now())) {
            out.push(l);
        }
        out
    }

    /// Every stdout line already received, without waiting.
    pub fn drain_lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Line::Line(l) = self.next_line(Duration::ZERO) {
            out.push(l);
        }
        out
    }

    /// Reads stdout lines until one is a JSON object with `key`, and returns that object.
    /// Fails on timeout, EOF, a line that is not a JSON object, or a fixture's `{"error":...}` line.
    pub fn expect_json(&mut self, key: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Line::Line(line) => {
                    let value: Value =
                        serde_json::from_str(&line).with_context(|| format!("{}: stdout line is not JSON: {line}", self.name))?;
                    if let Some(err) = value.get("error") {
                        bail!("{} reported an error: {err}; stderr: {}", self.name, self.stderr_text());
                    }
                    if value.get(key).is_some() {
                        return Ok(value);
                    }
                }
                Line::Eof => {
                    let status = self.wait_exit(Duration::from_secs(2)).ok().flatten();
                    bail!(
                        "{}: stdout closed before a line with {key:?} (exit status {status:?}); stderr: {}",
                        self.name,
                        self.stderr_text()
                    )
                }
                Line::Timeout => {
                    bail!("{}: no stdout line with {key:?} within {timeout:?}; stderr: {}", self.name, self.stderr_text())
                }
            }
        }
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to the child, unless it was already reaped.
    pub fn signal(&self, signal: libc::c_int) -> Result<()> {
        if self.status.is_some() {
            bail!("{}: already exited", self.name);
        }
        let pid = libc::pid_t::try_from(self.pid()).context("pid out of range")?;
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child, so it
        // cannot have been recycled for another process.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("{}: kill({pid}, {signal})", self.name));
        }
        Ok(())
    }

    /// Whether the child is still running (not yet exited).
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.status = Some(status);
            self.join_stderr(Duration::from_secs(2));
        }
        self.status
    }

    /// Waits at most `timeout` for the child to exit; `Ok(None)` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll_exit() {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the child (if it still runs) and reaps it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.poll_exit().is_none() {
            let _ = self.child.kill();
            if let Ok(status) = self.child.wait() {
                self.status = Some(status);
            }
            self.join_stderr(Duration::from_secs(2));
        }
        self.status
    }

    /// The exit status, once the child was reaped.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Everything the child wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// After exit, waits (bounded: a grandchild could hold the pipe) for the stderr reader to see EOF.
    fn join_stderr(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while let Some(handle) = self.stderr_reader.as_ref() {
            if handle.is_finished() {
                let _ = self.stderr_reader.take().map(JoinHandle::join);
            } else if Instant::now() >= deadline {
                return;
            } else {
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stdin = None;
        self.kill();
    }
}
