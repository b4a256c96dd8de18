//! Authentication (API keys, JWTs with static keys or a JWKS) and authorization rules.
//!
//! The header parsers here are the proxy's attack surface and have a property test
//! (`tests/fuzz_parsing.rs`) that feeds them arbitrary bytes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::config::{AccessRule, ApiKeyConfig, JwksConfig, JwtAlg, JwtConfig, JwtKeyConfig};
use crate::error::ProxyError;

/// Longest credential header value looked at; longer ones are refused unparsed.
pub const MAX_CREDENTIAL_LEN: usize = 8 * 1024;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// API key name or JWT `sub`.
    pub name: String,
    pub scopes: Vec<String>,
    /// The JWT's claims (empty for API keys), for claim-based rules.
    pub claims: serde_json::Map<String, Value>,
}

/// `sha256:<hex>`, the form API keys are stored in.
pub fn hash_api_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// Checks an `x-api-key` value: 1 to 512 visible ASCII characters.
pub fn parse_api_key(raw: &[u8]) -> Result<&str, &'static str> {
    if raw.is_empty() {
        return Err("empty API key");
    }
    if raw.len() > 512 {
        return Err("API key longer than 512 bytes");
    }
    if !raw.iter().all(|b| b.is_ascii_graphic()) {
        return Err("API key contains characters other than visible ASCII");
    }
    std::str::from_utf8(raw).map_err(|_| "API key is not ASCII")
}

/// Extracts the token of an `authorization: Bearer <jwt>` value, checking it has the
/// shape of a compact JWS (three base64url segments).
pub fn parse_bearer(raw: &[u8]) -> Result<&str, &'static str> {
    if raw.len() > MAX_CREDENTIAL_LEN {
        return Err("authorization header too long");
    }
    let s = std::str::from_utf8(raw).map_err(|_| "authorization header is not ASCII")?;
    let (scheme, token) = s
        .split_once(' ')
        .ok_or("authorization header is not `Bearer <token>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("authorization scheme is not Bearer");
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err("empty bearer token");
    }
    let mut parts = 0;
    for seg in token.split('.') {
        parts += 1;
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("bearer token is not a JWT (bad characters)");
        }
    }
    if parts != 3 {
        return Err("bearer token is not a JWT (expected three segments)");
    }
    Ok(token)
}

// ---------------------------------------------------------------- API keys

#[derive(Debug, Default)]
pub struct ApiKeys {
    keys: Vec<(String, [u8; 32])>,
}

impl ApiKeys {
    pub fn new(cfg: &BTreeMap<String, ApiKeyConfig>) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (name, k) in cfg {
            let hash = parse_hash(&k.hash).ok_or_else(|| {
                format!("api_keys.{name}.hash: expected `sha256:` and 64 hex digits")
            })?;
            keys.push((name.clone(), hash));
        }
        Ok(Self { keys })
    }

    /// The name of the key, comparing against every stored hash in constant time.
    pub fn verify(&self, key: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for (name, stored) in &self.keys {
            if bool::from(stored.ct_eq(&digest)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

// ---------------------------------------------------------------- JWT

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn alg_of(a: JwtAlg) -> Algorithm {
    match a {
        JwtAlg::HS256 => Algorithm::HS256,
        JwtAlg::RS256 => Algorithm::RS256,
        JwtAlg::ES256 => Algorithm::ES256,
        JwtAlg::EdDSA => Algorithm::EdDSA,
    }
}

fn static_key(i: usize, k: &JwtKeyConfig) -> Result<Key, String> {
    let at = |m: &str| format!("jwt.keys[{i}]: {m}");
    let alg = alg_of(k.alg);
    let pem = match (&k.pem, &k.pem_file) {
        (Some(p), _) => Some(p.clone().into_bytes()),
        (None, Some(f)) => {
            Some(std::fs::read(f).map_err(|e| at(&format!("cannot read {}: {e}", f.display())))?)
        }
        (None, None) => None,
    };
    let key = match (alg, &k.secret, pem) {
        (Algorithm::HS256, Some(s), None) => {
            if s.len() < 32 {
                return Err(at("an HS256 secret needs at least 32 bytes"));
            }
            Ok(DecodingKey::from_secret(s.as_bytes()))
        }
        (Algorithm::HS256, _, _) => return Err(at("HS256 takes `secret` (and no PEM)")),
        (_, Some(_), _) => return Err(at("only HS256 takes a `secret`; give a PEM public key")),
        (_, None, None) => return Err(at("give `pem` or `pem_file`")),
        (Algorithm::RS256, None, Some(p)) => DecodingKey::from_rsa_pem(&p),
        (Algorithm::ES256, None, Some(p)) => DecodingKey::from_ec_pem(&p),
        (_, None, Some(p)) => DecodingKey::from_ed_pem(&p),
    }
    .map_err(|e| at(&format!("bad key: {e}")))?;
    Ok(Key {
        kid: k.kid.clone(),
        alg,
        key,
    })
}

/// The algorithm a JWKS key is pinned to: its `alg`, or the one its key type implies.
fn jwk_alg(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        // Symmetric keys do not belong in a published key set.
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(implied),
        Some(KeyAlgorithm::RS256) if implied == Algorithm::RS256 => Some(implied),
        Some(KeyAlgorithm::ES256) if implied == Algorithm::ES256 => Some(implied),
        Some(KeyAlgorithm::EdDSA) if implied == Algorithm::EdDSA => Some(implied),
        Some(_) => None,
    }
}

/// A remote key set: fetched before the proxy reports ready, refreshed periodically,
/// re-fetched (rate limited) on an unknown `kid`, last good set kept on failure.
#[derive(Debug)]
pub struct Jwks {
    cfg: JwksConfig,
    keys: RwLock<Arc<Vec<Key>>>,
    ready: AtomicBool,
    ready_notify: Notify,
    refetch: Arc<Notify>,
    fetch_done: Notify,
    last_fetch: Mutex<Option<Instant>>,
    /// A fetch is under way: an unknown `kid` waits for it rather than asking for another.
    fetching: AtomicBool,
}

impl Jwks {
    pub fn config(&self) -> &JwksConfig {
        &self.cfg
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Resolves once a key set has been fetched.
    pub async fn wait_ready(&self) {
        loop {
            let notified = self.ready_notify.notified();
            if self.is_ready() {
                return;
            }
            notified.await;
        }
    }

    fn snapshot(&self) -> Arc<Vec<Key>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks for a fetch because of an unknown `kid` and waits for it, or for one already
    /// under way; returns whether a fetch completed meanwhile (the key set may be new).
    async fn refetch(&self) -> bool {
        let asked = Instant::now();
        let deadline = tokio::time::Instant::from_std(asked + self.cfg.timeout);
        let mut waited = false;
        loop {
            let done = self.fetch_done.notified();
            let started = *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
            if !self.fetching.load(Ordering::Acquire) {
                // Done once a fetch started after the question has ended, or when the
                // last one is too recent to ask again (its keys are the freshest allowed).
                if started.is_some_and(|t| t >= asked || t.elapsed() < self.cfg.min_refetch) {
                    return waited;
                }
                self.refetch.notify_one();
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                return waited;
            }
            waited = true;
        }
    }

    async fn fetch(&self, client: &HttpClient) -> Result<Duration, String> {
        *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let (body, max_age) = tokio::time::timeout(self.cfg.timeout, get(client, &self.cfg.url))
            .await
            .map_err(|_| format!("no answer within {:?}", self.cfg.timeout))??;
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("not a JWK set: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let Some(alg) = jwk_alg(jwk) else { continue };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key,
                });
            }
        }
        if keys.is_empty() {
            return Err("key set holds no usable RS256/ES256/EdDSA key".into());
        }
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        self.ready.store(true, Ordering::Release);
        self.ready_notify.notify_waiters();
        tracing::info!(url = %self.cfg.url, keys = n, "JWKS fetched");
        Ok(max_age.map_or(self.cfg.refresh, |m| m.min(self.cfg.refresh)))
    }
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

/// Refuses JWKS URLs that are not `https://`, except `http://` to a loopback address:
/// a key set fetched in the clear could be swapped in transit for the attacker's keys.
pub fn check_jwks_url(url: &str) -> Result<(), String> {
    let at = |m: &str| format!("jwt.jwks.url `{url}`: {m}");
    let uri: http::Uri = url.parse().map_err(|e| at(&format!("not a URL: {e}")))?;
    let host = uri.host().ok_or_else(|| at("no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") => {
            let ip = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host.eq_ignore_ascii_case("localhost")
                || ip
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(at(
                    "plain http:// is accepted only on loopback; use https://",
                ))
            }
        }
        _ => Err(at("use an https:// URL")),
    }
}

/// The JWKS client: HTTPS (rustls) trusting the system's roots plus `ca_file`.
fn jwks_client(cfg: &JwksConfig) -> Result<HttpClient, String> {
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(f) = &cfg.ca_file {
        let at = |m: String| format!("jwt.jwks.ca_file {}: {m}", f.display());
        let pem = std::fs::read(f).map_err(|e| at(e.to_string()))?;
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| at(e.to_string()))?;
        if certs.is_empty() {
            return Err(at("holds no PEM certificate".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| at(e.to_string()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("jwt.jwks: TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(cfg.timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

/// GETs `url`, returning the body (at most 1 MiB) and `Cache-Control: max-age`.
async fn get(client: &HttpClient, url: &str) -> Result<(bytes::Bytes, Option<Duration>), String> {
    use http_body_util::BodyExt;
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let resp = client
        .get(uri)
        .await
        .map_err(|e| format!("cannot fetch: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let max_age = resp
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())
        })
        .map(Duration::from_secs);
    let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| format!("reading body: {e}"))?
        .to_bytes();
    Ok((body, max_age))
}

/// Keeps `jwks` fresh until it is dropped (a reload replaced it).
fn spawn_jwks_task(jwks: &Arc<Jwks>, client: HttpClient) {
    let weak: Weak<Jwks> = Arc::downgrade(jwks);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            let Some(j) = weak.upgrade() else { return };
            j.fetching.store(true, Ordering::Release);
            let fetched = j.fetch(&client).await;
            j.fetching.store(false, Ordering::Release);
            let wait = match fetched {
                Ok(next) => {
                    backoff = Duration::from_millis(250);
                    next
                }
                Err(e) => {
                    tracing::warn!(url = %j.cfg.url, error = %e, retry_ms = backoff.as_millis() as u64,
                        "JWKS fetch failed; keeping the last good key set");
                    let w = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    w
                }
            };
            j.fetch_done.notify_waiters();
            let refetch = j.refetch.clone().notified_owned();
            drop(j);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = refetch => {}
            }
        }
    });
}

#[derive(Debug)]
pub struct JwtVerifier {
    static_keys: Vec<Key>,
    jwks: Option<Arc<Jwks>>,
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: u64,
}

impl JwtVerifier {
    /// Builds the verifier; `previous` is the key set of the configuration being
    /// replaced, kept when its settings did not change.
    pub fn new(cfg: &JwtConfig, previous: Option<&Arc<Jwks>>) -> Result<Self, String> {
        let static_keys = cfg
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| static_key(i, k))
            .collect::<Result<Vec<_>, _>>()?;
        let jwks = match &cfg.jwks {
            None => None,
            Some(j) if previous.is_some_and(|p| p.cfg == *j) => previous.cloned(),
            Some(j) => {
                check_jwks_url(&j.url)?;
                let client = jwks_client(j)?;
                let jwks = Arc::new(Jwks {
                    cfg: j.clone(),
                    keys: RwLock::new(Arc::new(Vec::new())),
                    ready: AtomicBool::new(false),
                    ready_notify: Notify::new(),
                    refetch: Arc::new(Notify::new()),
                    fetch_done: Notify::new(),
                    last_fetch: Mutex::new(None),
                    fetching: AtomicBool::new(false),
                });
                spawn_jwks_task(&jwks, client);
                Some(jwks)
            }
        };
        Ok(Self {
            static_keys,
            jwks,
            issuers: cfg.issuers.0.clone(),
            audiences: cfg.audiences.0.clone(),
            leeway: cfg.leeway.as_secs(),
        })
    }

    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        self.jwks.as_ref()
    }

    pub fn is_configured(&self) -> bool {
        !self.static_keys.is_empty() || self.jwks.is_some()
    }

    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> (Vec<Key>, bool) {
        let remote = self.jwks.as_ref().map(|j| j.snapshot());
        let all = self
            .static_keys
            .iter()
            .chain(remote.iter().flat_map(|r| r.iter()));
        let mut kid_known = false;
        let mut out = Vec::new();
        for k in all {
            if let Some(kid) = kid {
                if k.kid.as_deref() != Some(kid) {
                    continue;
                }
                kid_known = true;
            }
            // The algorithm is pinned per key: a token cannot pick another one.
            if k.alg == alg {
                out.push(k.clone());
            }
        }
        (out, kid_known)
    }

    pub async fn verify(&self, token: &str) -> Result<Principal, ProxyError> {
        let bad = |m: &str| ProxyError::BadCredentials(m.to_owned());
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| bad("malformed JWT header (note: `alg: none` is never accepted)"))?;
        if !matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA
        ) {
            return Err(bad("JWT algorithm not accepted"));
        }
        let kid = header.kid.as_deref();
        let (mut keys, mut kid_known) = self.candidates(kid, header.alg);
        if keys.is_empty()
            && !kid_known
            && let Some(j) = &self.jwks
        {
            if kid.is_some() && j.refetch().await {
                (keys, kid_known) = self.candidates(kid, header.alg);
            }
            if keys.is_empty() && !j.is_ready() && self.static_keys.is_empty() {
                return Err(ProxyError::KeysUnavailable);
            }
        }
        if keys.is_empty() {
            return Err(bad(if kid_known {
                "JWT algorithm does not match its key"
            } else {
                "no key for this JWT (unknown `kid`)"
            }));
        }
        let mut last = bad("JWT signature invalid");
        for k in keys {
            let mut v = Validation::new(k.alg);
            v.leeway = self.leeway;
            v.validate_nbf = true;
            let mut required = vec!["exp"];
            if !self.issuers.is_empty() {
                v.set_issuer(&self.issuers);
                required.push("iss");
            }
            if self.audiences.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&self.audiences);
                required.push("aud");
            }
            v.set_required_spec_claims(&required);
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &k.key, &v) {
                Ok(data) => return principal_from_claims(data.claims),
                Err(e) => last = bad(describe_jwt_error(e.kind())),
            }
        }
        Err(last)
    }
}

fn describe_jwt_error(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "JWT expired",
        ErrorKind::ImmatureSignature => "JWT not yet valid (nbf)",
        ErrorKind::InvalidIssuer => "JWT issuer not accepted",
        ErrorKind::InvalidAudience => "JWT audience not accepted",
        ErrorKind::InvalidSignature => "JWT signature invalid",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "JWT algorithm does not match its key"
        }
        ErrorKind::MissingRequiredClaim(_) => "JWT lacks a required claim (exp, iss or aud)",
        _ => "malformed JWT",
    }
}

fn principal_from_claims(claims: serde_json::Map<String, Value>) -> Result<Principal, ProxyError> {
    let name = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ProxyError::BadCredentials("JWT has no `sub`".into()))?
        .to_owned();
    let mut scopes = Vec::new();
    for key in ["scope", "scp"] {
        match claims.get(key) {
            Some(Value::String(s)) => scopes.extend(s.split(' ').map(str::to_owned)),
            Some(Value::Array(a)) => {
                scopes.extend(a.iter().filter_map(Value::as_str).map(str::to_owned))
            }
            _ => {}
        }
    }
    scopes.retain(|s| !s.is_empty());
    Ok(Principal {
        name,
        scopes,
        claims,
    })
}

// ---------------------------------------------------------------- authorization

/// Whether `pattern` (`*`, `/pkg.Svc/*` or `/pkg.Svc/Method`) covers `path`.
pub fn method_matches(pattern: &str, path: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => prefix.ends_with('/') && path.starts_with(prefix),
        None => pattern == path,
    }
}

fn claim_matches(claims: &serde_json::Map<String, Value>, key: &str, want: &str) -> bool {
    match claims.get(key) {
        Some(Value::String(s)) => s == want,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want)),
        Some(Value::Bool(b)) => want == if *b { "true" } else { "false" },
        Some(Value::Number(n)) => n.to_string() == want,
        _ => false,
    }
}

/// Whether any rule lets `who` call `path`.
pub fn allowed(rules: &BTreeMap<String, AccessRule>, who: &Principal, path: &str) -> bool {
    rules.values().any(|r| {
        r.methods.iter().any(|m| method_matches(m, path))
            && (r.principals.iter().any(|p| p == "*" || p == who.name)
                || r.scopes.iter().any(|s| who.scopes.iter().any(|h| h == s))
                || (!r.claims.is_empty()
                    && r.claims
                        .iter()
                        .all(|(k, v)| claim_matches(&who.claims, k, v))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_shapes() {
        assert_eq!(parse_bearer(b"Bearer a.b.c"), Ok("a.b.c"));
        assert_eq!(parse_bearer(b"bearer a.b.c"), Ok("a.b.c"));
        assert!(parse_bearer(b"Basic a.b.c").is_err());
        assert!(parse_bearer(b"Bearer ").is_err());
        assert!(parse_bearer(b"Bearer a.b").is_err());
        assert!(parse_bearer(b"Bearer a.b.c.d").is_err());
        assert!(parse_bearer(b"Bearer a.b+.c").is_err());
    }

    #[test]
    fn api_key_hash_round_trip() {
        let keys = ApiKeys::new(&BTreeMap::from([(
            "dev".to_owned(),
            ApiKeyConfig {
                hash: hash_api_key("s3cret"),
            },
        )]))
        .unwrap();
        assert_eq!(keys.verify("s3cret"), Some("dev"));
        assert_eq!(keys.verify("s3cre"), None);
        assert!(
            ApiKeys::new(&BTreeMap::from([(
                "x".to_owned(),
                ApiKeyConfig {
                    hash: "md5:abc".into()
                }
            )]))
            .is_err()
        );
    }

    #[test]
    fn method_patterns() {
        assert!(method_matches("*", "/a.B/C"));
        assert!(method_matches("/a.B/*", "/a.B/C"));
        assert!(!method_matches("/a.B/*", "/a.BC/D"));
        assert!(!method_matches("/a.B*", "/a.BC/D"));
        assert!(method_matches("/a.B/C", "/a.B/C"));
        assert!(!method_matches("/a.B/C", "/a.B/Cd"));
    }
}
