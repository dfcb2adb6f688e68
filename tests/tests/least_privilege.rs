//! Least privilege: goscope works as a non-root user (nobody) holding exactly CAP_BPF, CAP_PERFMON
//! and CAP_SYS_PTRACE — the capabilities deploy/ grants, and no CAP_SYS_ADMIN — and, with any one
//! of them taken away, fails (or warns, for the node agent) naming the one that is missing.
//!
//! The user and capabilities are set with util-linux `setpriv` (ambient capabilities, so they
//! survive the exec of goscope). The systemd units are checked with `systemd-analyze verify`.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use goscope_tests::{ChildGuard, GoFixture, Goscope, Variant, goscope_bin, require_bpf, run_goscope_as, workspace_root};
use serde_json::Value;

/// What deploy/ grants, in setpriv's spelling.
const NEEDED: [&str; 3] = ["bpf", "perfmon", "sys_ptrace"];
const NOBODY: &str = "65534";

/// `setpriv` arguments that run the rest of the command as nobody with exactly `caps`.
fn as_nobody_with(caps: &[&str]) -> Vec<String> {
    let set = std::iter::once("-all".to_string()).chain(caps.iter().map(|c| format!("+{c}"))).collect::<Vec<_>>().join(",");
    vec![
        "setpriv".into(),
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
        format!("--bounding-set={set}"),
    ]
}

fn without(cap: &str) -> Vec<&'static str> {
    NEEDED.iter().copied().filter(|c| *c != cap).collect()
}

fn cap_name(cap: &str) -> String {
    format!("CAP_{}", cap.to_uppercase())
}

/// Root with setpriv at hand, and a goscope binary nobody can execute; else SKIP (panics under
/// CI=true, like require_bpf).
fn prerequisites() -> Result<bool> {
    if !require_bpf()? {
        return Ok(false);
    }
    let missing = Command::new("setpriv").arg("--version").output().map_or(true, |o| !o.status.success());
    if missing {
        let reason = "setpriv (util-linux) is not installed";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but {reason}");
        }
        eprintln!("SKIP: {reason}");
        return Ok(false);
    }
    let bin = goscope_bin()?;
    let status = Command::new("setpriv")
        .args(&as_nobody_with(&[])[1..])
        .arg("test")
        .arg("-x")
        .arg(&bin)
        .status()
        .context("running setpriv")?;
    ensure!(status.success(), "nobody cannot execute {}: every directory above it must be world-searchable", bin.display());
    Ok(true)
}

fn deadlocked() -> Result<(ChildGuard, Value)> {
    let fixture = GoFixture::build("deadlocked", None, Variant::Plain)?;
    let mut child = fixture.spawn(&[])?;
    let info = child.expect_json("deadlocked", Duration::from_secs(30))?;
    Ok((child, info))
}

fn is_deadlock(v: &Value, pid: u32) -> bool {
    v["kind"] == "finding" && v["type"] == "deadlock" && v["pid"].as_u64() == Some(u64::from(pid))
}

#[test]
fn attach_works_with_only_bpf_perfmon_sys_ptrace_and_names_each_missing_one() -> Result<()> {
    if !prerequisites()? {
        return Ok(());
    }
    let (target, _) = deadlocked()?;
    let pid = target.pid();
    let prefix = as_nobody_with(&NEEDED);
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let mut goscope = Goscope::attach_as(&prefix, pid, &["--no-events", "--block-threshold", "1s"])?;
    goscope.wait_attached(Duration::from_secs(60)).context("attach as nobody with CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE")?;
    goscope
        .events_until(|v| is_deadlock(v, pid), Duration::from_secs(60))
        .context("the deadlock, found by goscope running as nobody")?;
    goscope.stop(Duration::from_secs(30))?;

    let pid_arg = pid.to_string();
    for cap in NEEDED {
        let prefix = as_nobody_with(&without(cap));
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        let out = run_goscope_as(&prefix, &["attach", "--pid", &pid_arg, "--duration", "5s"], Duration::from_secs(60))?;
        ensure!(!out.status.success(), "attach without {} succeeded:\n{out}", cap_name(cap));
        let wanted = format!("lacks {}", cap_name(cap));
        ensure!(out.stderr.contains(&wanted), "attach without {}: stderr does not say {wanted:?}:\n{out}", cap_name(cap));
        ensure!(!out.stderr.contains("panicked"), "{out}");
    }
    Ok(())
}

#[test]
fn dump_needs_only_sys_ptrace() -> Result<()> {
    if !prerequisites()? {
        return Ok(());
    }
    let (target, info) = deadlocked()?;
    let pid = target.pid().to_string();
    let prefix = as_nobody_with(&["sys_ptrace"]);
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let out = run_goscope_as(&prefix, &["dump", "--pid", &pid, "--format", "json"], Duration::from_secs(60))?;
    ensure!(out.status.success(), "dump as nobody with CAP_SYS_PTRACE:\n{out}");
    let goid = info["deadlocked"][0]["goid"].as_u64().context("fixture line without deadlocked[0].goid")?;
    ensure!(out.stdout.iter().any(|l| l.contains(&format!("\"goid\":{goid},"))), "goroutine {goid} not in the dump:\n{out}");

    let prefix = as_nobody_with(&[]);
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let out = run_goscope_as(&prefix, &["dump", "--pid", &pid], Duration::from_secs(60))?;
    ensure!(!out.status.success() && out.stderr.contains("lacks CAP_SYS_PTRACE"), "dump without CAP_SYS_PTRACE:\n{out}");
    Ok(())
}

#[test]
fn run_works_with_only_the_needed_capabilities_and_warns_naming_a_missing_one() -> Result<()> {
    if !prerequisites()? {
        return Ok(());
    }
    let (target, _) = deadlocked()?;
    let pid = target.pid();
    let args = ["--match", "deadlocked", "--scan-every", "500ms", "--block-threshold", "1s"];
    let prefix = as_nobody_with(&NEEDED);
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let mut goscope = Goscope::run_as(&prefix, &args)?;
    goscope
        .events_until(|v| is_deadlock(v, pid), Duration::from_secs(60))
        .context("run as nobody with the needed capabilities")?;
    goscope.stop(Duration::from_secs(30))?;

    for cap in NEEDED {
        let prefix = as_nobody_with(&without(cap));
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        let mut goscope = Goscope::run_as(&prefix, &args)?;
        let wanted = format!("lacks {}", cap_name(cap));
        let named = |v: &Value| v["kind"] == "warning" && v["message"].as_str().is_some_and(|m| m.contains(&wanted));
        goscope.events_until(named, Duration::from_secs(30)).with_context(|| format!("run without {}", cap_name(cap)))?;
        goscope.stop(Duration::from_secs(30))?;
    }
    Ok(())
}

/// A copy of deploy/systemd with goscope's path replaced by the built binary (verify checks the
/// executable exists) and a stand-in for the unit goscope@.service watches.
fn units_for_verify(dir: &Path) -> Result<Vec<PathBuf>> {
    let bin = goscope_bin()?;
    let source = workspace_root().join("deploy/systemd");
    fs::create_dir_all(dir)?;
    let mut units = Vec::new();
    for (file, instance) in [("goscope.service", "goscope.service"), ("goscope@.service", "goscope@demo.service")] {
        let text = fs::read_to_string(source.join(file)).with_context(|| format!("reading deploy/systemd/{file}"))?;
        ensure!(!text.contains("CAP_SYS_ADMIN"), "deploy/systemd/{file} asks for CAP_SYS_ADMIN");
        let text = text.replace("/usr/local/bin/goscope", &bin.to_string_lossy());
        fs::write(dir.join(file), &text)?;
        if file != instance {
            fs::write(dir.join(instance), &text)?;
        }
        units.push(dir.join(instance));
    }
    fs::write(dir.join("demo.service"), "[Service]\nExecStart=/bin/sleep infinity\n")?;
    units.push(dir.join("demo.service"));
    Ok(units)
}

#[test]
fn systemd_units_verify_clean() -> Result<()> {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("SKIP: systemd-analyze is not installed");
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("goscope-units-{}", std::process::id()));
    let units = units_for_verify(&dir)?;
    let out = Command::new("systemd-analyze").arg("verify").args(&units).output().context("running systemd-analyze verify")?;
    let _ = fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.trim().is_empty() {
        bail!("systemd-analyze verify ({}):\n{stderr}", out.status);
    }
    Ok(())
}

#[test]
fn kubernetes_manifest_asks_for_no_admin_privilege() -> Result<()> {
    let manifest = fs::read_to_string(workspace_root().join("deploy/kubernetes/daemonset.yaml"))?;
    let lines: Vec<&str> = manifest.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    for forbidden in ["SYS_ADMIN", "privileged: true", "allowPrivilegeEscalation: true"] {
        ensure!(!lines.iter().any(|l| l.contains(forbidden)), "daemonset.yaml has {forbidden:?}");
    }
    for wanted in ["drop: [ALL]", "add: [BPF, PERFMON, SYS_PTRACE]", "readOnlyRootFilesystem: true", "type: RuntimeDefault"] {
        ensure!(lines.iter().any(|l| l.contains(wanted)), "daemonset.yaml lacks {wanted:?}");
    }
    Ok(())
}
