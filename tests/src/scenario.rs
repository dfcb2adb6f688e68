//! The chanrecv10 scenario (see `tests/fixtures/go/chanrecv10/main.go`): goscope attaches, ten
//! goroutines are created by main, park on one channel, are readied by main's close, and exit.
//! Every one of those 40 events is checked field by field.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::fixture::GoFixture;
use crate::goscope::{Goscope, Stopped, kind, parse_hex};
use crate::process::ChildGuard;

/// The goroutine kinds of events; `attached`, `lost` and `summary` are the others.
pub const EVENT_KINDS: [&str; 4] = ["created", "parked", "ready", "exited"];

/// The start function of every chanrecv10 worker (`go worker()`: no arguments, so no wrapper).
pub const WORKER_START_FUNCTION: &str = "main.worker";

/// What the chanrecv10 fixture printed about itself.
#[derive(Debug, Clone)]
pub struct Chanrecv10Facts {
    /// The pid goscope attached to and reports (the fixture's own, unless it runs in another pid
    /// namespace: see [`run_chanrecv10_started`]).
    pub pid: u32,
    pub go_version: String,
    pub main_goid: u64,
    pub worker_goids: Vec<u64>,
    /// The `release` channel's address, `%p` of the channel (its hchan).
    pub release_chan: u64,
    /// Per worker: the creation site as the runtime's own traceback reports it.
    pub workers: Vec<WorkerFact>,
}

#[derive(Debug, Clone)]
pub struct WorkerFact {
    pub goid: u64,
    pub created_by: String,
    pub file: String,
    pub line: u64,
}

/// A finished chanrecv10 run.
#[derive(Debug)]
pub struct Chanrecv10Run {
    pub facts: Chanrecv10Facts,
    /// Every goscope line, in order.
    pub events: Vec<Value>,
    /// From starting goscope to its `attached` line.
    pub attach_time: Duration,
    /// The whole run, fixture start to goscope exit.
    pub total_time: Duration,
}

fn u64_field(v: &Value, key: &str) -> Result<u64> {
    v.get(key).and_then(Value::as_u64).ok_or_else(|| anyhow!("no unsigned integer {key:?} in {v}"))
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.get(key).and_then(Value::as_str).ok_or_else(|| anyhow!("no string {key:?} in {v}"))
}

impl Chanrecv10Facts {
    fn parse(start: &Value, workers: &Value) -> Result<Self> {
        let worker_goids: Vec<u64> = workers
            .get("worker_goids")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("no worker_goids array in {workers}"))?
            .iter()
            .map(|g| g.as_u64().ok_or_else(|| anyhow!("bad goid {g}")))
            .collect::<Result<_>>()?;
        let infos = workers
            .get("workers")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("no workers array in {workers}"))?
            .iter()
            .map(|w| {
                Ok(WorkerFact {
                    goid: u64_field(w, "goid")?,
                    created_by: str_field(w, "created_by")?.to_string(),
                    file: str_field(w, "file")?.to_string(),
                    line: u64_field(w, "line")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let facts = Chanrecv10Facts {
            pid: u32::try_from(u64_field(start, "pid")?)?,
            go_version: str_field(start, "go_version")?.to_string(),
            main_goid: u64_field(start, "main_goid")?,
            release_chan: parse_hex(str_field(workers, "release_chan")?)?,
            worker_goids,
            workers: infos,
        };
        let mut distinct = facts.worker_goids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != 10 || facts.workers.len() != 10 || distinct.contains(&facts.main_goid) {
            bail!("the fixture reported bad worker goids: {workers}");
        }
        Ok(facts)
    }
}

/// Runs chanrecv10 built as `fixture` under goscope and checks every worker event. The error
/// names the fixture and lists each mismatch with the expected and the observed JSON.
pub fn run_chanrecv10(fixture: &GoFixture) -> Result<Chanrecv10Run> {
    run_chanrecv10_with(fixture, &[])
}

/// [`run_chanrecv10`] with extra `goscope attach` arguments (e.g. OTLP export) that must leave
/// the events as they are.
pub fn run_chanrecv10_with(fixture: &GoFixture, goscope_args: &[&str]) -> Result<Chanrecv10Run> {
    let label = fixture.label();
    run_chanrecv10_inner(fixture, goscope_args)
        .with_context(|| format!("chanrecv10 scenario on {label} ({})", fixture.path.display()))
}

fn run_chanrecv10_inner(fixture: &GoFixture, goscope_args: &[&str]) -> Result<Chanrecv10Run> {
    let started = Instant::now();
    let mut target = fixture.spawn(&[])?;
    let start = target.expect_json("main_goid", Duration::from_secs(20))?;
    let pid = target.pid();
    run_started(fixture, target, &start, pid, goscope_args, started)
}

/// Runs the chanrecv10 scenario on a fixture process started some other way (e.g. inside other
/// namespaces, under a wrapper such as `unshare`): `target` is the process whose stdin and stdout
/// are the fixture's, `start` the first line the fixture printed (already read from `target`), and
/// `pid` the fixture's pid as goscope sees it (the host pid; the fixture's own `pid` in `start` is
/// the one in its pid namespace). Goscope attaches to `pid`, and every event must carry it.
pub fn run_chanrecv10_started(fixture: &GoFixture, target: ChildGuard, start: &Value, pid: u32) -> Result<Chanrecv10Run> {
    let label = fixture.label();
    run_started(fixture, target, start, pid, &[], Instant::now())
        .with_context(|| format!("chanrecv10 scenario on {label} ({}), pid {pid}", fixture.path.display()))
}

fn run_started(
    fixture: &GoFixture,
    mut target: ChildGuard,
    start: &Value,
    pid: u32,
    goscope_args: &[&str],
    started: Instant,
) -> Result<Chanrecv10Run> {
    if start.get("go_version").and_then(Value::as_str) != Some(fixture.go_version.as_str()) {
        bail!("fixture says {start}, but it was built as {}", fixture.go_version);
    }

    crate::goscope::goscope_bin()?; // built before the clock starts: attach_time is goscope's alone
    let attach_start = Instant::now();
    let mut gs = Goscope::attach(pid, goscope_args)?;
    gs.wait_attached(Duration::from_secs(90))?;
    let attach_time = attach_start.elapsed();

    target.send_line("go")?;
    let workers = target.expect_json("worker_goids", Duration::from_secs(30))?;
    let mut facts = Chanrecv10Facts::parse(start, &workers)?;
    facts.pid = pid;
    target.expect_json("done", Duration::from_secs(30))?;

    // Read until all ten have exited; a timeout is reported together with the field checks.
    let mut exited = std::collections::BTreeSet::new();
    let wait_error = gs
        .events_until(
            |ev| {
                if kind(ev) == "exited"
                    && let Some(g) = ev.get("goid").and_then(Value::as_u64)
                    && facts.worker_goids.contains(&g)
                {
                    exited.insert(g);
                }
                exited.len() == facts.worker_goids.len()
            },
            Duration::from_secs(30),
        )
        .err();
    // Late duplicates would show up in this window.
    std::thread::sleep(Duration::from_millis(300));
    let stopped = gs.stop(Duration::from_secs(20));

    target.close_stdin();
    let target_status = target.wait_exit(Duration::from_secs(10))?;

    let mut problems = Vec::new();
    if let Some(e) = wait_error {
        problems.push(format!("waiting for the ten `exited` events: {e:#}"));
    }
    match target_status {
        Some(s) if s.success() => {}
        other => problems.push(format!("the fixture did not exit 0 after stdin closed: {other:?}")),
    }
    let events = gs.events().to_vec();
    problems.extend(check_chanrecv10(fixture, &facts, &events, stopped.as_ref().map_err(|e| format!("{e:#}"))));
    if !problems.is_empty() {
        bail!(
            "{} problem(s):\n- {}\n(goscope printed {} lines; stderr: {})",
            problems.len(),
            problems.join("\n- "),
            events.len(),
            gs.stderr().trim()
        );
    }
    Ok(Chanrecv10Run { facts, events, attach_time, total_time: started.elapsed() })
}

/// The line of main.worker's `<-release` in the chanrecv10 source: the workers' park site.
pub fn release_line() -> Result<u64> {
    crate::fixture::main_go_line("chanrecv10", "\t<-release")
}

/// `field: expected X, observed Y` for each field of `expected` that `ev` does not match.
fn mismatches(ev: &Value, expected: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(obj) = expected.as_object() {
        for (k, want) in obj {
            let got = ev.get(k).unwrap_or(&Value::Null);
            if got != want {
                out.push(format!("{k}: expected {want}, observed {got}"));
            }
        }
    }
    out
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Checks everything goscope printed in a chanrecv10 run; returns the problems found.
pub fn check_chanrecv10(
    fixture: &GoFixture,
    facts: &Chanrecv10Facts,
    events: &[Value],
    stopped: Result<&Stopped, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    check_attached_line(fixture, facts, events, &mut problems);
    // Common fields of every goroutine event, whichever goroutine.
    let goroutine_events: Vec<&Value> = events.iter().filter(|e| EVENT_KINDS.contains(&kind(e))).collect();
    check_event_fields(facts, events, &goroutine_events, &mut problems);
    check_summary(events, &goroutine_events, stopped, &mut problems);
    // The workers' events.
    let release_chan = format!("{:#x}", facts.release_chan);
    let release_line = match release_line() {
        Ok(line) => line,
        Err(e) => {
            problems.push(format!("{e:#}"));
            0
        }
    };
    for w in &facts.workers {
        check_worker_events(facts, w, &goroutine_events, &release_chan, release_line, &mut problems);
    }
    // Only main's ten `go worker()` are part of the contract; anything else main created is noted.
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &goroutine_events {
        *by_kind.entry(kind(e)).or_default() += 1;
    }
    let extra_children: Vec<&&Value> = goroutine_events
        .iter()
        .filter(|e| {
            kind(e) == "created"
                && e.get("parent_goid").and_then(Value::as_u64) == Some(facts.main_goid)
                && !e.get("goid").and_then(Value::as_u64).is_some_and(|g| facts.worker_goids.contains(&g))
        })
        .collect();
    if !extra_children.is_empty() {
        eprintln!(
            "note: {}: main also created {} goroutine(s) outside the scenario, e.g. {}",
            fixture.label(),
            extra_children.len(),
            compact(extra_children[0])
        );
    }
    if !problems.is_empty() {
        problems.push(format!("event counts by kind (all goroutines): {by_kind:?}"));
    }
    problems
}

/// The attached line: first, once, about our target.
fn check_attached_line(fixture: &GoFixture, facts: &Chanrecv10Facts, events: &[Value], problems: &mut Vec<String>) {
    let attached: Vec<&Value> = events.iter().filter(|e| kind(e) == "attached").collect();
    match (attached.as_slice(), events.first()) {
        ([a], Some(first)) if std::ptr::eq(*a, first) => {
            let want = json!({"pid": facts.pid, "go_version": fixture.go_version});
            for m in mismatches(a, &want) {
                problems.push(format!("attached: {m} (line: {})", compact(a)));
            }
            let probes = a.get("probes").and_then(Value::as_array);
            match probes {
                Some(p) if !p.is_empty() => {
                    for probe in p {
                        let ok = probe.get("name").is_some_and(Value::is_string)
                            && probe.get("symbol").is_some_and(Value::is_string)
                            && probe.get("offset").is_some_and(Value::is_u64);
                        if !ok {
                            problems.push(format!(
                                "attached: probe entries need string name, string symbol, unsigned offset; observed {}",
                                compact(probe)
                            ));
                        }
                    }
                }
                _ => problems.push(format!("attached: expected a non-empty probes array, observed {}", compact(a))),
            }
        }
        _ => problems.push(format!(
            "expected exactly one `attached` line, as the first line; observed {} (first line: {})",
            attached.len(),
            events.first().map(compact).unwrap_or_default()
        )),
    }
}

/// Common fields of every goroutine event, whichever goroutine, and kinds outside the contract.
fn check_event_fields(facts: &Chanrecv10Facts, events: &[Value], goroutine_events: &[&Value], problems: &mut Vec<String>) {
    let mut malformed = 0;
    for ev in goroutine_events {
        let mut bad = Vec::new();
        if ev.get("pid").and_then(Value::as_u64) != Some(u64::from(facts.pid)) {
            bad.push(format!("pid: expected {}", facts.pid));
        }
        for key in ["tid", "goid", "ts_ns"] {
            if !ev.get(key).and_then(Value::as_u64).is_some_and(|v| v > 0) {
                bad.push(format!("{key}: expected a positive integer"));
            }
        }
        if kind(ev) == "parked"
            && let Some(reason) = ev.get("wait_reason").and_then(Value::as_str)
            && !reason.starts_with("chan ")
            && ev.get("channel").is_some()
        {
            bad.push(format!("channel: expected none for wait reason {reason:?}"));
        }
        if !bad.is_empty() {
            malformed += 1;
            if malformed <= 5 {
                problems.push(format!("malformed event ({}): {}", bad.join("; "), compact(ev)));
            }
        }
    }
    if malformed > 5 {
        problems.push(format!("... {} more malformed events", malformed - 5));
    }
    let unknown: Vec<&Value> = events
        .iter()
        .filter(|e| !EVENT_KINDS.contains(&kind(e)) && !["attached", "lost", "summary"].contains(&kind(e)))
        .collect();
    if !unknown.is_empty() {
        eprintln!("note: goscope printed lines of kinds outside the contract: {}", compact(unknown[0]));
    }
}

/// Nothing lost, a clean exit at SIGINT, and one summary, last, that adds up.
fn check_summary(events: &[Value], goroutine_events: &[&Value], stopped: Result<&Stopped, String>, problems: &mut Vec<String>) {
    for lost in events.iter().filter(|e| kind(e) == "lost") {
        problems.push(format!("goscope lost events, so exact counts cannot be checked: {}", compact(lost)));
    }
    match stopped {
        Err(e) => problems.push(format!("stopping goscope with SIGINT: {e}")),
        Ok(stop) => {
            if !stop.status.success() {
                problems.push(format!(
                    "goscope exited with {} after SIGINT, expected 0; stderr: {}",
                    stop.status,
                    stop.stderr.trim()
                ));
            }
            match events.last() {
                Some(last) if kind(last) == "summary" => {
                    let mut want = json!({"events": goroutine_events.len(), "lost": 0});
                    for extra in ["dropped", "undecodable"] {
                        if last.get(extra).is_some() {
                            want[extra] = json!(0);
                        }
                    }
                    for m in mismatches(last, &want) {
                        problems.push(format!("summary: {m} (line: {})", compact(last)));
                    }
                }
                other => problems.push(format!(
                    "expected a `summary` as the last line, observed {}",
                    other.map(compact).unwrap_or_else(|| "nothing".into())
                )),
            }
            let summaries = events.iter().filter(|e| kind(e) == "summary").count();
            if summaries != 1 {
                problems.push(format!("expected one `summary` line, observed {summaries}"));
            }
        }
    }
}

/// One worker's created, parked, ready and exited events, each exactly once, in order.
fn check_worker_events(
    facts: &Chanrecv10Facts,
    w: &WorkerFact,
    goroutine_events: &[&Value],
    release_chan: &str,
    release_line: u64,
    problems: &mut Vec<String>,
) {
    let mine: Vec<&Value> =
        goroutine_events.iter().copied().filter(|e| e.get("goid").and_then(Value::as_u64) == Some(w.goid)).collect();
    let mut goid_problems = Vec::new();
    let expected: [(&str, Value); 4] = [
        (
            "created",
            json!({
                "parent_goid": facts.main_goid,
                "start_function": WORKER_START_FUNCTION,
                "creation_site": {"function": w.created_by, "file": w.file, "line": w.line},
            }),
        ),
        (
            "parked",
            json!({
                "wait_reason": "chan receive",
                "channel": release_chan,
                // main.worker is in the same file as main.main, the creation site.
                "park_site": {
                    "function": WORKER_START_FUNCTION, "file": w.file, "line": release_line
                },
            }),
        ),
        ("ready", json!({"waker_goid": facts.main_goid})),
        ("exited", json!({})),
    ];
    let mut ts = Vec::new();
    for (k, want) in &expected {
        let of_kind: Vec<&&Value> = mine.iter().filter(|e| kind(e) == *k).collect();
        let mut shown = want.clone();
        shown["kind"] = json!(k);
        shown["goid"] = json!(w.goid);
        if of_kind.len() != 1 {
            goid_problems.push(format!("expected exactly 1 `{k}` like {}, observed {}", compact(&shown), of_kind.len()));
        }
        let Some(ev) = of_kind.first() else { continue };
        let mut ms = mismatches(ev, want);
        // Channel addresses compare as numbers ("0xC0.." and "0xc0.." are the same address).
        if *k == "parked" {
            let observed = ev.get("channel").and_then(Value::as_str).and_then(|c| parse_hex(c).ok());
            if observed == Some(facts.release_chan) {
                ms.retain(|m| !m.starts_with("channel:"));
            }
            if !ev.get("wait_reason_code").is_some_and(Value::is_u64) {
                ms.push("wait_reason_code: expected an unsigned integer".into());
            }
        }
        if *k == "created" {
            match ev.get("creation_pc").and_then(Value::as_str).map(parse_hex) {
                Some(Ok(pc)) if pc != 0 => {}
                _ => ms.push(format!(
                    "creation_pc: expected a non-zero \"0x…\" address, observed {}",
                    ev.get("creation_pc").unwrap_or(&Value::Null)
                )),
            }
        }
        for m in ms {
            goid_problems.push(format!("`{k}` {m}"));
        }
        ts.push((*k, ev.get("ts_ns").and_then(Value::as_u64).unwrap_or(0)));
    }
    if ts.windows(2).any(|p| p[0].1 > p[1].1) {
        goid_problems.push(format!("timestamps out of order (created ≤ parked ≤ ready ≤ exited expected): {ts:?}"));
    }
    if !goid_problems.is_empty() {
        let observed: Vec<String> = mine.iter().map(|e| format!("    {}", compact(e))).collect();
        problems.push(format!(
            "worker goid {}: {}\n  observed events of goid {}:\n{}",
            w.goid,
            goid_problems.join("; "),
            w.goid,
            if observed.is_empty() { "    (none)".to_string() } else { observed.join("\n") }
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::ExitStatus;

    use super::*;
    use crate::fixture::Variant;

    fn fixture() -> GoFixture {
        GoFixture {
            name: "chanrecv10".into(),
            go_version: "go1.26.8".into(),
            variant: Variant::Plain,
            path: "/nonexistent".into(),
            build_time: None,
        }
    }

    fn facts() -> Chanrecv10Facts {
        let worker_goids: Vec<u64> = (20..30).collect();
        Chanrecv10Facts {
            pid: 4242,
            go_version: "go1.26.8".into(),
            main_goid: 1,
            release_chan: 0xc0_0001_2060,
            workers: worker_goids
                .iter()
                .map(|&goid| WorkerFact { goid, created_by: "main.main".into(), file: "/src/main.go".into(), line: 97 })
                .collect(),
            worker_goids,
        }
    }

    /// The stream a goscope that follows the contract prints for chanrecv10.
    fn contract_stream() -> Vec<Value> {
        let mut out = vec![json!({"kind": "attached", "pid": 4242, "go_version": "go1.26.8",
            "probes": [{"name": "goroutine_parked", "symbol": "runtime.gopark", "offset": 10}]})];
        let base = |kind: &str, goid: u64, ts: u64| json!({"kind": kind, "pid": 4242, "tid": 4243, "goid": goid, "ts_ns": ts});
        // Noise from other goroutines.
        let mut noise = base("parked", 1, 5);
        noise["wait_reason"] = json!("sleep");
        noise["wait_reason_code"] = json!(19);
        out.push(noise);
        for (i, goid) in (20..30).enumerate() {
            let t = 1000 + i as u64;
            let mut c = base("created", goid, t);
            c["parent_goid"] = json!(1);
            c["creation_pc"] = json!("0x4a1b2c");
            c["creation_site"] = json!({"function": "main.main", "file": "/src/main.go", "line": 97});
            c["start_function"] = json!("main.worker");
            out.push(c);
            let mut p = base("parked", goid, t + 100);
            p["wait_reason"] = json!("chan receive");
            p["wait_reason_code"] = json!(14);
            p["channel"] = json!("0xc000012060");
            p["park_site"] = json!({"function": "main.worker", "file": "/src/main.go", "line": 73});
            out.push(p);
        }
        for goid in 20..30 {
            let mut r = base("ready", goid, 2000 + goid);
            r["waker_goid"] = json!(1);
            out.push(r);
        }
        for goid in 20..30 {
            out.push(base("exited", goid, 3000 + goid));
        }
        let n = out.iter().filter(|e| EVENT_KINDS.contains(&kind(e))).count();
        out.push(json!({"kind": "summary", "events": n, "lost": 0, "dropped": 0, "undecodable": 0, "target_exited": false}));
        out
    }

    fn stopped() -> Stopped {
        Stopped { status: ExitStatus::from_raw(0), new_events: Vec::new(), stderr: String::new() }
    }

    fn check(events: &[Value]) -> Vec<String> {
        let stop = stopped();
        check_chanrecv10(&fixture(), &facts(), events, Ok(&stop))
    }

    #[test]
    fn a_contract_stream_passes() {
        assert_eq!(check(&contract_stream()), Vec::<String>::new());
    }

    #[test]
    fn each_deviation_is_reported() {
        let with = |f: &dyn Fn(&mut Vec<Value>)| {
            let mut s = contract_stream();
            f(&mut s);
            check(&s).join("\n")
        };
        let find = |s: &mut Vec<Value>, k: &str, goid: u64| {
            s.iter().position(|e| kind(e) == k && e["goid"] == goid).expect("event present")
        };

        let report = with(&|s| {
            let i = find(s, "ready", 23);
            s[i]["waker_goid"] = json!(0);
        });
        assert!(report.contains("worker goid 23") && report.contains("waker_goid: expected 1, observed 0"), "{report}");

        let report = with(&|s| {
            let i = find(s, "exited", 25);
            s.remove(i);
        });
        assert!(report.contains("expected exactly 1 `exited`") && report.contains("summary: events"), "{report}");

        let report = with(&|s| {
            let i = find(s, "parked", 21);
            s[i]["channel"] = json!("0xc000012000");
        });
        assert!(report.contains("channel: expected \"0xc000012060\", observed \"0xc000012000\""), "{report}");

        let report = with(&|s| {
            let i = find(s, "created", 20);
            s[i]["creation_site"]["line"] = json!(96);
            s[i]["start_function"] = json!("main.main.gowrap1");
        });
        assert!(report.contains("creation_site") && report.contains("start_function"), "{report}");

        let report = with(&|s| {
            let i = find(s, "ready", 22);
            let dup = s[i].clone();
            s.insert(i, dup);
        });
        assert!(report.contains("expected exactly 1 `ready`"), "{report}");

        let report = with(&|s| {
            let i = find(s, "parked", 1);
            s[i]["channel"] = json!("0xc000099999");
        });
        assert!(report.contains("channel: expected none for wait reason \"sleep\""), "{report}");

        let report = with(&|s| s.insert(5, json!({"kind": "lost", "pid": 4242, "count": 3})));
        assert!(report.contains("lost events"), "{report}");

        let report = with(&|s| {
            s.pop();
        });
        assert!(report.contains("expected a `summary` as the last line"), "{report}");

        let report = with(&|s| {
            let i = find(s, "exited", 27);
            s[i]["ts_ns"] = json!(1);
        });
        assert!(report.contains("timestamps out of order"), "{report}");
    }
}
