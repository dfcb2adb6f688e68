//! `goscope dump` against the Go runtime's own goroutine dump of the same process.
//!
//! The `goroutines` fixture parks goroutines in known ways (a deadlocked send/receive pair, a
//! select, a full buffered channel, a mutex, a WaitGroup, sleep, `select {}`, a nil channel, a
//! herd of N receivers, and three goroutines blocked inside inlined calls: a channel send in an
//! inlined helper, sync.Mutex.Lock in an inlined helper, and a receive in a function inlined into
//! the `go` statement's wrapper) and then stays quiescent. The test runs `goscope dump --format
//! json`, then sends SIGQUIT (the fixture runs with GOTRACEBACK=all) and parses the traceback the
//! runtime prints to stderr. Both must agree on: the set of goroutine ids, the status/wait reason
//! of every user goroutine, the top 3 frames and the top 3 frames outside package runtime
//! (function and line, inlined frames included: goscope expands inlined calls as the runtime
//! does), the top frame outside package runtime (function, file, line, +offset where the runtime
//! prints one), and the creator. goscope must also report the channels the fixture printed with
//! %p.
//!
//! Reading another process's memory needs root (or CAP_SYS_PTRACE): without it the tests print
//! SKIP, except under CI=true, where they fail.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use goscope_tests::goscope::parse_hex;
use goscope_tests::{ChildGuard, GoFixture, Variant, run_goscope};
use serde_json::Value;

const FIXTURE: &str = "goroutines";

fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    let reason = format!("not root (euid {euid}): reading another process's memory needs root or CAP_SYS_PTRACE");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {reason}");
    }
    eprintln!("SKIP: {reason}");
    false
}

/// The fixture, running and quiescent, with the JSON line it printed.
struct Running {
    child: ChildGuard,
    info: Value,
}

fn start(fixture: &GoFixture, herd: usize) -> Result<Running> {
    let herd = herd.to_string();
    let mut cmd = fixture.command(&["-herd", &herd]);
    cmd.env("GOTRACEBACK", "all");
    let mut child = ChildGuard::spawn(fixture.label(), cmd)?;
    let info = child.expect_json("fixture", Duration::from_secs(120))?;
    Ok(Running { child, info })
}

/// `goscope dump --pid P --format json`: the summary line and the goroutine lines by goid.
fn dump_json(pid: u32) -> Result<(Value, BTreeMap<u64, Value>, Duration)> {
    let pid = pid.to_string();
    let out = run_goscope(&["dump", "--pid", &pid, "--format", "json"], Duration::from_secs(120))?;
    ensure!(out.status.success(), "goscope dump failed:\n{out}");
    let (last, goroutines) = out.stdout.split_last().ok_or_else(|| anyhow!("no output:\n{out}"))?;
    let summary: Value = serde_json::from_str(last)?;
    ensure!(summary["kind"] == "summary", "the last line is not the summary (the README says it comes last): {summary}");
    let mut gs = BTreeMap::new();
    for l in goroutines {
        let v: Value = serde_json::from_str(l).with_context(|| format!("not JSON: {l}"))?;
        ensure!(v["kind"] == "goroutine", "unexpected line {v}");
        let goid = v["goid"].as_u64().ok_or_else(|| anyhow!("no goid: {v}"))?;
        ensure!(gs.insert(goid, v).is_none(), "goid {goid} twice");
    }
    Ok((summary, gs, out.took))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RtFrame {
    function: String,
    file: String,
    line: u32,
    /// None for inlined frames (no "+0x").
    offset: Option<u64>,
}

#[derive(Debug, Default)]
struct RtGoroutine {
    /// What the header shows in brackets, without ", N minutes" and " (scan)".
    status: String,
    /// The header says ", locked to thread".
    locked: bool,
    frames: Vec<RtFrame>,
    created_by: Option<(String, Option<u64>)>,
}

/// Parses the runtime's traceback (GOTRACEBACK=all, crash format) into goroutines by goid.
fn parse_traceback(text: &str) -> Result<BTreeMap<u64, RtGoroutine>> {
    let mut out = BTreeMap::new();
    for block in text.split("\n\n") {
        let mut lines = block.lines().skip_while(|l| !l.starts_with("goroutine "));
        let Some(header) = lines.next() else { continue };
        let goid: u64 = header["goroutine ".len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap_or("")
            .parse()
            .with_context(|| format!("header {header:?}"))?;
        let (i, j) = (header.find('[').unwrap_or(0), header.rfind(']').unwrap_or(0));
        let mut status = header.get(i + 1..j).unwrap_or("").to_string();
        let locked = status.contains(", locked to thread");
        if let Some(k) = status.find(", ") {
            status.truncate(k);
        }
        let status = status.replace(" (scan)", "");
        let mut g = RtGoroutine { status, locked, ..Default::default() };
        let lines: Vec<&str> = lines.collect();
        let mut k = 0;
        while k < lines.len() {
            let l = lines[k];
            if let Some(rest) = l.strip_prefix("created by ") {
                let (f, by) = match rest.split_once(" in goroutine ") {
                    Some((f, n)) => (f.to_string(), n.trim().parse().ok()),
                    None => (rest.trim().to_string(), None),
                };
                g.created_by = Some((f, by));
                break;
            }
            if l.starts_with('\t') || l.starts_with("...") || !l.ends_with(')') {
                k += 1;
                continue;
            }
            let function = strip_args(l).to_string();
            let Some(pos) = lines.get(k + 1).and_then(|p| p.strip_prefix('\t')) else { break };
            let mut parts = pos.split_whitespace();
            let fl = parts.next().unwrap_or("");
            let (file, line) = fl.rsplit_once(':').unwrap_or((fl, "0"));
            let offset = parts.next().and_then(|o| o.strip_prefix("+0x")).and_then(|o| u64::from_str_radix(o, 16).ok());
            g.frames.push(RtFrame { function, file: file.to_string(), line: line.parse().unwrap_or(0), offset });
            k += 2;
        }
        out.insert(goid, g);
    }
    Ok(out)
}

/// `pkg.(*T).M(0x1, {...})` → `pkg.(*T).M`: cut at the '(' matching the final ')'.
fn strip_args(l: &str) -> &str {
    let mut depth = 0;
    for (i, c) in l.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    return &l[..i];
                }
            }
            _ => {}
        }
    }
    l
}

/// SIGQUIT the fixture and parse what the runtime printed.
fn runtime_dump(run: &mut Running) -> Result<BTreeMap<u64, RtGoroutine>> {
    run.child.signal(libc::SIGQUIT)?;
    run.child.wait_exit(Duration::from_secs(60))?.ok_or_else(|| anyhow!("the fixture did not exit after SIGQUIT"))?;
    let text = run.child.stderr_text();
    ensure!(text.contains("SIGQUIT"), "no SIGQUIT dump on stderr:\n{text}");
    parse_traceback(&text)
}

/// Our first frame outside package runtime.
fn top_user_frame(g: &Value) -> Option<RtFrame> {
    g["stack"].as_array()?.iter().find_map(|f| {
        let function = f["function"].as_str()?;
        (!function.starts_with("runtime.")).then(|| RtFrame {
            function: function.to_string(),
            file: f["file"].as_str().unwrap_or("").to_string(),
            line: f["line"].as_u64().unwrap_or(0) as u32,
            offset: f["offset"].as_u64(),
        })
    })
}

/// The runtime's first frame outside package runtime (inlined or not).
fn rt_top_user_frame(g: &RtGoroutine) -> Option<&RtFrame> {
    g.frames.iter().find(|f| !f.function.starts_with("runtime."))
}

/// Same function, file and line; the same +offset where the runtime prints one (it prints none
/// for an inlined frame, for which goscope's JSON gives the physical frame's).
fn same_frame(ours: &RtFrame, rt: &RtFrame) -> bool {
    ours.function == rt.function
        && ours.file == rt.file
        && ours.line == rt.line
        && (rt.offset.is_none() || ours.offset == rt.offset)
}

/// goscope's stack as (function, line) pairs, every logical frame.
fn our_frames(g: &Value) -> Vec<(String, u32)> {
    g["stack"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| (f["function"].as_str().unwrap_or("?").to_string(), f["line"].as_u64().unwrap_or(0) as u32))
                .collect()
        })
        .unwrap_or_default()
}

/// Frames compared from the top of every user goroutine's stack, runtime frames included.
const TOP_FRAMES: usize = 3;

fn strs(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// One fixture run: goscope's dump, checked against the fixture's report and the runtime's dump.
fn check(fixture: &GoFixture, herd: usize) -> Result<String> {
    let mut run = start(fixture, herd)?;
    let pid = run.child.pid();
    let (summary, ours, took) = dump_json(pid)?;
    let info = run.info.clone();
    let minor: u32 = fixture.go_version.trim_start_matches("go1.").split('.').next().unwrap_or("0").parse()?;
    let main_goid = info["main_goid"].as_u64().ok_or_else(|| anyhow!("fixture: {info}"))?;
    let mut problems = Vec::new();
    let mut inlined_cases = Vec::new();

    // The fixture's goroutines, as the fixture knows them.
    for (name, want) in info["goroutines"].as_object().ok_or_else(|| anyhow!("fixture: {info}"))? {
        let goid = want["goid"].as_u64().unwrap_or(0);
        let Some(g) = ours.get(&goid) else {
            problems.push(format!("{name} (goroutine {goid}) missing from the dump"));
            continue;
        };
        let known = Known { minor, main_goid };
        check_fixture_goroutine(name, want, g, known, &mut problems, &mut inlined_cases)?;
    }
    let stats = &summary["stats"];
    check_herd_and_counts(&info, &ours, stats, herd, &mut problems);
    // Against the runtime's own dump.
    let rt = runtime_dump(&mut run)?;
    let compared = check_against_runtime(fixture, &ours, &rt, main_goid, &mut problems);
    check_inlined_and_main(&ours, &rt, &inlined_cases, main_goid, &mut problems);
    if !problems.is_empty() {
        bail!("{}: {} problem(s):\n  {}", fixture.label(), problems.len(), problems.join("\n  "));
    }
    Ok(format!(
        "{}: {} goroutines ({} compared with the runtime's dump), goscope dump took {:.0} ms (snapshot {:.1} ms, {} bytes, {} syscalls, allgs from {})",
        fixture.label(),
        ours.len(),
        compared,
        took.as_secs_f64() * 1e3,
        stats["elapsed_ns"].as_f64().unwrap_or(0.0) / 1e6,
        stats["bytes_read"],
        stats["syscalls"],
        summary["allgs_source"]
    ))
}

/// What a goroutine of the fixture is checked against besides the fixture's own report.
#[derive(Clone, Copy)]
struct Known {
    minor: u32,
    main_goid: u64,
}

/// One goroutine the fixture reported, as goscope's dump shows it.
fn check_fixture_goroutine(
    name: &str,
    want: &Value,
    g: &Value,
    known: Known,
    problems: &mut Vec<String>,
    inlined_cases: &mut Vec<(String, u64, String)>,
) -> Result<()> {
    let Known { minor, main_goid } = known;
    let goid = want["goid"].as_u64().unwrap_or(0);
    let wr = want["wait_reason"].as_str().unwrap_or("");
    if g["state"] != "waiting" || g["wait_reason"] != wr || g["status"] != wr {
        problems.push(format!("{name}: expected waiting in {wr:?}, got {g}"));
    }
    let chans: BTreeSet<String> = strs(&g["channels"]).into_iter().collect();
    let want_chans: BTreeSet<String> = strs(&want["channels"]).into_iter().collect();
    if chans != want_chans {
        problems.push(format!("{name}: channels {chans:?}, the fixture says {want_chans:?}"));
    }
    if (name == "selector") != (g["is_select"] == true) {
        problems.push(format!("{name}: is_select {}", g["is_select"]));
    }
    let in_stack = g["stack"].as_array().is_some_and(|s| s.iter().any(|f| f["function"] == want["function"]));
    if !in_stack {
        problems.push(format!("{name}: {} not in its stack {}", want["function"], g["stack"]));
    }
    let cb = &g["created_by"];
    let want_parent = if minor >= 21 { Value::from(main_goid) } else { Value::Null };
    if cb["function"] != "main.main" || cb["goid"] != want_parent {
        problems.push(format!("{name}: created_by {cb}, expected main.main in goroutine {want_parent}"));
    }
    if !g["start_function"].as_str().is_some_and(|f| f.starts_with("main.")) {
        problems.push(format!("{name}: start_function {}", g["start_function"]));
    }
    // The fixture ran a GC after they parked, which set g.waitsince.
    if !g["waiting_for_ns"].as_u64().is_some_and(|ns| ns < 600_000_000_000) {
        problems.push(format!("{name}: waiting_for_ns {}", g["waiting_for_ns"]));
    }
    if g["locked_to_thread"] != (name == "pinned") {
        problems.push(format!("{name}: locked_to_thread {}", g["locked_to_thread"]));
    }
    if g["stack_end"] != "goexit" {
        problems.push(format!("{name}: stack_end {}", g["stack_end"]));
    }
    // The semaphore: from g.waiting (Go 1.26+ links the sudog there), else from the runtime's
    // semtable (by its symbol, or decoded from the code in a stripped binary).
    // sync.Mutex.sema is at +4, WaitGroup.sema at +8 (go-runtime-facts.md §2).
    if let Some(sync) = want["sync_addr"].as_str() {
        let field = if name == "locker" || name == "inllock" { 4 } else { 8 };
        let expect = Value::from(format!("{:#x}", parse_hex(sync)? + field));
        if g["sema_addr"] != expect {
            problems.push(format!("{name}: sema_addr {}, expected {expect} ({sync} + sema field)", g["sema_addr"]));
        }
    }
    // The fixture's inlined cases: the runtime shows the blocking function as an inlined
    // frame (no +offset); goscope must show it too (checked against the runtime's dump below).
    if name.starts_with("inl") && (name != "inlrecv" || minor >= 22) {
        inlined_cases.push((name.to_string(), goid, want["function"].as_str().unwrap_or("").to_string()));
    }
    if name == "fullsend" {
        let d = &g["channel_details"][0];
        // The element type comes from hchan.elemtype's descriptor and its name in the binary.
        if d["capacity"] != 2 || d["len"] != 2 || d["closed"] != false || d["element_type"] != "int" {
            problems.push(format!("fullsend: channel details {d}"));
        }
    }
    Ok(())
}

/// The herd of receivers, the user goroutine count, and a clean read.
fn check_herd_and_counts(info: &Value, ours: &BTreeMap<u64, Value>, stats: &Value, herd: usize, problems: &mut Vec<String>) {
    let herd_chan = info["herd"]["channel"].as_str().unwrap_or("").to_string();
    let herd_seen = ours
        .values()
        .filter(|g| top_user_frame(g).is_some_and(|f| f.function == "main.herdMember"))
        .filter(|g| g["wait_reason"] == "chan receive" && strs(&g["channels"]) == [herd_chan.clone()])
        .filter(|g| g["channel_details"][0]["element_type"] == "struct {}")
        .count();
    if herd_seen != herd {
        problems.push(format!("herd: {herd_seen} goroutines receiving on {herd_chan}, the fixture started {herd}"));
    }
    // runtime.NumGoroutine counts the goroutines that are not the runtime's own.
    let user = ours.values().filter(|g| g["system"] == false).count() as u64;
    if Some(user) != info["num_goroutine"].as_u64() {
        problems.push(format!("{user} user goroutines, runtime.NumGoroutine() said {}", info["num_goroutine"]));
    }
    if stats["invalid"] != 0 || stats["inconsistent"] != 0 {
        problems.push(format!("a quiescent process read with invalid/inconsistent goroutines: {stats}"));
    }
}

/// goscope's dump against the runtime's: the same goroutines, statuses, top frames and creators.
/// Returns how many goroutines were compared.
fn check_against_runtime(
    fixture: &GoFixture,
    ours: &BTreeMap<u64, Value>,
    rt: &BTreeMap<u64, RtGoroutine>,
    main_goid: u64,
    problems: &mut Vec<String>,
) -> usize {
    let rt_ids: BTreeSet<u64> = rt.keys().copied().filter(|&g| g != 0).collect();
    let our_ids: BTreeSet<u64> = ours.keys().copied().collect();
    if rt_ids != our_ids {
        let only_rt: Vec<_> = rt_ids.difference(&our_ids).take(10).collect();
        let only_us: Vec<_> = our_ids.difference(&rt_ids).take(10).collect();
        problems.push(format!(
            "goroutine ids differ: {} in the runtime's dump, {} in goscope's; only the runtime's: {only_rt:?}; only goscope's: {only_us:?}",
            rt_ids.len(),
            our_ids.len()
        ));
    }
    let mut compared = 0;
    for (goid, g) in ours {
        let Some(r) = rt.get(goid) else { continue };
        // The runtime's own goroutines may have moved on between the two dumps; goroutine 1 is
        // in a read syscall, which the runtime's dump shows from the signal's context.
        if g["system"] == true || *goid == main_goid {
            continue;
        }
        compared += 1;
        if g["status"] != r.status.as_str() {
            problems.push(format!("goroutine {goid}: goscope says [{}], the runtime [{}]", g["status"], r.status));
        }
        let (a, b) = (top_user_frame(g), rt_top_user_frame(r));
        if !matches!((&a, b), (Some(a), Some(b)) if same_frame(a, b)) && (a.is_some() || b.is_some()) {
            problems.push(format!("goroutine {goid}: top user frame {a:?} (goscope) vs {b:?} (runtime)"));
        }
        // Inlined calls expanded as the runtime does: the top frames (function, line) agree, and
        // so do the top user frames (where the fixture's inlined calls are).
        let ours_all = our_frames(g);
        let rt_all: Vec<(String, u32)> = r.frames.iter().map(|f| (f.function.clone(), f.line)).collect();
        let user = |v: &[(String, u32)]| -> Vec<(String, u32)> {
            v.iter().filter(|f| !f.0.starts_with("runtime.")).take(TOP_FRAMES).cloned().collect()
        };
        let top = |v: &[(String, u32)]| v.iter().take(TOP_FRAMES).cloned().collect::<Vec<_>>();
        if top(&ours_all) != top(&rt_all) || user(&ours_all) != user(&rt_all) {
            problems.push(format!("goroutine {goid}: frames {ours_all:?} (goscope) vs {rt_all:?} (runtime)"));
        }
        if ours_all != rt_all {
            // Not required (the runtime may elide frames), but worth seeing when it differs.
            eprintln!(
                "{}: goroutine {goid}: whole stacks differ: {ours_all:?} (goscope) vs {rt_all:?} (runtime)",
                fixture.label()
            );
        }
        let cb = (g["created_by"]["function"].as_str().unwrap_or("").to_string(), g["created_by"]["goid"].as_u64());
        if r.created_by.as_ref() != Some(&cb) {
            problems.push(format!("goroutine {goid}: created by {cb:?} (goscope) vs {:?} (runtime)", r.created_by));
        }
    }
    compared
}

/// The fixture's inlined calls shown as the runtime shows them, and main.main in both dumps.
fn check_inlined_and_main(
    ours: &BTreeMap<u64, Value>,
    rt: &BTreeMap<u64, RtGoroutine>,
    inlined_cases: &[(String, u64, String)],
    main_goid: u64,
    problems: &mut Vec<String>,
) {
    for (name, goid, function) in inlined_cases {
        let inlined_in_rt = rt.get(goid).is_some_and(|r| r.frames.iter().any(|f| &f.function == function && f.offset.is_none()));
        if !inlined_in_rt {
            problems.push(format!(
                "{name}: the runtime's dump does not show {function} as an inlined frame; the fixture no longer tests inlining"
            ));
        }
        let ours_has = ours.get(goid).is_some_and(|g| our_frames(g).iter().any(|f| &f.0 == function));
        if !ours_has {
            problems.push(format!("{name}: {function} (inlined) missing from goscope's stack"));
        }
    }
    if let Some(r) = rt.get(&main_goid) {
        let ours_main = ours.get(&main_goid).and_then(|g| g["stack"].as_array().cloned()).unwrap_or_default();
        if !ours_main.iter().any(|f| f["function"] == "main.main") || !r.frames.iter().any(|f| f.function == "main.main") {
            problems.push(format!("goroutine {main_goid}: main.main missing from a stack: {ours_main:?} / {:?}", r.frames));
        }
    }
}

fn matrix(version: Option<&str>, variants: &[Variant], herd: usize) -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let mut built = vec![GoFixture::build(FIXTURE, version, variants[0])];
    let rest: Vec<_> = variants[1..].iter().map(|&v| (FIXTURE, version, v)).collect();
    built.extend(GoFixture::build_many(&rest));
    let mut failures = Vec::new();
    for (result, variant) in built.into_iter().zip(variants) {
        match result.and_then(|f| check(&f, herd)) {
            Ok(line) => eprintln!("ok: {line}"),
            Err(e) => failures.push(format!("go{} {variant}: {e:#}", version.unwrap_or("(installed)"))),
        }
    }
    if !failures.is_empty() {
        bail!("{} of {} variant(s) failed:\n\n{}", failures.len(), variants.len(), failures.join("\n\n"));
    }
    Ok(())
}

const PLAIN_STRIPPED_PIE: &[Variant] = &[Variant::Plain, Variant::Stripped, Variant::Pie];

#[test]
fn installed_go_all_variants() -> Result<()> {
    matrix(None, &Variant::ALL, 50)
}

#[test]
fn go1_19() -> Result<()> {
    matrix(Some("1.19.13"), PLAIN_STRIPPED_PIE, 50)
}

#[test]
fn go1_21() -> Result<()> {
    matrix(Some("1.21.13"), PLAIN_STRIPPED_PIE, 50)
}

#[test]
fn go1_23() -> Result<()> {
    matrix(Some("1.23.12"), PLAIN_STRIPPED_PIE, 50)
}

#[test]
fn go1_25() -> Result<()> {
    matrix(Some("1.25.14"), PLAIN_STRIPPED_PIE, 50)
}

#[test]
fn go1_26() -> Result<()> {
    matrix(Some("1.26.11"), PLAIN_STRIPPED_PIE, 50)
}

#[test]
fn go1_27() -> Result<()> {
    matrix(Some("1.27.4"), PLAIN_STRIPPED_PIE, 50)
}

/// 100,000 goroutines blocked on one channel, all enumerated, and the same ids as the runtime's
/// own dump (plain and stripped: the stripped one finds runtime.allgs from code).
#[test]
fn hundred_thousand_goroutines() -> Result<()> {
    matrix(None, &[Variant::Plain, Variant::Stripped], 100_000)
}

/// The text format: the runtime's traceback shape plus channel lines.
#[test]
fn text_format() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let fixture = GoFixture::build(FIXTURE, None, Variant::Plain)?;
    let run = start(&fixture, 3)?;
    let pid = run.child.pid().to_string();
    let out = run_goscope(&["dump", "--pid", &pid], Duration::from_secs(60))?;
    ensure!(out.status.success(), "goscope dump failed:\n{out}");
    let text = out.stdout.join("\n");
    let g = &run.info["goroutines"];
    let goid = |n: &str| g[n]["goid"].as_u64().unwrap_or(0);
    let chan = |n: &str, i: usize| g[n]["channels"][i].as_str().unwrap_or("?").to_string();
    let sender = format!("goroutine {} [chan send", goid("sender"));
    let expect = [
        sender.clone(),
        "main.sender(...)\n\t".to_string(),
        format!("created by main.main in goroutine {}\n\t", run.info["main_goid"]),
        format!("waiting on chan {} of int (cap 0, len 0)", chan("sender", 0)),
        format!("goroutine {} [chan receive", goid("receiver")),
        format!("goroutine {} [select]:\nruntime.gopark(...)", goid("selector")),
        format!("selecting on chan {} of int (cap 0, len 0)", chan("selector", 1)),
        format!("waiting on chan {} of int (cap 2, len 2)", chan("fullsend", 0)),
        format!("goroutine {} [select (no cases)", goid("forever")),
        "by state: ".to_string(),
    ];
    for e in &expect {
        ensure!(text.contains(e.as_str()), "text dump lacks {e:?}:\n{text}");
    }
    // Sorted by goid; runtime frames shown, as in the runtime's SIGQUIT dump (a runtime throw,
    // printed at traceback level 2).
    let ids: Vec<u64> = text.lines().filter_map(|l| l.strip_prefix("goroutine ")?.split(' ').next()?.parse().ok()).collect();
    ensure!(ids.windows(2).all(|w| w[0] < w[1]), "goroutines not sorted by goid: {ids:?}");
    let block = text.split("\n\n").find(|b| b.starts_with(&sender)).unwrap_or("");
    ensure!(block.contains("runtime.gopark(...)\n\t"), "runtime.gopark not shown for a goroutine in chan send:\n{block}");
    let selector = text.split("\n\n").find(|b| b.starts_with(&format!("goroutine {} [select]", goid("selector")))).unwrap_or("");
    ensure!(selector.contains("runtime.selectgo(...)\n\t"), "runtime.selectgo not shown:\n{selector}");
    let main = text.split("\n\n").find(|b| b.starts_with("goroutine 1 [")).unwrap_or("");
    ensure!(!main.contains("created by"), "goroutine 1 has a creator, which the runtime never shows:\n{main}");
    Ok(())
}

/// `goscope dump` (text) against the runtime's own SIGQUIT dump of the same quiescent process:
/// for every user goroutine that stays put (not goroutine 1, which is in a read syscall), the same
/// status, the same frames (function, file, line and +offset, runtime frames included) and the
/// same creator; goroutine 1 has no creator in either.
fn text_matches_the_runtime(version: Option<&str>) -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let fixture = GoFixture::build(FIXTURE, version, Variant::Plain)?;
    let mut run = start(&fixture, 3)?;
    let pid = run.child.pid().to_string();
    let out = run_goscope(&["dump", "--pid", &pid], Duration::from_secs(60))?;
    ensure!(out.status.success(), "goscope dump failed:\n{out}");
    let ours = parse_traceback(&out.stdout.join("\n"))?;
    let rt = runtime_dump(&mut run)?;
    let main_goid = run.info["main_goid"].as_u64().unwrap_or(1);
    let mut problems = Vec::new();
    for (name, want) in run.info["goroutines"].as_object().ok_or_else(|| anyhow!("fixture: {}", run.info))? {
        let goid = want["goid"].as_u64().unwrap_or(0);
        let (Some(a), Some(b)) = (ours.get(&goid), rt.get(&goid)) else {
            problems.push(format!("{name} (goroutine {goid}) missing from a dump"));
            continue;
        };
        if a.status != b.status || a.locked != b.locked || a.frames != b.frames || a.created_by != b.created_by {
            problems.push(format!("{name} (goroutine {goid}):\n    goscope: {a:?}\n    runtime: {b:?}"));
        }
    }
    let pinned = run.info["goroutines"]["pinned"]["goid"].as_u64().context("fixture: no pinned goroutine")?;
    if !rt.get(&pinned).is_some_and(|g| g.locked) {
        problems.push(format!(
            "the runtime's dump does not say goroutine {pinned} is locked to thread; the fixture no longer tests it"
        ));
    }
    for (dump, gs) in [("goscope's", &ours), ("the runtime's", &rt)] {
        if let Some(g) = gs.get(&main_goid).filter(|g| g.created_by.is_some()) {
            problems.push(format!("goroutine {main_goid} has a creator in {dump} dump: {g:?}"));
        }
    }
    if !problems.is_empty() {
        bail!("{}: {} goroutine(s) differ:\n  {}", fixture.label(), problems.len(), problems.join("\n  "));
    }
    Ok(())
}

/// Every release of the matrix but 1.20, where the `goroutines` fixture's goroutines never all
/// park (the dump matrix above leaves 1.20 out too).
mod text_versus_runtime {
    use super::text_matches_the_runtime as check;

    macro_rules! versions {
        ($($name:ident => $version:literal),*) => {
            $(
                #[test]
                fn $name() -> anyhow::Result<()> {
                    check(Some($version))
                }
            )*
        };
    }

    versions!(go1_19 => "1.19.13", go1_21 => "1.21.13", go1_22 => "1.22.12", go1_23 => "1.23.12", go1_24 => "1.24.13",
        go1_25 => "1.25.14", go1_26 => "1.26.11", go1_27 => "1.27.4");

    #[test]
    fn installed_go() -> anyhow::Result<()> {
        check(None)
    }
}

/// Errors: one line on stderr, non-zero exit, never a panic.
#[test]
fn errors_are_one_line() -> Result<()> {
    if !require_root() {
        return Ok(());
    }
    let one_line = |out: &goscope_tests::RunOutput, want: &str| -> Result<()> {
        ensure!(!out.status.success(), "expected failure:\n{out}");
        ensure!(out.status.code() == Some(1), "expected exit status 1 (not a panic):\n{out}");
        let err = out.stderr.trim_end();
        ensure!(
            !err.contains('\n') && err.starts_with("goscope: ") && err.contains(want),
            "expected one line with {want:?}:\n{out}"
        );
        Ok(())
    };
    let out = run_goscope(&["dump", "--pid", "4194000"], Duration::from_secs(30))?;
    one_line(&out, "no process with PID 4194000")?;

    let mut sleep = std::process::Command::new("sleep");
    sleep.arg("30");
    let not_go = ChildGuard::spawn("sleep 30", sleep)?;
    let out = run_goscope(&["dump", "--pid", &not_go.pid().to_string()], Duration::from_secs(30))?;
    one_line(&out, "")?;
    eprintln!("non-Go process: {}", out.stderr.trim());

    // A process that exits while goscope reads it: whatever the timing, success or "exited".
    let fixture = GoFixture::build(FIXTURE, None, Variant::Plain)?;
    let mut outcomes = BTreeMap::<String, usize>::new();
    for delay_ms in [0u64, 2, 5, 10, 20, 40] {
        let mut run = start(&fixture, 100_000)?;
        let pid = run.child.pid().to_string();
        let bin = goscope_tests::goscope_bin()?;
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["dump", "--pid", &pid, "--format", "json"]).env_remove("RUST_BACKTRACE");
        let mut dump = ChildGuard::spawn("goscope dump", cmd)?;
        dump.close_stdin();
        std::thread::sleep(Duration::from_millis(delay_ms));
        run.child.kill();
        let start = Instant::now();
        let status = dump.wait_exit(Duration::from_secs(60))?.ok_or_else(|| anyhow!("goscope dump hung"))?;
        let _ = dump.drain_lines();
        let err = dump.stderr_text();
        let outcome = if status.success() {
            "completed before the exit".to_string()
        } else {
            ensure!(status.code() == Some(1), "goscope dump: {status} (a panic?), stderr: {err}");
            let line = err.trim_end();
            ensure!(!line.contains('\n') && line.contains(&format!("PID {pid} exited")), "stderr after exit mid-read: {err:?}");
            "PID N exited".to_string()
        };
        eprintln!("killed after {delay_ms} ms: {outcome} ({:.0} ms after the kill)", start.elapsed().as_secs_f64() * 1e3);
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!("exit mid-read outcomes: {outcomes:?}");
    Ok(())
}

#[test]
fn traceback_parser() {
    let text = "SIGQUIT: quit\n\ngoroutine 7 gp=0x1 m=nil [chan send, 3 minutes]:\nruntime.gopark(0x0?, {0x1, 0x2})\n\t/a/proc.go:462 +0xce fp=0x1 sp=0x2 pc=0x3\nruntime.goparkunlock(...)\n\t/a/proc.go:468\ninternal/poll.(*FD).Read(0xc)\n\t/b/fd.go:161 +0x21d\ncreated by main.main in goroutine 1\n\t/m.go:12 +0x2a\n";
    let p = parse_traceback(text).unwrap();
    let g = &p[&7];
    assert_eq!(g.status, "chan send");
    assert_eq!(g.frames.len(), 3);
    assert_eq!(g.frames[1].offset, None);
    assert_eq!(g.frames[2].function, "internal/poll.(*FD).Read");
    assert_eq!(g.frames[2].line, 161);
    assert_eq!(g.created_by, Some(("main.main".into(), Some(1))));
    assert_eq!(parse_hex("0x10").unwrap(), 16);
}
