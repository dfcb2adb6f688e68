//! OTLP export: blocking episodes and goroutine lifetimes as spans, findings as spans and log
//! records, goroutine/blocking/finding/health metrics. See `docs/otlp.md` for every name.
//!
//! Off unless an endpoint is configured ([`OtlpArgs`]). Every recording method is cheap and never
//! waits: items go into bounded queues (full queue = counted drop) drained by the SDK's own export
//! threads, which batch, retry with backoff and time out on their own. [`OtlpExporter::shutdown`]
//! flushes within a bounded time.
mod attrs;
mod config;
mod ids;
mod limit;
mod sdk;
mod spans;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
        mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

use opentelemetry::{
    InstrumentationScope, KeyValue,
    logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity},
    metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _, UpDownCounter},
    trace::{SpanContext, SpanId, TraceFlags, TraceId},
};
use opentelemetry_sdk::{
    logs::{BatchLogProcessor, SdkLogger, SdkLoggerProvider},
    metrics::{PeriodicReader, SdkMeterProvider},
    trace::{BatchSpanProcessor, SpanData, SpanProcessor as _},
};

pub use attrs::ProcessInfo;
pub use config::{OtlpArgs, OtlpCompression, OtlpProtocol, ResolvedConfig, Signal, SignalConfig, SpanWaits};
pub use sdk::SignalStats;
pub use spans::EpisodeExtra;

use self::{
    ids::Ids,
    sdk::{Counted, Gate},
    spans::SpanFactory,
};
use crate::{
    detect::{Finding, FindingKey, FindingType, Grade},
    model::state::{GoState, ProcessState, Transition},
    target::TargetContext,
};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("OTLP configuration: {0}")]
    Config(String),
    #[error("OTLP exporter: {0}")]
    Io(String),
}

/// Estimated cost of one uprobe hit, by how the kernel handles the probed instruction.
pub const EMULATED_PROBE_COST: Duration = Duration::from_micros(1);
pub const SINGLE_STEPPED_PROBE_COST: Duration = Duration::from_micros(5);

/// One probe's hit count, for the health metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeHealth {
    /// eBPF program name (`goroutine_parked`).
    pub name: &'static str,
    /// Hits so far (cumulative).
    pub hits: u64,
    /// The probed instruction is emulated by the kernel (~1 µs a hit) rather than single-stepped
    /// out of line (~5 µs).
    pub emulated: bool,
    /// Hits whose reads of the target's memory failed (cumulative; their events were dropped).
    pub read_failures: u64,
}

impl ProbeHealth {
    /// Whether the kernel emulates the instruction at a probe site (x86-64 uprobes emulate
    /// `push`, `nop` and relative jumps/calls; others are single-stepped).
    pub fn is_emulated_instruction(instruction: &str) -> bool {
        let mnemonic = instruction.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
        mnemonic == "push" || mnemonic == "nop" || mnemonic.starts_with('j') || mnemonic == "call"
    }

    /// Estimated CPU seconds the target spent in this probe: hits × per-hit cost.
    pub fn estimated_cost_s(&self) -> f64 {
        let per = if self.emulated { EMULATED_PROBE_COST } else { SINGLE_STEPPED_PROBE_COST };
        self.hits as f64 * per.as_secs_f64()
    }
}

/// A change of what watches the target, for [`OtlpExporter::mode_changed`].
#[derive(Debug, Clone, PartialEq)]
pub struct ModeChange<'a> {
    /// The new mode (`probes`, `no_semaphore`, `scan`).
    pub mode: &'static str,
    pub reason: &'a str,
    /// Probe programs attached now.
    pub attached: u64,
    /// The governor's estimate of watching's cost before the change, in % of one CPU.
    pub estimated_cost_pct: f64,
    pub budget_pct: f64,
    /// Whether `goscope.mode.changes` counts it: not the session's first probes after it
    /// started in scan mode (that would count, and alert on, every attach), nor a failed attach
    /// that left the mode as it was. Every change is logged.
    pub counted: bool,
}

/// goscope's own health; every count is cumulative since attach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Events decoded and processed.
    pub events: u64,
    /// Lost in the kernel ring buffer (it was full).
    pub lost: u64,
    /// Dropped in userspace (the processing queue was full).
    pub dropped: u64,
    /// Ring-buffer records that did not decode.
    pub undecodable: u64,
    /// Probes or targets that failed to attach.
    pub attach_failures: u64,
    pub probes: Vec<ProbeHealth>,
}

/// What [`OtlpExporter::shutdown`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportStats {
    /// Spans.
    pub traces: SignalStats,
    /// Log records (findings and retractions).
    pub logs: SignalStats,
    /// Metric collections (one item per periodic export).
    pub metrics: SignalStats,
    /// Whether every signal flushed before the shutdown deadline.
    pub flushed: bool,
}

impl ExportStats {
    /// Spans and log records that never reached the backend: dropped at a full queue, in failed
    /// exports, or still unsent at shutdown.
    pub fn lost(&self) -> u64 {
        [&self.traces, &self.logs].iter().map(|s| s.dropped + s.failed + s.unsent()).sum()
    }
}

/// How long [`OtlpExporter::shutdown`] waits for the last exports.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

struct Traces {
    processor: Arc<BatchSpanProcessor>,
    gate: Arc<Gate>,
    factory: SpanFactory,
    /// Goroutines with an exported span, whose lifetime is then exported too (so their traces
    /// have a root) however short it was.
    rooted: Mutex<HashSet<u64>>,
    /// Findings raised so far (to number their traces).
    seq: AtomicU64,
    /// Ongoing episodes already exported as a span by a finding: goroutine → (start of its wait,
    /// that span), so a goroutine in two findings (blocked, then deadlock) has one ongoing span,
    /// which both findings link to. Forgotten when the wait ends.
    ongoing: Mutex<HashMap<u64, (u64, SpanContext)>>,
}

/// Most goroutines remembered as having exported spans (exits lost in the kernel would otherwise
/// grow the set forever); past it the set starts over, costing at most some lifetime spans.
const MAX_ROOTED: usize = 1 << 20;

impl Traces {
    fn mark_rooted(&self, goid: u64) {
        if let Ok(mut rooted) = self.rooted.lock() {
            if rooted.len() >= MAX_ROOTED {
                rooted.clear();
            }
            rooted.insert(goid);
        }
    }
}

struct Logs {
    provider: SdkLoggerProvider,
    logger: SdkLogger,
    gate: Arc<Gate>,
}

/// Cumulative health counts, read by the observable instruments' callbacks at collection time.
#[derive(Default)]
struct HealthCells {
    events: AtomicU64,
    lost: AtomicU64,
    dropped: AtomicU64,
    undecodable: AtomicU64,
    attach_failures: AtomicU64,
    probes: Mutex<Vec<ProbeHealth>>,
    goroutines: AtomicI64,
}

struct Metrics {
    provider: SdkMeterProvider,
    gate: Arc<Gate>,
    goroutines: Gauge<u64>,
    blocking: Histogram<f64>,
    findings: Counter<u64>,
    retractions: Counter<u64>,
    open_findings: UpDownCounter<i64>,
    /// Goroutines in open findings, by type and grade.
    finding_goroutines: Gauge<u64>,
    /// Kinds reported last time, to zero the ones whose findings all went away.
    last_finding_kinds: Mutex<HashSet<FindingKind>>,
    mode_changes: Counter<u64>,
    probes_attached: Gauge<u64>,
    health: Arc<HealthCells>,
    /// (state, wait reason) combinations reported last time, to zero the ones that vanished.
    last_combos: Mutex<HashSet<(&'static str, Option<u8>)>>,
    /// Histogram attributes by wait reason code, built on first use.
    reason_attrs: OnceLock<Vec<[KeyValue; 2]>>,
}

/// What the exporter remembers of a raised finding, for its retraction and the
/// `goscope.findings.goroutines` gauge.
struct Raised {
    trace: Option<(TraceId, SpanId)>,
    finding_type: FindingType,
    grade: Grade,
    /// How many goroutines the finding names.
    named: u64,
}

/// A (type, grade) pair of findings, as the finding metrics' attributes name them.
type FindingKind = (FindingType, Grade);

/// Goroutines in the open findings by kind: a leak counts every goroutine waiting at its site for
/// its wait reason now (the pile, which grows while the leak goes on; the finding itself lists
/// at most a sample), any other finding the goroutines it names.
fn goroutines_in_findings(raised: &HashMap<FindingKey, Raised>, state: &ProcessState) -> HashMap<FindingKind, u64> {
    let leak_sites: HashSet<(&str, u32, &str)> = raised
        .keys()
        .filter_map(|k| match k {
            FindingKey::Leak { site: Some((function, line)), reason, .. } => Some((function.as_str(), *line, reason.as_str())),
            _ => None,
        })
        .collect();
    let mut piles: HashMap<(&str, u32, &str), u64> = HashMap::new();
    if !leak_sites.is_empty() {
        for g in state.goroutines().filter(|g| g.state == GoState::Waiting) {
            let Some(wait) = g.wait.as_ref() else { continue };
            let (Some(site), Some(reason)) = (wait.site(), state.reasons().name(wait.reason_code)) else { continue };
            let key = (site.function.as_str(), site.line, reason);
            if leak_sites.contains(&key) {
                *piles.entry(key).or_default() += 1;
            }
        }
    }
    let mut counts: HashMap<FindingKind, u64> = HashMap::new();
    for (key, r) in raised {
        let n = match key {
            FindingKey::Leak { site: Some((function, line)), reason, .. } => {
                piles.get(&(function.as_str(), *line, reason.as_str())).copied().unwrap_or(0)
            }
            _ => r.named,
        };
        *counts.entry((r.finding_type, r.grade)).or_default() += n;
    }
    counts
}

/// Exports one target's goroutine activity over OTLP. All methods take `&self` and return at once.
pub struct OtlpExporter {
    runtime: Option<tokio::runtime::Runtime>,
    traces: Option<Traces>,
    logs: Option<Logs>,
    metrics: Option<Metrics>,
    /// Wall clock at CLOCK_MONOTONIC zero, to timestamp spans from event times.
    wall_at_mono_zero: SystemTime,
    min_span_ns: u64,
    /// Wait classes whose episodes become spans.
    span_waits: HashSet<SpanWaits>,
    raised: Mutex<HashMap<FindingKey, Raised>>,
    config: ResolvedConfig,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter").field("config", &self.config).finish_non_exhaustive()
    }
}

const HISTOGRAM_BOUNDS_S: [f64; 18] =
    [0.000_01, 0.000_1, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0];

impl OtlpExporter {
    /// Starts exporting for one target. `Ok(None)` when no endpoint is configured (flag or
    /// environment): OTLP is off and goscope's output is unchanged. Warnings about likely
    /// misconfigurations go to the log (`log::warn!`).
    pub fn start(args: &OtlpArgs, target: &ProcessInfo) -> Result<Option<Self>, ExportError> {
        let Some(config) = args.resolve()? else {
            return Ok(None);
        };
        Self::start_resolved(config, target).map(Some)
    }

    /// [`Self::start`] with an already resolved configuration.
    pub fn start_resolved(config: ResolvedConfig, target: &ProcessInfo) -> Result<Self, ExportError> {
        for w in &config.warnings {
            log::warn!("{w}");
        }
        sdk::install_crypto_provider();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("goscope-otlp-io")
            .enable_all()
            .build()
            .map_err(|e| ExportError::Io(format!("starting the OTLP I/O runtime: {e}")))?;
        // gRPC channels spawn their connection tasks on the runtime current at build time.
        let _guard = runtime.enter();
        let resource = attrs::resource(target, config.service_name.as_deref());
        let scope = InstrumentationScope::builder("goscope")
            .with_version(env!("CARGO_PKG_VERSION"))
            .with_schema_url(opentelemetry_semantic_conventions::SCHEMA_URL)
            .build();
        let interval = config.export_interval;
        let queue = config.queue_size;

        let traces = match config.signal(Signal::Traces) {
            Some(c) => {
                let gate = Gate::with_rate(queue, config.max_spans_per_second);
                let exporter = Counted::new(sdk::span_exporter(c)?, Arc::clone(&gate));
                let batch = opentelemetry_sdk::trace::BatchConfigBuilder::default()
                    .with_max_queue_size(queue)
                    .with_max_export_batch_size(queue.min(512))
                    .with_scheduled_delay(interval)
                    .build();
                let mut processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
                processor.set_resource(&resource);
                Some(Traces {
                    processor: Arc::new(processor),
                    gate,
                    factory: SpanFactory { ids: Ids::new(Ids::random_salt(target.pid)), scope: scope.clone() },
                    rooted: Mutex::new(HashSet::new()),
                    seq: AtomicU64::new(0),
                    ongoing: Mutex::new(HashMap::new()),
                })
            }
            None => None,
        };

        let logs = match config.signal(Signal::Logs) {
            Some(c) => {
                let gate = Gate::new(queue);
                let exporter = Counted::new(sdk::log_exporter(c)?, Arc::clone(&gate));
                let batch = opentelemetry_sdk::logs::BatchConfigBuilder::default()
                    .with_max_queue_size(queue)
                    .with_max_export_batch_size(queue.min(512))
                    .with_scheduled_delay(interval)
                    .build();
                let provider = SdkLoggerProvider::builder()
                    .with_resource(resource.clone())
                    .with_log_processor(BatchLogProcessor::builder(exporter).with_batch_config(batch).build())
                    .build();
                let logger = provider.logger_with_scope(scope.clone());
                Some(Logs { provider, logger, gate })
            }
            None => None,
        };

        let metrics = match config.signal(Signal::Metrics) {
            Some(c) => {
                let gate = Gate::new(1);
                let exporter = Counted::new(sdk::metric_exporter(c)?, Arc::clone(&gate));
                let reader = PeriodicReader::builder(exporter).with_interval(interval).build();
                let provider = SdkMeterProvider::builder().with_resource(resource.clone()).with_reader(reader).build();
                Some(Metrics::new(
                    provider,
                    gate,
                    &scope,
                    traces.as_ref().map(|t| Arc::clone(&t.gate)),
                    logs.as_ref().map(|l| Arc::clone(&l.gate)),
                ))
            }
            None => None,
        };
        drop(_guard);

        let mono = goscope_memory::monotonic_ns();
        let now = SystemTime::now();
        Ok(Self {
            runtime: Some(runtime),
            traces,
            logs,
            metrics,
            wall_at_mono_zero: now.checked_sub(Duration::from_nanos(mono)).unwrap_or(now),
            min_span_ns: u64::try_from(config.min_span_duration.as_nanos()).unwrap_or(u64::MAX),
            span_waits: config.span_waits.iter().copied().collect(),
            raised: Mutex::new(HashMap::new()),
            config,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &ResolvedConfig {
        &self.config
    }

    fn wall(&self, mono_ns: u64) -> SystemTime {
        self.wall_at_mono_zero + Duration::from_nanos(mono_ns)
    }

    fn submit_span(&self, t: &Traces, span: SpanData) -> bool {
        if t.gate.admit() {
            t.processor.on_end(span);
            true
        } else {
            false
        }
    }

    /// [`Self::submit_span`] under the per-target rate limit (episodes and lifetimes, which a
    /// busy process makes by the thousand; findings are few and never limited).
    fn submit_limited_span(&self, t: &Traces, span: SpanData) -> bool {
        if t.gate.admit_limited() {
            t.processor.on_end(span);
            true
        } else {
            false
        }
    }

    /// A blocking episode ended (`Transition::Unblocked`; other transitions are ignored). Every
    /// episode counts in the blocking-duration histogram; one at least `--otlp-min-span-duration`
    /// long becomes a span. Call it right after `state.apply` returned the transition, so that
    /// `state` still knows the goroutine (parent, creation site) and the channel (capacity).
    pub fn blocking_episode(&self, t: &Transition, state: &ProcessState, ctx: &TargetContext) {
        self.blocking_episode_with(t, state, ctx, &EpisodeExtra::default());
    }

    /// [`Self::blocking_episode`] with facts read elsewhere (park site, element type).
    pub fn blocking_episode_with(&self, t: &Transition, state: &ProcessState, ctx: &TargetContext, extra: &EpisodeExtra) {
        let Transition::Unblocked { goid, wait, since_ns, until_ns, waker_goid } = t else {
            return;
        };
        let duration_ns = until_ns.saturating_sub(*since_ns);
        if let Some(m) = &self.metrics {
            let attrs = m.reason_attrs.get_or_init(|| {
                (0..=u8::MAX)
                    .map(|code| {
                        let reasons = ctx.binary.wait_reasons();
                        let name = reasons.name(code).map_or_else(|| format!("wait reason {code}"), str::to_owned);
                        [
                            KeyValue::new(attrs::WAIT_REASON, name.clone()),
                            KeyValue::new(attrs::WAIT_CLASS, spans::wait_class_name(crate::model::state::WaitClass::of(&name))),
                        ]
                    })
                    .collect()
            });
            m.blocking.record(duration_ns as f64 / 1e9, &attrs[usize::from(wait.reason_code)]);
        }
        let Some(tr) = &self.traces else { return };
        if let Ok(mut ongoing) = tr.ongoing.lock() {
            ongoing.remove(goid);
        }
        if !self.wants_episode_span(wait.class, duration_ns) {
            return;
        }
        let span = spans::episode_span(
            &tr.factory,
            *goid,
            wait,
            *since_ns,
            *until_ns,
            *waker_goid,
            self.wall(*since_ns),
            self.wall(*until_ns),
            Some(state),
            ctx,
            extra,
        );
        if self.submit_limited_span(tr, span) {
            tr.mark_rooted(*goid);
        }
    }

    /// Whether a finished episode of this class and length becomes a span: long enough, and of a
    /// class `--otlp-span-waits` selects.
    fn wants_episode_span(&self, class: crate::model::state::WaitClass, duration_ns: u64) -> bool {
        duration_ns >= self.min_span_ns && self.span_waits.contains(&SpanWaits::of(class))
    }

    /// A goroutine exited (`Transition::Exited`; other transitions are ignored). Its lifetime
    /// becomes a span, the root of its trace, linked to its parent's lifetime span, when it lived
    /// at least `--otlp-min-span-duration` or one of its episodes was exported.
    pub fn goroutine_exited(&self, t: &Transition, ctx: &TargetContext) {
        let Transition::Exited { goid, created_ns, exited_ns, parent_goid } = t else {
            return;
        };
        let Some(tr) = &self.traces else { return };
        let now_ns = *exited_ns;
        let start_ns = created_ns.unwrap_or(ctx.attached_at_ns);
        let had_span = tr.rooted.lock().map(|mut r| r.remove(goid)).unwrap_or(false);
        if let Ok(mut ongoing) = tr.ongoing.lock() {
            ongoing.remove(goid);
        }
        if !had_span && now_ns.saturating_sub(start_ns) < self.min_span_ns {
            return;
        }
        let span =
            spans::lifetime_span(&tr.factory, *goid, *parent_goid, created_ns.is_none(), self.wall(start_ns), self.wall(now_ns));
        // The root of spans already exported is never shed: they would be orphans.
        if had_span {
            self.submit_span(tr, span);
        } else {
            self.submit_limited_span(tr, span);
        }
    }

    /// A finding was raised: a log record (WARN for suspect, ERROR for proven), a count, each
    /// involved goroutine's ongoing blocking episode as a span, and for deadlocks and leaks a span
    /// of the finding linked to every one of those. Call it with the `state` the finding was
    /// computed from, which knows the channels of the ongoing episodes (capacity, element type).
    pub fn finding(&self, f: &Finding, state: &ProcessState) {
        let now = SystemTime::now();
        let mut trace = None;
        if let Some(tr) = &self.traces {
            let seq = tr.seq.fetch_add(1, Relaxed);
            let (mut root, ongoing) = spans::finding_spans(&tr.factory, f, seq, now, Some(state));
            let ongoing = self.new_ongoing_spans(tr, ongoing, root.as_mut(), state);
            // The log record points at the finding's span, or (a `blocked` finding) at the one
            // goroutine's ongoing episode.
            let lead = root
                .as_ref()
                .map(|s| s.span_context.clone())
                .or_else(|| ongoing.first().map(|s| s.span_context.clone()))
                .or_else(|| self.known_ongoing(tr, f, state))
                .map(|c| (c.trace_id(), c.span_id()));
            let mut all_in = true;
            for s in ongoing {
                tr.mark_rooted(spans_goid(&s));
                all_in &= self.submit_span(tr, s);
            }
            if let Some(root) = root {
                all_in &= self.submit_span(tr, root);
            }
            trace = lead.filter(|_| all_in);
        }
        let severity = match f.grade {
            Grade::Suspect => (Severity::Warn, "WARN"),
            Grade::Proven => (Severity::Error, "ERROR"),
        };
        self.emit_log(f, severity, "goscope.finding", f.summary.clone(), trace, false, now);
        let raised = Raised { trace, finding_type: f.finding_type, grade: f.grade, named: f.goroutines.len() as u64 };
        let first = self.raised.lock().map(|mut r| r.insert(f.id.clone(), raised).is_none()).unwrap_or(true);
        if let Some(m) = &self.metrics {
            let attrs = [
                KeyValue::new(attrs::FINDING_TYPE, spans::finding_type_name(f.finding_type)),
                KeyValue::new(attrs::FINDING_GRADE, spans::grade_name(f.grade)),
            ];
            m.findings.add(1, &attrs);
            if first {
                m.open_findings.add(1, &attrs[..1]);
            }
        }
    }

    /// The ongoing-episode spans of `spans` not yet exported for the same wait; the finding's
    /// `root` links to the earlier span in place of a new one.
    fn new_ongoing_spans(
        &self,
        tr: &Traces,
        spans: Vec<SpanData>,
        mut root: Option<&mut SpanData>,
        state: &ProcessState,
    ) -> Vec<SpanData> {
        let Ok(mut known) = tr.ongoing.lock() else { return spans };
        let mut fresh = Vec::with_capacity(spans.len());
        for s in spans {
            let goid = spans_goid(&s);
            let Some(since) = state.goroutine(goid).map(|g| g.since_ns) else {
                fresh.push(s);
                continue;
            };
            match known.get(&goid) {
                Some((known_since, earlier)) if *known_since == since => {
                    if let Some(root) = root.as_deref_mut() {
                        for link in root.links.links.iter_mut().filter(|l| l.span_context == s.span_context) {
                            link.span_context = earlier.clone();
                        }
                    }
                }
                _ => {
                    known.insert(goid, (since, s.span_context.clone()));
                    fresh.push(s);
                }
            }
        }
        fresh
    }

    /// For a `blocked` finding whose goroutine's ongoing span was exported before: that span.
    fn known_ongoing(&self, tr: &Traces, f: &Finding, state: &ProcessState) -> Option<SpanContext> {
        let g = f.goroutines.first()?;
        let since = state.goroutine(g.goid)?.since_ns;
        let known = tr.ongoing.lock().ok()?;
        known.get(&g.goid).filter(|(s, _)| *s == since).map(|(_, c)| c.clone())
    }

    /// A finding went away (its id is no longer reported): an INFO log record with the same
    /// attributes (and the same trace, when it had one) and `goscope.finding.retracted = true`.
    pub fn finding_retracted(&self, f: &Finding) {
        let now = SystemTime::now();
        let raised = self.raised.lock().ok().and_then(|mut r| r.remove(&f.id));
        let trace = raised.as_ref().and_then(|r| r.trace);
        self.emit_log(
            f,
            (Severity::Info, "INFO"),
            "goscope.finding.retracted",
            format!("retracted: {}", f.summary),
            trace,
            true,
            now,
        );
        if let Some(m) = &self.metrics {
            let attrs = [
                KeyValue::new(attrs::FINDING_TYPE, spans::finding_type_name(f.finding_type)),
                KeyValue::new(attrs::FINDING_GRADE, spans::grade_name(f.grade)),
            ];
            m.retractions.add(1, &attrs);
            if raised.is_some() {
                m.open_findings.add(-1, &attrs[..1]);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_log(
        &self,
        f: &Finding,
        (severity, text): (Severity, &'static str),
        event: &'static str,
        body: String,
        trace: Option<(TraceId, SpanId)>,
        retracted: bool,
        now: SystemTime,
    ) {
        let Some(l) = &self.logs else { return };
        if !l.gate.admit() {
            return;
        }
        let mut rec = l.logger.create_log_record();
        rec.set_event_name(event);
        rec.set_timestamp(now);
        rec.set_observed_timestamp(now);
        rec.set_severity_number(severity);
        rec.set_severity_text(text);
        rec.set_body(AnyValue::from(body));
        let mut attrs = spans::finding_attributes(f);
        attrs.push(KeyValue::new(attrs::FINDING_RETRACTED, retracted));
        rec.add_attributes(attrs.into_iter().map(|kv| (kv.key, any_value(kv.value))));
        if let Some((t, s)) = trace {
            rec.set_trace_context(t, s, Some(TraceFlags::SAMPLED));
        }
        l.logger.emit(rec);
    }

    /// Goroutine counts by state and wait reason, for the gauges. Call about once a second.
    pub fn observe_state(&self, state: &ProcessState) {
        let Some(m) = &self.metrics else { return };
        let mut counts: HashMap<(&'static str, Option<u8>), u64> = HashMap::new();
        let mut total = 0i64;
        for g in state.goroutines() {
            let reason = (g.state == GoState::Waiting).then(|| g.wait.as_ref().map(|w| w.reason_code)).flatten();
            *counts.entry((g.state.name(), reason)).or_default() += 1;
            total += 1;
        }
        m.health.goroutines.store(total, Relaxed);
        let attrs = |(st, reason): (&'static str, Option<u8>)| {
            let mut kv = vec![KeyValue::new(attrs::GOROUTINE_STATE, st)];
            if let Some(code) = reason {
                let name = state.reasons().name(code).map_or_else(|| format!("wait reason {code}"), str::to_owned);
                kv.push(KeyValue::new(attrs::WAIT_REASON, name));
            }
            kv
        };
        let Ok(mut last) = m.last_combos.lock() else {
            return;
        };
        for combo in last.iter() {
            if !counts.contains_key(combo) {
                m.goroutines.record(0, &attrs(*combo));
            }
        }
        last.clear();
        for (combo, n) in counts {
            m.goroutines.record(n, &attrs(combo));
            last.insert(combo);
        }
        drop(last);
        self.observe_findings(m, state);
    }

    /// The `goscope.findings.goroutines` gauge, from the open findings and the goroutines now.
    fn observe_findings(&self, m: &Metrics, state: &ProcessState) {
        let counts = match self.raised.lock() {
            Ok(raised) => goroutines_in_findings(&raised, state),
            Err(_) => return,
        };
        let attrs = |(t, g): FindingKind| {
            [
                KeyValue::new(attrs::FINDING_TYPE, spans::finding_type_name(t)),
                KeyValue::new(attrs::FINDING_GRADE, spans::grade_name(g)),
            ]
        };
        let Ok(mut last) = m.last_finding_kinds.lock() else { return };
        for kind in last.iter().filter(|k| !counts.contains_key(k)) {
            m.finding_goroutines.record(0, &attrs(*kind));
        }
        last.clear();
        for (kind, n) in counts {
            m.finding_goroutines.record(n, &attrs(kind));
            last.insert(kind);
        }
    }

    /// Probe programs attached at the start (the `goscope.probes.attached` gauge).
    pub fn probes_attached(&self, attached: u64) {
        if let Some(m) = &self.metrics {
            m.probes_attached.record(attached, &[]);
        }
    }

    /// What watches the target changed (`mode`, with `attached` probe programs now): an INFO log
    /// record `goscope.mode.change` saying why, `goscope.mode.changes` + 1 and the
    /// `goscope.probes.attached` gauge.
    pub fn mode_changed(&self, change: &ModeChange<'_>) {
        if let Some(m) = &self.metrics {
            if change.counted {
                m.mode_changes.add(1, &[KeyValue::new(attrs::MODE, change.mode)]);
            }
            m.probes_attached.record(change.attached, &[]);
        }
        let Some(l) = &self.logs else { return };
        if !l.gate.admit() {
            return;
        }
        let now = SystemTime::now();
        let mut rec = l.logger.create_log_record();
        rec.set_event_name("goscope.mode.change");
        rec.set_timestamp(now);
        rec.set_observed_timestamp(now);
        rec.set_severity_number(Severity::Info);
        rec.set_severity_text("INFO");
        rec.set_body(AnyValue::from(format!("mode {}: {}", change.mode, change.reason)));
        let attributes = [
            KeyValue::new(attrs::MODE, change.mode),
            KeyValue::new(attrs::MODE_REASON, change.reason.to_owned()),
            KeyValue::new(attrs::MODE_ESTIMATED_COST_PCT, change.estimated_cost_pct),
            KeyValue::new(attrs::MODE_BUDGET_PCT, change.budget_pct),
            KeyValue::new(attrs::PROBES_ATTACHED, change.attached as i64),
        ];
        rec.add_attributes(attributes.into_iter().map(|kv| (kv.key, any_value(kv.value))));
        l.logger.emit(rec);
    }

    /// goscope's own health counters (cumulative values; call as often as convenient).
    pub fn health(&self, h: &Health) {
        let Some(m) = &self.metrics else { return };
        let c = &m.health;
        c.events.store(h.events, Relaxed);
        c.lost.store(h.lost, Relaxed);
        c.dropped.store(h.dropped, Relaxed);
        c.undecodable.store(h.undecodable, Relaxed);
        c.attach_failures.store(h.attach_failures, Relaxed);
        // The collector thread holds this lock only to copy the list; never wait for it.
        if let Ok(mut p) = c.probes.try_lock() {
            p.clone_from(&h.probes);
        }
    }

    /// Counts so far, without stopping.
    pub fn stats(&self) -> ExportStats {
        ExportStats {
            traces: self.traces.as_ref().map(|t| t.gate.stats()).unwrap_or_default(),
            logs: self.logs.as_ref().map(|l| l.gate.stats()).unwrap_or_default(),
            metrics: self.metrics.as_ref().map(|m| m.gate.stats()).unwrap_or_default(),
            flushed: false,
        }
    }

    /// Exports what is queued and stops, waiting at most [`SHUTDOWN_TIMEOUT`] in all (a backend
    /// that is down or slow costs at most that). Returns what was exported and what was lost.
    pub fn shutdown(self) -> ExportStats {
        self.shutdown_within(SHUTDOWN_TIMEOUT)
    }

    /// [`Self::shutdown`] with another deadline.
    pub fn shutdown_within(mut self, timeout: Duration) -> ExportStats {
        let deadline = Instant::now() + timeout;
        let traces = self.traces.take();
        let logs = self.logs.take();
        let metrics = self.metrics.take();
        let (trace_gate, log_gate, metric_gate) = (
            traces.as_ref().map(|t| Arc::clone(&t.gate)),
            logs.as_ref().map(|l| Arc::clone(&l.gate)),
            metrics.as_ref().map(|m| Arc::clone(&m.gate)),
        );
        // Each signal shuts down on a thread of its own, in parallel; whatever has not finished
        // by the deadline is abandoned (its exports may still complete in the background).
        let (tx, rx) = mpsc::channel::<bool>();
        let mut pending = 0;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        if let Some(t) = traces {
            let tx = tx.clone();
            let budget = remaining();
            pending += spawn_shutdown("goscope-otlp-stop-traces", tx, move || t.processor.shutdown_with_timeout(budget).is_ok());
        }
        if let Some(l) = logs {
            let tx = tx.clone();
            let budget = remaining();
            pending += spawn_shutdown("goscope-otlp-stop-logs", tx, move || l.provider.shutdown_with_timeout(budget).is_ok());
        }
        if let Some(m) = metrics {
            let tx = tx.clone();
            let budget = remaining();
            pending += spawn_shutdown("goscope-otlp-stop-metrics", tx, move || m.provider.shutdown_with_timeout(budget).is_ok());
        }
        drop(tx);
        let mut flushed = true;
        for _ in 0..pending {
            match rx.recv_timeout(remaining()) {
                Ok(ok) => flushed &= ok,
                Err(_) => {
                    flushed = false;
                    break;
                }
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        ExportStats {
            traces: trace_gate.map(|g| g.stats()).unwrap_or_default(),
            logs: log_gate.map(|g| g.stats()).unwrap_or_default(),
            metrics: metric_gate.map(|g| g.stats()).unwrap_or_default(),
            flushed,
        }
    }
}

/// The goroutine a span describes (its `goscope.goroutine.id`).
fn spans_goid(s: &SpanData) -> u64 {
    s.attributes
        .iter()
        .find(|kv| kv.key.as_str() == attrs::GOROUTINE_ID)
        .and_then(|kv| if let opentelemetry::Value::I64(i) = kv.value { u64::try_from(i).ok() } else { None })
        .unwrap_or(0)
}

/// An attribute value as a log attribute value.
fn any_value(v: opentelemetry::Value) -> AnyValue {
    use opentelemetry::{Array, Value};
    match v {
        Value::Bool(b) => AnyValue::Boolean(b),
        Value::I64(i) => AnyValue::Int(i),
        Value::F64(f) => AnyValue::Double(f),
        Value::String(s) => AnyValue::String(s),
        Value::Array(Array::Bool(v)) => AnyValue::ListAny(Box::new(v.into_iter().map(AnyValue::Boolean).collect())),
        Value::Array(Array::I64(v)) => AnyValue::ListAny(Box::new(v.into_iter().map(AnyValue::Int).collect())),
        Value::Array(Array::F64(v)) => AnyValue::ListAny(Box::new(v.into_iter().map(AnyValue::Double).collect())),
        Value::Array(Array::String(v)) => AnyValue::ListAny(Box::new(v.into_iter().map(AnyValue::String).collect())),
        other => AnyValue::String(other.to_string().into()),
    }
}

fn spawn_shutdown(name: &str, tx: mpsc::Sender<bool>, f: impl FnOnce() -> bool + Send + 'static) -> usize {
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        let _ = tx.send(f());
    });
    usize::from(spawned.is_ok())
}

impl Drop for OtlpExporter {
    fn drop(&mut self) {
        // Dropped without shutdown (an error path): stop without waiting for the backend.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Metrics {
    fn new(
        provider: SdkMeterProvider,
        gate: Arc<Gate>,
        scope: &InstrumentationScope,
        trace_gate: Option<Arc<Gate>>,
        log_gate: Option<Arc<Gate>>,
    ) -> Self {
        let meter = provider.meter_with_scope(scope.clone());
        let health = Arc::new(HealthCells::default());
        let goroutines = meter
            .u64_gauge("goscope.goroutines")
            .with_description("Goroutines of the target by state (and wait reason, when waiting)")
            .with_unit("{goroutine}")
            .build();
        let blocking = meter
            .f64_histogram("goscope.blocking.duration")
            .with_description("How long goroutines stayed blocked, per finished blocking episode")
            .with_unit("s")
            .with_boundaries(HISTOGRAM_BOUNDS_S.to_vec())
            .build();
        let findings = meter
            .u64_counter("goscope.findings")
            .with_description("Findings raised, by type and grade")
            .with_unit("{finding}")
            .build();
        let retractions = meter
            .u64_counter("goscope.findings.retracted")
            .with_description("Findings retracted (the situation went away), by type and grade")
            .with_unit("{finding}")
            .build();
        let open_findings = meter
            .i64_up_down_counter("goscope.findings.open")
            .with_description("Findings raised and not retracted, by type")
            .with_unit("{finding}")
            .build();
        let finding_goroutines = meter
            .u64_gauge("goscope.findings.goroutines")
            .with_description(
                "Goroutines in open findings by type and grade (for a leak: every goroutine waiting at its site now)",
            )
            .with_unit("{goroutine}")
            .build();
        let mode_changes = meter
            .u64_counter("goscope.mode.changes")
            .with_description("Changes of what watches the target (the budget governor), by the new mode")
            .with_unit("{change}")
            .build();
        let probes_attached = meter
            .u64_gauge("goscope.probes.attached")
            .with_description("Probe programs attached to the target now (0 in scan mode)")
            .with_unit("{probe}")
            .build();

        health_counters(&meter, &health);
        probe_counters(&meter, &health);
        otlp_counters(&meter, &gate, trace_gate, log_gate);

        Self {
            provider,
            gate,
            goroutines,
            blocking,
            findings,
            retractions,
            open_findings,
            finding_goroutines,
            last_finding_kinds: Mutex::new(HashSet::new()),
            mode_changes,
            probes_attached,
            health,
            last_combos: Mutex::new(HashSet::new()),
            reason_attrs: OnceLock::new(),
        }
    }
}

/// The live goroutine count and goscope's own event counters, read from `health` on collection.
fn health_counters(meter: &Meter, health: &Arc<HealthCells>) {
    let h = Arc::clone(health);
    meter
        .i64_observable_up_down_counter(opentelemetry_semantic_conventions::metric::GO_GOROUTINE_COUNT)
        .with_description("Count of live goroutines (as goscope's state knows them)")
        .with_unit("{goroutine}")
        .with_callback(move |o| o.observe(h.goroutines.load(Relaxed), &[]))
        .build();
    let counter = |name: &'static str, description: &'static str, unit: &'static str, read: fn(&HealthCells) -> u64| {
        let h = Arc::clone(health);
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_unit(unit)
            .with_callback(move |o| o.observe(read(&h), &[]))
            .build();
    };
    counter("goscope.events", "Goroutine events processed", "{event}", |h| h.events.load(Relaxed));
    counter("goscope.events.lost", "Events lost in the kernel ring buffer (it was full)", "{event}", |h| h.lost.load(Relaxed));
    counter("goscope.events.dropped", "Events dropped in userspace (the processing queue was full)", "{event}", |h| {
        h.dropped.load(Relaxed)
    });
    counter("goscope.events.undecodable", "Ring-buffer records that did not decode", "{event}", |h| h.undecodable.load(Relaxed));
    counter("goscope.attach.failures", "Probes or targets that failed to attach", "{failure}", |h| {
        h.attach_failures.load(Relaxed)
    });
}

/// Per-probe hits, failed reads and estimated cost, read from `health` on collection.
fn probe_counters(meter: &Meter, health: &Arc<HealthCells>) {
    let probe_attrs = |p: &ProbeHealth| {
        [
            KeyValue::new(attrs::PROBE_NAME, p.name),
            KeyValue::new(attrs::PROBE_MODE, if p.emulated { "emulated" } else { "single_stepped" }),
        ]
    };
    let h = Arc::clone(health);
    meter
        .u64_observable_counter("goscope.probe.hits")
        .with_description("Uprobe hits by probe")
        .with_unit("{hit}")
        .with_callback(move |o| {
            if let Ok(probes) = h.probes.lock() {
                for p in probes.iter() {
                    o.observe(p.hits, &probe_attrs(p));
                }
            }
        })
        .build();
    let h = Arc::clone(health);
    meter
        .u64_observable_counter("goscope.probe.read_failures")
        .with_description("Uprobe hits whose reads of the target's memory failed (their events were dropped), by probe")
        .with_unit("{hit}")
        .with_callback(move |o| {
            if let Ok(probes) = h.probes.lock() {
                for p in probes.iter() {
                    o.observe(p.read_failures, &probe_attrs(p));
                }
            }
        })
        .build();
    let h = Arc::clone(health);
    meter
        .f64_observable_counter("goscope.probe.cost")
        .with_description(
            "Estimated CPU time the target spent in goscope's uprobes (~1 us per emulated hit, ~5 us per single-stepped hit)",
        )
        .with_unit("s")
        .with_callback(move |o| {
            if let Ok(probes) = h.probes.lock() {
                for p in probes.iter() {
                    o.observe(p.estimated_cost_s(), &probe_attrs(p));
                }
            }
        })
        .build();
}

/// What each OTLP signal's export did (exported, failed, dropped, rate limited).
fn otlp_counters(meter: &Meter, gate: &Arc<Gate>, trace_gate: Option<Arc<Gate>>, log_gate: Option<Arc<Gate>>) {
    let mut gates: Vec<(&'static str, Arc<Gate>)> = vec![("metrics", Arc::clone(gate))];
    gates.extend(trace_gate.map(|g| ("traces", g)));
    gates.extend(log_gate.map(|g| ("logs", g)));
    let gates = Arc::new(gates);
    let otlp = |name: &'static str, description: &'static str, read: fn(&SignalStats) -> u64| {
        let gates = Arc::clone(&gates);
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |o| {
                for (signal, g) in gates.iter() {
                    o.observe(read(&g.stats()), &[KeyValue::new(attrs::OTLP_SIGNAL, *signal)]);
                }
            })
            .build();
    };
    otlp("goscope.otlp.exported", "Spans, log records or metric collections the backend accepted", |s| s.exported);
    otlp("goscope.otlp.failed", "Items in exports that failed after retries", |s| s.failed);
    otlp("goscope.otlp.dropped", "Items dropped because the export queue was full", |s| s.dropped);
    otlp("goscope.otlp.rate_limited", "Spans refused by the per-target rate limit (--otlp-max-spans-per-second)", |s| {
        s.rate_limited
    });
}

#[cfg(test)]
mod tests;
