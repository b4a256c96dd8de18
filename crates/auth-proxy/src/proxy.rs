//! The data path: one call in, checked in order (shape, route, credentials, rules,
//! rate limits, deadline), then forwarded to an upstream endpoint over HTTP/2.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fargo_runtime::health::HealthState;
use fargo_runtime::layers::{is_control_plane, parse_grpc_timeout};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tonic::body::Body;
use tower::ServiceExt;
use tracing::Instrument;

use crate::auth::{self, Principal};
use crate::body::{AccessLog, RequestBody, RequestStats, ResponseBody};
use crate::config::AuthMode;
use crate::error::ProxyError;
use crate::state::{Route, State};

/// The header carrying the authenticated principal to upstreams. Incoming copies are
/// always removed, so upstreams can trust it.
pub const PRINCIPAL_HEADER: &str = "x-fargo-principal";

type UpstreamClient = Client<HttpConnector, RequestBody<Incoming>>;

/// What every call shares: the current state, the upstream client, the local
/// health and reflection services.
pub struct Shared {
    state: RwLock<Arc<State>>,
    /// One h2 connection is driven by one task at each end, so a single shared connection
    /// caps a busy proxy at about one core; a client (and so a connection) per core doesn't.
    clients: Box<[UpstreamClient]>,
    next_client: std::sync::atomic::AtomicUsize,
    /// Health and reflection; reflection is rebuilt as upstreams and routes change.
    local: RwLock<tonic::service::Routes>,
    /// Wakes the reflection task after a reload.
    pub reloaded: tokio::sync::Notify,
    pub health: HealthState,
    pub draining: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(state: State, local: tonic::service::Routes, health: HealthState) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        http.enforce_http(true);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        let clients = (0..cores)
            .map(|_| {
                Client::builder(hyper_util::rt::TokioExecutor::new())
                    .http2_only(true)
                    .timer(hyper_util::rt::TokioTimer::new())
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .http2_initial_stream_window_size(1 << 20)
                    .http2_initial_connection_window_size(4 << 20)
                    .build(http.clone())
            })
            .collect();
        Self {
            state: RwLock::new(Arc::new(state)),
            clients,
            next_client: std::sync::atomic::AtomicUsize::new(0),
            local: RwLock::new(local),
            reloaded: tokio::sync::Notify::new(),
            health,
            draining: AtomicBool::new(false),
        }
    }

    pub fn state(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn swap(&self, next: State) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.reloaded.notify_one();
    }

    pub fn set_local(&self, routes: tonic::service::Routes) {
        *self.local.write().unwrap_or_else(|e| e.into_inner()) = routes;
    }

    fn client(&self) -> &UpstreamClient {
        let i = self.next_client.fetch_add(1, Ordering::Relaxed);
        &self.clients[i % self.clients.len()]
    }

    fn local(&self) -> tonic::service::Routes {
        self.local.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The tower service hyper runs for every client stream.
#[derive(Clone, Debug)]
pub struct Proxy {
    pub shared: Arc<Shared>,
}

impl tower::Service<Request<Incoming>> for Proxy {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(handle(shared, req).await) })
    }
}

/// Splits `/package.Service/Method`, refusing anything else: empty segments (`//`),
/// percent-encoding, extra slashes, queries. The checked string is the one forwarded,
/// so authorization and routing see exactly what the upstream sees.
pub fn parse_path(path: &str) -> Result<(&str, &str), ProxyError> {
    let bad = || ProxyError::BadPath(path.chars().take(200).collect());
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    let (service, method) = rest.split_once('/').ok_or_else(bad)?;
    let ok_service = !service.is_empty()
        && !service.starts_with('.')
        && !service.ends_with('.')
        && service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
    let ok_method = !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok_service && ok_method {
        Ok((service, method))
    } else {
        Err(bad())
    }
}

/// Formats a remaining budget as a `grpc-timeout` value (at most 8 digits).
pub fn format_grpc_timeout(d: Duration) -> String {
    let us = d.as_micros();
    if us < 100_000_000 {
        format!("{}u", us.max(1))
    } else if d.as_millis() < 100_000_000 {
        format!("{}m", d.as_millis())
    } else {
        format!("{}S", d.as_secs().min(99_999_999))
    }
}

const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
    "te",
];

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

fn cors(resp: &mut Response<Body>, origin: Option<&HeaderValue>, state: &State) {
    let Some(origin) = origin else { return };
    let allowed = state
        .config
        .cors_origins
        .iter()
        .any(|o| o == "*" || origin.as_bytes() == o.as_bytes());
    if !allowed {
        return;
    }
    let h = resp.headers_mut();
    h.insert("access-control-allow-origin", origin.clone());
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("grpc-status,grpc-message,grpc-status-details-bin"),
    );
    h.insert("vary", HeaderValue::from_static("origin"));
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let state = shared.state();
    let origin = req.headers().get(http::header::ORIGIN).cloned();
    let ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let grpc_web = ct.starts_with("application/grpc-web");
    let started = Instant::now();
    let path: String = req.uri().path().chars().take(200).collect();
    let mut resp = if req.method() == Method::OPTIONS && origin.is_some() {
        preflight()
    } else {
        match route_call(&shared, &state, req, &ct, grpc_web)
            .await
            .map_err(|e| (e, path))
        {
            Ok(r) => r,
            Err((e, path)) => {
                // Refusals get an access record too; the message never holds a credential.
                let principal = match &e {
                    ProxyError::Forbidden { principal, .. } => principal.as_str(),
                    _ => "-",
                };
                let trace_id = crate::body::trace_id(&tracing::Span::current());
                tracing::info!(
                    target: "auth_proxy::access",
                    trace_id = trace_id.as_deref().unwrap_or("-"),
                    principal,
                    method = %path,
                    upstream = "-",
                    grpc_status = e.code() as i32,
                    latency_us = started.elapsed().as_micros() as u64,
                    error = %e,
                    "call refused"
                );
                e.into_response(grpc_web)
            }
        }
    };
    if grpc_web || origin.is_some() {
        cors(&mut resp, origin.as_ref(), &state);
    }
    resp
}

fn preflight() -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = http::StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static(
            "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization,x-api-key",
        ),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("600"));
    r
}

async fn authenticate(
    state: &State,
    modes: &[AuthMode],
    headers: &HeaderMap,
) -> Result<Principal, ProxyError> {
    let bad = |m: &str| ProxyError::BadCredentials(m.to_owned());
    let mut keys = headers.get_all("x-api-key").iter();
    let key = keys.next();
    if keys.next().is_some() {
        return Err(bad("more than one x-api-key header"));
    }
    let mut authz = headers.get_all(http::header::AUTHORIZATION).iter();
    let bearer = authz.next();
    if authz.next().is_some() {
        return Err(bad("more than one authorization header"));
    }
    match (key, bearer) {
        (Some(_), Some(_)) => Err(bad("send either an API key or a JWT, not both")),
        (Some(k), None) => {
            if !modes.contains(&AuthMode::ApiKey) {
                return Err(bad("this route does not accept API keys"));
            }
            let k = auth::parse_api_key(k.as_bytes()).map_err(bad)?;
            let name = state
                .api_keys
                .verify(k)
                .ok_or_else(|| bad("unknown API key"))?;
            Ok(Principal {
                name: name.to_owned(),
                scopes: Vec::new(),
                claims: Default::default(),
            })
        }
        (None, Some(b)) => {
            if !modes.contains(&AuthMode::Jwt) {
                return Err(bad("this route does not accept JWTs"));
            }
            let token = auth::parse_bearer(b.as_bytes()).map_err(bad)?;
            state.jwt.verify(token).await
        }
        (None, None) => Err(ProxyError::MissingCredentials),
    }
}

fn rate_limit(
    state: &State,
    route: Option<&Route>,
    who: Option<&Principal>,
) -> Result<(), ProxyError> {
    // The limiters' own clocks: building a clock calibrates it, far too slow per call.
    use governor::clock::Clock;
    if let (Some(l), Some(p)) = (&state.principal_limiter, who)
        && let Err(nu) = l.check_key(&p.name)
    {
        return Err(ProxyError::RateLimited {
            scope: "this caller",
            retry_after: nu.wait_time_from(l.clock().now()),
        });
    }
    if let Some(l) = route.and_then(|r| r.limiter.as_ref())
        && let Err(nu) = l.check()
    {
        return Err(ProxyError::RateLimited {
            scope: "this route",
            retry_after: nu.wait_time_from(l.clock().now()),
        });
    }
    Ok(())
}

async fn route_call(
    shared: &Shared,
    state: &State,
    mut req: Request<Incoming>,
    ct: &str,
    grpc_web: bool,
) -> Result<Response<Body>, ProxyError> {
    let received = Instant::now();
    if ct.starts_with("application/grpc-web-text") {
        return Err(ProxyError::NotGrpc(
            "application/grpc-web-text (use binary gRPC-Web)".into(),
        ));
    }
    if !ct.starts_with("application/grpc") || req.method() != Method::POST {
        return Err(ProxyError::NotGrpc(ct.chars().take(100).collect()));
    }
    let path = req.uri().path().to_owned();
    if req.uri().query().is_some() {
        return Err(ProxyError::BadPath(path));
    }
    let (service, _method) = parse_path(&path)?;
    req.headers_mut().remove(PRINCIPAL_HEADER);

    if is_control_plane(&path) {
        if !state.config.open_control_plane {
            let who =
                authenticate(state, &[AuthMode::ApiKey, AuthMode::Jwt], req.headers()).await?;
            authorize(state, &who, &path)?;
        }
        return Ok(local(shared, req, grpc_web).await);
    }

    let route = state
        .routes
        .get(service)
        .ok_or_else(|| ProxyError::UnknownService(path.clone()))?;
    let who = if route.cfg.auth.is_empty() {
        None
    } else {
        let p = authenticate(state, &route.cfg.auth, req.headers()).await?;
        authorize(state, &p, &path)?;
        Some(p)
    };
    rate_limit(state, Some(route), who.as_ref())?;
    if shared.draining.load(Ordering::Relaxed) && req.version() != Version::HTTP_2 {
        // HTTP/1 clients get no GOAWAY; tell them to go elsewhere.
        return Err(ProxyError::Draining);
    }

    // The client's deadline covers the whole call and is forwarded as what is left of it;
    // without one, the route's default bounds only the wait for the response head.
    let client_deadline = req
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    let head_limit = client_deadline.unwrap_or(
        route
            .cfg
            .timeout
            .unwrap_or(state.config.server.request_timeout),
    );

    let ep = route
        .cluster
        .pick()
        .ok_or_else(|| ProxyError::NoEndpoint(route.cluster.name.clone()))?;
    let flight = ep.start();

    let (mut parts, body) = req.into_parts();
    let uri = format!("{}{}", ep.base, path);
    parts.uri = uri.parse().map_err(|_| ProxyError::BadPath(path.clone()))?;
    parts.version = Version::HTTP_2;
    let h = &mut parts.headers;
    for name in HOP_BY_HOP {
        h.remove(name);
    }
    // Upstreams trust the principal header instead; credentials stay at the door.
    h.remove("x-api-key");
    h.remove(http::header::AUTHORIZATION);
    h.insert("te", HeaderValue::from_static("trailers"));
    if grpc_web {
        let upstream_ct = if ct.contains("+proto") || ct == "application/grpc-web" {
            "application/grpc+proto"
        } else {
            "application/grpc"
        };
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(upstream_ct),
        );
        h.remove("x-grpc-web");
    }
    if let Some(p) = &who
        && let Ok(v) = HeaderValue::from_str(&p.name)
    {
        h.insert(PRINCIPAL_HEADER, v);
    }
    if let Some(d) = client_deadline {
        let left = d.saturating_sub(received.elapsed());
        if left.is_zero() {
            return Err(ProxyError::Deadline(d));
        }
        if let Ok(v) = HeaderValue::from_str(&format_grpc_timeout(left)) {
            h.insert("grpc-timeout", v);
        }
    }
    let span = tracing::info_span!(
        "grpc.client",
        otel.name = %path,
        otel.kind = "client",
        rpc.system = "grpc",
        server.address = %ep.addr,
    );
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let cx = span.context();
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut HeaderInjector(h))
        });
    }

    let stats = Arc::new(RequestStats::default());
    let max = state.config.server.max_message_bytes as u64;
    // With another endpoint to retry on, keep what it takes to send the call again
    // (a one-endpoint cluster, the common sidecar case, pays nothing for it).
    let (give_back, mut replay) = if route.cluster.endpoints().len() > 1 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let method = parts.method.clone();
    let headers = if replay.is_some() {
        parts.headers.clone()
    } else {
        HeaderMap::new()
    };
    let mut upstream_req =
        Request::from_parts(parts, RequestBody::new(body, max, stats.clone(), give_back));
    let (mut ep, mut flight) = (ep, flight);
    let deadline = tokio::time::Instant::now() + head_limit;
    let resp = loop {
        let sent = tokio::time::timeout_at(deadline, shared.client().request(upstream_req))
            .instrument(span.clone())
            .await;
        let e = match sent {
            Ok(Ok(r)) => break r,
            Ok(Err(e)) => e,
            Err(_) => return Err(ProxyError::Deadline(head_limit)),
        };
        let oversized = stats.oversized.load(Ordering::Relaxed);
        if oversized > 0 {
            return Err(ProxyError::MessageTooLarge {
                size: oversized,
                limit: max,
            });
        }
        route.cluster.report(&ep, false);
        if e.is_connect() {
            route.cluster.resolve_soon();
        }
        let why = std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_else(|| e.to_string());
        let err = ProxyError::Upstream(ep.addr.to_string(), why);
        // Once, on another endpoint, and only when this one provably did not process it.
        let Some(replay) = replay.take().filter(|_| unprocessed(&e)) else {
            return Err(err);
        };
        let Some(next) = route.cluster.pick_other(ep.addr) else {
            return Err(err);
        };
        // The failed attempt hands the body back as it drops it, at once in practice.
        let wait = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
        let Ok(Ok(replay)) = tokio::time::timeout_at(wait, replay).await else {
            return Err(err);
        };
        tracing::info!(method = %path, failed = %ep.addr, retry = %next.addr, error = %err,
            "upstream did not take the call; retrying on another endpoint");
        let mut h = headers.clone();
        if let Some(d) = client_deadline {
            let left = d.saturating_sub(received.elapsed());
            if let Ok(v) = HeaderValue::from_str(&format_grpc_timeout(left)) {
                h.insert("grpc-timeout", v);
            }
        }
        let uri: http::Uri = format!("{}{}", next.base, path)
            .parse()
            .map_err(|_| ProxyError::BadPath(path.clone()))?;
        let mut r = Request::new(RequestBody::replay(replay, max, stats.clone()));
        *r.method_mut() = method.clone();
        *r.uri_mut() = uri;
        *r.version_mut() = Version::HTTP_2;
        *r.headers_mut() = h;
        upstream_req = r;
        flight = next.start();
        ep = next;
    };

    let (mut parts, body) = resp.into_parts();
    let head_status = parts
        .headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(s) = &head_status {
        route.cluster.report(&ep, s != "14");
    }
    if grpc_web {
        parts.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web+proto"),
        );
    }
    let log = AccessLog {
        span: tracing::Span::current(),
        principal: who.map_or_else(|| "-".to_owned(), |p| p.name),
        path,
        upstream: ep.addr.to_string(),
        started: received,
        status: head_status,
        request: stats,
        bytes_out: 0,
    };
    let body = ResponseBody::new(
        body,
        grpc_web,
        Some(log),
        Some((route.cluster.clone(), flight)),
    );
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Whether a failed upstream call certainly never reached the service: the connection
/// was never made, the stream was refused (`REFUSED_STREAM`), or a graceful GOAWAY
/// excluded it (a GOAWAY with an error code may cover processed streams too).
fn unprocessed(e: &hyper_util::client::legacy::Error) -> bool {
    if e.is_connect() {
        return true;
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.is_remote()
                && (h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                    || (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR)));
        }
        src = s.source();
    }
    false
}

fn authorize(state: &State, who: &Principal, path: &str) -> Result<(), ProxyError> {
    if auth::allowed(&state.config.access, who, path) {
        Ok(())
    } else {
        Err(ProxyError::Forbidden {
            principal: who.name.clone(),
            path: path.to_owned(),
        })
    }
}

/// Health and reflection, answered by the proxy itself.
async fn local(shared: &Shared, mut req: Request<Incoming>, grpc_web: bool) -> Response<Body> {
    if grpc_web {
        req.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
    }
    let resp = match shared.local().oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if !grpc_web {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc-web+proto"),
    );
    Response::from_parts(parts, Body::new(ResponseBody::new(body, true, None, None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(parse_path("/a.B/C").is_ok());
        for bad in [
            "", "/", "//a.B/C", "/a.B//C", "/a.B/C/", "/a%2EB/C", "/a.B%2FC", "a.B/C", "/a.B/",
            "/.B/C", "/a.B/C.D",
        ] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_round_trip() {
        for ms in [1u64, 999, 100_000, 10_000_000_000] {
            let d = Duration::from_millis(ms);
            let s = format_grpc_timeout(d);
            let back = parse_grpc_timeout(&s).unwrap();
            assert!(back <= d && d - back < Duration::from_secs(1), "{s}");
        }
    }
}
