//! OTLP export against a real backend: Jaeger v2 built from source (see `goscope_tests::backend`),
//! on loopback, read back through its query API (traces), its Prometheus endpoint (metrics) and
//! its `debug` exporter output (logs).
//!
//! The `smoke_*` tests drive goscope's exporter through `examples/otlp_smoke.rs` (synthetic
//! goroutine activity, no eBPF, no root). The `attach_*` tests run the real `goscope attach`
//! against Go fixtures (deadlocked, chanrecv10, leaky) and need root and BPF.
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use goscope_tests::backend::{Jaeger, LogRecord, Proxy, ProxyMode, TestCa, process_tag, references, tag};
use goscope_tests::fixture::main_go_line;
use goscope_tests::scenario::{WORKER_START_FUNCTION, release_line, run_chanrecv10_with};
use goscope_tests::{GoFixture, Goscope, Variant, goscope_bin, require_bpf};
use serde_json::Value;

/// `<target>/debug/examples/otlp_smoke`, built once per test process.
fn smoke_bin() -> Result<std::path::PathBuf> {
    static BIN: OnceLock<Result<std::path::PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = goscope_tests::target_dir();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "goscope", "--example", "otlp_smoke"])
            .current_dir(goscope_tests::workspace_root())
            .env("CARGO_TARGET_DIR", &target)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running cargo build --example otlp_smoke: {e}"))?;
        if !out.status.success() {
            return Err(format!("cargo build --example otlp_smoke failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(target.join("debug").join("examples").join("otlp_smoke"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// A Go binary for the smoke runs' symbol and wait-reason tables.
fn go_binary() -> Result<GoFixture> {
    GoFixture::build("deadlocked", None, Variant::Plain)
}

/// Builds the smoke example and its Go binary up front, so a test's timeline starts when the
/// smoke run does.
fn prepare() -> Result<()> {
    smoke_bin()?;
    go_binary()?;
    Ok(())
}

/// Runs the smoke example; returns its JSON report.
fn smoke(args: &[&str], timeout: Duration) -> Result<Value> {
    smoke_env(args, &[], timeout)
}

/// [`smoke`] with extra environment variables.
fn smoke_env(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Result<Value> {
    let fixture = go_binary()?;
    let mut cmd = Command::new(smoke_bin()?);
    cmd.arg(&fixture.path).args(args).stdin(Stdio::null());
    // The flags decide; nothing from the environment leaks in.
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let mut child = goscope_tests::ChildGuard::spawn("otlp_smoke", cmd)?;
    let started = Instant::now();
    let status = child
        .wait_exit(timeout)?
        .with_context(|| format!("otlp_smoke {args:?} still running after {timeout:?}: {}", child.stderr_text()))?;
    let lines = child.lines_to_eof(Duration::from_secs(10));
    ensure!(status.success(), "otlp_smoke {args:?} failed ({status}): {}", child.stderr_text());
    let mut report: Value = serde_json::from_str(lines.last().context("otlp_smoke printed nothing")?)?;
    report["elapsed_ms"] = (started.elapsed().as_millis() as u64).into();
    eprintln!(
        "otlp_smoke {}: {} rounds in {} ms, longest call {} µs, shutdown {} ms, stats {}",
        args.join(" "),
        report["rounds"].as_array().map_or(0, Vec::len),
        report["elapsed_ms"],
        report["max_call_us"],
        report["shutdown_ms"],
        report["stats"]
    );
    Ok(report)
}

fn tag_i64(span: &Value, key: &str) -> Option<i64> {
    tag(span, key).and_then(Value::as_i64)
}

fn tag_str<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    tag(span, key).and_then(Value::as_str)
}

fn op(span: &Value) -> &str {
    span["operationName"].as_str().unwrap_or_default()
}

/// An int-array attribute as Jaeger (span tags) and the debug exporter (log attributes) print it:
/// `[6,19]`; empty when absent.
fn int_list(text: Option<&str>) -> Vec<i64> {
    text.and_then(|t| serde_json::from_str(t).ok()).unwrap_or_default()
}

/// The spans a span links to (`FOLLOWS_FROM` references), each found in `spans`.
fn linked<'a>(spans: &'a [Value], from: &Value) -> Result<Vec<&'a Value>> {
    references(from)
        .into_iter()
        .filter(|(t, _, _)| t == "FOLLOWS_FROM")
        .map(|(_, trace, span_id)| {
            spans
                .iter()
                .find(|s| s["spanID"].as_str() == Some(span_id.as_str()) && s["traceID"].as_str() == Some(trace.as_str()))
                .with_context(|| format!("{} links to span {span_id} that is not in Jaeger", op(from)))
        })
        .collect()
}

/// The span's `code.*` attributes, current and pre-1.30 names alike, name `function` at `line` of
/// fixture `fixture`'s main.go.
fn ensure_park_site(span: &Value, fixture: &str, function: &str, line: u64) -> Result<()> {
    let file = format!("/{fixture}/main.go");
    for (func_key, file_key, line_key) in
        [("code.function.name", "code.file.path", "code.line.number"), ("code.function", "code.filepath", "code.lineno")]
    {
        ensure!(tag_str(span, func_key) == Some(function), "{func_key} is not {function}: {span}");
        ensure!(tag_str(span, file_key).is_some_and(|f| f.ends_with(&file)), "{file_key} is not …{file}: {span}");
        ensure!(tag_i64(span, line_key) == Some(line as i64), "{line_key} is not {line}: {span}");
    }
    Ok(())
}

/// Checks one smoke round's spans in Jaeger: the exported episode under the goroutine's lifetime,
/// the lifetime linked to its parent, and the deadlock span linked to both ongoing episodes.
fn check_round(spans: &[Value], round: &Value) -> Result<()> {
    let worker = round["worker"].as_i64().unwrap();
    let waker = round["waker"].as_i64().unwrap();
    let parent = round["parent"].as_i64().unwrap();
    let finding = round["finding"].as_str().unwrap();

    let episode = spans
        .iter()
        .find(|s| op(s) == "block: chan receive" && tag_i64(s, "goscope.goroutine.id") == Some(worker))
        .with_context(|| format!("no blocking span for g{worker}"))?;
    ensure!(tag_str(episode, "goscope.wait.reason") == Some("chan receive"), "{episode}");
    ensure!(tag_str(episode, "goscope.wait.class") == Some("chan_receive"), "{episode}");
    ensure!(tag_str(episode, "goscope.channel.address") == Some("0xc000010000"), "{episode}");
    ensure!(tag_i64(episode, "goscope.channel.capacity") == Some(3), "{episode}");
    ensure!(tag_i64(episode, "goscope.waker.goroutine.id") == Some(waker), "{episode}");
    ensure!(tag_i64(episode, "goscope.goroutine.parent.id") == Some(parent), "{episode}");
    ensure!(tag_i64(episode, "goscope.blocking.duration_ns") == Some(250_000_000), "{episode}");
    ensure!(episode["duration"].as_i64() == Some(250_000), "duration in µs: {episode}");
    // The 1 ms episode of the waker is below --otlp-min-span-duration: no span.
    ensure!(
        !spans.iter().any(|s| op(s).starts_with("block: chan send") && tag_i64(s, "goscope.goroutine.id") == Some(waker)),
        "short episode exported"
    );

    let lifetime = spans
        .iter()
        .find(|s| op(s) == "goroutine" && tag_i64(s, "goscope.goroutine.id") == Some(worker))
        .with_context(|| format!("no lifetime span for g{worker}"))?;
    ensure!(
        references(episode).iter().any(|(t, trace, span)| t == "CHILD_OF"
            && *trace == lifetime["traceID"].as_str().unwrap()
            && *span == lifetime["spanID"].as_str().unwrap()),
        "episode is not a child of the lifetime span: {episode}"
    );
    ensure!(tag_i64(lifetime, "goscope.goroutine.parent.id") == Some(parent), "{lifetime}");
    // Linked (a FOLLOWS_FROM reference in Jaeger's model) to the parent's lifetime span, which
    // lives in another trace.
    ensure!(
        references(lifetime).iter().any(|(t, trace, _)| t == "FOLLOWS_FROM" && trace != lifetime["traceID"].as_str().unwrap()),
        "lifetime span has no link to its parent: {lifetime}"
    );

    let chain = spans
        .iter()
        .find(|s| op(s) == "deadlock" && tag_str(s, "goscope.finding.id") == Some(finding))
        .with_context(|| format!("no deadlock span for {finding}"))?;
    ensure!(tag_str(chain, "goscope.finding.type") == Some("deadlock"), "{chain}");
    ensure!(tag_str(chain, "goscope.finding.grade") == Some("proven"), "{chain}");
    ensure!(tag(chain, "error") == Some(&Value::Bool(true)), "proven deadlock is an error span: {chain}");
    let links: Vec<_> = references(chain).into_iter().filter(|(t, _, _)| t == "FOLLOWS_FROM").collect();
    ensure!(links.len() == 2, "deadlock span has {} links: {chain}", links.len());
    for (_, trace, span_id) in &links {
        let blocked = spans
            .iter()
            .find(|s| s["spanID"].as_str() == Some(span_id.as_str()))
            .with_context(|| format!("deadlock links to span {span_id} that is not in Jaeger"))?;
        ensure!(blocked["traceID"].as_str() == Some(trace.as_str()), "{blocked}");
        ensure!(op(blocked) == "block: chan send", "{blocked}");
        ensure!(tag(blocked, "goscope.blocking.ongoing") == Some(&Value::Bool(true)), "{blocked}");
        ensure!(tag_str(blocked, "goscope.finding.id") == Some(finding), "{blocked}");
        ensure!(tag_str(blocked, "goscope.channel.address").is_some_and(|c| c.starts_with("0xc00002")), "{blocked}");
    }
    Ok(())
}

#[test]
fn smoke_exports_spans_logs_and_metrics_over_http_and_grpc() -> Result<()> {
    let jaeger = Jaeger::start()?;
    for (service, endpoint, protocol) in
        [("smoke-http", jaeger.otlp_http_endpoint(), "http/protobuf"), ("smoke-grpc", jaeger.otlp_grpc_endpoint(), "grpc")]
    {
        let report = smoke(
            &["--otlp-endpoint", &endpoint, "--otlp-protocol", protocol, "--otlp-service-name", service],
            Duration::from_secs(60),
        )?;
        let stats = &report["stats"];
        ensure!(stats["flushed"] == true, "{report}");
        for signal in ["traces", "logs", "metrics"] {
            let s = &stats[signal];
            ensure!(s["exported"].as_u64() > Some(0) && s["exported"] == s["submitted"], "{signal}: {report}");
            ensure!(s["dropped"] == 0 && s["failed"] == 0, "{signal}: {report}");
        }
        let round = &report["rounds"][0];
        let spans = jaeger.wait_spans(service, Duration::from_secs(20), |s| s.len() >= 5)?;
        check_round(&spans, round)?;

        // Resource: the watched process, by semantic conventions.
        let any = &spans[0];
        ensure!(process_tag(any, "process.executable.name") == Some(&Value::from("deadlocked")), "{any}");
        ensure!(process_tag(any, "process.runtime.name") == Some(&Value::from("go")), "{any}");
        ensure!(process_tag(any, "process.pid").and_then(Value::as_i64).is_some_and(|p| p > 0), "{any}");
        ensure!(
            process_tag(any, "process.runtime.version").and_then(Value::as_str).is_some_and(|v| v.starts_with("1.")),
            "{any}"
        );
        ensure!(process_tag(any, "host.name").is_some() && process_tag(any, "host.arch").is_some(), "{any}");
        ensure!(tag_str(any, "otel.scope.name") == Some("goscope"), "{any}");

        // Logs: the finding (ERROR, proven) and its retraction (INFO), pointing at the deadlock's trace.
        let finding = round["finding"].as_str().unwrap();
        let logs = jaeger.wait_logs(Duration::from_secs(20), |l| {
            l.iter().filter(|r| r.attr("goscope.finding.id") == Some(finding)).count() >= 2
        })?;
        let mine: Vec<_> = logs.iter().filter(|r| r.attr("goscope.finding.id") == Some(finding)).collect();
        let raised = mine.iter().find(|r| r.event_name == "goscope.finding").context("no finding log record")?;
        ensure!(raised.severity_text == "ERROR", "{raised:?}");
        ensure!(
            raised.attr("goscope.finding.type") == Some("deadlock") && raised.attr("goscope.finding.grade") == Some("proven"),
            "{raised:?}"
        );
        ensure!(raised.attr("goscope.finding.chain").is_some_and(|c| c.starts_with('[')), "{raised:?}");
        let chain_span = spans.iter().find(|s| op(s) == "deadlock" && tag_str(s, "goscope.finding.id") == Some(finding)).unwrap();
        ensure!(raised.trace_id == chain_span["traceID"].as_str().unwrap(), "log not correlated: {raised:?}");
        let retracted = mine.iter().find(|r| r.event_name == "goscope.finding.retracted").context("no retraction log record")?;
        ensure!(
            retracted.severity_text == "INFO" && retracted.attr("goscope.finding.retracted") == Some("true"),
            "{retracted:?}"
        );
        ensure!(retracted.trace_id == raised.trace_id, "{retracted:?}");
    }

    // Metrics, as Jaeger's Prometheus exporter exposes what arrived over OTLP.
    let deadline = Instant::now() + Duration::from_secs(20);
    let wanted = [
        "goscope_blocking_duration_seconds_bucket{",
        "goscope_findings_total{",
        "goscope_findings_retracted_total{",
        "goscope_goroutines{",
        "go_goroutine_count{",
        "goscope_events_total{",
        "goscope_probe_hits_total{",
        "goscope_probe_cost_seconds_total{",
        "goscope_otlp_exported_total{",
    ];
    loop {
        let text = jaeger.metrics_text()?;
        let missing: Vec<_> = wanted
            .iter()
            .filter(|w| {
                !["smoke-http", "smoke-grpc"]
                    .iter()
                    .all(|svc| text.lines().any(|l| l.starts_with(**w) && l.contains(&format!("job=\"{svc}\""))))
            })
            .collect();
        if missing.is_empty() {
            let line = |prefix: &str| {
                text.lines().find(|l| l.starts_with(prefix) && l.contains("job=\"smoke-grpc\"")).map(str::to_owned)
            };
            let findings = line("goscope_findings_total{").unwrap();
            ensure!(findings.contains("goscope_finding_type=\"deadlock\"") && findings.ends_with(" 1"), "{findings}");
            let cost = line("goscope_probe_cost_seconds_total{").unwrap();
            ensure!(cost.contains("goscope_probe_mode=\"emulated\"") && cost.ends_with(" 2e-06"), "{cost}");
            let waiting = text
                .lines()
                .find(|l| {
                    l.starts_with("goscope_goroutines{")
                        && l.contains("goscope_goroutine_state=\"runnable\"")
                        && l.contains("job=\"smoke-grpc\"")
                })
                .context("no runnable goroutine gauge")?;
            ensure!(waiting.ends_with(" 1"), "{waiting}");
            break;
        }
        if Instant::now() > deadline {
            bail!("metrics missing {missing:?} in:\n{text}");
        }
        thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

/// Rounds that reached Jaeger, by index.
fn rounds_in_jaeger(jaeger: &Jaeger, service: &str, report: &Value) -> Result<Vec<usize>> {
    let spans = jaeger.spans(service)?;
    Ok(report["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, r)| spans.iter().any(|s| op(s) == "deadlock" && tag_str(s, "goscope.finding.id") == r["finding"].as_str()))
        .map(|(i, _)| i)
        .collect())
}

/// The exporter's calls never wait for the backend: the longest single call in the run.
fn assert_never_blocked(report: &Value) -> Result<()> {
    let max = report["max_call_us"].as_u64().unwrap_or(u64::MAX);
    ensure!(max < 50_000, "a recording call took {max} µs: {report}");
    ensure!(report["shutdown_ms"].as_u64() < Some(6_000), "shutdown took too long: {report}");
    Ok(())
}

#[test]
fn smoke_backend_down_at_start_then_up() -> Result<()> {
    prepare()?;
    for protocol in ["grpc", "http/protobuf"] {
        let mut jaeger = Jaeger::start()?;
        jaeger.stop();
        let endpoint = if protocol == "grpc" { jaeger.otlp_grpc_endpoint() } else { jaeger.otlp_http_endpoint() };
        let service = format!("down-at-start-{}", protocol.replace('/', "-"));
        let args: Vec<String> = [
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            protocol,
            "--otlp-service-name",
            &service,
            "--otlp-queue-size",
            "8",
            "--otlp-export-interval",
            "200ms",
            "--otlp-timeout",
            "1s",
            "--rounds",
            "40",
            "--pause",
            "200ms",
            "--keep-finding",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let runner = thread::spawn(move || smoke(&args.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(60)));
        thread::sleep(Duration::from_secs(3));
        jaeger.restart()?;
        let report = runner.join().expect("smoke thread")?;
        assert_never_blocked(&report)?;
        let t = &report["stats"]["traces"];
        ensure!(
            t["dropped"].as_u64().unwrap() + t["failed"].as_u64().unwrap() > 0,
            "nothing lost while the backend was down: {report}"
        );
        ensure!(t["exported"].as_u64() > Some(0), "nothing exported once it came up: {report}");
        let arrived = rounds_in_jaeger(&jaeger, &service, &report)?;
        ensure!(arrived.iter().any(|&i| i >= 30), "late rounds never arrived ({arrived:?}): {report}");
        ensure!(!arrived.contains(&0), "round 0 was sent while the backend was down, yet arrived: {arrived:?}");
    }
    Ok(())
}

#[test]
fn smoke_backend_goes_away_mid_run_and_comes_back() -> Result<()> {
    prepare()?;
    let mut jaeger = Jaeger::start()?;
    let service = "goes-away";
    let endpoint = jaeger.otlp_grpc_endpoint();
    let args: Vec<String> = [
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--otlp-service-name",
        service,
        "--otlp-queue-size",
        "8",
        "--otlp-export-interval",
        "200ms",
        "--otlp-timeout",
        "1s",
        "--rounds",
        "60",
        "--pause",
        "200ms",
        "--keep-finding",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let runner = thread::spawn(move || smoke(&args.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(60)));
    // Up for ~2 s: the first rounds arrive.
    jaeger.wait_spans(service, Duration::from_secs(10), |s| s.iter().any(|s| op(s) == "deadlock"))?;
    thread::sleep(Duration::from_secs(1));
    jaeger.stop();
    thread::sleep(Duration::from_secs(4));
    jaeger.restart()?; // in-memory storage: it comes back empty
    let report = runner.join().expect("smoke thread")?;
    assert_never_blocked(&report)?;
    let t = &report["stats"]["traces"];
    ensure!(t["dropped"].as_u64().unwrap() + t["failed"].as_u64().unwrap() > 0, "nothing lost during the outage: {report}");
    let arrived = rounds_in_jaeger(&jaeger, service, &report)?;
    ensure!(arrived.iter().any(|&i| i >= 50), "no round after the restart arrived ({arrived:?}): {report}");
    Ok(())
}

#[test]
fn smoke_slow_and_hung_backend() -> Result<()> {
    prepare()?;
    let jaeger = Jaeger::start()?;
    // Slow: every request chunk waits 300 ms in the proxy; everything still arrives.
    let proxy = Proxy::start(jaeger.ports.otlp_http, ProxyMode::Delay(Duration::from_millis(300)))?;
    let report = smoke(
        &[
            "--otlp-endpoint",
            &proxy.endpoint(),
            "--otlp-service-name",
            "slow",
            "--otlp-export-interval",
            "200ms",
            "--otlp-timeout",
            "5s",
            "--rounds",
            "10",
            "--pause",
            "100ms",
            "--keep-finding",
        ],
        Duration::from_secs(60),
    )?;
    assert_never_blocked(&report)?;
    let t = &report["stats"]["traces"];
    ensure!(t["failed"] == 0 && t["exported"].as_u64() > Some(0), "{report}");
    let arrived = rounds_in_jaeger(&jaeger, "slow", &report)?;
    ensure!(arrived.len() as u64 >= 5, "slow backend: only rounds {arrived:?} arrived: {report}");

    // Hung for the first half (accepts, never answers), then healthy: goscope times out, counts
    // the loss, keeps going, and the later rounds arrive.
    let proxy = Proxy::start(jaeger.ports.otlp_grpc, ProxyMode::Blackhole)?;
    let endpoint = proxy.endpoint();
    let args: Vec<String> = [
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--otlp-service-name",
        "hung",
        "--otlp-queue-size",
        "8",
        "--otlp-export-interval",
        "200ms",
        "--otlp-timeout",
        "1s",
        "--rounds",
        "50",
        "--pause",
        "200ms",
        "--keep-finding",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let runner = thread::spawn(move || smoke(&args.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(60)));
    thread::sleep(Duration::from_secs(4));
    proxy.set_mode(ProxyMode::Forward);
    let report = runner.join().expect("smoke thread")?;
    assert_never_blocked(&report)?;
    ensure!(proxy.accepted() > 0, "goscope never connected");
    let t = &report["stats"]["traces"];
    ensure!(t["dropped"].as_u64().unwrap() + t["failed"].as_u64().unwrap() > 0, "hung backend cost nothing? {report}");
    let arrived = rounds_in_jaeger(&jaeger, "hung", &report)?;
    ensure!(arrived.iter().any(|&i| i >= 40), "no late round arrived after the backend recovered ({arrived:?}): {report}");
    Ok(())
}

#[test]
fn smoke_tls_when_the_endpoint_is_https() -> Result<()> {
    let dir = goscope_tests::backend::jaeger_dir().join("runs").join(format!("tls-{}", std::process::id()));
    let ca = TestCa::create(&dir)?;
    let jaeger = Jaeger::start_tls(&ca.server_cert, &ca.server_key)?;
    let ca_path = ca.ca_cert.to_string_lossy().into_owned();
    for (protocol, endpoint) in [("grpc", jaeger.otlp_grpcs_endpoint()), ("http/protobuf", jaeger.otlp_https_endpoint())] {
        let service = format!("tls-{}", protocol.replace('/', "-"));
        // Trusting the test CA: everything arrives, over TLS.
        let args = ["--otlp-endpoint", &endpoint, "--otlp-protocol", protocol, "--otlp-service-name", &service, "--keep-finding"];
        let report = smoke_env(&args, &[("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_path)], Duration::from_secs(60))?;
        // Five episode/finding spans, plus lifetime spans of goroutines that exited.
        ensure!(
            report["stats"]["traces"]["failed"] == 0 && report["stats"]["traces"]["exported"].as_u64() >= Some(5),
            "{report}"
        );
        ensure!(report["stats"]["logs"]["exported"] == 1, "{report}");
        let spans = jaeger.wait_spans(&service, Duration::from_secs(20), |s| s.len() >= 5)?;
        ensure!(spans.iter().any(|s| op(s) == "deadlock"), "no deadlock span over TLS");
        // Not trusting it (system roots only): the handshake fails, nothing is exported, goscope
        // still finishes on time.
        let untrusted = format!("{service}-untrusted");
        let args = [
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            protocol,
            "--otlp-service-name",
            &untrusted,
            "--otlp-timeout",
            "1s",
            "--keep-finding",
        ];
        let report = smoke(&args, Duration::from_secs(60))?;
        assert_never_blocked(&report)?;
        ensure!(report["stats"]["traces"]["exported"] == 0 && report["stats"]["traces"]["failed"].as_u64() > Some(0), "{report}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn smoke_gzip_over_http_and_grpc() -> Result<()> {
    let jaeger = Jaeger::start()?;
    // gzip by the flag over HTTP, by the variable over gRPC.
    for (service, endpoint, protocol, flags, env) in [
        ("gzip-http", jaeger.otlp_http_endpoint(), "http/protobuf", &["--otlp-compression", "gzip"][..], &[][..]),
        ("gzip-grpc", jaeger.otlp_grpc_endpoint(), "grpc", &[][..], &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")][..]),
    ] {
        let mut args = vec!["--otlp-endpoint", &endpoint, "--otlp-protocol", protocol, "--otlp-service-name", service];
        args.extend_from_slice(flags);
        let report = smoke_env(&args, env, Duration::from_secs(60))?;
        let t = &report["stats"]["traces"];
        ensure!(t["failed"] == 0 && t["exported"].as_u64() > Some(0) && t["exported"] == t["submitted"], "{report}");
        let spans = jaeger.wait_spans(service, Duration::from_secs(20), |s| s.len() >= 5)?;
        check_round(&spans, &report["rounds"][0])?;
    }
    Ok(())
}

/// Whether this goscope build has the OTLP flags on `attach` (wired by the attach pipeline).
fn attach_has_otlp() -> Result<bool> {
    let out = Command::new(goscope_bin()?).args(["attach", "--help"]).stdin(Stdio::null()).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("--otlp-endpoint"))
}

/// The acceptance test: real goscope, real eBPF, a Go process deadlocked before goscope attached,
/// exported to Jaeger and read back.
#[test]
fn attach_exports_a_deadlocked_fixture_to_jaeger() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    if !attach_has_otlp()? {
        eprintln!("SKIP: `goscope attach` has no --otlp-endpoint yet (OtlpExporter is not wired into attach)");
        return Ok(());
    }
    let jaeger = Jaeger::start()?;
    let fixture = go_binary()?;
    let mut target = fixture.spawn(&[])?;
    let info = target.expect_json("deadlocked", Duration::from_secs(30))?;
    let stuck = info["deadlocked"].as_array().context("fixture report")?.clone();
    let service = "deadlocked-e2e";
    let mut goscope = Goscope::attach(
        target.pid(),
        &[
            "--block-threshold",
            "1s",
            "--no-events",
            "--otlp-endpoint",
            &jaeger.otlp_grpc_endpoint(),
            "--otlp-protocol",
            "grpc",
            "--otlp-service-name",
            service,
            "--otlp-export-interval",
            "500ms",
        ],
    )?;
    goscope.wait_attached(Duration::from_secs(60))?;

    // Each deadlocked goroutine shows up as an ongoing blocking span with the fixture's own facts.
    let spans = jaeger.wait_spans(service, Duration::from_secs(60), |spans| {
        stuck.iter().all(|g| {
            spans
                .iter()
                .any(|s| op(s).starts_with("block: chan send") && tag_i64(s, "goscope.goroutine.id") == g["goid"].as_i64())
        })
    })?;
    for g in &stuck {
        let s = spans
            .iter()
            .find(|s| op(s).starts_with("block: chan send") && tag_i64(s, "goscope.goroutine.id") == g["goid"].as_i64())
            .unwrap();
        ensure!(tag_str(s, "goscope.wait.reason") == Some("chan send"), "{s}");
        ensure!(tag_str(s, "goscope.channel.address") == g["channel"].as_str(), "{s} vs fixture {g}");
        ensure!(tag(s, "goscope.blocking.ongoing") == Some(&Value::Bool(true)), "{s}");
        ensure!(process_tag(s, "process.pid").and_then(Value::as_i64) == Some(i64::from(target.pid())), "{s}");
    }
    // Blocked before attach: the snapshot read their channels' headers (`chan int`, unbuffered)
    // and their stacks, so every ongoing span names the channel's type and the send.
    for g in &stuck {
        let function = g["function"].as_str().context("function")?;
        let send = if function == "main.deadlockA" { "\taToB <- 1" } else { "\tbToA <- 1" };
        let line = main_go_line("deadlocked", send)?;
        for s in spans.iter().filter(|s| tag_i64(s, "goscope.goroutine.id") == g["goid"].as_i64()) {
            ensure!(tag_str(s, "goscope.channel.element_type") == Some("int"), "{s}");
            ensure!(tag_i64(s, "goscope.channel.capacity") == Some(0), "{s}");
            ensure!(tag(s, "goscope.channel.closed") == Some(&Value::Bool(false)), "{s}");
            ensure_park_site(s, "deadlocked", function, line)?;
        }
    }
    // goscope reports the deadlock; its chain is a span linked to both blocking spans.
    goscope.events_until(|e| e["kind"] == "finding" && e["type"] == "deadlock", Duration::from_secs(60))?;
    let stopped = goscope.stop(Duration::from_secs(30))?;
    let spans = jaeger.wait_spans(service, Duration::from_secs(30), |s| s.iter().any(|s| op(s) == "deadlock"))?;
    let chain = spans.iter().find(|s| op(s) == "deadlock").context("deadlock span")?;
    let linked: Vec<_> = references(chain).into_iter().filter(|(t, _, _)| t == "FOLLOWS_FROM").collect();
    ensure!(linked.len() == stuck.len(), "the chain span links {} spans: {chain}", linked.len());
    for (_, _, span_id) in linked {
        let s = spans.iter().find(|s| s["spanID"].as_str() == Some(span_id.as_str())).context("linked span missing")?;
        ensure!(stuck.iter().any(|g| tag_i64(s, "goscope.goroutine.id") == g["goid"].as_i64()), "{s}");
    }
    ensure!(stopped.status.success(), "goscope: {}", stopped.stderr);
    Ok(())
}

/// Short episodes carry their park site: chanrecv10's workers wait on `<-release` for a few
/// milliseconds, far too short for goscope to read their stacks, so the site comes from the
/// return addresses the park probe captured.
#[test]
fn attach_exports_park_sites_of_short_episodes() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let jaeger = Jaeger::start()?;
    let fixture = GoFixture::build("chanrecv10", None, Variant::Plain)?;
    let service = "chanrecv10-e2e";
    let endpoint = jaeger.otlp_grpc_endpoint();
    let run = run_chanrecv10_with(
        &fixture,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "grpc",
            "--otlp-service-name",
            service,
            "--otlp-min-span-duration",
            "0s",
            "--otlp-export-interval",
            "500ms",
        ],
    )?;
    let worker_episode = |spans: &[Value], goid: u64| -> Option<Value> {
        spans.iter().find(|s| op(s) == "block: chan receive" && tag_i64(s, "goscope.goroutine.id") == Some(goid as i64)).cloned()
    };
    let workers = &run.facts.workers;
    let spans = jaeger
        .wait_spans(service, Duration::from_secs(30), |spans| workers.iter().all(|w| worker_episode(spans, w.goid).is_some()))?;
    let line = release_line()?;
    let release_chan = format!("{:#x}", run.facts.release_chan);
    for w in workers {
        let s = worker_episode(&spans, w.goid).unwrap();
        ensure!(tag(&s, "goscope.blocking.ongoing").is_none(), "a finished episode: {s}");
        ensure!(s["duration"].as_i64().is_some_and(|us| us < 1_000_000), "not a short episode: {s}");
        ensure!(tag_str(&s, "goscope.channel.address") == Some(release_chan.as_str()), "{s}");
        ensure!(tag_i64(&s, "goscope.waker.goroutine.id") == Some(run.facts.main_goid as i64), "{s}");
        ensure_park_site(&s, "chanrecv10", WORKER_START_FUNCTION, line)?;
        ensure!(tag_str(&s, "code.file.path") == Some(w.file.as_str()), "the traceback's file is {}: {s}", w.file);
    }
    Ok(())
}

/// The leaky fixture: the orphaned senders are a proven leak, the AB-BA account transfers a
/// deadlock. Each finding is a log record with the severity of its grade, correlated with a span
/// of its own linked to the goroutines' ongoing blocking spans, which name the blocking call
/// (and, for the orphans, their `chan int`).
#[test]
fn attach_exports_leaks_and_deadlocks_of_the_leaky_fixture() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let jaeger = Jaeger::start()?;
    let fixture = GoFixture::build("leaky", None, Variant::Plain)?;
    let mut target = fixture.spawn(&[])?;
    let info = target.expect_json("orphans", Duration::from_secs(30))?;
    let goids = |key: &str| -> Vec<i64> { info[key].as_array().into_iter().flatten().filter_map(Value::as_i64).collect() };
    let (orphans, local_pair) = (goids("orphans"), goids("local_pair"));
    let send_line = info["compute_line"].as_u64().context("compute_line")? + 1;
    let lock_line = main_go_line("leaky", "\tto.mu.Lock() // blocks forever: the other transfer holds it and waits for ours")?;
    let service = "leaky-e2e";
    let mut goscope = Goscope::attach(
        target.pid(),
        &[
            "--block-threshold",
            "1s",
            "--no-events",
            "--otlp-endpoint",
            &jaeger.otlp_grpc_endpoint(),
            "--otlp-protocol",
            "grpc",
            "--otlp-service-name",
            service,
            "--otlp-export-interval",
            "500ms",
        ],
    )?;
    goscope.wait_attached(Duration::from_secs(60))?;
    let sorted_goids = |ids: Vec<i64>| {
        let mut ids = ids;
        ids.sort_unstable();
        ids
    };
    let (mut proven_leak, mut pair_deadlock) = (false, false);
    goscope.events_until(
        |e| {
            let goids =
                sorted_goids(e["goroutines"].as_array().into_iter().flatten().filter_map(|g| g["goid"].as_i64()).collect());
            proven_leak |= e["kind"] == "finding" && e["type"] == "leak" && e["grade"] == "proven";
            pair_deadlock |= e["kind"] == "finding" && e["type"] == "deadlock" && goids == local_pair;
            proven_leak && pair_deadlock
        },
        Duration::from_secs(60),
    )?;
    let stopped = goscope.stop(Duration::from_secs(30))?;
    ensure!(stopped.status.success(), "goscope: {}", stopped.stderr);

    let finding_goids = |s: &Value| sorted_goids(int_list(tag_str(s, "goscope.finding.goroutine.ids")));
    let spans = jaeger.wait_spans(service, Duration::from_secs(30), |spans| {
        spans.iter().any(|s| op(s) == "leak" && tag_str(s, "goscope.finding.grade") == Some("proven"))
            && spans.iter().any(|s| op(s) == "deadlock" && finding_goids(s) == local_pair)
    })?;
    let logs = jaeger.wait_logs(Duration::from_secs(30), |logs| {
        spans.iter().filter(|s| op(s) == "leak" || op(s) == "deadlock").all(|s| finding_record(logs, s).is_some())
    })?;

    // The leak: orphans only, at the send, each linked episode on its own `chan int`.
    let leak = spans.iter().find(|s| op(s) == "leak" && tag_str(s, "goscope.finding.grade") == Some("proven")).unwrap();
    let leaked = finding_goids(leak);
    ensure!(!leaked.is_empty() && leaked.iter().all(|g| orphans.contains(g)), "leaked {leaked:?}, orphans {orphans:?}: {leak}");
    ensure!(tag(leak, "error") == Some(&Value::Bool(true)), "a proven leak is an error span: {leak}");
    ensure_park_site(leak, "leaky", "main.compute", send_line)?;
    let episodes = linked(&spans, leak)?;
    ensure!(episodes.len() == leaked.len(), "the leak links {} spans: {leak}", episodes.len());
    for s in &episodes {
        ensure!(op(s) == "block: chan send" && tag(s, "goscope.blocking.ongoing") == Some(&Value::Bool(true)), "{s}");
        ensure!(tag_i64(s, "goscope.goroutine.id").is_some_and(|g| leaked.contains(&g)), "{s}");
        // One ongoing span per wait: the first finding that named the goroutine (its `blocked`
        // finding, or the leak) exported it, and the leak links to that one.
        let goid = tag_i64(s, "goscope.goroutine.id").unwrap_or(0);
        let by = tag_str(s, "goscope.finding.id").unwrap_or("");
        ensure!(
            Some(by) == tag_str(leak, "goscope.finding.id") || (by.starts_with("blocked:") && by.ends_with(&format!(":{goid}"))),
            "{s}"
        );
        ensure!(
            tag_str(s, "goscope.channel.element_type") == Some("int") && tag_i64(s, "goscope.channel.capacity") == Some(0),
            "{s}"
        );
        ensure_park_site(s, "leaky", "main.compute", send_line)?;
    }
    let record = finding_record(&logs, leak).unwrap();
    ensure!(record.severity_text == "ERROR", "{record:?}");
    ensure!(
        record.attr("goscope.finding.type") == Some("leak") && record.attr("goscope.finding.grade") == Some("proven"),
        "{record:?}"
    );
    ensure!(sorted_goids(int_list(record.attr("goscope.finding.goroutine.ids"))) == leaked, "{record:?}");
    ensure!(record.attr("goscope.finding.wait.reasons").is_some_and(|r| r.contains("chan send")), "{record:?}");
    ensure!(
        record.attr("goscope.finding.channel.addresses").is_some_and(|c| c.matches("0x").count() == leaked.len()),
        "{record:?}"
    );
    ensure!(record.attr("goscope.finding.summary").is_some_and(|s| s.contains(&format!("main.go:{send_line}"))), "{record:?}");
    ensure!(record.attr("code.function.name") == Some("main.compute"), "{record:?}");
    ensure!(record.attr("code.line.number") == Some(send_line.to_string().as_str()), "{record:?}");
    ensure!(record.attr("code.file.path").is_some_and(|f| f.ends_with("/leaky/main.go")), "{record:?}");

    // The local pair's deadlock (suspect from what each refers to, proven once reachability
    // agrees): a chain of both, linked to both Mutex.Lock episodes at the second Lock.
    for chain in spans.iter().filter(|s| op(s) == "deadlock" && finding_goids(s) == local_pair) {
        ensure!(sorted_goids(int_list(tag_str(chain, "goscope.finding.chain"))) == local_pair, "{chain}");
        let episodes = linked(&spans, chain)?;
        let mut linked_goids: Vec<i64> = episodes.iter().filter_map(|s| tag_i64(s, "goscope.goroutine.id")).collect();
        linked_goids.sort_unstable();
        ensure!(linked_goids == local_pair, "the chain links {linked_goids:?}: {chain}");
        for s in &episodes {
            ensure!(op(s) == "block: sync.Mutex.Lock" && tag(s, "goscope.blocking.ongoing") == Some(&Value::Bool(true)), "{s}");
            let lock = tag_str(s, "goscope.lock.address").with_context(|| format!("no lock address: {s}"))?;
            ensure!(tag_str(chain, "goscope.finding.lock.addresses").is_some_and(|l| l.contains(lock)), "{lock} not in {chain}");
            ensure_park_site(s, "leaky", "main.transfer", lock_line)?;
        }
        let proven = tag_str(chain, "goscope.finding.grade") == Some("proven");
        ensure!(proven == (tag(chain, "error") == Some(&Value::Bool(true))), "error status iff proven: {chain}");
        let record = finding_record(&logs, chain).unwrap();
        ensure!(record.attr("goscope.finding.type") == Some("deadlock"), "{record:?}");
        ensure!(sorted_goids(int_list(record.attr("goscope.finding.chain"))) == local_pair, "{record:?}");
    }
    // Every finding's record: WARN when suspect, ERROR when proven.
    for r in logs.iter().filter(|r| r.event_name == "goscope.finding") {
        let expected = if r.attr("goscope.finding.grade") == Some("proven") { "ERROR" } else { "WARN" };
        ensure!(r.severity_text == expected, "{r:?}");
    }
    target.kill();
    Ok(())
}

/// The `goscope.finding` log record of a finding's span (same trace and span).
fn finding_record<'a>(logs: &'a [LogRecord], span: &Value) -> Option<&'a LogRecord> {
    logs.iter().find(|r| {
        r.event_name == "goscope.finding"
            && Some(r.trace_id.as_str()) == span["traceID"].as_str()
            && Some(r.span_id.as_str()) == span["spanID"].as_str()
    })
}

/// `goscope attach` on the sleepers fixture for a few seconds with `extra` flags; the span
/// names Jaeger received for the service, and goscope's summary line.
fn sleepers_spans(jaeger: &Jaeger, service: &str, extra: &[&str]) -> Result<(Vec<String>, Value)> {
    let fixture = GoFixture::build("sleepers", None, Variant::Plain)?;
    let mut target = fixture.spawn(&[])?;
    target.expect_json("fixture", Duration::from_secs(30))?;
    let endpoint = jaeger.otlp_grpc_endpoint();
    let mut args = vec![
        "--no-events",
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "grpc",
        "--otlp-service-name",
        service,
        "--otlp-export-interval",
        "500ms",
    ];
    args.extend_from_slice(extra);
    let mut goscope = Goscope::attach(target.pid(), &args)?;
    goscope.wait_attached(Duration::from_secs(60))?;
    // ~20 episodes of each kind, 150 ms each.
    thread::sleep(Duration::from_secs(3));
    let stopped = goscope.stop(Duration::from_secs(30))?;
    ensure!(stopped.status.success(), "goscope: {}", stopped.stderr);
    let summary = goscope.events().iter().rev().find(|v| v["kind"] == "summary").cloned().context("no summary line")?;
    let spans = jaeger.wait_spans(service, Duration::from_secs(30), |s| s.iter().any(|s| op(s) == "block: chan receive"))?;
    Ok((spans.iter().map(|s| op(s).to_string()).collect(), summary))
}

/// OTLP volume: by default only synchronisation waits become spans (the receiver's 150 ms channel
/// waits do, the sleeper's 150 ms sleeps do not); `--otlp-span-waits sync,sleep` brings sleeps
/// back; and `--otlp-max-spans-per-second` sheds episode spans, counting them.
#[test]
fn attach_exports_sleeps_only_when_asked_and_within_the_rate_limit() -> Result<()> {
    if !require_bpf()? {
        return Ok(());
    }
    let jaeger = Jaeger::start()?;
    let (names, _) = sleepers_spans(&jaeger, "sleepers-default", &[])?;
    ensure!(!names.iter().any(|n| n == "block: sleep"), "sleep spans exported by default: {names:?}");

    let (names, _) = sleepers_spans(&jaeger, "sleepers-sleep", &["--otlp-span-waits", "sync,sleep"])?;
    ensure!(names.iter().any(|n| n == "block: sleep"), "no sleep span with --otlp-span-waits sync,sleep: {names:?}");

    let (names, summary) = sleepers_spans(&jaeger, "sleepers-limited", &["--otlp-max-spans-per-second", "1"])?;
    let traces = &summary["otlp"]["traces"];
    ensure!(traces["rate_limited"].as_u64() > Some(0), "nothing rate-limited at 1 span/s: {summary}");
    let episodes = names.iter().filter(|n| n.starts_with("block: ")).count() as u64;
    // One second's worth at once, then one a second, over ~3-4 s of attach.
    ensure!(episodes <= 6, "{episodes} episode spans at 1 span/s: {names:?}");
    Ok(())
}
