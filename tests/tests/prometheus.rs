//! goscope's alerting rules (`deploy/prometheus/`), end to end with a real Prometheus 3 built from
//! source (see `goscope_tests::prometheus`):
//!
//! - `promtool check rules` and `promtool test rules` on the shipped files (every rule, synthetic
//!   series);
//! - the real `goscope attach` exporting OTLP/HTTP metrics straight into Prometheus's OTLP receiver
//!   while it watches the `leaky` fixture; the series are read back under the names the rules use,
//!   and the rules, loaded into that Prometheus, fire for the proven leak and the proven deadlock;
//! - the same with the `burst` fixture, whose load makes the budget governor change mode: the mode
//!   metrics arrive and the mode alert fires.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use goscope_tests::prometheus::{Prometheus, promtool};
use goscope_tests::{GoFixture, Goscope, Variant, require_bpf, workspace_root};
use serde_json::Value;

const RULES: &str = "goscope-alerts.yml";
const RULE_TESTS: &str = "goscope-alerts.test.yml";

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy").join("prometheus")
}

/// Metric names (`goscope_…`, `go_…`) an expression of the rules file refers to.
fn metric_names_in_rules() -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(deploy_dir().join(RULES))?;
    let mut names = BTreeSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        // Names in annotations are quoted in backticks: documentation, not queries.
        let expr = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("goscope_")
                && !word.starts_with("goscope_finding_")
                && !word.starts_with("goscope_otlp_signal")
                && word != "goscope_mode"
            {
                names.insert(word.to_owned());
            }
        }
    }
    Ok(names)
}

#[test]
fn the_shipped_rules_pass_promtool_check_and_their_unit_tests() -> Result<()> {
    let dir = deploy_dir();
    let checked = promtool(&["check", "rules", RULES], &dir)?;
    ensure!(checked.contains("SUCCESS"), "promtool check rules: {checked}");
    let tested = promtool(&["test", "rules", RULE_TESTS], &dir)?;
    ensure!(tested.contains("SUCCESS"), "promtool test rules: {tested}");
    eprintln!("{checked}{tested}");
    Ok(())
}

/// The value of a one-sample query result.
fn value(sample: &Value) -> Option<f64> {
    sample["value"][1].as_str()?.parse().ok()
}

/// The firing alerts of `job`, by name, with their value.
fn firing(alerts: &[Value], job: &str) -> Vec<(String, f64)> {
    alerts
        .iter()
        .filter(|a| a["state"] == "firing" && a["labels"]["job"] == job)
        .map(|a| {
            let name = a["labels"]["alertname"].as_str().unwrap_or_default().to_owned();
            (name, a["value"].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN))
        })
        .collect()
}

/// The leaky fixture has a proven leak (3 orphaned senders at one site), a proven deadlock (the
/// local AB-BA pair) and a suspect one (the global pair). goscope sends metrics only, over
/// OTLP/HTTP, to Prometheus's receiver; Prometheus evaluates the shipped rules every second.
#[test]
fn goscope_metrics_reach_prometheus_and_the_leak_and_deadlock_alerts_fire() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let mut prometheus = Prometheus::start(&[&deploy_dir().join(RULES)])?;
    let fixture = GoFixture::build("leaky", None, Variant::Plain)?;
    let mut target = fixture.spawn(&[])?;
    let info = target.expect_json("orphans", Duration::from_secs(30))?;
    let orphans = info["orphans"].as_array().map_or(0, Vec::len);
    ensure!(orphans > 0, "the fixture names its orphans: {info}");
    let job = "leaky-prometheus";
    let endpoint = format!("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT={}", prometheus.otlp_metrics_endpoint());
    let mut goscope = Goscope::attach_as(
        &["env", &endpoint],
        target.pid(),
        &["--block-threshold", "1s", "--no-events", "--otlp-service-name", job, "--otlp-export-interval", "500ms"],
    )?;
    goscope.wait_attached(Duration::from_secs(60))?;

    // The gauge the leak alerts use, under the name and labels the rules expect.
    let leak =
        format!(r#"goscope_findings_goroutines{{job="{job}",goscope_finding_type="leak",goscope_finding_grade="proven"}}"#);
    let sample = prometheus
        .wait_for(Duration::from_secs(90), |p| Ok(p.query(&leak)?.into_iter().find(|s| value(s) == Some(orphans as f64))))
        .with_context(|| format!("{leak} == {orphans} (goscope: {})", goscope.stderr()))?;
    let instance = sample["metric"]["instance"].as_str().unwrap_or_default();
    ensure!(
        instance.ends_with(&format!(":{}", target.pid())),
        "instance is service.instance.id (host:pid of the target): {sample}"
    );
    let deadlock =
        format!(r#"goscope_findings_goroutines{{job="{job}",goscope_finding_type="deadlock",goscope_finding_grade="proven"}}"#);
    prometheus.wait_for(Duration::from_secs(60), |p| Ok(p.query(&deadlock)?.into_iter().find(|s| value(s) == Some(2.0))))?;

    // Both proven findings fire, and nothing else does.
    let fired = prometheus.wait_for(Duration::from_secs(30), |p| {
        let fired = firing(&p.alerts()?, job);
        let has = |name: &str| fired.iter().any(|(n, _)| n == name);
        Ok((has("GoscopeGoroutineLeak") && has("GoscopeDeadlock")).then_some(fired))
    })?;
    eprintln!("firing for {job}: {fired:?}; leak series {sample}");
    for (name, v) in &fired {
        match name.as_str() {
            "GoscopeGoroutineLeak" => ensure!(*v == orphans as f64, "{name} value {v}, {orphans} orphans"),
            "GoscopeDeadlock" => ensure!(*v == 2.0, "{name} value {v}: the local pair"),
            other => anyhow::bail!("{other} fired for a quiet fixture: {fired:?}"),
        }
    }

    // The translation the rules rely on, checked rather than assumed: every name the rules use is
    // a series here (the mode governor's counter exists once it changed mode, which a quiet
    // fixture never makes it do), and the counters got `_total`.
    let held: BTreeSet<String> = prometheus.metric_names()?.into_iter().collect();
    let translated = [
        "goscope_findings_total",
        "goscope_findings_open",
        "goscope_findings_goroutines",
        "goscope_events_lost_total",
        "goscope_probe_cost_seconds_total",
        "go_goroutine_count",
        "goscope_probes_attached",
    ];
    let untranslated: Vec<&str> = translated.into_iter().filter(|n| !held.contains(*n)).collect();
    ensure!(untranslated.is_empty(), "docs/otlp.md names {untranslated:?}; Prometheus has {held:?}");
    let only_after_a_mode_change = ["goscope_mode_changes_total"];
    let missing: Vec<String> = metric_names_in_rules()?
        .into_iter()
        .filter(|n| !held.contains(n) && !only_after_a_mode_change.contains(&n.as_str()))
        .collect();
    ensure!(missing.is_empty(), "the rules use {missing:?}, which goscope did not export; Prometheus has {held:?}");
    let raised = format!(r#"goscope_findings_total{{job="{job}",goscope_finding_type="leak",goscope_finding_grade="proven"}}"#);
    ensure!(prometheus.query(&raised)?.iter().any(|s| value(s) >= Some(1.0)), "{raised}: {held:?}");
    for rule_group in prometheus.rules()? {
        for rule in rule_group["rules"].as_array().into_iter().flatten() {
            ensure!(rule["health"] != "err", "rule {} fails to evaluate: {}", rule["name"], rule["lastError"]);
        }
    }
    let stopped = goscope.stop(Duration::from_secs(30))?;
    ensure!(stopped.status.success(), "goscope: {}", stopped.stderr);
    Ok(())
}

/// The budget governor's metrics under the names the mode rules use: the `burst` fixture's ~100k
/// events/s make goscope (findings only, 1% budget) step down to scan mode; Prometheus gets
/// `goscope_mode_changes_total{goscope_mode="scan"}` and `goscope_probes_attached` 0, and
/// `GoscopeModeChanged` fires for that mode (the counter's series is new: the rule's second
/// branch).
#[test]
fn a_mode_change_reaches_prometheus_and_fires_the_mode_alert() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let mut prometheus = Prometheus::start(&[&deploy_dir().join(RULES)])?;
    let fixture = GoFixture::build("burst", None, Variant::Plain)?;
    let mut target = fixture.spawn(&["-idle", "1s", "-burst", "4s"])?;
    target.expect_json("pid", Duration::from_secs(20))?;
    let job = "burst-prometheus";
    let endpoint = format!("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT={}", prometheus.otlp_metrics_endpoint());
    let mut goscope = Goscope::attach_as(
        &["env", &endpoint],
        target.pid(),
        &["--no-events", "--otlp-service-name", job, "--otlp-export-interval", "500ms"],
    )?;
    goscope.wait_attached(Duration::from_secs(60))?;
    // A governed session starts in scan mode: the burst must meet the probes (their first attach
    // is the governor settling, not counted as a change).
    goscope.events_until(|v| v["kind"] == "mode" && v["mode"] == "probes", Duration::from_secs(30))?;
    target.send_line("go")?;
    target.expect_json("phase", Duration::from_secs(20))?;

    let fired = prometheus
        .wait_for(Duration::from_secs(60), |p| {
            Ok(p.alerts()?.into_iter().find(|a| {
                a["state"] == "firing"
                    && a["labels"]["alertname"] == "GoscopeModeChanged"
                    && a["labels"]["job"] == job
                    && a["labels"]["goscope_mode"] == "scan"
            }))
        })
        .with_context(|| format!("GoscopeModeChanged for scan mode (goscope: {})", goscope.stderr()))?;
    eprintln!("fired: {fired}");
    let attached = format!(r#"goscope_probes_attached{{job="{job}"}}"#);
    let now = prometheus.query(&attached)?;
    ensure!(now.iter().any(|s| value(s) == Some(0.0)), "{attached} is 0 in scan mode: {now:?}");
    let changes = format!(r#"goscope_mode_changes_total{{job="{job}",goscope_mode="scan"}}"#);
    ensure!(prometheus.query(&changes)?.iter().any(|s| value(s) >= Some(1.0)), "{changes}");
    goscope.stop(Duration::from_secs(30))?;
    target.close_stdin();
    Ok(())
}
