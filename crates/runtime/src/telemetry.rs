//! Logs and traces: `tracing` everywhere, JSON lines on stdout by default (what the
//! `awslogs` driver ships), and OTLP/gRPC export to the logging sidecar when an
//! endpoint is configured.
//!
//! OTLP export runs on the SDK's batch processors with bounded queues, so a slow or
//! absent collector costs dropped telemetry, never a blocked request. What is dropped
//! is counted here (a gate in front of each queue, a counter behind each exporter) and
//! reported: a warning on stdout whenever the count grows, and the totals at shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{BatchLogProcessor, SdkLoggerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
    /// No stdout logs (telemetry still goes to OTLP when configured).
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub log_level: String,
    /// OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317` (the logging sidecar).
    pub otlp_endpoint: Option<String>,
    /// Spans or log records held for export before new ones are dropped.
    pub otlp_queue_size: usize,
    #[serde(with = "humantime_serde")]
    pub otlp_timeout: Duration,
    /// How often a growing count of dropped spans and log records is reported.
    #[serde(with = "humantime_serde")]
    pub otlp_drop_report_interval: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Json,
            log_level: "info".into(),
            otlp_endpoint: None,
            otlp_queue_size: 4096,
            otlp_timeout: Duration::from_secs(5),
            otlp_drop_report_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter `{0}`: {1}")]
    Filter(String, String),
    #[error("OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Keeps the exporters alive; [`Telemetry::shutdown`] flushes them.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    logger: Option<SdkLoggerProvider>,
    spans: Arc<Gate>,
    logs: Arc<Gate>,
    reporter: Option<tokio::task::JoinHandle<()>>,
}

/// Spans and log records that never reached the collector, since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Refused because the export queue was full.
    pub spans_queue_full: u64,
    pub logs_queue_full: u64,
    /// Lost in an export that failed (collector absent, refused, timed out).
    pub spans_export_failed: u64,
    pub logs_export_failed: u64,
}

impl Dropped {
    pub fn total(&self) -> u64 {
        self.spans_queue_full
            + self.logs_queue_full
            + self.spans_export_failed
            + self.logs_export_failed
    }
}

/// Bounds what sits between `emit` and the end of an export, and counts what it
/// turns away and what the exporter fails to deliver.
#[derive(Debug, Default)]
struct Gate {
    in_flight: AtomicUsize,
    limit: usize,
    queue_full: AtomicU64,
    export_failed: AtomicU64,
}

impl Gate {
    fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            ..Self::default()
        }
    }

    fn enter(&self) -> bool {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.queue_full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn leave(&self, n: usize, ok: bool) {
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
        if !ok {
            self.export_failed.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
struct GatedLogs<P> {
    inner: P,
    gate: Arc<Gate>,
}

impl<P: opentelemetry_sdk::logs::LogProcessor> opentelemetry_sdk::logs::LogProcessor
    for GatedLogs<P>
{
    fn emit(
        &self,
        data: &mut opentelemetry_sdk::logs::SdkLogRecord,
        scope: &opentelemetry::InstrumentationScope,
    ) {
        if self.gate.enter() {
            self.inner.emit(data, scope);
        }
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, t: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(t)
    }
    fn event_enabled(
        &self,
        level: opentelemetry::logs::Severity,
        target: &str,
        name: Option<&str>,
    ) -> bool {
        self.inner.event_enabled(level, target, name)
    }
    fn set_resource(&mut self, r: &Resource) {
        self.inner.set_resource(r);
    }
}

#[derive(Debug)]
struct CountedLogs<E> {
    inner: E,
    gate: Arc<Gate>,
}

impl<E: opentelemetry_sdk::logs::LogExporter> opentelemetry_sdk::logs::LogExporter
    for CountedLogs<E>
{
    async fn export(
        &self,
        batch: opentelemetry_sdk::logs::LogBatch<'_>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let n = batch.iter().count();
        let r = self.inner.export(batch).await;
        self.gate.leave(n, r.is_ok());
        r
    }
    fn shutdown_with_timeout(&self, t: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(t)
    }
    fn event_enabled(
        &self,
        level: opentelemetry::logs::Severity,
        target: &str,
        name: Option<&str>,
    ) -> bool {
        self.inner.event_enabled(level, target, name)
    }
    fn set_resource(&mut self, r: &Resource) {
        self.inner.set_resource(r);
    }
}

#[derive(Debug)]
struct GatedSpans<P> {
    inner: P,
    gate: Arc<Gate>,
}

impl<P: opentelemetry_sdk::trace::SpanProcessor> opentelemetry_sdk::trace::SpanProcessor
    for GatedSpans<P>
{
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }
    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        if self.gate.enter() {
            self.inner.on_end(span);
        }
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, t: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(t)
    }
    fn set_resource(&mut self, r: &Resource) {
        self.inner.set_resource(r);
    }
}

#[derive(Debug)]
struct CountedSpans<E> {
    inner: E,
    gate: Arc<Gate>,
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for CountedSpans<E>
{
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let n = batch.len();
        let r = self.inner.export(batch).await;
        self.gate.leave(n, r.is_ok());
        r
    }
    fn shutdown_with_timeout(&self, t: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(t)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }
    fn set_resource(&mut self, r: &Resource) {
        self.inner.set_resource(r);
    }
}

/// Installs the global subscriber. Must run inside a tokio runtime, because the
/// OTLP channel spawns its connection task there.
pub fn init(service: &str, cfg: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.log_level.clone());
    let filter = || {
        EnvFilter::try_new(&directive)
            .map_err(|e| TelemetryError::Filter(directive.clone(), e.to_string()))
    };
    let stdout = match cfg.log_format {
        LogFormat::Json => Some(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_target(true)
                .with_writer(std::io::stdout)
                .with_filter(filter()?)
                .boxed(),
        ),
        LogFormat::Text => Some(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stdout)
                .with_filter(filter()?)
                .boxed(),
        ),
        LogFormat::Off => None,
    };

    let mut telemetry = Telemetry::default();
    let mut otel_layers = Vec::new();
    if let Some(endpoint) = &cfg.otlp_endpoint {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let resource = Resource::builder()
            .with_service_name(service.to_owned())
            .build();
        let err = |source| TelemetryError::Exporter {
            endpoint: endpoint.clone(),
            source,
        };

        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(cfg.otlp_timeout)
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
            .map_err(err)?;
        telemetry.spans = Arc::new(Gate::new(cfg.otlp_queue_size));
        telemetry.logs = Arc::new(Gate::new(cfg.otlp_queue_size));
        let spans = CountedSpans {
            inner: spans,
            gate: telemetry.spans.clone(),
        };
        // The gate admits at most `otlp_queue_size`, so the SDK's own queue (sized
        // with room to spare) never drops behind our count's back.
        let bsp = BatchSpanProcessor::builder(spans)
            .with_batch_config(
                opentelemetry_sdk::trace::BatchConfigBuilder::default()
                    .with_max_queue_size(cfg.otlp_queue_size.max(1) * 2)
                    .build(),
            )
            .build();
        let tracer_provider = SdkTracerProvider::builder()
            .with_span_processor(GatedSpans {
                inner: bsp,
                gate: telemetry.spans.clone(),
            })
            .with_resource(resource.clone())
            .build();
        let tracer = tracer_provider.tracer(service.to_owned());
        otel_layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter()?)
                .boxed(),
        );

        let logs = opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(cfg.otlp_timeout)
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
            .map_err(err)?;
        let logs = CountedLogs {
            inner: logs,
            gate: telemetry.logs.clone(),
        };
        let blp = BatchLogProcessor::builder(logs)
            .with_batch_config(
                opentelemetry_sdk::logs::BatchConfigBuilder::default()
                    .with_max_queue_size(cfg.otlp_queue_size.max(1) * 2)
                    .build(),
            )
            .build();
        let logger_provider = SdkLoggerProvider::builder()
            .with_log_processor(GatedLogs {
                inner: blp,
                gate: telemetry.logs.clone(),
            })
            .with_resource(resource)
            .build();
        otel_layers.push(
            opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(
                &logger_provider,
            )
            .with_filter(filter()?)
            .boxed(),
        );
        telemetry.tracer = Some(tracer_provider);
        telemetry.logger = Some(logger_provider);
    }

    tracing_subscriber::registry()
        .with(stdout)
        // An empty Vec of layers would report a max level of OFF and silence everything.
        .with((!otel_layers.is_empty()).then_some(otel_layers))
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    if telemetry.tracer.is_some() && !cfg.otlp_drop_report_interval.is_zero() {
        telemetry.reporter = Some(tokio::spawn(report_drops(
            telemetry.spans.clone(),
            telemetry.logs.clone(),
            cfg.otlp_drop_report_interval,
        )));
    }
    Ok(telemetry)
}

fn dropped(spans: &Gate, logs: &Gate) -> Dropped {
    Dropped {
        spans_queue_full: spans.queue_full.load(Ordering::Relaxed),
        logs_queue_full: logs.queue_full.load(Ordering::Relaxed),
        spans_export_failed: spans.export_failed.load(Ordering::Relaxed),
        logs_export_failed: logs.export_failed.load(Ordering::Relaxed),
    }
}

/// Warns whenever the dropped count grew since the last look.
async fn report_drops(spans: Arc<Gate>, logs: Arc<Gate>, every: Duration) {
    let mut last = Dropped::default();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = dropped(&spans, &logs);
        if now != last {
            tracing::warn!(
                spans_queue_full = now.spans_queue_full,
                logs_queue_full = now.logs_queue_full,
                spans_export_failed = now.spans_export_failed,
                logs_export_failed = now.logs_export_failed,
                "telemetry dropped since start (the OTLP collector is slow or absent)"
            );
            last = now;
        }
    }
}

impl Telemetry {
    /// Flushes and stops the exporters. Blocks, so async callers run it on a
    /// blocking thread (the exporters' own tasks need the runtime's workers).
    pub fn shutdown(self) {
        if let Some(r) = &self.reporter {
            r.abort();
        }
        if let Some(t) = self.tracer
            && let Err(e) = t.shutdown()
        {
            tracing::warn!(error = %e, "span exporter did not flush cleanly");
        }
        if let Some(l) = self.logger
            && let Err(e) = l.shutdown()
        {
            eprintln!("log exporter did not flush cleanly: {e}");
        }
        // The OTLP pipeline is gone now; stdout (and stderr) still reach the log driver.
        let d = dropped(&self.spans, &self.logs);
        if d.total() > 0 {
            tracing::warn!(
                spans_queue_full = d.spans_queue_full,
                logs_queue_full = d.logs_queue_full,
                spans_export_failed = d.spans_export_failed,
                logs_export_failed = d.logs_export_failed,
                "telemetry dropped in this process's lifetime"
            );
        }
    }

    /// What could not be exported so far.
    pub fn dropped(&self) -> Dropped {
        dropped(&self.spans, &self.logs)
    }

    pub fn is_exporting(&self) -> bool {
        self.tracer.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_counts_what_it_turns_away_and_what_exports_lose() {
        let gate = Gate::new(2);
        assert!(gate.enter() && gate.enter());
        assert!(!gate.enter(), "a third record exceeds the queue");
        gate.leave(1, true);
        assert!(gate.enter(), "an export frees room");
        gate.leave(2, false);
        let d = dropped(&gate, &Gate::new(1));
        assert_eq!(d.spans_queue_full, 1);
        assert_eq!(d.spans_export_failed, 2);
        assert_eq!(d.total(), 3);
        assert_eq!(gate.in_flight.load(Ordering::Relaxed), 0);
    }
}
