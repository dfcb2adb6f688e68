//! The event path after the kernel: a reader drains the ring buffer into a bounded queue (full
//! queue = counted drop, never a stalled reader), and one processing thread owns the goroutine
//! state, runs the detectors on a clock tick and writes the output.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    io::{self, Write},
    sync::Arc,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use serde_json::json;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::SignalKind,
    sync::{Notify, mpsc},
};

use goscope_inspect::{GoBinary, ProbeKind};
use goscope_memory::{GStatus, ProcessMemory, ReachMemory as _};

use crate::{
    detect::{self, Finding, FindingType},
    events::{EventDetail, GoroutineEvent},
    export::{ExportStats, Health, OtlpArgs, OtlpExporter, ProbeHealth, ProcessInfo},
    leakscan::LeakScanner,
    output::{EventRecord, Format, SourceSite, TargetContext, write_line},
    park::ParkResolver,
    probes::Probes,
    state::{GoState, ProcessState, SnapshotGoroutine, Transition, Wait, WaitClass, WaitReasons, sync_primitive},
    summary,
    target::Target,
};

/// One item on the queue from the reader to the processor.
pub enum Item {
    Event(GoroutineEvent),
    /// Events the kernel dropped since the last report.
    Lost(u64),
    /// Clock tick: time to run the detectors and report health.
    Tick {
        now_ns: u64,
        reader: ReadStats,
    },
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ReadStats {
    pub lost_kernel: u64,
    pub dropped: u64,
    pub undecodable: u64,
    pub target_exited: bool,
}

/// Drains the ring buffer until a signal, the deadline, or the target's exit.
pub async fn read_events(
    ring: RingBuf<MapData>,
    probes: &Probes,
    target: &Target,
    tx: mpsc::Sender<Item>,
    duration: Option<Duration>,
    stop: &Notify,
) -> io::Result<ReadStats> {
    // SAFETY: the RingBuf owns its map fd and moves into the AsyncFd, so the fd stays open and is
    // not reused while registered.
    let mut ring = unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
    let mut stats = ReadStats::default();
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &tx, &mut stats);
                guard.clear_ready();
            }
            _ = tick.tick() => {
                let lost = probes.lost_events();
                if lost > stats.lost_kernel {
                    let _ = tx.try_send(Item::Lost(lost - stats.lost_kernel));
                    stats.lost_kernel = lost;
                }
                // A skipped tick under load only delays detection by one period.
                let _ = tx.try_send(Item::Tick { now_ns: monotonic_ns(), reader: stats });
                if !target.is_alive() {
                    stats.target_exited = true;
                    break;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = stop.notified() => break,
            () = &mut deadline => break,
        }
    }
    // Whatever the kernel buffered before we stopped still belongs to the stream.
    drain(ring.get_mut(), &tx, &mut stats);
    stats.lost_kernel = stats.lost_kernel.max(probes.lost_events());
    Ok(stats)
}

fn drain(ring: &mut RingBuf<MapData>, tx: &mpsc::Sender<Item>, stats: &mut ReadStats) {
    while let Some(item) = ring.next() {
        match GoroutineEvent::decode(&item) {
            Ok(ev) => {
                if tx.try_send(Item::Event(ev)).is_err() {
                    stats.dropped += 1;
                }
            }
            Err(_) => stats.undecodable += 1,
        }
    }
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec we own; CLOCK_MONOTONIC is the clock of
    // bpf_ktime_get_ns and of the Go runtime's nanotime.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub struct ProcessorConfig {
    pub format: Format,
    pub otlp: OtlpArgs,
    pub process_info: ProcessInfo,
    /// Print every goroutine event (otherwise only findings and summaries).
    pub show_events: bool,
    pub block_threshold: Duration,
    /// Redraw the live summary on every tick instead of printing events.
    pub top: bool,
    /// Emit a `{"kind":"state"}` line this often (JSON format only).
    pub state_every: Option<Duration>,
    /// Stop (and make goscope exit non-zero) at the first finding of one of these types.
    pub fail_on: Vec<FindingType>,
    /// Bytes one leak proof may read.
    pub leak_scan_budget: u64,
    /// Tells the reader to stop.
    pub stop: Arc<Notify>,
}

#[derive(Debug, Default)]
pub struct ProcessStats {
    pub events: u64,
    pub findings: u64,
    /// OTLP items exported / lost (dropped or failed), when OTLP is on.
    pub otlp: Option<ExportStats>,
    /// The `--fail-on` finding type that ended the session.
    pub failed_on: Option<FindingType>,
}

/// A finding is reported once it has been seen on this many consecutive ticks.
const CONFIRMATIONS: u32 = 2;

/// Owns the state: applies events in order, runs detectors on each tick, writes output and feeds
/// the OTLP exporter (created here: its blocking HTTP client must live off the async runtime).
pub fn process(mut rx: mpsc::Receiver<Item>, ctx: &TargetContext, cfg: &ProcessorConfig) -> io::Result<ProcessStats> {
    let otlp = OtlpExporter::start(&cfg.otlp, &cfg.process_info).map_err(io::Error::other)?;
    let mut hits = ProbeHits::new(&ctx.binary);
    let mut parks = ParkResolver::default();
    let reasons = WaitReasons::new(ctx.binary.wait_reasons().names().to_vec());
    let mut state = ProcessState::new(ctx.pid, reasons, ctx.binary.layout().hchan_lock);
    // Not locked for the session: `goscope run` has one session per process writing to it.
    let mut out = io::BufWriter::new(io::stdout());
    // The probes are attached: events since then are queued. Seed the state with every goroutine
    // that exists now, then apply the queued events on top (they are a complete log since attach,
    // so replaying them over a later snapshot ends in the present).
    match seed_from_memory(&mut state, ctx) {
        Ok(seed) => {
            let line = match cfg.format {
                Format::Json => json!({"kind": "snapshot", "pid": ctx.pid, "goroutines": seed.goroutines,
                                       "read_ns": seed.read_ns, "bytes_read": seed.bytes_read})
                .to_string(),
                Format::Text => format!(
                    "goscope: {} goroutines found in memory ({} KiB read in {:.1} ms, process not stopped)",
                    seed.goroutines,
                    seed.bytes_read / 1024,
                    seed.read_ns as f64 / 1e6
                ),
            };
            if !cfg.top {
                write_line(&mut out, &line)?;
            }
        }
        Err(e) => {
            let msg = format!("memory snapshot failed ({e}): only goroutines active from now on are known");
            let line = match cfg.format {
                Format::Json => json!({"kind": "warning", "pid": ctx.pid, "message": msg}).to_string(),
                Format::Text => format!("goscope: {msg}"),
            };
            write_line(&mut out, &line)?;
        }
    }
    let mut stats = ProcessStats::default();
    let mut findings = FindingTracker::default();
    let threshold_ns = cfg.block_threshold.as_nanos() as u64;
    let mut holdings = detect::Holdings::new();
    let mut globals_of = HashMap::new();
    let mut scanner = LeakScanner::new(cfg.leak_scan_budget);
    let mut growth = detect::LeakGrowth::new(threshold_ns.clamp(1_000_000_000, 60_000_000_000));
    let mut ticks: u64 = 0;
    let mut next_state_line_ns = 0;
    while let Some(item) = rx.blocking_recv() {
        match item {
            Item::Event(ev) => {
                stats.events += 1;
                hits.count(&ev);
                let park = parks.resolve(ctx, &ev);
                let transition = state.apply(&ev);
                if let Some(p) = &park {
                    state.set_park_details(ev.goid, p.site.clone(), p.lock);
                }
                if let (Some(x), Some(t)) = (&otlp, &transition) {
                    match t {
                        Transition::Unblocked { .. } => x.blocking_episode(t, &state, ctx),
                        Transition::Exited { .. } => x.goroutine_exited(t, ctx),
                    }
                }
                if cfg.show_events {
                    let rec = EventRecord::new(&ev, ctx).with_park(park.as_ref());
                    let line = match cfg.format {
                        Format::Json => serde_json::to_string(&rec).map_err(io::Error::other)?,
                        Format::Text => rec.to_text(ctx.attached_at_ns),
                    };
                    write_line(&mut out, &line)?;
                }
            }
            Item::Lost(n) => {
                let line = match cfg.format {
                    Format::Json => json!({"kind": "lost", "pid": ctx.pid, "count": n}).to_string(),
                    Format::Text => format!("goscope: {n} events lost: the ring buffer was full (raise --ring-buffer-size)"),
                };
                write_line(&mut out, &line)?;
            }
            Item::Tick { now_ns, reader } => {
                read_park_stacks(&mut state, ctx, now_ns);
                if ticks.is_multiple_of(HOLDINGS_EVERY_TICKS) {
                    state.prune_channels(now_ns);
                }
                let mut current = detect::blocked(&state, now_ns, threshold_ns);
                current.extend(growth.check(&state, now_ns, threshold_ns));
                // Suspect chains from what blocked goroutines refer to: the only judgement for locks
                // in package-level variables (always reachable), and a first word before proof.
                // Re-read periodically, and at once when a goroutine becomes a candidate.
                let new_candidate =
                    detect::deadlock_candidates(&state, now_ns, threshold_ns).iter().any(|g| !holdings.contains_key(&g.goid));
                if new_candidate || ticks.is_multiple_of(HOLDINGS_EVERY_TICKS) {
                    holdings = read_holdings(&state, ctx, now_ns, threshold_ns, &mut globals_of);
                }
                current.extend(detect::deadlocks(&state, now_ns, threshold_ns, &holdings));
                let was_unavailable = scanner.unavailable.is_some();
                if let Some(evidence) = scanner.update(&state, ctx, ticks, now_ns, threshold_ns) {
                    current.extend(detect::proven(&state, now_ns, threshold_ns, evidence));
                }
                detect::drop_superseded(&mut current);
                if let (false, Some(why)) = (was_unavailable, &scanner.unavailable) {
                    let msg = format!("no leak proof: {why}");
                    let line = match cfg.format {
                        Format::Json => json!({"kind": "warning", "pid": ctx.pid, "message": msg}).to_string(),
                        Format::Text => format!("goscope: {msg}"),
                    };
                    write_line(&mut out, &line)?;
                }
                ticks += 1;
                let changes = findings.update(current);
                if let Some(x) = &otlp {
                    x.observe_state(&state);
                    x.health(&Health {
                        events: stats.events,
                        lost: reader.lost_kernel,
                        dropped: reader.dropped,
                        undecodable: reader.undecodable,
                        attach_failures: 0,
                        probes: hits.health(),
                    });
                    for change in &changes {
                        match change {
                            Change::Raised(f) => x.finding(f, &state),
                            Change::Retracted(f) => x.finding_retracted(f),
                        }
                    }
                }
                stats.findings += changes.iter().filter(|c| matches!(c, Change::Raised(_))).count() as u64;
                if stats.failed_on.is_none()
                    && let Some(Change::Raised(f)) =
                        changes.iter().find(|c| matches!(c, Change::Raised(f) if cfg.fail_on.contains(&f.finding_type)))
                {
                    stats.failed_on = Some(f.finding_type);
                    cfg.stop.notify_one();
                }
                if let (Some(every), Format::Json) = (cfg.state_every, cfg.format)
                    && now_ns >= next_state_line_ns
                {
                    write_line(&mut out, &summary::state_json(&state, ctx, now_ns).to_string())?;
                    next_state_line_ns = now_ns + every.as_nanos() as u64;
                }
                if cfg.top {
                    // Clear the screen and redraw from the top-left corner.
                    write!(out, "\x1b[H\x1b[2J{}", summary::render(&state, ctx, now_ns))?;
                } else {
                    for change in changes {
                        write_line(&mut out, &change.render(cfg.format)?)?;
                    }
                }
            }
        }
        if rx.is_empty() {
            out.flush()?;
        }
    }
    out.flush()?;
    stats.otlp = otlp.map(OtlpExporter::shutdown);
    Ok(stats)
}

struct Seed {
    goroutines: usize,
    read_ns: u64,
    bytes_read: u64,
}

/// Reads every goroutine from the target's memory into the state (without stopping it).
fn seed_from_memory(state: &mut ProcessState, ctx: &TargetContext) -> Result<Seed, Box<dyn std::error::Error>> {
    let mem = ProcessMemory::new(ctx.pid)?;
    let snap = goscope_memory::snapshot(&mem, &ctx.binary, ctx.load_bias)?;
    let goroutines: Vec<SnapshotGoroutine> = snap
        .goroutines
        .iter()
        .filter_map(|g| {
            let state = match g.status {
                GStatus::Runnable | GStatus::Preempted | GStatus::Copystack => GoState::Runnable,
                GStatus::Running => GoState::Running,
                GStatus::Syscall => GoState::Syscall,
                GStatus::Waiting | GStatus::Leaked => GoState::Waiting,
                GStatus::Idle | GStatus::Dead | GStatus::DeadExtra => return None,
            };
            let wait = (state == GoState::Waiting).then(|| {
                let code = g.wait_reason_code.unwrap_or(0);
                let class = WaitClass::of(g.wait_reason.as_deref().unwrap_or(""));
                Wait {
                    reason_code: code,
                    class,
                    channels: g.channels.clone(),
                    lock: sync_primitive(class, g.sema_addr),
                    stack: sites(&g.stack),
                    park_site: None,
                }
            });
            Some(SnapshotGoroutine {
                goid: g.goid,
                state,
                wait,
                // g.waitsince is only a GC's timestamp and may predate the wait: the wait is known
                // to have lasted at least since the read.
                wait_since_ns: 0,
                parent_goid: g.parent_goid,
                creation_pc: Some(g.gopc),
                start_pc: Some(g.startpc),
                g_addr: g.g_addr,
            })
        })
        .collect();
    state.reconcile(&goroutines, snap.read_start_ns);
    for ch in snap.channels.values() {
        state.set_channel_info(ch.addr, ch.capacity, ch.closed, ch.element_type.clone());
    }
    Ok(Seed {
        goroutines: goroutines.len(),
        read_ns: snap.read_end_ns.saturating_sub(snap.read_start_ns),
        bytes_read: snap.stats.bytes_read,
    })
}

fn sites(stack: &[goscope_memory::StackFrame]) -> Vec<SourceSite> {
    stack
        .iter()
        .filter_map(|f| f.location.as_ref())
        .map(|l| SourceSite { function: l.function.clone(), file: l.file.clone(), line: l.line })
        .collect()
}

/// Waits shorter than this are not worth a memory read for their stack.
const STACK_AFTER_NS: u64 = 1_000_000_000;
/// Most park stacks read per tick, to bound the work a burst of blocking causes.
const STACKS_PER_TICK: usize = 512;

/// Reads the park stacks (and a select's channels, a lock's address) of goroutines blocked for
/// longer than STACK_AFTER_NS. Reading later instead of capturing at every park costs nothing on
/// the hot path: most parks end within microseconds.
fn read_park_stacks(state: &mut ProcessState, ctx: &TargetContext, now_ns: u64) {
    let wanted = state.needing_stacks(now_ns.saturating_sub(STACK_AFTER_NS), STACKS_PER_TICK);
    if wanted.is_empty() {
        return;
    }
    // A fresh reader per round: its byte budget bounds one round, not the whole session.
    let Ok(mem) = ProcessMemory::new(ctx.pid) else {
        return;
    };
    let mem = &mem;
    let gptrs: Vec<u64> = wanted.iter().map(|&(_, g)| g).collect();
    let opts = goscope_memory::SnapshotOptions::default();
    let Ok((read, channels)) = goscope_memory::read_goroutines(mem, &ctx.binary, ctx.load_bias, &gptrs, &opts) else {
        return;
    };
    for ch in channels.values() {
        state.set_channel_info(ch.addr, ch.capacity, ch.closed, ch.element_type.clone());
    }
    for g in read {
        // The g struct may have been reused by another goroutine since it parked.
        if !wanted.iter().any(|&(goid, addr)| goid == g.goid && addr == g.g_addr) || g.status != GStatus::Waiting {
            continue;
        }
        let class = WaitClass::of(g.wait_reason.as_deref().unwrap_or(""));
        state.enrich_wait(g.goid, &g.channels, sync_primitive(class, g.sema_addr), sites(&g.stack));
    }
}

/// Stacks of goroutines blocked on channels are re-read this often (in ticks of 500 ms).
const HOLDINGS_EVERY_TICKS: u64 = 10;
/// Most stacks read per round.
const HOLDINGS_MAX: usize = 1024;
/// Lock-holding objects starting at or below a word that are checked for containing it.
const LOCK_SPANS_CHECKED: usize = 16;

/// For each goroutine blocked on channels past the threshold, which of those channels it holds:
/// in a variable on its stack, or in a package-level variable that a function on its stack uses.
/// The deadlock detector's evidence of who could serve whom.
fn read_holdings(
    state: &ProcessState,
    ctx: &TargetContext,
    now_ns: u64,
    threshold_ns: u64,
    globals_of: &mut HashMap<String, Vec<u64>>,
) -> detect::Holdings {
    let candidates = detect::deadlock_candidates(state, now_ns, threshold_ns);
    if candidates.len() < 2 {
        return detect::Holdings::new();
    }
    let Ok(mem) = ProcessMemory::new(ctx.pid) else {
        return detect::Holdings::new();
    };
    let waits = candidates.iter().filter_map(|g| g.wait.as_ref());
    let channels: HashSet<u64> = waits.clone().flat_map(|w| w.channels.iter().copied()).collect();
    let mut locks: Vec<u64> = waits.filter(|w| w.channels.is_empty()).flat_map(detect::wait_objects).collect();
    locks.sort_unstable();
    locks.dedup();
    // A channel is referred to by its address. A lock is a field: referred to by any pointer into
    // the heap object that holds it, or (a package-level or stack variable) by its own address.
    let objects = goscope_memory::ProcessHeap::new(&mem, &ctx.binary, ctx.load_bias)
        .and_then(|mut heap| heap.objects(&locks))
        .unwrap_or_else(|_| vec![None; locks.len()]);
    let mut lock_spans: Vec<(u64, u64, u64)> = locks
        .iter()
        .zip(objects)
        .map(|(&l, o)| o.map_or((l, l + 1, l), |o| (o.base, o.base.saturating_add(o.size), l)))
        .collect();
    lock_spans.sort_unstable();
    let refer = |w: u64, held: &mut BTreeSet<u64>| {
        if channels.contains(&w) {
            held.insert(w);
        }
        let after = lock_spans.partition_point(|&(lo, _, _)| lo <= w);
        held.extend(lock_spans[..after].iter().rev().take(LOCK_SPANS_CHECKED).filter(|&&(_, hi, _)| w < hi).map(|&(_, _, l)| l));
    };
    candidates
        .iter()
        .take(HOLDINGS_MAX)
        .filter_map(|g| {
            let mut held = BTreeSet::new();
            for w in goscope_memory::stack_words(&mem, &ctx.binary, g.g_addr?).ok()? {
                refer(w, &mut held);
            }
            for frame in g.wait.iter().flat_map(|w| &w.stack).filter(|f| !f.function.starts_with("runtime.")) {
                let globals = globals_of.entry(frame.function.clone()).or_insert_with(|| {
                    ctx.binary
                        .function(&frame.function)
                        .and_then(|f| {
                            goscope_memory::referenced_globals(&mem, f.entry + ctx.load_bias, f.end + ctx.load_bias).ok()
                        })
                        .unwrap_or_default()
                });
                for &addr in globals.iter() {
                    refer(addr, &mut held);
                    if let Ok(value) = mem.read_u64(addr) {
                        refer(value, &mut held);
                    }
                }
            }
            Some((g.goid, held))
        })
        .collect()
}

/// Probe hits per program, counted from the events they produced, for the health metrics.
struct ProbeHits {
    /// (program, hits, emulated instruction)
    programs: Vec<(ProbeKind, u64, bool)>,
}

impl ProbeHits {
    fn new(binary: &GoBinary) -> Self {
        let mut programs: Vec<(ProbeKind, u64, bool)> = Vec::new();
        // The semaphore probe reports no events of its own: its hits cannot be counted here.
        for site in binary.probe_sites().iter().filter(|s| s.probe != ProbeKind::SemaphoreAcquire) {
            if !programs.iter().any(|p| p.0 == site.probe) {
                programs.push((site.probe, 0, ProbeHealth::is_emulated_instruction(&site.instruction)));
            }
        }
        Self { programs }
    }

    fn count(&mut self, ev: &GoroutineEvent) {
        let kind = match ev.detail {
            EventDetail::Created { .. } => ProbeKind::GoroutineCreated,
            EventDetail::Parked { .. } => ProbeKind::GoroutineParked,
            EventDetail::Ready { .. } => ProbeKind::GoroutineReady,
            EventDetail::Exited => ProbeKind::GoroutineExited,
        };
        if let Some(p) = self.programs.iter_mut().find(|p| p.0 == kind) {
            p.1 += 1;
        }
    }

    fn health(&self) -> Vec<ProbeHealth> {
        self.programs.iter().map(|&(kind, hits, emulated)| ProbeHealth { name: kind.program_name(), hits, emulated }).collect()
    }
}

/// A finding appearing (after confirmation) or going away.
enum Change {
    Raised(Finding),
    Retracted(Finding),
}

impl Change {
    fn render(&self, format: Format) -> io::Result<String> {
        #[derive(Serialize)]
        struct Tagged<'a> {
            kind: &'static str,
            #[serde(flatten)]
            finding: &'a Finding,
        }
        let (kind, f) = match self {
            Self::Raised(f) => ("finding", f),
            Self::Retracted(f) => ("retraction", f),
        };
        Ok(match format {
            Format::Json => serde_json::to_string(&Tagged { kind, finding: f }).map_err(io::Error::other)?,
            Format::Text => match self {
                Self::Raised(f) => format!("FINDING [{}/{}] {}", f.finding_type.as_str(), f.grade.as_str(), f.summary),
                Self::Retracted(f) => format!("retracted: {}", f.summary),
            },
        })
    }
}

/// Confirms findings over consecutive ticks and notices when they go away.
#[derive(Default)]
struct FindingTracker {
    /// id → (finding, consecutive sightings)
    seen: BTreeMap<String, (Finding, u32)>,
}

impl FindingTracker {
    /// Detectors may judge one situation twice (a growing pile at a site, then proof that it
    /// leaks): the strongest grade per id wins, and an upgrade of a reported finding is raised anew.
    fn update(&mut self, current: Vec<Finding>) -> Vec<Change> {
        let mut strongest: BTreeMap<String, Finding> = BTreeMap::new();
        for f in current {
            match strongest.get(&f.id) {
                Some(kept) if kept.grade >= f.grade => {}
                _ => {
                    strongest.insert(f.id.clone(), f);
                }
            }
        }
        let mut changes = Vec::new();
        let mut next = BTreeMap::new();
        for (id, f) in strongest {
            let (count, upgraded) = match self.seen.remove(&id) {
                Some((old, n)) => (n.saturating_add(1), n >= CONFIRMATIONS && f.grade > old.grade),
                None => (1, false),
            };
            if count == CONFIRMATIONS || upgraded {
                changes.push(Change::Raised(f.clone()));
            }
            next.insert(id, (f, count));
        }
        // Gone because a proof now covers it is not a retraction: the proof was just raised.
        for (_, (f, count)) in std::mem::take(&mut self.seen) {
            if count >= CONFIRMATIONS && !next.values().any(|(p, _)| detect::supersedes(p, &f)) {
                changes.push(Change::Retracted(f));
            }
        }
        self.seen = next;
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{FindingType, Grade};

    fn finding(id: &str) -> Finding {
        Finding {
            id: id.into(),
            finding_type: FindingType::Blocked,
            grade: Grade::Suspect,
            pid: 1,
            goroutines: vec![],
            chain: vec![],
            summary: id.into(),
        }
    }

    #[test]
    fn findings_are_confirmed_before_reporting_and_retracted_when_gone() {
        let mut t = FindingTracker::default();
        assert!(t.update(vec![finding("a")]).is_empty(), "first sighting is not reported");
        let raised = t.update(vec![finding("a")]);
        assert!(matches!(raised.as_slice(), [Change::Raised(f)] if f.id == "a"));
        assert!(t.update(vec![finding("a")]).is_empty(), "reported once");
        let gone = t.update(vec![]);
        assert!(matches!(gone.as_slice(), [Change::Retracted(f)] if f.id == "a"));
        // A one-tick blip is never reported, so it is never retracted either.
        assert!(t.update(vec![finding("b")]).is_empty());
        assert!(t.update(vec![]).is_empty());
    }

    #[test]
    fn a_suspect_proven_later_is_raised_again_once() {
        let mut t = FindingTracker::default();
        let proven = Finding { grade: Grade::Proven, ..finding("a") };
        t.update(vec![finding("a")]);
        assert_eq!(t.update(vec![finding("a")]).len(), 1);
        let up = t.update(vec![finding("a"), proven.clone()]);
        assert!(matches!(up.as_slice(), [Change::Raised(f)] if f.grade == Grade::Proven), "upgrade raised");
        assert!(t.update(vec![proven, finding("a")]).is_empty(), "and only once");
    }

    #[test]
    fn a_suspect_a_proof_covers_under_another_id_is_not_retracted() {
        let mut t = FindingTracker::default();
        let suspect = Finding { finding_type: FindingType::Deadlock, ..finding("pair") };
        let whole = Finding { grade: Grade::Proven, ..Finding { id: "process".into(), ..suspect.clone() } };
        t.update(vec![suspect.clone()]);
        t.update(vec![suspect]);
        assert!(t.update(vec![whole.clone()]).is_empty(), "first sighting of the proof: nothing yet, no retraction");
        assert!(matches!(t.update(vec![whole]).as_slice(), [Change::Raised(f)] if f.id == "process"));
    }
}
