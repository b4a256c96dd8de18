//! The `fargo.thumbnail.v1.ThumbnailService` gRPC surface.

use fargo_proto::thumbnail::v1 as pb;
use fargo_proto::thumbnail::v1::thumbnail_service_server::{
    ThumbnailService, ThumbnailServiceServer,
};
use fargo_runtime::storage::Storage;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::encode::ImageFormat;
use crate::engine::{self, Fit, Mode, Output, Size, SpriteSpec};
use crate::position::Position;
use crate::thumbnailer::{Thumbnailer, Written};
use crate::{Config, ThumbError, ThumbnailConfig};

#[derive(Debug, Clone)]
pub struct ThumbnailGrpc {
    thumbnailer: Thumbnailer,
    max_message_bytes: usize,
}

impl ThumbnailGrpc {
    pub fn new(config: &Config) -> Self {
        Self {
            thumbnailer: Thumbnailer::new(&config.thumbnail, Storage::from_env()),
            max_message_bytes: config.server.max_message_bytes,
        }
    }

    pub fn server(self, max_message_bytes: usize) -> ThumbnailServiceServer<Self> {
        ThumbnailServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    async fn respond(
        &self,
        out: Output,
        opts: &pb::ExtractOptions,
        format: ImageFormat,
    ) -> Result<pb::ExtractResponse, ThumbError> {
        let written = if opts.output_uri.is_empty() {
            None
        } else {
            Some(
                self.thumbnailer
                    .write(&out, &opts.output_uri, format)
                    .await?,
            )
        };
        let resp = to_response(out, written, format);
        let size = prost::Message::encoded_len(&resp);
        if size > self.max_message_bytes {
            return Err(ThumbError::TooBig(format!(
                "the images take {size} bytes, more than the {} a response may carry: set output_uri, ask for fewer positions, or a smaller size",
                self.max_message_bytes
            )));
        }
        Ok(resp)
    }
}

/// Checks and converts the API's options; every message says which field is wrong.
pub fn request_from_options(
    opts: &pb::ExtractOptions,
    config: &ThumbnailConfig,
) -> Result<(engine::Request, ImageFormat), ThumbError> {
    let bad = |m: String| ThumbError::BadRequest(m);
    if opts.positions.is_empty() && opts.sprite_frames == 0 {
        return Err(bad(
            "options.positions is empty: give at least one position (12.5, 00:01:02.5 or 10%) or sprite_frames".into(),
        ));
    }
    if opts.positions.len() > config.max_positions {
        return Err(bad(format!(
            "options.positions has {} entries; at most {} per request",
            opts.positions.len(),
            config.max_positions
        )));
    }
    let positions = opts
        .positions
        .iter()
        .map(|p| {
            Position::parse(p)
                .map(|pos| (p.clone(), pos))
                .map_err(|e| bad(format!("options.positions: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mode = match pb::SeekMode::try_from(opts.mode) {
        Ok(pb::SeekMode::Unspecified | pb::SeekMode::Accurate) => Mode::Accurate,
        Ok(pb::SeekMode::Keyframe) => Mode::Keyframe,
        Ok(pb::SeekMode::Representative) => Mode::Representative,
        Err(_) => return Err(bad(format!("options.mode {} is not a SeekMode", opts.mode))),
    };
    let format = match pb::ImageFormat::try_from(opts.format) {
        Ok(pb::ImageFormat::Unspecified | pb::ImageFormat::Png) => ImageFormat::Png,
        Ok(pb::ImageFormat::Jpeg) => ImageFormat::Jpeg,
        Ok(pb::ImageFormat::Webp) => ImageFormat::Webp,
        Err(_) => {
            return Err(bad(format!(
                "options.format {} is not an ImageFormat",
                opts.format
            )));
        }
    };
    let fit = match pb::Fit::try_from(opts.fit) {
        Ok(pb::Fit::Unspecified | pb::Fit::Contain) => Fit::Contain,
        Ok(pb::Fit::Cover) => Fit::Cover,
        Err(_) => return Err(bad(format!("options.fit {} is not a Fit", opts.fit))),
    };
    if opts.quality > 100 {
        return Err(bad(format!(
            "options.quality {} is out of 1-100",
            opts.quality
        )));
    }
    const MAX_SIDE: u32 = 16384;
    if opts.width > MAX_SIDE || opts.height > MAX_SIDE {
        return Err(bad(format!(
            "options.width/height {}x{} exceed {MAX_SIDE}",
            opts.width, opts.height
        )));
    }
    let sprite = if opts.sprite_frames > 0 {
        if opts.sprite_frames > config.max_sprite_frames {
            return Err(bad(format!(
                "options.sprite_frames {} is more than {}",
                opts.sprite_frames, config.max_sprite_frames
            )));
        }
        let columns = if opts.sprite_columns == 0 {
            (f64::from(opts.sprite_frames).sqrt().ceil() as u32).max(1)
        } else {
            opts.sprite_columns
        };
        Some(SpriteSpec {
            frames: opts.sprite_frames,
            columns,
            tile_width: 160,
        })
    } else {
        None
    };
    Ok((
        engine::Request {
            positions,
            mode,
            format,
            quality: opts.quality as u8,
            size: Size {
                width: opts.width,
                height: opts.height,
                fit,
            },
            sprite,
        },
        format,
    ))
}

fn pb_format(f: ImageFormat) -> i32 {
    match f {
        ImageFormat::Png => pb::ImageFormat::Png as i32,
        ImageFormat::Jpeg => pb::ImageFormat::Jpeg as i32,
        ImageFormat::Webp => pb::ImageFormat::Webp as i32,
    }
}

fn to_response(out: Output, written: Option<Written>, format: ImageFormat) -> pb::ExtractResponse {
    let sprite_name = format!("sprite.{}", format.extension());
    let (uris, sprite_uri, vtt_uri) = match written {
        Some(w) => (Some(w.thumbnails), w.sprite, w.webvtt),
        None => (None, None, None),
    };
    let thumbnails = out
        .thumbnails
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let uri = uris.as_ref().and_then(|u| u.get(i).cloned());
            pb::Thumbnail {
                position: t.position,
                frame_time_seconds: t.frame_time,
                width: t.width,
                height: t.height,
                format: pb_format(format),
                image: if uri.is_some() { Vec::new() } else { t.image },
                uri: uri.unwrap_or_default(),
            }
        })
        .collect();
    let sprite = out.sprite.map(|s| pb::Sprite {
        webvtt: s.webvtt(&sprite_name),
        image: if sprite_uri.is_some() {
            Vec::new()
        } else {
            s.image
        },
        uri: sprite_uri.unwrap_or_default(),
        webvtt_uri: vtt_uri.unwrap_or_default(),
        columns: s.columns,
        rows: s.rows,
        tile_width: s.tile_width,
        tile_height: s.tile_height,
    });
    pb::ExtractResponse {
        thumbnails,
        sprite,
        duration_seconds: out.duration.unwrap_or(0.0),
    }
}

#[tonic::async_trait]
impl ThumbnailService for ThumbnailGrpc {
    async fn extract(
        &self,
        req: Request<pb::ExtractRequest>,
    ) -> Result<Response<pb::ExtractResponse>, Status> {
        let req = req.into_inner();
        if req.input_uri.is_empty() {
            return Err(Status::invalid_argument(
                "input_uri is empty: name the video (a path, file://, s3:// or http(s):// URI)",
            ));
        }
        let opts = req.options.unwrap_or_default();
        let (ereq, format) = request_from_options(&opts, self.thumbnailer.config())?;
        let out = self.thumbnailer.extract(&req.input_uri, ereq).await?;
        Ok(Response::new(self.respond(out, &opts, format).await?))
    }

    async fn extract_upload(
        &self,
        req: Request<Streaming<pb::UploadChunk>>,
    ) -> Result<Response<pb::ExtractResponse>, Status> {
        let mut stream = req.into_inner();
        let first = stream.next().await.ok_or_else(|| {
            Status::invalid_argument("the upload is empty: no message was sent")
        })??;
        let opts = first
            .options
            .clone()
            .ok_or_else(|| Status::invalid_argument("the first UploadChunk must carry options"))?;
        let config = self.thumbnailer.config();
        let (ereq, format) = request_from_options(&opts, config)?;
        // Spool to disk so a large upload never sits whole in memory; the file is
        // removed when `spool` drops, whatever happens below.
        let dir = config.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        let spool = tempfile::Builder::new()
            .prefix("thumbnail-upload-")
            .tempfile_in(&dir)
            .map_err(|e| {
                Status::unavailable(format!("cannot spool the upload in {}: {e}", dir.display()))
            })?;
        let mut file = tokio::fs::File::from_std(
            spool
                .reopen()
                .map_err(|e| Status::unavailable(format!("spool file: {e}")))?,
        );
        let mut total = 0u64;
        let mut chunk = Some(first);
        loop {
            if let Some(c) = chunk.take() {
                total += c.data.len() as u64;
                if total > config.max_upload_bytes {
                    return Err(Status::invalid_argument(format!(
                        "the upload is larger than the {} bytes allowed",
                        config.max_upload_bytes
                    )));
                }
                file.write_all(&c.data)
                    .await
                    .map_err(|e| Status::unavailable(format!("spool write: {e}")))?;
            }
            match stream.next().await {
                Some(c) => chunk = Some(c?),
                None => break,
            }
        }
        file.flush()
            .await
            .map_err(|e| Status::unavailable(format!("spool write: {e}")))?;
        drop(file);
        if total == 0 {
            return Err(Status::invalid_argument(
                "the upload is empty: no video bytes were sent",
            ));
        }
        let out = self
            .thumbnailer
            .extract_path(spool.path(), "the uploaded video", ereq)
            .await?;
        Ok(Response::new(self.respond(out, &opts, format).await?))
    }
}
