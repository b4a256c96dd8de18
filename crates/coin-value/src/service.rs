//! The `fargo.coinvalue.v1.CoinValueService` gRPC surface, and the one place where
//! [`Error`] becomes a `tonic::Status`.

use std::sync::Arc;

use fargo_proto::coinvalue::v1 as pb;
use fargo_proto::coinvalue::v1::coin_value_service_server::{
    CoinValueService, CoinValueServiceServer,
};
use tokio::sync::Semaphore;
use tonic::codegen::{Context, Poll, Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::{Config, DecodeLimits, Denomination, Error};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::NotAnImage(_) | Error::Corrupt(_) | Error::NoImage => {
                Status::invalid_argument(msg)
            }
            Error::TooLarge(_) => Status::resource_exhausted(msg),
            Error::Read { .. } => Status::failed_precondition(msg),
            Error::Internal(_) | Error::Serve(_) => Status::internal(msg),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CoinValueGrpc {
    limits: DecodeLimits,
    max_image_bytes: usize,
    /// Bounds the blocking pool to the cores: CPU work beyond them only adds latency.
    workers: Arc<Semaphore>,
}

impl CoinValueGrpc {
    pub fn new(config: &Config) -> Self {
        Self {
            limits: config.coins.limits(),
            max_image_bytes: config.coins.max_image_bytes,
            workers: Arc::new(Semaphore::new(config.coins.effective_workers())),
        }
    }

    /// The tonic service, wrapped so that an oversized request is RESOURCE_EXHAUSTED
    /// with the limit in the message rather than tonic's OUT_OF_RANGE.
    pub fn server(self, max_message_bytes: usize) -> SizeLimited<CoinValueServiceServer<Self>> {
        SizeLimited {
            inner: CoinValueServiceServer::new(self)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
            limit: max_message_bytes,
        }
    }

    async fn run(&self, bytes: Vec<u8>, annotate: bool) -> Result<crate::CountResult, Error> {
        if bytes.len() > self.max_image_bytes {
            return Err(Error::TooLarge(format!(
                "{} bytes; images up to {} bytes are accepted",
                bytes.len(),
                self.max_image_bytes
            )));
        }
        let _permit = self
            .workers
            .acquire()
            .await
            .map_err(|_| Error::Internal("the service is shutting down".into()))?;
        let limits = self.limits;
        tokio::task::spawn_blocking(move || crate::count(&bytes, &limits, annotate))
            .await
            .map_err(|e| Error::Internal(format!("the counting task failed: {e}")))?
    }
}

fn denomination(d: Option<Denomination>) -> pb::Denomination {
    match d {
        None => pb::Denomination::Unspecified,
        Some(Denomination::Penny) => pb::Denomination::Penny,
        Some(Denomination::Nickel) => pb::Denomination::Nickel,
        Some(Denomination::Dime) => pb::Denomination::Dime,
        Some(Denomination::Quarter) => pb::Denomination::Quarter,
        Some(Denomination::HalfDollar) => pb::Denomination::HalfDollar,
        Some(Denomination::Dollar) => pb::Denomination::Dollar,
    }
}

#[tonic::async_trait]
impl CoinValueService for CoinValueGrpc {
    async fn count(
        &self,
        req: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let req = req.into_inner();
        let bytes = match req.image {
            Some(pb::count_request::Image::Data(d)) => d,
            Some(pb::count_request::Image::Uri(uri)) => {
                return Err(Error::Read {
                    uri,
                    reason: "reading by URI needs the shared storage layer, not in this build; send the bytes in `data`".into(),
                }
                .into());
            }
            None => return Err(Error::NoImage.into()),
        };
        let r = self.run(bytes, req.annotate).await?;
        tracing::debug!(
            total_cents = r.total_cents,
            coins = r.coins.len(),
            "counted"
        );
        Ok(Response::new(pb::CountResponse {
            total_cents: r.total_cents,
            coins: r
                .coins
                .iter()
                .map(|c| pb::Coin {
                    center_x: c.center_x,
                    center_y: c.center_y,
                    diameter_px: c.diameter_px,
                    diameter_mm: c.diameter_mm,
                    denomination: denomination(c.denomination) as i32,
                    value_cents: c.value_cents,
                    confidence: c.confidence,
                })
                .collect(),
            pixels_per_mm: r.pixels_per_mm,
            image_width: r.image_width,
            image_height: r.image_height,
            annotated_jpeg: r.annotated_jpeg.unwrap_or_default(),
        }))
    }
}

/// Rewrites tonic's "message length too large" (OUT_OF_RANGE) into RESOURCE_EXHAUSTED.
/// Tonic refuses on the length prefix, before buffering the body, so memory stays bounded.
#[derive(Debug, Clone)]
pub struct SizeLimited<S> {
    inner: S,
    limit: usize,
}

impl<S: NamedService> NamedService for SizeLimited<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for SizeLimited<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        let limit = self.limit;
        Box::pin(async move {
            let res = fut.await?;
            let too_large = res.headers().get("grpc-status").is_some_and(|v| v == "11")
                && res
                    .headers()
                    .get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
            if too_large {
                return Ok(Status::resource_exhausted(format!(
                    "request too large: at most {limit} bytes per request; send a smaller or more compressed image"
                ))
                .into_http());
            }
            Ok(res)
        })
    }
}
