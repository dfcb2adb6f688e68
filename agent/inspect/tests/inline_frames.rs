//! `GoBinary::symbolize_frames` against the Go runtime's own expansion of inlined calls.
//!
//! tests/testdata/inline prints `runtime.Callers` stacks that go through inlined calls (in the
//! same file, another file, a method, a closure, and sync.(*Once).Do from the standard library)
//! together with `runtime.CallersFrames` of each. `runtime.Callers` returns one PC per *logical*
//! frame (for an inlined frame a made-up PC, `entry + parentPc + 1`); the real return addresses
//! are the first PC of each physical frame. The test walks the list as a stack walker sees it:
//! `symbolize_frames(pc - 1)` on a return address gives k logical frames, the next k-1 PCs are
//! the runtime's entries for the same physical frame, the PC after them is the next return
//! address. The concatenated expansion must equal `CallersFrames` (function, file, line), for
//! plain, stripped and PIE builds of Go 1.19, 1.21 and the installed Go (plus 1.20 and 1.27 when
//! their toolchains are in the module cache or GOSCOPE_TEST_ALL_GO=1).
//!
//! If `go` is missing the tests print why and skip; with `CI=true` they fail instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use goscope_inspect::{Frame, GoBinary};

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn skip(reason: &str) {
    if in_ci() {
        panic!("CI=true and a Go fixture is unavailable: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/inline")
}

fn go(toolchain: &str) -> Command {
    let mut c = Command::new("go");
    c.env("GOTOOLCHAIN", toolchain)
        .env("GOWORK", "off")
        .env("GOFLAGS", "-buildvcs=false")
        .env("CGO_ENABLED", "0")
        .env_remove("GOARCH")
        .env_remove("GOOS")
        .current_dir(source_dir());
    c
}

/// Builds the program (cached under `<target>/go-fixtures/inline-<version>-<hash>/<variant>`).
fn build(toolchain: &str, variant: &str, flags: &[&str]) -> Result<PathBuf, String> {
    let out = go(toolchain).args(["env", "GOVERSION"]).output().map_err(|e| format!("cannot run `go` ({e})"))?;
    if !out.status.success() {
        return Err(format!("GOTOOLCHAIN={toolchain} go env GOVERSION: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp
        .parent()
        .map(|p| p.join("go-fixtures"))
        .unwrap_or_else(|| tmp.join("go-fixtures"))
        .join(format!("inline-{version}-{}", common::source_hash(&source_dir())));
    let bin = dir.join(variant);
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let part = dir.join(format!(".{variant}.tmp{}", std::process::id()));
    let out =
        go(toolchain).arg("build").args(flags).arg("-o").arg(&part).arg(".").output().map_err(|e| format!("go build: {e}"))?;
    if !out.status.success() {
        return Err(format!("go build ({version}, {variant}): {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    std::fs::rename(&part, &bin).map_err(|e| format!("rename: {e}"))?;
    Ok(bin)
}

#[derive(Debug)]
struct Stack {
    name: String,
    pcs: Vec<u64>,
    /// (function, file, line) from runtime.CallersFrames.
    frames: Vec<(String, String, u32)>,
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Runs the program: (runtime address of main.main, stacks).
fn run(bin: &Path) -> (u64, Vec<Stack>) {
    let out = Command::new(bin).output().unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(out.status.success(), "{}: {out:?}", bin.display());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut main_entry = 0;
    let mut stacks: Vec<Stack> = Vec::new();
    for line in text.lines() {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "main_entry" => main_entry = hex(rest),
            "stack" => stacks.push(Stack { name: rest.to_string(), pcs: Vec::new(), frames: Vec::new() }),
            "pcs" => stacks.last_mut().unwrap().pcs = rest.split(' ').map(hex).collect(),
            "frame" => {
                let f: Vec<&str> = rest.split('\t').collect();
                let frame = (f[0].to_string(), f[1].to_string(), f[2].parse().unwrap());
                stacks.last_mut().unwrap().frames.push(frame);
            }
            _ => {}
        }
    }
    assert!(main_entry != 0 && stacks.len() == 3, "{text}");
    (main_entry, stacks)
}

fn key(f: &Frame) -> (String, String, u32) {
    (f.function.clone(), f.file.clone(), f.line)
}

/// Checks every stack of one build; returns how many frames were inlined.
fn check(bin: &Path, label: &str) -> usize {
    let b = GoBinary::open(bin).unwrap_or_else(|e| panic!("{label}: {e}"));
    assert!(b.gofunc().is_some(), "{label}: inline tree base not found; notes {:?}", b.support().notes);
    let (main_rt, stacks) = run(bin);
    let main_link = b.function("main.main").expect("main.main").entry;
    let bias = main_rt.wrapping_sub(main_link);
    assert!(b.pie() || bias == 0, "{label}: bias {bias:#x} in a non-PIE binary");
    let mut inlined = 0;
    for s in &stacks {
        let mut ours: Vec<(String, String, u32)> = Vec::new();
        let mut i = 0;
        while i < s.pcs.len() {
            let pc = s.pcs[i].wrapping_sub(bias) - 1;
            let frames = b.symbolize_frames(pc);
            assert!(!frames.is_empty(), "{label} {}: nothing at {pc:#x}", s.name);
            // The physical frame, as symbolize() has it: same function, entry, innermost line.
            let phys = b.symbolize(pc).expect("symbolize");
            let last = frames.last().unwrap();
            assert_eq!((phys.function.as_str(), phys.entry), (last.function.as_str(), last.entry), "{label}");
            assert_eq!((&phys.file, phys.line), (&frames[0].file, frames[0].line), "{label}");
            assert!(frames.iter().all(|f| f.entry == phys.entry), "{label}: {frames:?}");
            // The runtime's made-up PCs of the inlined callers expand to the rest of the list.
            for (k, f) in frames.iter().enumerate().skip(1) {
                let Some(&fake) = s.pcs.get(i + k) else { break };
                let rest = b.symbolize_frames(fake.wrapping_sub(bias) - 1);
                assert_eq!(
                    rest.iter().map(key).collect::<Vec<_>>(),
                    frames[k..].iter().map(key).collect::<Vec<_>>(),
                    "{label} {}: the runtime's PC {fake:#x} for {}",
                    s.name,
                    f.function
                );
            }
            inlined += frames.len() - 1;
            i += frames.len();
            ours.extend(frames.iter().map(key));
        }
        assert_eq!(ours, s.frames, "{label} {}: symbolize_frames vs runtime.CallersFrames", s.name);
        let want: &[&str] = match s.name.as_str() {
            "outer" => &["main.inl2", "main.inl1", "main.(*T).method", "main.outer"],
            "closure" => &["main.inl1", "main.viaClosure.func1", "main.viaClosure"],
            _ => &["sync.(*Once).doSlow", "sync.(*Once).Do", "main.viaOnce"],
        };
        let names: Vec<&str> = ours.iter().map(|f| f.0.as_str()).collect();
        assert!(names.windows(want.len()).any(|w| w == want), "{label} {}: {names:?} lacks {want:?}", s.name);
    }
    inlined
}

fn toolchain(tc: &str) {
    let variants: [(&str, &[&str]); 4] = [
        ("plain", &[]),
        ("stripped", &["-ldflags=-s -w"]),
        ("pie", &["-buildmode=pie"]),
        ("pie-stripped", &["-buildmode=pie", "-ldflags=-s -w"]),
    ];
    for (variant, flags) in variants {
        let bin = match build(tc, variant, flags) {
            Ok(b) => b,
            Err(e) => return skip(&e),
        };
        let label = format!("{tc} {variant}");
        let n = check(&bin, &label);
        assert!(n >= 7, "{label}: only {n} inlined frames");
        let b = GoBinary::open(&bin).unwrap();
        // Stripped binaries find gofunc through runtime.firstmoduledata, the others through the
        // go:func.* symbol: both must give the same address.
        assert_eq!(b.gofunc(), b.moduledata_gofunc(), "{label}: gofunc (symbol) vs moduledata.gofunc");
        eprintln!("{label}: ok, {n} inlined frames, gofunc {:#x}", b.gofunc().unwrap_or(0));
    }
}

fn cached(tc: &str) -> bool {
    let Ok(out) = Command::new("go").env("GOTOOLCHAIN", "local").args(["env", "GOMODCACHE"]).output() else {
        return false;
    };
    let cache = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&cache).join(format!("golang.org/toolchain@v0.0.1-{tc}.linux-amd64")).is_dir()
}

#[test]
fn installed_go() {
    toolchain("local");
}

#[test]
fn go1_19() {
    toolchain("go1.19.13");
}

#[test]
fn go1_21() {
    toolchain("go1.21.13");
}

#[test]
fn go1_20_and_1_27_when_available() {
    for tc in ["go1.20.14", "go1.27.4"] {
        if std::env::var("GOSCOPE_TEST_ALL_GO").is_ok_and(|v| v == "1") || cached(tc) {
            toolchain(tc);
        } else {
            eprintln!("{tc}: not cached; set GOSCOPE_TEST_ALL_GO=1 to download and test it");
        }
    }
}
