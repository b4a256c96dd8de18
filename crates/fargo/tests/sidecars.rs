//! The lifecycle every sidecar promises, checked on each of the four through its library
//! `serve` on 127.0.0.1:0: SERVING on health, its services listed by reflection, and on
//! shutdown NOT_SERVING first, then the call that was in flight still answered.
//!
//! "In flight" is made exact: the call is a raw HTTP/2 request whose message is sent in
//! two halves, the second only after the server has announced NOT_SERVING.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

type Chunk = Result<Frame<Bytes>, Infallible>;

/// A unary call whose request message is half sent.
struct Held {
    tx: mpsc::Sender<Chunk>,
    rest: Bytes,
    answer: JoinHandle<String>,
}

async fn hold(addr: SocketAddr, path: &str, headers: &[(&str, &str)], msg: Vec<u8>) -> Held {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    let frame = Bytes::from(frame);
    let half = frame.len() / 2;
    let (tx, rx) = mpsc::channel::<Chunk>(4);
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(StreamBody::new(ReceiverStream::new(rx))).unwrap();
    tx.send(Ok(Frame::data(frame.slice(..half)))).await.unwrap();
    let answer = tokio::spawn(async move {
        let res = send.send_request(req).await.expect("response head");
        let head_status = res
            .headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned());
        let collected = res.into_body().collect().await.expect("response body");
        let trailers = collected.trailers().cloned().unwrap_or_default();
        head_status
            .or_else(|| {
                trailers
                    .get("grpc-status")
                    .map(|v| v.to_str().unwrap().to_owned())
            })
            .unwrap_or_else(|| "none".into())
    });
    // Let the headers and first half reach the server before anything else happens.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Held {
        tx,
        rest: frame.slice(half..),
        answer,
    }
}

async fn list_services(addr: SocketAddr, headers: &[(&str, &str)]) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut request = tonic::Request::new(tokio_stream::iter([req]));
    for (k, v) in headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).unwrap();
        request.metadata_mut().insert(key, v.parse().unwrap());
    }
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(request)
        .await
        .unwrap()
        .into_inner();
    match stream.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

/// Runs the whole lifecycle check against a started sidecar.
async fn lifecycle<F>(
    name: &str,
    addr: SocketAddr,
    server: JoinHandle<F>,
    shutdown: fargo_runtime::Shutdown,
    services: &[&str],
    call: (&str, Vec<u8>),
    headers: &[(&str, &str)],
) where
    F: Send + 'static,
{
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for svc in std::iter::once("").chain(services.iter().copied()) {
        let s = health
            .check(HealthCheckRequest {
                service: svc.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            s,
            ServingStatus::Serving as i32,
            "{name}: `{svc}` not SERVING"
        );
    }
    let listed = list_services(addr, headers).await;
    for svc in services.iter().chain(&["grpc.health.v1.Health"]) {
        assert!(
            listed.iter().any(|l| l == svc),
            "{name}: reflection lists {listed:?}, missing {svc}"
        );
    }

    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    let held = hold(addr, call.0, headers, call.1).await;
    shutdown.trigger();
    let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("watch answered");
    assert_eq!(
        next.unwrap().unwrap().status,
        ServingStatus::NotServing as i32,
        "{name}: NOT_SERVING first"
    );
    assert!(
        !held.answer.is_finished(),
        "{name}: the held call answered before its message was complete"
    );

    held.tx.send(Ok(Frame::data(held.rest))).await.unwrap();
    drop(held.tx);
    let status = tokio::time::timeout(Duration::from_secs(60), held.answer)
        .await
        .expect("answer")
        .unwrap();
    assert_eq!(
        status, "0",
        "{name}: the call in flight during drain did not succeed"
    );
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("serve returned")
        .unwrap();
}

async fn bind() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

fn spawn<Fut: Future + Send + 'static>(f: Fut) -> JoinHandle<Fut::Output>
where
    Fut::Output: Send,
{
    tokio::spawn(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_lifecycle() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    let (l, addr) = bind().await;
    let shutdown = fargo_runtime::Shutdown::new();
    let server = spawn(logging::serve(
        l,
        logging::Config::default(),
        shutdown.wait(),
    ));
    let record = LogRecord {
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue("held during drain".into())),
        }),
        ..Default::default()
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![record],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let call = (
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        req.encode_to_vec(),
    );
    let services = [
        "opentelemetry.proto.collector.logs.v1.LogsService",
        "opentelemetry.proto.collector.trace.v1.TraceService",
    ];
    lifecycle("logging", addr, server, shutdown, &services, call, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coin_value_lifecycle() {
    use fargo_proto::coinvalue::v1::{CountRequest, count_request};
    let (l, addr) = bind().await;
    let shutdown = fargo_runtime::Shutdown::new();
    let server = spawn(coin_value::serve(
        l,
        coin_value::Config::default(),
        shutdown.wait(),
    ));
    let photo = coin_value::synth::render(7, 800, 600);
    let req = CountRequest {
        image: Some(count_request::Image::Data(photo.jpeg)),
        ..Default::default()
    };
    let call = (
        "/fargo.coinvalue.v1.CoinValueService/Count",
        req.encode_to_vec(),
    );
    lifecycle(
        "coin-value",
        addr,
        server,
        shutdown,
        &["fargo.coinvalue.v1.CoinValueService"],
        call,
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnail_lifecycle() {
    use fargo_proto::thumbnail::v1::{ExtractOptions, ExtractRequest};
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("clip.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-t",
            "2",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&video)
        .status()
        .expect("the ffmpeg CLI is needed to make test videos (scripts/setup.sh installs it)");
    assert!(made.success());
    let (l, addr) = bind().await;
    let shutdown = fargo_runtime::Shutdown::new();
    let server = spawn(thumbnail::serve(
        l,
        thumbnail::Config::default(),
        shutdown.wait(),
    ));
    let req = ExtractRequest {
        input_uri: video.display().to_string(),
        options: Some(ExtractOptions {
            positions: vec!["1.0".into()],
            ..Default::default()
        }),
    };
    let call = (
        "/fargo.thumbnail.v1.ThumbnailService/Extract",
        req.encode_to_vec(),
    );
    lifecycle(
        "thumbnail",
        addr,
        server,
        shutdown,
        &["fargo.thumbnail.v1.ThumbnailService"],
        call,
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_proxy_lifecycle() {
    use fargo_proto::testing::v1::EchoRequest;
    // A real upstream for the proxy to route to.
    let (ul, uaddr) = bind().await;
    let upstream_stop = fargo_runtime::Shutdown::new();
    let services = fargo_runtime::Services::new()
        .with(fargo_runtime::echo::Echo::new().server())
        .describe(fargo_proto::FILE_DESCRIPTOR_SET);
    let stop = upstream_stop.wait();
    tokio::spawn(async move {
        fargo_runtime::serve(ul, &fargo_runtime::ServerConfig::default(), services, stop).await
    });

    let config: auth_proxy::Config = serde_json::from_value(serde_json::json!({
        "open_control_plane": true,
        "clusters": { "echo": { "endpoints": [uaddr.to_string()] } },
        "routes": { "fargo.testing.v1.EchoService": { "cluster": "echo", "auth": ["api_key"] } },
        "api_keys": { "tester": { "hash": auth_proxy::hash_api_key("k-123") } },
        "access": { "all": { "principals": ["tester"], "methods": ["*"] } },
    }))
    .unwrap();
    let (l, addr) = bind().await;
    let shutdown = fargo_runtime::Shutdown::new();
    let server = spawn(auth_proxy::serve(l, config, shutdown.wait()));
    // A routed service turns SERVING only after the proxy's health probe reaches its upstream;
    // "" alone says only that the proxy itself is ready.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap();
    for _ in 0..300 {
        if let Ok(c) = channel.connect().await {
            let ok = HealthClient::new(c)
                .check(HealthCheckRequest {
                    service: "fargo.testing.v1.EchoService".into(),
                })
                .await;
            if ok.is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let req = EchoRequest {
        payload: b"held".to_vec(),
        ..Default::default()
    };
    let call = ("/fargo.testing.v1.EchoService/Echo", req.encode_to_vec());
    let headers = [("x-api-key", "k-123")];
    lifecycle(
        "auth-proxy",
        addr,
        server,
        shutdown,
        &["fargo.testing.v1.EchoService"],
        call,
        &headers,
    )
    .await;
    upstream_stop.trigger();
}
