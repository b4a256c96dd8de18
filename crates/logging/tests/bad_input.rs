//! Malformed and oversized requests get clear, final status codes; the sidecar stays up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use tonic::codegen::http::uri::PathAndQuery;

// Messages shaped like OTLP's but with the wrong types in them.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    /// `resource_logs` is a message; a varint there is malformed protobuf.
    #[prost(uint64, tag = "1")]
    resource_logs: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BadRequest {
    #[prost(message, repeated, tag = "1")]
    resource_logs: Vec<BadResourceLogs>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct BadResourceLogs {
    #[prost(message, repeated, tag = "2")]
    scope_logs: Vec<BadScopeLogs>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct BadScopeLogs {
    #[prost(message, repeated, tag = "2")]
    log_records: Vec<BadLogRecord>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct BadLogRecord {
    /// `severity_text` is a string: these bytes are not UTF-8.
    #[prost(bytes = "vec", tag = "3")]
    severity_text: Vec<u8>,
}

async fn raw_export<M: prost::Message + Send + Sync + 'static>(
    sidecar: &Sidecar,
    msg: M,
) -> Result<ExportLogsServiceResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(sidecar.channel().await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<M, ExportLogsServiceResponse>::default();
    grpc.unary(
        tonic::Request::new(msg),
        PathAndQuery::from_static("/opentelemetry.proto.collector.logs.v1.LogsService/Export"),
        codec,
    )
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_invalid_utf8_and_oversized_requests_get_final_codes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mut cfg = file_config(&path);
    cfg.server.max_message_bytes = 64 * 1024;
    let sidecar = Sidecar::start(cfg).await;

    let err = raw_export(&sidecar, WrongWireType { resource_logs: 5 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    let bad_utf8 = BadRequest {
        resource_logs: vec![BadResourceLogs {
            scope_logs: vec![BadScopeLogs {
                log_records: vec![BadLogRecord {
                    severity_text: vec![0xff, 0xfe, 0x41],
                }],
            }],
        }],
    };
    let err = raw_export(&sidecar, bad_utf8).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().to_lowercase().contains("utf"),
        "{}",
        err.message()
    );

    // Over server.max_message_bytes: RESOURCE_EXHAUSTED without RetryInfo, which
    // OTLP clients do not retry (OUT_OF_RANGE, tonic's code, they would retry forever).
    let err = sidecar
        .logs()
        .await
        .export(logs("svc", "huge", 400, 400))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());

    // A gzip bomb: small on the wire, over the limit once inflated.
    let err = sidecar
        .logs()
        .await
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .export(logs("svc", "bomb", 1, 1_000_000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    // Still up, and good requests still work.
    sidecar
        .logs()
        .await
        .export(logs("svc", "fine", 2, 200))
        .await
        .unwrap();
    let stats = sidecar.stats().await;
    assert_eq!(stats.logs.unwrap().received, 2);
    sidecar.stop().await;
    assert_eq!(read_lines(&path).len(), 2);
}
