//! `cargo xtask offsets [--check]`: regenerates goscope-inspect's per-version runtime offsets
//! tables, `agent/inspect/offsets/go1.NN.txt`, from real binaries (issue #3).
//!
//! For every Go release the tests run on (`GO_VERSIONS` in `tests/src/fixture.rs`, the one list),
//! `agent/inspect/tests/testdata/prog` is built with that toolchain (`GOTOOLCHAIN=go1.X.Y`, which
//! the go command downloads through the module proxy on first use; `CGO_ENABLED=0`, linux/amd64,
//! with DWARF), in parallel, and cached under `target/go-offsets/`. Then goscope-inspect's own
//! generator (`cargo run -p goscope-inspect --example gen-offsets`) renders each binary's DWARF
//! layout and `runtime.waitReasonStrings` into a table.
//!
//! Without `--check` the tables are rewritten in place. With `--check` they are generated into
//! `target/go-offsets/check/` and compared: any difference, missing or extra table, or table that
//! `src/layout.rs` does not include fails with a diff.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::workspace_root;

const PROG: &str = "agent/inspect/tests/testdata/prog";
const TABLES: &str = "agent/inspect/offsets";
const VERSIONS_FROM: &str = "tests/src/fixture.rs";

pub fn run(check_only: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = workspace_root();
    let versions = go_versions()?;
    let bins = build_all(&root, &versions)?;

    let work = root.join("target/go-offsets");
    let gen_dir = work.join(if check_only { "check" } else { "generated" });
    let _ = fs::remove_dir_all(&gen_dir);
    fs::create_dir_all(&gen_dir).with_context(|| format!("creating {}", gen_dir.display()))?;
    let out = crate::bootstrap::cargo()
        .current_dir(&root)
        .args(["run", "--quiet", "-p", "goscope-inspect", "--example", "gen-offsets", "--", "--out-dir"])
        .arg(&gen_dir)
        .args(&bins)
        .stdin(Stdio::null())
        .output()
        .context("running cargo run --example gen-offsets")?;
    if !out.status.success() {
        bail!(
            "cargo run -p goscope-inspect --example gen-offsets failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    let tables_dir = root.join(TABLES);
    let layout_rs = fs::read_to_string(root.join("agent/inspect/src/layout.rs")).context("reading layout.rs")?;
    let mut problems = Vec::new();
    let mut expected = Vec::new();
    for v in &versions {
        let minor = minor_of(v)?;
        let name = format!("go1.{minor}.txt");
        let generated =
            fs::read_to_string(gen_dir.join(&name)).with_context(|| format!("the generator wrote no {name} for go{v}"))?;
        let from = generated.lines().find_map(|l| l.strip_prefix("version ")).unwrap_or("");
        if from != format!("go{v}") {
            bail!("{name} generated from go{v} says `version {from}`");
        }
        if !layout_rs.contains(&format!("offsets/{name}")) {
            problems.push(format!("agent/inspect/src/layout.rs does not include offsets/{name}: add it to TABLE_SOURCES"));
        }
        let path = tables_dir.join(&name);
        let current = fs::read_to_string(&path).ok();
        if current.as_deref() == Some(generated.as_str()) {
            eprintln!("xtask: offsets: {name} (go{v}) up to date");
        } else if check_only {
            problems.push(match &current {
                None => format!("{TABLES}/{name} is missing (go{v})"),
                Some(old) => format!(
                    "{TABLES}/{name} differs from what go{v} generates:\n{}",
                    diff(old, &generated, &format!("{TABLES}/{name}"), &format!("generated from go{v}"))
                ),
            });
        } else {
            fs::write(&path, &generated).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("xtask: offsets: wrote {name} (go{v})");
        }
        expected.push(name);
    }
    for entry in fs::read_dir(&tables_dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("go1.") && name.ends_with(".txt") && !expected.contains(&name) {
            problems.push(format!("{TABLES}/{name} has no Go version in GO_VERSIONS ({VERSIONS_FROM}): nothing regenerates it"));
        }
    }
    if !problems.is_empty() {
        let fix = if check_only { "\nRegenerate with `cargo xtask offsets` (and review the diff)." } else { "" };
        bail!("offsets tables: {} problem(s):\n{}{fix}", problems.len(), problems.join("\n"));
    }
    eprintln!(
        "xtask: offsets: {} tables {} in {:.1}s",
        versions.len(),
        if check_only { "match the binaries" } else { "generated" },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The Go releases the test suite builds fixtures with: goscope-tests' `GO_VERSIONS`, the one list.
fn go_versions() -> anyhow::Result<Vec<String>> {
    let versions: Vec<String> = goscope_tests::GO_VERSIONS.iter().map(|v| (*v).to_owned()).collect();
    if versions.is_empty() || versions.iter().any(|v| minor_of(v).is_err() || v.split('.').count() != 3) {
        bail!("GO_VERSIONS ({VERSIONS_FROM}) is not a list of 1.X.Y releases: {versions:?}");
    }
    Ok(versions)
}

fn minor_of(v: &str) -> anyhow::Result<u32> {
    v.strip_prefix("1.")
        .and_then(|r| r.split('.').next())
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("bad Go version {v:?}"))
}

/// Builds (or finds cached) the program for every version, several at a time; paths in order.
fn build_all(root: &Path, versions: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let src = root.join(PROG);
    let hash = goscope_tests::fixture::source_hash(&src)?;
    let cache = root.join("target/go-offsets");
    let jobs = thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, versions.len().max(2));
    let next = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<usize, anyhow::Result<PathBuf>>> = Mutex::default();
    thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(v) = versions.get(i) else { break };
                    let r = build_one(&src, &cache.join(format!("go{v}-{hash}")), v);
                    results.lock().unwrap_or_else(|e| e.into_inner()).insert(i, r);
                }
            });
        }
    });
    let mut bins = Vec::new();
    let mut errors = Vec::new();
    for (_, r) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        match r {
            Ok(b) => bins.push(b),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("building {PROG}:\n{}", errors.join("\n"));
    }
    Ok(bins)
}

fn build_one(src: &Path, dir: &Path, version: &str) -> anyhow::Result<PathBuf> {
    let bin = dir.join("prog");
    if bin.is_file() {
        return Ok(bin);
    }
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".prog.tmp{}", std::process::id()));
    let start = Instant::now();
    let out = Command::new(std::env::var_os("GO").unwrap_or_else(|| "go".into()))
        .current_dir(src)
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(".")
        .env("GOTOOLCHAIN", format!("go{version}"))
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOWORK", "off")
        .env("CGO_ENABLED", "0")
        .env("GOOS", "linux")
        .env("GOARCH", "amd64")
        .stdin(Stdio::null())
        .output()
        .context("running go build (is Go installed?)")?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        bail!("GOTOOLCHAIN=go{version} go build failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    fs::rename(&tmp, &bin)?;
    eprintln!("xtask: offsets: built {PROG} with go{version} in {:.1}s", start.elapsed().as_secs_f64());
    Ok(bin)
}

/// A line diff (longest common subsequence) with two lines of context, `-` old, `+` new.
fn diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let near_change = |k: usize| ops[k.saturating_sub(2)..(k + 3).min(ops.len())].iter().any(|(c, _)| *c != ' ');
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    let mut skipped = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            out.push_str(&format!("{c} {line}\n"));
        } else {
            skipped = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_changes_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
        let new = "a\nb\nc\nD\ne\nf\ng\nh\ni\nj\nk\n";
        let d = diff(old, new, "old", "new");
        assert_eq!(d, "--- old\n+++ new\n  ...\n  b\n  c\n- d\n+ D\n  e\n  f\n  ...\n  i\n  j\n+ k\n");
    }

    #[test]
    fn reads_the_test_suites_go_versions() {
        let v = go_versions().unwrap();
        assert!(v.len() >= 9 && v[0].starts_with("1.19."), "{v:?}");
        assert!(v.windows(2).all(|w| minor_of(&w[0]).unwrap() < minor_of(&w[1]).unwrap()), "{v:?}");
    }
}
