//! Turns decoded events into what users read: readable text or one JSON object per line. The
//! JSON field names are a public interface (scripts parse them): add fields, never rename.
use std::io::{self, Write};

use goscope_inspect::{Frame, GoBinary};
use serde::Serialize;

use crate::{
    events::{EventDetail, GoroutineEvent},
    park::ParkDetails,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// What the output needs to know about one target to explain its events.
pub struct TargetContext {
    pub pid: u32,
    pub binary: GoBinary,
    /// Runtime minus link-time address of the executable (PIE).
    pub load_bias: u64,
    /// CLOCK_MONOTONIC ns at attach, for relative times in text output.
    pub attached_at_ns: u64,
}

impl TargetContext {
    pub fn symbolize(&self, runtime_pc: u64) -> Option<Frame> {
        self.binary.symbolize(runtime_pc.wrapping_sub(self.load_bias))
    }

    pub fn wait_reason(&self, code: u8) -> String {
        self.binary.wait_reasons().name(code).map_or_else(|| format!("wait reason {code}"), str::to_owned)
    }

    /// gopark's lock argument is `&hchan.lock` for blocking channel operations only.
    fn channel(&self, reason: &str, lock_addr: u64) -> Option<u64> {
        let chan_op = (reason.starts_with("chan send") || reason.starts_with("chan receive")) && !reason.contains("nil chan");
        let lock_off = u64::from(self.binary.layout().hchan_lock);
        (chan_op && lock_addr > lock_off).then(|| lock_addr - lock_off)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SourceSite {
    pub function: String,
    pub file: String,
    pub line: u32,
}

impl From<Frame> for SourceSite {
    fn from(f: Frame) -> Self {
        Self { function: f.function, file: f.file, line: f.line }
    }
}

/// One event as printed. `kind` decides which optional fields are present.
#[derive(Debug, Serialize)]
pub struct EventRecord {
    pub kind: &'static str,
    pub pid: u32,
    pub tid: u32,
    pub goid: u64,
    pub ts_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_goid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_pc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_site: Option<SourceSite>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_function: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait_reason_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The sync primitive (Mutex, RWMutex, WaitGroup, Cond) a parked goroutine waits on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// Where a parked goroutine blocked: the innermost frame outside the runtime and sync.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub park_site: Option<SourceSite>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waker_goid: Option<u64>,
}

pub fn hex(addr: u64) -> String {
    format!("{addr:#x}")
}

impl EventRecord {
    pub fn new(ev: &GoroutineEvent, ctx: &TargetContext) -> Self {
        let mut rec = Self {
            kind: "",
            pid: ev.pid,
            tid: ev.tid,
            goid: ev.goid,
            ts_ns: ev.ts_ns,
            parent_goid: None,
            creation_pc: None,
            creation_site: None,
            start_function: None,
            wait_reason: None,
            wait_reason_code: None,
            channel: None,
            lock: None,
            park_site: None,
            waker_goid: None,
        };
        match ev.detail {
            EventDetail::Created { parent_goid, creation_pc, start_pc } => {
                rec.kind = "created";
                rec.parent_goid = Some(parent_goid);
                rec.creation_pc = Some(hex(creation_pc));
                // gopc is the return address of the call to newproc; like the runtime's own
                // "created by" line, symbolize the call instruction before it.
                rec.creation_site = ctx.symbolize(creation_pc.saturating_sub(1)).map(SourceSite::from);
                rec.start_function = ctx.symbolize(start_pc).map(|f| f.function);
            }
            EventDetail::Parked { wait_reason, lock_addr, .. } => {
                rec.kind = "parked";
                let reason = ctx.wait_reason(wait_reason);
                rec.channel = ctx.channel(&reason, lock_addr).map(hex);
                rec.wait_reason = Some(reason);
                rec.wait_reason_code = Some(wait_reason);
            }
            EventDetail::Ready { waker_goid } => {
                rec.kind = "ready";
                rec.waker_goid = Some(waker_goid);
            }
            EventDetail::Exited => rec.kind = "exited",
        }
        rec
    }

    /// Adds what a park event resolved to (see [`crate::park::ParkResolver`]).
    pub fn with_park(mut self, park: Option<&ParkDetails>) -> Self {
        if let Some(p) = park {
            self.lock = p.lock.map(hex);
            self.park_site = p.site.clone();
        }
        self
    }

    /// One readable line: `+1.234567s pid 42 g17 parked: chan receive on chan 0xc000012000`.
    pub fn to_text(&self, attached_at_ns: u64) -> String {
        let secs = self.ts_ns.saturating_sub(attached_at_ns) as f64 / 1e9;
        let head = format!("+{secs:.6}s pid {} g{}", self.pid, self.goid);
        match self.kind {
            "created" => {
                let site = self.creation_site.as_ref().map_or_else(
                    || self.creation_pc.clone().unwrap_or_default(),
                    |s| format!("{} ({}:{})", s.function, s.file, s.line),
                );
                let start = self.start_function.as_deref().unwrap_or("?");
                format!("{head} created by g{} at {site}, runs {start}", self.parent_goid.unwrap_or(0))
            }
            "parked" => {
                let reason = self.wait_reason.as_deref().unwrap_or("?");
                let on = match (&self.channel, &self.lock) {
                    (Some(ch), _) => format!(" on chan {ch}"),
                    (None, Some(lock)) => format!(" on {lock}"),
                    (None, None) => String::new(),
                };
                let at =
                    self.park_site.as_ref().map_or_else(String::new, |s| format!(" at {} ({}:{})", s.function, s.file, s.line));
                format!("{head} parked: {reason}{on}{at}")
            }
            "ready" => match self.waker_goid {
                Some(0) | None => format!("{head} ready (woken by the runtime)"),
                Some(w) => format!("{head} ready (woken by g{w})"),
            },
            _ => format!("{head} exited"),
        }
    }
}

/// Writes one line in the chosen format. JSON lines for non-event records (attached, lost,
/// summary) are built by the caller with `serde_json::json!`.
/// Writes `line` and a newline in one write, so lines from concurrent sessions (`goscope run`)
/// never interleave.
pub fn write_line(out: &mut impl Write, line: &str) -> io::Result<()> {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    out.write_all(&buf)
}
