//! The auth-proxy sidecar: the only container a load balancer or client reaches;
//! it authenticates, authorises and routes gRPC calls to the sidecars on localhost.

pub mod cli;

use std::future::Future;

use fargo_runtime::{ServerConfig, Services, TelemetryConfig};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// Default listen address; the task definition's environment sets the same.
pub const DEFAULT_LISTEN: ([u8; 4], u16) = ([0, 0, 0, 0], 50051);

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
    const NAME: &'static str = "auth-proxy";
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

/// Serves the proxy on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let services = Services::new();
    fargo_runtime::serve(listener, &config.server, services, shutdown).await?;
    Ok(())
}
