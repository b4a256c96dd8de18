//! Accepting connections (h2c, TLS, HTTP/1.1 for gRPC-Web), the proxy's own health and
//! reflection, upstream health checks, hot reload and drain.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use fargo_runtime::Shutdown as Stop;
use fargo_runtime::health::{HealthState, ServingStatus};
use fargo_runtime::layers::TraceLayer;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::error::Error;
use crate::proxy::{Proxy, Shared};
use crate::reflection;
use crate::state::State;

fn file_stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Loads `path` again and swaps it in when valid; the old state keeps serving otherwise.
pub fn reload(shared: &Shared, path: &Path) -> Result<(), String> {
    let cfg: Config =
        fargo_runtime::config::load(Some(path), std::env::vars()).map_err(|e| e.to_string())?;
    let old = shared.state();
    if cfg.server != old.config.server || cfg.limits != old.config.limits {
        tracing::warn!("server and limits settings change only on restart; the rest is reloaded");
    }
    let next = State::compile(cfg, Some(&old))?;
    for svc in next.routes.keys() {
        if shared.health.get(svc).is_none() {
            shared.health.set(svc, ServingStatus::NotServing);
        }
    }
    shared.swap(next);
    Ok(())
}

async fn reload_task(shared: Arc<Shared>, path: PathBuf, stop: Stop) {
    #[cfg(unix)]
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler; reloading on file change only");
            None
        }
    };
    let mut stamp = file_stamp(&path);
    loop {
        let poll = shared
            .state()
            .config
            .reload_poll
            .max(Duration::from_millis(50));
        let hup_recv = async {
            #[cfg(unix)]
            if let Some(h) = hup.as_mut() {
                h.recv().await;
                return "SIGHUP";
            }
            std::future::pending::<&str>().await
        };
        let why = tokio::select! {
            () = stop.wait() => return,
            w = hup_recv => w,
            () = tokio::time::sleep(poll) => {
                let now = file_stamp(&path);
                if now == stamp { continue; }
                stamp = now;
                "file changed"
            }
        };
        match reload(&shared, &path) {
            Ok(()) => {
                tracing::info!(trigger = why, file = %path.display(), "configuration reloaded")
            }
            Err(e) => tracing::error!(trigger = why, file = %path.display(), error = %e,
                "configuration rejected; the previous one keeps serving"),
        }
    }
}

/// Asks each routed service's endpoints for their health; a service is SERVING when at
/// least one endpoint says so.
async fn health_task(shared: Arc<Shared>, stop: Stop) {
    loop {
        let state = shared.state();
        let checks = state
            .routes
            .values()
            .flat_map(|r| {
                r.cluster
                    .endpoints()
                    .iter()
                    .cloned()
                    .map(move |ep| {
                        let svc = r.service.clone();
                        async move {
                            let ok = fargo_runtime::cli::check_health(
                                ep.addr,
                                &svc,
                                Duration::from_secs(1),
                            )
                            .await
                            .unwrap_or(false);
                            (svc, ep, ok)
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        let results = futures::future::join_all(checks).await;
        let mut up: std::collections::HashMap<String, bool> =
            state.routes.keys().map(|k| (k.clone(), false)).collect();
        for (svc, ep, ok) in results {
            ep.set_healthy(ok);
            if ok {
                up.insert(svc, true);
            }
        }
        if !shared.draining.load(Ordering::Relaxed) {
            for (svc, ok) in up {
                let s = if ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                shared.health.set(&svc, s);
            }
        }
        let every = state.health_interval();
        drop(state);
        tokio::select! {
            () = stop.wait() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Keeps the proxy's reflection describing the routed services as their upstreams do:
/// asks for the descriptors of routes not yet described (each health interval), asks
/// again for all of them after a reload and every minute, and rebuilds when the routes
/// or the descriptors change.
async fn reflection_task(shared: Arc<Shared>, stop: Stop) {
    const REFRESH: Duration = Duration::from_secs(60);
    // Descriptors by routed service; `None` until an upstream described it.
    let mut known: BTreeMap<String, Option<reflection::Files>> = BTreeMap::new();
    let mut built: Option<(Vec<String>, reflection::Files)> = None;
    let mut refreshed = tokio::time::Instant::now();
    loop {
        let state = shared.state();
        if refreshed.elapsed() >= REFRESH {
            known.clear();
            refreshed = tokio::time::Instant::now();
        }
        known.retain(|svc, _| state.routes.contains_key(svc));
        for (svc, route) in &state.routes {
            if matches!(known.get(svc), Some(Some(_))) {
                continue;
            }
            let mut found = None;
            for ep in route.cluster.endpoints().iter() {
                found = reflection::fetch(ep.addr, svc, Duration::from_secs(2)).await;
                if found.is_some() {
                    break;
                }
            }
            known.insert(svc.clone(), found);
        }
        let names: Vec<String> = state.routes.keys().cloned().collect();
        let mut files = reflection::Files::new();
        for f in known.values().flatten() {
            for (name, raw) in f {
                files.entry(name.clone()).or_insert_with(|| raw.clone());
            }
        }
        let next = (names, files);
        if built.as_ref() != Some(&next) {
            match reflection::local_routes(&next.0, &next.1, &shared.health) {
                Ok(routes) => {
                    shared.set_local(routes);
                    tracing::info!(
                        services = next.0.len(),
                        files = next.1.len(),
                        "reflection rebuilt from the upstreams"
                    );
                    built = Some(next);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "upstream descriptors rejected; reflection unchanged")
                }
            }
        }
        let every = state.health_interval();
        drop(state);
        tokio::select! {
            () = stop.wait() => return,
            () = shared.reloaded.notified() => known.clear(),
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Reports the proxy itself SERVING once it can verify tokens (JWKS fetched, if any).
async fn ready_task(shared: Arc<Shared>, stop: Stop) {
    let jwks = shared.state().jwt.jwks().cloned();
    if let Some(j) = jwks {
        tokio::select! {
            () = stop.wait() => return,
            () = j.wait_ready() => {}
        }
    }
    if !shared.draining.load(Ordering::Relaxed) {
        shared.health.set("", ServingStatus::Serving);
        tracing::info!("ready");
    }
}

/// Serves until `shutdown`, then drains: NOT_SERVING, `drain_delay`, stop accepting,
/// GOAWAY on every connection, wait up to `grace_period` for calls in flight.
pub async fn run(
    listener: TcpListener,
    config: Config,
    source: Option<PathBuf>,
    resolver: Arc<dyn crate::cluster::Resolve>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let health = HealthState::new();
    let names: Vec<String> = config.routes.keys().cloned().collect();
    let local = reflection::local_routes(&names, &Default::default(), &health)?;
    let server_cfg = config.server.clone();
    let limits = config.limits.clone();
    let state = State::compile_with(config, None, resolver).map_err(Error::Config)?;
    health.set("", ServingStatus::NotServing);
    for svc in state.routes.keys() {
        health.set(svc, ServingStatus::NotServing);
    }
    let shared = Arc::new(Shared::new(state, local, health.clone()));
    let stop = Stop::new();
    tokio::spawn(health_task(shared.clone(), stop.clone()));
    tokio::spawn(ready_task(shared.clone(), stop.clone()));
    tokio::spawn(reflection_task(shared.clone(), stop.clone()));
    if let Some(path) = source {
        tokio::spawn(reload_task(shared.clone(), path, stop.clone()));
    }

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20);
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size((limits.max_header_bytes as usize).max(8192))
        .header_read_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let proxy = Proxy {
        shared: shared.clone(),
    };
    // The runtime's trace layer wraps every call, so the proxy's client span (and the
    // traceparent it injects) is a child of the server span joined to the caller's trace.
    let svc = tower::ServiceBuilder::new()
        .layer(TraceLayer)
        .service(proxy);
    let graceful = GracefulShutdown::new();
    let conns = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tracing::info!(addr = ?listener.local_addr().ok(), tls = shared.state().tls.is_some(),
        routes = ?shared.state().routes.keys().collect::<Vec<_>>(), "auth-proxy listening");

    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = conns.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let tls = shared.state().tls.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let svc = TowerToHyperService::new(svc.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                Some(acceptor) => {
                    let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await;
                    let io = match hs {
                        Ok(Ok(io)) => io,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn = builder.serve_connection(TokioIo::new(io), svc).into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
            }
        });
    }

    tracing::info!(
        grace_ms = server_cfg.grace_period.as_millis() as u64,
        "draining"
    );
    shared.draining.store(true, Ordering::Relaxed);
    health.set_all(ServingStatus::NotServing);
    health.close_watches();
    tokio::time::sleep(server_cfg.drain_delay).await;
    drop(listener);
    stop.trigger();
    if tokio::time::timeout(server_cfg.grace_period, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; cutting the calls still running");
    }
    tracing::info!("stopped");
    Ok(())
}
