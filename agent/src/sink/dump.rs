//! `goscope dump`: every goroutine of a running Go process, read from its memory without
//! stopping it, printed the way the Go runtime prints its own goroutine dump (text) or as one JSON
//! object per goroutine (json).
//! `goscope dump`'s output: a memory snapshot's goroutines as Go's own traceback prints them
//! (text), or as one `{"kind":"goroutine"}` JSON line each plus a `summary` line.
use std::collections::BTreeMap;
use std::io::{self, Write};

use goscope_memory::{Channel, GStatus, Goroutine, Location, Snapshot, StackEnd};
use serde::Serialize;

use crate::{model::hex, sink::Format};

/// Writes `snap` in `format`; `exe` and `go_version` name the process in the summary.
pub fn write(out: &mut impl Write, snap: &Snapshot, format: Format, exe: &str, go_version: &str) -> io::Result<()> {
    let ctx = Ctx { exe, go_version };
    match format {
        Format::Text => write_text(out, snap, &ctx),
        Format::Json => write_json(out, snap, &ctx),
    }
}

struct Ctx<'a> {
    exe: &'a str,
    go_version: &'a str,
}

/// What the header shows in brackets: the wait reason of a waiting goroutine, else its status.
fn status_text(g: &Goroutine) -> String {
    let mut s = match (&g.wait_reason, g.status) {
        (Some(r), GStatus::Waiting | GStatus::Leaked) => r.clone(),
        _ => g.status.runtime_name().to_string(),
    };
    if g.status == GStatus::Leaked {
        s.push_str(" (leaked)");
    }
    if g.scan {
        s.push_str(" (scan)");
    }
    s
}

/// (name, count), most frequent first.
type Counts = Vec<(String, u64)>;

/// Counts by state and by wait reason.
fn summary(snap: &Snapshot) -> (Counts, Counts) {
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    for g in &snap.goroutines {
        *states.entry(g.status.name().to_string()).or_default() += 1;
        if let Some(r) = &g.wait_reason {
            *reasons.entry(r.clone()).or_default() += 1;
        }
    }
    let sorted = |m: BTreeMap<String, u64>| {
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    };
    (sorted(states), sorted(reasons))
}

fn offset(pc: u64, loc: &Location) -> String {
    if pc > loc.entry { format!(" +{:#x}", pc - loc.entry) } else { String::new() }
}

fn write_text(out: &mut impl Write, snap: &Snapshot, ctx: &Ctx<'_>) -> io::Result<()> {
    let s = &snap.stats;
    let system = snap.goroutines.iter().filter(|g| g.system).count();
    let (states, reasons) = summary(snap);
    let join = |v: &[(String, u64)]| v.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ");
    writeln!(
        out,
        "PID {} {} ({}): {} goroutines ({} of them the runtime's own)",
        snap.pid,
        ctx.exe,
        ctx.go_version,
        snap.goroutines.len(),
        system
    )?;
    writeln!(out, "by state: {}", join(&states))?;
    if !reasons.is_empty() {
        writeln!(out, "waiting on: {}", join(&reasons))?;
    }
    let mut notes = vec![format!("{} dead g structs skipped", s.dead)];
    if s.not_examined > 0 {
        notes.push(format!("{} g structs not read (limit)", s.not_examined));
    }
    if s.invalid > 0 {
        notes.push(format!("{} left out: implausible on two reads", s.invalid));
    }
    if s.inconsistent > 0 {
        notes.push(format!("{} shown without stack: changed while read, twice", s.inconsistent));
    }
    if s.duplicate_goids > 0 {
        notes.push(format!("{} duplicate goids left out", s.duplicate_goids));
    }
    writeln!(
        out,
        "read {} bytes with {} syscalls in {:.1} ms without stopping the process; {}",
        s.bytes_read,
        s.syscalls,
        s.elapsed_ns as f64 / 1e6,
        notes.join("; ")
    )?;
    for g in &snap.goroutines {
        writeln!(out)?;
        write_goroutine(out, snap, g)?;
    }
    Ok(())
}

/// Where the `go` statement that created `g` is; none for goroutine 1, which the runtime starts
/// from its own bootstrap code (its `gopc` points there), not from a `go` statement.
fn created_by(g: &Goroutine) -> Option<&Location> {
    g.created_by.as_deref().filter(|_| g.goid != 1)
}

fn write_goroutine(out: &mut impl Write, snap: &Snapshot, g: &Goroutine) -> io::Result<()> {
    let mut header = format!("goroutine {} [{}", g.goid, status_text(g));
    if let Some(ns) = g.waiting_for_ns(snap.read_start_ns) {
        let minutes = ns / 60_000_000_000;
        if minutes >= 1 {
            header.push_str(&format!(", {minutes} minutes"));
        }
    }
    if g.locked_to_thread {
        header.push_str(", locked to thread");
    }
    writeln!(out, "{header}]:")?;
    match g.stack_end {
        StackEnd::Running => writeln!(out, "\tgoroutine running on other thread; stack unavailable")?,
        StackEnd::Inconsistent => writeln!(out, "\tgoroutine changed while goscope read it, twice; stack left out")?,
        _ => {}
    }
    // Every frame, runtime ones included (runtime.gopark, chanrecv, selectgo): a SIGQUIT dump is
    // a runtime throw, which the runtime prints at traceback level 2, showing all frames.
    for f in &g.stack {
        match &f.location {
            // The runtime prints no "+0x.." for a frame the compiler inlined into its caller.
            Some(l) if f.inlined => writeln!(out, "{}(...)\n\t{}:{}", l.function, l.file, l.line)?,
            Some(l) => writeln!(out, "{}(...)\n\t{}:{}{}", l.function, l.file, l.line, offset(f.pc, l))?,
            None => writeln!(out, "?()\n\t?:0 pc={}", hex(f.pc))?,
        }
    }
    match g.stack_end {
        StackEnd::Truncated => writeln!(out, "...additional frames elided...")?,
        StackEnd::BadFramePointer => writeln!(out, "\t(stack walk stopped: frame pointer outside the stack)")?,
        StackEnd::UnknownPc => writeln!(out, "\t(stack walk stopped: return address outside Go code)")?,
        StackEnd::Unreadable => writeln!(out, "\t(stack walk stopped: stack memory unreadable)")?,
        _ => {}
    }
    // "created by", as at traceback level 2: for every goroutine but 1 (the runtime starts the
    // main goroutine itself; no `go` statement created it).
    if let Some(c) = created_by(g) {
        let by = match g.parent_goid {
            Some(p) => format!(" in goroutine {p}"),
            None => String::new(),
        };
        writeln!(out, "created by {}{by}\n\t{}:{}{}", c.function, c.file, c.line, offset(g.gopc, c))?;
    }
    for c in &g.channels {
        let verb = if g.is_select { "selecting on" } else { "waiting on" };
        match snap.channels.get(c) {
            Some(ch) => writeln!(
                out,
                "{verb} chan {}{} (cap {}, len {}{})",
                hex(*c),
                ch.element_type.as_deref().map(|t| format!(" of {t}")).unwrap_or_default(),
                ch.capacity,
                ch.len,
                if ch.closed { ", closed" } else { "" }
            )?,
            None => writeln!(out, "{verb} chan {} (header unreadable)", hex(*c))?,
        }
    }
    if let Some(s) = g.sema_addr {
        writeln!(out, "waiting on semaphore {}", hex(s))?;
    }
    Ok(())
}

#[derive(Serialize)]
struct FrameRecord<'a> {
    function: Option<&'a str>,
    file: Option<&'a str>,
    line: Option<u32>,
    pc: String,
    /// `pc` minus the function's entry: the runtime's "+0x45".
    offset: Option<u64>,
}

#[derive(Serialize)]
struct CreatedBy<'a> {
    function: &'a str,
    file: &'a str,
    line: u32,
    /// The creating goroutine (Go 1.21+).
    goid: Option<u64>,
    pc: String,
}

#[derive(Serialize)]
struct ChannelRecord {
    addr: String,
    capacity: u64,
    len: u64,
    elem_size: u16,
    /// The element type's name, when the descriptor could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    element_type: Option<String>,
    closed: bool,
}

impl From<&Channel> for ChannelRecord {
    fn from(c: &Channel) -> Self {
        ChannelRecord {
            addr: hex(c.addr),
            capacity: c.capacity,
            len: c.len,
            elem_size: c.elem_size,
            element_type: c.element_type.clone(),
            closed: c.closed,
        }
    }
}

#[derive(Serialize)]
struct GoroutineRecord<'a> {
    kind: &'static str,
    pid: u32,
    goid: u64,
    /// The g status: idle, runnable, running, syscall, waiting, copystack, preempted, leaked, ...
    state: &'static str,
    /// What the runtime's dump shows in brackets ("chan send", "runnable", ...).
    status: String,
    wait_reason: Option<&'a str>,
    wait_reason_code: Option<u8>,
    /// Now minus `g.waitsince` (set by the GC for goroutines it saw blocked); null when unknown.
    waiting_for_ns: Option<u64>,
    channels: Vec<String>,
    channel_details: Vec<ChannelRecord>,
    is_select: bool,
    /// Go 1.26+: the semaphore (or sync.Cond notifyList) address of a sync wait.
    sema_addr: Option<String>,
    created_by: Option<CreatedBy<'a>>,
    parent_goid: Option<u64>,
    /// runtime.LockOSThread: the runtime's dump says "locked to thread".
    locked_to_thread: bool,
    start_function: Option<&'a str>,
    stack: Vec<FrameRecord<'a>>,
    /// Why the stack ends: goexit (complete), running, truncated, ...
    stack_end: StackEnd,
    system: bool,
    scan: bool,
    g: String,
}

fn write_json(out: &mut impl Write, snap: &Snapshot, ctx: &Ctx<'_>) -> io::Result<()> {
    let (states, reasons) = summary(snap);
    let summary = serde_json::json!({
        "kind": "summary",
        "pid": snap.pid,
        "exe": ctx.exe,
        "go_version": ctx.go_version,
        "goroutines": snap.goroutines.len(),
        "states": states.into_iter().collect::<BTreeMap<_, _>>(),
        "wait_reasons": reasons.into_iter().collect::<BTreeMap<_, _>>(),
        "allgs": hex(snap.location.allgs),
        "allgs_source": snap.location.source,
        "stats": snap.stats,
    });
    for g in &snap.goroutines {
        let rec = GoroutineRecord {
            kind: "goroutine",
            pid: snap.pid,
            goid: g.goid,
            state: g.status.name(),
            status: status_text(g),
            wait_reason: g.wait_reason.as_deref(),
            wait_reason_code: g.wait_reason_code,
            waiting_for_ns: g.waiting_for_ns(snap.read_start_ns),
            channels: g.channels.iter().map(|c| hex(*c)).collect(),
            channel_details: g.channels.iter().filter_map(|c| snap.channels.get(c)).map(ChannelRecord::from).collect(),
            is_select: g.is_select,
            sema_addr: g.sema_addr.map(hex),
            created_by: created_by(g).map(|c| CreatedBy {
                function: &c.function,
                file: &c.file,
                line: c.line,
                goid: g.parent_goid,
                pc: hex(g.gopc),
            }),
            parent_goid: g.parent_goid,
            locked_to_thread: g.locked_to_thread,
            start_function: g.start_function.as_deref(),
            stack: g
                .stack
                .iter()
                .map(|f| FrameRecord {
                    function: f.location.as_ref().map(|l| l.function.as_str()),
                    file: f.location.as_ref().map(|l| l.file.as_str()),
                    line: f.location.as_ref().map(|l| l.line),
                    pc: hex(f.pc),
                    offset: f.location.as_ref().filter(|_| !f.inlined).map(|l| f.pc.saturating_sub(l.entry)),
                })
                .collect(),
            stack_end: g.stack_end,
            system: g.system,
            scan: g.scan,
            g: hex(g.g_addr),
        };
        serde_json::to_writer(&mut *out, &rec).map_err(io::Error::other)?;
        writeln!(out)?;
    }
    // Last, as the README documents: a reader knows the dump is complete when it arrives.
    writeln!(out, "{summary}")?;
    Ok(())
}
