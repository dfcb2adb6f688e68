//! Unit tests of what does not need a Go binary or a backend. The end-to-end tests (a real Jaeger
//! built from source, real goscope, real Go fixtures) are in `tests/tests/otlp.rs`.
use std::time::{Duration, SystemTime};

use opentelemetry::{InstrumentationScope, Key, Value, trace::Status};

use super::{ids::Ids, spans::*, *};
use crate::{
    detect::{FindingKey, FindingType, Involved},
    model::{
        Location,
        events::{EventDetail, GoroutineEvent},
        state::WaitReasons,
    },
};

fn factory() -> SpanFactory {
    SpanFactory { ids: Ids::new(7), scope: InstrumentationScope::builder("goscope").build() }
}

fn attr<'a>(s: &'a SpanData, k: &str) -> Option<&'a Value> {
    s.attributes.iter().find(|kv| kv.key == Key::from(k.to_owned())).map(|kv| &kv.value)
}

fn deadlock() -> Finding {
    let involved = |goid, ch: &str| Involved {
        wait_reason: "chan send".into(),
        channel: Some(ch.into()),
        waiting_for_ns: 2_000_000_000,
        ..Involved::test(goid)
    };
    Finding {
        id: FindingKey::Deadlock { pid: 1, goroutines: vec![5, 6] },
        finding_type: FindingType::Deadlock,
        grade: Grade::Proven,
        pid: 1,
        goroutines: vec![involved(5, "0xc000010000"), involved(6, "0xc000010100")],
        chain: vec![5, 6],
        summary: "g5 and g6 wait on each other".into(),
    }
}

#[test]
fn a_deadlock_links_to_every_goroutines_ongoing_blocking_span() {
    let sf = factory();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let (root, ongoing) = finding_spans(&sf, &deadlock(), 0, now, None);
    let root = root.expect("a deadlock has a span of its own");
    assert_eq!(root.name, "deadlock");
    assert_eq!(root.parent_span_id, SpanId::INVALID);
    assert!(matches!(root.status, Status::Error { .. }));
    assert_eq!(root.start_time, now - Duration::from_secs(2));
    assert_eq!(ongoing.len(), 2);
    assert_eq!(root.links.len(), 2);
    for (link, span) in root.links.iter().zip(&ongoing) {
        assert_eq!(link.span_context, span.span_context);
        assert_eq!(attr(span, "goscope.blocking.ongoing"), Some(&Value::Bool(true)));
        assert_eq!(attr(span, "goscope.wait.reason"), Some(&Value::from("chan send")));
    }
    // Each ongoing span sits in its goroutine's trace, under its lifetime span.
    assert_eq!(ongoing[0].span_context.trace_id(), sf.ids.goroutine_trace(5));
    assert_eq!(ongoing[0].parent_span_id, sf.ids.lifetime_span(5));
    assert_eq!(attr(&ongoing[1], "goscope.channel.address"), Some(&Value::from("0xc000010100")));
    assert_eq!(attr(&root, "goscope.finding.type"), Some(&Value::from("deadlock")));
    assert_eq!(attr(&root, "goscope.finding.grade"), Some(&Value::from("proven")));
    assert!(matches!(attr(&root, "goscope.finding.chain"), Some(Value::Array(_))));
}

#[test]
fn a_blocked_finding_is_its_goroutines_ongoing_episode() {
    let mut f = deadlock();
    f.finding_type = FindingType::Blocked;
    f.grade = Grade::Suspect;
    f.goroutines.truncate(1);
    f.chain.clear();
    let (root, ongoing) = finding_spans(&factory(), &f, 3, SystemTime::now(), None);
    assert!(root.is_none());
    assert_eq!(ongoing.len(), 1);
    assert_eq!(ongoing[0].name, "block: chan send");
    assert_eq!(attr(&ongoing[0], "goscope.finding.id"), Some(&Value::from("deadlock:1:5-6")));
}

/// A leak of two goroutines parked on their own channels at one send, as the leak detector
/// reports it, and the state it came from (channels read from memory).
fn leak_and_state() -> (Finding, ProcessState) {
    const CHAN_SEND: u8 = 1;
    const HCHAN_LOCK: u32 = 104;
    let site = Location::new("main.compute", "/src/main.go", 54);
    let mut state = ProcessState::new(1, WaitReasons::new(vec![String::new(), "chan send".into()]), HCHAN_LOCK);
    let mut goroutines = Vec::new();
    for (goid, chan) in [(5, 0xc000_1000_u64), (6, 0xc000_2000)] {
        let detail = EventDetail::Parked {
            wait_reason: CHAN_SEND,
            lock_addr: chan + u64::from(HCHAN_LOCK),
            g_addr: 0x1000 + goid,
            sema_addr: 0,
            return_pcs: Default::default(),
        };
        state.apply(&GoroutineEvent { ts_ns: 10, pid: 1, tid: 1, goid, detail });
        state.set_park_details(goid, Some(site.clone()), None);
        state.set_channel_info(chan, 0, false, Some("int".into()));
        goroutines.push(Involved {
            wait_reason: "chan send".into(),
            channel: Some(format!("{chan:#x}")),
            waiting_for_ns: 2_000_000_000,
            site: Some(site.clone()),
            ..Involved::test(goid)
        });
    }
    let leak = Finding {
        id: FindingKey::Leak { pid: 1, site: Some(("main.compute".into(), 54)), reason: "chan send".into() },
        finding_type: FindingType::Leak,
        grade: Grade::Proven,
        pid: 1,
        goroutines,
        chain: Vec::new(),
        summary: "leak: 2 goroutines blocked in chan send at main.compute (/src/main.go:54)".into(),
    };
    (leak, state)
}

#[test]
fn a_leak_names_its_site_and_its_ongoing_spans_their_channels() {
    let (leak, state) = leak_and_state();
    let attrs = finding_attributes(&leak);
    let get = |k: &str| attrs.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.clone());
    assert_eq!(get("code.function.name"), Some(Value::from("main.compute")));
    assert_eq!(get("code.file.path"), Some(Value::from("/src/main.go")));
    assert_eq!(get("code.line.number"), Some(Value::I64(54)));
    assert_eq!(get("code.lineno"), Some(Value::I64(54)));
    assert_eq!(get("goscope.finding.lock.addresses"), None);

    let (root, ongoing) = finding_spans(&factory(), &leak, 0, SystemTime::now(), Some(&state));
    assert_eq!(root.expect("a leak has a span of its own").name, "leak");
    for span in &ongoing {
        assert_eq!(attr(span, "code.function.name"), Some(&Value::from("main.compute")));
        assert_eq!(attr(span, "goscope.channel.element_type"), Some(&Value::from("int")));
        assert_eq!(attr(span, "goscope.channel.capacity"), Some(&Value::I64(0)));
    }
    // Without the state, only what the finding itself carries.
    let (_, ongoing) = finding_spans(&factory(), &leak, 0, SystemTime::now(), None);
    assert_eq!(attr(&ongoing[0], "goscope.channel.element_type"), None);
    assert_eq!(attr(&ongoing[0], "code.line.number"), Some(&Value::I64(54)));
}

#[test]
fn a_deadlock_over_locks_lists_them_and_names_no_common_site() {
    let mut f = deadlock();
    for (g, (lock, line)) in f.goroutines.iter_mut().zip([("0xc000030000", 70), ("0xc000030008", 71)]) {
        g.channel = None;
        g.lock = Some(lock.into());
        g.site = Some(Location::new("main.transfer", "/src/main.go", line));
    }
    let attrs = finding_attributes(&f);
    let get = |k: &str| attrs.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.to_string());
    assert_eq!(get("goscope.finding.lock.addresses").as_deref(), Some(r#"["0xc000030000","0xc000030008"]"#));
    assert_eq!(get("code.function.name"), None, "two sites: none is the finding's");
}

#[test]
fn lifetimes_are_trace_roots_linked_to_the_parent() {
    let sf = factory();
    let t = SystemTime::UNIX_EPOCH;
    let s = lifetime_span(&sf, 9, Some(1), false, t, t + Duration::from_millis(5));
    assert_eq!(s.span_context, sf.ids.lifetime_context(9));
    assert_eq!(s.parent_span_id, SpanId::INVALID);
    assert_eq!(s.links.len(), 1);
    assert_eq!(s.links[0].span_context, sf.ids.lifetime_context(1));
    assert_eq!(attr(&s, "goscope.goroutine.parent.id"), Some(&Value::I64(1)));
    let orphan = lifetime_span(&sf, 9, Some(0), true, t, t);
    assert!(orphan.links.is_empty());
    assert_eq!(attr(&orphan, "goscope.goroutine.created_before_attach"), Some(&Value::Bool(true)));
}

#[test]
fn finding_attributes_flatten_single_goroutine_findings() {
    let mut f = deadlock();
    f.goroutines.truncate(1);
    f.finding_type = FindingType::Blocked;
    f.chain.clear();
    let attrs = finding_attributes(&f);
    let get = |k: &str| attrs.iter().find(|kv| kv.key.as_str() == k).map(|kv| kv.value.clone());
    assert_eq!(get("goscope.goroutine.id"), Some(Value::I64(5)));
    assert_eq!(get("goscope.finding.type"), Some(Value::from("blocked")));
    assert_eq!(get("goscope.finding.chain"), None);
}

#[test]
fn probe_cost_estimate() {
    let p = |emulated| ProbeHealth { name: "goroutine_parked", hits: 1_000_000, emulated, read_failures: 0 };
    assert!((p(true).estimated_cost_s() - 1.0).abs() < 1e-9);
    assert!((p(false).estimated_cost_s() - 5.0).abs() < 1e-9);
    assert!(ProbeHealth::is_emulated_instruction("push rbp"));
    assert!(!ProbeHealth::is_emulated_instruction("mov rax, [rsp]"));
}

#[test]
fn no_endpoint_means_no_exporter() {
    // Only meaningful when the test environment has no OTLP variables of its own.
    if std::env::vars().any(|(k, _)| k.starts_with("OTEL_EXPORTER_OTLP")) {
        return;
    }
    assert!(OtlpExporter::start(&OtlpArgs::default(), &ProcessInfo::default()).unwrap().is_none());
}

#[test]
fn a_dead_endpoint_never_blocks_and_everything_is_accounted_for() {
    // Nothing listens on port 9 (discard) of loopback here: connections are refused at once.
    for protocol in [OtlpProtocol::HttpProtobuf, OtlpProtocol::Grpc] {
        let args = OtlpArgs {
            otlp_endpoint: Some("http://127.0.0.1:9".into()),
            otlp_protocol: Some(protocol),
            otlp_queue_size: 16,
            otlp_export_interval: Duration::from_millis(100),
            otlp_timeout: Some(Duration::from_millis(300)),
            ..OtlpArgs::default()
        };
        let exporter = OtlpExporter::start(&args, &ProcessInfo { pid: 1, ..ProcessInfo::default() }).unwrap().unwrap();
        let f = deadlock();
        let state = ProcessState::new(1, WaitReasons::new(Vec::new()), 0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            exporter.finding(&f, &state);
            exporter.finding_retracted(&f);
        }
        assert!(t0.elapsed() < Duration::from_secs(1), "recording took {:?}", t0.elapsed());
        let t0 = Instant::now();
        let stats = exporter.shutdown_within(Duration::from_secs(2));
        assert!(t0.elapsed() < Duration::from_secs(3), "shutdown took {:?}", t0.elapsed());
        // 1000 findings × (1 finding span + 2 ongoing spans), 2000 log records.
        let t = &stats.traces;
        assert_eq!(t.submitted + t.dropped, 3000, "{protocol}: {stats:?}");
        assert!(t.dropped > 0 && t.exported == 0, "{protocol}: {stats:?}");
        assert_eq!(stats.logs.submitted + stats.logs.dropped, 2000, "{protocol}: {stats:?}");
        assert!(stats.lost() >= 5000 - 32, "{protocol}: {stats:?}");
    }
}

/// An exporter whose backend is away (nothing listens on loopback port 9): what it submitted is
/// what its calls decided to export.
fn exporter_to_nowhere(args: OtlpArgs) -> OtlpExporter {
    let args = OtlpArgs {
        otlp_endpoint: Some("http://127.0.0.1:9".into()),
        otlp_protocol: Some(OtlpProtocol::HttpProtobuf),
        otlp_timeout: Some(Duration::from_millis(200)),
        ..args
    };
    OtlpExporter::start(&args, &ProcessInfo { pid: 1, ..ProcessInfo::default() }).unwrap().unwrap()
}

#[test]
fn a_goroutine_in_two_findings_has_one_ongoing_span() {
    let (leak, state) = leak_and_state();
    let exporter = exporter_to_nowhere(OtlpArgs::default());
    let mut blocked = leak.clone();
    blocked.id = crate::detect::FindingKey::Blocked { pid: 1, goid: 5 };
    blocked.finding_type = FindingType::Blocked;
    blocked.grade = Grade::Suspect;
    blocked.goroutines.truncate(1);
    exporter.finding(&blocked, &state);
    assert_eq!(exporter.stats().traces.submitted, 1, "the blocked goroutine's ongoing span");
    // The leak names g5 again and g6: its own span and g6's ongoing span, not g5's a second time.
    exporter.finding(&leak, &state);
    assert_eq!(exporter.stats().traces.submitted, 3);
    // Raised again (a re-check): nothing new but the finding's span.
    exporter.finding(&leak, &state);
    assert_eq!(exporter.stats().traces.submitted, 4);
    exporter.shutdown_within(Duration::from_millis(500));
}

#[test]
fn sleeps_io_and_runtime_waits_become_spans_only_when_asked_for() {
    use crate::model::state::WaitClass;
    let default = exporter_to_nowhere(OtlpArgs::default());
    let second = 1_000_000_000;
    for reason in ["sleep", "IO wait", "GC worker (idle)", "timer goroutine (idle)", ""] {
        assert!(!default.wants_episode_span(WaitClass::of(reason), second), "{reason:?}");
    }
    for reason in ["chan receive", "chan send", "select", "sync.Mutex.Lock", "sync.WaitGroup.Wait", "sync.Cond.Wait"] {
        assert!(default.wants_episode_span(WaitClass::of(reason), second), "{reason:?}");
        assert!(!default.wants_episode_span(WaitClass::of(reason), 1_000_000), "{reason:?}: shorter than the minimum");
    }
    default.shutdown_within(Duration::from_millis(500));

    let sleeps = exporter_to_nowhere(OtlpArgs { otlp_span_waits: vec![SpanWaits::Sleep], ..OtlpArgs::default() });
    assert!(sleeps.wants_episode_span(WaitClass::Sleep, second));
    assert!(!sleeps.wants_episode_span(WaitClass::ChanReceive, second));
    sleeps.shutdown_within(Duration::from_millis(500));
}

#[test]
fn spans_over_the_rate_limit_are_counted_not_queued() {
    let gate = Gate::with_rate(1000, 10);
    let admitted = (0..50).filter(|_| gate.admit_limited()).count() as u64;
    let stats = gate.stats();
    // One second's worth at once (the calls take microseconds: hardly any refill).
    assert!((10..=11).contains(&admitted), "{stats:?}");
    assert_eq!((stats.submitted, stats.rate_limited), (admitted, 50 - admitted));
    // Findings go through the unlimited door.
    assert!(gate.admit());
    assert!(Gate::new(1000).admit_limited(), "no rate, no limit");
}

#[test]
fn a_leaks_pile_counts_every_goroutine_at_its_site_and_grows_with_it() {
    let (mut leak, mut state) = leak_and_state();
    // The finding lists one goroutine (a sample); the pile at its site is what counts.
    leak.goroutines.truncate(1);
    let raised =
        |f: &Finding| Raised { trace: None, finding_type: f.finding_type, grade: f.grade, named: f.goroutines.len() as u64 };
    let mut open = HashMap::new();
    open.insert(leak.id.clone(), raised(&leak));
    let dl = deadlock();
    open.insert(dl.id.clone(), raised(&dl));
    let counts = goroutines_in_findings(&open, &state);
    assert_eq!(counts.get(&(FindingType::Leak, Grade::Proven)), Some(&2));
    assert_eq!(counts.get(&(FindingType::Deadlock, Grade::Proven)), Some(&2));

    // One more goroutine parks at the leak's site: the pile grows.
    let detail =
        EventDetail::Parked { wait_reason: 1, lock_addr: 0, g_addr: 0x1007, sema_addr: 0, return_pcs: Default::default() };
    state.apply(&GoroutineEvent { ts_ns: 20, pid: 1, tid: 1, goid: 7, detail });
    state.set_park_details(7, Some(Location::new("main.compute", "/src/main.go", 54)), None);
    assert_eq!(goroutines_in_findings(&open, &state).get(&(FindingType::Leak, Grade::Proven)), Some(&3));

    // Elsewhere, or gone: not counted.
    state.set_park_details(7, Some(Location::new("main.compute", "/src/main.go", 60)), None);
    assert_eq!(goroutines_in_findings(&open, &state).get(&(FindingType::Leak, Grade::Proven)), Some(&2));
    open.remove(&leak.id);
    assert_eq!(goroutines_in_findings(&open, &state).get(&(FindingType::Leak, Grade::Proven)), None);
}
