//! goscope-tests: the harness of goscope's integration tests.
//!
//! Everything here is real: Go fixture programs (`tests/fixtures/go/<name>/`) are compiled with a
//! real Go toolchain ([`GoFixture`]), run as real processes ([`ChildGuard`]), and watched by the
//! real `goscope` binary ([`Goscope`]), which loads real eBPF programs and uprobes.
//!
//! Every process is owned by an RAII guard that SIGKILLs and reaps it on drop, so a failing (even
//! panicking) test leaves no stray process behind; a killed goscope leaves no probe behind either,
//! since the kernel drops its uprobe links when its file descriptors close.
//!
//! The tests that load eBPF call [`require_bpf`] first.

pub mod backend;
pub mod fixture;
pub mod goker;
pub mod goprogram;
pub mod goscope;
pub mod healthy;
pub mod kube;
pub mod process;
pub mod prometheus;
pub mod scenario;

use std::env;
use std::path::{Path, PathBuf};

pub use fixture::{GO_VERSIONS, GoFixture, Variant};

/// One `#[test]` per Go release of [`GO_VERSIONS`], each calling `$run(Some("1.X.Y"))`, and a
/// test that keeps this list equal to GO_VERSIONS.
#[macro_export]
macro_rules! go_version_tests {
    ($run:expr) => {
        $crate::go_version_tests!(@each $run;
            go1_19_13 => "1.19.13", go1_20_14 => "1.20.14", go1_21_13 => "1.21.13", go1_22_12 => "1.22.12",
            go1_23_12 => "1.23.12", go1_24_13 => "1.24.13", go1_25_14 => "1.25.14", go1_26_11 => "1.26.11",
            go1_27_4 => "1.27.4");
    };
    (@each $run:expr; $($name:ident => $version:literal),*) => {
        $(
            #[test]
            fn $name() -> ::anyhow::Result<()> {
                ($run)(Some($version))
            }
        )*

        #[test]
        fn every_go_version_has_a_test() {
            assert_eq!([$($version),*].as_slice(), $crate::GO_VERSIONS, "add the new release to go_version_tests!");
        }
    };
}
pub use goscope::{Goscope, RunOutput, Stopped, goscope_bin, run_goscope, run_goscope_as};

/// How goscope watches the target in a detection test: findings must be right in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// Every probe attached from the start (`--overhead-budget off`).
    Probes,
    /// `--scan-only`: no probe, periodic memory scans alone.
    Scan,
    /// The default for findings only: the budget governor starts in scan mode and attaches the
    /// probes once their estimated cost fits the budget (a quiet fixture's does).
    Governed,
    /// The governor's middle level, held: every probe but the semaphore probe (sync waits' lock
    /// addresses come from memory).
    NoSemaphore,
}

impl WatchMode {
    /// `args` with the flags that select this mode.
    pub fn args<'a>(self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        match self {
            Self::Probes => all.extend(["--overhead-budget", "off"]),
            Self::Scan => all.push("--scan-only"),
            Self::Governed => {}
            Self::NoSemaphore => all.extend(["--overhead-budget", "off", "--no-semaphore-probe"]),
        }
        all
    }
}

/// For each named test body `fn NAME(mode: WatchMode) -> anyhow::Result<()>`, a module `NAME`
/// with one `#[test]` per [`WatchMode`]: `NAME::probes`, `NAME::scan`, `NAME::governed` and
/// `NAME::no_semaphore`.
#[macro_export]
macro_rules! in_each_watch_mode {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn probes() -> ::anyhow::Result<()> {
                    super::$name($crate::WatchMode::Probes)
                }

                #[test]
                fn scan() -> ::anyhow::Result<()> {
                    super::$name($crate::WatchMode::Scan)
                }

                #[test]
                fn governed() -> ::anyhow::Result<()> {
                    super::$name($crate::WatchMode::Governed)
                }

                #[test]
                fn no_semaphore() -> ::anyhow::Result<()> {
                    super::$name($crate::WatchMode::NoSemaphore)
                }
            }
        )*
    };
}
pub use process::{ChildGuard, Line};

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The cargo target directory this test binary was built into.
///
/// `CARGO_TARGET_DIR` if set (relative to the workspace root when relative); otherwise found from
/// this test binary's path, `<target>/<profile>/deps/<exe>` or, with cargo's newer build-dir
/// layout, `<target>/<profile>/build/<package>/<hash>/out/<exe>`; otherwise `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() { dir } else { workspace_root().join(dir) };
    }
    if let Ok(exe) = env::current_exe() {
        for dir in exe.ancestors().skip(1).take(5) {
            if dir.file_name().is_some_and(|n| n == "deps" || n == "build")
                && let Some(target) = dir.parent().and_then(Path::parent)
            {
                return target.to_path_buf();
            }
        }
    }
    workspace_root().join("target")
}

/// Whether this machine can run goscope's eBPF: root, and a kernel with BTF
/// (`/sys/kernel/btf/vmlinux`).
///
/// Returns `Ok(true)` when it can. When it cannot, under CI (`CI=true`) this panics with the
/// reason, since a CI that silently skips every real test proves nothing; elsewhere it prints
/// `SKIP: <reason>` on stderr and returns `Ok(false)`, and the test returns early:
///
/// ```no_run
/// # fn t() -> anyhow::Result<()> {
/// if !goscope_tests::require_bpf()? {
///     return Ok(());
/// }
/// # Ok(()) }
/// ```
pub fn require_bpf() -> anyhow::Result<bool> {
    let mut reasons = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        reasons.push(format!("not root (euid {euid}); goscope needs root to load eBPF"));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        reasons.push("/sys/kernel/btf/vmlinux is missing: the kernel has no BTF".to_string());
    }
    if reasons.is_empty() {
        return Ok(true);
    }
    let reason = reasons.join("; ");
    if env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but this machine cannot run goscope's eBPF: {reason}");
    }
    eprintln!("SKIP: {reason}");
    Ok(false)
}
