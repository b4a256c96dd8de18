//! No request reaches the upstream without valid credentials: every refusal below is
//! checked against the Echo upstream's count of received calls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::*;
use fargo_proto::testing::v1::EchoRequest;
use http_body_util::{BodyExt, Full};
use tonic::Code;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn refusals_never_reach_the_upstream() {
    let keys = Keys::generate();
    let up = upstream().await;
    let mut cfg = config(up.addr);
    cfg.jwt.keys = keys.static_keys();
    let p = proxy(cfg).await;
    let mut c = client(p.addr).await;

    let good = keys.sign("rs", &claims("alice"));
    let mut expired = claims("alice");
    expired["exp"] = (now() - 120).into();
    let mut early = claims("alice");
    early["nbf"] = (now() + 120).into();
    let mut wrong_iss = claims("alice");
    wrong_iss["iss"] = "https://evil.test".into();
    let mut wrong_aud = claims("alice");
    wrong_aud["aud"] = "other".into();
    let mut no_iss = claims("alice");
    no_iss.as_object_mut().unwrap().remove("iss");
    // Signed with another RSA key but claiming kid `rs`.
    let forged = {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("rs".into());
        jsonwebtoken::encode(
            &h,
            &claims("alice"),
            &EncodingKey::from_rsa_pem(&keys.read("rsa2.key")).unwrap(),
        )
        .unwrap()
    };
    let payload = b64(&claims("alice").to_string());
    let alg_none = format!(
        "{}.{payload}.",
        b64(r#"{"alg":"none","typ":"JWT","kid":"rs"}"#)
    );
    // HS256 keyed with the RS256 public key's PEM: the classic confusion attack.
    let confused = {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rs".into());
        jsonwebtoken::encode(
            &h,
            &claims("alice"),
            &EncodingKey::from_secret(&keys.read("rsa.pub")),
        )
        .unwrap()
    };
    let unknown_kid = {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("nope".into());
        jsonwebtoken::encode(
            &h,
            &claims("alice"),
            &EncodingKey::from_rsa_pem(&keys.read("rsa.key")).unwrap(),
        )
        .unwrap()
    };
    let truncated = good[..good.len() - 5].to_owned();

    let bearer = |t: &str| format!("Bearer {t}");
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("missing", vec![]),
        ("empty key", vec![("x-api-key", String::new())]),
        ("wrong key", vec![("x-api-key", "not-the-key".into())]),
        (
            "key prefix",
            vec![("x-api-key", KEY[..KEY.len() - 1].into())],
        ),
        ("empty bearer", vec![("authorization", "Bearer ".into())]),
        (
            "basic auth",
            vec![("authorization", "Basic dXNlcjpwYXNz".into())],
        ),
        ("garbage token", vec![("authorization", bearer("a.b.c"))]),
        ("not a jwt", vec![("authorization", bearer("abc"))]),
        ("truncated", vec![("authorization", bearer(&truncated))]),
        (
            "expired",
            vec![("authorization", bearer(&keys.sign("rs", &expired)))],
        ),
        (
            "not yet valid",
            vec![("authorization", bearer(&keys.sign("es", &early)))],
        ),
        (
            "wrong issuer",
            vec![("authorization", bearer(&keys.sign("ed", &wrong_iss)))],
        ),
        (
            "missing issuer",
            vec![("authorization", bearer(&keys.sign("rs", &no_iss)))],
        ),
        (
            "wrong audience",
            vec![("authorization", bearer(&keys.sign("hs", &wrong_aud)))],
        ),
        ("wrong signature", vec![("authorization", bearer(&forged))]),
        ("alg none", vec![("authorization", bearer(&alg_none))]),
        (
            "hs256 with rsa public key",
            vec![("authorization", bearer(&confused))],
        ),
        ("unknown kid", vec![("authorization", bearer(&unknown_kid))]),
        (
            "forged principal only",
            vec![("x-fargo-principal", "dev".into())],
        ),
        (
            "key and token together",
            vec![("x-api-key", KEY.into()), ("authorization", bearer(&good))],
        ),
    ];
    for (name, headers) in &cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let err = echo(&mut c, &h).await.expect_err(name);
        assert_eq!(err.code(), Code::Unauthenticated, "{name}: {err:?}");
        assert!(!err.message().contains(KEY), "{name}: secret in message");
    }
    assert_eq!(up.echo.received(), 0, "a refused call reached the upstream");

    // Every algorithm with a good token goes through.
    for kid in ["rs", "es", "ed", "hs"] {
        let t = bearer(&keys.sign(kid, &claims("alice")));
        let r = echo(&mut c, &[("authorization", &t)]).await.unwrap();
        assert_eq!(
            r.metadata
                .get(auth_proxy::PRINCIPAL_HEADER)
                .map(String::as_str),
            Some("alice")
        );
    }
    assert_eq!(up.echo.received(), 4);
}

#[tokio::test]
async fn principal_header_cannot_be_forged_and_credentials_stay_at_the_door() {
    let up = upstream().await;
    let p = proxy(config(up.addr)).await;
    let mut c = client(p.addr).await;
    let r = echo(
        &mut c,
        &[("x-api-key", KEY), ("x-fargo-principal", "admin")],
    )
    .await
    .unwrap();
    assert_eq!(
        r.metadata.get("x-fargo-principal").map(String::as_str),
        Some("dev")
    );
    assert!(
        !r.metadata.contains_key("x-api-key"),
        "the key was forwarded upstream"
    );
    // W3C trace context passes the hop.
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = echo(&mut c, &[("x-api-key", KEY), ("traceparent", tp)])
        .await
        .unwrap();
    assert!(
        r.metadata
            .get("traceparent")
            .is_some_and(|v| v.contains("4bf92f3577b34da6a3ce929d0e0e4736"))
    );
    assert_eq!(up.echo.received(), 2);
}

#[tokio::test]
async fn known_caller_not_allowed_is_permission_denied() {
    let up = upstream().await;
    let p = proxy(config(up.addr)).await;
    let mut c = client(p.addr).await;
    let err = echo(&mut c, &[("x-api-key", VIEWER_KEY)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(up.echo.received(), 0);
    // The viewer may stream.
    let mut s = c
        .echo_stream(req(
            &[("x-api-key", VIEWER_KEY)],
            EchoRequest {
                count: 2,
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
    assert_eq!(n, 2);
    assert_eq!(up.echo.received(), 1);
}

#[tokio::test]
async fn oversized_header_is_refused() {
    let up = upstream().await;
    let p = proxy(config(up.addr)).await;
    let mut c = client(p.addr).await;
    let big = "k".repeat(20 * 1024);
    let err = echo(&mut c, &[("x-api-key", KEY), ("x-padding", &big)])
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    let long_key = "k".repeat(4000);
    let err = echo(&mut c, &[("x-api-key", &long_key)]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(up.echo.received(), 0);
    // The proxy is still up for the next caller.
    let mut c = client(p.addr).await;
    echo(&mut c, &[("x-api-key", KEY)]).await.unwrap();
}

fn grpc_frame(msg: &EchoRequest) -> Bytes {
    use prost::Message;
    let body = msg.encode_to_vec();
    let mut v = vec![0u8];
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(&body);
    Bytes::from(v)
}

/// Sends one raw HTTP/2 gRPC request with `path`, returning the grpc-status seen.
async fn raw_call(addr: std::net::SocketAddr, path: &str, key: &str) -> String {
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-api-key", key)
        .body(Full::new(grpc_frame(&EchoRequest::default())))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    if let Some(s) = resp.headers().get("grpc-status") {
        return s.to_str().unwrap().to_owned();
    }
    let collected = resp.into_body().collect().await.unwrap();
    collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn path_tricks_are_unimplemented() {
    let up = upstream().await;
    let p = proxy(config(up.addr)).await;
    let tricks = [
        format!("//{ECHO}/Echo"),
        format!("/{ECHO}//Echo"),
        format!("/{ECHO}%2FEcho"),
        "/fargo.testing.v1.EchoService%2fEcho".to_owned(),
        format!("/{}/Echo", ECHO.to_uppercase()),
        format!("/{ECHO}/Echo/"),
        format!("/{ECHO}/../{ECHO}/Echo"),
        format!("/{ECHO}/Echo?x=1"),
        "/grpc.health.v1.Health/../../fargo.testing.v1.EchoService/Echo".to_owned(),
        "/unknown.Service/Echo".to_owned(),
    ];
    for t in &tricks {
        assert_eq!(raw_call(p.addr, t, KEY).await, "12", "{t}");
    }
    assert_eq!(up.echo.received(), 0);
    assert_eq!(raw_call(p.addr, &format!("/{ECHO}/Echo"), KEY).await, "0");
    assert_eq!(up.echo.received(), 1);
}

#[tokio::test]
async fn rate_limit_is_resource_exhausted_with_retry_info() {
    let up = upstream().await;
    let mut cfg = config(up.addr);
    cfg.rate_limit = Some(auth_proxy::config::RateLimitConfig {
        per_second: 1,
        burst: 2,
    });
    let p = proxy(cfg).await;
    let mut c = client(p.addr).await;
    echo(&mut c, &[("x-api-key", KEY)]).await.unwrap();
    echo(&mut c, &[("x-api-key", KEY)]).await.unwrap();
    let err = echo(&mut c, &[("x-api-key", KEY)]).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.metadata().get("grpc-retry-pushback-ms").is_some(),
        "{err:?}"
    );
    assert!(!err.details().is_empty(), "no RetryInfo details");
    assert_eq!(up.echo.received(), 2);
    // Another principal has its own bucket.
    let err = echo(&mut c, &[("x-api-key", VIEWER_KEY)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn unknown_service_and_dead_cluster() {
    let up = upstream().await;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let mut cfg = config(dead_addr);
    cfg.clusters.get_mut("echo").unwrap().eject_after = 1;
    let p = proxy(cfg).await;
    let mut c = client(p.addr).await;
    let err = echo(&mut c, &[("x-api-key", KEY)]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = echo(&mut c, &[("x-api-key", KEY)]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("no healthy endpoint"), "{err:?}");
    assert_eq!(raw_call(p.addr, "/other.Service/Call", KEY).await, "12");
    let _ = up;
}
