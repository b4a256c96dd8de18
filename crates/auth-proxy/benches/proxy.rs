//! Proxy benchmark: small unary Echo calls with API-key auth, in the same run against
//! (a) the upstream called directly, (b) the auth-proxy binary, (c) Debian's nginx with
//! `grpc_pass` and no auth. Prints latency at a fixed rate, maximum throughput, and the
//! proxy's memory idle and under 1000 concurrent streams.
//!
//! `cargo bench -p auth-proxy --bench proxy` (needs `nginx` on PATH or in /usr/sbin).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fargo_proto::testing::v1::EchoRequest;
use fargo_proto::testing::v1::echo_service_client::EchoServiceClient;
use fargo_runtime::echo::Echo;
use fargo_runtime::health::{HealthState, ServingStatus};
use tonic::transport::Channel;

const KEY: &str = "bench-key-0123456789";
const ECHO: &str = "fargo.testing.v1.EchoService";
const RATE: u64 = 2000;
const RATE_SECS: u64 = 5;
const LOAD_SECS: u64 = 4;
const CONCURRENCY: usize = 64;
const STREAMS: usize = 1000;

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn channel(addr: SocketAddr) -> Channel {
    for _ in 0..200 {
        if let Ok(ch) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
        {
            return ch;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("cannot connect to {addr}");
}

fn call(payload: &[u8]) -> tonic::Request<EchoRequest> {
    let mut r = tonic::Request::new(EchoRequest {
        payload: payload.to_vec(),
        ..Default::default()
    });
    r.metadata_mut().insert("x-api-key", KEY.parse().unwrap());
    r
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Calls at a fixed rate (each timed from its scheduled start, so queueing counts).
async fn fixed_rate(addr: SocketAddr) -> (Duration, Duration, usize) {
    let ch = channel(addr).await;
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(
        (RATE * RATE_SECS) as usize,
    )));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    let start = Instant::now();
    for i in 0..RATE * RATE_SECS {
        tick.tick().await;
        let scheduled = start + Duration::from_nanos(i * 1_000_000_000 / RATE);
        let mut c = EchoServiceClient::new(ch.clone());
        let (lat, errors) = (lat.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            match c.echo(call(b"ping")).await {
                Ok(_) => lat.lock().unwrap().push(scheduled.elapsed()),
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut v = lat.lock().unwrap().clone();
    v.sort();
    (
        pct(&v, 0.5),
        pct(&v, 0.99),
        errors.load(Ordering::Relaxed) as usize,
    )
}

/// Closed-loop maximum throughput with `CONCURRENCY` callers over 4 connections.
async fn throughput(addr: SocketAddr) -> (f64, u64) {
    let mut chans = Vec::new();
    for _ in 0..4 {
        chans.push(channel(addr).await);
    }
    let ok = Arc::new(AtomicU64::new(0));
    let err = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(LOAD_SECS);
    let mut tasks = Vec::new();
    for i in 0..CONCURRENCY {
        let mut c = EchoServiceClient::new(chans[i % chans.len()].clone());
        let (ok, err) = (ok.clone(), err.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match c.echo(call(b"ping")).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => err.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        ok.load(Ordering::Relaxed) as f64 / LOAD_SECS as f64,
        err.load(Ordering::Relaxed),
    )
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// RSS of `pid` and its direct children (nginx's workers).
fn tree_rss_kib(pid: u32) -> u64 {
    let mut total = rss_kib(pid);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if ppid == Some(pid) {
                total += rss_kib(child);
            }
        }
    }
    total
}

/// Holds `STREAMS` server streams open through `addr`, returns RSS of `pid`'s tree then.
async fn streams_rss(addr: SocketAddr, pid: u32, echo: &Echo) -> (u64, u64) {
    let before = echo.received();
    let mut chans = Vec::new();
    for _ in 0..4 {
        chans.push(channel(addr).await);
    }
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let mut c = EchoServiceClient::new(chans[i % 4].clone());
        tasks.push(tokio::spawn(async move {
            let mut r = call(b"s");
            r.get_mut().count = 2;
            r.get_mut().delay_ms = 2500;
            if let Ok(s) = c.echo_stream(r).await {
                let mut s = s.into_inner();
                while let Ok(Some(_)) = s.message().await {}
            }
        }));
    }
    let t = Instant::now();
    while echo.received() - before < STREAMS as u64 && t.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open = echo.received() - before;
    let rss = tree_rss_kib(pid);
    for t in tasks {
        let _ = t.await;
    }
    (rss, open)
}

/// Stops a child on drop with SIGTERM, so nginx's master also stops its workers
/// (SIGKILL would orphan them).
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let term = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        if term.is_err() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn start_proxy(dir: &std::path::Path, upstream: SocketAddr) -> (Kill, SocketAddr) {
    let addr = free_addr();
    let cfg = format!(
        "server:\n  listen: {addr}\n  max_message_bytes: 4194304\ntelemetry:\n  log_format: off\n  log_level: warn\n\
         clusters:\n  echo:\n    endpoints: [\"{upstream}\"]\n\
         routes:\n  {ECHO}:\n    cluster: echo\n    auth: [api_key]\n\
         api_keys:\n  bench:\n    hash: \"{}\"\n\
         access:\n  bench:\n    principals: [bench]\n    methods: [\"*\"]\n",
        auth_proxy::hash_api_key(KEY)
    );
    let file = dir.join("proxy.yaml");
    std::fs::write(&file, cfg).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_auth-proxy"))
        .args(["serve", "--config"])
        .arg(&file)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (Kill(child), addr)
}

fn start_nginx(dir: &std::path::Path, upstream: SocketAddr) -> Option<(Kill, SocketAddr)> {
    let bin = ["nginx", "/usr/sbin/nginx"].into_iter().find(|b| {
        Command::new(b)
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
    })?;
    let addr = free_addr();
    let d = dir.display();
    let conf = format!(
        "worker_processes auto;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         http2_max_concurrent_streams 1024;\n\
         upstream echo {{ server {upstream}; keepalive 256; }}\n\
         server {{\n    listen {addr} http2;\n    location / {{ grpc_pass grpc://echo; }}\n  }}\n}}\n"
    );
    let file = dir.join("nginx.conf");
    std::fs::write(&file, conf).unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&file)
        .arg("-p")
        .arg(dir)
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((Kill(child), addr))
}

#[tokio::main]
async fn main() {
    // The upstream: Echo plus health (the proxy only routes to healthy endpoints).
    let echo = Echo::new();
    let health = HealthState::new();
    health.set("", ServingStatus::Serving);
    health.set(ECHO, ServingStatus::Serving);
    let up_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = up_listener.local_addr().unwrap();
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(4096))
        .add_service(health.server())
        .add_service(echo.server());
    tokio::spawn(
        server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(up_listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let (proxy, proxy_addr) = start_proxy(dir.path(), up);
    let pid = proxy.0.id();
    for _ in 0..200 {
        if fargo_runtime::cli::check_health(proxy_addr, ECHO, Duration::from_secs(1))
            .await
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle_kib = rss_kib(pid);
    let nginx = start_nginx(dir.path(), up);
    if nginx.is_none() {
        println!("nginx not found: its column is skipped");
    }

    // Warm up every path once.
    for a in [Some(up), Some(proxy_addr), nginx.as_ref().map(|n| n.1)]
        .into_iter()
        .flatten()
    {
        let mut c = EchoServiceClient::new(channel(a).await);
        for _ in 0..200 {
            c.echo(call(b"warm")).await.unwrap();
        }
    }

    println!("auth-proxy benchmark: unary Echo, 4-byte payload, API-key auth on the proxy");
    println!("fixed rate {RATE}/s for {RATE_SECS}s (latency from scheduled start):");
    let direct = fixed_rate(up).await;
    let prox = fixed_rate(proxy_addr).await;
    let ngx = match &nginx {
        Some((_, a)) => Some(fixed_rate(*a).await),
        None => None,
    };
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "  direct     p50 {:>8.0} us  p99 {:>8.0} us  errors {}",
        us(direct.0),
        us(direct.1),
        direct.2
    );
    println!(
        "  auth-proxy p50 {:>8.0} us  p99 {:>8.0} us  errors {}",
        us(prox.0),
        us(prox.1),
        prox.2
    );
    if let Some(n) = ngx {
        println!(
            "  nginx      p50 {:>8.0} us  p99 {:>8.0} us  errors {}",
            us(n.0),
            us(n.1),
            n.2
        );
        println!(
            "  added by nginx:      p50 {:+.0} us  p99 {:+.0} us",
            us(n.0) - us(direct.0),
            us(n.1) - us(direct.1)
        );
    }
    println!(
        "  added by auth-proxy: p50 {:+.0} us (target <= 100)  p99 {:+.0} us (target <= 1000)",
        us(prox.0) - us(direct.0),
        us(prox.1) - us(direct.1)
    );

    println!("max throughput, {CONCURRENCY} callers on 4 connections, {LOAD_SECS}s each:");
    let (d_rps, d_err) = throughput(up).await;
    let (p_rps, p_err) = throughput(proxy_addr).await;
    println!("  direct     {d_rps:>9.0} calls/s  errors {d_err}");
    println!("  auth-proxy {p_rps:>9.0} calls/s  errors {p_err}");
    if let Some((_, a)) = &nginx {
        let (n_rps, n_err) = throughput(*a).await;
        println!("  nginx      {n_rps:>9.0} calls/s  errors {n_err}");
        println!(
            "  auth-proxy / nginx throughput ratio: {:.2} (target >= 1.00)",
            p_rps / n_rps
        );
    }
    println!(
        "  auth-proxy / direct throughput ratio: {:.2}",
        p_rps / d_rps
    );

    println!("memory (RSS):");
    println!(
        "  auth-proxy idle after start: {:.1} MiB (target <= 16)",
        idle_kib as f64 / 1024.0
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "  auth-proxy idle after load:  {:.1} MiB",
        rss_kib(pid) as f64 / 1024.0
    );
    let (rss, open) = streams_rss(proxy_addr, pid, &echo).await;
    println!(
        "  auth-proxy with {STREAMS} concurrent streams: {:.1} MiB ({open} streams reached the upstream)",
        rss as f64 / 1024.0
    );
    if let Some((n, a)) = &nginx {
        let idle = tree_rss_kib(n.0.id());
        let (rss, open) = streams_rss(*a, n.0.id(), &echo).await;
        println!(
            "  nginx (master+workers) idle {:.1} MiB, with {STREAMS} streams {:.1} MiB ({open} reached the upstream)",
            idle as f64 / 1024.0,
            rss as f64 / 1024.0
        );
    }
    drop(nginx);
    drop(proxy);
}
