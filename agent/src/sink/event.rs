//! Goroutine events as users read them: a record with the event's fields resolved against the
//! binary (sites, wait reasons, channels), written as a JSON line or as readable text.
use serde::Serialize;

use crate::{
    model::{
        Location,
        events::{EventDetail, GoroutineEvent},
        hex,
        park::ParkDetails,
    },
    target::TargetContext,
};

/// What happened to the goroutine: the line's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Created,
    Parked,
    Ready,
    Exited,
}

/// One event as printed. `kind` decides which optional fields are present.
#[derive(Debug, Serialize)]
pub struct EventRecord {
    pub kind: EventKind,
    pub pid: u32,
    pub tid: u32,
    pub goid: u64,
    pub ts_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_goid: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_pc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_site: Option<Location>,
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
    pub park_site: Option<Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waker_goid: Option<u64>,
}

impl EventRecord {
    pub fn new(ev: &GoroutineEvent, ctx: &TargetContext) -> Self {
        let kind = match ev.detail {
            EventDetail::Created { .. } => EventKind::Created,
            EventDetail::Parked { .. } => EventKind::Parked,
            EventDetail::Ready { .. } => EventKind::Ready,
            EventDetail::Exited => EventKind::Exited,
        };
        let mut rec = Self {
            kind,
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
                rec.parent_goid = Some(parent_goid);
                rec.creation_pc = Some(hex(creation_pc));
                // gopc is the return address of the call to newproc; like the runtime's own
                // "created by" line, symbolize the call instruction before it.
                rec.creation_site = ctx.symbolize(creation_pc.saturating_sub(1));
                rec.start_function = ctx.symbolize(start_pc).map(|f| f.function);
            }
            EventDetail::Parked { wait_reason, lock_addr, .. } => {
                let reason = ctx.wait_reason(wait_reason);
                rec.channel = ctx.channel(&reason, lock_addr).map(hex);
                rec.wait_reason = Some(reason);
                rec.wait_reason_code = Some(wait_reason);
            }
            EventDetail::Ready { waker_goid } => {
                rec.waker_goid = Some(waker_goid);
            }
            EventDetail::Exited => {}
        }
        rec
    }

    /// Adds what a park event resolved to (see [`crate::model::park::ParkResolver`]).
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
            EventKind::Created => {
                let site = self.creation_site.as_ref().map_or_else(
                    || self.creation_pc.clone().unwrap_or_default(),
                    |s| format!("{} ({}:{})", s.function, s.file, s.line),
                );
                let start = self.start_function.as_deref().unwrap_or("?");
                format!("{head} created by g{} at {site}, runs {start}", self.parent_goid.unwrap_or(0))
            }
            EventKind::Parked => {
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
            EventKind::Ready => match self.waker_goid {
                Some(0) | None => format!("{head} ready (woken by the runtime)"),
                Some(w) => format!("{head} ready (woken by g{w})"),
            },
            EventKind::Exited => format!("{head} exited"),
        }
    }
}
