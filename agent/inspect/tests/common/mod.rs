//! Builds the Go fixture program (tests/testdata/prog) with a given toolchain and build variant,
//! caching the binaries under `<target>/go-fixtures/<go version>-<source hash>/`.
//!
//! Toolchains other than the installed `go` are fetched by the go command itself
//! (`GOTOOLCHAIN=go1.21.13`, through the module proxy) and cached in the module cache.
//! If `go` is missing the tests print why and skip; with `CI=true` they fail instead.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

/// How the fixture is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `CGO_ENABLED=0 go build` (symtab + DWARF).
    Plain,
    /// `-ldflags='-s -w'`.
    Stripped,
    /// `-buildmode=pie` (internal linking, with DWARF).
    Pie,
    /// `-buildmode=pie -ldflags='-s -w'`.
    PieStripped,
    /// `CGO_ENABLED=1 -ldflags=-linkmode=external` (gcc).
    ExtLink,
    /// `CGO_ENABLED=1 -ldflags='-linkmode=external -s -w'`.
    ExtLinkStripped,
    /// `GOARCH=arm64` cross build with DWARF.
    Arm64,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Stripped => "stripped",
            Variant::Pie => "pie",
            Variant::PieStripped => "pie-stripped",
            Variant::ExtLink => "ext",
            Variant::ExtLinkStripped => "ext-stripped",
            Variant::Arm64 => "arm64",
        }
    }

    fn args(self) -> (&'static str, &'static str, Vec<&'static str>) {
        // (CGO_ENABLED, GOARCH, extra build args)
        match self {
            Variant::Plain => ("0", "amd64", vec![]),
            Variant::Stripped => ("0", "amd64", vec!["-ldflags=-s -w"]),
            Variant::Pie => ("0", "amd64", vec!["-buildmode=pie"]),
            Variant::PieStripped => ("0", "amd64", vec!["-buildmode=pie", "-ldflags=-s -w"]),
            Variant::ExtLink => ("1", "amd64", vec!["-ldflags=-linkmode=external"]),
            Variant::ExtLinkStripped => ("1", "amd64", vec!["-ldflags=-linkmode=external -s -w"]),
            Variant::Arm64 => ("0", "arm64", vec![]),
        }
    }
}

/// `None` = the installed toolchain (GOTOOLCHAIN=local).
pub type Toolchain = Option<&'static str>;

/// One lock per binary, so test threads wanting the same one build it once, and different
/// binaries build in parallel.
fn build_lock(bin: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(locks.entry(bin.to_path_buf()).or_default())
}

/// Builds every variant of `toolchain` at once, in three chains that share no compiled packages
/// (plain → stripped, ext, ext-stripped; pie → pie-stripped; arm64), so a cold Go build cache
/// compiles each package set once and the chains use the cores in parallel. Errors are left for
/// the [`fixture`] calls that follow to report.
pub fn prebuild(toolchain: Toolchain) {
    if go_version(toolchain).is_err() {
        return;
    }
    let chains: [&[Variant]; 3] = [
        &[Variant::Plain, Variant::Stripped, Variant::ExtLink, Variant::ExtLinkStripped],
        &[Variant::Pie, Variant::PieStripped],
        &[Variant::Arm64],
    ];
    std::thread::scope(|s| {
        for chain in chains {
            s.spawn(move || {
                for &v in chain {
                    let _ = fixture(toolchain, v);
                }
            });
        }
    });
}

pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// Reports a skip (or panics under CI).
pub fn skip(reason: &str) {
    if in_ci() {
        panic!("CI=true and a Go fixture is unavailable: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/prog")
}

fn fixtures_root() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(|p| p.join("go-fixtures")).unwrap_or_else(|| tmp.join("go-fixtures"))
}

/// FNV-1a over the Go sources in `dir` (names and contents, sorted), stable across Rust
/// versions: the cache key of binaries built from them.
pub fn source_hash(dir: &Path) -> String {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("Go source dir").filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        let mut bytes = f.file_name().unwrap().to_string_lossy().into_owned().into_bytes();
        bytes.extend(std::fs::read(&f).unwrap());
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn go_cmd(toolchain: Toolchain) -> Command {
    let mut c = Command::new("go");
    c.env("GOTOOLCHAIN", toolchain.unwrap_or("local"))
        .env("GOWORK", "off")
        .env("GOFLAGS", "-buildvcs=false")
        .env_remove("GOARCH")
        .env_remove("GOOS")
        .current_dir(source_dir());
    c
}

/// Version string of a toolchain ("go1.21.13"), or why it is unavailable; asked once per
/// toolchain (the first ask of a toolchain not yet in the module cache downloads it).
pub fn go_version(toolchain: Toolchain) -> Result<String, String> {
    type Answer = Arc<OnceLock<Result<String, String>>>;
    static VERSIONS: OnceLock<Mutex<HashMap<Toolchain, Answer>>> = OnceLock::new();
    let cell = Arc::clone(
        VERSIONS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner()).entry(toolchain).or_default(),
    );
    cell.get_or_init(|| ask_go_version(toolchain)).clone()
}

fn ask_go_version(toolchain: Toolchain) -> Result<String, String> {
    let out = go_cmd(toolchain)
        .args(["env", "GOVERSION"])
        .output()
        .map_err(|e| format!("cannot run `go` ({e}); install Go to run these tests"))?;
    if !out.status.success() {
        return Err(format!(
            "`GOTOOLCHAIN={} go env GOVERSION` failed: {}",
            toolchain.unwrap_or("local"),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Path of the fixture built with `toolchain` and `variant` (built on first use).
pub fn fixture(toolchain: Toolchain, variant: Variant) -> Result<PathBuf, String> {
    let version = go_version(toolchain)?;
    let dir = fixtures_root().join(format!("{version}-{}", source_hash(&source_dir())));
    let bin = dir.join(variant.name());
    let lock = build_lock(&bin);
    let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    if bin.is_file() {
        return Ok(bin);
    }
    if matches!(variant, Variant::ExtLink | Variant::ExtLinkStripped) && Command::new("gcc").arg("--version").output().is_err() {
        return Err("gcc not installed (needed for -linkmode=external)".into());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp{}-{:?}", variant.name(), std::process::id(), std::thread::current().id()));
    let (cgo, arch, extra) = variant.args();
    let out = go_cmd(toolchain)
        .env("CGO_ENABLED", cgo)
        .env("GOARCH", arch)
        .env("GOOS", "linux")
        .arg("build")
        .args(extra)
        .arg("-o")
        .arg(&tmp)
        .arg(".")
        .output()
        .map_err(|e| format!("cannot run go build: {e}"))?;
    if !out.status.success() {
        return Err(format!("go build ({version}, {}) failed: {}", variant.name(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    std::fs::rename(&tmp, &bin).map_err(|e| format!("rename: {e}"))?;
    Ok(bin)
}

/// Like [`fixture`], but `None` (after printing/asserting via [`skip`]) when unavailable.
pub fn fixture_or_skip(toolchain: Toolchain, variant: Variant) -> Option<PathBuf> {
    match fixture(toolchain, variant) {
        Ok(p) => Some(p),
        Err(e) => {
            skip(&e);
            None
        }
    }
}
