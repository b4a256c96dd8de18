//! Coin values: a photo of US coins on a table in, every coin and the total value out,
//! as the stateless, CPU-bound gRPC service the Scaling-Container pattern scales.
//!
//! The pipeline works on a ~500 px picture, which is what makes a count of a 12 MP photo
//! cheaper than decoding it: [`decode`] (a large baseline JPEG is decoded by [`jpeg_dc`]
//! to one pixel per 8 x 8 block from the DC terms alone, the AC terms skipped unstored;
//! other JPEGs through `jpeg_decoder`'s DCT scaling; EXIF orientation; size limits
//! checked from the header), [`detect`] (illumination correction, segmentation,
//! touching-coin separation, sub-pixel rim fits on rays) and [`value`] (the scale that
//! explains every coin's size and colour at once, each diameter's error growing as the
//! coin gets smaller in the picture).
//! [`synth`] renders the seeded synthetic photos the accuracy tests and benches use.

pub mod annotate;
pub mod cli;
pub mod decode;
pub mod detect;
pub mod jpeg_dc;
mod service;
pub mod synth;
pub mod value;

use std::future::Future;

use fargo_runtime::storage::Storage;
use fargo_runtime::{ServerConfig, Services, TelemetryConfig};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use decode::DecodeLimits;
pub use service::CoinValueGrpc;
pub use value::Denomination;

/// Default listen address; the task definition's environment sets the same.
pub const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 50062);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub telemetry: TelemetryConfig,
    pub coins: CoinsConfig,
}

/// What one request may cost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CoinsConfig {
    /// Largest image accepted, in bytes.
    pub max_image_bytes: usize,
    /// Largest picture accepted, in megapixels (checked from the header, before decoding).
    pub max_megapixels: u32,
    /// Long side of the working picture; JPEGs are decoded at the coarsest DCT scale
    /// that comes within a tenth of it (a 12 MP photo at 1/8, 504 px).
    pub work_side: u32,
    /// Pictures counted at once; 0 means one per CPU. Bounds the blocking pool.
    pub workers: usize,
}

impl Default for CoinsConfig {
    fn default() -> Self {
        Self {
            max_image_bytes: 16 * 1024 * 1024,
            max_megapixels: 64,
            work_side: 512,
            workers: 0,
        }
    }
}

impl CoinsConfig {
    pub fn limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_pixels: u64::from(self.max_megapixels) * 1_000_000,
            work_side: self.work_side.max(64),
            ..DecodeLimits::default()
        }
    }

    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            cpus()
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl Default for Config {
    fn default() -> Self {
        let coins = CoinsConfig::default();
        Self {
            server: ServerConfig {
                listen: DEFAULT_LISTEN.into(),
                // CPU-bound: one call per core, and refuse the rest so the autoscaler
                // and load balancer see the overload instead of a hidden queue.
                concurrency_limit: cpus(),
                shed_load: true,
                // Room for the image plus the request's other fields.
                max_message_bytes: coins.max_image_bytes + 64 * 1024,
                ..ServerConfig::default()
            },
            telemetry: TelemetryConfig::default(),
            coins,
        }
    }
}

impl fargo_runtime::Sidecar for Config {
    const NAME: &'static str = "coin-value";
    fn server(&self) -> &ServerConfig {
        &self.server
    }
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

/// Everything that can go wrong; [`service`] maps it to gRPC status codes in one place.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Serve(#[from] fargo_runtime::ServeError),
    #[error("not an image: {0}")]
    NotAnImage(String),
    #[error("bad image: {0}")]
    Corrupt(String),
    #[error("image too large: {0}")]
    TooLarge(String),
    #[error("the request has no image: set `data` to JPEG, PNG or WebP bytes, or `uri`")]
    NoImage,
    /// Reading the request's `uri` through the shared storage layer.
    #[error("cannot read the image: {0}")]
    Storage(#[from] fargo_runtime::storage::StorageError),
    #[error("counting failed: {0}")]
    Internal(String),
}

/// One coin of a [`CountResult`], in pixels of the picture as oriented.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coin {
    pub center_x: f64,
    pub center_y: f64,
    pub diameter_px: f64,
    pub diameter_mm: f64,
    pub denomination: Option<Denomination>,
    pub value_cents: u32,
    pub confidence: f64,
}

/// What a count answers.
#[derive(Debug, Clone, Serialize)]
pub struct CountResult {
    pub total_cents: i64,
    pub coins: Vec<Coin>,
    /// Pixels of the oriented original per millimetre; 0 when there are no coins.
    pub pixels_per_mm: f64,
    pub image_width: u32,
    pub image_height: u32,
    /// Objects found but rejected because their size fits no coin at the chosen scale.
    pub rejected: usize,
    #[serde(skip)]
    pub annotated_jpeg: Option<Vec<u8>>,
}

/// Counts the coins in `bytes`: decode, detect, value; the whole CPU-bound request.
pub fn count(bytes: &[u8], limits: &DecodeLimits, annotate: bool) -> Result<CountResult, Error> {
    let decoded = decode::decode(bytes, limits)?;
    Ok(count_decoded(&decoded, annotate))
}

/// Counts the coins of an already decoded picture.
pub fn count_decoded(decoded: &decode::Decoded, annotate: bool) -> CountResult {
    let img = &decoded.image;
    let circles = detect::detect(img, &detect::DetectParams::default());
    let long = f64::from(img.width().max(img.height()));
    let valuation = value::value(&circles, long);
    let f = decoded.factor;
    let mut coins = Vec::new();
    let mut marks = Vec::new();
    let mut rejected = 0;
    for (c, v) in circles.iter().zip(&valuation.coins) {
        let Some(den) = v.denomination else {
            rejected += 1;
            continue;
        };
        coins.push(Coin {
            center_x: c.x * f,
            center_y: c.y * f,
            diameter_px: 2.0 * c.r * f,
            diameter_mm: v.diameter_mm,
            denomination: Some(den),
            value_cents: den.cents(),
            confidence: v.confidence,
        });
        marks.push(annotate::Mark {
            x: c.x,
            y: c.y,
            r: c.r,
            denomination: Some(den),
        });
    }
    let total_cents = coins.iter().map(|c| i64::from(c.value_cents)).sum();
    let annotated_jpeg = annotate.then(|| annotate::annotate(img, &marks, total_cents));
    CountResult {
        total_cents,
        coins,
        pixels_per_mm: if valuation.px_per_mm > 0.0 {
            valuation.px_per_mm * f
        } else {
            0.0
        },
        image_width: decoded.full_width,
        image_height: decoded.full_height,
        rejected,
        annotated_jpeg,
    }
}

/// Serves `fargo.coinvalue.v1` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    serve_with_storage(listener, config, Storage::from_env(), shutdown).await
}

/// As [`serve`], reading `uri` requests through `storage` (tests point it at moto).
pub async fn serve_with_storage(
    listener: TcpListener,
    config: Config,
    storage: Storage,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let grpc = CoinValueGrpc::new(&config)
        .with_storage(storage)
        .server(config.server.max_message_bytes);
    let services = Services::new()
        .with(grpc)
        .describe(fargo_proto::FILE_DESCRIPTOR_SET);
    fargo_runtime::serve(listener, &config.server, services, shutdown).await?;
    Ok(())
}
