//! `fargo.testing.v1.EchoService`: an upstream whose delay and status the caller
//! picks, for drain, proxy and load tests and benchmarks.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fargo_proto::testing::v1::echo_service_server::{EchoService, EchoServiceServer};
use fargo_proto::testing::v1::{EchoRequest, EchoResponse};
use futures::Stream;
use tonic::{Code, Request, Response, Status};

#[derive(Debug, Clone, Default)]
pub struct Echo {
    received: Arc<AtomicU64>,
}

impl Echo {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls that reached this service, so tests can prove what a proxy let through.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    pub fn server(&self) -> EchoServiceServer<Echo> {
        EchoServiceServer::new(self.clone())
    }
}

fn metadata(req: &tonic::metadata::MetadataMap) -> std::collections::HashMap<String, String> {
    req.clone()
        .into_headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

#[tonic::async_trait]
impl EchoService for Echo {
    async fn echo(&self, req: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let seq = self.received.fetch_add(1, Ordering::SeqCst);
        let md = metadata(req.metadata());
        let r = req.into_inner();
        if r.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(r.delay_ms.into())).await;
        }
        if r.fail_with_code != 0 {
            return Err(Status::new(
                Code::from_i32(r.fail_with_code),
                "failure requested by the caller",
            ));
        }
        Ok(Response::new(EchoResponse {
            payload: r.payload,
            metadata: md,
            sequence: seq,
        }))
    }

    type EchoStreamStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

    async fn echo_stream(
        &self,
        req: Request<EchoRequest>,
    ) -> Result<Response<Self::EchoStreamStream>, Status> {
        self.received.fetch_add(1, Ordering::SeqCst);
        let r = req.into_inner();
        let delay = Duration::from_millis(r.delay_ms.into());
        let stream = futures::stream::unfold(0u32, move |i| {
            let payload = r.payload.clone();
            async move {
                if i >= r.count {
                    return None;
                }
                tokio::time::sleep(delay).await;
                Some((
                    Ok(EchoResponse {
                        payload,
                        metadata: Default::default(),
                        sequence: i.into(),
                    }),
                    i + 1,
                ))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
