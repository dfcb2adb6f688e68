//! The flight recorder (`--flight-recorder DIR`): the last seconds of goroutine events of a
//! target, kept in a bounded ring, written as a Chrome trace event file (which Perfetto UI and
//! chrome://tracing open) when a deadlock or leak finding is raised. One track per goroutine,
//! the finding's goroutines first; slices for what each goroutine did; the finding as a marker.
//!
//! The probes see parks, wake-ups, creations and exits, not the scheduler switching a goroutine
//! onto a thread: between a wake-up and the next park a goroutine is "runnable or running", and
//! the trace says no more than that.
use std::collections::{BTreeMap, HashMap, VecDeque};

use serde_json::{Value, json};

use crate::{detect::Finding, model::Location};

/// Most moments one target's ring holds: past it the oldest go first (and are counted), so a
/// burst of events costs at most this much memory whatever the window.
pub const MAX_MOMENTS: usize = 50_000;

/// Something goscope saw a goroutine do (or, in scan mode, be doing) at `ts_ns`.
#[derive(Debug, Clone, PartialEq)]
pub struct Moment {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    pub goid: u64,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq)]
pub enum What {
    Created {
        parent_goid: u64,
        start_function: Option<String>,
    },
    /// Made runnable; 0: woken by the runtime.
    Ready {
        waker_goid: u64,
    },
    Parked(Block),
    Exited,
    /// What a memory scan saw (scan mode, and the snapshot at attach).
    Sampled(Doing),
}

/// A park: the wait reason, what it waits on, where the code blocked.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub reason: String,
    /// `chan 0x…` or `lock 0x…`.
    pub on: Option<String>,
    pub site: Option<Location>,
    /// A synchronisation wait (channel, select, sync), not a sleep or IO wait.
    pub synchronisation: bool,
}

/// A goroutine's state as a scan (or the state at the time of writing) shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Doing {
    RunnableOrRunning,
    Syscall,
    Blocked(Block),
}

impl Doing {
    /// The same state: for a wait, the same reason on the same object (the park site may be
    /// known to one view and not the other).
    fn same_as(&self, other: &Doing) -> bool {
        match (self, other) {
            (Self::Blocked(a), Self::Blocked(b)) => a.reason == b.reason && a.on == b.on,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

/// The bounded ring of one target's recent moments.
#[derive(Debug)]
pub struct FlightRecorder {
    window_ns: u64,
    capacity: usize,
    moments: VecDeque<Moment>,
    /// Moments dropped to stay under the capacity (not those that aged out of the window).
    evicted: u64,
    /// Start functions of goroutines created within the ring's reach, by goid.
    start_functions: HashMap<u64, String>,
}

impl FlightRecorder {
    pub fn new(window_ns: u64, capacity: usize) -> Self {
        Self { window_ns, capacity, moments: VecDeque::new(), evicted: 0, start_functions: HashMap::new() }
    }

    pub fn window_ns(&self) -> u64 {
        self.window_ns
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn record(&mut self, moment: Moment) {
        if let What::Created { start_function: Some(f), .. } = &moment.what {
            self.start_functions.insert(moment.goid, f.clone());
        }
        let newest = moment.ts_ns;
        self.moments.push_back(moment);
        let start_ns = newest.saturating_sub(self.window_ns);
        // Events arrive nearly in time order; a straggler behind a newer one goes later.
        while self.moments.front().is_some_and(|m| m.ts_ns < start_ns) {
            self.pop_oldest();
        }
        if self.moments.len() > self.capacity {
            self.pop_oldest();
            self.evicted += 1;
        }
    }

    /// Drops the oldest moment; an exit takes the goroutine's name with it.
    fn pop_oldest(&mut self) {
        if let Some(Moment { goid, what: What::Exited, .. }) = self.moments.pop_front() {
            self.start_functions.remove(&goid);
        }
    }

    /// The moments from `now_ns - window` on.
    pub fn recent(&self, now_ns: u64) -> Vec<Moment> {
        let start = now_ns.saturating_sub(self.window_ns);
        self.moments.iter().filter(|m| m.ts_ns >= start && m.ts_ns <= now_ns).cloned().collect()
    }

    pub fn start_function(&self, goid: u64) -> Option<&str> {
        self.start_functions.get(&goid).map(String::as_str)
    }

    pub fn start_functions(&self) -> HashMap<u64, String> {
        self.start_functions.clone()
    }
}

/// A goroutine alive when the trace is written: what it does now, since when.
#[derive(Debug, Clone, PartialEq)]
pub struct Alive {
    pub goid: u64,
    pub start_function: Option<String>,
    pub since_ns: u64,
    pub doing: Doing,
}

/// Everything one trace file is built from.
#[derive(Debug)]
pub struct TraceInput<'a> {
    pub pid: u32,
    pub finding: &'a Finding,
    pub now_ns: u64,
    pub window_ns: u64,
    pub moments: Vec<Moment>,
    pub alive: Vec<Alive>,
    /// Start functions the recorder saw at creation, by goid (names exited goroutines too).
    pub created_start_functions: HashMap<u64, String>,
    /// Whether events fed the ring, or only memory scans (scan mode).
    pub from_events: bool,
    pub evicted: u64,
}

/// The file a finding's trace goes to.
pub fn file_name(finding: &Finding) -> String {
    format!("{}.trace.json", super::dot::safe_id(finding))
}

/// The Chrome trace event JSON (object form) of the window before `input.finding`.
pub fn chrome_trace(input: &TraceInput) -> Value {
    let start_ns = input.now_ns.saturating_sub(input.window_ns);
    let us = |ts_ns: u64| ts_ns.saturating_sub(start_ns) as f64 / 1e3;
    let mut by_goid: BTreeMap<u64, Vec<&Moment>> = BTreeMap::new();
    for m in &input.moments {
        by_goid.entry(m.goid).or_default().push(m);
    }
    let alive: HashMap<u64, &Alive> = input.alive.iter().map(|a| (a.goid, a)).collect();
    let mut events = vec![json!({"ph": "M", "name": "process_name", "pid": input.pid, "tid": 0,
        "args": {"name": format!("Go process {}", input.pid)}})];
    for (index, goid) in track_order(input, &by_goid).into_iter().enumerate() {
        let name =
            alive.get(&goid).and_then(|a| a.start_function.clone()).or_else(|| input.created_start_functions.get(&goid).cloned());
        let thread = name.map_or_else(|| format!("goroutine {goid}"), |f| format!("goroutine {goid} {f}"));
        events.push(json!({"ph": "M", "name": "thread_name", "pid": input.pid, "tid": goid, "args": {"name": thread}}));
        events.push(json!({"ph": "M", "name": "thread_sort_index", "pid": input.pid, "tid": goid,
            "args": {"sort_index": index}}));
        let moments = by_goid.get(&goid).map_or(&[][..], Vec::as_slice);
        for slice in slices(moments, alive.get(&goid).copied(), start_ns, input.now_ns) {
            events.push(slice.to_json(input.pid, goid, &us));
        }
        for m in moments {
            if let Some(instant) = instant(m) {
                events.push(json!({"ph": "i", "s": "t", "name": instant.0, "cat": "lifecycle", "pid": input.pid,
                    "tid": goid, "ts": us(m.ts_ns), "args": instant.1}));
            }
        }
    }
    let f = input.finding;
    events.push(json!({"ph": "i", "s": "g", "name": format!("{} ({})", f.finding_type.as_str(), f.grade.as_str()),
        "cat": "finding", "pid": input.pid, "tid": 0, "ts": us(input.now_ns),
        "args": {"id": f.id.to_string(), "summary": f.summary, "goroutines": f.goroutines.iter().map(|g| g.goid).collect::<Vec<_>>()}}));
    let source = if input.from_events {
        "goroutine events (uprobes), and memory snapshots where events were not on"
    } else {
        "memory scans only (scan mode: no events): slices are the states each scan saw, not exact transitions"
    };
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "producer": concat!("goscope ", env!("CARGO_PKG_VERSION")),
            "pid": input.pid,
            "finding_id": f.id.to_string(),
            "window_seconds": input.window_ns as f64 / 1e9,
            "window_start_monotonic_ns": start_ns,
            "source": source,
            "evicted_moments": input.evicted,
            "note": "between a wake-up and the next park a goroutine is runnable or running: the probes do not see which",
        },
    })
}

/// The finding's goroutines first (in its order), then the others by goid.
fn track_order(input: &TraceInput, by_goid: &BTreeMap<u64, Vec<&Moment>>) -> Vec<u64> {
    let mut order: Vec<u64> = input.finding.goroutines.iter().map(|g| g.goid).collect();
    let mut rest: Vec<u64> = by_goid.keys().copied().chain(input.alive.iter().map(|a| a.goid)).collect();
    rest.sort_unstable();
    rest.dedup();
    order.extend(rest.into_iter().filter(|g| !input.finding.goroutines.iter().any(|i| i.goid == *g)));
    order
}

/// A stretch of one goroutine's time.
#[derive(Debug, Clone, PartialEq)]
struct Slice {
    start_ns: u64,
    end_ns: u64,
    doing: Doing,
    /// From a scan's sample, not from events.
    sampled: bool,
}

impl Slice {
    fn to_json(&self, pid: u32, goid: u64, us: &impl Fn(u64) -> f64) -> Value {
        let (name, cat, args) = match &self.doing {
            Doing::RunnableOrRunning => ("runnable or running".to_string(), "running", json!({})),
            Doing::Syscall => ("syscall".to_string(), "syscall", json!({})),
            Doing::Blocked(b) => {
                let cat = if b.synchronisation { "blocked" } else { "waiting" };
                let site = b.site.as_ref().map(|s| format!("{} ({}:{})", s.function, s.file, s.line));
                (b.reason.clone(), cat, json!({"wait_reason": b.reason, "on": b.on, "park_site": site}))
            }
        };
        let mut args = args;
        args["sampled"] = json!(self.sampled);
        json!({"ph": "X", "name": name, "cat": cat, "pid": pid, "tid": goid, "ts": us(self.start_ns),
            "dur": (us(self.end_ns) - us(self.start_ns)).max(0.0), "args": args})
    }
}

/// One goroutine's slices from its moments (time order) and what it does now. A goroutine
/// with no moment in the window gets one slice of its present state.
fn slices(moments: &[&Moment], alive: Option<&Alive>, start_ns: u64, now_ns: u64) -> Vec<Slice> {
    let mut sorted = moments.to_vec();
    sorted.sort_by_key(|m| m.ts_ns);
    let mut out: Vec<Slice> = Vec::new();
    let mut open: Option<Slice> = None;
    for m in sorted {
        let (doing, sampled) = match &m.what {
            What::Created { .. } | What::Ready { .. } => (Some(Doing::RunnableOrRunning), false),
            What::Parked(b) => (Some(Doing::Blocked(b.clone())), false),
            What::Sampled(d) => (Some(d.clone()), true),
            What::Exited => (None, false),
        };
        // A scan that sees what the open slice already shows extends it.
        if let (Some(o), Some(d), true) = (&open, &doing, sampled)
            && o.doing.same_as(d)
        {
            continue;
        }
        if let Some(mut o) = open.take() {
            o.end_ns = m.ts_ns;
            out.push(o);
        }
        open = doing.map(|doing| Slice { start_ns: m.ts_ns, end_ns: m.ts_ns, doing, sampled });
    }
    match (open, alive) {
        (Some(mut o), Some(a)) => {
            o.end_ns = now_ns;
            // Seen first by a scan but known to have begun earlier (a wait the runtime dated).
            if a.doing.same_as(&o.doing) {
                let earliest = out.last().map_or(start_ns, |prev| prev.end_ns);
                o.start_ns = o.start_ns.min(a.since_ns.max(earliest));
            } else if (o.start_ns..now_ns).contains(&a.since_ns) {
                // The state changed after the last moment (a scan's state merged since).
                o.end_ns = a.since_ns;
                let now = Slice { start_ns: a.since_ns, end_ns: now_ns, doing: a.doing.clone(), sampled: o.sampled };
                out.extend([o, now]);
                return out;
            }
            out.push(o);
        }
        (Some(o), None) => out.push(o),
        (None, Some(a)) if moments.is_empty() => out.push(Slice {
            start_ns: a.since_ns.clamp(start_ns, now_ns),
            end_ns: now_ns,
            doing: a.doing.clone(),
            sampled: false,
        }),
        (None, _) => {}
    }
    out
}

/// The instant event of a creation or an exit: its name and args.
fn instant(m: &Moment) -> Option<(&'static str, Value)> {
    match &m.what {
        What::Created { parent_goid, start_function } => {
            Some(("created", json!({"parent_goid": parent_goid, "start_function": start_function})))
        }
        What::Exited => Some(("exited", json!({}))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{FindingKey, FindingType, Grade, Involved};

    const S: u64 = 1_000_000_000;

    fn chan_send(on: &str) -> Block {
        Block {
            reason: "chan send".into(),
            on: Some(format!("chan {on}")),
            site: Some(Location::new("main.worker", "/src/main.go", 40)),
            synchronisation: true,
        }
    }

    fn finding() -> Finding {
        Finding {
            id: FindingKey::Deadlock { pid: 9, goroutines: vec![7, 8] },
            finding_type: FindingType::Deadlock,
            grade: Grade::Proven,
            pid: 9,
            goroutines: vec![Involved::test(8), Involved::test(7)],
            chain: vec![8, 7],
            summary: "8 and 7 wait on each other".into(),
        }
    }

    fn moment(ts_s: u64, goid: u64, what: What) -> Moment {
        Moment { ts_ns: ts_s * S, goid, what }
    }

    fn input<'a>(finding: &'a Finding, moments: Vec<Moment>, alive: Vec<Alive>) -> TraceInput<'a> {
        TraceInput {
            pid: 9,
            finding,
            now_ns: 110 * S,
            window_ns: 10 * S,
            moments,
            alive,
            created_start_functions: HashMap::from([(5, "main.short".to_string())]),
            from_events: true,
            evicted: 0,
        }
    }

    fn alive(goid: u64, since_s: u64, doing: Doing) -> Alive {
        Alive { goid, start_function: Some(format!("main.g{goid}")), since_ns: since_s * S, doing }
    }

    fn of(trace: &Value, ph: &str, tid: u64) -> Vec<Value> {
        trace["traceEvents"].as_array().unwrap().iter().filter(|e| e["ph"] == ph && e["tid"] == tid).cloned().collect()
    }

    #[test]
    fn the_ring_keeps_the_window_and_counts_what_the_cap_evicts() {
        let mut ring = FlightRecorder::new(10 * S, 3);
        for t in [1, 2, 3, 4] {
            ring.record(moment(t, 1, What::Ready { waker_goid: 0 }));
        }
        assert_eq!(ring.evicted(), 1, "four moments in a ring of three");
        ring.record(moment(14, 1, What::Exited));
        let kept: Vec<u64> = ring.recent(14 * S).iter().map(|m| m.ts_ns / S).collect();
        assert_eq!(kept, vec![4, 14], "older than 10 s before the newest ages out");
        assert_eq!(ring.evicted(), 1, "aging out is not eviction");
    }

    #[test]
    fn a_goroutine_runs_then_blocks_until_now() {
        let f = finding();
        let moments = vec![
            moment(102, 7, What::Created { parent_goid: 1, start_function: Some("main.g7".into()) }),
            moment(104, 7, What::Parked(chan_send("0xc0"))),
        ];
        let trace = chrome_trace(&input(&f, moments, vec![alive(7, 104, Doing::Blocked(chan_send("0xc0")))]));
        let slices = of(&trace, "X", 7);
        assert_eq!(slices.len(), 2, "{slices:?}");
        assert_eq!(slices[0]["name"], "runnable or running");
        assert_eq!((slices[0]["ts"].as_f64(), slices[0]["dur"].as_f64()), (Some(2e6), Some(2e6)));
        assert_eq!(slices[1]["name"], "chan send");
        assert_eq!(slices[1]["cat"], "blocked");
        assert_eq!(slices[1]["args"]["on"], "chan 0xc0");
        assert_eq!(slices[1]["args"]["park_site"], "main.worker (/src/main.go:40)");
        assert_eq!(slices[1]["dur"].as_f64(), Some(6e6), "blocked until the finding");
        assert_eq!(of(&trace, "i", 7)[0]["name"], "created");
    }

    #[test]
    fn the_findings_goroutines_come_first_and_the_finding_is_marked() {
        let f = finding();
        let moments = vec![moment(101, 3, What::Ready { waker_goid: 0 }), moment(105, 5, What::Exited)];
        let alive = vec![alive(7, 50, Doing::Blocked(chan_send("0xc0"))), alive(8, 50, Doing::Blocked(chan_send("0xd0")))];
        let trace = chrome_trace(&input(&f, moments, alive));
        let sort =
            |tid| of(&trace, "M", tid).iter().find(|e| e["name"] == "thread_sort_index").unwrap()["args"]["sort_index"].clone();
        assert_eq!((sort(8), sort(7), sort(3), sort(5)), (json!(0), json!(1), json!(2), json!(3)));
        let name = |tid| of(&trace, "M", tid).iter().find(|e| e["name"] == "thread_name").unwrap()["args"]["name"].clone();
        assert_eq!(name(8), "goroutine 8 main.g8");
        assert_eq!(name(5), "goroutine 5 main.short", "an exited goroutine keeps its name");
        // Blocked since before the window: the slice starts at the window's start.
        assert_eq!(of(&trace, "X", 8)[0]["ts"].as_f64(), Some(0.0));
        let marker = of(&trace, "i", 0);
        assert_eq!(marker[0]["name"], "deadlock (proven)");
        assert_eq!(marker[0]["ts"].as_f64(), Some(10e6));
        assert_eq!(trace["otherData"]["finding_id"], f.id.to_string());
    }

    #[test]
    fn a_wait_first_sampled_reaches_back_to_when_it_began() {
        let f = finding();
        let moments = vec![moment(108, 7, What::Sampled(Doing::Blocked(chan_send("0xc0"))))];
        let trace = chrome_trace(&input(&f, moments.clone(), vec![alive(7, 104, Doing::Blocked(chan_send("0xc0")))]));
        assert_eq!(of(&trace, "X", 7)[0]["ts"].as_f64(), Some(4e6), "blocked since 104 s, sampled at 108 s");
        let trace = chrome_trace(&input(&f, moments, vec![alive(7, 109, Doing::RunnableOrRunning)]));
        let slices = of(&trace, "X", 7);
        assert_eq!((slices[0]["ts"].as_f64(), slices[0]["dur"].as_f64()), (Some(8e6), Some(1e6)), "{slices:?}");
        assert_eq!((slices[1]["name"].as_str(), slices[1]["ts"].as_f64()), (Some("runnable or running"), Some(9e6)));
    }

    #[test]
    fn samples_that_agree_make_one_slice_and_scan_mode_says_so() {
        let f = finding();
        let moments = vec![
            moment(101, 7, What::Sampled(Doing::RunnableOrRunning)),
            moment(103, 7, What::Sampled(Doing::Blocked(chan_send("0xc0")))),
            moment(105, 7, What::Sampled(Doing::Blocked(chan_send("0xc0")))),
        ];
        let mut inp = input(&f, moments, vec![alive(7, 103, Doing::Blocked(chan_send("0xc0")))]);
        inp.from_events = false;
        let trace = chrome_trace(&inp);
        let slices = of(&trace, "X", 7);
        assert_eq!(slices.len(), 2, "{slices:?}");
        assert_eq!((slices[1]["ts"].as_f64(), slices[1]["dur"].as_f64()), (Some(3e6), Some(7e6)));
        assert_eq!(slices[1]["args"]["sampled"], true);
        assert!(trace["otherData"]["source"].as_str().unwrap().starts_with("memory scans only"));
    }
}
