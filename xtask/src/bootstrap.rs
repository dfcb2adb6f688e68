//! Installs what goscope's build needs on a fresh machine, and nothing on a second run:
//! - the pinned nightly (from rust-toolchain.toml) with rust-src, for userspace (aya 0.16 needs
//!   rustc >= 1.98) and for `-Z build-std=core` on the BPF target;
//! - bpf-linker 0.13, built against that nightly's own libLLVM (it must be the same LLVM);
//! - cargo-fuzz 0.13, for the fuzz step of `cargo xtask test`;
//! - a check that Go is installed (fixtures and the demo are built from source).
use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{check, workspace_root};

pub const BPF_LINKER_VERSION: &str = "0.13";
pub const CARGO_FUZZ_VERSION: &str = "0.13";

pub fn ensure_all() -> anyhow::Result<()> {
    let toolchain = pinned_toolchain()?;
    ensure_toolchain(&toolchain)?;
    ensure_bpf_linker(&toolchain)?;
    ensure_cargo_fuzz(&toolchain)?;
    ensure_go()?;
    Ok(())
}

/// The `channel` of rust-toolchain.toml.
fn pinned_toolchain() -> anyhow::Result<String> {
    let path = workspace_root().join("rust-toolchain.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.split('"').nth(1))
        .map(str::to_owned)
        .next()
        .with_context(|| format!("no channel in {}", path.display()))
}

fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn ensure_toolchain(toolchain: &str) -> anyhow::Result<()> {
    let sysroot = output_of(Command::new("rustup").args(["run", toolchain, "rustc", "--print", "sysroot"]));
    let has_src = sysroot.as_deref().is_some_and(|s| Path::new(s).join("lib/rustlib/src/rust/library/core").exists());
    if has_src {
        return Ok(());
    }
    eprintln!("xtask: installing Rust toolchain {toolchain} with rust-src");
    check(Command::new("rustup").args([
        "toolchain",
        "install",
        toolchain,
        "--profile",
        "minimal",
        "--component",
        "rust-src,rustfmt,clippy",
    ]))
}

fn ensure_bpf_linker(toolchain: &str) -> anyhow::Result<()> {
    // Run through the toolchain so the nightly's lib directory is on the loader path, as it is
    // when rustc invokes the linker: a linker built against another LLVM fails right here.
    let version = output_of(Command::new("rustup").args(["run", toolchain, "bpf-linker", "--version"]));
    if version.as_deref().is_some_and(|v| v.starts_with(&format!("bpf-linker {BPF_LINKER_VERSION}"))) {
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against {toolchain}'s LLVM (found: {version:?})");
    let sysroot = output_of(Command::new("rustup").args(["run", toolchain, "rustc", "--print", "sysroot"]))
        .context("cannot find the pinned toolchain's sysroot")?;
    let libdir = Path::new(&sysroot).join("lib");
    let libllvm = fs::read_dir(&libdir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .with_context(|| format!("no libLLVM.so.* in {}", libdir.display()))?;
    // bpf-linker's build looks for $LLVM_PREFIX/lib/libLLVM.so; point it at the nightly's own.
    let prefix = workspace_root().join("target/llvm-prefix");
    fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)?;
    check(
        Command::new("rustup")
            .args(["run", toolchain, "cargo", "install", "bpf-linker", "--locked", "--force", "--version"])
            .arg(format!("^{BPF_LINKER_VERSION}"))
            .env("LLVM_PREFIX", &prefix),
    )?;
    let version = output_of(Command::new("rustup").args(["run", toolchain, "bpf-linker", "--version"]));
    if version.is_none() {
        bail!("bpf-linker was installed but does not run under {toolchain}; is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

/// cargo-fuzz, for goscope-inspect's fuzz targets (agent/inspect/fuzz) that `cargo xtask test` runs.
fn ensure_cargo_fuzz(toolchain: &str) -> anyhow::Result<()> {
    let version = output_of(Command::new("rustup").args(["run", toolchain, "cargo", "fuzz", "--version"]));
    if version.as_deref().is_some_and(|v| v.starts_with(&format!("cargo-fuzz {CARGO_FUZZ_VERSION}"))) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (found: {version:?})");
    check(
        Command::new("rustup")
            .args(["run", toolchain, "cargo", "install", "cargo-fuzz", "--locked", "--force", "--version"])
            .arg(format!("^{CARGO_FUZZ_VERSION}")),
    )?;
    if output_of(Command::new("rustup").args(["run", toolchain, "cargo", "fuzz", "--version"])).is_none() {
        bail!("cargo-fuzz was installed but `cargo fuzz` does not run under {toolchain}; is ~/.cargo/bin on PATH?");
    }
    Ok(())
}

fn ensure_go() -> anyhow::Result<()> {
    if output_of(Command::new("go").arg("version")).is_none() {
        bail!("Go is not installed (or not on PATH): goscope's fixtures and demo are Go programs built from source");
    }
    Ok(())
}
