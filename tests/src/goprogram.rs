//! Real peers for the tests (Jaeger, kube-apiserver, etcd), built from source through the Go
//! module proxy once and cached under the target directory.
//!
//! The build is a throwaway module that requires the program's module at a fixed version and runs
//! `go build -trimpath` on its main package under `GOFLAGS=-mod=mod`. The module's own `replace`
//! directives come along ([`Replaces::Upstream`], with its go.sum, so every dependency resolves to
//! what the project pins); a module whose replaces point into its own tree (Kubernetes' staging
//! repositories) gets each one mapped to the published module at a given version instead
//! ([`Replaces::LocalToPublished`]). A file lock keeps parallel test processes from building twice.
use std::fmt::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;
use std::{env, fs};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use crate::fixture::go_command;

/// What to do with the program module's own `replace` directives.
#[derive(Debug, Clone, Copy)]
pub enum Replaces {
    /// Copy them, with the module's go.sum.
    Upstream,
    /// Replace every `X => ./local/path` (or `../`) with `X => X <version>` (the published copy).
    LocalToPublished(&'static str),
}

/// A Go program to build from the module proxy.
#[derive(Debug, Clone, Copy)]
pub struct GoProgram {
    /// The binary's name, and its cache folder's (`<name>-<version>`).
    pub name: &'static str,
    pub module: &'static str,
    pub version: &'static str,
    /// The main package's import path.
    pub package: &'static str,
    pub replaces: Replaces,
    /// An environment variable that names a prebuilt binary to use instead.
    pub prebuilt_env: &'static str,
    /// `go build -tags` (comma-separated; empty for none): e.g. Prometheus's `remove_all_sd`,
    /// which leaves out the service discoveries a test does not use.
    pub build_tags: &'static str,
}

impl GoProgram {
    /// `<target>/go-programs/<name>-<version>/`.
    pub fn dir(&self) -> PathBuf {
        crate::target_dir().join("go-programs").join(format!("{}-{}", self.name, self.version))
    }

    /// The binary: the prebuilt one if its variable is set, else the cached build, built first if
    /// missing (minutes on two cores the first time; a file check afterwards).
    pub fn binary(&self) -> Result<PathBuf> {
        self.binary_in(&self.dir())
    }

    /// As [`GoProgram::binary`], cached in `dir` (`<dir>/bin/<name>`).
    pub fn binary_in(&self, dir: &Path) -> Result<PathBuf> {
        if let Some(bin) = env::var_os(self.prebuilt_env).filter(|b| !b.is_empty()) {
            let bin = PathBuf::from(bin);
            if !bin.is_file() {
                bail!("{}={} is not a file", self.prebuilt_env, bin.display());
            }
            return Ok(bin);
        }
        let bin = dir.join("bin").join(self.name);
        if bin.is_file() {
            return Ok(bin);
        }
        fs::create_dir_all(dir.join("bin")).with_context(|| format!("creating {}", dir.display()))?;
        let lock = fs::File::create(dir.join("build.lock"))?;
        // SAFETY: flock on a descriptor we own; released when `lock` closes.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("locking the {} build", self.name));
        }
        if bin.is_file() {
            return Ok(bin); // another process built it while we waited
        }
        let start = Instant::now();
        eprintln!("goscope-tests: building {} {} from source (minutes the first time)", self.name, self.version);
        let src = dir.join("src");
        fs::create_dir_all(&src)?;
        self.write_module(&src)?;
        let tmp = dir.join("bin").join(format!("{}.tmp-{}", self.name, std::process::id()));
        let out = go_command()
            .args(["build", "-trimpath", "-tags", self.build_tags, "-o"])
            .arg(&tmp)
            .arg(self.package)
            .current_dir(&src)
            .env("GOFLAGS", "-mod=mod -buildvcs=false")
            .env("GO111MODULE", "on")
            .env("GOWORK", "off")
            .env("CGO_ENABLED", "0")
            // The checksum database is not reachable from every sandbox; with Upstream replaces the
            // module's own go.sum pins the dependencies, and a mismatch with it still fails.
            .env("GOSUMDB", "off")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running go build for {}", self.name))?;
        if !out.status.success() {
            let _ = fs::remove_file(&tmp);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("go: downloading")).collect();
            bail!("building {} failed ({}):\n{}", self.name, out.status, tail[tail.len().saturating_sub(40)..].join("\n"));
        }
        fs::rename(&tmp, &bin)?;
        eprintln!("goscope-tests: built {} in {:.0}s: {}", self.name, start.elapsed().as_secs_f64(), bin.display());
        Ok(bin)
    }

    /// go.mod (and go.sum) of the throwaway module in `src`.
    fn write_module(&self, src: &Path) -> Result<()> {
        let (module, version) = (self.module, self.version);
        let out = go_command()
            .args(["mod", "download", "-json", &format!("{module}@{version}")])
            .current_dir(src)
            .env("GOFLAGS", "-mod=mod")
            .env("GO111MODULE", "on")
            .env("GOWORK", "off")
            .env("GOSUMDB", "off")
            .stdin(Stdio::null())
            .output()
            .context("running go mod download (is Go installed?)")?;
        if !out.status.success() {
            bail!(
                "go mod download {module}@{version} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let info: Value = serde_json::from_slice(&out.stdout).context("parsing go mod download -json")?;
        let module_dir = PathBuf::from(info["Dir"].as_str().ok_or_else(|| anyhow!("go mod download gave no Dir: {info}"))?);
        let upstream = fs::read_to_string(module_dir.join("go.mod"))?;
        let name = self.name;
        let mut go_mod = format!("module goscope.test/{name}-build\n\nrequire {module} {version}\n\n");
        match self.replaces {
            Replaces::Upstream => {
                for line in upstream.lines().filter(|l| l.starts_with("go ") || l.starts_with("replace ")) {
                    writeln!(go_mod, "{line}")?;
                }
                fs::copy(module_dir.join("go.sum"), src.join("go.sum")).with_context(|| format!("copying {name}'s go.sum"))?;
            }
            Replaces::LocalToPublished(published) => {
                for line in upstream.lines() {
                    let line = line.trim().trim_start_matches("replace ").trim();
                    if line.starts_with("go ") {
                        writeln!(go_mod, "{line}")?;
                    } else if let Some((from, to)) = line.split_once("=>")
                        && to.trim().starts_with('.')
                        && version_fits(from.trim(), published)
                    {
                        let from = from.trim();
                        writeln!(go_mod, "replace {from} => {from} {published}")?;
                    }
                }
            }
        }
        fs::write(src.join("go.mod"), go_mod)?;
        Ok(())
    }
}

/// Whether `version` can be a version of `module` (Go's major-version suffix rule): `…/vN` takes
/// vN.x.y, any other path v0 or v1. A replace that fails it guards against a module rather than
/// locating one (etcd's `go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY`) and is left out.
fn version_fits(module: &str, version: &str) -> bool {
    let major = version.trim_start_matches('v').split('.').next().unwrap_or("");
    match module.rsplit_once("/v").map(|(_, n)| n).filter(|n| n.parse::<u32>().is_ok_and(|n| n >= 2)) {
        Some(suffix) => suffix == major,
        None => major == "0" || major == "1",
    }
}

#[cfg(test)]
mod tests {
    use super::version_fits;

    #[test]
    fn major_version_suffixes() {
        assert!(version_fits("go.etcd.io/etcd/api/v3", "v3.6.4"));
        assert!(!version_fits("go.etcd.io/etcd", "v3.6.4"));
        assert!(version_fits("k8s.io/api", "v0.34.2"));
        assert!(!version_fits("k8s.io/api/v2", "v0.34.2"));
    }
}
