//! Command-line plumbing shared by the sidecar binaries: load config, set up
//! telemetry, bind, serve until a signal, flush, and the `healthcheck` subcommand
//! that the ECS and Compose health checks run (the images have no shell or curl).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::{self, ConfigError, ServerConfig, Sidecar};
use crate::shutdown::Shutdown;
use crate::telemetry;

/// `--config FILE`, also taken from `FARGO_CONFIG`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// YAML or TOML configuration file; `FARGO_*` environment variables override it.
    #[arg(long, short = 'c', env = config::CONFIG_ENV)]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    /// Loads the sidecar's configuration from the file and the process environment.
    pub fn load<T: Sidecar>(&self) -> Result<T, ConfigError> {
        config::load(self.config.as_deref(), std::env::vars())
    }
}

/// Options of the `healthcheck` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Service to ask about; empty means the server as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this long.
    #[arg(long, default_value = "2s", value_parser = humantime_parse)]
    pub timeout: Duration,
}

fn humantime_parse(s: &str) -> Result<Duration, String> {
    humantime_serde::re::humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Prints a configuration error the way every binary does, and the exit code for it.
pub fn config_failure(name: &str, err: &ConfigError) -> ExitCode {
    eprintln!("{name}: {err}");
    ExitCode::from(2)
}

/// Binds `addr`, turning "address in use" into a message that names the port.
pub async fn bind(name: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("{name}: cannot listen on {addr}: address in use (port {} is taken; is another copy running?)", addr.port())
        } else {
            format!("{name}: cannot listen on {addr}: {e}")
        }
    })
}

/// The whole life of a sidecar process: telemetry, bind, serve until SIGTERM/SIGINT,
/// drain, flush telemetry. `serve` is the sidecar library's `serve` function.
pub fn run_server<T, F, Fut, E>(config: T, serve: F) -> ExitCode
where
    T: Sidecar + Send + 'static,
    F: FnOnce(TcpListener, T, Shutdown) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", T::NAME);
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let telemetry = match telemetry::init(T::NAME, config.telemetry()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: telemetry: {e}", T::NAME);
                return ExitCode::from(2);
            }
        };
        let listener = match bind(T::NAME, config.server().listen).await {
            Ok(l) => l,
            Err(msg) => {
                tracing::error!("{msg}");
                eprintln!("{msg}");
                flush(telemetry).await;
                return ExitCode::FAILURE;
            }
        };
        let shutdown = Shutdown::on_signals();
        let result = serve(listener, config, shutdown).await;
        let code = match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                eprintln!("{}: {e}", T::NAME);
                ExitCode::FAILURE
            }
        };
        flush(telemetry).await;
        code
    })
}

async fn flush(t: telemetry::Telemetry) {
    let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
}

/// The address to reach a server configured to listen on `listen` from the same host.
pub fn local_addr(listen: SocketAddr) -> SocketAddr {
    let ip = if listen.ip().is_unspecified() {
        match listen.ip() {
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    } else {
        listen.ip()
    };
    SocketAddr::new(ip, listen.port())
}

/// Asks `grpc.health.v1.Health/Check` at `addr`; `Ok(true)` when SERVING.
pub async fn check_health(
    addr: SocketAddr,
    service: &str,
    timeout: Duration,
) -> Result<bool, String> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let call = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(timeout)
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let resp = HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
        Ok(resp.into_inner().status == ServingStatus::Serving as i32)
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer from {addr} within {timeout:?}"))?
}

/// The `healthcheck` subcommand: exit 0 when SERVING, 1 otherwise.
pub fn healthcheck<T: Sidecar>(args: &HealthcheckArgs) -> ExitCode {
    let config: T = match args.config.load() {
        Ok(c) => c,
        Err(e) => return config_failure(T::NAME, &e),
    };
    healthcheck_addr(config.server(), &args.service, args.timeout)
}

pub fn healthcheck_addr(server: &ServerConfig, service: &str, timeout: Duration) -> ExitCode {
    let addr = local_addr(server.listen);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(check_health(addr, service, timeout)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("healthcheck: {addr} is not serving");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The subcommands every sidecar binary has; services add theirs beside these
/// with `#[command(flatten)]`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Common {
    /// Run the gRPC service until SIGTERM or SIGINT, then drain.
    Serve(ConfigArgs),
    /// Ask the local service's grpc.health.v1 whether it is SERVING (exit 0) or not (exit 1).
    Healthcheck(HealthcheckArgs),
}

/// Parses `args` as `C`, printing help or the parse error the way clap does.
pub fn parse<C: clap::Parser, I, T>(args: I) -> Result<C, ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    C::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Runs a [`Common`] subcommand for sidecar config `T` with the library's `serve`.
pub fn run_common<T, F, Fut, E>(cmd: Common, serve: F) -> ExitCode
where
    T: Sidecar + Send + 'static,
    F: FnOnce(TcpListener, T, Shutdown) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    match cmd {
        Common::Serve(args) => match args.load::<T>() {
            Ok(config) => run_server(config, serve),
            Err(e) => config_failure(T::NAME, &e),
        },
        Common::Healthcheck(args) => healthcheck::<T>(&args),
    }
}
