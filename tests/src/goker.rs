//! The GoKer blocking-bug kernels (real bugs from Kubernetes, etcd, gRPC, CockroachDB, Moby, ...)
//! as Go ships them for its goroutine leak profile tests, run under goscope and scored against the
//! runtime's own verdict.
//!
//! The kernels are not part of this repository: [`build`] copies them from the installed Go's
//! `$GOROOT/src/runtime/testdata/testgoroutineleakprofile/goker/` into a build directory, with our
//! own driver (`tests/fixtures/goker/main.go`) instead of theirs, and builds one binary with
//! `GOEXPERIMENT=goroutineleakprofile`. Each kernel writes `pprof.Lookup("goroutineleak")` when it
//! returns: the goroutines the GC proved unreachable, i.e. whether the bug manifested in this run
//! and which goroutines it leaked. [`Kernel`]s (expected leaks, flakiness) are read from
//! `$GOROOT/src/runtime/goroutineleakprofile_test.go`.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::fixture::{go_command, installed_go_version};
use crate::goscope::{Goscope, kind};
use crate::process::{ChildGuard, Line};

/// What the driver prints after each leak profile (keep in sync with its `marker`).
const PROFILE_MARKER: &str = "goscope-goker: profile written";

/// Environment variable naming the Go release to take the kernels from and build them with
/// (`1.27.4`); the installed Go without it.
pub const GO_ENV: &str = "GOSCOPE_GOKER_GO";

/// The Go release [`GO_ENV`] names, if any.
fn chosen_release() -> Option<String> {
    std::env::var(GO_ENV).ok().map(|v| v.trim().trim_start_matches("go").to_string()).filter(|v| !v.is_empty())
}

/// `go` of the release the kernels come from: [`GO_ENV`]'s, or the installed one.
fn kernel_go() -> Command {
    let mut go = go_command();
    go.env("GOTOOLCHAIN", chosen_release().map_or_else(|| "local".to_string(), |v| format!("go{v}")));
    go
}

/// That release's version (`go1.27.4`).
pub fn kernel_go_version() -> Result<String> {
    match chosen_release() {
        Some(v) => Ok(format!("go{v}")),
        None => installed_go_version(),
    }
}

/// `$GOROOT` of that Go.
fn goroot() -> Result<PathBuf> {
    let out = kernel_go().args(["env", "GOROOT"]).stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("`go env GOROOT` failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// The kernels' directory in the installed Go (Go 1.26 on).
pub fn kernels_dir() -> Result<PathBuf> {
    let dir = goroot()?.join("src/runtime/testdata/testgoroutineleakprofile/goker");
    if !dir.join("README.md").is_file() {
        bail!("{} is missing: the GoKer kernels ship with Go 1.26 and later", dir.display());
    }
    Ok(dir)
}

/// The synchronisation primitive an expected leaked goroutine waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Primitive {
    Channel,
    Select,
    Mutex,
    RwMutex,
    WaitGroup,
    Cond,
}

impl Primitive {
    /// From a wait reason as the runtime test's regexes write it (`sync.(RW)?Mutex.Lock`: either
    /// lock of an RWMutex, so RWMutex).
    fn of(wait_reason: &str) -> Option<Primitive> {
        Some(match wait_reason {
            r if r.starts_with("chan ") => Primitive::Channel,
            r if r.starts_with("select") => Primitive::Select,
            r if r.contains("WaitGroup") => Primitive::WaitGroup,
            r if r.contains("Cond") => Primitive::Cond,
            r if r.contains("RW") => Primitive::RwMutex,
            r if r.contains("Mutex") => Primitive::Mutex,
            _ => return None,
        })
    }
}

/// The bug class a kernel is scored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BugClass {
    Channel,
    Select,
    ChannelContext,
    Mutex,
    RwMutex,
    WaitGroup,
    Cond,
    Mixed,
}

impl BugClass {
    pub const ALL: [BugClass; 8] = [
        BugClass::Channel,
        BugClass::Select,
        BugClass::ChannelContext,
        BugClass::Mutex,
        BugClass::RwMutex,
        BugClass::WaitGroup,
        BugClass::Cond,
        BugClass::Mixed,
    ];

    /// How [`Kernel::class`] derives the class, for reports.
    pub const RULE: &str = "class from the wait reasons of the kernel's expected leaks in goroutineleakprofile_test.go: \
        only chan send/receive -> channel; select (with or without chan send/receive) -> select; either of those in a \
        kernel whose source imports \"context\" -> channel+context; only sync.Mutex.Lock -> mutex; any RWMutex lock \
        (with or without sync.Mutex.Lock) -> RWMutex; only sync.WaitGroup.Wait -> WaitGroup; only sync.Cond.Wait -> \
        cond; primitives of two or more of these groups -> mixed";

    pub fn name(self) -> &'static str {
        match self {
            BugClass::Channel => "channel",
            BugClass::Select => "select",
            BugClass::ChannelContext => "channel+context",
            BugClass::Mutex => "mutex",
            BugClass::RwMutex => "RWMutex",
            BugClass::WaitGroup => "WaitGroup",
            BugClass::Cond => "cond",
            BugClass::Mixed => "mixed",
        }
    }
}

impl fmt::Display for BugClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One leak the runtime test expects of a kernel.
#[derive(Debug, Clone)]
pub struct ExpectedLeak {
    /// The test's regex over `function [wait reason]`.
    pub pattern: String,
    /// The wait reason in it, unescaped (`sync.(RW)?Mutex.Lock` stays a pattern).
    pub wait_reason: String,
}

/// A GoKer kernel the runtime test runs.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The name it registers, and the driver's argument (`Cockroach1055`).
    pub name: String,
    /// `makeTest` (true: the runtime test runs it with GOMAXPROCS=1 and expects its leaks every
    /// time) or `makeFlakyTest`.
    pub deterministic: bool,
    pub expected: Vec<ExpectedLeak>,
    /// Its source imports "context".
    pub uses_context: bool,
}

impl Kernel {
    pub fn class(&self) -> BugClass {
        let primitives: BTreeSet<Primitive> = self.expected.iter().filter_map(|l| Primitive::of(&l.wait_reason)).collect();
        let only = |allowed: &[Primitive]| primitives.iter().all(|p| allowed.contains(p));
        if primitives.is_empty() {
            BugClass::Mixed
        } else if only(&[Primitive::Channel, Primitive::Select]) {
            if self.uses_context {
                BugClass::ChannelContext
            } else if primitives.contains(&Primitive::Select) {
                BugClass::Select
            } else {
                BugClass::Channel
            }
        } else if only(&[Primitive::Mutex]) {
            BugClass::Mutex
        } else if only(&[Primitive::Mutex, Primitive::RwMutex]) {
            BugClass::RwMutex
        } else if only(&[Primitive::WaitGroup]) {
            BugClass::WaitGroup
        } else if only(&[Primitive::Cond]) {
            BugClass::Cond
        } else {
            BugClass::Mixed
        }
    }

    /// The environment the runtime test runs it in.
    fn env(&self) -> Vec<(&'static str, &'static str)> {
        let mut env = vec![("GODEBUG", "asyncpreemptoff=1")];
        if self.deterministic {
            env.push(("GOMAXPROCS", "1"));
        }
        env
    }
}

/// The kernels `goroutineleakprofile_test.go` lists in `gokerTestCases` (commented-out entries
/// excluded), with their expected leaks.
pub fn kernels() -> Result<Vec<Kernel>> {
    let test_file = goroot()?.join("src/runtime/goroutineleakprofile_test.go");
    let text = fs::read_to_string(&test_file).with_context(|| format!("reading {}", test_file.display()))?;
    let block = text
        .split_once("gokerTestCases := []testCase{")
        .and_then(|(_, rest)| rest.split_once("\n\t}\n"))
        .map(|(block, _)| block)
        .with_context(|| format!("no gokerTestCases in {}", test_file.display()))?;
    let sources = kernel_sources()?;
    let mut kernels: Vec<Kernel> = Vec::new();
    for line in block.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
        for (prefix, deterministic) in [("makeTest(\"", true), ("makeFlakyTest(\"", false)] {
            if let Some(name) = line.strip_prefix(prefix).and_then(|r| r.split('"').next()) {
                let source = sources.get(name).with_context(|| format!("no kernel source registers {name}"))?;
                kernels.push(Kernel {
                    name: name.to_string(),
                    deterministic,
                    expected: Vec::new(),
                    uses_context: source.contains("\"context\""),
                });
            }
        }
        // Backquoted regexes: every odd piece between backquotes.
        for pattern in line.split('`').skip(1).step_by(2) {
            let kernel = kernels.last_mut().with_context(|| format!("a leak pattern before any kernel: {line}"))?;
            let wait_reason = pattern
                .rsplit_once("\\[")
                .map(|(_, r)| r.trim_end_matches("\\]").replace('\\', ""))
                .with_context(|| format!("no [wait reason] in {pattern}"))?;
            kernel.expected.push(ExpectedLeak { pattern: pattern.to_string(), wait_reason });
        }
    }
    if kernels.is_empty() {
        bail!("no kernels found in {}", test_file.display());
    }
    Ok(kernels)
}

/// Kernel name → the source of the file that registers it (file names do not always match:
/// Moby25348 is in moby25384.go).
fn kernel_sources() -> Result<BTreeMap<String, String>> {
    let mut sources = BTreeMap::new();
    for entry in fs::read_dir(kernels_dir()?)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "go") {
            continue;
        }
        let text = fs::read_to_string(&path)?;
        for reg in text.split("register(\"").skip(1).chain(text.split("registerInit(\"").skip(1)) {
            if let Some(name) = reg.split('"').next() {
                sources.insert(name.to_string(), text.clone());
            }
        }
    }
    Ok(sources)
}

/// Builds the kernels with our driver into `<target>/goker/<go version>/goker` (rebuilt every
/// time: one `go build`, ~15 s, mostly cached by Go).
pub fn build() -> Result<PathBuf> {
    let kernels = kernels_dir()?;
    let version = kernel_go_version()?;
    let dir = crate::target_dir().join("goker").join(&version);
    let src = dir.join("src");
    let _ = fs::remove_dir_all(&src);
    fs::create_dir_all(&src)?;
    for entry in fs::read_dir(&kernels)? {
        let path = entry?.path();
        let name = path.file_name().context("file name")?;
        if path.extension().is_some_and(|e| e == "go") && name != "main.go" {
            fs::copy(&path, src.join(name))?;
        }
    }
    fs::copy(crate::workspace_root().join("tests/fixtures/goker/main.go"), src.join("main.go"))?;
    fs::write(src.join("go.mod"), "module goker\n\ngo 1.26\n")?;
    let exe = dir.join("goker");
    let mut go = kernel_go();
    // The leak profile is an experiment in Go 1.26 and generally available from 1.27, where the
    // experiment's name is no longer accepted.
    let minor: u32 = version.trim_start_matches("go1.").split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if minor < 27 {
        go.env("GOEXPERIMENT", "goroutineleakprofile");
    }
    let out = go
        .args(["build", "-o"])
        .arg(&exe)
        .arg(".")
        .current_dir(&src)
        .env("GOFLAGS", "-mod=mod -buildvcs=false")
        .env("GOWORK", "off")
        .env("CGO_ENABLED", "0")
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("building the GoKer kernels failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(exe)
}

/// A goroutine the runtime's leak profile lists as leaked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaked {
    pub goid: u64,
    pub wait_reason: String,
    /// The innermost frame in package main (`main.(*Store_cockroach3710).processRaft.func1`).
    pub function: String,
}

/// The leaked goroutines of a `pprof.Lookup("goroutineleak").WriteTo(w, 2)` dump: the stacks
/// whose header says `[<wait reason> (leaked)...]`.
pub fn parse_leak_profile(text: &str) -> Vec<Leaked> {
    let mut leaked = Vec::new();
    for stack in text.split("\n\n") {
        let mut lines = stack.lines().skip_while(|l| !l.starts_with("goroutine "));
        let Some(header) = lines.next() else { continue };
        let Some((id, state)) = header.strip_prefix("goroutine ").and_then(|h| h.split_once(" [")) else { continue };
        let state = state.trim_end_matches("]:");
        let Some((wait_reason, _)) = state.split_once(" (leaked)") else { continue };
        let Ok(goid) = id.parse() else { continue };
        let function = lines
            .find(|l| l.starts_with("main."))
            .map(|l| l.rsplit_once('(').map_or(l, |(f, _)| f).to_string())
            .unwrap_or_default();
        leaked.push(Leaked { goid, wait_reason: wait_reason.to_string(), function });
    }
    leaked
}

/// A running kernel: its leak profile has been written and the process waits for goscope.
pub struct KernelProcess {
    child: ChildGuard,
    /// The leaked goroutines of every profile so far (a goroutine, once leaked, stays leaked).
    pub leaked: BTreeMap<u64, Leaked>,
}

impl KernelProcess {
    /// Starts `kernel` and waits (at most `timeout`) for its profile.
    pub fn start(goker: &Path, kernel: &Kernel, timeout: Duration) -> Result<KernelProcess> {
        let mut cmd = Command::new(goker);
        cmd.arg(&kernel.name).envs(kernel.env());
        let child = ChildGuard::spawn(format!("goker {}", kernel.name), cmd)?;
        let mut process = KernelProcess { child, leaked: BTreeMap::new() };
        process.read_profile(timeout)?;
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Asks for another leak profile: goroutines that leaked after the kernel returned.
    pub fn profile_again(&mut self, timeout: Duration) -> Result<()> {
        self.child.send_line("profile")?;
        self.read_profile(timeout)
    }

    fn read_profile(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut text = String::new();
        loop {
            match self.child.next_line(deadline.saturating_duration_since(Instant::now())) {
                Line::Line(l) if l == PROFILE_MARKER => break,
                Line::Line(l) => {
                    text.push_str(&l);
                    text.push('\n');
                }
                Line::Eof => bail!("{} exited before its profile; stderr: {}", self.child.name(), self.child.stderr_text()),
                Line::Timeout => bail!("{}: no leak profile within {timeout:?}", self.child.name()),
            }
        }
        for leak in parse_leak_profile(&text) {
            self.leaked.insert(leak.goid, leak);
        }
        Ok(())
    }
}

/// Whether a goscope JSON line is a leak or deadlock finding (not `blocked`, not a retraction).
pub fn is_leak_or_deadlock(line: &Value) -> bool {
    kind(line) == "finding" && (line["type"] == "leak" || line["type"] == "deadlock")
}

/// The goids a finding names: its goroutines and its chain.
pub fn named_goids(finding: &Value) -> BTreeSet<u64> {
    let goroutines = finding["goroutines"].as_array().into_iter().flatten().filter_map(|g| g["goid"].as_u64());
    let chain = finding["chain"].as_array().into_iter().flatten().filter_map(Value::as_u64);
    goroutines.chain(chain).collect()
}

/// One kernel run under goscope.
#[derive(Debug, Clone)]
pub struct KernelRun {
    pub kernel: String,
    /// The leaked goroutines of the runtime's profiles (at the kernel's return and after the
    /// watch); empty: the bug did not manifest.
    pub leaked: BTreeMap<u64, Leaked>,
    /// goscope's leak and deadlock findings, in order.
    pub findings: Vec<Value>,
    /// From goscope's `attached` line to the first leak/deadlock finding naming a leaked goroutine.
    pub time_to_detection: Option<Duration>,
    /// How long goscope took to print `attached`.
    pub attach_time: Duration,
}

impl KernelRun {
    pub fn manifested(&self) -> bool {
        !self.leaked.is_empty()
    }

    fn named(&self) -> BTreeSet<u64> {
        self.findings.iter().flat_map(named_goids).collect()
    }

    /// Goroutines proven leaked (by a proven leak or deadlock finding).
    fn proven(&self) -> BTreeSet<u64> {
        self.findings.iter().filter(|f| f["grade"] == "proven").flat_map(named_goids).collect()
    }

    /// The differential against the runtime's profile: (goroutines the profile lists that goscope
    /// did not prove, goroutines goscope proved that the profile does not list).
    pub fn proof_disagreements(&self) -> (Vec<u64>, Vec<u64>) {
        let proven = self.proven();
        let unproven = self.leaked.keys().copied().filter(|g| !proven.contains(g)).collect();
        let extra = proven.into_iter().filter(|g| !self.leaked.contains_key(g)).collect();
        (unproven, extra)
    }

    /// The leaked goroutines some leak/deadlock finding names.
    pub fn named_leaked(&self) -> usize {
        self.named().iter().filter(|g| self.leaked.contains_key(g)).count()
    }

    pub fn detected(&self) -> bool {
        self.named_leaked() > 0
    }

    /// The fraction of the leaked goroutines that findings name (0 when nothing leaked).
    pub fn completeness(&self) -> f64 {
        if self.leaked.is_empty() { 0.0 } else { self.named_leaked() as f64 / self.leaked.len() as f64 }
    }

    /// Goroutines named by leak/deadlock findings that the runtime did not find leaked.
    pub fn false_goids(&self) -> Vec<u64> {
        self.named().into_iter().filter(|g| !self.leaked.contains_key(g)).collect()
    }

    /// The `type` goscope gave the leaked goroutines of this run (None: it did not manifest).
    pub fn finding_type(&self) -> Option<FindingTypes> {
        self.manifested().then(|| FindingTypes::of(self.leaked.keys().copied(), &self.findings))
    }
}

/// Which finding types name the leaked goroutines of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingTypes {
    /// Every leaked goroutine is named, each only by `deadlock` findings (by its proven findings
    /// where it has some, else by all).
    Deadlock,
    /// Every leaked goroutine is named, each only by `leak` findings.
    Leak,
    /// Every leaked goroutine is named, some by `deadlock`, some by `leak` findings.
    Both,
    /// Some leaked goroutine is named by no leak/deadlock finding.
    Unnamed,
}

impl FindingTypes {
    pub const ALL: [FindingTypes; 4] = [FindingTypes::Deadlock, FindingTypes::Leak, FindingTypes::Both, FindingTypes::Unnamed];

    /// Of the goroutines `leaked`, by the leak/deadlock `findings` that name them: the proven
    /// ones where there are (a suspect raised before the proof is the weaker judgement).
    pub fn of(leaked: impl IntoIterator<Item = u64>, findings: &[Value]) -> FindingTypes {
        let (mut deadlock, mut leak) = (false, false);
        for goid in leaked {
            let naming: Vec<&Value> = findings.iter().filter(|f| named_goids(f).contains(&goid)).collect();
            let proven: Vec<&Value> = naming.iter().copied().filter(|f| f["grade"] == "proven").collect();
            let judged = if proven.is_empty() { naming } else { proven };
            let types: BTreeSet<&str> = judged.iter().filter_map(|f| f["type"].as_str()).collect();
            match (types.contains("deadlock"), types.contains("leak")) {
                (false, false) => return FindingTypes::Unnamed,
                (true, false) => deadlock = true,
                (false, true) => leak = true,
                (true, true) => (deadlock, leak) = (true, true),
            }
        }
        match (deadlock, leak) {
            (true, false) => FindingTypes::Deadlock,
            (false, true) => FindingTypes::Leak,
            (true, true) => FindingTypes::Both,
            (false, false) => FindingTypes::Unnamed,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FindingTypes::Deadlock => "deadlock",
            FindingTypes::Leak => "leak",
            FindingTypes::Both => "both",
            FindingTypes::Unnamed => "unnamed",
        }
    }
}

/// Runs `kernel`, attaches `goscope` (`--block-threshold threshold`) once its profile is written,
/// and watches until every leaked goroutine is named by a proven leak/deadlock finding or `watch`
/// passes (a suspect naming them does not end it: the proven set is compared with the profile).
pub fn run_kernel(goker: &Path, goscope: &Path, kernel: &Kernel, watch: Duration, threshold: Duration) -> Result<KernelRun> {
    let mut process = KernelProcess::start(goker, kernel, Duration::from_secs(60))?;
    let threshold = format!("{}ms", threshold.as_millis());
    let mut agent = Goscope::attach_with(goscope, process.pid(), &["--no-events", "--block-threshold", &threshold])?;
    let started = Instant::now();
    agent.wait_attached(Duration::from_secs(60))?;
    let attached = Instant::now();
    // (since attached, goids) of every leak/deadlock finding: scored once the last profile is in.
    let mut sightings: Vec<(Duration, BTreeSet<u64>)> = Vec::new();
    let mut proven: BTreeSet<u64> = BTreeSet::new();
    let leaked_at_start = process.leaked.clone();
    agent.watch_until(attached + watch, |line| {
        if is_leak_or_deadlock(line) {
            let goids = named_goids(line);
            if line["grade"] == "proven" {
                proven.extend(goids.iter().filter(|g| leaked_at_start.contains_key(g)));
            }
            sightings.push((attached.elapsed(), goids));
        }
        !leaked_at_start.is_empty() && proven.len() == leaked_at_start.len()
    })?;
    agent.stop(Duration::from_secs(30))?;
    process.profile_again(Duration::from_secs(30))?;
    let time_to_detection =
        sightings.iter().find(|(_, goids)| goids.iter().any(|g| process.leaked.contains_key(g))).map(|(at, _)| *at);
    let findings = agent.events().iter().filter(|l| is_leak_or_deadlock(l)).cloned().collect();
    Ok(KernelRun {
        kernel: kernel.name.clone(),
        leaked: process.leaked,
        findings,
        time_to_detection,
        attach_time: attached - started,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finding_types_of_the_leaked_goroutines() {
        let deadlock = json!({"type": "deadlock", "goroutines": [{"goid": 5}, {"goid": 6}], "chain": [5, 6]});
        let leak = json!({"type": "leak", "goroutines": [{"goid": 7}], "chain": []});
        let both = [deadlock.clone(), leak.clone()];
        assert_eq!(FindingTypes::of([5, 6], &both), FindingTypes::Deadlock);
        assert_eq!(FindingTypes::of([7], &both), FindingTypes::Leak);
        assert_eq!(FindingTypes::of([5, 7], &both), FindingTypes::Both);
        assert_eq!(FindingTypes::of([5, 8], &both), FindingTypes::Unnamed);
        assert_eq!(FindingTypes::of([5], std::slice::from_ref(&leak)), FindingTypes::Unnamed);
        // A suspect deadlock before a proven leak of the same goroutine: the proof counts.
        let suspect = json!({"type": "deadlock", "grade": "suspect", "goroutines": [{"goid": 7}]});
        let proven = json!({"type": "leak", "grade": "proven", "goroutines": [{"goid": 7}]});
        assert_eq!(FindingTypes::of([7], &[suspect.clone(), proven]), FindingTypes::Leak);
        assert_eq!(FindingTypes::of([7], &[suspect, leak]), FindingTypes::Both);
    }
}
