//! The OpenTelemetry SDK side: OTLP exporters per signal (gRPC or HTTP/protobuf, TLS for https),
//! wrapped to count what they export and what fails, behind a bounded admission gate that counts
//! what is dropped before it can queue up.
//!
//! Threads: the SDK's batch span and log processors and its periodic metric reader each run their
//! exports on a dedicated thread (blocking on the export future there). The gRPC transport needs a
//! Tokio reactor for its connections, so the exporter owns a small runtime of its own (one worker),
//! separate from goscope's event-path runtime; exporters are built inside it.
use std::{
    collections::HashMap,
    fs,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use opentelemetry_otlp::{Compression, Protocol, RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    logs::{LogBatch, LogExporter},
    metrics::{Temporality, data::ResourceMetrics, exporter::PushMetricExporter},
    trace::{SpanData, SpanExporter},
};

use super::{
    ExportError,
    config::{OtlpCompression, OtlpProtocol, Signal, SignalConfig},
    limit::TokenBucket,
};

/// Counts for one signal. `submitted = exported + failed + dropped-at-shutdown + in flight`;
/// `dropped` were refused at the door because the queue was full.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    capacity: u64,
    submitted: AtomicU64,
    /// Handed to the OTLP exporter (left the SDK's queue).
    taken: AtomicU64,
    dropped: AtomicU64,
    exported: AtomicU64,
    failed: AtomicU64,
    export_errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The rate limit of [`Gate::admit_limited`], if any.
    limit: Option<Mutex<TokenBucket>>,
    rate_limited: AtomicU64,
}

/// What happened to one signal's items.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SignalStats {
    /// Accepted into the export queue.
    pub submitted: u64,
    /// Acknowledged by the backend.
    pub exported: u64,
    /// In batches the backend refused or that timed out after retries.
    pub failed: u64,
    /// Refused because the queue was full (backend slow or away); never queued.
    pub dropped: u64,
    /// Export requests that failed (each may carry many items).
    pub export_errors: u64,
    /// Refused by the rate limit (`--otlp-max-spans-per-second`); never queued.
    pub rate_limited: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl SignalStats {
    /// Accepted but neither exported nor failed: still queued, or lost at shutdown.
    pub fn unsent(&self) -> u64 {
        self.submitted.saturating_sub(self.exported + self.failed)
    }
}

impl Gate {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self { capacity: capacity as u64, ..Self::default() })
    }

    /// A gate whose [`Gate::admit_limited`] lets at most `per_second` items a second through
    /// (0: no limit).
    pub(crate) fn with_rate(capacity: usize, per_second: u32) -> Arc<Self> {
        let limit = (per_second > 0).then(|| Mutex::new(TokenBucket::new(per_second, std::time::Instant::now())));
        Arc::new(Self { capacity: capacity as u64, limit, ..Self::default() })
    }

    /// [`Gate::admit`] for items that may be shed under load: first the rate limit (a refusal
    /// counts in `rate_limited`), then the queue.
    pub(crate) fn admit_limited(&self) -> bool {
        if let Some(limit) = &self.limit {
            let allowed = limit.lock().map(|mut b| b.take(std::time::Instant::now())).unwrap_or(true);
            if !allowed {
                self.rate_limited.fetch_add(1, Relaxed);
                return false;
            }
        }
        self.admit()
    }

    /// Whether one more item may enter the SDK's queue. The count of items in the SDK between
    /// admission and the exporter never exceeds the capacity, which is also the SDK queue's size,
    /// so the SDK itself never drops: every drop is counted here. Lock-free.
    pub(crate) fn admit(&self) -> bool {
        let in_queue = self.submitted.load(Relaxed).saturating_sub(self.taken.load(Relaxed));
        if in_queue >= self.capacity {
            self.dropped.fetch_add(1, Relaxed);
            false
        } else {
            self.submitted.fetch_add(1, Relaxed);
            true
        }
    }

    fn record_export(&self, n: u64, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                self.exported.fetch_add(n, Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(n, Relaxed);
                self.export_errors.fetch_add(1, Relaxed);
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(e.to_string());
                }
            }
        }
    }

    pub(crate) fn stats(&self) -> SignalStats {
        SignalStats {
            submitted: self.submitted.load(Relaxed),
            exported: self.exported.load(Relaxed),
            failed: self.failed.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            export_errors: self.export_errors.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            last_error: self.last_error.lock().ok().and_then(|l| l.clone()),
        }
    }
}

/// An exporter that tells its [`Gate`] how each export went.
#[derive(Debug)]
pub(crate) struct Counted<E> {
    inner: E,
    gate: Arc<Gate>,
}

impl<E> Counted<E> {
    pub(crate) fn new(inner: E, gate: Arc<Gate>) -> Self {
        Self { inner, gate }
    }
}

/// `export`, an export of `n` items, counted in `gate` as taken now and as exported or failed
/// when it ends.
fn counted<F: Future<Output = OTelSdkResult>>(
    gate: &Arc<Gate>,
    n: u64,
    export: F,
) -> impl Future<Output = OTelSdkResult> + use<F> {
    gate.taken.fetch_add(n, Relaxed);
    let gate = Arc::clone(gate);
    async move {
        let result = export.await;
        gate.record_export(n, &result);
        result
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let n = batch.len() as u64;
        counted(&self.gate, n, self.inner.export(batch))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for Counted<E> {
    fn export(&self, batch: LogBatch<'_>) -> impl Future<Output = OTelSdkResult> + Send {
        let n = batch.iter().count() as u64;
        counted(&self.gate, n, self.inner.export(batch))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Metrics are aggregated in memory, not queued: the gate counts collections (one item each).
impl<E: PushMetricExporter> PushMetricExporter for Counted<E> {
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        self.gate.submitted.fetch_add(1, Relaxed);
        counted(&self.gate, 1, self.inner.export(metrics))
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// Retries with exponential backoff: 250 ms doubling up to 4 s, jittered, at most 4 times, and
/// never beyond the request timeout in total (the OTLP exporter's own budget).
fn retry_policy() -> RetryPolicy {
    RetryPolicy::recommended()
        .with_max_retries(4)
        .with_initial_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(4))
        .with_max_jitter(Duration::from_millis(100))
}

fn read_ca(c: &SignalConfig) -> Result<Option<Vec<u8>>, ExportError> {
    c.ca_certificate
        .as_ref()
        .map(|p| {
            fs::read(p).map_err(|e| ExportError::Config(format!("OTLP {} CA certificate {}: {e}", c.signal.name(), p.display())))
        })
        .transpose()
}

fn grpc_metadata(c: &SignalConfig) -> Result<opentelemetry_otlp::tonic_types::metadata::MetadataMap, ExportError> {
    let mut headers = http::HeaderMap::new();
    for (k, v) in &c.headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| ExportError::Config(format!("OTLP header name {k:?} is not valid in gRPC metadata")))?;
        let value = http::HeaderValue::from_str(v)
            .map_err(|_| ExportError::Config(format!("OTLP header {k:?} has a value that is not valid in gRPC metadata")))?;
        headers.insert(name, value);
    }
    Ok(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers))
}

fn grpc_tls(c: &SignalConfig) -> Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig, ExportError> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
    let mut tls = ClientTlsConfig::new().with_native_roots();
    if let Some(pem) = read_ca(c)? {
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    Ok(tls)
}

/// A blocking HTTP client trusting the extra CA, built off any async context (reqwest's blocking
/// client owns a runtime that must not be created or dropped inside another).
fn http_client_with_ca(c: &SignalConfig, pem: Vec<u8>) -> Result<reqwest::blocking::Client, ExportError> {
    let timeout = c.timeout;
    let signal = c.signal.name();
    std::thread::Builder::new()
        .name("goscope-otlp-init".into())
        .spawn(move || {
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| format!("OTLP {signal} CA certificate: {e}"))?;
            reqwest::blocking::Client::builder()
                .timeout(timeout)
                .add_root_certificate(cert)
                .build()
                .map_err(|e| format!("OTLP {signal} HTTP client: {e}"))
        })
        .map_err(|e| ExportError::Io(e.to_string()))?
        .join()
        .map_err(|_| ExportError::Io("building the OTLP HTTP client panicked".into()))?
        .map_err(ExportError::Config)
}

fn http_headers(c: &SignalConfig) -> HashMap<String, String> {
    c.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Configures and builds one signal's OTLP exporter; the three signals' builders are distinct
/// types with the same methods, hence a macro.
macro_rules! build_exporter {
    ($builder:expr, $c:expr) => {{
        let c: &SignalConfig = $c;
        let err = |e: opentelemetry_otlp::ExporterBuildError| {
            ExportError::Config(format!("OTLP {} exporter for {}: {e}", c.signal.name(), c.endpoint))
        };
        match c.protocol {
            OtlpProtocol::Grpc => {
                let mut b = $builder
                    .with_tonic()
                    .with_protocol(Protocol::Grpc)
                    .with_endpoint(c.endpoint.clone())
                    .with_timeout(c.timeout)
                    .with_metadata(grpc_metadata(c)?)
                    .with_retry_policy(retry_policy());
                if c.tls {
                    b = b.with_tls_config(grpc_tls(c)?);
                }
                if c.compression == OtlpCompression::Gzip {
                    b = b.with_compression(Compression::Gzip);
                }
                b.build().map_err(err)?
            }
            OtlpProtocol::HttpProtobuf => {
                let mut b = $builder
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(c.endpoint.clone())
                    .with_timeout(c.timeout)
                    .with_headers(http_headers(c))
                    .with_retry_policy(retry_policy());
                if let Some(pem) = read_ca(c)? {
                    b = b.with_http_client(http_client_with_ca(c, pem)?);
                }
                if c.compression == OtlpCompression::Gzip {
                    b = b.with_compression(Compression::Gzip);
                }
                b.build().map_err(err)?
            }
        }
    }};
}

pub(crate) fn span_exporter(c: &SignalConfig) -> Result<opentelemetry_otlp::SpanExporter, ExportError> {
    debug_assert_eq!(c.signal, Signal::Traces);
    Ok(build_exporter!(opentelemetry_otlp::SpanExporter::builder(), c))
}

pub(crate) fn log_exporter(c: &SignalConfig) -> Result<opentelemetry_otlp::LogExporter, ExportError> {
    debug_assert_eq!(c.signal, Signal::Logs);
    Ok(build_exporter!(opentelemetry_otlp::LogExporter::builder(), c))
}

pub(crate) fn metric_exporter(c: &SignalConfig) -> Result<opentelemetry_otlp::MetricExporter, ExportError> {
    debug_assert_eq!(c.signal, Signal::Metrics);
    Ok(build_exporter!(opentelemetry_otlp::MetricExporter::builder().with_temporality(Temporality::Cumulative), c))
}

/// Installs rustls's ring provider as the process default (reqwest is built without one), once.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_bounds_what_waits_and_counts_drops() {
        let g = Gate::new(2);
        assert!(g.admit());
        assert!(g.admit());
        assert!(!g.admit(), "third item while two wait");
        g.taken.fetch_add(2, Relaxed); // the exporter took both
        assert!(g.admit());
        g.record_export(2, &Ok(()));
        g.record_export(1, &Err(opentelemetry_sdk::error::OTelSdkError::Timeout(Duration::from_secs(1))));
        let s = g.stats();
        assert_eq!((s.submitted, s.exported, s.failed, s.dropped, s.export_errors), (3, 2, 1, 1, 1));
        assert!(s.last_error.is_some());
    }
}
