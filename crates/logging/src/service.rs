//! The OTLP `LogsService` and `TraceService` receivers.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

use crate::Config;

#[derive(Debug, Clone)]
pub struct Receiver {}

impl Receiver {
    pub fn new(_config: &Config) -> Self {
        Self {}
    }

    pub fn logs_server(&self, max: usize) -> LogsServiceServer<Self> {
        LogsServiceServer::new(self.clone()).max_decoding_message_size(max)
    }

    pub fn traces_server(&self, max: usize) -> TraceServiceServer<Self> {
        TraceServiceServer::new(self.clone()).max_decoding_message_size(max)
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        _req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        Err(Status::unimplemented("log receiving is not built yet"))
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        _req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        Err(Status::unimplemented("trace receiving is not built yet"))
    }
}
