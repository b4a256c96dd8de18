//! `fargo count IMAGE`: asks the running app's coin-value service (through the
//! auth-proxy) for the coins of a picture; prints JSON with `total_cents`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use fargo_proto::coinvalue::v1::coin_value_service_client::CoinValueServiceClient;
use fargo_proto::coinvalue::v1::{CountRequest, Denomination, count_request};

use crate::client::ClientArgs;

#[derive(Debug, clap::Args)]
pub struct CountArgs {
    /// JPEG, PNG or WebP file to send, or with --uri a URI the service reads itself.
    pub image: String,
    /// Treat IMAGE as a URI (file://, s3://, http(s)://) for the service to read.
    #[arg(long)]
    pub uri: bool,
    /// Save the picture with every coin circled and labelled here (JPEG).
    #[arg(long, value_name = "FILE")]
    pub annotate: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub async fn run(args: CountArgs) -> anyhow::Result<ExitCode> {
    let image = if args.uri {
        count_request::Image::Uri(args.image.clone())
    } else {
        count_request::Image::Data(
            std::fs::read(&args.image).with_context(|| format!("cannot read {}", args.image))?,
        )
    };
    let channel = args.client.connect().await?;
    let mut client = CountClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let resp = match client
        .count(CountRequest {
            image: Some(image),
            annotate: args.annotate.is_some(),
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprintln!("fargo count: {}: {}", s.code(), s.message());
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Some(path) = &args.annotate {
        std::fs::write(path, &resp.annotated_jpeg)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let coins: Vec<serde_json::Value> = resp
        .coins
        .iter()
        .map(|c| {
            let d = Denomination::try_from(c.denomination).map_or("unknown".to_owned(), |d| {
                d.as_str_name()
                    .trim_start_matches("DENOMINATION_")
                    .to_ascii_lowercase()
            });
            serde_json::json!({
                "center_x": c.center_x,
                "center_y": c.center_y,
                "diameter_px": c.diameter_px,
                "diameter_mm": c.diameter_mm,
                "denomination": d,
                "value_cents": c.value_cents,
                "confidence": c.confidence,
            })
        })
        .collect();
    let out = serde_json::json!({
        "total_cents": resp.total_cents,
        "coins": coins,
        "pixels_per_mm": resp.pixels_per_mm,
        "image_width": resp.image_width,
        "image_height": resp.image_height,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

type CountClient = CoinValueServiceClient<crate::client::AuthChannel>;
