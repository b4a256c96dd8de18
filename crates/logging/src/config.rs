//! The sidecar's serde configuration: receiver limits, lifecycle timings and the
//! exporters to ship to (several at once; stdout JSON lines when none is named).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fargo_runtime::{ServerConfig, TelemetryConfig};
use serde::{Deserialize, Serialize};

/// Default listen address: OTLP/gRPC's well-known port, on localhost only.
pub const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 4317);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub receiver: ReceiverConfig,
    pub lifecycle: LifecycleConfig,
    pub exporters: Vec<ExporterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig {
                listen: SocketAddr::from(DEFAULT_LISTEN),
                // Senders wait for a slot rather than being refused with a code OTLP calls final.
                shed_load: false,
                concurrency_limit: 64,
                ..ServerConfig::default()
            },
            telemetry: TelemetryConfig::default(),
            receiver: ReceiverConfig::default(),
            lifecycle: LifecycleConfig::default(),
            exporters: vec![ExporterConfig::Stdout(StdoutConfig::default())],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// A single log record or span larger than this (encoded) is rejected through
    /// `partial_success`; the rest of its request is kept.
    pub max_record_bytes: usize,
    /// Share (0-1] of any exporter's buffer one connection may hold, so one flooding
    /// sender cannot take the room every other sender needs.
    pub sender_share: f64,
    /// The delay put in `RetryInfo` when buffers are full.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            max_record_bytes: 256 * 1024,
            sender_share: 0.5,
            retry_after: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// After SIGTERM, keep receiving this long while the other containers drain
    /// and send their last records.
    #[serde(with = "humantime_serde")]
    pub keep_receiving: Duration,
    /// Then every exporter gets this long to deliver what it holds; keep
    /// `keep_receiving + server.grace_period + flush_timeout` below the task's stopTimeout.
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// How often the counters are logged (only when they changed); 0 disables.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            keep_receiving: Duration::from_secs(5),
            flush_timeout: Duration::from_secs(10),
            stats_interval: Duration::from_secs(60),
        }
    }
}

/// One destination. `kind` picks it; each has its own bounded buffer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ExporterConfig {
    Stdout(StdoutConfig),
    File(FileConfig),
    Otlp(OtlpConfig),
    Cloudwatch(CloudWatchConfig),
}

impl ExporterConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Stdout(_) => "stdout",
            Self::File(_) => "file",
            Self::Otlp(_) => "otlp",
            Self::Cloudwatch(_) => "cloudwatch",
        }
    }

    pub fn buffer(&self) -> &BufferConfig {
        match self {
            Self::Stdout(c) => &c.buffer,
            Self::File(c) => &c.buffer,
            Self::Otlp(c) => &c.buffer,
            Self::Cloudwatch(c) => &c.buffer,
        }
    }

    /// The name used in counters and logs: `name` if given, else the kind.
    pub fn name(&self) -> String {
        let name = match self {
            Self::Stdout(c) => &c.name,
            Self::File(c) => &c.name,
            Self::Otlp(c) => &c.name,
            Self::Cloudwatch(c) => &c.name,
        };
        name.clone().unwrap_or_else(|| self.kind().to_owned())
    }
}

/// Buffering and delivery settings every exporter has (its `buffer:` key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Encoded OTLP bytes this exporter may hold; past it senders are told to retry.
    /// Decoded in memory they take about three times as much.
    pub max_bytes: usize,
    /// Records handed to the destination in one go, at most.
    pub batch_records: usize,
    /// Records per second at most (0: unlimited), for destinations with quotas.
    pub rate_limit: u32,
    /// First retry delay; doubles up to `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            max_bytes: 8 * 1024 * 1024,
            batch_records: 8192,
            rate_limit: 0,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StdoutConfig {
    /// Names the exporter in counters (two of one kind need different names).
    pub name: Option<String>,
    pub buffer: BufferConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// The live file; rotated ones get `.1`, `.2`, ... (`.1` the newest).
    pub path: PathBuf,
    /// Rotate once the live file reaches this size.
    pub max_file_bytes: u64,
    /// Rotated files kept; older ones are deleted.
    pub keep: usize,
    /// Names the exporter in counters (two of one kind need different names).
    pub name: Option<String>,
    pub buffer: BufferConfig,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/log/fargo/telemetry.jsonl"),
            max_file_bytes: 100 * 1024 * 1024,
            keep: 5,
            name: None,
            buffer: BufferConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// e.g. `http://adot-collector:4317`.
    pub endpoint: String,
    /// Per export call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Names the exporter in counters (two of one kind need different names).
    pub name: Option<String>,
    pub buffer: BufferConfig,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:4318".into(),
            timeout: Duration::from_secs(10),
            name: None,
            buffer: BufferConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CloudWatchConfig {
    pub log_group: String,
    pub log_stream: String,
    /// Overrides the AWS SDK's region chain.
    pub region: Option<String>,
    /// Overrides the endpoint (a local AWS-compatible server); `AWS_ENDPOINT_URL` works too.
    pub endpoint_url: Option<String>,
    /// Create the log group and stream when missing.
    pub create: bool,
    /// Names the exporter in counters (two of one kind need different names).
    pub name: Option<String>,
    pub buffer: BufferConfig,
}

impl Default for CloudWatchConfig {
    fn default() -> Self {
        Self {
            log_group: "/fargo/assembly".into(),
            log_stream: "logging".into(),
            region: None,
            endpoint_url: None,
            create: true,
            name: None,
            buffer: BufferConfig::default(),
        }
    }
}
