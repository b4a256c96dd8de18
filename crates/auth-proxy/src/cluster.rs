//! Upstream clusters: endpoints from addresses or re-resolved DNS names, chosen by
//! power-of-two-choices on in-flight calls, with passive ejection of failing ones and
//! active `grpc.health.v1` checks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rand::Rng;
use tokio::sync::Notify;

use crate::config::ClusterConfig;

/// Turns an endpoint's `host:port` into addresses. The system's resolver in production;
/// tests give one whose answers they change, to watch the proxy follow them.
pub trait Resolve: Send + Sync + std::fmt::Debug + 'static {
    fn resolve(&self, host_port: &str) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>;
}

/// `getaddrinfo` through tokio: `/etc/hosts`, DNS, Docker's embedded DNS.
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host_port: &str) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let name = host_port.to_owned();
        Box::pin(async move { Ok(tokio::net::lookup_host(name).await?.collect()) })
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `http://addr`, prebuilt so a call only appends its path.
    pub base: String,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    ejections: AtomicU32,
    ejected_until_ms: AtomicU64,
    /// Set by active health checks; optimistic until the first one answers.
    healthy: AtomicBool,
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            base: format!("http://{addr}"),
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn available(&self, now: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.ejected_until_ms.load(Ordering::Relaxed) <= now
    }

    pub fn set_healthy(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Relaxed);
    }

    /// Counts a call toward this endpoint until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// One call in flight on an endpoint.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    cfg: ClusterConfig,
    endpoints: RwLock<Arc<Vec<Arc<Endpoint>>>>,
    resolver: Arc<dyn Resolve>,
    /// Wakes the resolver task early (an endpoint refused a connection).
    wake: Notify,
}

impl Cluster {
    /// Builds the cluster and, when it names hosts, a task that re-resolves them until
    /// the cluster is dropped. Literal addresses are usable at once.
    pub fn new(
        name: &str,
        cfg: &ClusterConfig,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Arc<Self>, String> {
        if cfg.endpoints.is_empty() {
            return Err(format!("clusters.{name}: no endpoints"));
        }
        let mut literal = Vec::new();
        let mut names = false;
        for e in cfg.endpoints.iter() {
            match e.parse::<SocketAddr>() {
                Ok(a) => literal.push(Arc::new(Endpoint::new(a))),
                Err(_) => {
                    let ok = e
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                    if !ok {
                        return Err(format!(
                            "clusters.{name}: endpoint `{e}` is not `host:port`"
                        ));
                    }
                    names = true;
                }
            }
        }
        let c = Arc::new(Self {
            name: name.to_owned(),
            cfg: cfg.clone(),
            endpoints: RwLock::new(Arc::new(literal)),
            resolver,
            wake: Notify::new(),
        });
        if names {
            spawn_resolver(&c);
        }
        Ok(c)
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    pub fn endpoints(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Power of two choices among available endpoints: two at random, the one with
    /// fewer calls in flight wins.
    pub fn pick(&self) -> Option<Arc<Endpoint>> {
        let all = self.endpoints();
        let now = now_ms();
        let n = all.len();
        if n == 1 {
            return all[0].available(now).then(|| all[0].clone());
        }
        let mut rng = rand::rng();
        let a = rng.random_range(0..n.max(1));
        let b = (a + rng.random_range(1..n.max(2))) % n.max(1);
        let pick2 = match (all.get(a), all.get(b)) {
            (Some(x), Some(y)) if x.available(now) && y.available(now) => {
                Some(if y.in_flight() < x.in_flight() { y } else { x })
            }
            (Some(x), _) if x.available(now) => Some(x),
            (_, Some(y)) if y.available(now) => Some(y),
            _ => None,
        };
        pick2
            .cloned()
            // Both draws unavailable: fall back to the least loaded available one.
            .or_else(|| {
                all.iter()
                    .filter(|e| e.available(now))
                    .min_by_key(|e| e.in_flight())
                    .cloned()
            })
    }

    /// The least loaded available endpoint other than `not`, for a retry.
    pub fn pick_other(&self, not: SocketAddr) -> Option<Arc<Endpoint>> {
        let now = now_ms();
        self.endpoints()
            .iter()
            .filter(|e| e.addr != not && e.available(now))
            .min_by_key(|e| e.in_flight())
            .cloned()
    }

    /// Asks for the names to be resolved again now: a refused connection may mean the
    /// replica behind an address is gone.
    pub fn resolve_soon(&self) {
        self.wake.notify_one();
    }

    /// Passive health: consecutive failures eject the endpoint, for longer each time.
    pub fn report(&self, ep: &Endpoint, ok: bool) {
        if ok {
            ep.failures.store(0, Ordering::Relaxed);
            return;
        }
        let f = ep.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if f >= self.cfg.eject_after.max(1) {
            ep.failures.store(0, Ordering::Relaxed);
            let k = ep.ejections.fetch_add(1, Ordering::Relaxed).min(3);
            let d = self.cfg.eject_for * (1u32 << k);
            ep.ejected_until_ms
                .store(now_ms() + d.as_millis() as u64, Ordering::Relaxed);
            tracing::warn!(cluster = %self.name, endpoint = %ep.addr, eject_ms = d.as_millis() as u64,
                "endpoint ejected after consecutive failures");
        }
    }

    async fn resolve(&self) {
        let mut addrs = Vec::new();
        for e in self.cfg.endpoints.iter() {
            if let Ok(a) = e.parse::<SocketAddr>() {
                addrs.push(a);
                continue;
            }
            match self.resolver.resolve(e).await {
                Ok(found) => addrs.extend(found),
                Err(err) => {
                    tracing::warn!(cluster = %self.name, endpoint = %e, error = %err, "cannot resolve")
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        let old = self.endpoints();
        // Keep existing endpoints' counters; an empty answer keeps the last good list.
        if addrs.is_empty() && !old.is_empty() {
            return;
        }
        let next: Vec<Arc<Endpoint>> = addrs
            .into_iter()
            .map(|a| {
                old.iter()
                    .find(|e| e.addr == a)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Endpoint::new(a)))
            })
            .collect();
        if next.len() != old.len() || next.iter().zip(old.iter()).any(|(a, b)| a.addr != b.addr) {
            tracing::info!(cluster = %self.name, endpoints = ?next.iter().map(|e| e.addr).collect::<Vec<_>>(), "endpoints changed");
        }
        *self.endpoints.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    }
}

fn spawn_resolver(c: &Arc<Cluster>) {
    let weak: Weak<Cluster> = Arc::downgrade(c);
    let every = c.cfg.resolve_every.max(Duration::from_millis(100));
    tokio::spawn(async move {
        loop {
            let Some(c) = weak.upgrade() else { return };
            c.resolve().await;
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = c.wake.notified() => {}
            }
            drop(c);
            // At most ten lookups a second, however many connections are refused.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StrList;

    fn cluster(addrs: &[&str]) -> Arc<Cluster> {
        Cluster::new(
            "t",
            &ClusterConfig {
                endpoints: StrList(addrs.iter().map(|s| s.to_string()).collect()),
                eject_after: 2,
                eject_for: Duration::from_secs(60),
                ..ClusterConfig::default()
            },
            Arc::new(SystemResolver),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn p2c_prefers_less_loaded_and_ejects() {
        let c = cluster(&["127.0.0.1:1", "127.0.0.1:2"]);
        let eps = c.endpoints();
        let _busy: Vec<_> = (0..5).map(|_| eps[0].start()).collect();
        for _ in 0..20 {
            assert_eq!(c.pick().unwrap().addr, eps[1].addr);
        }
        c.report(&eps[1], false);
        c.report(&eps[1], false);
        for _ in 0..20 {
            assert_eq!(c.pick().unwrap().addr, eps[0].addr);
        }
        c.report(&eps[0], false);
        c.report(&eps[0], false);
        assert!(c.pick().is_none());
    }

    #[tokio::test]
    async fn bad_endpoint_is_refused() {
        let sys = || Arc::new(SystemResolver) as Arc<dyn Resolve>;
        assert!(Cluster::new("t", &ClusterConfig::default(), sys()).is_err());
        let cfg = ClusterConfig {
            endpoints: StrList(vec!["nocolon".into()]),
            ..ClusterConfig::default()
        };
        assert!(Cluster::new("t", &cfg, sys()).is_err());
    }
}
