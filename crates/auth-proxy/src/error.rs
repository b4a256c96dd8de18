//! Everything the proxy refuses or fails at, and the one place that turns it into a
//! gRPC answer: trailers-only, `grpc-status`, percent-encoded `grpc-message`.

use std::time::Duration;

use http::{HeaderValue, Response};
use tonic::Code;
use tonic::body::Body;

/// Why a call did not reach (or come back from) an upstream. Messages say what to do
/// and never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no credentials: send an API key in `x-api-key` or a JWT in `authorization: Bearer`")]
    MissingCredentials,
    #[error("invalid credentials: {0}")]
    BadCredentials(String),
    #[error("`{principal}` may not call {path}")]
    Forbidden { principal: String, path: String },
    #[error("rate limit of {scope} exceeded; retry after {} ms", retry_after.as_millis())]
    RateLimited {
        scope: &'static str,
        retry_after: Duration,
    },
    #[error("unknown method `{0}`: no route for this service")]
    UnknownService(String),
    #[error("malformed gRPC path `{0}`: expected /package.Service/Method")]
    BadPath(String),
    #[error("not a gRPC request (content-type `{0}`)")]
    NotGrpc(String),
    #[error("no healthy endpoint in cluster `{0}`")]
    NoEndpoint(String),
    #[error("upstream {0} unreachable: {1}")]
    Upstream(String, String),
    #[error("deadline of {} ms exceeded before the upstream answered", .0.as_millis())]
    Deadline(Duration),
    #[error("request message of {size} bytes exceeds the {limit}-byte limit")]
    MessageTooLarge { size: u64, limit: u64 },
    #[error("signing keys are not available yet (JWKS not fetched); retry shortly")]
    KeysUnavailable,
    #[error("the proxy is shutting down")]
    Draining,
}

impl ProxyError {
    pub fn code(&self) -> Code {
        match self {
            Self::MissingCredentials | Self::BadCredentials(_) => Code::Unauthenticated,
            Self::Forbidden { .. } => Code::PermissionDenied,
            Self::RateLimited { .. } | Self::MessageTooLarge { .. } => Code::ResourceExhausted,
            Self::UnknownService(_) | Self::BadPath(_) => Code::Unimplemented,
            Self::NotGrpc(_) => Code::InvalidArgument,
            Self::NoEndpoint(_) | Self::Upstream(..) | Self::KeysUnavailable | Self::Draining => {
                Code::Unavailable
            }
            Self::Deadline(_) => Code::DeadlineExceeded,
        }
    }

    /// The trailers-only gRPC response for this error.
    pub fn into_response(self, grpc_web: bool) -> Response<Body> {
        let retry = match &self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let mut resp = trailers_only(self.code(), &self.to_string(), grpc_web);
        if let Some(after) = retry {
            let h = resp.headers_mut();
            let ms = after.as_millis().max(1);
            // gRPC clients read this for retry pushback; HTTP tooling reads retry-after.
            h.insert("grpc-retry-pushback-ms", HeaderValue::from(ms as u64));
            h.insert("retry-after", HeaderValue::from(after.as_secs().max(1)));
            if let Ok(v) =
                HeaderValue::from_str(&retry_info_details(Code::ResourceExhausted, after))
            {
                h.insert("grpc-status-details-bin", v);
            }
        }
        resp
    }
}

/// A trailers-only response: status and message in the head, empty body.
pub fn trailers_only(code: Code, message: &str, grpc_web: bool) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(if grpc_web {
            "application/grpc-web+proto"
        } else {
            "application/grpc"
        }),
    );
    h.insert("grpc-status", HeaderValue::from(code as i32));
    if let Ok(v) = HeaderValue::from_str(&encode_message(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// Percent-encodes a `grpc-message` as the gRPC HTTP/2 spec asks.
pub fn encode_message(msg: &str) -> String {
    use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
    // Everything outside printable ASCII, plus `%` itself.
    const SET: &AsciiSet = &CONTROLS.add(b'%');
    utf8_percent_encode(msg, SET).to_string()
}

// google.rpc.Status and google.rpc.RetryInfo, just the fields we send.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoAny {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// `grpc-status-details-bin` carrying a `google.rpc.RetryInfo`, base64 without padding.
fn retry_info_details(code: Code, after: Duration) -> String {
    use base64::Engine;
    use prost::Message;
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: after.as_secs() as i64,
            nanos: after.subsec_nanos() as i32,
        }),
    };
    let status = RpcStatus {
        code: code as i32,
        message: "rate limited".into(),
        details: vec![ProtoAny {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: info.encode_to_vec(),
        }],
    };
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec())
}

/// Errors of the proxy as a whole (startup and serving).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("accept: {0}")]
    Accept(#[from] std::io::Error),
}
