//! The tower layers every fargo gRPC server runs, outermost first:
//! [`TraceLayer`] (a span per call, joined to the caller's trace), [`LimitLayer`]
//! (bounded concurrency, optionally shedding), [`DeadlineLayer`] (`grpc-timeout` and
//! a server-side upper bound), [`CodecStatusLayer`] (right codes for undecodable requests).
//! Errors they make are proper trailers-only gRPC responses.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Paths that must keep answering under load and during drain: an orchestrator that
/// cannot get a health answer kills the task, which makes overload worse.
pub fn is_control_plane(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

/// Parses a `grpc-timeout` header value (`100m`, `5S`, ...).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (num, unit) = v.split_at(v.len() - 1);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

// ---------------------------------------------------------------- trace

#[derive(Clone, Debug, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Trace { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

impl<S, B> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((&path, ""));
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        });
        {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let _ = span.set_parent(parent);
        }
        let quiet = is_control_plane(&path);
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                let res = fut.await;
                if let Ok(r) = &res {
                    // Trailers-only errors carry the status in the head; OK arrives in trailers.
                    let code = r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("0");
                    tracing::Span::current().record("rpc.grpc.status_code", code);
                    if !quiet {
                        tracing::debug!(
                            grpc.status = code,
                            latency_us = started.elapsed().as_micros() as u64,
                            "call answered"
                        );
                    }
                }
                res
            }
            .instrument(span),
        )
    }
}

// ---------------------------------------------------------------- deadline

/// Applies the smaller of the client's `grpc-timeout` and `default` to producing the
/// response head; streams are never cut once they have started.
#[derive(Clone, Debug)]
pub struct DeadlineLayer {
    pub default: Duration,
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            default: self.default,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    default: Duration,
}

impl<S, B> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let client = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let limit = client.map_or(self.default, |c| c.min(self.default));
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(r) => r,
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "deadline of {} ms exceeded before the server answered",
                    limit.as_millis()
                ))
                .into_http()),
            }
        })
    }
}

// ---------------------------------------------------------------- limit

/// Bounds the calls handled at once. With `shed`, excess calls are refused at once with
/// RESOURCE_EXHAUSTED, so load balancers and autoscalers see the overload instead of
/// a queue that hides it; otherwise they wait for a slot.
#[derive(Clone, Debug)]
pub struct LimitLayer {
    semaphore: Arc<Semaphore>,
    max: usize,
    shed: bool,
}

impl LimitLayer {
    pub fn new(max: usize, shed: bool) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
            shed,
        }
    }

    /// Calls running now.
    pub fn in_flight(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Limit {
            inner,
            limit: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Limit<S> {
    inner: S,
    limit: LimitLayer,
}

impl<S, B> Service<Request<B>> for Limit<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if is_control_plane(req.uri().path()) {
            return Box::pin(self.inner.call(req));
        }
        let permit = if self.limit.shed {
            match self.limit.semaphore.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    let max = self.limit.max;
                    return Box::pin(async move {
                        Ok(Status::resource_exhausted(format!(
                            "server busy: all {max} slots in use; retry with backoff or on another replica"
                        ))
                        .into_http())
                    });
                }
            }
        } else {
            None
        };
        // The ready inner service is taken, and a fresh clone left for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let sem = self.limit.semaphore.clone();
        Box::pin(async move {
            let permit = match permit {
                Some(p) => p,
                None => match sem.acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return Ok(Status::unavailable("server is shutting down").into_http()),
                },
            };
            let res = inner.call(req).await?;
            Ok(res.map(|b| {
                Body::new(PermitBody {
                    inner: b,
                    _permit: permit,
                })
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// Holds the concurrency slot until a streamed response has finished.
    struct PermitBody {
        #[pin]
        inner: Body,
        _permit: OwnedSemaphorePermit,
    }
}

impl http_body::Body for PermitBody {
    type Data = bytes_alias::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

// ---------------------------------------------------------------- codec status

/// Gives requests tonic could not decode the codes the gRPC spec asks for, with a message
/// a caller can act on. Tonic answers an oversized message with OUT_OF_RANGE, which OTLP
/// and other clients retry forever, and a malformed one with INTERNAL, which blames the
/// server; both are the caller's fault and must not be retried.
#[derive(Clone, Copy, Debug, Default)]
pub struct CodecStatusLayer;

impl<S> Layer<S> for CodecStatusLayer {
    type Service = CodecStatus<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CodecStatus { inner }
    }
}

#[derive(Clone, Debug)]
pub struct CodecStatus<S> {
    inner: S,
}

/// The corrected status for one tonic produced while decoding a request, if it was one.
pub fn codec_status(status: &Status) -> Option<Status> {
    let msg = status.message();
    match status.code() {
        tonic::Code::OutOfRange if msg.contains("decoded message length too large") => {
            // "... found {len} bytes, the limit is: {limit} bytes"
            let mut numbers = msg
                .split(|c: char| !c.is_ascii_digit())
                .filter(|w| !w.is_empty());
            let found = numbers.next().unwrap_or("?");
            let limit = numbers.next().unwrap_or("?");
            Some(Status::resource_exhausted(format!(
                "request too large: {found} bytes, and this server accepts at most {limit} \
                 bytes per message; send a smaller message"
            )))
        }
        tonic::Code::Internal
            if msg.starts_with("failed to decode Protobuf message")
                || msg.starts_with("Error decompressing") =>
        {
            Some(Status::invalid_argument(format!(
                "request is not a valid message: {msg}"
            )))
        }
        _ => None,
    }
}

fn fix_headers(headers: &mut http::HeaderMap) {
    let fixed = Status::from_header_map(headers).and_then(|s| codec_status(&s));
    if let Some(s) = fixed {
        headers.remove("grpc-message");
        headers.remove("grpc-status-details-bin");
        // Only fails on a message that cannot be a header value; ours always can.
        let _ = s.add_header(headers);
    }
}

impl<S, B> Service<Request<B>> for CodecStatus<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            // Unary calls fail decoding before any message: a trailers-only answer.
            if res.headers().contains_key("grpc-status") {
                let (mut parts, body) = res.into_parts();
                fix_headers(&mut parts.headers);
                return Ok(Response::from_parts(parts, body));
            }
            // Streaming calls fail mid-stream: the status is in the trailers.
            use http_body_util::BodyExt;
            Ok(res.map(|b| {
                Body::new(b.map_frame(|f| match f.into_trailers() {
                    Ok(mut t) => {
                        fix_headers(&mut t);
                        http_body::Frame::trailers(t)
                    }
                    Err(data) => data,
                }))
            }))
        })
    }
}

mod bytes_alias {
    pub type Bytes = <tonic::body::Body as http_body::Body>::Data;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_errors_get_caller_codes() {
        let big = Status::out_of_range(
            "Error, decoded message length too large: found 70000 bytes, the limit is: 65536 bytes",
        );
        let s = codec_status(&big).unwrap();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert!(
            s.message().contains("70000") && s.message().contains("65536"),
            "{s:?}"
        );
        let bad = Status::internal("failed to decode Protobuf message: invalid wire type");
        assert_eq!(
            codec_status(&bad).unwrap().code(),
            tonic::Code::InvalidArgument
        );
        let gz =
            Status::internal("Error decompressing: invalid gzip header, while sending request");
        assert_eq!(
            codec_status(&gz).unwrap().code(),
            tonic::Code::InvalidArgument
        );
        // A handler's own statuses pass untouched.
        assert!(codec_status(&Status::out_of_range("position past the end")).is_none());
        assert!(codec_status(&Status::internal("disk full")).is_none());
    }

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("1234567890S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    // Over the network a tonic client races its own timer against the server's answer,
    // so the client's `grpc-timeout` winning over the server default is checked here.
    #[tokio::test]
    async fn client_grpc_timeout_wins_when_smaller() {
        use tower::ServiceExt;
        let slow = tower::service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        });
        let svc = DeadlineLayer {
            default: Duration::from_secs(30),
        }
        .layer(slow);
        let req = Request::builder()
            .header("grpc-timeout", "150m")
            .body(())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.headers().get("grpc-status").unwrap(), "4");
        let msg = res.headers().get("grpc-message").unwrap().to_str().unwrap();
        assert!(msg.contains("150"), "{msg}");
    }
}
