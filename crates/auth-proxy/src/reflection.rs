//! Reflection through the proxy: the descriptors of every routed service, asked of the
//! upstreams' own reflection (so a service the proxy was not compiled with is described
//! too), merged with the proxy's health service and rebuilt when the routes change.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use fargo_runtime::health::HealthState;
use prost::Message;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::error::Error;

/// Most files followed through imports for one service, so a hostile upstream cannot
/// make the proxy collect without end.
const MAX_FILES: usize = 256;

/// Encoded `FileDescriptorProto`s by file name, kept as the upstream sent them.
pub type Files = BTreeMap<String, Vec<u8>>;

// google.protobuf.FileDescriptorSet with each file left encoded, so custom options survive.
#[derive(Clone, PartialEq, prost::Message)]
struct RawSet {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

/// The proxy's health and reflection (v1 and v1alpha) listing `services`, described by
/// `fetched` first and by the descriptors compiled into fargo for those not fetched.
pub fn local_routes(
    services: &[String],
    fetched: &Files,
    health: &HealthState,
) -> Result<tonic::service::Routes, Error> {
    use tonic::server::NamedService;
    let health_name = <tonic_health::pb::health_server::HealthServer<
        fargo_runtime::health::HealthService,
    > as NamedService>::NAME;
    let upstream = RawSet {
        file: fetched.values().cloned().collect(),
    }
    .encode_to_vec();
    // The first registration of a file name wins: upstreams' own descriptors, then ours.
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(&upstream)
            .register_encoded_file_descriptor_set(fargo_proto::FILE_DESCRIPTOR_SET)
            .with_service_name(health_name);
        for name in services {
            b = b.with_service_name(name.clone());
        }
        b
    };
    let mut b = tonic::service::RoutesBuilder::default();
    b.add_service(health.server())
        .add_service(builder().build_v1()?)
        .add_service(builder().build_v1alpha()?);
    Ok(b.routes())
}

/// Asks the reflection service at `addr` for the file defining `service` and every file
/// it imports. `None` when the upstream cannot be reached, has no reflection, or does not
/// know the service.
pub async fn fetch(addr: SocketAddr, service: &str, timeout: Duration) -> Option<Files> {
    match tokio::time::timeout(timeout, fetch_inner(addr, service, timeout)).await {
        Ok(Ok(files)) => Some(files),
        Ok(Err(why)) => {
            tracing::debug!(%addr, service, why, "no descriptors from upstream reflection");
            None
        }
        Err(_) => None,
    }
}

async fn fetch_inner(addr: SocketAddr, service: &str, timeout: Duration) -> Result<Files, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    tx.unbounded_send(ask(MessageRequest::FileContainingSymbol(
        service.to_owned(),
    )))
    .map_err(|e| e.to_string())?;
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(rx)
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    let mut files = Files::new();
    let mut asked: HashSet<String> = HashSet::new();
    let mut pending = 1usize;
    while pending > 0 {
        let answer = answers
            .message()
            .await
            .map_err(|s| s.message().to_owned())?
            .ok_or("reflection stream ended early")?;
        pending -= 1;
        let fds = match answer.message_response {
            Some(MessageResponse::FileDescriptorResponse(r)) => r.file_descriptor_proto,
            Some(MessageResponse::ErrorResponse(e)) => {
                if files.is_empty() {
                    return Err(e.error_message);
                }
                // A missing import: describe what is there.
                continue;
            }
            _ => return Err("unexpected reflection answer".into()),
        };
        for raw in fds {
            let fd = prost_types::FileDescriptorProto::decode(raw.as_slice())
                .map_err(|e| e.to_string())?;
            let name = fd.name.clone().unwrap_or_default();
            for dep in fd.dependency {
                if !files.contains_key(&dep) && asked.insert(dep.clone()) {
                    if asked.len() > MAX_FILES {
                        return Err("too many imported files".into());
                    }
                    tx.unbounded_send(ask(MessageRequest::FileByFilename(dep)))
                        .map_err(|e| e.to_string())?;
                    pending += 1;
                }
            }
            files.insert(name, raw);
        }
    }
    Ok(files)
}
