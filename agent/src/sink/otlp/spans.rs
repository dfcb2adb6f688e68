//! Span and attribute construction: pure functions from goscope's state to `SpanData`, so they are
//! tested without a backend.
use std::{borrow::Cow, time::SystemTime};

use opentelemetry::{
    InstrumentationScope, KeyValue, StringValue, Value,
    trace::{Link, SpanId, SpanKind, Status},
};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::{
    attrs as a,
    ids::{Ids, context},
};
use crate::{
    detect::{Finding, FindingType, Grade, Involved},
    model::{
        Location, hex,
        state::{ProcessState, Wait, WaitClass},
    },
    target::TargetContext,
};

/// Optional facts about an episode that goscope's state may not hold: where the goroutine parked,
/// for a wait without a park site of its own (captured at park, or read from its stack).
#[derive(Debug, Clone, Default)]
pub struct EpisodeExtra {
    /// Runtime PC of the innermost user frame that blocked (the caller of the runtime's chan/select
    /// or sync code), symbolized into `code.*`.
    pub park_pc: Option<u64>,
}

pub(crate) fn wait_class_name(c: WaitClass) -> &'static str {
    match c {
        WaitClass::ChanSend => "chan_send",
        WaitClass::ChanReceive => "chan_receive",
        WaitClass::Select => "select",
        WaitClass::Forever => "forever",
        WaitClass::Mutex => "mutex",
        WaitClass::RWMutexRead => "rwmutex_read",
        WaitClass::RWMutexWrite => "rwmutex_write",
        WaitClass::WaitGroup => "wait_group",
        WaitClass::Cond => "cond",
        WaitClass::Semaphore => "semaphore",
        WaitClass::Sleep => "sleep",
        WaitClass::IoWait => "io_wait",
        WaitClass::Runtime => "runtime",
        WaitClass::Other => "other",
    }
}

pub(crate) fn finding_type_name(t: FindingType) -> &'static str {
    match t {
        FindingType::Blocked => "blocked",
        FindingType::Leak => "leak",
        FindingType::Deadlock => "deadlock",
    }
}

pub(crate) fn grade_name(g: Grade) -> &'static str {
    match g {
        Grade::Suspect => "suspect",
        Grade::Proven => "proven",
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn str_array(items: impl IntoIterator<Item = String>) -> Value {
    let v: Vec<StringValue> = items.into_iter().map(StringValue::from).collect();
    Value::Array(v.into())
}

fn int_array(items: impl IntoIterator<Item = u64>) -> Value {
    Value::Array(items.into_iter().map(int).collect::<Vec<i64>>().into())
}

/// The wait reason's name in the target's own table.
pub(crate) fn reason_name(ctx: &TargetContext, code: u8) -> String {
    ctx.binary.wait_reasons().name(code).map_or_else(|| format!("wait reason {code}"), str::to_owned)
}

pub(crate) struct SpanFactory {
    pub(crate) ids: Ids,
    pub(crate) scope: InstrumentationScope,
}

/// A span as goscope emits it: internal, sampled, no events.
#[allow(clippy::too_many_arguments)]
fn span(
    sf: &SpanFactory,
    ctx: opentelemetry::trace::SpanContext,
    parent: SpanId,
    name: impl Into<Cow<'static, str>>,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<KeyValue>,
    links: Vec<Link>,
    status: Status,
) -> SpanData {
    SpanData {
        span_context: ctx,
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: name.into(),
        start_time: start,
        end_time: end.max(start),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: {
            let mut l = SpanLinks::default();
            l.links = links;
            l
        },
        status,
        instrumentation_scope: sf.scope.clone(),
    }
}

/// Attributes of a wait, shared by finished episodes.
fn wait_attributes(out: &mut Vec<KeyValue>, wait: &Wait, reason: &str, state: Option<&ProcessState>) {
    out.push(KeyValue::new(a::WAIT_REASON, reason.to_owned()));
    out.push(KeyValue::new(a::WAIT_REASON_CODE, i64::from(wait.reason_code)));
    out.push(KeyValue::new(a::WAIT_CLASS, wait_class_name(wait.class)));
    if let Some(&first) = wait.channels.first() {
        out.push(KeyValue::new(a::CHANNEL_ADDRESS, hex(first)));
        if wait.channels.len() > 1 {
            out.push(KeyValue::new(a::CHANNEL_ADDRESSES, str_array(wait.channels.iter().map(|&c| hex(c)))));
        }
        channel_attributes(out, first, state);
    }
    if let Some(lock) = wait.lock {
        out.push(KeyValue::new(a::LOCK_ADDRESS, hex(lock)));
    }
}

/// Capacity, closed flag and element type of channel `addr`, once read from memory.
fn channel_attributes(out: &mut Vec<KeyValue>, addr: u64, state: Option<&ProcessState>) {
    let Some(ch) = state.and_then(|s| s.channel(addr)) else {
        return;
    };
    if let Some(cap) = ch.capacity {
        out.push(KeyValue::new(a::CHANNEL_CAPACITY, int(cap)));
        out.push(KeyValue::new(a::CHANNEL_CLOSED, ch.closed));
    }
    if let Some(t) = &ch.element_type {
        out.push(KeyValue::new(a::CHANNEL_ELEMENT_TYPE, t.clone()));
    }
}

/// What is known about the goroutine itself: parent, creation site, start function.
fn goroutine_attributes(out: &mut Vec<KeyValue>, goid: u64, state: Option<&ProcessState>, ctx: &TargetContext) {
    out.push(KeyValue::new(a::GOROUTINE_ID, int(goid)));
    let Some(g) = state.and_then(|s| s.goroutine(goid)) else {
        return;
    };
    if let Some(p) = g.parent_goid.filter(|&p| p != 0) {
        out.push(KeyValue::new(a::GOROUTINE_PARENT_ID, int(p)));
    }
    if let Some(f) = g.start_pc.and_then(|pc| ctx.binary.symbolize(pc.wrapping_sub(ctx.load_bias))) {
        out.push(KeyValue::new(a::GOROUTINE_START_FUNCTION, f.function));
    }
    // gopc is a return address: the `go` statement is the call before it.
    if let Some(f) = g.creation_pc.and_then(|pc| ctx.binary.symbolize(pc.saturating_sub(1).wrapping_sub(ctx.load_bias))) {
        out.push(KeyValue::new(a::GOROUTINE_CREATION_FUNCTION, f.function));
        out.push(KeyValue::new(a::GOROUTINE_CREATION_FILE, f.file));
        out.push(KeyValue::new(a::GOROUTINE_CREATION_LINE, i64::from(f.line)));
    }
}

/// `code.*` (current and pre-1.30 names) for the park site: the wait's own (captured at park, or
/// read from its stack), else the caller's `park_pc`.
fn code_attributes(out: &mut Vec<KeyValue>, wait: &Wait, extra: &EpisodeExtra, ctx: &TargetContext) {
    let from_pc = || extra.park_pc.and_then(|pc| ctx.binary.symbolize(pc.wrapping_sub(ctx.load_bias)));
    if let Some(site) = wait.site().cloned().or_else(from_pc) {
        site_attributes(out, site);
    }
}

/// `code.*` (current and pre-1.30 names) for one source site.
fn site_attributes(out: &mut Vec<KeyValue>, site: Location) {
    out.push(KeyValue::new(a::CODE_FUNCTION_NAME, site.function.clone()));
    out.push(KeyValue::new(a::CODE_FUNCTION_LEGACY, site.function));
    if site.file != "?" {
        out.push(KeyValue::new(a::CODE_FILE_PATH, site.file.clone()));
        out.push(KeyValue::new(a::CODE_FILEPATH_LEGACY, site.file));
    }
    if site.line != 0 {
        out.push(KeyValue::new(a::CODE_LINE_NUMBER, i64::from(site.line)));
        out.push(KeyValue::new(a::CODE_LINENO_LEGACY, i64::from(site.line)));
    }
}

pub(crate) fn episode_name(reason: &str) -> String {
    format!("block: {reason}")
}

/// One finished blocking episode (`Transition::Unblocked`), a child of the goroutine's lifetime.
#[allow(clippy::too_many_arguments)]
pub(crate) fn episode_span(
    sf: &SpanFactory,
    goid: u64,
    wait: &Wait,
    since_ns: u64,
    until_ns: u64,
    waker_goid: u64,
    start: SystemTime,
    end: SystemTime,
    state: Option<&ProcessState>,
    ctx: &TargetContext,
    extra: &EpisodeExtra,
) -> SpanData {
    let reason = reason_name(ctx, wait.reason_code);
    let mut attrs = Vec::with_capacity(20);
    goroutine_attributes(&mut attrs, goid, state, ctx);
    wait_attributes(&mut attrs, wait, &reason, state);
    code_attributes(&mut attrs, wait, extra, ctx);
    if waker_goid != 0 {
        attrs.push(KeyValue::new(a::WAKER_GOROUTINE_ID, int(waker_goid)));
        attrs.push(KeyValue::new(a::WAKER_KIND, "goroutine"));
    } else {
        attrs.push(KeyValue::new(a::WAKER_KIND, "runtime"));
    }
    attrs.push(KeyValue::new(a::BLOCKING_DURATION_NS, int(until_ns.saturating_sub(since_ns))));
    let ids = &sf.ids;
    let mut links = Vec::new();
    if waker_goid != 0 {
        links.push(Link::new(ids.lifetime_context(waker_goid), vec![KeyValue::new(a::WAKER_GOROUTINE_ID, int(waker_goid))], 0));
    }
    span(
        sf,
        context(ids.goroutine_trace(goid), ids.episode_span(goid, since_ns)),
        ids.lifetime_span(goid),
        episode_name(&reason),
        start,
        end,
        attrs,
        links,
        Status::Unset,
    )
}

/// A goroutine's lifetime (`Transition::Exited`): the root of its trace, linked to its parent's.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lifetime_span(
    sf: &SpanFactory,
    goid: u64,
    parent_goid: Option<u64>,
    created_before_attach: bool,
    start: SystemTime,
    end: SystemTime,
) -> SpanData {
    let ids = &sf.ids;
    let mut attrs = vec![KeyValue::new(a::GOROUTINE_ID, int(goid))];
    let mut links = Vec::new();
    if let Some(p) = parent_goid.filter(|&p| p != 0) {
        attrs.push(KeyValue::new(a::GOROUTINE_PARENT_ID, int(p)));
        links.push(Link::new(ids.lifetime_context(p), vec![KeyValue::new(a::GOROUTINE_PARENT_ID, int(p))], 0));
    }
    if created_before_attach {
        attrs.push(KeyValue::new(a::GOROUTINE_CREATED_BEFORE_ATTACH, true));
    }
    span(sf, ids.lifetime_context(goid), SpanId::INVALID, "goroutine", start, end, attrs, links, Status::Unset)
}

/// Attributes describing a finding, shared by its span and its log records.
pub(crate) fn finding_attributes(f: &Finding) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new(a::FINDING_ID, f.id.to_string()),
        KeyValue::new(a::FINDING_TYPE, finding_type_name(f.finding_type)),
        KeyValue::new(a::FINDING_GRADE, grade_name(f.grade)),
        KeyValue::new(a::FINDING_SUMMARY, f.summary.clone()),
        KeyValue::new(a::FINDING_GOROUTINE_IDS, int_array(f.goroutines.iter().map(|g| g.goid))),
        KeyValue::new(a::FINDING_WAIT_REASONS, str_array(f.goroutines.iter().map(|g| g.wait_reason.clone()))),
        KeyValue::new(a::FINDING_MAX_WAIT_NS, int(f.goroutines.iter().map(|g| g.waiting_for_ns).max().unwrap_or(0))),
    ];
    let channels: Vec<String> = f.goroutines.iter().filter_map(|g| g.channel.clone()).collect();
    if !channels.is_empty() {
        attrs.push(KeyValue::new(a::FINDING_CHANNELS, str_array(channels)));
    }
    let locks: Vec<String> = f.goroutines.iter().filter_map(|g| g.lock.clone()).collect();
    if !locks.is_empty() {
        attrs.push(KeyValue::new(a::FINDING_LOCKS, str_array(locks)));
    }
    // One blocking call for all (a leak is one site by construction): where to look.
    if let Some((first, rest)) = f.goroutines.split_first()
        && let Some(site) = &first.site
        && rest.iter().all(|g| g.site.as_ref() == Some(site))
    {
        site_attributes(&mut attrs, site.clone());
    }
    if !f.chain.is_empty() {
        attrs.push(KeyValue::new(a::FINDING_CHAIN, int_array(f.chain.iter().copied())));
    }
    // A single-goroutine finding also carries the per-goroutine keys, for simple queries.
    if let [g] = f.goroutines.as_slice() {
        involved_attributes(&mut attrs, g);
    }
    attrs
}

fn involved_attributes(out: &mut Vec<KeyValue>, g: &Involved) {
    out.push(KeyValue::new(a::GOROUTINE_ID, int(g.goid)));
    out.push(KeyValue::new(a::WAIT_REASON, g.wait_reason.clone()));
    if let Some(c) = &g.channel {
        out.push(KeyValue::new(a::CHANNEL_ADDRESS, c.clone()));
    }
    if let Some(l) = &g.lock {
        out.push(KeyValue::new(a::LOCK_ADDRESS, l.clone()));
    }
}

/// A finding's spans: each involved goroutine's still-ongoing blocking episode (in that
/// goroutine's trace, under its lifetime span) and, for deadlocks and leaks, the finding itself as
/// the root of a trace of its own, linked to every one of them. A `blocked` finding is only its
/// goroutine's ongoing episode. `state` (the one the finding was computed from) adds what it
/// knows of their channels. Returns (finding span, ongoing spans).
pub(crate) fn finding_spans(
    sf: &SpanFactory,
    f: &Finding,
    seq: u64,
    now: SystemTime,
    state: Option<&ProcessState>,
) -> (Option<SpanData>, Vec<SpanData>) {
    let ids = &sf.ids;
    let mut ongoing = Vec::with_capacity(f.goroutines.len());
    let mut links = Vec::with_capacity(f.goroutines.len());
    for g in &f.goroutines {
        let start = now.checked_sub(std::time::Duration::from_nanos(g.waiting_for_ns)).unwrap_or(now);
        let mut attrs = Vec::with_capacity(20);
        involved_attributes(&mut attrs, g);
        let wait = state.and_then(|s| s.goroutine(g.goid)).and_then(|live| live.wait.as_ref());
        if let Some(&first) = wait.and_then(|w| w.channels.first()) {
            channel_attributes(&mut attrs, first, state);
        }
        if let Some(site) = &g.site {
            site_attributes(&mut attrs, site.clone());
        }
        attrs.push(KeyValue::new(a::BLOCKING_DURATION_NS, int(g.waiting_for_ns)));
        attrs.push(KeyValue::new(a::BLOCKING_ONGOING, true));
        if g.waiting_for_is_lower_bound {
            attrs.push(KeyValue::new(a::BLOCKING_SINCE_IS_LOWER_BOUND, true));
        }
        attrs.push(KeyValue::new(a::FINDING_ID, f.id.to_string()));
        let sc = context(ids.goroutine_trace(g.goid), ids.ongoing_span(g.goid, seq));
        let mut link_attrs =
            vec![KeyValue::new(a::GOROUTINE_ID, int(g.goid)), KeyValue::new(a::WAIT_REASON, g.wait_reason.clone())];
        if let Some(pos) = f.chain.iter().position(|&c| c == g.goid) {
            link_attrs.push(KeyValue::new(a::FINDING_CHAIN_POSITION, pos as i64));
        }
        links.push(Link::new(sc.clone(), link_attrs, 0));
        ongoing.push(span(
            sf,
            sc,
            ids.lifetime_span(g.goid),
            episode_name(&g.wait_reason),
            start,
            now,
            attrs,
            Vec::new(),
            Status::Unset,
        ));
    }
    if f.finding_type == FindingType::Blocked {
        return (None, ongoing);
    }
    let longest = f.goroutines.iter().map(|g| g.waiting_for_ns).max().unwrap_or(0);
    let start = now.checked_sub(std::time::Duration::from_nanos(longest)).unwrap_or(now);
    let (trace, span_id) = ids.finding(&f.id.to_string(), seq);
    let status = match f.grade {
        Grade::Proven => Status::error(f.summary.clone()),
        Grade::Suspect => Status::Unset,
    };
    let root = span(
        sf,
        context(trace, span_id),
        SpanId::INVALID,
        finding_type_name(f.finding_type),
        start,
        now,
        finding_attributes(f),
        links,
        status,
    );
    (Some(root), ongoing)
}
