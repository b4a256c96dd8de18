//! The OTLP `LogsService` and `TraceService` receivers and the stats RPC.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::pb;
use crate::pipeline::{Payload, Pipeline, SignalCounters};

#[derive(Debug, Clone)]
pub struct Receiver {
    pipeline: Arc<Pipeline>,
    max_record_bytes: usize,
    retry_after: Duration,
}

impl Receiver {
    pub fn new(pipeline: Arc<Pipeline>, cfg: &crate::config::ReceiverConfig) -> Self {
        Self {
            pipeline,
            max_record_bytes: cfg.max_record_bytes,
            retry_after: cfg.retry_after,
        }
    }

    pub fn logs_server(&self, max: usize) -> LogsServiceServer<Self> {
        LogsServiceServer::new(self.clone())
            .max_decoding_message_size(max)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
    }

    pub fn traces_server(&self, max: usize) -> TraceServiceServer<Self> {
        TraceServiceServer::new(self.clone())
            .max_decoding_message_size(max)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
    }

    fn admit(
        &self,
        payload: Payload,
        records: u64,
        peer: Option<std::net::SocketAddr>,
        counters: &SignalCounters,
    ) -> Result<(), Status> {
        let bytes = match &payload {
            Payload::Logs(r) => r.encoded_len(),
            Payload::Spans(r) => r.encoded_len(),
        };
        match self.pipeline.admit(payload, records, bytes, peer) {
            Ok(()) => {
                counters.received.fetch_add(records, Ordering::Relaxed);
                Ok(())
            }
            Err(refusal) => {
                counters.refused.fetch_add(records, Ordering::Relaxed);
                Err(Error::Refused(refusal).to_status(self.retry_after))
            }
        }
    }
}

/// Removes records whose encoding exceeds `max`; returns (kept, removed).
fn screen<T: Message>(records: &mut Vec<T>, max: usize) -> (u64, u64) {
    let before = records.len();
    records.retain(|r| r.encoded_len() <= max);
    (records.len() as u64, (before - records.len()) as u64)
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let peer = req.remote_addr();
        let mut msg = req.into_inner();
        let (mut kept, mut removed) = (0, 0);
        for rl in &mut msg.resource_logs {
            for sl in &mut rl.scope_logs {
                let (k, r) = screen(&mut sl.log_records, self.max_record_bytes);
                kept += k;
                removed += r;
            }
        }
        let counters = &self.pipeline.logs;
        let partial_success = (removed > 0).then(|| {
            counters.rejected.fetch_add(removed, Ordering::Relaxed);
            ExportLogsPartialSuccess {
                rejected_log_records: removed as i64,
                error_message: Error::TooLarge(self.max_record_bytes).to_string(),
            }
        });
        if kept > 0 {
            self.admit(Payload::Logs(msg), kept, peer, counters)?;
        }
        Ok(Response::new(ExportLogsServiceResponse { partial_success }))
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let peer = req.remote_addr();
        let mut msg = req.into_inner();
        let (mut kept, mut removed) = (0, 0);
        for rs in &mut msg.resource_spans {
            for ss in &mut rs.scope_spans {
                let (k, r) = screen(&mut ss.spans, self.max_record_bytes);
                kept += k;
                removed += r;
            }
        }
        let counters = &self.pipeline.spans;
        let partial_success = (removed > 0).then(|| {
            counters.rejected.fetch_add(removed, Ordering::Relaxed);
            ExportTracePartialSuccess {
                rejected_spans: removed as i64,
                error_message: Error::TooLarge(self.max_record_bytes).to_string(),
            }
        });
        if kept > 0 {
            self.admit(Payload::Spans(msg), kept, peer, counters)?;
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
    }
}

/// `fargo.logging.v1.LoggingStats`.
#[derive(Debug, Clone)]
pub struct StatsService {
    pipeline: Arc<Pipeline>,
}

impl StatsService {
    pub fn new(pipeline: Arc<Pipeline>) -> Self {
        Self { pipeline }
    }

    pub fn server(&self) -> pb::logging_stats_server::LoggingStatsServer<Self> {
        pb::logging_stats_server::LoggingStatsServer::new(self.clone())
    }
}

/// A snapshot of every counter.
pub fn snapshot(p: &Pipeline) -> pb::Stats {
    let signal = |c: &SignalCounters| pb::SignalStats {
        received: c.received.load(Ordering::Relaxed),
        rejected: c.rejected.load(Ordering::Relaxed),
        refused: c.refused.load(Ordering::Relaxed),
    };
    pb::Stats {
        logs: Some(signal(&p.logs)),
        spans: Some(signal(&p.spans)),
        exporters: p
            .exporters()
            .iter()
            .map(|e| pb::ExporterStats {
                name: e.name.clone(),
                kind: e.kind.to_owned(),
                exported: e.exported.load(Ordering::Relaxed),
                retried: e.retried.load(Ordering::Relaxed),
                dropped: e.dropped.load(Ordering::Relaxed),
                rejected: e.rejected.load(Ordering::Relaxed),
                buffered_bytes: e.buffered_bytes() as u64,
                capacity_bytes: e.capacity as u64,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::logging_stats_server::LoggingStats for StatsService {
    async fn get_stats(
        &self,
        _req: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::Stats>, Status> {
        Ok(Response::new(snapshot(&self.pipeline)))
    }
}
