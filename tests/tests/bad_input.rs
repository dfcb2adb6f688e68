//! goscope refuses bad targets the way the contract says: one line on stderr starting with
//! `goscope: `, a non-zero exit, no panic, no backtrace — and survives a target that dies while it
//! attaches.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use goscope_tests::goscope::kind;
use goscope_tests::{ChildGuard, GoFixture, Goscope, RunOutput, Variant, require_bpf, run_goscope};

/// Checks a refused attach; `what` labels the failure.
fn assert_clean_error(what: &str, out: &RunOutput) -> Result<String> {
    ensure!(!out.status.success(), "{what}: expected a non-zero exit\n{out}");
    ensure!(out.status.code().is_some(), "{what}: goscope died of a signal, expected an exit code\n{out}");
    ensure!(
        !out.stderr.contains("panicked") && !out.stderr.contains("stack backtrace") && !out.stderr.contains("RUST_BACKTRACE"),
        "{what}: goscope panicked\n{out}"
    );
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    ensure!(lines.len() == 1, "{what}: expected exactly one stderr line, observed {}\n{out}", lines.len());
    let line = lines[0];
    ensure!(line.starts_with("goscope: "), "{what}: stderr must start with \"goscope: \"\n{out}");
    ensure!(
        !out.stdout.iter().any(|l| l.contains("\"attached\"")),
        "{what}: goscope printed an attached line before failing\n{out}"
    );
    Ok(line.to_string())
}

fn nonexistent_pid() -> u32 {
    // A pid above pid_max can never exist.
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(4_194_305, |max| max + 1)
}

#[test]
fn nonexistent_pid_is_a_clean_error() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let pid = nonexistent_pid().to_string();
    let out = run_goscope(&["attach", "--pid", &pid, "--format", "json"], Duration::from_secs(30))?;
    let msg = assert_clean_error(&format!("attach --pid {pid} (above pid_max)"), &out)?;
    eprintln!("nonexistent pid: {msg}");
    Ok(())
}

#[test]
fn reaped_child_pid_is_a_clean_error() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let mut child = Command::new("true").spawn().context("spawning true")?;
    child.wait()?;
    let pid = child.id();
    if Path::new(&format!("/proc/{pid}")).exists() {
        eprintln!("note: pid {pid} was already reused; nothing to test");
        return Ok(());
    }
    let out = run_goscope(&["attach", "--pid", &pid.to_string(), "--format", "json"], Duration::from_secs(30))?;
    let msg = assert_clean_error(&format!("attach --pid {pid} (a reaped child)"), &out)?;
    eprintln!("reaped child pid: {msg}");
    Ok(())
}

#[test]
fn non_go_process_is_a_clean_error() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    let sleep = ChildGuard::spawn("sleep 30", cmd)?;
    let pid = sleep.pid().to_string();
    for format in ["json", "text"] {
        let out = run_goscope(&["attach", "--pid", &pid, "--format", format], Duration::from_secs(30))?;
        let msg = assert_clean_error(&format!("attach --pid {pid} --format {format} (sleep, not Go)"), &out)?;
        let body = msg.trim_start_matches("goscope: ").to_lowercase();
        let mentions_go = body.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| w == "go" || w == "golang");
        ensure!(mentions_go, "attach to sleep: the message should say the target is not a Go program: {msg:?}");
        eprintln!("non-Go process ({format}): {msg}");
    }
    Ok(())
}

/// The target dies (SIGKILL, or a clean exit) at various moments while goscope attaches. Whatever
/// the moment, goscope ends by itself with either a clean error (one `goscope: ` stderr line,
/// non-zero) or a clean end (exit 0, `summary` last) — never a panic, never a hang.
#[test]
fn target_exiting_during_attach_is_handled() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let fixture = GoFixture::build("chanrecv10", None, Variant::Plain)?;
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for delay_ms in [0u64, 2, 10, 30, 100, 300] {
        for kill in [true, false] {
            let how = format!("{} after {delay_ms}ms", if kill { "SIGKILL" } else { "exit(0)" });
            let mut target = fixture.spawn(&[])?;
            target.expect_json("main_goid", Duration::from_secs(20))?;
            let mut gs = Goscope::attach(target.pid(), &["--duration", "20s"])?;
            std::thread::sleep(Duration::from_millis(delay_ms));
            if kill {
                target.kill();
            } else {
                target.close_stdin(); // chanrecv10 exits 0 on EOF before "go"
                target.wait_exit(Duration::from_secs(10))?;
            }
            let stop = match gs.wait_end(Duration::from_secs(30)) {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{how}: {e:#}"));
                    continue;
                }
            };
            let stderr_lines: Vec<&str> = stop.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            let problem = if stop.stderr.contains("panicked") || stop.stderr.contains("stack backtrace") {
                Some("goscope panicked".to_string())
            } else if stop.status.success() {
                match gs.events().last() {
                    Some(last) if kind(last) == "summary" => None,
                    other => Some(format!("exit 0 without a final summary line (last line {other:?})")),
                }
            } else if stop.status.code().is_none() {
                Some(format!("goscope died of a signal: {}", stop.status))
            } else if stderr_lines.len() != 1 || !stderr_lines[0].starts_with("goscope: ") {
                Some("a failing exit needs exactly one stderr line starting with \"goscope: \"".to_string())
            } else {
                None
            };
            let outcome = if stop.status.success() {
                "exit 0 + summary".to_string()
            } else {
                format!("{}: {}", stop.status, stderr_lines.last().unwrap_or(&""))
            };
            match problem {
                Some(p) => failures.push(format!(
                    "{how}: {p}; status {}; stdout {:?}; stderr:\n{}",
                    stop.status,
                    gs.events(),
                    stop.stderr
                )),
                None => outcomes.push(format!("{how}: {outcome}")),
            }
        }
    }
    for o in &outcomes {
        eprintln!("{o}");
    }
    ensure!(failures.is_empty(), "{} of 12 cases failed:\n{}", failures.len(), failures.join("\n"));
    Ok(())
}
