//! The destinations: JSON lines on stdout or in rotating files, another OTLP
//! endpoint, CloudWatch Logs.

mod cloudwatch;
mod lines;
mod otlp;

use std::sync::Arc;
use std::time::Duration;

use crate::config::ExporterConfig;
use crate::pipeline::Batch;

pub use cloudwatch::CloudWatch;
pub use lines::{Lines, RotatingFile};
pub use otlp::Otlp;

/// A failed export; `retryable` ones are tried again with backoff until the flush deadline.
#[derive(Debug, Clone)]
pub struct SinkError {
    pub retryable: bool,
    pub retry_after: Option<Duration>,
    pub message: String,
}

impl SinkError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            retry_after: None,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            retry_after: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A delivery the destination took, perhaps refusing some records for good.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rejected: u64,
    pub message: String,
}

/// A destination. An enum rather than a trait object: four kinds, all known here.
pub enum Sink {
    Lines(Lines),
    Otlp(Box<Otlp>),
    CloudWatch(Box<CloudWatch>),
}

impl Sink {
    /// Builds the sink for `cfg`: opens files, connects lazily, loads AWS config.
    pub async fn build(cfg: &ExporterConfig) -> Result<Self, crate::Error> {
        Ok(match cfg {
            ExporterConfig::Stdout(_) => Sink::Lines(Lines::stdout()),
            ExporterConfig::File(f) => Sink::Lines(Lines::file(RotatingFile::open(
                f.path.clone(),
                f.max_file_bytes,
                f.keep,
            )?)),
            ExporterConfig::Otlp(o) => Sink::Otlp(Box::new(Otlp::new(o)?)),
            ExporterConfig::Cloudwatch(c) => Sink::CloudWatch(Box::new(CloudWatch::new(c).await)),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Sink::Lines(l) => l.kind(),
            Sink::Otlp(_) => "otlp",
            Sink::CloudWatch(_) => "cloudwatch",
        }
    }

    /// Delivers `batches`, all of one signal. Called again with the same slice after a
    /// retryable error, so a sink that delivers in parts must remember how far it got.
    pub async fn export(&mut self, batches: &[Arc<Batch>]) -> Result<Outcome, SinkError> {
        match self {
            Sink::Lines(l) => l.export(batches).await,
            Sink::Otlp(o) => o.export(batches).await,
            Sink::CloudWatch(c) => c.export(batches).await,
        }
    }

    pub async fn close(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::Lines(l) => l.close().await,
            Sink::Otlp(_) | Sink::CloudWatch(_) => Ok(()),
        }
    }
}
