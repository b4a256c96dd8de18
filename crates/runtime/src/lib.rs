//! The shared runtime of fargo's sidecars.
//!
//! Each sidecar is a library with `serve(listener, config, shutdown)`; this crate holds
//! everything those functions would otherwise repeat: configuration loading
//! ([`config`]), logs and traces ([`telemetry`]), the tonic server with health,
//! reflection and the standard tower layers ([`server`]), signals and drain
//! ([`shutdown`]), and the `serve` / `healthcheck` command-line plumbing ([`cli`]).

pub mod cli;
pub mod config;
pub mod echo;
pub mod health;
pub mod layers;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod telemetry;

pub use config::{ConfigError, ServerConfig, Sidecar};
pub use server::{ServeError, Services, serve};
pub use shutdown::Shutdown;
pub use telemetry::TelemetryConfig;
