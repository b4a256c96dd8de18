//! The auth-proxy sidecar: the only container a load balancer or client reaches; it
//! authenticates, authorises, rate limits and routes gRPC (and gRPC-Web) calls to the
//! sidecars on localhost, which trust the principal it forwards.
//!
//! The data path is a hyper 1 server and client rather than a tonic router, so bodies
//! stream through untouched; the shared runtime still provides config, telemetry,
//! signals, health state, the trace layer and the `healthcheck` subcommand.

pub mod auth;
pub mod body;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod proxy;
pub mod reflection;
pub mod server;
pub mod state;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use auth::hash_api_key;
pub use cluster::{Resolve, SystemResolver};
pub use config::{Config, DEFAULT_LISTEN};
pub use error::{Error, ProxyError};
pub use proxy::PRINCIPAL_HEADER;

/// Serves the proxy on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    server::run(listener, config, None, Arc::new(SystemResolver), shutdown).await
}

/// Like [`serve`], reloading `config_file` on SIGHUP and whenever it changes.
pub async fn serve_with_reload(
    listener: TcpListener,
    config: Config,
    config_file: PathBuf,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    server::run(
        listener,
        config,
        Some(config_file),
        Arc::new(SystemResolver),
        shutdown,
    )
    .await
}

/// Like [`serve_with_reload`] (without a file when `config_file` is `None`), resolving
/// clusters' host names with `resolver`.
pub async fn serve_with_resolver(
    listener: TcpListener,
    config: Config,
    config_file: Option<PathBuf>,
    resolver: Arc<dyn Resolve>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    server::run(listener, config, config_file, resolver, shutdown).await
}

/// Environment for an auth-proxy process that accepts `api_key` as principal `dev`,
/// allowed to call every method (what `fargo up` gives the local assembly). Only the
/// key's hash is placed in the environment.
pub fn dev_env(api_key: &str) -> Vec<(String, String)> {
    vec![
        ("FARGO_API_KEYS__DEV__HASH".into(), hash_api_key(api_key)),
        ("FARGO_ACCESS__DEV__PRINCIPALS".into(), "dev".into()),
        ("FARGO_ACCESS__DEV__METHODS".into(), "*".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_env_accepts_the_key_as_dev_for_everything() {
        let cfg: Config = fargo_runtime::config::load(None, dev_env("k-123/+=")).unwrap();
        assert_eq!(cfg.server.listen.port(), 50051);
        assert_eq!(
            cfg.clusters["thumbnail"].endpoints.0,
            vec!["127.0.0.1:50061".to_owned()]
        );
        assert_eq!(
            cfg.clusters["coin-value"].endpoints.0,
            vec!["127.0.0.1:50062".to_owned()]
        );
        let state = state::State::compile(cfg, None).unwrap();
        assert_eq!(state.api_keys.verify("k-123/+="), Some("dev"));
        assert_eq!(state.api_keys.verify("k-124"), None);
        let dev = auth::Principal {
            name: "dev".into(),
            scopes: vec![],
            claims: Default::default(),
        };
        for m in [
            "/fargo.thumbnail.v1.ThumbnailService/Thumbnail",
            "/fargo.coinvalue.v1.CoinValueService/Value",
        ] {
            assert!(auth::allowed(&state.config.access, &dev, m));
        }
        // The plain key never appears in the environment.
        assert!(
            dev_env("k-123/+=")
                .iter()
                .all(|(_, v)| !v.contains("k-123"))
        );
    }
}
