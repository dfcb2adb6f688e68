//! [`GoFixture`]: the Go programs under `tests/fixtures/go/<name>/`, compiled with a chosen Go
//! toolchain and build variant, cached under `<target>/go-fixtures/`.
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use std::{env, fs, thread};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::process::ChildGuard;

/// The Go releases the version matrix runs on: the last patch release of each minor version from
/// Go 1.19 on, as the module proxy lists them (`go list -m -versions golang.org/toolchain`). The
/// installed Go is tested besides these, in every [`Variant`].
pub const GO_VERSIONS: &[&str] =
    &["1.19.13", "1.20.14", "1.21.13", "1.22.12", "1.23.12", "1.24.13", "1.25.14", "1.26.11", "1.27.4"];

/// Bump to invalidate every cached fixture binary when the build recipe below changes.
const RECIPE: &str = "goscope-tests fixture recipe 1";

/// How a fixture is built. Each is a way real Go binaries reach production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `CGO_ENABLED=0 go build`: static, internally linked, with symbols and DWARF.
    Plain,
    /// `-ldflags=-s -w`: no ELF symbol table, no DWARF (only `.gopclntab` and build info remain).
    Stripped,
    /// `-buildmode=pie`: position independent, loaded at a random base.
    Pie,
    /// `CGO_ENABLED=1 -ldflags=-linkmode=external`: linked by the system linker, with runtime/cgo
    /// (the fixtures that support it have a `//go:build cgo` file importing "C").
    Cgo,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::Plain, Variant::Stripped, Variant::Pie, Variant::Cgo];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Stripped => "stripped",
            Variant::Pie => "pie",
            Variant::Cgo => "cgo",
        }
    }

    fn build_flags(self) -> &'static [&'static str] {
        match self {
            Variant::Plain => &[],
            Variant::Stripped => &["-ldflags=-s -w"],
            Variant::Pie => &["-buildmode=pie"],
            Variant::Cgo => &["-ldflags=-linkmode=external"],
        }
    }

    fn cgo_enabled(self) -> &'static str {
        if self == Variant::Cgo { "1" } else { "0" }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A compiled fixture.
#[derive(Debug, Clone)]
pub struct GoFixture {
    /// Directory name under `tests/fixtures/go/`.
    pub name: String,
    /// The Go version the binary was built with, as `runtime.Version()` and goscope report it
    /// (`go1.21.13`).
    pub go_version: String,
    pub variant: Variant,
    /// The executable.
    pub path: PathBuf,
    /// How long `go build` took; `None` when the binary came from the cache.
    pub build_time: Option<Duration>,
}

/// The `go` command: `$GO` or `go` on PATH.
pub fn go_command() -> Command {
    Command::new(env::var_os("GO").unwrap_or_else(|| "go".into()))
}

/// The installed Go's version (`go1.26.8`), asked once.
pub fn installed_go_version() -> Result<String> {
    static VERSION: OnceLock<Result<String, String>> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            let out = go_command()
                .args(["env", "GOVERSION"])
                .env("GOTOOLCHAIN", "local")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running `go env GOVERSION`: {e} (is Go installed and on PATH?)"))?;
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !out.status.success() || !version.starts_with("go") {
                return Err(format!(
                    "`go env GOVERSION` failed ({}): {}{}",
                    out.status,
                    version,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(version)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// `tests/fixtures/go/<name>/`.
pub fn fixture_source_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("go").join(name)
}

/// The number (from 1) of the line of fixture `name`'s main.go that is exactly `text`, tabs
/// included: where a test expects goroutines to block.
pub fn main_go_line(name: &str, text: &str) -> Result<u64> {
    let path = fixture_source_dir(name).join("main.go");
    let source = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let index = source.lines().position(|l| l == text).ok_or_else(|| anyhow!("no line {text:?} in {}", path.display()))?;
    Ok(index as u64 + 1)
}

/// `"1.21.13"` or `"go1.21.13"` → `"go1.21.13"`.
fn toolchain_name(version: &str) -> String {
    if version.starts_with("go") { version.to_string() } else { format!("go{version}") }
}

/// FNV-1a 64: stable across Rust versions, unlike `DefaultHasher`, so the cache survives upgrades.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separator, so ("ab","c") and ("a","bc") differ.
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

fn hash_sources(dir: &Path, hasher: &mut Fnv) -> Result<()> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for f in files {
        let rel = f.strip_prefix(dir).unwrap_or(&f);
        hasher.write(rel.to_string_lossy().as_bytes());
        hasher.write(&fs::read(&f).with_context(|| format!("reading {}", f.display()))?);
    }
    Ok(())
}

/// A cache key for what is built from the files under `dir` (names and contents).
pub fn source_hash(dir: &Path) -> Result<String> {
    let mut hasher = Fnv::new();
    hash_sources(dir, &mut hasher)?;
    Ok(format!("{:016x}", hasher.0))
}

/// One lock per cache entry, so two test threads wanting the same binary build it once.
fn entry_lock(key: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(locks.entry(key.to_path_buf()).or_default())
}

impl GoFixture {
    /// Compiles `tests/fixtures/go/<name>/` with Go `go_version` (`None`: the installed Go, with
    /// `GOTOOLCHAIN=local`; `Some("1.21.13")`: `GOTOOLCHAIN=go1.21.13`, which the go command
    /// downloads through the module proxy on first use) as `variant`.
    ///
    /// Binaries are cached by (name, version, variant, hash of the sources and recipe) under
    /// `<target>/go-fixtures/<name>/`; a cached binary is reused without running Go.
    pub fn build(name: &str, go_version: Option<&str>, variant: Variant) -> Result<GoFixture> {
        let src = fixture_source_dir(name);
        if !src.join("go.mod").is_file() {
            bail!("no Go fixture {name:?}: {} has no go.mod", src.display());
        }
        let (toolchain, expected_version) = match go_version {
            None => ("local".to_string(), installed_go_version()?),
            Some(v) => (toolchain_name(v), toolchain_name(v)),
        };

        let mut hasher = Fnv::new();
        hasher.write(RECIPE.as_bytes());
        hasher.write(expected_version.as_bytes());
        hasher.write(variant.name().as_bytes());
        hasher.write(variant.build_flags().join(" ").as_bytes());
        hash_sources(&src, &mut hasher)?;
        let dir =
            crate::target_dir().join("go-fixtures").join(name).join(format!("{expected_version}-{variant}-{:016x}", hasher.0));
        let exe = dir.join(name);

        let lock = entry_lock(&dir);
        let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut fixture = GoFixture {
            name: name.to_string(),
            go_version: expected_version.clone(),
            variant,
            path: exe.clone(),
            build_time: None,
        };
        if exe.is_file() {
            return Ok(fixture);
        }

        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Build next to the final path and rename: other processes (nextest runs test binaries
        // in parallel) never see a half-written binary.
        let tmp = dir.join(format!("{name}.tmp-{}-{:?}", std::process::id(), thread::current().id()));
        let start = Instant::now();
        let mut cmd = go_command();
        cmd.arg("build")
            .arg("-o")
            .arg(&tmp)
            .args(variant.build_flags())
            .arg(".")
            .current_dir(&src)
            .env("GOTOOLCHAIN", &toolchain)
            // No external dependencies; -buildvcs=false because the sources sit in a git work tree
            // that may have no commits, where VCS stamping fails.
            .env("GOFLAGS", "-mod=mod -buildvcs=false")
            .env("GO111MODULE", "on")
            .env("GOWORK", "off")
            .env("CGO_ENABLED", variant.cgo_enabled())
            .stdin(Stdio::null());
        let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        if !out.status.success() {
            let _ = fs::remove_file(&tmp);
            bail!(
                "building fixture {name} with GOTOOLCHAIN={toolchain} ({variant}) failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        fs::rename(&tmp, &exe).with_context(|| format!("renaming {} to {}", tmp.display(), exe.display()))?;
        let took = start.elapsed();
        fixture.build_time = Some(took);

        let built_with = binary_go_version(&exe)?;
        if built_with != expected_version {
            let _ = fs::remove_file(&exe);
            bail!("fixture {name} built with GOTOOLCHAIN={toolchain} reports {built_with}, expected {expected_version}");
        }
        eprintln!("goscope-tests: built fixture {} in {:.1}s", fixture.label(), took.as_secs_f64());
        Ok(fixture)
    }

    /// Builds several fixtures at once, one thread each; results in the order asked.
    pub fn build_many(specs: &[(&str, Option<&str>, Variant)]) -> Vec<Result<GoFixture>> {
        thread::scope(|s| {
            let handles: Vec<_> =
                specs.iter().map(|&(name, version, variant)| s.spawn(move || GoFixture::build(name, version, variant))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("fixture build thread panicked")))).collect()
        })
    }

    /// `chanrecv10 go1.21.13 stripped`, for messages.
    pub fn label(&self) -> String {
        format!("{} {} {}", self.name, self.go_version, self.variant)
    }

    /// A command that runs the fixture with `args`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(args);
        cmd
    }

    /// Runs the fixture under a [`ChildGuard`].
    pub fn spawn(&self, args: &[&str]) -> Result<ChildGuard> {
        ChildGuard::spawn(self.label(), self.command(args))
    }
}

/// The Go version a binary was built with, from its build info (`go version FILE`); works for
/// stripped binaries, which keep their build info.
pub fn binary_go_version(path: &Path) -> Result<String> {
    let out = go_command()
        .arg("version")
        .arg(path)
        .env("GOTOOLCHAIN", "local")
        .stdin(Stdio::null())
        .output()
        .context("running `go version FILE`")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "<path>: go1.21.13"
    text.rsplit(": ")
        .next()
        .map(|v| v.trim().to_string())
        .filter(|v| out.status.success() && v.starts_with("go"))
        .ok_or_else(|| anyhow!("`go version {}` said: {text}{}", path.display(), String::from_utf8_lossy(&out.stderr)))
}
