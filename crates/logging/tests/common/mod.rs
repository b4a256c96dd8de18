//! Helpers shared by the logging sidecar's tests: an in-process sidecar on a free
//! port, OTLP requests of a chosen shape, and readers for what it wrote.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fargo_runtime::Shutdown;
use logging::{BufferConfig, Config, ExporterConfig, FileConfig};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tonic::transport::Channel;

pub struct Sidecar {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub task: tokio::task::JoinHandle<Result<(), logging::Error>>,
}

impl Sidecar {
    pub async fn start(config: Config) -> Sidecar {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, config).await
    }

    pub async fn start_on(listener: tokio::net::TcpListener, config: Config) -> Sidecar {
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(logging::serve(listener, config, shutdown.wait()));
        wait_ready(addr).await;
        Sidecar {
            addr,
            shutdown,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn logs(&self) -> LogsServiceClient<Channel> {
        LogsServiceClient::new(self.channel().await).max_encoding_message_size(usize::MAX)
    }

    pub async fn traces(&self) -> TraceServiceClient<Channel> {
        TraceServiceClient::new(self.channel().await)
    }

    pub async fn stats(&self) -> logging::pb::Stats {
        logging::pb::logging_stats_client::LoggingStatsClient::new(self.channel().await)
            .get_stats(logging::pb::GetStatsRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// SIGTERM equivalent; waits for the flush to finish.
    pub async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("sidecar did not stop within 30 s")
            .unwrap()
            .unwrap();
    }
}

pub async fn wait_ready(addr: SocketAddr) {
    for _ in 0..200 {
        if fargo_runtime::cli::check_health(addr, "", Duration::from_millis(500))
            .await
            .unwrap_or(false)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("sidecar at {addr} never became healthy");
}

/// A config with one file exporter writing to `path`, and quick shutdown.
pub fn file_config(path: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.server.grace_period = Duration::from_secs(5);
    cfg.lifecycle.keep_receiving = Duration::ZERO;
    cfg.lifecycle.flush_timeout = Duration::from_secs(10);
    cfg.exporters = vec![file_exporter(path, BufferConfig::default())];
    cfg
}

pub fn file_exporter(path: &Path, buffer: BufferConfig) -> ExporterConfig {
    ExporterConfig::File(FileConfig {
        path: path.to_owned(),
        buffer,
        ..FileConfig::default()
    })
}

pub fn kv(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// `n` log records from `service`, bodies `"{tag} {i}"`, padded to about `size` bytes.
pub fn logs(service: &str, tag: &str, n: usize, size: usize) -> ExportLogsServiceRequest {
    let t = now_nanos();
    let records = (0..n)
        .map(|i| {
            let mut body = format!("{tag} {i} ");
            while body.len() < size.saturating_sub(80) {
                body.push('x');
            }
            LogRecord {
                time_unix_nano: t,
                observed_time_unix_nano: t,
                severity_number: 9,
                severity_text: "INFO".into(),
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(body)),
                }),
                attributes: vec![kv("seq", &i.to_string())],
                trace_id: vec![0xab; 16],
                span_id: vec![0xcd; 8],
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub fn spans(service: &str, trace_id: [u8; 16], names: &[&str]) -> ExportTraceServiceRequest {
    let t = now_nanos();
    let spans = names
        .iter()
        .enumerate()
        .map(|(i, name)| Span {
            trace_id: trace_id.to_vec(),
            span_id: vec![i as u8 + 1; 8],
            name: (*name).into(),
            kind: 2,
            start_time_unix_nano: t,
            end_time_unix_nano: t + 1_000_000,
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Every JSON line in `path` and its rotated siblings.
pub fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = vec![path.to_owned()];
    for n in 1..100 {
        let mut p = path.to_owned().into_os_string();
        p.push(format!(".{n}"));
        let p = PathBuf::from(p);
        if p.exists() {
            files.push(p);
        }
    }
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines() {
            out.push(
                serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")),
            );
        }
    }
    out
}

/// Sends `req`, retrying while the sidecar answers UNAVAILABLE, as OTLP says;
/// returns how many times it was refused.
pub async fn send_retrying(
    client: &mut LogsServiceClient<Channel>,
    req: ExportLogsServiceRequest,
) -> u32 {
    use tonic_types::StatusExt;
    let mut refused = 0;
    loop {
        match client.export(req.clone()).await {
            Ok(_) => return refused,
            Err(s) if s.code() == tonic::Code::Unavailable => {
                refused += 1;
                let delay = s
                    .get_error_details()
                    .retry_info()
                    .and_then(|r| r.retry_delay)
                    .expect("UNAVAILABLE without RetryInfo");
                tokio::time::sleep(delay.min(Duration::from_millis(50))).await;
            }
            Err(s) => panic!("export failed: {s:?}"),
        }
    }
}
