//! `--otlp-*` flags and the standard `OTEL_EXPORTER_OTLP_*` environment variables, resolved into
//! one [`SignalConfig`] per signal.
//!
//! Precedence, per setting and signal: flag > `OTEL_EXPORTER_OTLP_<SIGNAL>_<SETTING>` >
//! `OTEL_EXPORTER_OTLP_<SETTING>` > default. Export is off unless an endpoint is given by the flag
//! or by one of the endpoint variables.
use std::{collections::BTreeMap, fmt, time::Duration};

use super::ExportError;

/// Wire protocol of an OTLP exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (conventionally port 4317).
    #[value(name = "grpc")]
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (conventionally port 4318).
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
        }
    }

    fn parse_env(var: &str, value: &str) -> Result<Self, ExportError> {
        match value.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => {
                Err(ExportError::Config(format!("{var}={other}: goscope speaks `grpc` and `http/protobuf` (not http/json)")))
            }
        }
    }
}

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compression of OTLP request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpCompression {
    Gzip,
    None,
}

impl OtlpCompression {
    /// Exact values only, not trimmed: the OTLP SDK reads these variables itself whenever it is
    /// given no compression, and must read them as goscope does.
    fn parse_env(var: &str, value: &str) -> Result<Self, ExportError> {
        match value {
            "gzip" => Ok(Self::Gzip),
            "none" => Ok(Self::None),
            other => Err(ExportError::Config(format!("{var}={other:?}: goscope compresses with `gzip` or not at all (`none`)"))),
        }
    }
}

/// Which blocking episodes become spans (`--otlp-span-waits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum SpanWaits {
    /// Synchronisation: channel send/receive, select, Mutex, RWMutex, WaitGroup, Cond, semaphores.
    Sync,
    /// time.Sleep.
    Sleep,
    /// Network and file IO waits (the netpoller).
    Io,
    /// The runtime's own idle waits (GC workers, finalizers, timers, ...).
    Runtime,
}

impl SpanWaits {
    /// Which of these a wait of class `class` is.
    pub fn of(class: crate::model::state::WaitClass) -> Self {
        use crate::model::state::WaitClass as C;
        match class {
            C::Sleep => Self::Sleep,
            C::IoWait => Self::Io,
            C::Runtime | C::Other => Self::Runtime,
            _ => Self::Sync,
        }
    }
}

/// OTLP export of spans, logs and metrics. Off unless `--otlp-endpoint` or an
/// `OTEL_EXPORTER_OTLP_*ENDPOINT` variable is set.
#[derive(clap::Args, Debug, Clone)]
pub struct OtlpArgs {
    /// Send traces, finding logs and metrics over OTLP to this collector or backend, e.g.
    /// http://127.0.0.1:4318 (https:// uses TLS). Defaults to OTEL_EXPORTER_OTLP_ENDPOINT and the
    /// per-signal OTEL_EXPORTER_OTLP_{TRACES,LOGS,METRICS}_ENDPOINT; no endpoint, no export.
    #[arg(long = "otlp-endpoint", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport [default: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf].
    #[arg(long = "otlp-protocol", value_enum, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<OtlpProtocol>,
    /// Export a span only for blocking episodes at least this long (all episodes still count in the
    /// blocking-duration histogram).
    #[arg(long = "otlp-min-span-duration", value_name = "DURATION", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub otlp_min_span_duration: Duration,
    /// Extra request header (KEY=VALUE, repeatable), e.g. authorization [added to
    /// OTEL_EXPORTER_OTLP_HEADERS].
    #[arg(long = "otlp-header", value_name = "KEY=VALUE")]
    pub otlp_header: Vec<String>,
    /// Give up on one export request after this long [default: OTEL_EXPORTER_OTLP_TIMEOUT (ms),
    /// else 10s].
    #[arg(long = "otlp-timeout", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub otlp_timeout: Option<Duration>,
    /// Compression of request bodies [default: OTEL_EXPORTER_OTLP_COMPRESSION, else none].
    #[arg(long = "otlp-compression", value_enum, value_name = "COMPRESSION")]
    pub otlp_compression: Option<OtlpCompression>,
    /// How often batched spans and logs are sent and metrics are collected.
    #[arg(long = "otlp-export-interval", value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub otlp_export_interval: Duration,
    /// Spans (and, separately, log records) waiting for export at most; beyond it new ones are
    /// dropped and counted, so a slow or absent backend never slows goscope down.
    #[arg(long = "otlp-queue-size", value_name = "N", default_value_t = 4096)]
    pub otlp_queue_size: usize,
    /// service.name of the exported resource [default: OTEL_SERVICE_NAME, else the target's
    /// executable name].
    #[arg(long = "otlp-service-name", value_name = "NAME")]
    pub otlp_service_name: Option<String>,
    /// Blocking episodes that become spans, comma-separated: sync (channels, select, locks), sleep,
    /// io, runtime. Every episode still counts in the blocking-duration histogram.
    #[arg(long = "otlp-span-waits", value_enum, value_name = "WAITS", value_delimiter = ',', default_value = "sync")]
    pub otlp_span_waits: Vec<SpanWaits>,
    /// Most blocking-episode and lifetime spans exported per second for one watched process (0: no
    /// limit); the rest are counted as rate_limited. Finding spans are never limited.
    #[arg(long = "otlp-max-spans-per-second", value_name = "N", default_value_t = 200)]
    pub otlp_max_spans_per_second: u32,
    /// Also export the target's command line (process.command_args). Off by default: command
    /// lines often carry secrets; the executable's name and path are always exported.
    #[arg(long = "otlp-command-args")]
    pub otlp_command_args: bool,
}

impl Default for OtlpArgs {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_protocol: None,
            otlp_min_span_duration: Duration::from_millis(100),
            otlp_header: Vec::new(),
            otlp_timeout: None,
            otlp_compression: None,
            otlp_export_interval: Duration::from_secs(2),
            otlp_queue_size: 4096,
            otlp_service_name: None,
            otlp_span_waits: vec![SpanWaits::Sync],
            otlp_max_spans_per_second: 200,
            otlp_command_args: false,
        }
    }
}

/// The three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Traces,
    Logs,
    Metrics,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Logs, Signal::Metrics];

    pub fn name(self) -> &'static str {
        match self {
            Self::Traces => "traces",
            Self::Logs => "logs",
            Self::Metrics => "metrics",
        }
    }

    fn env_infix(self) -> &'static str {
        match self {
            Self::Traces => "TRACES",
            Self::Logs => "LOGS",
            Self::Metrics => "METRICS",
        }
    }

    /// Path appended to a base endpoint for OTLP/HTTP.
    fn http_path(self) -> &'static str {
        match self {
            Self::Traces => "v1/traces",
            Self::Logs => "v1/logs",
            Self::Metrics => "v1/metrics",
        }
    }
}

/// Where and how one signal is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalConfig {
    pub signal: Signal,
    pub protocol: OtlpProtocol,
    /// Full URL: for http/protobuf including the `/v1/<signal>` path, for gRPC `scheme://host:port`.
    pub endpoint: String,
    pub tls: bool,
    /// PEM file of the CA to trust for this endpoint (`OTEL_EXPORTER_OTLP_[SIGNAL_]CERTIFICATE`),
    /// in addition to the system's roots.
    pub ca_certificate: Option<std::path::PathBuf>,
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
    pub compression: OtlpCompression,
}

/// Everything [`super::OtlpExporter::start`] needs, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedConfig {
    pub signals: Vec<SignalConfig>,
    pub min_span_duration: Duration,
    /// Blocking episodes that become spans.
    pub span_waits: Vec<SpanWaits>,
    /// Rate limit of episode and lifetime spans (0: none).
    pub max_spans_per_second: u32,
    pub export_interval: Duration,
    pub queue_size: usize,
    pub service_name: Option<String>,
    /// Warnings for the user (likely misconfigurations that are not errors).
    pub warnings: Vec<String>,
}

impl ResolvedConfig {
    pub fn signal(&self, s: Signal) -> Option<&SignalConfig> {
        self.signals.iter().find(|c| c.signal == s)
    }
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl OtlpArgs {
    /// Resolves flags and the process environment. `Ok(None)`: no endpoint anywhere, export off.
    pub fn resolve(&self) -> Result<Option<ResolvedConfig>, ExportError> {
        self.resolve_with(|k| std::env::var(k).ok())
    }

    /// Like [`Self::resolve`], reading variables through `env` (for tests).
    pub fn resolve_with(&self, env: impl Fn(&str) -> Option<String>) -> Result<Option<ResolvedConfig>, ExportError> {
        // Empty variables count as unset, as the specification asks.
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty()).map(|v| (name.to_owned(), v));
        let flag_endpoint = self.otlp_endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty());
        let mut signals = Vec::new();
        let mut warnings = Vec::new();
        for signal in Signal::ALL {
            let per = |setting: &str| var(&format!("OTEL_EXPORTER_OTLP_{}_{setting}", signal.env_infix()));
            let generic = |setting: &str| var(&format!("OTEL_EXPORTER_OTLP_{setting}"));

            let protocol = match self.otlp_protocol {
                Some(p) => p,
                None => match per("PROTOCOL").or_else(|| generic("PROTOCOL")) {
                    Some((name, value)) => OtlpProtocol::parse_env(&name, &value)?,
                    None => OtlpProtocol::HttpProtobuf,
                },
            };
            // A base endpoint (flag or generic variable) gets the signal path appended for HTTP; a
            // per-signal variable is used as is.
            let (endpoint, source) = if let Some(e) = flag_endpoint {
                (join_base(e, signal, protocol), "--otlp-endpoint".to_owned())
            } else if let Some((name, e)) = per("ENDPOINT") {
                (e.trim().to_owned(), name)
            } else if let Some((name, e)) = generic("ENDPOINT") {
                (join_base(e.trim(), signal, protocol), name)
            } else {
                continue;
            };
            let tls = check_endpoint(&endpoint, &source)?;
            if protocol == OtlpProtocol::HttpProtobuf && port_of(&endpoint) == Some(4317) {
                warnings.push(format!(
                    "{source} {endpoint} uses port 4317, conventionally OTLP/gRPC, with http/protobuf; pass --otlp-protocol grpc if that is a gRPC receiver"
                ));
            } else if protocol == OtlpProtocol::Grpc && port_of(&endpoint) == Some(4318) {
                warnings.push(format!(
                    "{source} {endpoint} uses port 4318, conventionally OTLP/HTTP, with grpc; pass --otlp-protocol http/protobuf if that is an HTTP receiver"
                ));
            }

            let mut headers = BTreeMap::new();
            for (name, value) in [generic("HEADERS"), per("HEADERS")].into_iter().flatten() {
                headers.extend(parse_headers(&value).map_err(|e| ExportError::Config(format!("{name}: {e}")))?);
            }
            for h in &self.otlp_header {
                let (k, v) =
                    h.split_once('=').ok_or_else(|| ExportError::Config(format!("--otlp-header {h:?}: expected KEY=VALUE")))?;
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }

            let timeout = match self.otlp_timeout {
                Some(t) => t,
                None => match per("TIMEOUT").or_else(|| generic("TIMEOUT")) {
                    Some((name, ms)) => Duration::from_millis(
                        ms.trim()
                            .parse::<u64>()
                            .map_err(|_| ExportError::Config(format!("{name}={ms}: expected a whole number of milliseconds")))?,
                    ),
                    None => DEFAULT_TIMEOUT,
                },
            };
            if timeout.is_zero() {
                return Err(ExportError::Config("the OTLP timeout must be above zero".into()));
            }
            let compression = match (self.otlp_compression, per("COMPRESSION").or_else(|| generic("COMPRESSION"))) {
                // Given no compression, the OTLP SDK applies these variables itself, so the flag
                // cannot switch off one that asks for compression.
                (Some(OtlpCompression::None), Some((name, value))) if value != "none" => {
                    return Err(ExportError::Config(format!(
                        "--otlp-compression none cannot override {name}={value} (the OpenTelemetry SDK applies it itself): unset it"
                    )));
                }
                (Some(c), _) => c,
                (None, Some((name, value))) => OtlpCompression::parse_env(&name, &value)?,
                (None, None) => OtlpCompression::None,
            };
            let ca_certificate = per("CERTIFICATE").or_else(|| generic("CERTIFICATE")).map(|(_, p)| p.trim().into());
            signals.push(SignalConfig { signal, protocol, endpoint, tls, ca_certificate, headers, timeout, compression });
        }
        if signals.is_empty() {
            return Ok(None);
        }
        if self.otlp_queue_size == 0 {
            return Err(ExportError::Config("--otlp-queue-size must be at least 1".into()));
        }
        if self.otlp_export_interval.is_zero() {
            return Err(ExportError::Config("--otlp-export-interval must be above zero".into()));
        }
        Ok(Some(ResolvedConfig {
            signals,
            min_span_duration: self.otlp_min_span_duration,
            span_waits: self.otlp_span_waits.clone(),
            max_spans_per_second: self.otlp_max_spans_per_second,
            export_interval: self.otlp_export_interval,
            queue_size: self.otlp_queue_size,
            service_name: self.otlp_service_name.clone().or_else(|| var("OTEL_SERVICE_NAME").map(|(_, v)| v.trim().to_owned())),
            warnings,
        }))
    }
}

/// `http://host:4318` + traces → `http://host:4318/v1/traces` (HTTP only; gRPC endpoints carry no path).
fn join_base(base: &str, signal: Signal, protocol: OtlpProtocol) -> String {
    match protocol {
        OtlpProtocol::Grpc => base.to_owned(),
        OtlpProtocol::HttpProtobuf => {
            format!("{}/{}", base.trim_end_matches('/'), signal.http_path())
        }
    }
}

/// Checks the scheme; returns whether the endpoint uses TLS.
fn check_endpoint(endpoint: &str, source: &str) -> Result<bool, ExportError> {
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| ExportError::Config(format!("{source} {endpoint:?}: expected http://HOST:PORT or https://HOST:PORT")))?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if host.is_empty() {
        return Err(ExportError::Config(format!("{source} {endpoint:?}: no host")));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "http" => Ok(false),
        "https" => Ok(true),
        other => Err(ExportError::Config(format!("{source} {endpoint:?}: unsupported scheme {other:?} (use http or https)"))),
    }
}

fn port_of(endpoint: &str) -> Option<u16> {
    let rest = endpoint.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let (_, port) = authority.rsplit_once(':')?;
    port.parse().ok()
}

/// `k1=v1,k2=v2` with percent-encoded values (W3C baggage-like, as the OTLP exporter spec says).
/// Keys are lower-cased (HTTP/2 and gRPC metadata require it).
pub fn parse_headers(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| format!("{item:?} is not KEY=VALUE"))?;
        let k = percent_decode(k.trim())?.to_ascii_lowercase();
        if k.is_empty() {
            return Err(format!("{item:?} has an empty key"));
        }
        out.push((k, percent_decode(v.trim())?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let b = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(args: &OtlpArgs, env: &[(&str, &str)]) -> Result<Option<ResolvedConfig>, ExportError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        args.resolve_with(|k| env.get(k).cloned())
    }

    #[test]
    fn off_without_any_endpoint() {
        assert_eq!(resolve(&OtlpArgs::default(), &[("OTEL_EXPORTER_OTLP_HEADERS", "a=b")]).unwrap(), None);
        assert_eq!(resolve(&OtlpArgs::default(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap(), None);
    }

    #[test]
    fn flag_endpoint_is_a_base_url_for_http() {
        let args = OtlpArgs { otlp_endpoint: Some("http://127.0.0.1:4318/".into()), ..OtlpArgs::default() };
        let c = resolve(&args, &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:1/x")]).unwrap().unwrap();
        assert_eq!(c.signal(Signal::Traces).unwrap().endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(c.signal(Signal::Logs).unwrap().endpoint, "http://127.0.0.1:4318/v1/logs");
        assert_eq!(c.signal(Signal::Metrics).unwrap().protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(c.signal(Signal::Metrics).unwrap().timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.signal(Signal::Metrics).unwrap().compression, OtlpCompression::None);
        assert!(!c.signal(Signal::Metrics).unwrap().tls);
    }

    #[test]
    fn per_signal_variables_override_generic_ones_and_are_used_verbatim() {
        let c = resolve(
            &OtlpArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:4318/custom/logs"),
                ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20abc,x-tenant=t1"),
                ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-tenant=t2"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "700"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "none"),
            ],
        )
        .unwrap()
        .unwrap();
        let t = c.signal(Signal::Traces).unwrap();
        assert_eq!((t.protocol, t.endpoint.as_str(), t.tls), (OtlpProtocol::Grpc, "https://collector:4317", true));
        assert_eq!(t.timeout, Duration::from_millis(700));
        assert_eq!(t.headers.get("authorization").map(String::as_str), Some("Bearer abc"));
        assert_eq!(t.compression, OtlpCompression::Gzip);
        let l = c.signal(Signal::Logs).unwrap();
        assert_eq!((l.protocol, l.endpoint.as_str(), l.tls), (OtlpProtocol::HttpProtobuf, "http://logs:4318/custom/logs", false));
        assert_eq!(l.timeout, Duration::from_millis(2500));
        assert_eq!(l.compression, OtlpCompression::None);
        let m = c.signal(Signal::Metrics).unwrap();
        assert_eq!(m.headers.get("x-tenant").map(String::as_str), Some("t2"));
    }

    #[test]
    fn only_signals_with_an_endpoint_are_exported() {
        let c =
            resolve(&OtlpArgs::default(), &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/v1/traces")]).unwrap().unwrap();
        assert_eq!(c.signals.len(), 1);
        assert_eq!(c.signals[0].signal, Signal::Traces);
    }

    #[test]
    fn flags_beat_variables() {
        let args = OtlpArgs {
            otlp_endpoint: Some("http://a:4317".into()),
            otlp_protocol: Some(OtlpProtocol::Grpc),
            otlp_timeout: Some(Duration::from_secs(3)),
            otlp_header: vec!["X-Key=v".into()],
            otlp_compression: Some(OtlpCompression::Gzip),
            ..OtlpArgs::default()
        };
        let env = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
        ];
        let c = resolve(&args, &env).unwrap().unwrap();
        for s in &c.signals {
            assert_eq!(
                (s.protocol, s.endpoint.as_str(), s.timeout, s.compression),
                (OtlpProtocol::Grpc, "http://a:4317", Duration::from_secs(3), OtlpCompression::Gzip)
            );
            assert_eq!(s.headers.get("x-key").map(String::as_str), Some("v"));
        }
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn bad_settings_are_one_line_errors() {
        let bad = |args: OtlpArgs, env: &[(&str, &str)]| resolve(&args, env).unwrap_err().to_string();
        let with = |e: &str| OtlpArgs { otlp_endpoint: Some(e.into()), ..OtlpArgs::default() };
        assert!(bad(with("localhost:4318"), &[]).contains("expected http://"));
        assert!(bad(with("ftp://x:1"), &[]).contains("unsupported scheme"));
        assert!(bad(with("http://x:1"), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).contains("http/json"));
        assert!(bad(with("http://x:1"), &[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]).contains("milliseconds"));
        assert!(bad(with("http://x:1"), &[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]).contains("KEY=VALUE"));
        assert!(bad(with("http://x:1"), &[("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "zstd")]).contains("`gzip`"));
        assert!(bad(with("http://x:1"), &[("OTEL_EXPORTER_OTLP_COMPRESSION", " none")]).contains("`none`"));
    }

    #[test]
    fn compression_flag_none_cannot_override_a_variable_asking_for_gzip() {
        let args = OtlpArgs {
            otlp_endpoint: Some("http://x:1".into()),
            otlp_compression: Some(OtlpCompression::None),
            ..OtlpArgs::default()
        };
        let err = resolve(&args, &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]).unwrap_err().to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_COMPRESSION=gzip"), "{err}");
        // Per-signal variables saying none shadow the generic one for the SDK too: no conflict.
        let env = [
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "none"),
        ];
        assert!(resolve(&args, &env).unwrap().unwrap().signals.iter().all(|s| s.compression == OtlpCompression::None));
    }

    #[test]
    fn conventional_port_mismatch_warns() {
        let args = OtlpArgs { otlp_endpoint: Some("http://127.0.0.1:4317".into()), ..OtlpArgs::default() };
        let c = resolve(&args, &[]).unwrap().unwrap();
        assert_eq!(c.warnings.len(), 3);
        assert!(c.warnings[0].contains("--otlp-protocol grpc"));
    }

    #[test]
    fn headers_decode() {
        assert_eq!(
            parse_headers("a=1, B = x%3Dy ,,").unwrap(),
            vec![("a".to_owned(), "1".to_owned()), ("b".to_owned(), "x=y".to_owned())]
        );
        assert!(parse_headers("a=%zz").is_err());
    }
}
