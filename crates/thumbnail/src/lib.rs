//! Video thumbnails: freeze the frame at a position of a video, as a gRPC sidecar
//! (`thumbnail serve`) or as a one-shot on-demand job.

pub mod cli;
mod service;

use std::future::Future;

use fargo_runtime::{ServerConfig, Services, TelemetryConfig};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use service::ThumbnailGrpc;

/// Default listen address; the task definition's environment sets the same.
pub const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 50061);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig {
                listen: DEFAULT_LISTEN.into(),
                ..ServerConfig::default()
            },
            telemetry: TelemetryConfig::default(),
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
