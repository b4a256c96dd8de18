//! `fargo thumb VIDEO --at POS -o OUT`: thumbnails from the running app, through the
//! auth-proxy. A local file is streamed up (`ExtractUpload`); a URI the service can
//! read (s3://, http(s)://) is passed as is (`Extract`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use fargo_proto::thumbnail::v1 as pb;
use pb::thumbnail_service_client::ThumbnailServiceClient;
use tokio::io::AsyncReadExt;

use crate::client::ClientArgs;

#[derive(Debug, clap::Args)]
pub struct ThumbArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// A local video file, or an s3:// or http(s):// URI the service reads itself.
    pub video: String,
    /// Position(s): 12.5, 00:01:02.5 or 10%; comma-separated for several.
    #[arg(long = "at", value_delimiter = ',', required = true)]
    pub at: Vec<String>,
    /// Output image (one position) or folder (several).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// accurate, keyframe or representative.
    #[arg(long, default_value = "accurate")]
    pub mode: String,
    #[arg(long, default_value_t = 0)]
    pub width: u32,
    #[arg(long, default_value_t = 0)]
    pub height: u32,
    /// JPEG/WebP quality 1-100.
    #[arg(long, default_value_t = 0)]
    pub quality: u32,
}

const CHUNK: usize = 256 * 1024;

pub async fn run(args: ThumbArgs) -> anyhow::Result<ExitCode> {
    let ext = args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("png")
        .to_ascii_lowercase();
    let format = match ext.as_str() {
        "jpg" | "jpeg" => pb::ImageFormat::Jpeg,
        "webp" => pb::ImageFormat::Webp,
        _ => pb::ImageFormat::Png,
    };
    let mode = match args.mode.as_str() {
        "accurate" => pb::SeekMode::Accurate,
        "keyframe" => pb::SeekMode::Keyframe,
        "representative" => pb::SeekMode::Representative,
        m => bail!("--mode `{m}`: use accurate, keyframe or representative"),
    };
    let options = pb::ExtractOptions {
        positions: args.at.clone(),
        mode: mode as i32,
        format: format as i32,
        quality: args.quality,
        width: args.width,
        height: args.height,
        ..Default::default()
    };
    let mut client = ThumbnailServiceClient::new(args.client.connect().await?)
        .max_decoding_message_size(64 << 20);
    let remote = args.video.contains("://") && !args.video.starts_with("file://");
    let resp = if remote {
        client
            .extract(pb::ExtractRequest {
                input_uri: args.video.clone(),
                options: Some(options),
            })
            .await
    } else {
        let path = args.video.trim_start_matches("file://").to_owned();
        let mut file = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("opening {path}"))?;
        // Read and send chunk by chunk so the upload never sits whole in memory.
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadChunk>(4);
        let reader = tokio::spawn(async move {
            let mut first = Some(options);
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = file.read(&mut buf).await?;
                buf.truncate(n);
                if n == 0 && first.is_none() {
                    break;
                }
                let msg = pb::UploadChunk {
                    options: first.take(),
                    data: buf,
                };
                if tx.send(msg).await.is_err() || n == 0 {
                    break;
                }
            }
            Ok::<_, std::io::Error>(())
        });
        let r = client
            .extract_upload(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        reader.await??;
        r
    };
    let resp = match resp {
        Ok(r) => r.into_inner(),
        Err(s) => {
            eprintln!("fargo thumb: {}: {}", s.code(), s.message());
            return Ok(ExitCode::FAILURE);
        }
    };
    let many = resp.thumbnails.len() > 1;
    if many {
        std::fs::create_dir_all(&args.output)
            .with_context(|| format!("creating {}", args.output.display()))?;
    }
    for (i, t) in resp.thumbnails.iter().enumerate() {
        let path = if many {
            args.output.join(format!("thumb-{i:03}.{ext}"))
        } else {
            args.output.clone()
        };
        std::fs::write(&path, &t.image).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "{}\t{:.3}s\t{}x{}\t{}",
            t.position,
            t.frame_time_seconds,
            t.width,
            t.height,
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
