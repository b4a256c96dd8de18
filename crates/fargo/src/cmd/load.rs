//! `fargo load`: a gRPC load generator, what Apache Bench was to the original service.
//! N concurrent clients over one or more HTTP/2 connections call one RPC of the app
//! for a duration or a request count; prints requests per second, latency percentiles
//! and errors by status code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use fargo_proto::coinvalue::v1::CountRequest;
use fargo_proto::coinvalue::v1::coin_value_service_client::CoinValueServiceClient;
use fargo_proto::testing::v1::EchoRequest;
use fargo_proto::testing::v1::echo_service_client::EchoServiceClient;
use fargo_proto::thumbnail::v1::thumbnail_service_client::ThumbnailServiceClient;
use fargo_proto::thumbnail::v1::{ExtractOptions, ExtractRequest};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::client::{AuthChannel, ClientArgs};

/// The RPCs `fargo load` can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rpc {
    /// fargo.coinvalue.v1.CoinValueService/Count with --image.
    Count,
    /// fargo.thumbnail.v1.ThumbnailService/Extract of --input-uri at --position.
    Extract,
    /// grpc.health.v1.Health/Check of --service.
    Health,
    /// fargo.testing.v1.EchoService/Echo with --payload-bytes and --delay-ms.
    Echo,
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Which RPC to call.
    #[arg(long, value_enum, default_value = "health")]
    pub rpc: Rpc,
    /// Concurrent clients, each with one call in flight.
    #[arg(long, short = 'c', default_value_t = 4)]
    pub concurrency: usize,
    /// HTTP/2 connections the clients share (round robin).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Run this long (ignored when --requests is given).
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many calls in total.
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Count: the picture to send.
    #[arg(long, required_if_eq("rpc", "count"))]
    pub image: Option<PathBuf>,
    /// Count: also ask for the annotated picture.
    #[arg(long)]
    pub annotate: bool,
    /// Extract: the video URI.
    #[arg(long, required_if_eq("rpc", "extract"))]
    pub input_uri: Option<String>,
    /// Extract: the position.
    #[arg(long, default_value = "1")]
    pub position: String,
    /// Health: the service to ask about ("" = the server).
    #[arg(long, default_value = "")]
    pub service: String,
    /// Echo: payload size.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Echo: server-side delay.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u32,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// One prepared call, cheap to repeat.
#[derive(Clone)]
enum Call {
    Count(CoinValueServiceClient<AuthChannel>, CountRequest),
    Extract(ThumbnailServiceClient<AuthChannel>, ExtractRequest),
    Health(HealthClient<AuthChannel>, HealthCheckRequest),
    Echo(EchoServiceClient<AuthChannel>, EchoRequest),
}

const MAX_MSG: usize = 64 * 1024 * 1024;

impl Call {
    fn new(args: &LoadArgs, ch: AuthChannel) -> anyhow::Result<Self> {
        Ok(match args.rpc {
            Rpc::Count => {
                let path = args
                    .image
                    .as_ref()
                    .context("--image is required for count")?;
                let data = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Self::Count(
                    CoinValueServiceClient::new(ch)
                        .max_decoding_message_size(MAX_MSG)
                        .max_encoding_message_size(MAX_MSG),
                    CountRequest {
                        image: Some(fargo_proto::coinvalue::v1::count_request::Image::Data(data)),
                        annotate: args.annotate,
                    },
                )
            }
            Rpc::Extract => Self::Extract(
                ThumbnailServiceClient::new(ch).max_decoding_message_size(MAX_MSG),
                ExtractRequest {
                    input_uri: args
                        .input_uri
                        .clone()
                        .context("--input-uri is required for extract")?,
                    options: Some(ExtractOptions {
                        positions: vec![args.position.clone()],
                        ..ExtractOptions::default()
                    }),
                },
            ),
            Rpc::Health => Self::Health(
                HealthClient::new(ch),
                HealthCheckRequest {
                    service: args.service.clone(),
                },
            ),
            Rpc::Echo => Self::Echo(
                EchoServiceClient::new(ch).max_decoding_message_size(MAX_MSG),
                EchoRequest {
                    payload: vec![0x5a; args.payload_bytes],
                    delay_ms: args.delay_ms,
                    ..EchoRequest::default()
                },
            ),
        })
    }

    async fn once(&mut self) -> Result<(), tonic::Status> {
        match self {
            Self::Count(c, r) => c.count(r.clone()).await.map(drop),
            Self::Extract(c, r) => c.extract(r.clone()).await.map(drop),
            Self::Health(c, r) => c.check(r.clone()).await.map(drop),
            Self::Echo(c, r) => c.echo(r.clone()).await.map(drop),
        }
    }
}

/// What one client saw.
#[derive(Default)]
struct Tally {
    ok: Vec<Duration>,
    all: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    first_error: BTreeMap<String, String>,
}

/// The printed result.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub rpc: String,
    pub concurrency: usize,
    pub requests: u64,
    pub ok: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub ok_per_second: f64,
    /// Latency of successful calls, milliseconds.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Errors by gRPC status code name, with the first message seen for each.
    pub errors: BTreeMap<String, u64>,
    pub error_messages: BTreeMap<String, String>,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

/// Runs the load and returns the report (used by `run` and by tests).
pub async fn load(args: &LoadArgs) -> anyhow::Result<Report> {
    let conns = args.connections.max(1);
    let mut channels = Vec::with_capacity(conns);
    for _ in 0..conns {
        channels.push(args.client.connect().await?);
    }
    let concurrency = args.concurrency.max(1);
    let budget = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
        args.requests.unwrap_or(u64::MAX),
    ));
    let started = Instant::now();
    let deadline = args.requests.is_none().then(|| started + args.duration);
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency {
        let mut call = Call::new(args, channels[i % conns].clone())?;
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                // Claim one call from the shared budget; stop when none is left.
                if budget
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |b| b.checked_sub(1),
                    )
                    .is_err()
                {
                    break;
                }
                let t0 = Instant::now();
                let res = call.once().await;
                let el = t0.elapsed();
                t.all.push(el);
                match res {
                    Ok(()) => t.ok.push(el),
                    Err(s) => {
                        let code = format!("{:?}", s.code());
                        *t.errors.entry(code.clone()).or_default() += 1;
                        t.first_error
                            .entry(code)
                            .or_insert_with(|| s.message().to_owned());
                    }
                }
            }
            t
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await.context("a load client failed")?;
        total.ok.extend(t.ok);
        total.all.extend(t.all);
        for (k, v) in t.errors {
            *total.errors.entry(k).or_default() += v;
        }
        for (k, v) in t.first_error {
            total.first_error.entry(k).or_insert(v);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    total.ok.sort();
    let requests = total.all.len() as u64;
    let ok = total.ok.len() as u64;
    let mean_ms = if ok > 0 {
        total.ok.iter().map(Duration::as_secs_f64).sum::<f64>() / ok as f64 * 1e3
    } else {
        0.0
    };
    Ok(Report {
        rpc: format!("{:?}", args.rpc).to_ascii_lowercase(),
        concurrency,
        requests,
        ok,
        seconds,
        requests_per_second: requests as f64 / seconds,
        ok_per_second: ok as f64 / seconds,
        p50_ms: pct(&total.ok, 50.0),
        p90_ms: pct(&total.ok, 90.0),
        p99_ms: pct(&total.ok, 99.0),
        max_ms: total.ok.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        mean_ms,
        errors: total.errors,
        error_messages: total.first_error,
    })
}

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let r = load(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "rpc            {} x {} clients against {}",
            r.rpc, r.concurrency, args.client.endpoint
        );
        println!(
            "requests       {} in {:.2} s ({} ok)",
            r.requests, r.seconds, r.ok
        );
        println!(
            "throughput     {:.1} req/s ({:.1} ok/s)",
            r.requests_per_second, r.ok_per_second
        );
        println!(
            "latency (ok)   p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  mean {:.2} ms",
            r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.mean_ms
        );
        if r.errors.is_empty() {
            println!("errors         none");
        } else {
            for (code, n) in &r.errors {
                let msg = r.error_messages.get(code).map_or("", String::as_str);
                println!("errors         {code}: {n}  (first: {msg})");
            }
        }
    }
    Ok(if r.ok == 0 && r.requests > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
