//! The logging sidecar: an OTLP/gRPC receiver on localhost:4317 that every other
//! container sends its logs and traces to, and exporters that ship them on.

pub mod cli;
mod service;

use std::future::Future;

use fargo_runtime::{ServerConfig, Services, TelemetryConfig};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use service::Receiver;

/// Default listen address; the task definition's environment sets the same.
pub const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 4317);

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
    const NAME: &'static str = "logging";
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

/// Serves OTLP logs and traces on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let receiver = Receiver::new(&config);
    let services = Services::new()
        .with(receiver.logs_server(config.server.max_message_bytes))
        .with(receiver.traces_server(config.server.max_message_bytes));
    fargo_runtime::serve(listener, &config.server, services, shutdown).await?;
    Ok(())
}
