//! The `fargo.coinvalue.v1.CoinValueService` gRPC surface, and the one place where
//! [`Error`] becomes a `tonic::Status`.

use std::sync::Arc;

use fargo_proto::coinvalue::v1 as pb;
use fargo_proto::coinvalue::v1::coin_value_service_server::{
    CoinValueService, CoinValueServiceServer,
};
use fargo_runtime::storage::Storage;
use tokio::sync::Semaphore;
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
            Error::Storage(e) => Status::new(e.code(), msg),
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
    /// Where `uri` requests are read from.
    storage: Storage,
}

impl CoinValueGrpc {
    pub fn new(config: &Config) -> Self {
        Self {
            limits: config.coins.limits(),
            max_image_bytes: config.coins.max_image_bytes,
            workers: Arc::new(Semaphore::new(config.coins.effective_workers())),
            storage: Storage::from_env(),
        }
    }

    /// Reads `uri` requests through `storage` instead of one built from the environment.
    pub fn with_storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// The image a `uri` request names, refused before it is read past the image limit.
    async fn read(&self, uri: &str) -> Result<Vec<u8>, Error> {
        let bytes = self
            .storage
            .read_all(uri, self.max_image_bytes as u64)
            .await?;
        Ok(Vec::from(bytes))
    }

    /// The tonic service; the runtime's codec-status layer turns an oversized request
    /// into RESOURCE_EXHAUSTED, refused on the length prefix before the body is buffered.
    pub fn server(self, max_message_bytes: usize) -> CoinValueServiceServer<Self> {
        CoinValueServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
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
            Some(pb::count_request::Image::Uri(uri)) => self.read(&uri).await?,
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
