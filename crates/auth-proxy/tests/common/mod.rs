//! Shared harness: a real Echo upstream and a real proxy on 127.0.0.1 ports, keys
//! generated with `openssl` at test time.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use auth_proxy::config::{
    AccessRule, ApiKeyConfig, ClusterConfig, Config, JwtAlg, JwtKeyConfig, RouteConfig, StrList,
};
use fargo_proto::testing::v1::echo_service_client::EchoServiceClient;
use fargo_proto::testing::v1::{EchoRequest, EchoResponse};
use fargo_runtime::echo::Echo;
use fargo_runtime::{Services, Shutdown};
use tokio::net::TcpListener;
use tonic::transport::Channel;

pub const ECHO: &str = "fargo.testing.v1.EchoService";
pub const KEY: &str = "test-key-0123456789";
pub const VIEWER_KEY: &str = "viewer-key-0123456789";
pub const HS_SECRET: &str = "an-hs256-secret-that-is-long-enough!!";

pub struct Upstream {
    pub addr: SocketAddr,
    pub echo: Echo,
    pub stop: Shutdown,
}

/// An Echo server behind the shared runtime (health included), on its own port.
pub async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    upstream_on(listener).await
}

pub async fn upstream_on(listener: TcpListener) -> Upstream {
    let addr = listener.local_addr().unwrap();
    let echo = Echo::new();
    let stop = Shutdown::new();
    let services = Services::new()
        .with(echo.server())
        .describe(fargo_proto::FILE_DESCRIPTOR_SET);
    let cfg = fargo_runtime::ServerConfig {
        listen: addr,
        grace_period: Duration::from_millis(200),
        ..Default::default()
    };
    let wait = stop.wait();
    tokio::spawn(async move { fargo_runtime::serve(listener, &cfg, services, wait).await });
    Upstream { addr, echo, stop }
}

/// Keys made by `openssl` (RSA, P-256, Ed25519) in a temp dir.
pub struct Keys {
    pub dir: tempfile::TempDir,
}

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Keys {
    pub fn generate() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
        for (name, alg) in [
            ("rsa", "RSA"),
            ("ec", "EC"),
            ("ed", "ED25519"),
            ("rsa2", "RSA"),
        ] {
            let mut args = vec!["genpkey", "-algorithm", alg, "-out"];
            let key = p(&format!("{name}.key"));
            args.push(&key);
            if alg == "EC" {
                args.extend(["-pkeyopt", "ec_paramgen_curve:P-256"]);
            }
            if alg == "RSA" {
                args.extend(["-pkeyopt", "rsa_keygen_bits:2048"]);
            }
            openssl(&args);
            openssl(&[
                "pkey",
                "-in",
                &key,
                "-pubout",
                "-out",
                &p(&format!("{name}.pub")),
            ]);
        }
        Keys { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    /// Static verification keys: `rs` (RS256), `es` (ES256), `ed` (EdDSA), `hs` (HS256).
    pub fn static_keys(&self) -> Vec<JwtKeyConfig> {
        let k = |kid: &str, alg, file: &str| JwtKeyConfig {
            kid: Some(kid.into()),
            alg,
            secret: None,
            pem: None,
            pem_file: Some(self.path(file)),
        };
        vec![
            k("rs", JwtAlg::RS256, "rsa.pub"),
            k("es", JwtAlg::ES256, "ec.pub"),
            k("ed", JwtAlg::EdDSA, "ed.pub"),
            JwtKeyConfig {
                kid: Some("hs".into()),
                alg: JwtAlg::HS256,
                secret: Some(HS_SECRET.into()),
                pem: None,
                pem_file: None,
            },
        ]
    }

    pub fn sign(&self, kid: &str, claims: &serde_json::Value) -> String {
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        let (alg, key) = match kid {
            "rs" => (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(&self.read("rsa.key")).unwrap(),
            ),
            "rs2" => (
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(&self.read("rsa2.key")).unwrap(),
            ),
            "es" => (
                Algorithm::ES256,
                EncodingKey::from_ec_pem(&self.read("ec.key")).unwrap(),
            ),
            "ed" => (
                Algorithm::EdDSA,
                EncodingKey::from_ed_pem(&self.read("ed.key")).unwrap(),
            ),
            "hs" => (
                Algorithm::HS256,
                EncodingKey::from_secret(HS_SECRET.as_bytes()),
            ),
            other => panic!("no key {other}"),
        };
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, claims, &key).unwrap()
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn claims(sub: &str) -> serde_json::Value {
    serde_json::json!({
        "sub": sub, "iss": "https://issuer.test", "aud": "fargo",
        "exp": now() + 600, "nbf": now() - 10, "scope": "echo.call",
    })
}

/// A proxy config routing Echo to `upstream`, with key `dev` (everything) and `viewer`
/// (EchoStream only), JWTs from `iss`/`aud` above with scope `echo.call` allowed.
pub fn config(upstream: SocketAddr) -> Config {
    let mut c = Config {
        routes: [(
            ECHO.to_owned(),
            RouteConfig {
                cluster: "echo".into(),
                ..Default::default()
            },
        )]
        .into(),
        clusters: [(
            "echo".to_owned(),
            ClusterConfig {
                endpoints: StrList(vec![upstream.to_string()]),
                ..Default::default()
            },
        )]
        .into(),
        api_keys: [
            (
                "dev".to_owned(),
                ApiKeyConfig {
                    hash: auth_proxy::hash_api_key(KEY),
                },
            ),
            (
                "viewer".to_owned(),
                ApiKeyConfig {
                    hash: auth_proxy::hash_api_key(VIEWER_KEY),
                },
            ),
        ]
        .into(),
        access: [
            (
                "dev".to_owned(),
                AccessRule {
                    principals: StrList(vec!["dev".into()]),
                    methods: StrList(vec!["*".into()]),
                    ..Default::default()
                },
            ),
            (
                "viewer".to_owned(),
                AccessRule {
                    principals: StrList(vec!["viewer".into()]),
                    methods: StrList(vec![format!("/{ECHO}/EchoStream")]),
                    ..Default::default()
                },
            ),
            (
                "scoped".to_owned(),
                AccessRule {
                    scopes: StrList(vec!["echo.call".into()]),
                    methods: StrList(vec![format!("/{ECHO}/*")]),
                    ..Default::default()
                },
            ),
        ]
        .into(),
        health_interval: Duration::from_millis(200),
        ..Config::default()
    };
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.grace_period = Duration::from_secs(5);
    c.jwt.issuers = StrList(vec!["https://issuer.test".into()]);
    c.jwt.audiences = StrList(vec!["fargo".into()]);
    c.jwt.leeway = Duration::from_secs(5);
    c
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub stop: Shutdown,
    pub done: tokio::task::JoinHandle<Result<(), auth_proxy::Error>>,
}

pub async fn proxy(cfg: Config) -> Proxy {
    proxy_with_file(cfg, None).await
}

pub async fn proxy_with_file(cfg: Config, file: Option<&Path>) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Shutdown::new();
    let wait = stop.wait();
    let file = file.map(Path::to_owned);
    let done = tokio::spawn(async move {
        match file {
            Some(f) => auth_proxy::serve_with_reload(listener, cfg, f, wait).await,
            None => auth_proxy::serve(listener, cfg, wait).await,
        }
    });
    Proxy { addr, stop, done }
}

pub async fn client(addr: SocketAddr) -> EchoServiceClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    EchoServiceClient::new(ch)
}

pub fn req(headers: &[(&str, &str)], body: EchoRequest) -> tonic::Request<EchoRequest> {
    let mut r = tonic::Request::new(body);
    for (k, v) in headers {
        let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).unwrap();
        r.metadata_mut().insert(key, v.parse().unwrap());
    }
    r
}

pub async fn echo(
    c: &mut EchoServiceClient<Channel>,
    headers: &[(&str, &str)],
) -> Result<EchoResponse, tonic::Status> {
    c.echo(req(
        headers,
        EchoRequest {
            payload: b"hi".to_vec(),
            ..Default::default()
        },
    ))
    .await
    .map(|r| r.into_inner())
}

/// Waits until the proxy's health says `service` is SERVING.
pub async fn wait_serving(addr: SocketAddr, service: &str) {
    for _ in 0..100 {
        if fargo_runtime::cli::check_health(addr, service, Duration::from_secs(1))
            .await
            .unwrap_or(false)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{service} never became SERVING at {addr}");
}
