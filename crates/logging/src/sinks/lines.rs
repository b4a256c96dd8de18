//! JSON lines to stdout or to a file rotated by size, keeping `keep` old files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Outcome, SinkError};
use crate::pipeline::Batch;
use crate::render::render;

enum Target {
    Stdout,
    File(RotatingFile),
}

/// Rendering and writing happen on a blocking thread, so a slow disk or a full
/// pipe never stalls the receiver's async workers.
pub struct Lines {
    state: Option<(Target, Vec<u8>)>,
    kind: &'static str,
}

impl Lines {
    pub fn stdout() -> Self {
        Self {
            state: Some((Target::Stdout, Vec::new())),
            kind: "stdout",
        }
    }

    pub fn file(f: RotatingFile) -> Self {
        Self {
            state: Some((Target::File(f), Vec::new())),
            kind: "file",
        }
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub async fn export(&mut self, batches: &[Arc<Batch>]) -> Result<Outcome, SinkError> {
        let Some((mut target, mut buf)) = self.state.take() else {
            return Err(SinkError::permanent("writer lost after a failed write"));
        };
        let batches = batches.to_vec();
        let joined = tokio::task::spawn_blocking(move || {
            buf.clear();
            for b in &batches {
                render(&b.payload, &mut buf, |_, _| {});
            }
            let r = match &mut target {
                Target::Stdout => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&buf).and_then(|()| out.flush())
                }
                Target::File(f) => f.write(&buf),
            };
            // Keep the buffer's capacity unless one giant batch blew it up.
            if buf.capacity() > 16 * 1024 * 1024 {
                buf = Vec::new();
            }
            (target, buf, r)
        })
        .await;
        match joined {
            Ok((target, buf, r)) => {
                self.state = Some((target, buf));
                // A full disk or a closed pipe may clear up; retry until the deadline.
                r.map_err(|e| SinkError::retryable(format!("write failed: {e}")))?;
                Ok(Outcome::default())
            }
            Err(e) => Err(SinkError::permanent(format!("writer thread failed: {e}"))),
        }
    }

    pub async fn close(&mut self) -> Result<(), SinkError> {
        if let Some((Target::File(f), _)) = &mut self.state {
            f.sync()
                .map_err(|e| SinkError::permanent(format!("sync failed: {e}")))?;
        }
        Ok(())
    }
}

/// A file that moves to `path.1` once it reaches `max_bytes` (older ones shift to
/// `.2`, ... and past `keep` are deleted).
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
}

impl RotatingFile {
    pub fn open(path: PathBuf, max_bytes: u64, keep: usize) -> Result<Self, crate::Error> {
        let err = |e| crate::Error::File {
            path: path.clone(),
            source: e,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = open_append(&path).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        Ok(Self {
            path,
            max_bytes: max_bytes.max(1),
            keep,
            file,
            size,
        })
    }

    /// Writes `buf` whole; rotates first when it would take the file past the limit.
    pub fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            remove_if_exists(&self.path)?;
        } else {
            remove_if_exists(&self.rotated(self.keep))?;
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }

    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        self.file.sync_data()
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
