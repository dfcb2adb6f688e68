//! The chanrecv10 scenario on every Go release from 1.19 on (`GO_VERSIONS`) and on the installed
//! Go, each in every variant: plain, stripped, PIE, cgo with external linking.
//!
//! One test per Go version, so a failure names its version; within a test every variant runs and
//! all failures are reported together. The fixture binaries are built (plain and PIE in parallel,
//! then stripped and cgo in parallel) and cached under `<target>/go-fixtures/` (the first use of a
//! Go version also downloads its toolchain through the module proxy and compiles its standard
//! library, once for plain and once for PIE code).
use std::time::Instant;

use anyhow::{Result, bail};
use goscope_tests::scenario::run_chanrecv10;
use goscope_tests::{GO_VERSIONS, GoFixture, Variant, require_bpf};

fn matrix(version: Option<&str>, variants: &[Variant]) -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    if let Some(v) = version {
        assert!(GO_VERSIONS.contains(&v), "{v} is not in GO_VERSIONS; keep the list and the tests in step");
    }
    let start = Instant::now();
    // The first build of a Go version compiles the standard library into the shared Go build
    // cache: plain and PIE each compile it their own way (PIE code is position independent), so
    // they build in parallel; stripped and cgo then reuse plain's packages (cgo adds runtime/cgo)
    // instead of compiling them again alongside.
    let (first, second): (Vec<Variant>, Vec<Variant>) = variants.iter().partition(|v| matches!(v, Variant::Plain | Variant::Pie));
    let mut by_variant = std::collections::HashMap::new();
    for wave in [first, second] {
        let specs: Vec<_> = wave.iter().map(|&v| ("chanrecv10", version, v)).collect();
        by_variant.extend(wave.into_iter().zip(GoFixture::build_many(&specs)));
    }
    let built: Vec<_> = variants.iter().map(|v| by_variant.remove(v).expect("built every variant")).collect();
    let build_secs = start.elapsed().as_secs_f64();
    let mut failures = Vec::new();
    for (result, variant) in built.into_iter().zip(variants) {
        let label = format!("go{} {variant}", version.unwrap_or("(installed)"));
        let fixture = match result {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!("{label}: building the fixture: {e:#}"));
                continue;
            }
        };
        match run_chanrecv10(&fixture) {
            Ok(run) => eprintln!(
                "ok: {} (build {}, attach {:.2}s, scenario {:.2}s)",
                fixture.label(),
                fixture.build_time.map_or_else(|| "cached".to_string(), |t| format!("{:.1}s", t.as_secs_f64())),
                run.attach_time.as_secs_f64(),
                run.total_time.as_secs_f64()
            ),
            Err(e) => failures.push(format!("{label}: {e:#}")),
        }
    }
    eprintln!("go{}: builds {build_secs:.1}s, total {:.1}s", version.unwrap_or("(installed)"), start.elapsed().as_secs_f64());
    if !failures.is_empty() {
        bail!("{} of {} variant(s) failed:\n\n{}", failures.len(), variants.len(), failures.join("\n\n"));
    }
    Ok(())
}

#[test]
fn installed_go_all_variants() -> Result<()> {
    matrix(None, &Variant::ALL)
}

goscope_tests::go_version_tests!(|version| matrix(version, &Variant::ALL));
