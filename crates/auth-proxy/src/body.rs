//! Bodies wrapped around proxied streams: the request side enforces the message-size
//! limit on gRPC length prefixes; the response side turns a lost upstream into a gRPC
//! status, encodes trailers for gRPC-Web, and writes the access log record when done.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::cluster::{Cluster, InFlight};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the request body saw, shared with the handler.
#[derive(Debug, Default)]
pub struct RequestStats {
    pub bytes: AtomicU64,
    /// Size of the first message over the limit, or 0.
    pub oversized: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
#[error("request message of {0} bytes exceeds the limit")]
pub struct TooLarge(pub u64);

/// Request bytes kept for a replay on another endpoint; a call with more than this in
/// flight when its endpoint fails is not retried.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// What a request body hands back when it is dropped unfinished-but-replayable: the
/// frames already given to the failed endpoint, the rest of the client's stream, and the
/// message parser's state.
#[derive(Debug)]
pub struct Replay<B> {
    inner: Option<B>,
    frames: Vec<Bytes>,
    header: [u8; 5],
    have: usize,
    remaining: u64,
}

/// Passes request frames through while parsing the 5-byte gRPC message prefixes,
/// failing the stream at the first message over `max` before its payload is sent.
/// Frames sent are kept (up to [`REPLAY_LIMIT`]) and handed back on drop when the
/// call may be replayed on another endpoint.
pub struct RequestBody<B> {
    /// `None` once the client's stream has ended.
    inner: Option<B>,
    /// Frames to send again before reading more of `inner` (a replay).
    resend: std::collections::VecDeque<Bytes>,
    kept: Vec<Bytes>,
    kept_len: usize,
    give_back: Option<tokio::sync::oneshot::Sender<Replay<B>>>,
    max: u64,
    header: [u8; 5],
    have: usize,
    remaining: u64,
    stats: Arc<RequestStats>,
}

impl<B> std::fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody").finish_non_exhaustive()
    }
}

impl<B> RequestBody<B> {
    /// A fresh body; `give_back`, when given, receives it back if dropped replayable.
    pub fn new(
        inner: B,
        max: u64,
        stats: Arc<RequestStats>,
        give_back: Option<tokio::sync::oneshot::Sender<Replay<B>>>,
    ) -> Self {
        Self {
            inner: Some(inner),
            resend: Default::default(),
            kept: Vec::new(),
            kept_len: 0,
            give_back,
            max,
            header: [0; 5],
            have: 0,
            remaining: 0,
            stats,
        }
    }

    /// The same request again, from its first byte; it is not replayed a second time.
    pub fn replay(r: Replay<B>, max: u64, stats: Arc<RequestStats>) -> Self {
        Self {
            inner: r.inner,
            resend: r.frames.into(),
            kept: Vec::new(),
            kept_len: 0,
            give_back: None,
            max,
            header: r.header,
            have: r.have,
            remaining: r.remaining,
            stats,
        }
    }

    fn keep(&mut self, data: &Bytes) {
        let Some(tx) = &self.give_back else { return };
        self.kept_len += data.len();
        // A closed receiver means the upstream answered: no replay will be asked for.
        if self.kept_len > REPLAY_LIMIT || tx.is_closed() {
            // Too much to hold: this call will not be replayed.
            self.give_back = None;
            self.kept = Vec::new();
        } else {
            self.kept.push(data.clone());
        }
    }
}

impl<B> Drop for RequestBody<B> {
    fn drop(&mut self) {
        if let Some(tx) = self.give_back.take() {
            let mut frames = std::mem::take(&mut self.kept);
            frames.extend(self.resend.drain(..));
            let _ = tx.send(Replay {
                inner: self.inner.take(),
                frames,
                header: self.header,
                have: self.have,
                remaining: self.remaining,
            });
        }
    }
}

/// Scans `data` for gRPC message prefixes; returns the first declared length over `max`.
/// `header`/`have`/`remaining` carry the parser state across chunks.
pub fn scan_frames(
    data: &[u8],
    header: &mut [u8; 5],
    have: &mut usize,
    remaining: &mut u64,
    max: u64,
) -> Option<u64> {
    let mut i = 0;
    while i < data.len() {
        if *remaining > 0 {
            let take = (*remaining).min((data.len() - i) as u64);
            *remaining -= take;
            i += take as usize;
            continue;
        }
        header[*have] = data[i];
        *have += 1;
        i += 1;
        if *have == 5 {
            *have = 0;
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as u64;
            if len > max {
                return Some(len);
            }
            *remaining = len;
        }
    }
    None
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(data) = this.resend.pop_front() {
            // Already counted and checked when first sent.
            this.keep(&data);
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match ready!(Pin::new(inner).poll_frame(cx)) {
            None => {
                this.inner = None;
                return Poll::Ready(None);
            }
            Some(Err(e)) => {
                this.give_back = None;
                return Poll::Ready(Some(Err(e.into())));
            }
            Some(Ok(f)) => f,
        };
        match frame.data_ref() {
            Some(data) => {
                this.stats
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if let Some(len) = scan_frames(
                    data,
                    &mut this.header,
                    &mut this.have,
                    &mut this.remaining,
                    this.max,
                ) {
                    this.stats.oversized.store(len, Ordering::Relaxed);
                    this.give_back = None;
                    return Poll::Ready(Some(Err(Box::new(TooLarge(len)))));
                }
                let data = data.clone();
                this.keep(&data);
            }
            // Request trailers are not kept; such a call is not replayed.
            None => this.give_back = None,
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.resend.is_empty() && self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) if self.resend.is_empty() => b.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

/// The OpenTelemetry trace id of `span`, when it has one (an exporter is set up).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The per-call access log record, written when the response body is dropped.
#[derive(Debug)]
pub struct AccessLog {
    /// The call's server span, captured at request time: the record is written after
    /// the handler returned, outside it, and must still join the call's trace.
    pub span: tracing::Span,
    pub principal: String,
    pub path: String,
    pub upstream: String,
    pub started: Instant,
    pub status: Option<String>,
    pub request: Arc<RequestStats>,
    pub bytes_out: u64,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let trace_id = trace_id(&self.span);
        let _in_call = self.span.enter();
        tracing::info!(
            target: "auth_proxy::access",
            trace_id = trace_id.as_deref().unwrap_or("-"),
            principal = %self.principal,
            method = %self.path,
            upstream = %self.upstream,
            grpc_status = self.status.as_deref().unwrap_or("cancelled"),
            latency_us = self.started.elapsed().as_micros() as u64,
            bytes_in = self.request.bytes.load(Ordering::Relaxed),
            bytes_out = self.bytes_out,
            "call"
        );
    }
}

/// gRPC-Web carries trailers in the body: a frame flagged 0x80 of `name: value\r\n` lines.
pub fn encode_web_trailers(trailers: &HeaderMap) -> Bytes {
    let mut block = Vec::new();
    for (k, v) in trailers {
        block.extend_from_slice(k.as_str().as_bytes());
        block.extend_from_slice(b": ");
        block.extend_from_slice(v.as_bytes());
        block.extend_from_slice(b"\r\n");
    }
    let mut out = BytesMut::with_capacity(5 + block.len());
    out.put_u8(0x80);
    out.put_u32(block.len() as u32);
    out.extend_from_slice(&block);
    out.freeze()
}

pin_project_lite::pin_project! {
    /// The response stream back to the client.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        grpc_web: bool,
        done: bool,
        log: Option<AccessLog>,
        upstream: Option<(Arc<Cluster>, InFlight)>,
    }
}

impl<B> ResponseBody<B> {
    pub fn new(
        inner: B,
        grpc_web: bool,
        log: Option<AccessLog>,
        upstream: Option<(Arc<Cluster>, InFlight)>,
    ) -> Self {
        Self {
            inner,
            grpc_web,
            done: false,
            log,
            upstream,
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let frame = match ready!(this.inner.poll_frame(cx)) {
            None => {
                *this.done = true;
                return Poll::Ready(None);
            }
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                // The upstream went away mid-call: end the stream with a status the client
                // can act on rather than a bare reset.
                *this.done = true;
                if let Some((cluster, flight)) = this.upstream.as_ref() {
                    cluster.report(flight.endpoint(), false);
                }
                let mut t = HeaderMap::new();
                t.insert("grpc-status", http::HeaderValue::from(14));
                if let Ok(v) = http::HeaderValue::from_str(&crate::error::encode_message(&format!(
                    "upstream connection lost mid-call: {e}"
                ))) {
                    t.insert("grpc-message", v);
                }
                if let Some(log) = this.log.as_mut() {
                    log.status = Some("14".into());
                }
                return Poll::Ready(Some(Ok(if *this.grpc_web {
                    Frame::data(encode_web_trailers(&t))
                } else {
                    Frame::trailers(t)
                })));
            }
        };
        match frame.into_data() {
            Ok(data) => {
                if let Some(log) = this.log.as_mut() {
                    log.bytes_out += data.len() as u64;
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    let status = trailers
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    if let Some((cluster, flight)) = this.upstream.as_ref() {
                        cluster.report(flight.endpoint(), status.as_deref() != Some("14"));
                    }
                    if let Some(log) = this.log.as_mut() {
                        log.status = status;
                    }
                    Poll::Ready(Some(Ok(if *this.grpc_web {
                        Frame::data(encode_web_trailers(&trailers))
                    } else {
                        Frame::trailers(trailers)
                    })))
                }
                Err(other) => Poll::Ready(Some(Ok(other))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(len: u32) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend(std::iter::repeat_n(7u8, len as usize));
        v
    }

    #[test]
    fn frames_split_anywhere_are_parsed() {
        let mut all = msg(3);
        all.extend(msg(10));
        all.extend(msg(2));
        for cut in 0..all.len() {
            let (mut h, mut have, mut rem) = ([0u8; 5], 0, 0);
            let a = scan_frames(&all[..cut], &mut h, &mut have, &mut rem, 5);
            let b = scan_frames(&all[cut..], &mut h, &mut have, &mut rem, 5);
            assert_eq!(a.or(b), Some(10), "cut at {cut}");
        }
        let (mut h, mut have, mut rem) = ([0u8; 5], 0, 0);
        assert_eq!(scan_frames(&all, &mut h, &mut have, &mut rem, 10), None);
    }

    #[test]
    fn web_trailers_frame() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from(0));
        let b = encode_web_trailers(&t);
        assert_eq!(b[0], 0x80);
        assert_eq!(&b[5..], b"grpc-status: 0\r\n");
    }
}
