//! The chanrecv10 scenario on every Go release from 1.19 on (`GO_VERSIONS`), plain and stripped,
//! and on the installed Go in every variant (plain, stripped, PIE, cgo with external linking).
//!
//! One test per Go version, so a failure names its version; within a test every variant runs and
//! all failures are reported together. The fixture binaries are built (the first variant, then the
//! others in parallel) and cached under `<target>/go-fixtures/` (the first use of a Go version
//! also downloads its toolchain through the module proxy and compiles its standard library).
use std::time::Instant;

use anyhow::{Result, bail};
use goscope_tests::scenario::run_chanrecv10;
use goscope_tests::{GO_VERSIONS, GoFixture, Variant, require_bpf};

fn matrix(version: Option<&str>, variants: &[Variant]) -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    if let Some(v) = version {
        assert!(
            GO_VERSIONS.contains(&v),
            "{v} is not in GO_VERSIONS; keep the list and the tests in step"
        );
    }
    let start = Instant::now();
    // The first build of a Go version compiles its standard library into the shared Go build
    // cache; building the other variants only after it lets them reuse that work instead of
    // repeating it in parallel.
    let mut built = vec![GoFixture::build("chanrecv10", version, variants[0])];
    let rest: Vec<_> = variants[1..]
        .iter()
        .map(|&variant| ("chanrecv10", version, variant))
        .collect();
    built.extend(GoFixture::build_many(&rest));
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
                fixture.build_time.map_or_else(
                    || "cached".to_string(),
                    |t| format!("{:.1}s", t.as_secs_f64())
                ),
                run.attach_time.as_secs_f64(),
                run.total_time.as_secs_f64()
            ),
            Err(e) => failures.push(format!("{label}: {e:#}")),
        }
    }
    eprintln!(
        "go{}: builds {build_secs:.1}s, total {:.1}s",
        version.unwrap_or("(installed)"),
        start.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        bail!(
            "{} of {} variant(s) failed:\n\n{}",
            failures.len(),
            variants.len(),
            failures.join("\n\n")
        );
    }
    Ok(())
}

const PLAIN_AND_STRIPPED: &[Variant] = &[Variant::Plain, Variant::Stripped];

#[test]
fn installed_go_all_variants() -> Result<()> {
    matrix(None, &Variant::ALL)
}

macro_rules! version_tests {
    ($($name:ident => $version:literal),* $(,)?) => {
        $(
            #[test]
            fn $name() -> Result<()> {
                matrix(Some($version), PLAIN_AND_STRIPPED)
            }
        )*

        /// Every entry of GO_VERSIONS has its test above.
        #[test]
        fn every_go_version_has_a_test() {
            let tested = [$($version),*];
            assert_eq!(tested.as_slice(), GO_VERSIONS, "add a test per GO_VERSIONS entry");
        }
    };
}

version_tests! {
    go1_19_13 => "1.19.13",
    go1_20_14 => "1.20.14",
    go1_21_13 => "1.21.13",
    go1_22_12 => "1.22.12",
    go1_23_12 => "1.23.12",
    go1_24_13 => "1.24.13",
    go1_25_14 => "1.25.14",
    go1_26_11 => "1.26.11",
    go1_27_4 => "1.27.4",
}
