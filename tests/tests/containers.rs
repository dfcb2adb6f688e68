//! goscope on a process in its own mount and pid namespaces, as in a container.
//!
//! The chanrecv10 fixture runs under
//! `unshare --mount --pid --fork --mount-proc --propagation private --kill-child`, from a private
//! tmpfs mounted inside that mount namespace only: its executable's path (what
//! readlink(/proc/PID/exe) and /proc/PID/maps show) does not exist in the host's mount namespace,
//! and the fixture is pid 1 of its pid namespace. goscope is given the HOST pid; it must resolve
//! the binary through `/proc/PID/exe` (the process's own inode, whatever namespace it lives in),
//! so `inspect --pid`, `dump --pid` and `attach --pid` work, and attach reports the whole
//! chanrecv10 event contract (`goscope_tests::scenario`) with the host pid in every event.
//! Goroutine ids are the runtime's own and do not depend on namespaces.
//!
//! A second test removes the binary from the tmpfs after the fixture started: the kernel then
//! shows `<path> (deleted)` both in readlink(/proc/PID/exe) and in /proc/PID/maps, and goscope
//! must still find the PIE load bias and attach.
//!
//! Needs root (mounts, namespaces, eBPF) and util-linux's `unshare`; without them the tests print
//! SKIP, except under CI=true, where they fail.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use goscope_tests::scenario::run_chanrecv10_started;
use goscope_tests::{ChildGuard, GoFixture, Variant, require_bpf, run_goscope};
use serde_json::Value;

const FIXTURE: &str = "chanrecv10";

/// Prints SKIP (or, under CI=true, fails: a CI that skips proves nothing).
fn skip_or_fail(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// Whether `unshare` can create mount + pid namespaces here (root, util-linux).
fn require_unshare() -> bool {
    let out = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private"])
        .args(["--kill-child", "true"])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            skip_or_fail(&format!(
                "`unshare --mount --pid --fork --mount-proc --kill-child true` failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            false
        }
        Err(e) => {
            skip_or_fail(&format!("cannot run `unshare` (util-linux): {e}"));
            false
        }
    }
}

/// A fixture running inside new mount and pid namespaces, from a tmpfs only they can see.
struct Contained {
    /// The fixture's first line (`{"fixture":"chanrecv10","pid":1,...}`).
    start: Value,
    /// The fixture's pid in the host's pid namespace.
    host_pid: u32,
    /// The executable's path inside the namespace; nothing there on the host.
    exe_in_ns: PathBuf,
    /// The host directory the tmpfs is mounted over inside the namespace (empty on the host).
    mountpoint: PathBuf,
}

/// Removes the (empty) host directory at the end of the test.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// Starts the fixture in its namespaces. The returned guard is the `unshare` process: the fixture
/// (its only child, killed with it) shares its stdin and stdout.
fn contained(fixture: &GoFixture) -> Result<(ChildGuard, Contained)> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let mountpoint = goscope_tests::target_dir().join("containers").join(format!(
        "root-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&mountpoint).with_context(|| format!("creating {}", mountpoint.display()))?;
    let mp = mountpoint.to_str().context("non-UTF-8 target dir")?;
    let exe_in_ns = mountpoint.join("app").join(FIXTURE);
    let script = format!(
        "set -e; mount -t tmpfs goscope-test-ct '{mp}'; mkdir '{mp}/app'; cp \"$1\" '{mp}/app/{FIXTURE}'; exec '{mp}/app/{FIXTURE}'"
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private"])
        .arg("--kill-child")
        .args(["sh", "-c", &script, "sh"])
        .arg(&fixture.path);
    let mut child = ChildGuard::spawn(format!("{} in namespaces", fixture.label()), cmd)?;
    let start = child.expect_json("main_goid", Duration::from_secs(20))?;
    let host_pid = only_child(child.pid())?;
    Ok((child, Contained { start, host_pid, exe_in_ns, mountpoint }))
}

/// The pid of `parent`'s only child (unshare forks once; sh execs the fixture in place).
fn only_child(parent: u32) -> Result<u32> {
    let mut children = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may contain anything, so split after its last ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            children.push(pid);
        }
    }
    match children.as_slice() {
        [pid] => Ok(*pid),
        other => bail!("expected exactly one child of unshare (pid {parent}), found {other:?}"),
    }
}

/// The fixture's ids in each pid namespace it belongs to, outermost first (`NSpid:` of status).
fn ns_pids(pid: u32) -> Result<Vec<u32>> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line =
        status.lines().find_map(|l| l.strip_prefix("NSpid:")).ok_or_else(|| anyhow!("no NSpid line in /proc/{pid}/status"))?;
    line.split_whitespace().map(|p| p.parse().context("NSpid")).collect()
}

fn ns_link(pid: &str, ns: &str) -> Result<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/{ns}")).with_context(|| format!("reading /proc/{pid}/ns/{ns}"))
}

/// The namespace facts the test relies on, checked from the host.
fn check_isolation(c: &Contained, deleted: bool) -> Result<()> {
    let pid = c.host_pid;
    let nspids = ns_pids(pid)?;
    let fixture_pid = c.start["pid"].as_u64().context("fixture pid")?;
    ensure!(
        nspids.len() == 2 && nspids[0] == pid && u64::from(nspids[1]) == fixture_pid,
        "NSpid of {pid} is {nspids:?}; the fixture says its pid is {fixture_pid}"
    );
    ensure!(u64::from(pid) != fixture_pid, "the fixture is not in its own pid namespace");
    for ns in ["mnt", "pid"] {
        ensure!(ns_link("self", ns)? != ns_link(&pid.to_string(), ns)?, "the fixture shares the test's {ns} namespace");
    }
    let exe = fs::read_link(format!("/proc/{pid}/exe"))?;
    let want = if deleted { PathBuf::from(format!("{} (deleted)", c.exe_in_ns.display())) } else { c.exe_in_ns.clone() };
    ensure!(exe == want, "readlink(/proc/{pid}/exe) = {}, expected {}", exe.display(), want.display());
    ensure!(!c.exe_in_ns.exists(), "{} exists in the host's mount namespace: the tmpfs leaked", c.exe_in_ns.display());
    ensure!(fs::read_dir(&c.mountpoint)?.next().is_none(), "{} is not empty on the host", c.mountpoint.display());
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let shown = want.display().to_string();
    ensure!(maps.lines().any(|l| l.ends_with(&format!(" {shown}"))), "/proc/{pid}/maps does not map {shown}:\n{maps}");
    Ok(())
}

/// `goscope inspect --pid HOSTPID` says what `goscope inspect FILE` says about the original file.
fn check_inspect(fixture: &GoFixture, c: &Contained, deleted: bool) -> Result<()> {
    let pid = c.host_pid.to_string();
    let by_pid = run_goscope(&["inspect", "--pid", &pid, "--format", "json"], Duration::from_secs(60))?;
    ensure!(by_pid.status.success(), "goscope inspect --pid {pid} failed:\n{by_pid}");
    let file = fixture.path.to_str().context("fixture path")?;
    let by_file = run_goscope(&["inspect", file, "--format", "json"], Duration::from_secs(60))?;
    ensure!(by_file.status.success(), "goscope inspect {file} failed:\n{by_file}");
    let parse = |out: &goscope_tests::RunOutput| -> Result<Value> {
        ensure!(out.stdout.len() == 1, "expected one JSON line:\n{out}");
        Ok(serde_json::from_str(&out.stdout[0])?)
    };
    let (mut a, mut b) = (parse(&by_pid)?, parse(&by_file)?);
    let shown = a["path"].as_str().unwrap_or_default().to_string();
    ensure!(
        shown.starts_with(&c.exe_in_ns.display().to_string()) && shown.ends_with(" (deleted)") == deleted,
        "inspect --pid shows path {shown:?}"
    );
    ensure!(a["supported"] == true, "not supported: {a}");
    ensure!(a["go_version"] == fixture.go_version.as_str(), "go_version: {a}");
    a["path"] = Value::Null;
    b["path"] = Value::Null;
    ensure!(a == b, "inspect --pid {pid}:\n{a}\ndiffers from inspect {file}:\n{b}");
    Ok(())
}

/// `goscope dump --pid HOSTPID` reads the namespaced process: main's goroutine is in main.main.
fn check_dump(fixture: &GoFixture, c: &Contained) -> Result<()> {
    let pid = c.host_pid.to_string();
    let out = run_goscope(&["dump", "--pid", &pid, "--format", "json"], Duration::from_secs(60))?;
    ensure!(out.status.success(), "goscope dump --pid {pid} failed:\n{out}");
    let lines: Vec<Value> =
        out.stdout.iter().map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}"))).collect::<Result<_>>()?;
    // The summary is the last line, as the README says (goroutines first, as Go's own dump).
    let summary = lines.last().ok_or_else(|| anyhow!("no output:\n{out}"))?;
    ensure!(summary["kind"] == "summary", "last line is not the summary: {summary}");
    ensure!(summary["pid"] == c.host_pid, "summary pid: {summary}");
    ensure!(summary["go_version"] == fixture.go_version.as_str(), "summary go_version: {summary}");
    ensure!(summary["exe"].as_str().is_some_and(|e| e.starts_with(&c.exe_in_ns.display().to_string())), "summary exe: {summary}");
    let stats = &summary["stats"];
    ensure!(stats["invalid"] == 0 && stats["inconsistent"] == 0, "stats: {stats}");
    let main_goid = c.start["main_goid"].as_u64().context("main_goid")?;
    let main = lines
        .iter()
        .find(|g| g["kind"] == "goroutine" && g["goid"] == main_goid)
        .ok_or_else(|| anyhow!("goroutine {main_goid} (main) missing from the dump:\n{out}"))?;
    ensure!(
        main["stack"].as_array().is_some_and(|s| s.iter().any(|f| f["function"] == "main.main")),
        "main.main not in goroutine {main_goid}'s stack: {main}"
    );
    ensure!(
        lines.len() - 1 == summary["goroutines"].as_u64().unwrap_or(0) as usize,
        "{} goroutine lines, summary says {}",
        lines.len() - 1,
        summary["goroutines"]
    );
    Ok(())
}

/// One variant: isolation facts, inspect, dump, then the attach scenario, all by host pid.
fn run_contained(fixture: &GoFixture, delete_binary: bool) -> Result<String> {
    let t = Instant::now();
    let (child, c) = contained(fixture)?;
    let _cleanup = RemoveDir(c.mountpoint.clone());
    let run = check_contained(fixture, child, &c, delete_binary)?;
    Ok(format!(
        "{} (host pid {}, pid {} in its namespace{}): {} events, attach {:.2}s, total {:.2}s",
        fixture.label(),
        c.host_pid,
        c.start["pid"],
        if delete_binary { ", binary deleted" } else { "" },
        run.events.len(),
        run.attach_time.as_secs_f64(),
        t.elapsed().as_secs_f64()
    ))
}

/// Takes the `unshare` process, so it (and the fixture) is gone before the directory is removed.
fn check_contained(
    fixture: &GoFixture,
    child: ChildGuard,
    c: &Contained,
    delete_binary: bool,
) -> Result<goscope_tests::scenario::Chanrecv10Run> {
    if delete_binary {
        // /proc/PID/root is the process's own root, in its mount namespace: the host reaches the
        // tmpfs through it.
        let inside = Path::new(&format!("/proc/{}/root", c.host_pid)).join(c.exe_in_ns.strip_prefix("/")?);
        fs::remove_file(&inside).with_context(|| format!("removing {}", inside.display()))?;
    }
    check_isolation(c, delete_binary).context("namespace setup")?;
    check_inspect(fixture, c, delete_binary).context("goscope inspect --pid")?;
    check_dump(fixture, c).context("goscope dump --pid")?;
    run_chanrecv10_started(fixture, child, &c.start, c.host_pid)
}

fn all_variants(delete_binary: bool) -> Result<()> {
    if !require_bpf()? || !require_unshare() {
        return Ok(());
    }
    let specs: Vec<_> = Variant::ALL.iter().map(|&v| (FIXTURE, None, v)).collect();
    let mut failures = Vec::new();
    for built in GoFixture::build_many(&specs) {
        let fixture = built?;
        match run_contained(&fixture, delete_binary) {
            Ok(line) => eprintln!("ok: {line}"),
            Err(e) => failures.push(format!("{}: {e:#}", fixture.label())),
        }
    }
    if !failures.is_empty() {
        bail!("{} of {} variant(s) failed:\n\n{}", failures.len(), specs.len(), failures.join("\n\n"));
    }
    Ok(())
}

/// The binary exists only on a tmpfs of the fixture's own mount namespace.
#[test]
fn private_mount_and_pid_namespace() -> Result<()> {
    all_variants(false)
}

/// Same, and the binary is unlinked after the fixture started ("<path> (deleted)").
#[test]
fn binary_deleted_after_start() -> Result<()> {
    all_variants(true)
}
