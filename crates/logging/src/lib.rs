//! The logging sidecar: an OTLP/gRPC receiver on localhost:4317 that every other
//! container sends its logs and traces to, and exporters that ship them on (stdout
//! JSON lines, rotating files, another OTLP endpoint, CloudWatch Logs).
//!
//! Each exporter has a bounded buffer. A request goes into all of them or none: when
//! one is full the sender gets UNAVAILABLE with RetryInfo and keeps its data, so a
//! slow destination turns into backpressure, not memory growth or silent loss.

pub mod cli;
pub mod config;
mod pipeline;
mod render;
mod service;
mod sinks;

use std::collections::HashSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fargo_runtime::Services;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{
    BufferConfig, CloudWatchConfig, Config, DEFAULT_LISTEN, ExporterConfig, FileConfig,
    LifecycleConfig, OtlpConfig, ReceiverConfig, StdoutConfig,
};
pub use pipeline::Refusal;
pub use service::{Receiver, StatsService};

/// The stats API (`fargo.logging.v1`).
pub mod pb {
    #![allow(clippy::all, missing_docs, unreachable_pub)]
    tonic::include_proto!("fargo.logging.v1");
    /// Encoded descriptors of the stats API, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/logging_descriptor.bin"));
}

impl fargo_runtime::Sidecar for Config {
    const NAME: &'static str = "logging";
    fn server(&self) -> &fargo_runtime::ServerConfig {
        &self.server
    }
    fn telemetry(&self) -> &fargo_runtime::TelemetryConfig {
        &self.telemetry
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Serve(#[from] fargo_runtime::ServeError),
    #[error("no exporters configured: name at least one under `exporters`")]
    NoExporters,
    #[error("two exporters are named `{0}`: give them distinct `name`s")]
    DuplicateName(String),
    #[error("file exporter {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("OTLP exporter endpoint `{endpoint}`: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error(
        "record larger than the {0}-byte limit (receiver.max_record_bytes); shorten its body or attributes"
    )]
    TooLarge(usize),
    #[error("{}", describe_refusal(.0))]
    Refused(Refusal),
}

fn describe_refusal(r: &Refusal) -> String {
    match r {
        Refusal::Full { exporter } => format!(
            "logging sidecar is behind: exporter `{exporter}` has no buffer space; retry later"
        ),
        Refusal::SenderShare { held, limit } => format!(
            "this connection holds {held} bytes of the buffers, its share is {limit}; retry later"
        ),
        Refusal::Closed => "logging sidecar is shutting down; retry against its successor".into(),
    }
}

impl Error {
    /// The one place errors become gRPC statuses. Refusals are UNAVAILABLE with
    /// RetryInfo, which OTLP clients retry; nothing that could be kept is final.
    pub fn to_status(&self, retry_after: Duration) -> tonic::Status {
        use tonic_types::{ErrorDetails, StatusExt};
        match self {
            Error::Refused(_) => tonic::Status::with_error_details(
                tonic::Code::Unavailable,
                self.to_string(),
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            Error::TooLarge(_) => tonic::Status::invalid_argument(self.to_string()),
            other => tonic::Status::internal(other.to_string()),
        }
    }
}

/// Serves OTLP logs and traces on `listener` until `shutdown` resolves; then keeps
/// receiving for `lifecycle.keep_receiving`, drains, and flushes every exporter
/// within `lifecycle.flush_timeout`.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    if config.exporters.is_empty() {
        return Err(Error::NoExporters);
    }
    let mut names = HashSet::new();
    let mut sinks = Vec::new();
    for e in &config.exporters {
        let name = e.name();
        if !names.insert(name.clone()) {
            return Err(Error::DuplicateName(name));
        }
        let sink = sinks::Sink::build(e).await?;
        tracing::info!(exporter = %name, kind = e.kind(), "exporter ready");
        sinks.push((name, e.buffer().clone(), sink));
    }
    let (pipeline, workers) = pipeline::Pipeline::start(&config.receiver, sinks);

    let receiver = Receiver::new(pipeline.clone(), &config.receiver);
    let max = config.server.max_message_bytes;
    let services = Services::new()
        .with(receiver.logs_server(max))
        .with(receiver.traces_server(max))
        .with(StatsService::new(pipeline.clone()).server())
        .describe(pb::FILE_DESCRIPTOR_SET)
        .describe(opentelemetry_proto::DESCRIPTORS);

    let stop_reports = CancellationToken::new();
    let reporter = tokio::spawn(report_periodically(
        pipeline.clone(),
        config.lifecycle.stats_interval,
        stop_reports.clone(),
    ));
    let keep = config.lifecycle.keep_receiving;
    let linger = async move {
        shutdown.await;
        // The other containers are draining now; their last records are still to come.
        tracing::info!(
            keep_receiving_ms = keep.as_millis() as u64,
            "shutdown requested; still receiving"
        );
        tokio::time::sleep(keep).await;
    };
    let served = fargo_runtime::serve(listener, &config.server, services, linger).await;

    pipeline.close();
    let flush = config.lifecycle.flush_timeout;
    tracing::info!(
        flush_timeout_ms = flush.as_millis() as u64,
        "flushing exporters"
    );
    workers.finish(flush).await;
    stop_reports.cancel();
    let _ = reporter.await;
    report_final(&pipeline);
    served?;
    Ok(())
}

async fn report_periodically(
    pipeline: Arc<pipeline::Pipeline>,
    every: Duration,
    stop: CancellationToken,
) {
    if every.is_zero() {
        return;
    }
    let mut last = service::snapshot(&pipeline);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = service::snapshot(&pipeline);
        if now != last {
            log_stats(&now, "telemetry counters");
            last = now;
        }
    }
}

fn log_stats(s: &pb::Stats, msg: &str) {
    let logs = s.logs.unwrap_or_default();
    let spans = s.spans.unwrap_or_default();
    tracing::info!(
        logs.received = logs.received,
        logs.rejected = logs.rejected,
        logs.refused = logs.refused,
        spans.received = spans.received,
        spans.rejected = spans.rejected,
        spans.refused = spans.refused,
        "{msg}"
    );
    for e in &s.exporters {
        tracing::info!(
            exporter = %e.name,
            exported = e.exported,
            retried = e.retried,
            dropped = e.dropped,
            rejected = e.rejected,
            buffered_bytes = e.buffered_bytes,
            "{msg}"
        );
    }
}

fn report_final(pipeline: &pipeline::Pipeline) {
    let s = service::snapshot(pipeline);
    log_stats(&s, "final telemetry counters");
    for e in &s.exporters {
        if e.dropped > 0 {
            tracing::error!(
                exporter = %e.name,
                undelivered = e.dropped,
                "records could not be delivered before the flush deadline or failed for good"
            );
        }
    }
}
