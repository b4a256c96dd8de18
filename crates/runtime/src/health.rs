//! `grpc.health.v1` with per-service and overall (`""`) status.
//!
//! Our own implementation (on tonic-health's generated types) rather than tonic-health's
//! reporter, because drain needs `Watch` streams to end once they have told the client
//! NOT_SERVING; otherwise every watching client holds the shutdown for the whole grace period.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
pub use tonic_health::ServingStatus;
use tonic_health::pb::health_check_response::ServingStatus as PbStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Shared, cheaply cloned handle to the statuses a server reports.
#[derive(Clone, Debug, Default)]
pub struct HealthState {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    statuses: Mutex<HashMap<String, watch::Sender<ServingStatus>>>,
    closed: CancellationToken,
}

impl HealthState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets one service's status; `""` is the server as a whole.
    pub fn set(&self, service: &str, status: ServingStatus) {
        let mut map = self.lock();
        match map.get(service) {
            Some(tx) => {
                tx.send_replace(status);
            }
            None => {
                map.insert(service.to_owned(), watch::channel(status).0);
            }
        }
    }

    pub fn set_all(&self, status: ServingStatus) {
        for tx in self.lock().values() {
            tx.send_replace(status);
        }
    }

    pub fn get(&self, service: &str) -> Option<ServingStatus> {
        self.lock().get(service).map(|tx| *tx.borrow())
    }

    pub fn services(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Ends every `Watch` stream after it has delivered the current status.
    pub fn close_watches(&self) {
        self.inner.closed.cancel();
    }

    pub fn server(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService {
            state: self.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<ServingStatus>>> {
        // A panic while holding this lock cannot leave the map half-updated, so recover it.
        self.inner
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

fn to_pb(s: ServingStatus) -> i32 {
    let pb = match s {
        ServingStatus::Unknown => PbStatus::Unknown,
        ServingStatus::Serving => PbStatus::Serving,
        ServingStatus::NotServing => PbStatus::NotServing,
    };
    pb as i32
}

#[derive(Debug, Clone)]
pub struct HealthService {
    state: HealthState,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = req.into_inner().service;
        match self.state.get(&service) {
            Some(s) => Ok(Response::new(HealthCheckResponse { status: to_pb(s) })),
            None => Err(Status::not_found(format!("unknown service `{service}`"))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = req.into_inner().service;
        let rx = self.state.lock().get(&service).map(|tx| tx.subscribe());
        let closed = self.state.inner.closed.clone();
        let stream = async_stream(rx, closed);
        Ok(Response::new(Box::pin(stream)))
    }
}

fn async_stream(
    rx: Option<watch::Receiver<ServingStatus>>,
    closed: CancellationToken,
) -> impl Stream<Item = Result<HealthCheckResponse, Status>> + Send {
    futures::stream::unfold(
        (rx, closed, true, false),
        |(mut rx, closed, first, done)| async move {
            if done {
                return None;
            }
            let Some(r) = rx.as_mut() else {
                // Unknown service: say so once, then wait for shutdown (per the health protocol).
                if first {
                    let item = HealthCheckResponse {
                        status: PbStatus::ServiceUnknown as i32,
                    };
                    return Some((Ok(item), (rx, closed, false, false)));
                }
                closed.cancelled().await;
                return None;
            };
            if first {
                let s = *r.borrow_and_update();
                return Some((
                    Ok(HealthCheckResponse { status: to_pb(s) }),
                    (rx, closed, false, false),
                ));
            }
            tokio::select! {
                changed = r.changed() => match changed {
                    Ok(()) => {
                        let s = *r.borrow_and_update();
                        Some((Ok(HealthCheckResponse { status: to_pb(s) }), (rx, closed, false, false)))
                    }
                    Err(_) => None,
                },
                () = closed.cancelled() => {
                    // Deliver a last status change that raced the close, then end.
                    if r.has_changed().unwrap_or(false) {
                        let s = *r.borrow_and_update();
                        Some((Ok(HealthCheckResponse { status: to_pb(s) }), (rx, closed, false, true)))
                    } else {
                        None
                    }
                }
            }
        },
    )
}
