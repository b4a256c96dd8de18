//! Logs and traces: `tracing` everywhere, JSON lines on stdout by default (what the
//! `awslogs` driver ships), and OTLP/gRPC export to the logging sidecar when an
//! endpoint is configured.
//!
//! OTLP export runs on the SDK's batch processors with bounded queues, so a slow or
//! absent collector costs dropped telemetry, never a blocked request.

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
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Json,
            log_level: "info".into(),
            otlp_endpoint: None,
            otlp_queue_size: 4096,
            otlp_timeout: Duration::from_secs(5),
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
        let bsp = BatchSpanProcessor::builder(spans)
            .with_batch_config(
                opentelemetry_sdk::trace::BatchConfigBuilder::default()
                    .with_max_queue_size(cfg.otlp_queue_size)
                    .build(),
            )
            .build();
        let tracer_provider = SdkTracerProvider::builder()
            .with_span_processor(bsp)
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
        let blp = BatchLogProcessor::builder(logs)
            .with_batch_config(
                opentelemetry_sdk::logs::BatchConfigBuilder::default()
                    .with_max_queue_size(cfg.otlp_queue_size)
                    .build(),
            )
            .build();
        let logger_provider = SdkLoggerProvider::builder()
            .with_log_processor(blp)
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
    Ok(telemetry)
}

impl Telemetry {
    /// Flushes and stops the exporters. Blocks, so async callers run it on a
    /// blocking thread (the exporters' own tasks need the runtime's workers).
    pub fn shutdown(self) {
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
    }

    pub fn is_exporting(&self) -> bool {
        self.tracer.is_some()
    }
}
