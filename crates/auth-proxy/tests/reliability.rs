//! Failures around the proxy: a dying or slow upstream, a JWKS server that is down,
//! broken config reloads, drain, gRPC-Web and TLS clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use fargo_proto::testing::v1::EchoRequest;
use http_body_util::{BodyExt, Full};
use tonic::Code;

#[tokio::test]
async fn upstream_killed_mid_stream_ends_with_unavailable() {
    // The upstream runs on a runtime of its own, so it can be killed outright.
    let (tx, rx) = std::sync::mpsc::channel();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let up = rt.block_on(upstream());
        tx.send(up.addr).unwrap();
        let _ = kill_rx.recv();
        rt.shutdown_background();
    });
    let addr = rx.recv().unwrap();
    let p = proxy(config(addr)).await;
    let mut c = client(p.addr).await;
    let mut s = c
        .echo_stream(req(
            &[("x-api-key", KEY)],
            EchoRequest {
                count: 50,
                delay_ms: 50,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(s.message().await.unwrap().is_some());
    kill_tx.send(()).unwrap();
    let started = Instant::now();
    let err = loop {
        match s.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended cleanly after the upstream died"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The proxy itself is fine.
    let err = echo(&mut c, &[("x-api-key", KEY)]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test]
async fn deadlines_are_honoured_and_streams_never_cut() {
    let up = upstream().await;
    let mut cfg = config(up.addr);
    cfg.routes.get_mut(ECHO).unwrap().timeout = Some(Duration::from_millis(300));
    let p = proxy(cfg).await;
    let mut c = client(p.addr).await;

    // Client deadline shorter than the upstream's delay.
    let mut r = req(
        &[("x-api-key", KEY)],
        EchoRequest {
            delay_ms: 3000,
            ..Default::default()
        },
    );
    r.set_timeout(Duration::from_millis(200));
    let t = Instant::now();
    let err = c.echo(r).await.unwrap_err();
    // tonic enforces the deadline itself too, and calls its own expiry CANCELLED.
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));

    // A raw client that only sends `grpc-timeout` sees the proxy enforce it.
    let t = Instant::now();
    let (status, msg) = raw_call(p.addr, "200m", 3000).await;
    assert_eq!(status, "4", "{msg}");
    assert!(t.elapsed() < Duration::from_secs(2));

    // No client deadline: the route's unary default applies.
    let r = req(
        &[("x-api-key", KEY)],
        EchoRequest {
            delay_ms: 3000,
            ..Default::default()
        },
    );
    let err = c.echo(r).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("300 ms"), "{err:?}");

    // A stream outliving the route default is not cut.
    let mut s = c
        .echo_stream(req(
            &[("x-api-key", KEY)],
            EchoRequest {
                count: 6,
                delay_ms: 100,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while s.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 6);
}

/// One raw HTTP/2 Echo call with a `grpc-timeout` header; returns grpc-status and message.
async fn raw_call(addr: SocketAddr, timeout: &str, delay_ms: u32) -> (String, String) {
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let r = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/{ECHO}/Echo"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .header("x-api-key", KEY)
        .body(Full::new(web_frame(&EchoRequest {
            delay_ms,
            ..Default::default()
        })))
        .unwrap();
    let resp = send.send_request(r).await.unwrap();
    let h = resp.headers().clone();
    let get = |m: &http::HeaderMap, k: &str| m.get(k).map(|v| v.to_str().unwrap().to_owned());
    if let Some(s) = get(&h, "grpc-status") {
        return (s, get(&h, "grpc-message").unwrap_or_default());
    }
    let body = resp.into_body().collect().await.unwrap();
    let t = body.trailers().cloned().unwrap_or_default();
    (
        get(&t, "grpc-status").unwrap_or_default(),
        get(&t, "grpc-message").unwrap_or_default(),
    )
}

/// A JWKS endpoint serving whatever `body` holds; drop the handle to take it down.
async fn jwks_server(
    listener: tokio::net::TcpListener,
    body: Arc<Mutex<String>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let b = body.lock().unwrap().clone();
                    async move {
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(b)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    })
}

fn jwks_json(keys: &Keys, entries: &[(&str, &str)]) -> String {
    let jwks: Vec<serde_json::Value> = entries
        .iter()
        .map(|(kid, file)| {
            let ek = jsonwebtoken::EncodingKey::from_rsa_pem(&keys.read(file)).unwrap();
            let mut jwk =
                jsonwebtoken::jwk::Jwk::from_encoding_key(&ek, jsonwebtoken::Algorithm::RS256)
                    .unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            serde_json::to_value(jwk).unwrap()
        })
        .collect();
    serde_json::json!({ "keys": jwks }).to_string()
}

#[tokio::test]
async fn jwks_down_at_start_then_up_then_down_again() {
    let keys = Keys::generate();
    let up = upstream().await;
    let jl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jaddr = jl.local_addr().unwrap();
    drop(jl); // nothing listens yet
    let mut cfg = config(up.addr);
    cfg.jwt.jwks = Some(auth_proxy::config::JwksConfig {
        url: format!("http://{jaddr}/.well-known/jwks.json"),
        refresh: Duration::from_millis(300),
        min_refetch: Duration::from_millis(200),
        timeout: Duration::from_secs(1),
        ca_file: None,
    });
    let p = proxy(cfg).await;
    let mut c = client(p.addr).await;
    let token = format!("Bearer {}", {
        let mut t = keys.sign("rs", &claims("bob"));
        // `sign` names the key `rs`; the JWKS calls it `k1`.
        let _ = &mut t;
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(
            &h,
            &claims("bob"),
            &EncodingKey::from_rsa_pem(&keys.read("rsa.key")).unwrap(),
        )
        .unwrap()
    });

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !fargo_runtime::cli::check_health(p.addr, "", Duration::from_secs(1))
            .await
            .unwrap(),
        "ready before the JWKS was fetched"
    );
    let err = echo(&mut c, &[("authorization", &token)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // API keys work meanwhile.
    echo(&mut c, &[("x-api-key", KEY)]).await.unwrap();
    assert_eq!(up.echo.received(), 1);

    let body = Arc::new(Mutex::new(jwks_json(&keys, &[("k1", "rsa.key")])));
    let server = jwks_server(
        tokio::net::TcpListener::bind(jaddr).await.unwrap(),
        body.clone(),
    )
    .await;
    wait_serving(p.addr, "").await;
    let r = echo(&mut c, &[("authorization", &token)]).await.unwrap();
    assert_eq!(
        r.metadata.get("x-fargo-principal").map(String::as_str),
        Some("bob")
    );

    // A rotated key (new kid) is picked up by the unknown-kid re-fetch.
    *body.lock().unwrap() = jwks_json(&keys, &[("k1", "rsa.key"), ("k2", "rsa2.key")]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let rotated = {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("k2".into());
        format!(
            "Bearer {}",
            jsonwebtoken::encode(
                &h,
                &claims("carol"),
                &EncodingKey::from_rsa_pem(&keys.read("rsa2.key")).unwrap()
            )
            .unwrap()
        )
    };
    echo(&mut c, &[("authorization", &rotated)]).await.unwrap();

    // JWKS goes down mid-run: the last good set keeps working.
    server.abort();
    tokio::time::sleep(Duration::from_millis(800)).await;
    echo(&mut c, &[("authorization", &token)]).await.unwrap();
    assert!(
        fargo_runtime::cli::check_health(p.addr, "", Duration::from_secs(1))
            .await
            .unwrap()
    );
    assert_eq!(up.echo.received(), 4);
}

#[tokio::test]
async fn broken_reload_keeps_the_old_config() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.yaml");
    let mut cfg = config(up.addr);
    cfg.reload_poll = Duration::from_millis(50);
    std::fs::write(&file, serde_yaml::to_string(&cfg).unwrap()).unwrap();
    let p = proxy_with_file(cfg.clone(), Some(&file)).await;
    let mut c = client(p.addr).await;
    echo(&mut c, &[("x-api-key", KEY)]).await.unwrap();

    for broken in [
        "routes: [this is not: a map".to_owned(),
        "unknown_key: 1\n".to_owned(),
        serde_yaml::to_string(&cfg)
            .unwrap()
            .replace("cluster: echo", "cluster: nowhere"),
    ] {
        std::fs::write(&file, broken).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        echo(&mut c, &[("x-api-key", KEY)]).await.unwrap();
    }

    // A valid change swaps in: a new key appears, the old one keeps working.
    let mut next = cfg.clone();
    next.api_keys.insert(
        "ops".into(),
        auth_proxy::config::ApiKeyConfig {
            hash: auth_proxy::hash_api_key("ops-key-123"),
        },
    );
    next.access
        .get_mut("dev")
        .unwrap()
        .principals
        .0
        .push("ops".into());
    std::fs::write(&file, serde_yaml::to_string(&next).unwrap()).unwrap();
    let mut ok = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if echo(&mut c, &[("x-api-key", "ops-key-123")]).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "the valid file never took effect");
    echo(&mut c, &[("x-api-key", KEY)]).await.unwrap();
}

#[tokio::test]
async fn drain_finishes_calls_in_flight_and_reports_not_serving() {
    let up = upstream().await;
    let p = proxy(config(up.addr)).await;
    wait_serving(p.addr, ECHO).await;
    let mut c = client(p.addr).await;
    let slow = tokio::spawn(async move {
        let r = req(
            &[("x-api-key", KEY)],
            EchoRequest {
                delay_ms: 600,
                ..Default::default()
            },
        );
        c.echo(r).await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    p.stop.trigger();
    let r = slow.await.unwrap();
    assert!(r.is_ok(), "in-flight call cut by drain: {r:?}");
    tokio::time::timeout(Duration::from_secs(5), p.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(p.addr).await.is_err(),
        "still accepting after drain"
    );
}

fn web_frame(msg: &EchoRequest) -> Bytes {
    use prost::Message;
    let body = msg.encode_to_vec();
    let mut v = vec![0u8];
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(&body);
    Bytes::from(v)
}

/// Parses a gRPC-Web body into messages and the trailer block.
fn parse_web(mut b: &[u8]) -> (Vec<Vec<u8>>, String) {
    let (mut msgs, mut trailers) = (Vec::new(), String::new());
    while b.len() >= 5 {
        let flag = b[0];
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        let payload = &b[5..5 + len];
        if flag & 0x80 != 0 {
            trailers.push_str(std::str::from_utf8(payload).unwrap());
        } else {
            msgs.push(payload.to_vec());
        }
        b = &b[5 + len..];
    }
    (msgs, trailers)
}

async fn web_call(addr: SocketAddr, key: Option<&str>) -> (http::HeaderMap, Vec<Vec<u8>>, String) {
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut b = http::Request::builder()
        .method("POST")
        .uri(format!("/{ECHO}/Echo"))
        .header("host", addr.to_string())
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", "http://app.test");
    if let Some(k) = key {
        b = b.header("x-api-key", k);
    }
    let r = b
        .body(Full::new(web_frame(&EchoRequest {
            payload: b"web".to_vec(),
            ..Default::default()
        })))
        .unwrap();
    let resp = send.send_request(r).await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let (msgs, trailers) = parse_web(&body);
    (headers, msgs, trailers)
}

#[tokio::test]
async fn grpc_web_over_http1() {
    let up = upstream().await;
    let p = proxy(config(up.addr)).await;
    let (h, msgs, trailers) = web_call(p.addr, Some(KEY)).await;
    assert_eq!(h.get("content-type").unwrap(), "application/grpc-web+proto");
    assert_eq!(
        h.get("access-control-allow-origin").unwrap(),
        "http://app.test"
    );
    assert_eq!(msgs.len(), 1);
    assert!(trailers.contains("grpc-status: 0"), "{trailers}");
    let (h, msgs, _) = web_call(p.addr, None).await;
    assert_eq!(h.get("grpc-status").unwrap(), "16");
    assert!(msgs.is_empty());
    assert_eq!(up.echo.received(), 1);
}

#[tokio::test]
async fn tls_with_alpn_h2() {
    let up = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cfg = config(up.addr);
    cfg.tls = Some(auth_proxy::config::TlsConfig {
        cert_file: cert.clone(),
        key_file: key,
    });
    let p = proxy(cfg).await;

    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::fs::read(&cert).unwrap().as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cc = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cc.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cc))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let r = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost/{ECHO}/Echo"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-api-key", KEY)
        .body(Full::new(web_frame(&EchoRequest::default())))
        .unwrap();
    let resp = send.send_request(r).await.unwrap();
    let body = resp.into_body().collect().await.unwrap();
    assert_eq!(body.trailers().unwrap().get("grpc-status").unwrap(), "0");
    assert_eq!(up.echo.received(), 1);
}

#[tokio::test]
async fn health_follows_upstreams_and_message_limit_holds() {
    let up = upstream().await;
    let mut cfg = config(up.addr);
    cfg.server.max_message_bytes = 1024;
    let p = proxy(cfg).await;
    wait_serving(p.addr, ECHO).await;
    wait_serving(p.addr, "").await;
    let mut c = client(p.addr).await;
    let big = EchoRequest {
        payload: vec![1; 4096],
        ..Default::default()
    };
    let err = c.echo(req(&[("x-api-key", KEY)], big)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(up.echo.received(), 0);
    up.stop.trigger();
    let mut down = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !fargo_runtime::cli::check_health(p.addr, ECHO, Duration::from_secs(1))
            .await
            .unwrap_or(true)
        {
            down = true;
            break;
        }
    }
    assert!(
        down,
        "proxy health still SERVING after the upstream stopped"
    );
}

#[tokio::test]
async fn reflection_lists_the_whole_app_without_credentials() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let up = upstream().await;
    let mut cfg = config(up.addr);
    let defaults = auth_proxy::Config::default();
    cfg.routes.extend(defaults.routes);
    cfg.clusters.extend(defaults.clusters);
    let p = proxy(cfg).await;
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", p.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        ECHO,
        "fargo.thumbnail.v1.ThumbnailService",
        "fargo.coinvalue.v1.CoinValueService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}

/// Collects what a `fmt` layer writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn access_record_carries_the_callers_trace_id() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let logs = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(logs.clone()),
        );
    // Global: a thread-local one misses callsites other tests' threads register first.
    // Only this test installs one; the records of other tests' calls are told apart by
    // their trace ids.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let up = upstream().await;
    let p = proxy(config(up.addr)).await;
    let mut c = client(p.addr).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{trace}-00f067aa0ba902b7-01");
    let r = echo(&mut c, &[("x-api-key", KEY), ("traceparent", &parent)])
        .await
        .unwrap();
    // The upstream joined the same trace.
    assert!(
        r.metadata["traceparent"].contains(trace),
        "{:?}",
        r.metadata
    );
    let err = echo(&mut c, &[("x-api-key", "wrong"), ("traceparent", &parent)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["target"] == "auth_proxy::access")
        .collect();
    let ours: Vec<&serde_json::Value> = records
        .iter()
        .filter(|v| v["fields"]["trace_id"] == trace)
        .collect();
    let ok = ours
        .iter()
        .find(|v| v["fields"]["grpc_status"] == "0")
        .unwrap_or_else(|| panic!("no access record with the caller's trace id in {text}"));
    assert_eq!(ok["fields"]["principal"], "dev");
    assert_eq!(ok["fields"]["method"], format!("/{ECHO}/Echo"));
    // Written after the handler returned, yet inside the call's span.
    assert_eq!(ok["span"]["name"], "grpc.server", "{ok}");
    let refused = ours
        .iter()
        .find(|v| v["fields"]["message"] == "call refused")
        .unwrap_or_else(|| panic!("no refusal record in {text}"));
    assert_eq!(refused["fields"]["trace_id"], trace, "{refused}");
    assert!(
        !text.contains(KEY) && !text.contains("wrong\""),
        "a credential was logged"
    );
}

/// A self-signed certificate for 127.0.0.1, made by `openssl`; it is its own CA.
fn self_signed_ip(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("jwks.pem"), dir.join("jwks.key"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A JWKS endpoint over HTTPS (rustls) on 127.0.0.1.
async fn https_jwks_server(
    cert: &std::path::Path,
    key: &std::path::Path,
    body: String,
) -> SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut std::fs::read(cert).unwrap().as_slice())
            .map(Result::unwrap)
            .collect();
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut std::fs::read(key).unwrap().as_slice())
            .unwrap()
            .unwrap();
    let sc = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(sc));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    let b = body.clone();
                    async move {
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(b)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn jwks_over_https_with_a_configured_ca() {
    let keys = Keys::generate();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_ip(dir.path());
    let jaddr = https_jwks_server(&cert, &key, jwks_json(&keys, &[("k1", "rsa.key")])).await;
    let up = upstream().await;
    let jwks = |ca_file: Option<std::path::PathBuf>| auth_proxy::config::JwksConfig {
        url: format!("https://127.0.0.1:{}/jwks.json", jaddr.port()),
        ca_file,
        refresh: Duration::from_secs(60),
        min_refetch: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
    };
    let token = {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("k1".into());
        format!(
            "Bearer {}",
            jsonwebtoken::encode(
                &h,
                &claims("dana"),
                &EncodingKey::from_rsa_pem(&keys.read("rsa.key")).unwrap()
            )
            .unwrap()
        )
    };

    // Trusting the test CA: ready, and its keys verify tokens.
    let mut cfg = config(up.addr);
    cfg.jwt.jwks = Some(jwks(Some(cert.clone())));
    let p = proxy(cfg).await;
    wait_serving(p.addr, "").await;
    let mut c = client(p.addr).await;
    let r = echo(&mut c, &[("authorization", &token)]).await.unwrap();
    assert_eq!(r.metadata["x-fargo-principal"], "dana");

    // Without the CA the server is not trusted: no keys, never ready, tokens UNAVAILABLE.
    let mut cfg = config(up.addr);
    cfg.jwt.jwks = Some(jwks(None));
    let p = proxy(cfg).await;
    let mut c = client(p.addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !fargo_runtime::cli::check_health(p.addr, "", Duration::from_secs(1))
            .await
            .unwrap()
    );
    let err = echo(&mut c, &[("authorization", &token)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(up.echo.received(), 1);

    // Plain http:// is refused unless it is loopback.
    for (url, ok) in [
        ("http://idp.example.com/jwks.json", false),
        ("ftp://127.0.0.1/jwks.json", false),
        ("http://127.0.0.1:1/jwks.json", true),
        ("http://[::1]:1/jwks.json", true),
        ("http://localhost:1/jwks.json", true),
        ("https://idp.example.com/jwks.json", true),
    ] {
        assert_eq!(auth_proxy::auth::check_jwks_url(url).is_ok(), ok, "{url}");
    }
    let mut cfg = config(up.addr);
    cfg.jwt.jwks = Some(auth_proxy::config::JwksConfig {
        url: "http://idp.example.com/jwks.json".into(),
        ..Default::default()
    });
    let err = auth_proxy::state::State::compile(cfg, None).unwrap_err();
    assert!(err.contains("https://"), "{err}");
}
