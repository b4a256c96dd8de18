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
    let (took, other) = loop {
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
