//! The `fargo.thumbnail.v1.ThumbnailService` gRPC surface.

use fargo_proto::thumbnail::v1::thumbnail_service_server::{
    ThumbnailService, ThumbnailServiceServer,
};
use fargo_proto::thumbnail::v1::{ExtractRequest, ExtractResponse, UploadChunk};
use tonic::{Request, Response, Status, Streaming};

use crate::Config;

#[derive(Debug, Clone)]
pub struct ThumbnailGrpc {}

impl ThumbnailGrpc {
    pub fn new(_config: &Config) -> Self {
        Self {}
    }

    pub fn server(self, max_message_bytes: usize) -> ThumbnailServiceServer<Self> {
        ThumbnailServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

#[tonic::async_trait]
impl ThumbnailService for ThumbnailGrpc {
    async fn extract(
        &self,
        _req: Request<ExtractRequest>,
    ) -> Result<Response<ExtractResponse>, Status> {
        Err(Status::unimplemented(
            "thumbnail extraction is not built yet",
        ))
    }

    async fn extract_upload(
        &self,
        _req: Request<Streaming<UploadChunk>>,
    ) -> Result<Response<ExtractResponse>, Status> {
        Err(Status::unimplemented(
            "thumbnail extraction is not built yet",
        ))
    }
}
