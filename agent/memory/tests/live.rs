//! Real Go processes, Go 1.19 to 1.27: the stripped-binary heuristic for `runtime.allgs` finds
//! what the symbol table says, and a snapshot sees a goroutine blocked on a channel.
//!
//! Needs the `go` command (`$GO` or on PATH; toolchains come through the module proxy with
//! GOTOOLCHAIN). Without it the tests print SKIP, or fail under CI=true.
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;

use goscope_inspect::GoBinary;
use goscope_memory::{AllgsSource, GStatus, ProcessMemory, StackEnd, locate_allgs, locate_allgs_from_code, snapshot};
use std::collections::HashSet;

const VERSIONS: &[&str] = &["1.19.13", "1.20.14", "1.21.13", "1.22.12", "1.23.12", "1.24.13", "1.25.14", "1.26.11", "1.27.4"];

const PROGRAM: &str = r#"package main

import (
	"fmt"
	"time"
)

//go:noinline
func blocker(c chan int) { c <- 1 }

func main() {
	c := make(chan int)
	go blocker(c)
	time.Sleep(50 * time.Millisecond)
	fmt.Printf("%p\n", c)
	time.Sleep(time.Hour)
}
"#;

fn skip_or_fail(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {reason}");
    }
    eprintln!("SKIP: {reason}");
}

fn go() -> Command {
    Command::new(std::env::var_os("GO").unwrap_or_else(|| "go".into()))
}

/// A busy program: goroutines ping-ponging over channels at varying stack depths (stacks grow
/// and are copied), selects with timeouts, allocation (GC), goroutines exiting and starting.
const BUSY: &str = r#"package main

import (
	"fmt"
	"time"
)

//go:noinline
func deep(n int, c chan int, v int) int {
	if n == 0 {
		c <- v
		return <-c
	}
	var pad [64]byte
	pad[n%64] = byte(n)
	return deep(n-1, c, v) + int(pad[n%64])
}

func pinger(c chan int, i int) {
	for {
		deep(i%40, c, i)
	}
}

func ponger(c chan int) {
	var garbage [][]byte
	for {
		v := <-c
		garbage = append(garbage, make([]byte, 1024))
		if len(garbage) > 100 {
			garbage = nil
		}
		c <- v
	}
}

func main() {
	for i := 0; i < 200; i++ {
		c := make(chan int)
		go pinger(c, i)
		go ponger(c)
	}
	go func() {
		for {
			done := make(chan struct{})
			for i := 0; i < 50; i++ {
				go func() {
					select {
					case <-done:
					case <-time.After(time.Millisecond):
					}
				}()
			}
			close(done)
			time.Sleep(time.Millisecond)
		}
	}()
	fmt.Println("ready")
	time.Sleep(time.Hour)
}
"#;

/// Builds the program with Go `version`; `pie` adds -buildmode=pie.
fn build(version: &str, pie: bool) -> Result<PathBuf, String> {
    build_source(version, pie, "live", PROGRAM)
}

fn build_source(version: &str, pie: bool, name: &str, source: &str) -> Result<PathBuf, String> {
    // One directory per build: builds run in parallel.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("memory-{name}-{version}{}", if pie { "-pie" } else { "" }));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("go.mod"), "module example.com/live\n\ngo 1.19\n").map_err(|e| e.to_string())?;
    std::fs::write(dir.join("main.go"), source).map_err(|e| e.to_string())?;
    let exe = dir.join(if pie { format!("{name}-pie") } else { name.to_string() });
    let mut cmd = go();
    cmd.args(["build", "-o"]).arg(&exe);
    if pie {
        cmd.arg("-buildmode=pie");
    }
    let out = cmd
        .arg(".")
        .current_dir(&dir)
        .env("GOTOOLCHAIN", format!("go{version}"))
        .env("GOFLAGS", "-mod=mod -buildvcs=false")
        .env("GO111MODULE", "on")
        .env("GOWORK", "off")
        .env("CGO_ENABLED", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running go: {e}"))?;
    if !out.status.success() {
        return Err(format!("go build (go{version}): {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(exe)
}

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runtime minus link-time address: start of the mapping at file offset 0 minus the first
/// PT_LOAD's `p_vaddr - p_offset`.
fn load_bias(pid: u32, exe: &Path, elf: &[u8]) -> u64 {
    let rd = |o: usize, n: usize| {
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&elf[o..o + n]);
        u64::from_le_bytes(v)
    };
    if rd(0x10, 2) != 3 {
        return 0; // ET_EXEC
    }
    let (phoff, phentsize, phnum) = (rd(0x20, 8) as usize, rd(0x36, 2) as usize, rd(0x38, 2) as usize);
    let ph = (0..phnum).map(|i| phoff + i * phentsize).find(|&ph| rd(ph, 4) == 1).expect("PT_LOAD");
    let link = rd(ph + 0x10, 8) - rd(ph + 8, 8);
    let exe = exe.canonicalize().expect("exe path");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 6 && Path::new(f[5]) == exe && u64::from_str_radix(f[2], 16) == Ok(0) {
            return u64::from_str_radix(f[0].split('-').next().unwrap(), 16).unwrap() - link;
        }
    }
    panic!("{} not mapped in {pid}", exe.display());
}

/// Runs `exe`, checks allgs location (symtab vs code) and one snapshot. Returns a line for the log.
fn check(exe: &Path) -> Result<String, String> {
    let bytes = std::fs::read(exe).map_err(|e| e.to_string())?;
    let binary = GoBinary::from_bytes(&bytes).map_err(|e| e.to_string())?;
    let mut child = Command::new(exe).stdout(Stdio::piped()).spawn().map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().expect("piped");
    let child = Running(child);
    let pid = child.0.id();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
    let chan = u64::from_str_radix(line.trim().trim_start_matches("0x"), 16).map_err(|e| format!("{line:?}: {e}"))?;
    let bias = load_bias(pid, exe, &bytes);
    let mem = ProcessMemory::new(pid).map_err(|e| e.to_string())?;

    let sym = locate_allgs(&mem, &binary, bias).map_err(|e| e.to_string())?;
    if sym.source != AllgsSource::Symtab {
        return Err(format!("expected symbols in {}", exe.display()));
    }
    let code = locate_allgs_from_code(&mem, &binary, bias).map_err(|e| e.to_string())?;
    if (code.allgs, code.allglen) != (sym.allgs, sym.allglen) {
        return Err(format!(
            "allgadd heuristic found allgs={:#x} allglen={:?}, the symbol table says allgs={:#x} allglen={:?}",
            code.allgs, code.allglen, sym.allgs, sym.allglen
        ));
    }
    // main may still be returning from its write(2) of the line we just read: wait for its sleep.
    let mut snap = snapshot(&mem, &binary, bias).map_err(|e| e.to_string())?;
    for _ in 0..200 {
        if snap.goroutine(1).is_some_and(|g| g.wait_reason.as_deref() == Some("sleep")) {
            break;
        }
        thread::sleep(std::time::Duration::from_millis(10));
        snap = snapshot(&mem, &binary, bias).map_err(|e| e.to_string())?;
    }
    let g = snap
        .goroutines
        .iter()
        .find(|g| g.stack.iter().any(|f| f.location.as_ref().is_some_and(|l| l.function == "main.blocker")))
        .ok_or_else(|| format!("no goroutine in main.blocker: {:#?}", snap.goroutines))?;
    if g.status != GStatus::Waiting || g.wait_reason.as_deref() != Some("chan send") || g.channels != [chan] {
        return Err(format!("blocker goroutine: {g:#?}, expected chan send on {chan:#x}"));
    }
    if g.stack_end != StackEnd::Goexit || g.created_by.as_ref().is_none_or(|c| c.function != "main.main") {
        return Err(format!("blocker goroutine: {g:#?}"));
    }
    let main = snap.goroutine(1).ok_or("no goroutine 1")?;
    if main.wait_reason.as_deref() != Some("sleep") {
        return Err(format!("goroutine 1: {main:#?}"));
    }
    Ok(format!(
        "{}: allgs {:#x} allglen {:#x}, {} goroutines, {} bytes",
        exe.display(),
        sym.allgs,
        sym.allglen.unwrap_or(0),
        snap.goroutines.len(),
        snap.stats.bytes_read
    ))
}

#[test]
fn allgadd_heuristic_matches_symbols_and_snapshot_sees_a_blocked_goroutine() {
    if go().arg("version").stdin(Stdio::null()).output().is_err() {
        return skip_or_fail("the go command is not available");
    }
    let results: Vec<(String, Result<String, String>)> = thread::scope(|s| {
        let handles: Vec<_> = VERSIONS
            .iter()
            .flat_map(|v| [(*v, false), (*v, true)])
            .map(|(v, pie)| {
                (format!("go{v}{}", if pie { " pie" } else { "" }), s.spawn(move || build(v, pie).and_then(|exe| check(&exe))))
            })
            .collect();
        handles.into_iter().map(|(l, h)| (l, h.join().unwrap_or_else(|_| Err("panicked".into())))).collect()
    });
    let mut failures = Vec::new();
    for (label, r) in results {
        match r {
            Ok(line) => eprintln!("ok {label}: {line}"),
            Err(e) if e.contains("Permission") || e.contains("CAP_SYS_PTRACE") => return skip_or_fail(&e),
            Err(e) => failures.push(format!("{label}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Snapshots of a process that never stops changing: whatever is reported must be coherent.
#[test]
fn busy_process_snapshots_are_never_garbage() {
    if go().arg("version").stdin(Stdio::null()).output().is_err() {
        return skip_or_fail("the go command is not available");
    }
    let exe = build_source("1.26.11", false, "busy", BUSY).expect("build");
    let bytes = std::fs::read(&exe).unwrap();
    let binary = GoBinary::from_bytes(&bytes).unwrap();
    let mut child = Command::new(&exe).stdout(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Running(child);
    BufReader::new(stdout).read_line(&mut String::new()).unwrap();
    let mem = match ProcessMemory::new(child.0.id()) {
        Ok(m) => m,
        Err(e) => return skip_or_fail(&e.to_string()),
    };
    let (mut total, mut retried, mut inconsistent, mut invalid, mut walked) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for _ in 0..100 {
        let snap = snapshot(&mem, &binary, 0).expect("snapshot");
        let mut ids = HashSet::new();
        for g in &snap.goroutines {
            assert!(g.goid > 0 && ids.insert(g.goid), "bad or duplicate goid {}", g.goid);
            assert!(!g.status.is_dead());
            let names: Vec<&str> = g.stack.iter().map(|f| f.location.as_ref().map_or("?", |l| l.function.as_str())).collect();
            if g.stack_end == StackEnd::Goexit {
                walked += 1;
                assert_eq!(names.last(), Some(&"runtime.goexit"), "goroutine {}: {names:?}", g.goid);
            }
            // Parked goroutines resume in gopark; a goroutine made _Gwaiting while it runs on the
            // system stack (GC assist, stack scan of itself) resumes in systemstack_switch.
            if g.status == GStatus::Waiting && !g.stack.is_empty() {
                assert!(
                    matches!(names[0], "runtime.gopark" | "runtime.systemstack_switch"),
                    "goroutine {} [{:?}]: {names:?}",
                    g.goid,
                    g.wait_reason
                );
            }
            if g.status == GStatus::Running {
                assert!(g.stack.is_empty());
            }
            if matches!(g.wait_reason.as_deref(), Some("chan send" | "chan receive")) && g.stack_end == StackEnd::Goexit {
                assert_eq!(g.channels.len(), 1, "goroutine {}: {g:?}", g.goid);
            }
        }
        total += snap.goroutines.len() as u64;
        retried += snap.stats.retried;
        inconsistent += snap.stats.inconsistent;
        invalid += snap.stats.invalid;
    }
    eprintln!(
        "100 snapshots of a busy process: {total} goroutines reported ({walked} complete stacks), {retried} read twice, {inconsistent} reported without stack, {invalid} skipped"
    );
}
