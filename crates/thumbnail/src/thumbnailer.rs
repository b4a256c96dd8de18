//! The engine behind a storage layer and a bound on concurrent decodes: what the
//! gRPC service and the job share.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use fargo_runtime::storage::{Location, Storage};
use tokio::sync::Semaphore;

use crate::engine::{self, Limits, Output, Request};
use crate::{ThumbError, ThumbnailConfig};

#[derive(Debug, Clone)]
pub struct Thumbnailer {
    storage: Storage,
    limits: Limits,
    config: ThumbnailConfig,
    slots: Arc<Semaphore>,
}

/// Where [`Thumbnailer::write`] put each image.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub thumbnails: Vec<String>,
    pub sprite: Option<String>,
    pub webvtt: Option<String>,
}

/// Sets the flag when dropped, so a decode whose caller went away (deadline, client
/// cancel) stops at its next packet instead of holding a slot.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Thumbnailer {
    pub fn new(config: &ThumbnailConfig, storage: Storage) -> Self {
        let slots = match config.max_concurrent_decodes {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        engine::init();
        Self {
            storage,
            limits: config.limits(),
            config: config.clone(),
            slots: Arc::new(Semaphore::new(slots)),
        }
    }

    pub fn config(&self) -> &ThumbnailConfig {
        &self.config
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Thumbnails of the video at `uri` (path, file://, s3://, http(s)://). FFmpeg reads
    /// it itself with range requests; S3 through a presigned URL.
    pub async fn extract(&self, uri: &str, req: Request) -> Result<Output, ThumbError> {
        let url = self
            .storage
            .readable_url(uri, self.config.presign_ttl)
            .await?;
        self.run(url, uri.to_owned(), req).await
    }

    /// Thumbnails of a local file, named `name` in errors.
    pub async fn extract_path(
        &self,
        path: &Path,
        name: &str,
        req: Request,
    ) -> Result<Output, ThumbError> {
        self.run(path.display().to_string(), name.to_owned(), req)
            .await
    }

    async fn run(&self, url: String, name: String, req: Request) -> Result<Output, ThumbError> {
        let mut permits = vec![
            self.slots
                .acquire()
                .await
                .map_err(|_| ThumbError::Internal("decode slots closed".into()))?,
        ];
        // Extra decoders for a many-position request only from slots nobody waits for:
        // under load each request gets one, idle cores speed up the big ones.
        let items = req.positions.len() + req.sprite.map_or(0, |s| s.frames as usize);
        while items > 1 && permits.len() < self.config.decoders_per_request.max(1) {
            match self.slots.try_acquire() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancel.clone());
        let limits = Limits {
            decoders: permits.len(),
            ..self.limits.clone()
        };
        let out = tokio::task::spawn_blocking(move || {
            engine::extract(&url, &name, &req, &limits, &cancel)
        })
        .await
        .map_err(|e| ThumbError::Internal(format!("decoder task failed: {e}")))??;
        Ok(out)
    }

    /// Writes the images of `out` to `output_uri`: exactly there when it names one image
    /// file and there is one image, otherwise as `thumb-NNN.EXT`, `sprite.EXT` and
    /// `storyboard.vtt` under it.
    pub async fn write(
        &self,
        out: &Output,
        output_uri: &str,
        format: crate::encode::ImageFormat,
    ) -> Result<Written, ThumbError> {
        let loc = Location::parse(output_uri)?;
        let ext = format.extension();
        let single_file = out.thumbnails.len() == 1
            && out.sprite.is_none()
            && Path::new(output_uri)
                .extension()
                .and_then(|e| e.to_str())
                .and_then(crate::encode::ImageFormat::from_name)
                .is_some();
        let mut written = Written::default();
        for (i, t) in out.thumbnails.iter().enumerate() {
            let uri = if single_file {
                output_uri.to_owned()
            } else {
                loc.join(&format!("thumb-{i:03}.{ext}")).to_string()
            };
            self.storage
                .write(&uri, Bytes::from(t.image.clone()))
                .await?;
            written.thumbnails.push(uri);
        }
        if let Some(sp) = &out.sprite {
            let name = format!("sprite.{ext}");
            let uri = loc.join(&name).to_string();
            self.storage
                .write(&uri, Bytes::from(sp.image.clone()))
                .await?;
            let vtt = loc.join("storyboard.vtt").to_string();
            self.storage
                .write(&vtt, Bytes::from(sp.webvtt(&name)))
                .await?;
            written.sprite = Some(uri);
            written.webvtt = Some(vtt);
        }
        Ok(written)
    }
}
