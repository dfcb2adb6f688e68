//! The processor: one thread owns the goroutine state, applies events in order, runs the
//! detectors on each clock tick and writes every line the session prints. It also feeds the OTLP
//! exporter (created here: its blocking HTTP client must live off the async runtime).
use std::{
    collections::{BTreeMap, HashMap},
    io::{self, BufWriter, Stdout, Write},
    sync::Arc,
};

use tokio::sync::{Notify, mpsc};

mod flight;
mod modes;

use crate::{
    detect::{self, Detector, Finding, FindingType, Inputs},
    model::{
        events::GoroutineEvent,
        park::ParkResolver,
        state::{ProcessState, Transition, WaitReasons},
    },
    session::{
        SessionConfig,
        findings::{Change, FindingTracker},
        governor::{Activity, Governor, HitCosts, Level},
        leakscan::LeakScanner,
        memory::{
            HOLDINGS_EVERY_TICKS, Seed, read_holdings, read_park_stacks, resync_from_memory, scan_from_memory, seed_from_memory,
        },
        probe_hits::ProbeHits,
        reader::{Item, ReadStats},
    },
    sink::{
        Format, OutputLine, dot,
        event::EventRecord,
        otlp::{ExportStats, Health, OtlpExporter, ProcessInfo},
        top,
        trace::{FlightRecorder, MAX_MOMENTS},
        warning_line, write_line,
    },
    target::{TargetContext, probes::TargetProbes},
};

#[derive(Debug, Default)]
pub struct ProcessStats {
    pub events: u64,
    pub findings: u64,
    /// OTLP items exported / lost (dropped or failed), when OTLP is on.
    pub otlp: Option<ExportStats>,
    /// The `--fail-on` finding type that ended the session.
    pub failed_on: Option<FindingType>,
}

/// Runs the processor until the reader closes the queue. `stop` tells the reader to stop (at a
/// `--fail-on` finding).
pub fn process(
    mut rx: mpsc::Receiver<Item>,
    ctx: &TargetContext,
    cfg: &SessionConfig,
    process_info: &ProcessInfo,
    stop: Arc<Notify>,
    probes: &TargetProbes,
) -> io::Result<ProcessStats> {
    let otlp = OtlpExporter::start(&cfg.otlp, process_info).map_err(io::Error::other)?;
    let mut p = Processor::new(ctx, cfg, otlp, stop, probes);
    p.k8s = process_info.k8s.iter().map(|(k, v)| (*k, v.clone())).collect();
    if let Some(x) = &p.otlp {
        x.probes_attached(probes.attached_count() as u64);
    }
    p.seed()?;
    while let Some(item) = rx.blocking_recv() {
        match item {
            Item::Events(batch) => {
                for ev in batch.events() {
                    p.event(&ev)?;
                }
            }
            Item::Lost(n) => p.lost(n)?,
            Item::Tick { now_ns, reader } => p.tick(now_ns, &reader)?,
            Item::Pulse { now_ns } => p.pulse(now_ns)?,
        }
        if rx.is_empty() {
            p.out.flush()?;
        }
    }
    p.finish()
}

/// The processor's state between queue items.
struct Processor<'a> {
    ctx: &'a TargetContext,
    cfg: &'a SessionConfig,
    stop: Arc<Notify>,
    otlp: Option<OtlpExporter>,
    /// Not locked for the session: `goscope run` has one session per process writing to it.
    out: BufWriter<Stdout>,
    state: ProcessState,
    parks: ParkResolver,
    hits: ProbeHits,
    detectors: Vec<Box<dyn Detector>>,
    /// Who refers to which blocked-on object, re-read periodically (see [`read_holdings`]).
    holdings: detect::Holdings,
    /// Package-level variables each function uses, by function name.
    globals_of: HashMap<String, Vec<u64>>,
    scanner: LeakScanner,
    findings: FindingTracker,
    stats: ProcessStats,
    ticks: u64,
    next_state_line_ns: u64,
    top_rate: top::EventRate,
    /// Events were lost (ring buffer full) or dropped (queue full) since the last tick: the
    /// state is re-read from memory before anything is judged.
    resync_pending: bool,
    /// Events dropped in userspace as of the last tick.
    dropped_seen: u64,
    /// Resyncs so far (the first one is announced).
    resyncs: u64,
    /// Scan mode: memory scans that failed in a row (the first failure is announced).
    failed_scans: u64,
    /// The target's probes, which the governor attaches and detaches.
    probes: &'a TargetProbes,
    /// What watches the target now.
    level: Level,
    /// Keeps the probes' cost under `--overhead-budget`, when one applies.
    governor: Option<Governor>,
    /// What the last memory scan showed of how busy the goroutines are.
    activity: Option<Activity>,
    /// The process's `k8s.*` attributes, on every finding line.
    k8s: BTreeMap<&'static str, String>,
    /// The last seconds of goroutine events, with `--flight-recorder`.
    flight: Option<FlightRecorder>,
}

impl<'a> Processor<'a> {
    fn new(
        ctx: &'a TargetContext,
        cfg: &'a SessionConfig,
        otlp: Option<OtlpExporter>,
        stop: Arc<Notify>,
        probes: &'a TargetProbes,
    ) -> Self {
        let reasons = WaitReasons::of(ctx.binary.wait_reasons());
        let threshold_ns = cfg.block_threshold.as_nanos() as u64;
        let level = cfg.start_level();
        Self {
            probes,
            level,
            governor: cfg
                .governed_budget_pct()
                .map(|pct| Governor::new(pct, HitCosts::of(&ctx.binary), level, goscope_memory::monotonic_ns())),
            activity: None,
            ctx,
            cfg,
            stop,
            otlp,
            out: BufWriter::new(io::stdout()),
            state: ProcessState::new(ctx.pid, reasons, ctx.binary.layout().hchan_lock),
            parks: ParkResolver::default(),
            hits: ProbeHits::new(&ctx.binary),
            detectors: detect::all(threshold_ns),
            holdings: detect::Holdings::default(),
            globals_of: HashMap::new(),
            scanner: LeakScanner::new(cfg.leak_scan_budget()),
            findings: FindingTracker::default(),
            stats: ProcessStats::default(),
            ticks: 0,
            next_state_line_ns: 0,
            top_rate: top::EventRate::default(),
            resync_pending: false,
            dropped_seen: 0,
            resyncs: 0,
            failed_scans: 0,
            k8s: BTreeMap::new(),
            flight: cfg
                .flight_recorder
                .as_ref()
                .map(|_| FlightRecorder::new(cfg.flight_recorder_seconds.as_nanos() as u64, MAX_MOMENTS)),
        }
    }

    fn threshold_ns(&self) -> u64 {
        self.cfg.block_threshold.as_nanos() as u64
    }

    fn write(&mut self, line: &str) -> io::Result<()> {
        write_line(&mut self.out, line)
    }

    fn warn(&mut self, message: &str) -> io::Result<()> {
        let line = warning_line(self.cfg.format, Some(self.ctx.pid), message, "")?;
        self.write(&line)
    }

    /// The probes are attached: events since then are queued. Seeds the state with every
    /// goroutine that exists now; the queued events then apply on top (they are a complete log
    /// since attach, so replaying them over a later snapshot ends in the present).
    fn seed(&mut self) -> io::Result<()> {
        let read = if self.level == Level::Scan { scan_from_memory } else { seed_from_memory };
        let seed = match read(&mut self.state, self.ctx) {
            Ok(seed) => {
                self.activity = Some(seed.activity.clone());
                self.record_samples();
                seed
            }
            Err(e) => {
                return self.warn(&format!("memory snapshot failed ({e}): only goroutines active from now on are known"));
            }
        };
        let line = match self.cfg.format {
            Format::Json => OutputLine::Snapshot {
                pid: self.ctx.pid,
                goroutines: seed.goroutines,
                read_ns: seed.read_ns,
                bytes_read: seed.bytes_read,
            }
            .to_json()?,
            Format::Text => format!(
                "goscope: {} goroutines found in memory ({} KiB read in {:.1} ms, process not stopped)",
                seed.goroutines,
                seed.bytes_read / 1024,
                seed.read_ns as f64 / 1e6
            ),
        };
        if self.cfg.top { Ok(()) } else { self.write(&line) }
    }

    /// After lost or dropped events: the state takes memory's view, so that no finding rests on
    /// a wake-up or an exit that never arrived.
    /// Whether the state could be re-read.
    fn resync(&mut self) -> io::Result<bool> {
        self.resyncs += 1;
        let first = self.resyncs == 1;
        match resync_from_memory(&mut self.state, self.ctx) {
            Ok(_) if first => self
                .warn(
                    "events were lost or dropped: goscope re-reads the goroutines from memory after each loss \
                     (their waits then count from the re-read)",
                )
                .map(|()| true),
            Ok(_) => Ok(true),
            Err(e) if first => self
                .warn(&format!("re-reading the goroutines after lost events failed ({e}): retrying every tick"))
                .map(|()| false),
            Err(_) => Ok(false),
        }
    }

    /// Scan mode: the state takes a fresh memory scan. Whether it could (nothing is judged on a
    /// state a failed scan left stale).
    fn scan(&mut self) -> io::Result<bool> {
        match scan_from_memory(&mut self.state, self.ctx) {
            Ok(Seed { activity, .. }) => {
                self.failed_scans = 0;
                self.activity = Some(activity);
                self.record_samples();
                Ok(true)
            }
            Err(e) => {
                self.failed_scans += 1;
                if self.failed_scans == 1 {
                    self.warn(&format!("reading the goroutines from memory failed ({e}): retrying every tick"))?;
                }
                Ok(false)
            }
        }
    }

    fn event(&mut self, ev: &GoroutineEvent) -> io::Result<()> {
        if self.level == Level::Scan {
            // Left in the ring from before the probes were detached: memory scans rule now.
            return Ok(());
        }
        self.stats.events += 1;
        self.hits.count(ev);
        let park = self.parks.resolve(self.ctx, ev);
        let transition = self.state.apply(ev);
        if let Some(p) = &park {
            self.state.set_park_details(ev.goid, p.site.clone(), p.lock);
        }
        self.record_event(ev, park.as_ref());
        if let (Some(x), Some(t)) = (&self.otlp, &transition) {
            match t {
                Transition::Unblocked { .. } => x.blocking_episode(t, &self.state, self.ctx),
                Transition::Exited { .. } => x.goroutine_exited(t, self.ctx),
            }
        }
        if !self.cfg.prints_events() {
            return Ok(());
        }
        let rec = EventRecord::new(ev, self.ctx).with_park(park.as_ref());
        let line = match self.cfg.format {
            Format::Json => OutputLine::Event(&rec).to_json()?,
            Format::Text => rec.to_text(self.ctx.attached_at_ns),
        };
        self.write(&line)
    }

    fn lost(&mut self, count: u64) -> io::Result<()> {
        self.resync_pending = true;
        let line = match self.cfg.format {
            Format::Json => OutputLine::Lost { pid: self.ctx.pid, count }.to_json()?,
            Format::Text => format!("goscope: {count} events lost: the ring buffer was full (raise --ring-buffer-size)"),
        };
        self.write(&line)
    }

    /// Reads what memory tells about long waits, judges, and reports what changed.
    fn tick(&mut self, now_ns: u64, reader: &ReadStats) -> io::Result<()> {
        for warning in self.hits.read_failures(&reader.read_failures) {
            self.warn(&warning)?;
        }
        if reader.dropped > self.dropped_seen {
            self.dropped_seen = reader.dropped;
            self.resync_pending = true;
        }
        if !self.refresh(now_ns)? {
            self.ticks += 1;
            return Ok(());
        }
        read_park_stacks(&mut self.state, self.ctx, now_ns);
        if self.ticks.is_multiple_of(HOLDINGS_EVERY_TICKS) {
            self.state.prune_channels(now_ns);
        }
        let was_unavailable = self.scanner.unavailable.is_some();
        let current = self.judge(now_ns);
        if let (false, Some(why)) = (was_unavailable, self.scanner.unavailable.clone()) {
            self.warn(&format!("no leak proof: {why}"))?;
        }
        self.ticks += 1;
        let changes = self.findings.update(current);
        self.export(&changes, reader);
        self.write_graphs(&changes)?;
        self.write_traces(&changes, now_ns)?;
        self.count(&changes);
        self.draw(now_ns, changes, reader)
    }

    /// Every detector's findings at `now_ns`, a proof replacing the suspects it covers.
    fn judge(&mut self, now_ns: u64) -> Vec<Finding> {
        let threshold_ns = self.threshold_ns();
        // Suspect chains from what blocked goroutines refer to: the only judgement for locks in
        // package-level variables (always reachable), and a first word before proof. Re-read
        // periodically, at once when a goroutine becomes a candidate, and on the next tick when
        // the other goroutines were read once only (a suspect needs two reads of them).
        let new_candidate = detect::deadlock_candidates(&self.state, now_ns, threshold_ns)
            .iter()
            .any(|g| !self.holdings.of.contains_key(&g.goid));
        if new_candidate || self.ticks.is_multiple_of(HOLDINGS_EVERY_TICKS) || self.holdings.needs_confirmation() {
            let read = read_holdings(&self.state, self.ctx, now_ns, threshold_ns, &mut self.globals_of);
            self.holdings = read.confirmed_by(&self.holdings);
        }
        let proof = self.scanner.update(&self.state, self.ctx, self.ticks, now_ns, threshold_ns);
        let inputs = Inputs { state: &self.state, now_ns, threshold_ns, holdings: &self.holdings, proof };
        let mut current: Vec<Finding> = self.detectors.iter_mut().flat_map(|d| d.check(&inputs)).collect();
        detect::drop_superseded(&mut current);
        current
    }

    /// With `--dot-dir`: each raised deadlock or leak finding's wait-for graph, as a DOT file. A
    /// file that cannot be written is a warning, not the end of the session.
    fn write_graphs(&mut self, changes: &[Change]) -> io::Result<()> {
        let Some(dir) = self.cfg.dot_dir.clone() else { return Ok(()) };
        for change in changes {
            let Change::Raised(f) = change else { continue };
            if f.finding_type == FindingType::Blocked {
                continue;
            }
            let path = dir.join(dot::file_name(f));
            if let Err(e) = std::fs::write(&path, dot::finding_graph(f)) {
                self.warn(&format!("cannot write {}: {e}", path.display()))?;
            }
        }
        Ok(())
    }

    /// Feeds the OTLP exporter the state, health and finding changes of this tick.
    fn export(&self, changes: &[Change], reader: &ReadStats) {
        let Some(x) = &self.otlp else { return };
        x.observe_state(&self.state);
        x.health(&Health {
            events: self.stats.events,
            lost: reader.lost_kernel,
            dropped: reader.dropped,
            undecodable: reader.undecodable,
            attach_failures: 0,
            probes: self.hits.health(),
        });
        for change in changes {
            match change {
                Change::Raised(f) => x.finding(f, &self.state),
                Change::Retracted(f) => x.finding_retracted(f),
            }
        }
    }

    /// Counts raised findings, and stops the session at the first `--fail-on` one.
    fn count(&mut self, changes: &[Change]) {
        self.stats.findings += changes.iter().filter(|c| matches!(c, Change::Raised(_))).count() as u64;
        if self.stats.failed_on.is_some() {
            return;
        }
        let failing = changes.iter().find_map(|c| match c {
            Change::Raised(f) if self.cfg.fail_on.contains(&f.finding_type) => Some(f.finding_type),
            _ => None,
        });
        if let Some(finding_type) = failing {
            self.stats.failed_on = Some(finding_type);
            self.stop.notify_one();
        }
    }

    /// Writes this tick's lines: the periodic state line, and the finding changes or the
    /// redrawn `--top` screen.
    fn draw(&mut self, now_ns: u64, changes: Vec<Change>, reader: &ReadStats) -> io::Result<()> {
        if let (Some(every), Format::Json) = (self.cfg.state_every, self.cfg.format)
            && now_ns >= self.next_state_line_ns
        {
            let line = top::state_line(&self.state, self.ctx, now_ns).to_json()?;
            self.write(&line)?;
            self.next_state_line_ns = now_ns + every.as_nanos() as u64;
        }
        if self.cfg.top {
            // Clear the screen and redraw from the top-left corner.
            let mut status =
                self.top_rate.status(now_ns, self.stats.events, reader.lost_kernel, reader.dropped, self.hits.health());
            status.mode = self.level.name();
            status.budget_pct = self.governor.as_ref().map(|g| g.budget_pct());
            return write!(self.out, "\x1b[H\x1b[2J{}", top::render(&self.state, self.ctx, now_ns, &status));
        }
        for change in changes {
            let line = change.render(self.cfg.format, &self.k8s)?;
            self.write(&line)?;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<ProcessStats> {
        self.out.flush()?;
        self.stats.otlp = self.otlp.map(OtlpExporter::shutdown);
        Ok(self.stats)
    }
}
