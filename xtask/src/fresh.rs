//! `cargo xtask fresh-machine`: the README's commands as a new user runs them on a fresh machine
//! whose rustup has only a stable toolchain and never auto-installs one.
//!
//! A clone of this checkout's committed HEAD (what would land, not the work tree) runs under a new
//! RUSTUP_HOME that holds only a link to the installed stable toolchain and a new, empty CARGO_HOME
//! whose bin/ has nothing but rustup's proxies, with `RUSTUP_AUTO_INSTALL=0`. Each command runs
//! twice: the first must succeed from nothing, the second must succeed and install nothing. Go's
//! own caches are the machine's (this checks the Rust side).
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{check, workspace_root};

/// The proxies rustup installs in `$CARGO_HOME/bin`; each is rustup itself under another name.
const PROXIES: &[&str] = &["rustup", "cargo", "rustc", "rustdoc", "rustfmt", "cargo-fmt", "cargo-clippy", "clippy-driver"];
/// What bootstrap prints when it installs anything; a second run must print none of these.
const INSTALL_MARKERS: &[&str] = &["xtask: installing", "xtask: building bpf-linker"];

pub fn run(commands: &[String], keep: bool) -> anyhow::Result<()> {
    let home = env::temp_dir().join(format!("goscope-fresh-machine-{}", std::process::id()));
    let _ = fs::remove_dir_all(&home);
    fs::create_dir_all(&home)?;
    let result = run_in(&home, commands);
    if keep || result.is_err() {
        eprintln!("xtask: fresh-machine: kept {} (clone, homes, logs)", home.display());
    } else {
        let _ = fs::remove_dir_all(&home);
    }
    result
}

fn run_in(home: &Path, commands: &[String]) -> anyhow::Result<()> {
    let clone = home.join("clone");
    check(Command::new("git").arg("clone").arg("--quiet").arg(workspace_root()).arg(&clone))?;
    let (rustup_home, cargo_home) = (home.join("rustup"), home.join("cargo"));
    stable_only_rustup_home(&rustup_home)?;
    proxies_only_cargo_home(&cargo_home)?;
    for command in commands {
        for round in ["first", "second"] {
            let log = home.join(format!("{}-{round}.log", command.split_whitespace().next().unwrap_or("cmd")));
            let started = Instant::now();
            let ok = xtask_under(&clone, &rustup_home, &cargo_home, command, &log)?;
            let text = fs::read_to_string(&log).unwrap_or_default();
            let installed: Vec<&str> = text.lines().filter(|l| INSTALL_MARKERS.iter().any(|m| l.starts_with(m))).collect();
            eprintln!(
                "xtask: fresh-machine: `cargo xtask {command}` ({round} run): {} in {:.0} s; installed: {}",
                if ok { "ok" } else { "FAILED" },
                started.elapsed().as_secs_f64(),
                if installed.is_empty() { "nothing".to_owned() } else { installed.join("; ") },
            );
            if !ok {
                bail!("`cargo xtask {command}` failed on the fresh machine; log: {}", log.display());
            }
            if round == "second" && !installed.is_empty() {
                bail!("the second `cargo xtask {command}` installed again: {installed:?}; log: {}", log.display());
            }
        }
    }
    Ok(())
}

/// A RUSTUP_HOME whose only toolchain is a link to the installed stable one, default stable.
fn stable_only_rustup_home(dir: &Path) -> anyhow::Result<()> {
    let real = env::var_os("RUSTUP_HOME").map(PathBuf::from).unwrap_or_else(|| home_dir().join(".rustup"));
    let stable = fs::read_dir(real.join("toolchains"))
        .with_context(|| format!("reading {}/toolchains", real.display()))?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("stable-"))
        .context("no stable toolchain is installed to link to")?;
    fs::create_dir_all(dir.join("toolchains"))?;
    std::os::unix::fs::symlink(stable.path(), dir.join("toolchains").join(stable.file_name()))?;
    let name = stable.file_name().to_string_lossy().into_owned();
    fs::write(dir.join("settings.toml"), format!("version = \"12\"\ndefault_toolchain = \"{name}\"\nprofile = \"minimal\"\n"))?;
    Ok(())
}

/// A CARGO_HOME with nothing but rustup's proxies in bin/.
fn proxies_only_cargo_home(dir: &Path) -> anyhow::Result<()> {
    let rustup = which("rustup").context("rustup is not on PATH")?;
    let rustup = fs::canonicalize(&rustup).unwrap_or(rustup);
    fs::create_dir_all(dir.join("bin"))?;
    for proxy in PROXIES {
        std::os::unix::fs::symlink(&rustup, dir.join("bin").join(proxy))?;
    }
    Ok(())
}

fn xtask_under(clone: &Path, rustup_home: &Path, cargo_home: &Path, command: &str, log: &Path) -> anyhow::Result<bool> {
    let path = env::var_os("PATH").unwrap_or_default();
    // The machine's own ~/.cargo/bin (its bpf-linker, cargo-fuzz, rustup proxies) must not be seen.
    let real_cargo_bin = home_dir().join(".cargo/bin");
    let kept = env::split_paths(&path).filter(|p| *p != real_cargo_bin && !p.starts_with(home_dir().join(".rustup")));
    let path = env::join_paths(std::iter::once(cargo_home.join("bin")).chain(kept))?;
    let out = fs::File::create(log)?;
    let mut cmd = Command::new(cargo_home.join("bin/cargo"));
    cmd.current_dir(clone).arg("xtask").args(command.split_whitespace());
    for var in ["RUSTUP_TOOLCHAIN", "CARGO", "CARGO_TARGET_DIR", "RUSTC", "RUSTDOC", "RUSTC_WRAPPER", "LD_LIBRARY_PATH"] {
        cmd.env_remove(var);
    }
    let status = cmd
        .env("RUSTUP_HOME", rustup_home)
        .env("CARGO_HOME", cargo_home)
        .env("RUSTUP_AUTO_INSTALL", "0")
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .context("running cargo xtask on the fresh machine")?;
    Ok(status.success())
}

fn home_dir() -> PathBuf {
    env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

fn which(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}
