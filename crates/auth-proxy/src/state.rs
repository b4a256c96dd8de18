//! The compiled, immutable form of one configuration. A reload builds a new [`State`]
//! and swaps it in whole; calls in flight keep the one they started with.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::auth::{ApiKeys, JwtVerifier};
use crate::cluster::{Cluster, Resolve, SystemResolver};
use crate::config::{Config, RateLimitConfig, RouteConfig, TlsConfig};

#[derive(Debug)]
pub struct Route {
    pub service: String,
    pub cluster: Arc<Cluster>,
    pub cfg: RouteConfig,
    pub limiter: Option<DefaultDirectRateLimiter>,
}

pub struct State {
    pub config: Config,
    pub routes: HashMap<String, Route>,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    pub api_keys: ApiKeys,
    pub jwt: JwtVerifier,
    pub principal_limiter: Option<DefaultKeyedRateLimiter<String>>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Resolves clusters' host names; kept across reloads.
    pub resolver: Arc<dyn Resolve>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("routes", &self.routes.keys())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

fn quota(what: &str, r: &RateLimitConfig) -> Result<Quota, String> {
    let per = NonZeroU32::new(r.per_second)
        .ok_or_else(|| format!("{what}.per_second must be at least 1"))?;
    let burst =
        NonZeroU32::new(r.burst).ok_or_else(|| format!("{what}.burst must be at least 1"))?;
    Ok(Quota::per_second(per).allow_burst(burst))
}

impl State {
    /// Validates `config` as a whole; `previous` lends clusters and the JWKS whose
    /// settings are unchanged, so a reload keeps their counters and fetched keys.
    pub fn compile(config: Config, previous: Option<&State>) -> Result<Self, String> {
        let resolver = previous.map_or_else(
            || Arc::new(SystemResolver) as Arc<dyn Resolve>,
            |p| p.resolver.clone(),
        );
        Self::compile_with(config, previous, resolver)
    }

    /// [`State::compile`] with the resolver for clusters' host names.
    pub fn compile_with(
        config: Config,
        previous: Option<&State>,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, String> {
        let mut clusters = BTreeMap::new();
        for (name, c) in &config.clusters {
            let reuse = previous
                .and_then(|p| p.clusters.get(name))
                .filter(|old| old.config() == c)
                .cloned();
            let cluster = match reuse {
                Some(c) => c,
                None => Cluster::new(name, c, resolver.clone())?,
            };
            clusters.insert(name.clone(), cluster);
        }
        let api_keys = ApiKeys::new(&config.api_keys)?;
        let jwt = JwtVerifier::new(&config.jwt, previous.and_then(|p| p.jwt.jwks()))?;
        let mut routes = HashMap::new();
        for (service, r) in &config.routes {
            if service.is_empty()
                || service.starts_with('.')
                || !service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
            {
                return Err(format!("routes: `{service}` is not a gRPC service name"));
            }
            let cluster = clusters.get(&r.cluster).cloned().ok_or_else(|| {
                format!("routes.{service}.cluster: no cluster named `{}`", r.cluster)
            })?;
            let limiter = match &r.rate_limit {
                Some(rl) => Some(governor::RateLimiter::direct(quota(
                    &format!("routes.{service}.rate_limit"),
                    rl,
                )?)),
                None => None,
            };
            routes.insert(
                service.clone(),
                Route {
                    service: service.clone(),
                    cluster,
                    cfg: r.clone(),
                    limiter,
                },
            );
        }
        for (name, rule) in &config.access {
            if rule.methods.is_empty() {
                return Err(format!(
                    "access.{name}.methods: list at least one method pattern"
                ));
            }
            for m in rule.methods.iter() {
                if m != "*" && !m.starts_with('/') {
                    return Err(format!(
                        "access.{name}.methods: `{m}` must be `*` or start with `/package.Service/`"
                    ));
                }
            }
        }
        let principal_limiter = match &config.rate_limit {
            Some(rl) => Some(governor::RateLimiter::keyed(quota("rate_limit", rl)?)),
            None => None,
        };
        let tls = match &config.tls {
            Some(t) => Some(tls_acceptor(t)?),
            None => None,
        };
        Ok(Self {
            config,
            routes,
            clusters,
            api_keys,
            jwt,
            principal_limiter,
            tls,
            resolver,
        })
    }

    pub fn health_interval(&self) -> Duration {
        self.config.health_interval.max(Duration::from_millis(50))
    }
}

fn tls_acceptor(t: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("tls: cannot read {}: {e}", p.display()))
    };
    let cert_pem = read(&t.cert_file)?;
    let key_pem = read(&t.key_file)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls: {}: {e}", t.cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls: {} holds no certificate",
            t.cert_file.display()
        ));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("tls: {}: {e}", t.key_file.display()))?
        .ok_or_else(|| format!("tls: {} holds no private key", t.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: certificate and key do not fit: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
