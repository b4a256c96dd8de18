//! Forwards to another OTLP/gRPC endpoint (an ADOT or OpenTelemetry collector),
//! following OTLP's retry rules.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

use super::{Outcome, SinkError};
use crate::config::OtlpConfig;
use crate::pipeline::{Batch, Payload};

pub struct Otlp {
    logs: LogsServiceClient<Channel>,
    traces: TraceServiceClient<Channel>,
}

impl Otlp {
    pub fn new(cfg: &OtlpConfig) -> Result<Self, crate::Error> {
        let endpoint = Endpoint::from_shared(cfg.endpoint.clone())
            .map_err(|e| crate::Error::Endpoint {
                endpoint: cfg.endpoint.clone(),
                message: e.to_string(),
            })?
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout);
        // Lazy, so the sidecar starts (and buffers) even while the collector is down.
        let channel = endpoint.connect_lazy();
        Ok(Self {
            logs: LogsServiceClient::new(channel.clone())
                .max_encoding_message_size(usize::MAX)
                .max_decoding_message_size(4 * 1024 * 1024),
            traces: TraceServiceClient::new(channel)
                .max_encoding_message_size(usize::MAX)
                .max_decoding_message_size(4 * 1024 * 1024),
        })
    }

    pub async fn export(&mut self, batches: &[Arc<Batch>]) -> Result<Outcome, SinkError> {
        let mut logs = ExportLogsServiceRequest::default();
        let mut spans = ExportTraceServiceRequest::default();
        for b in batches {
            match &b.payload {
                Payload::Logs(r) => logs.resource_logs.extend(r.resource_logs.iter().cloned()),
                Payload::Spans(r) => spans
                    .resource_spans
                    .extend(r.resource_spans.iter().cloned()),
            }
        }
        let mut outcome = Outcome::default();
        if !logs.resource_logs.is_empty() {
            let resp = self.logs.export(logs).await.map_err(classify)?.into_inner();
            if let Some(p) = resp.partial_success {
                outcome.rejected += p.rejected_log_records.max(0) as u64;
                outcome.message = p.error_message;
            }
        }
        if !spans.resource_spans.is_empty() {
            let resp = self
                .traces
                .export(spans)
                .await
                .map_err(classify)?
                .into_inner();
            if let Some(p) = resp.partial_success {
                outcome.rejected += p.rejected_spans.max(0) as u64;
                outcome.message = p.error_message;
            }
        }
        Ok(outcome)
    }
}

/// OTLP's list of retryable codes; RESOURCE_EXHAUSTED only with a RetryInfo.
fn classify(status: tonic::Status) -> SinkError {
    let delay = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay);
    let retryable = match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => true,
        Code::ResourceExhausted => delay.is_some(),
        _ => false,
    };
    SinkError {
        retryable,
        retry_after: delay.map(|d| d.min(Duration::from_secs(60))),
        message: format!("{}: {}", status.code(), status.message()),
    }
}
