//! The gRPC server every sidecar runs: its services plus health and reflection,
//! behind the standard layers, with drain on shutdown.

use std::convert::Infallible;
use std::future::Future;

use http::{Request, Response};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tower::Service;

use crate::config::ServerConfig;
use crate::health::{HealthState, ServingStatus};
use crate::layers::{CodecStatusLayer, DeadlineLayer, LimitLayer, TraceLayer};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The services one server hosts, with what reflection should describe.
#[derive(Debug)]
pub struct Services {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    descriptors: Vec<&'static [u8]>,
    health: HealthState,
}

impl Default for Services {
    fn default() -> Self {
        Self::new()
    }
}

impl Services {
    pub fn new() -> Self {
        Self {
            routes: RoutesBuilder::default(),
            names: Vec::new(),
            descriptors: Vec::new(),
            health: HealthState::new(),
        }
    }

    /// Adds a tonic service; it reports SERVING once the server starts.
    pub fn with<S>(mut self, svc: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// An encoded `FileDescriptorSet` describing added services, for reflection.
    pub fn describe(mut self, fds: &'static [u8]) -> Self {
        if !self.descriptors.contains(&fds) {
            self.descriptors.push(fds);
        }
        self
    }

    /// The health handle, for services that report their own readiness.
    pub fn health(&self) -> HealthState {
        self.health.clone()
    }

    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

/// Serves `services` on `listener` until `shutdown` resolves, then drains:
/// NOT_SERVING first, `drain_delay` later stop accepting (GOAWAY), then wait for
/// in-flight calls up to `grace_period` before cutting what is left.
pub async fn serve(
    listener: TcpListener,
    cfg: &ServerConfig,
    services: Services,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let Services {
        mut routes,
        names,
        descriptors,
        health,
    } = services;

    let mut reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    let mut reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    for fds in &descriptors {
        reflection = reflection.register_encoded_file_descriptor_set(fds);
        reflection_alpha = reflection_alpha.register_encoded_file_descriptor_set(fds);
    }
    for name in &names {
        reflection = reflection.with_service_name(*name);
        reflection_alpha = reflection_alpha.with_service_name(*name);
    }
    let health_name = <tonic_health::pb::health_server::HealthServer<crate::health::HealthService> as NamedService>::NAME;
    reflection = reflection.with_service_name(health_name);
    reflection_alpha = reflection_alpha.with_service_name(health_name);
    routes
        .add_service(health.server())
        .add_service(reflection.build_v1()?)
        .add_service(reflection_alpha.build_v1alpha()?);

    let limit = LimitLayer::new(cfg.effective_concurrency(), cfg.shed_load);
    let layers = tower::ServiceBuilder::new()
        // Outermost, so shed and timed-out calls are traced and logged too.
        .layer(TraceLayer)
        // Before the deadline, so time spent waiting for a slot counts against it.
        .layer(limit)
        .layer(DeadlineLayer {
            default: cfg.request_timeout,
        })
        // Innermost, so it sees the service's own answer before anything wraps it.
        .layer(CodecStatusLayer)
        .into_inner();

    let addr = listener.local_addr().ok();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .layer(layers)
        .add_routes(routes.routes());
    let server = tokio::spawn(router.serve_with_incoming_shutdown(
        TcpListenerStream::new(listener),
        async {
            let _ = stop_rx.await;
        },
    ));

    health.set("", ServingStatus::Serving);
    for name in &names {
        health.set(name, ServingStatus::Serving);
    }
    tracing::info!(addr = ?addr, services = ?names, "serving");

    tokio::pin!(shutdown);
    let mut server = server;
    tokio::select! {
        r = &mut server => return r?.map_err(ServeError::from),
        () = &mut shutdown => {}
    }

    tracing::info!(grace_ms = cfg.grace_period.as_millis() as u64, "draining");
    health.set_all(ServingStatus::NotServing);
    health.close_watches();
    tokio::time::sleep(cfg.drain_delay).await;
    let _ = stop_tx.send(());
    match tokio::time::timeout(cfg.grace_period, &mut server).await {
        Ok(r) => r?.map_err(ServeError::from)?,
        Err(_) => {
            tracing::warn!("grace period over; cutting the calls still running");
            server.abort();
        }
    }
    tracing::info!("stopped");
    Ok(())
}
