//! The proxy's whole configuration: one serde file (plus `FARGO_*` overrides), no control
//! plane. [`Config::compile`] turns it into the immutable tables a request reads, so a bad
//! file is rejected as a whole before anything swaps in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use fargo_runtime::{ServerConfig, TelemetryConfig};
use serde::{Deserialize, Deserializer, Serialize};

/// Default listen address; the task definition's environment sets the same.
pub const DEFAULT_LISTEN: ([u8; 4], u16) = ([0, 0, 0, 0], 50051);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    /// Serve TLS (HTTP/2 over ALPN, HTTP/1.1 for gRPC-Web) instead of cleartext.
    pub tls: Option<TlsConfig>,
    pub limits: Limits,
    /// Let `grpc.health.v1` and reflection through without credentials.
    pub open_control_plane: bool,
    /// Upstream clusters by name.
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// Routes by fully qualified gRPC service name (`package.Service`).
    pub routes: BTreeMap<String, RouteConfig>,
    /// API keys by principal name; only a hash of each key is stored.
    pub api_keys: BTreeMap<String, ApiKeyConfig>,
    pub jwt: JwtConfig,
    /// Authorization rules by name; a call is allowed when any rule allows it.
    pub access: BTreeMap<String, AccessRule>,
    /// Token bucket per principal; routes may add their own.
    pub rate_limit: Option<RateLimitConfig>,
    /// Browser origins allowed to call through gRPC-Web (`*` for any).
    pub cors_origins: StrList,
    /// How often the config file is checked for changes (SIGHUP reloads at once).
    #[serde(with = "humantime_serde")]
    pub reload_poll: Duration,
    /// How often each upstream's grpc.health.v1 is asked.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        let route = |cluster: &str| RouteConfig {
            cluster: cluster.into(),
            ..RouteConfig::default()
        };
        let cluster = |addr: &str| ClusterConfig {
            endpoints: StrList(vec![addr.into()]),
            ..ClusterConfig::default()
        };
        Self {
            server: ServerConfig {
                listen: DEFAULT_LISTEN.into(),
                ..ServerConfig::default()
            },
            telemetry: TelemetryConfig::default(),
            tls: None,
            limits: Limits::default(),
            open_control_plane: true,
            clusters: BTreeMap::from([
                ("thumbnail".into(), cluster("127.0.0.1:50061")),
                ("coin-value".into(), cluster("127.0.0.1:50062")),
            ]),
            routes: BTreeMap::from([
                (
                    "fargo.thumbnail.v1.ThumbnailService".into(),
                    route("thumbnail"),
                ),
                (
                    "fargo.coinvalue.v1.CoinValueService".into(),
                    route("coin-value"),
                ),
            ]),
            api_keys: BTreeMap::new(),
            jwt: JwtConfig::default(),
            access: BTreeMap::new(),
            rate_limit: None,
            cors_origins: StrList(vec!["*".into()]),
            reload_poll: Duration::from_secs(2),
            health_interval: Duration::from_secs(5),
        }
    }
}

impl fargo_runtime::Sidecar for Config {
    const NAME: &'static str = "auth-proxy";
    fn server(&self) -> &ServerConfig {
        &self.server
    }
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Client connections held at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// Largest header block a client may send (HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`).
    pub max_header_bytes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_concurrent_streams: 1024,
            max_header_bytes: 16 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `ip:port` or `name:port`; names are re-resolved every `resolve_every`, so
    /// `docker compose --scale` replicas join and leave.
    pub endpoints: StrList,
    #[serde(with = "humantime_serde")]
    pub resolve_every: Duration,
    /// Consecutive failures that eject an endpoint.
    pub eject_after: u32,
    /// First ejection time; doubles with each further ejection, up to 8x.
    #[serde(with = "humantime_serde")]
    pub eject_for: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            endpoints: StrList::default(),
            resolve_every: Duration::from_secs(5),
            eject_after: 3,
            eject_for: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    ApiKey,
    Jwt,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    pub cluster: String,
    /// Credentials accepted on this route; empty opens it to anyone (no principal).
    pub auth: Vec<AuthMode>,
    /// Deadline for a unary call when the client sends no `grpc-timeout`; it bounds the
    /// wait for the response head, which a streaming call sends at once.
    #[serde(with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    /// Token bucket shared by every caller of this route.
    pub rate_limit: Option<RateLimitConfig>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            cluster: String::new(),
            auth: vec![AuthMode::ApiKey, AuthMode::Jwt],
            timeout: None,
            rate_limit: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// `sha256:<hex>` of the key; see [`crate::hash_api_key`].
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Accepted `iss` values; when set, tokens must carry one.
    pub issuers: StrList,
    /// Accepted `aud` values; when set, tokens must carry one.
    pub audiences: StrList,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Static keys, each pinned to one algorithm.
    pub keys: Vec<JwtKeyConfig>,
    pub jwks: Option<JwksConfig>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuers: StrList::default(),
            audiences: StrList::default(),
            leeway: Duration::from_secs(30),
            keys: Vec::new(),
            jwks: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum JwtAlg {
    HS256,
    RS256,
    ES256,
    EdDSA,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    pub kid: Option<String>,
    pub alg: JwtAlg,
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// PEM public key (RS256, ES256, EdDSA), inline or from `pem_file`.
    pub pem: Option<String>,
    pub pem_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JwksConfig {
    /// `https://` URL of the key set (`http://` only to a loopback address).
    pub url: String,
    /// PEM CA certificates trusted for the JWKS server, besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Refresh period while fetches succeed (a `Cache-Control: max-age` shorter wins).
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    /// Least time between fetches caused by unknown `kid`s, so forged tokens cannot
    /// make the proxy hammer the identity provider.
    #[serde(with = "humantime_serde")]
    pub min_refetch: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            ca_file: None,
            refresh: Duration::from_secs(300),
            min_refetch: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AccessRule {
    /// API key names or JWT subjects; `*` is any authenticated caller.
    pub principals: StrList,
    /// JWT scopes (`scope` / `scp`), any of which grants the rule.
    pub scopes: StrList,
    /// JWT claims that must all equal these values (or contain them, for arrays).
    pub claims: BTreeMap<String, String>,
    /// `/package.Service/Method`, `/package.Service/*` or `*`.
    pub methods: StrList,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub per_second: u32,
    pub burst: u32,
}

/// A list of strings, written as a sequence or as one comma-separated string (which is
/// what an environment variable can carry).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct StrList(pub Vec<String>);

impl StrList {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(StrList(match Raw::deserialize(d)? {
            Raw::One(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            Raw::Many(v) => v,
        }))
    }
}
