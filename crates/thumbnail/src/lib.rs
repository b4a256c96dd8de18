//! Video thumbnails: freeze the frame at a position of a video, as a gRPC sidecar
//! (`thumbnail serve`) or as a one-shot on-demand job (`thumbnail job`), both on one
//! engine that links the FFmpeg libraries.

pub mod cli;
mod convert;
pub mod encode;
pub mod engine;
mod error;
pub mod job;
pub mod position;
mod service;
pub mod thumbnailer;

use std::future::Future;
use std::time::Duration;

use fargo_runtime::{ServerConfig, Services, TelemetryConfig};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use error::ThumbError;
pub use service::ThumbnailGrpc;
pub use thumbnailer::Thumbnailer;

/// Default listen address; the task definition's environment sets the same.
pub const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 50061);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub thumbnail: ThumbnailConfig,
}

/// Bounds on the work and memory one request may take (`FARGO_THUMBNAIL__*`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ThumbnailConfig {
    /// Largest decoded frame, in pixels; larger streams are refused before decoding.
    pub max_frame_pixels: u64,
    /// Largest image returned or written (a thumbnail or a sprite sheet), in pixels.
    pub max_output_pixels: u64,
    /// Decodes running at once; 0 means the CPUs available. Others wait their turn.
    pub max_concurrent_decodes: usize,
    /// Frame threads per decoder; 1 turns threading off.
    pub decoder_threads: usize,
    /// Decoders one request with several positions may use at once (positions that
    /// start from different keyframes), taken only from idle decode slots.
    pub decoders_per_request: usize,
    /// Positions in one request.
    pub max_positions: usize,
    /// Tiles in one sprite sheet.
    pub max_sprite_frames: u32,
    /// Largest video accepted by `ExtractUpload`.
    pub max_upload_bytes: u64,
    /// Where uploads are spooled while they decode; the system temp dir when unset.
    pub spool_dir: Option<std::path::PathBuf>,
    /// CA bundle (PEM) trusted for https inputs instead of the system's; https
    /// certificates are always verified.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Lifetime of the presigned URL the decoder reads an S3 input through.
    #[serde(with = "humantime_serde")]
    pub presign_ttl: Duration,
}

impl Default for ThumbnailConfig {
    fn default() -> Self {
        let l = engine::Limits::default();
        Self {
            max_frame_pixels: l.max_frame_pixels,
            max_output_pixels: l.max_output_pixels,
            max_concurrent_decodes: 0,
            decoder_threads: l.decoder_threads,
            decoders_per_request: l.decoders,
            max_positions: 100,
            max_sprite_frames: 400,
            max_upload_bytes: 4 << 30,
            spool_dir: None,
            tls_ca_file: None,
            presign_ttl: Duration::from_secs(3600),
        }
    }
}

impl ThumbnailConfig {
    pub fn limits(&self) -> engine::Limits {
        engine::Limits {
            max_frame_pixels: self.max_frame_pixels,
            max_output_pixels: self.max_output_pixels,
            decoder_threads: self.decoder_threads.max(1),
            decoders: self.decoders_per_request.max(1),
            tls_ca_file: self.tls_ca_file.as_ref().map(|p| p.display().to_string()),
            ..engine::Limits::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig {
                listen: DEFAULT_LISTEN.into(),
                ..ServerConfig::default()
            },
            telemetry: TelemetryConfig::default(),
            thumbnail: ThumbnailConfig::default(),
        }
    }
}

impl fargo_runtime::Sidecar for Config {
    const NAME: &'static str = "thumbnail";
    fn server(&self) -> &ServerConfig {
        &self.server
    }
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Serve(#[from] fargo_runtime::ServeError),
}

/// Serves `fargo.thumbnail.v1` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let grpc = ThumbnailGrpc::new(&config).server(config.server.max_message_bytes);
    let services = Services::new()
        .with(grpc)
        .describe(fargo_proto::FILE_DESCRIPTOR_SET);
    fargo_runtime::serve(listener, &config.server, services, shutdown).await?;
    Ok(())
}
