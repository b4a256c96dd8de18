//! The `fargo.coinvalue.v1.CoinValueService` gRPC surface.

use fargo_proto::coinvalue::v1::coin_value_service_server::{
    CoinValueService, CoinValueServiceServer,
};
use fargo_proto::coinvalue::v1::{CountRequest, CountResponse};
use tonic::{Request, Response, Status};

use crate::Config;

#[derive(Debug, Clone)]
pub struct CoinValueGrpc {}

impl CoinValueGrpc {
    pub fn new(_config: &Config) -> Self {
        Self {}
    }

    pub fn server(self, max_message_bytes: usize) -> CoinValueServiceServer<Self> {
        CoinValueServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

#[tonic::async_trait]
impl CoinValueService for CoinValueGrpc {
    async fn count(&self, _req: Request<CountRequest>) -> Result<Response<CountResponse>, Status> {
        Err(Status::unimplemented("coin counting is not built yet"))
    }
}
