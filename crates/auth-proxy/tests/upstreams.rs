//! The proxy and its upstreams: a call refused by one endpoint is retried on another
//! (never one the upstream may have processed), reflection merged from the upstreams,
//! and endpoints named by host re-resolved.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use fargo_proto::testing::v1::EchoRequest;
use fargo_runtime::echo::Echo;
use tonic::Code;

/// An Echo upstream on a runtime of its own; sending on the returned channel kills it
/// outright (its listener and connections close at once).
fn killable_upstream() -> (SocketAddr, Echo, std::sync::mpsc::Sender<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let up = rt.block_on(upstream());
        tx.send((up.addr, up.echo.clone())).unwrap();
        let _ = kill_rx.recv();
        rt.shutdown_background();
    });
    let (addr, echo) = rx.recv().unwrap();
    (addr, echo, kill_tx)
}

fn two_endpoint_config(a: SocketAddr, b: SocketAddr) -> auth_proxy::Config {
    let mut cfg = config(a);
    let c = cfg.clusters.get_mut("echo").unwrap();
    c.endpoints = auth_proxy::config::StrList(vec![a.to_string(), b.to_string()]);
    // Keep the failing endpoint in rotation, so every call has an even chance of it.
    c.eject_after = 1000;
    // One health round at start (both up), none during the test.
    cfg.health_interval = Duration::from_secs(3600);
    cfg
}

#[tokio::test]
async fn connection_refused_is_retried_on_another_endpoint() {
    let (dead, dead_echo, kill) = killable_upstream();
    let live = upstream().await;
    let p = proxy(two_endpoint_config(dead, live.addr)).await;
    wait_serving(p.addr, ECHO).await;
    kill.send(()).unwrap();
    // Wait until connecting to it is refused.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(dead).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = client(p.addr).await;
    // Each call picks the dead endpoint half the time (2^-30 odds of never): every one of
    // them succeeding means the refused ones went to the live endpoint.
    for i in 0..30 {
        let r = echo(&mut c, &[("x-api-key", KEY)]).await;
        assert!(r.is_ok(), "call {i}: {r:?}");
    }
    assert_eq!(live.echo.received(), 30);
    assert_eq!(dead_echo.received(), 0);
}

/// A real HTTP/2 server that answers grpc.health.v1 SERVING and refuses every other
/// stream with `REFUSED_STREAM`, counting the refusals.
async fn refusing_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let refused = Arc::new(AtomicU64::new(0));
    let count = refused.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(s).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    if req.uri().path() == "/grpc.health.v1.Health/Check" {
                        let head = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let mut send = respond.send_response(head, false).unwrap();
                        // HealthCheckResponse { status: SERVING }
                        let _ = send.send_data(Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1]), false);
                        let mut t = http::HeaderMap::new();
                        t.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let _ = send.send_trailers(t);
                    } else {
                        count.fetch_add(1, Ordering::SeqCst);
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                    }
                }
            });
        }
    });
    (addr, refused)
}

#[tokio::test]
async fn refused_stream_is_retried_with_its_body() {
    let (refuser, refused) = refusing_upstream().await;
    let live = upstream().await;
    let p = proxy(two_endpoint_config(refuser, live.addr)).await;
    wait_serving(p.addr, ECHO).await;
    let mut c = client(p.addr).await;
    for i in 0..30u8 {
        let r = c
            .echo(req(
                &[("x-api-key", KEY)],
                EchoRequest {
                    payload: vec![i; 1000 + i as usize],
                    ..Default::default()
                },
            ))
            .await;
        // The replayed request carries the whole message, byte for byte.
        assert_eq!(r.unwrap().into_inner().payload, vec![i; 1000 + i as usize]);
    }
    assert_eq!(live.echo.received(), 30);
    assert!(
        refused.load(Ordering::SeqCst) > 0,
        "the refusing endpoint was never tried"
    );
}

#[tokio::test]
async fn a_call_the_upstream_may_have_processed_is_not_retried() {
    let (a, a_echo, kill_a) = killable_upstream();
    let (b, b_echo, kill_b) = killable_upstream();
    let p = proxy(two_endpoint_config(a, b)).await;
    wait_serving(p.addr, ECHO).await;
    let mut c = client(p.addr).await;
    let call = tokio::spawn(async move {
        c.echo(req(
            &[("x-api-key", KEY)],
            EchoRequest {
                delay_ms: 10_000,
                ..Default::default()
            },
        ))
        .await
    });
    // Kill whichever endpoint took the call, while it is processing it.
    let mut waited = 0;
    let (took, other) = loop {
        waited += 1;
        assert!(waited < 1000, "the call reached neither upstream");
        if a_echo.received() == 1 {
            kill_a.send(()).unwrap();
            break (a_echo, b_echo);
        }
        if b_echo.received() == 1 {
            kill_b.send(()).unwrap();
            break (b_echo, a_echo);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let err = tokio::time::timeout(Duration::from_secs(8), call)
        .await
        .expect("the call hung after its upstream died")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(took.received(), 1);
    assert_eq!(
        other.received(),
        0,
        "a possibly processed call was sent again"
    );
}

const WIDGETS: &str = "fargo.testonly.v1.WidgetService";

/// An upstream serving only reflection, for a service compiled here with protox from a
/// proto fargo does not have (two files, one importing the other).
async fn widget_upstream() -> SocketAddr {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("testonly")).unwrap();
    std::fs::write(
        dir.path().join("testonly/types.proto"),
        "syntax = \"proto3\";\npackage fargo.testonly.v1;\nmessage Widget { string name = 1; uint32 teeth = 2; }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("testonly/widgets.proto"),
        "syntax = \"proto3\";\npackage fargo.testonly.v1;\nimport \"testonly/types.proto\";\n\
         service WidgetService { rpc Polish(Widget) returns (Widget); }\n",
    )
    .unwrap();
    let fds = protox::compile(["testonly/widgets.proto"], [dir.path()]).unwrap();
    assert!(fds.file.iter().all(|f| !f.name().starts_with("fargo/")));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(fds)
        .build_v1()
        .unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(reflection)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    addr
}

/// Services the proxy's reflection lists, and the file it gives for `symbol` (v1 or v1alpha).
async fn reflect(addr: SocketAddr, symbol: &str, alpha: bool) -> (Vec<String>, Option<Vec<u8>>) {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    if alpha {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let reqs = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol(symbol.into()),
        ]
        .map(|m| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        });
        let mut s = ServerReflectionClient::new(ch)
            .server_reflection_info(tokio_stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(l)) =
            s.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a list")
        };
        // tonic's reflection answers an unknown symbol by ending the stream with NOT_FOUND.
        let file = match s
            .message()
            .await
            .map(|m| m.and_then(|m| m.message_response))
        {
            Ok(Some(MessageResponse::FileDescriptorResponse(f))) => {
                f.file_descriptor_proto.first().cloned()
            }
            _ => None,
        };
        (l.service.into_iter().map(|s| s.name).collect(), file)
    } else {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let reqs = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol(symbol.into()),
            MessageRequest::FileByFilename("testonly/types.proto".into()),
        ]
        .map(|m| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(m),
        });
        let mut s = ServerReflectionClient::new(ch)
            .server_reflection_info(tokio_stream::iter(reqs))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(l)) =
            s.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a list")
        };
        // tonic's reflection answers an unknown symbol by ending the stream with NOT_FOUND.
        let file = match s
            .message()
            .await
            .map(|m| m.and_then(|m| m.message_response))
        {
            Ok(Some(MessageResponse::FileDescriptorResponse(f))) => {
                f.file_descriptor_proto.first().cloned()
            }
            _ => None,
        };
        // The imported file is served too, so a client can resolve the message types.
        if file.is_some() {
            let dep = s.message().await.unwrap().unwrap().message_response;
            assert!(
                matches!(dep, Some(MessageResponse::FileDescriptorResponse(_))),
                "import not served: {dep:?}"
            );
        }
        (l.service.into_iter().map(|s| s.name).collect(), file)
    }
}

/// Polls the proxy's reflection until `ok` holds for what it answers.
async fn wait_reflection(
    addr: SocketAddr,
    alpha: bool,
    ok: impl Fn(&[String], Option<&[u8]>) -> bool,
) {
    let mut last = (vec![], None);
    for _ in 0..100 {
        last = reflect(addr, WIDGETS, alpha).await;
        if ok(&last.0, last.1.as_deref()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("reflection never matched: {last:?}");
}

#[tokio::test]
async fn reflection_is_merged_from_the_upstreams_and_follows_reloads() {
    use prost::Message;
    let widgets = widget_upstream().await;
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.yaml");
    let mut cfg = config(up.addr);
    cfg.reload_poll = Duration::from_millis(50);
    cfg.clusters.insert(
        "widgets".into(),
        auth_proxy::config::ClusterConfig {
            endpoints: auth_proxy::config::StrList(vec![widgets.to_string()]),
            ..Default::default()
        },
    );
    std::fs::write(&file, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let p = proxy_with_file(cfg.clone(), Some(&file)).await;

    // Not routed: not listed, not described.
    wait_reflection(p.addr, false, |names, f| {
        names.iter().any(|n| n == ECHO) && !names.iter().any(|n| n == WIDGETS) && f.is_none()
    })
    .await;

    // A reload adds the route: the proxy asks the upstream and describes the service.
    let mut with = cfg.clone();
    with.routes.insert(
        WIDGETS.into(),
        auth_proxy::config::RouteConfig {
            cluster: "widgets".into(),
            ..Default::default()
        },
    );
    std::fs::write(&file, serde_yaml::to_string(&with).unwrap()).unwrap();
    let described = |names: &[String], f: Option<&[u8]>| {
        names.iter().any(|n| n == WIDGETS)
            && names.iter().any(|n| n == ECHO)
            && f.is_some_and(|raw| {
                let fd = prost_types::FileDescriptorProto::decode(raw).unwrap();
                fd.name() == "testonly/widgets.proto" && fd.service[0].method[0].name() == "Polish"
            })
    };
    wait_reflection(p.addr, false, described).await;
    wait_reflection(p.addr, true, described).await;

    // A reload removes it again.
    std::fs::write(&file, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    wait_reflection(p.addr, false, |names, f| {
        !names.iter().any(|n| n == WIDGETS) && f.is_none()
    })
    .await;
}

/// A name service whose answer the test changes; lookups are counted.
#[derive(Debug, Default)]
struct TestDns {
    answer: std::sync::Mutex<Vec<SocketAddr>>,
    lookups: AtomicU64,
}

impl TestDns {
    fn set(&self, addrs: &[SocketAddr]) {
        *self.answer.lock().unwrap() = addrs.to_vec();
    }
}

impl auth_proxy::Resolve for TestDns {
    fn resolve(
        &self,
        host_port: &str,
    ) -> futures::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        assert_eq!(host_port, "echo.replicas.test:50051");
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let a = self.answer.lock().unwrap().clone();
        Box::pin(async move { Ok(a) })
    }
}

async fn proxy_resolving(cfg: auth_proxy::Config, dns: Arc<TestDns>) -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = fargo_runtime::Shutdown::new();
    let wait = stop.wait();
    let done = tokio::spawn(auth_proxy::serve_with_resolver(
        listener, cfg, None, dns, wait,
    ));
    Proxy { addr, stop, done }
}

fn named_cluster_config(first: SocketAddr, every: Duration) -> auth_proxy::Config {
    let mut cfg = config(first);
    let c = cfg.clusters.get_mut("echo").unwrap();
    c.endpoints = auth_proxy::config::StrList(vec!["echo.replicas.test:50051".into()]);
    c.resolve_every = every;
    cfg.health_interval = every;
    cfg
}

/// Calls until `done` holds, for at most about five seconds.
async fn call_until(c: &mut EchoClient, done: impl Fn() -> bool) {
    for _ in 0..100 {
        let _ = echo(c, &[("x-api-key", KEY)]).await;
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("calls never reached the newly resolved endpoint");
}

type EchoClient =
    fargo_proto::testing::v1::echo_service_client::EchoServiceClient<tonic::transport::Channel>;

#[tokio::test]
async fn host_names_are_re_resolved_as_replicas_come_and_go() {
    let (a, b) = (upstream().await, upstream().await);
    let dns = Arc::new(TestDns::default());
    dns.set(&[a.addr]);
    let p = proxy_resolving(
        named_cluster_config(a.addr, Duration::from_millis(100)),
        dns.clone(),
    )
    .await;
    wait_serving(p.addr, ECHO).await;
    let mut c = client(p.addr).await;
    for _ in 0..3 {
        echo(&mut c, &[("x-api-key", KEY)]).await.unwrap();
    }
    assert_eq!((a.echo.received(), b.echo.received()), (3, 0));

    // The replica is replaced: calls follow the name to the new address.
    dns.set(&[b.addr]);
    call_until(&mut c, || b.echo.received() > 0).await;
    let a_before = a.echo.received();
    for _ in 0..10 {
        echo(&mut c, &[("x-api-key", KEY)]).await.unwrap();
    }
    assert_eq!(
        a.echo.received(),
        a_before,
        "calls still go to the old address"
    );

    // Scaled to two: both get calls.
    dns.set(&[a.addr, b.addr]);
    call_until(&mut c, || a.echo.received() > a_before).await;
    assert!(dns.lookups.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn a_refused_connection_re_resolves_at_once() {
    let (dead, dead_echo, kill) = killable_upstream();
    let live = upstream().await;
    let dns = Arc::new(TestDns::default());
    dns.set(&[dead]);
    // Periodic lookups and health checks an hour apart: only the failure can trigger one.
    let p = proxy_resolving(
        named_cluster_config(dead, Duration::from_secs(3600)),
        dns.clone(),
    )
    .await;
    wait_serving(p.addr, ECHO).await;
    let mut c = client(p.addr).await;
    echo(&mut c, &[("x-api-key", KEY)]).await.unwrap();
    assert_eq!(dead_echo.received(), 1);
    let lookups = dns.lookups.load(Ordering::SeqCst);

    kill.send(()).unwrap();
    dns.set(&[live.addr]);
    call_until(&mut c, || live.echo.received() > 0).await;
    assert!(dns.lookups.load(Ordering::SeqCst) > lookups);
}
