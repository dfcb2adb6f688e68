//! Installs what goscope's build needs on a fresh machine, and nothing on a second run.
//!
//! `cargo xtask` itself compiles with the default toolchain (any stable): nothing in this tree makes
//! rustup select the pinned nightly, so a rustup that never auto-installs toolchains
//! (`RUSTUP_AUTO_INSTALL=0`) still gets this far. From here on every build goes through the nightly
//! pinned in `rust-nightly.toml`, called explicitly ([`cargo`]):
//! - the pinned nightly with its components (rust-src for `-Z build-std=core` on the BPF target,
//!   rustfmt and clippy for the test command's checks); userspace needs it too (aya 0.16 needs
//!   rustc >= 1.98);
//! - bpf-linker, built against that nightly's own libLLVM (it must be the same LLVM);
//! - cargo-fuzz and Graphviz, only for `cargo xtask test` ([`ensure_test_tools`]);
//! - a check that Go is installed (fixtures and the demo are built from source).
use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    sync::OnceLock,
};

use anyhow::{Context as _, bail};

use crate::{check, workspace_root};

pub const BPF_LINKER_VERSION: &str = "0.13";
pub const CARGO_FUZZ_VERSION: &str = "0.13";
/// The file that pins the nightly (see its own comment for why it is not rust-toolchain.toml).
pub const PIN_FILE: &str = "rust-nightly.toml";

/// The pinned toolchain: `[toolchain] channel` and `components` of [`PIN_FILE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub channel: String,
    pub components: Vec<String>,
}

/// What `demo`, `bench` and every build need.
pub fn ensure_build_tools() -> anyhow::Result<()> {
    let pin = pin()?;
    ensure_toolchain(pin)?;
    ensure_bpf_linker(&pin.channel)?;
    ensure_go()
}

/// What `cargo xtask test` needs on top: cargo-fuzz and Graphviz.
pub fn ensure_test_tools() -> anyhow::Result<()> {
    ensure_build_tools()?;
    ensure_cargo_fuzz(&pin()?.channel)?;
    // tests/tests/dot.rs renders goscope's wait-for graphs with Graphviz (not on a new machine).
    ensure_debian_tool("dot", "-V", "graphviz", "the wait-for graph test")
}

/// `cargo` of the pinned nightly, whatever toolchain runs xtask. `rustup run` also sets
/// RUSTUP_TOOLCHAIN for everything cargo starts (build scripts, tests that build goscope), so
/// nested cargo calls stay on the nightly. `CARGO` is cleared: it names the cargo that runs xtask.
pub fn cargo() -> Command {
    let channel = pin().map(|p| p.channel.clone()).unwrap_or_default();
    let mut cmd = Command::new("rustup");
    cmd.args(["run", &channel, "cargo"]).env_remove("CARGO").current_dir(workspace_root());
    cmd
}

/// The pin, read once.
pub fn pin() -> anyhow::Result<&'static Pin> {
    static PIN: OnceLock<Result<Pin, String>> = OnceLock::new();
    PIN.get_or_init(|| {
        let path = workspace_root().join(PIN_FILE);
        let text = fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        parse_pin(&text).ok_or_else(|| format!("{}: no `channel = \"…\"` under [toolchain]", path.display()))
    })
    .as_ref()
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The two keys this project uses of rustup's toolchain-file format (one line each).
fn parse_pin(text: &str) -> Option<Pin> {
    let value = |key: &str| {
        text.lines().map(str::trim).filter(|l| !l.starts_with('#')).find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
    };
    let channel = value("channel")?.trim_matches('"').to_owned();
    let components =
        value("components").map(|list| list.split('"').skip(1).step_by(2).map(str::to_owned).collect()).unwrap_or_default();
    (!channel.is_empty()).then_some(Pin { channel, components })
}

fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn sysroot(channel: &str) -> Option<String> {
    output_of(Command::new("rustup").args(["run", channel, "rustc", "--print", "sysroot"]))
}

/// Components present in a sysroot, checked by the files they install (no network, unlike
/// `rustup component list`).
fn missing_components(sysroot: &Path, components: &[String]) -> Vec<String> {
    let present = |c: &str| match c {
        "rust-src" => sysroot.join("lib/rustlib/src/rust/library/core").exists(),
        "rustfmt" => sysroot.join("bin/rustfmt").exists(),
        "clippy" => sysroot.join("bin/clippy-driver").exists(),
        other => sysroot.join("lib/rustlib").join(other).exists(),
    };
    components.iter().filter(|c| !present(c)).cloned().collect()
}

fn ensure_toolchain(pin: &Pin) -> anyhow::Result<()> {
    let missing = match sysroot(&pin.channel) {
        Some(root) => missing_components(Path::new(&root), &pin.components),
        None => pin.components.clone(),
    };
    if sysroot(&pin.channel).is_some() && missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Rust toolchain {} (components: {})", pin.channel, pin.components.join(", "));
    check(
        Command::new("rustup")
            .args(["toolchain", "install", &pin.channel, "--no-self-update", "--profile", "minimal", "--component"])
            .arg(pin.components.join(",")),
    )
}

fn ensure_bpf_linker(channel: &str) -> anyhow::Result<()> {
    // Run through the toolchain so the nightly's lib directory is on the loader path, as it is
    // when rustc invokes the linker: a linker built against another LLVM fails right here.
    let version = output_of(Command::new("rustup").args(["run", channel, "bpf-linker", "--version"]));
    if version.as_deref().is_some_and(|v| v.starts_with(&format!("bpf-linker {BPF_LINKER_VERSION}"))) {
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against {channel}'s LLVM (found: {version:?})");
    let sysroot = sysroot(channel).context("cannot find the pinned toolchain's sysroot")?;
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
        cargo()
            .args(["install", "bpf-linker", "--locked", "--force", "--version"])
            .arg(format!("^{BPF_LINKER_VERSION}"))
            .env("LLVM_PREFIX", &prefix),
    )?;
    let version = output_of(Command::new("rustup").args(["run", channel, "bpf-linker", "--version"]));
    if version.is_none() {
        bail!("bpf-linker was installed but does not run under {channel}; is $CARGO_HOME/bin on PATH?");
    }
    Ok(())
}

/// cargo-fuzz, for goscope-inspect's fuzz targets (agent/inspect/fuzz) that `cargo xtask test` runs.
fn ensure_cargo_fuzz(channel: &str) -> anyhow::Result<()> {
    let version = output_of(Command::new("rustup").args(["run", channel, "cargo", "fuzz", "--version"]));
    if version.as_deref().is_some_and(|v| v.starts_with(&format!("cargo-fuzz {CARGO_FUZZ_VERSION}"))) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (found: {version:?})");
    check(cargo().args(["install", "cargo-fuzz", "--locked", "--force", "--version"]).arg(format!("^{CARGO_FUZZ_VERSION}")))?;
    if output_of(Command::new("rustup").args(["run", channel, "cargo", "fuzz", "--version"])).is_none() {
        bail!("cargo-fuzz was installed but `cargo fuzz` does not run under {channel}; is $CARGO_HOME/bin on PATH?");
    }
    Ok(())
}

/// wrk, the bench's HTTP load generator at saturation (Debian's package). Bench only: the tests
/// never need it.
pub fn ensure_wrk() -> anyhow::Result<()> {
    ensure_debian_tool("wrk", "--version", "wrk", "the bench")
}

/// A command from a Debian package, installed with apt-get when it does not run (once after an
/// `apt-get update` if the package lists are stale or empty, as on a new machine).
fn ensure_debian_tool(command: &str, version_arg: &str, package: &str, needed_by: &str) -> anyhow::Result<()> {
    if Command::new(command).arg(version_arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok() {
        return Ok(());
    }
    eprintln!("xtask: installing {package} (Debian) for {needed_by}");
    let install = || Command::new("apt-get").args(["install", "-y", package]).status().is_ok_and(|s| s.success());
    if install() {
        return Ok(());
    }
    check(Command::new("apt-get").arg("update"))?;
    check(Command::new("apt-get").args(["install", "-y", package]))
}

fn ensure_go() -> anyhow::Result<()> {
    if output_of(Command::new("go").arg("version")).is_none() {
        bail!("Go is not installed (or not on PATH): goscope's fixtures and demo are Go programs built from source");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_pin_names_a_dated_nightly_with_its_components() {
        let text = fs::read_to_string(workspace_root().join(PIN_FILE)).unwrap();
        let pin = parse_pin(&text).unwrap();
        assert!(pin.channel.starts_with("nightly-20"), "{pin:?}");
        assert_eq!(pin.components, ["rust-src", "rustfmt", "clippy"]);
    }

    #[test]
    fn comments_and_other_keys_are_not_the_channel() {
        let pin = parse_pin("# channel = \"stable\"\n[toolchain]\nprofile = \"minimal\"\nchannel = \"nightly-2030-01-01\"\n");
        assert_eq!(pin, Some(Pin { channel: "nightly-2030-01-01".into(), components: vec![] }));
        assert_eq!(parse_pin("[toolchain]\nprofile = \"minimal\"\n"), None);
    }
}
