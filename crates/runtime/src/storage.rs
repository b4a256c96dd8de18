//! One storage layer for every URI fargo reads or writes: local paths and `file://`,
//! `s3://bucket/key` (the standard AWS chain: environment keys, profile, the ECS task
//! role through `AWS_CONTAINER_CREDENTIALS_*`, IMDS; `AWS_ENDPOINT_URL` points it at
//! moto or another S3-compatible server) and read-only `http(s)://` with range requests.
//!
//! Built on `object_store`, so each scheme is a store and the rest of fargo sees only
//! [`Storage`] and [`StorageError`].

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::http::{HttpBuilder, HttpStore};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use url::Url;

/// What went wrong, with the URI it went wrong for.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("`{uri}` is not a storage URI: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("`{uri}` does not exist")]
    NotFound { uri: String },
    #[error("`{uri}` is {size} bytes, more than the {max} allowed")]
    TooLarge { uri: String, size: u64, max: u64 },
    #[error("`{uri}`: byte range {start}..{end} is outside the object")]
    RangeOutside { uri: String, start: u64, end: u64 },
    #[error("`{uri}`: access denied: {message}")]
    PermissionDenied { uri: String, message: String },
    #[error("`{uri}`: {op} is not supported for this scheme")]
    Unsupported { uri: String, op: &'static str },
    #[error("`{uri}`: {message}")]
    Backend { uri: String, message: String },
}

impl StorageError {
    /// The gRPC code for this error, the same in every service that reads or writes a URI.
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::NotFound { .. } => tonic::Code::NotFound,
            Self::InvalidUri { .. } | Self::Unsupported { .. } => tonic::Code::InvalidArgument,
            Self::TooLarge { .. } => tonic::Code::ResourceExhausted,
            Self::RangeOutside { .. } => tonic::Code::OutOfRange,
            Self::PermissionDenied { .. } => tonic::Code::PermissionDenied,
            // The store failed or could not be reached: worth retrying.
            Self::Backend { .. } => tonic::Code::Unavailable,
        }
    }

    fn from_store(uri: &str, e: object_store::Error) -> Self {
        let uri = uri.to_owned();
        match e {
            object_store::Error::NotFound { .. } => Self::NotFound { uri },
            object_store::Error::PermissionDenied { source, .. }
            | object_store::Error::Unauthenticated { source, .. } => Self::PermissionDenied {
                uri,
                message: source.to_string(),
            },
            object_store::Error::NotSupported { .. } => Self::Unsupported { uri, op: "this" },
            other => Self::Backend {
                uri,
                message: error_chain(&other),
            },
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = s.source();
    }
    out
}

/// A parsed storage URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An absolute local path (relative paths are resolved against the working directory).
    Local(PathBuf),
    S3 {
        bucket: String,
        key: String,
    },
    Http(Url),
}

impl Location {
    pub fn parse(uri: &str) -> Result<Self, StorageError> {
        let invalid = |reason: &str| StorageError::InvalidUri {
            uri: uri.to_owned(),
            reason: reason.to_owned(),
        };
        if uri.is_empty() {
            return Err(invalid("empty"));
        }
        let Some((scheme, _)) = uri.split_once("://") else {
            let abs = std::path::absolute(uri).map_err(|e| invalid(&e.to_string()))?;
            return Ok(Self::Local(abs));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let url = Url::parse(uri).map_err(|e| invalid(&e.to_string()))?;
                let path = url
                    .to_file_path()
                    .map_err(|()| invalid("a file:// URI needs an absolute path"))?;
                Ok(Self::Local(path))
            }
            "s3" | "s3a" => {
                let rest = &uri[scheme.len() + 3..];
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid("no bucket: use s3://BUCKET/KEY"));
                }
                Ok(Self::S3 {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                })
            }
            "http" | "https" => Ok(Self::Http(
                Url::parse(uri).map_err(|e| invalid(&e.to_string()))?,
            )),
            other => Err(invalid(&format!(
                "unknown scheme `{other}` (use a path, file://, s3:// or http(s)://)"
            ))),
        }
    }

    /// The URI of `name` inside this location taken as a folder or prefix.
    pub fn join(&self, name: &str) -> Self {
        match self {
            Self::Local(p) => Self::Local(p.join(name)),
            Self::S3 { bucket, key } => {
                let key = if key.is_empty() || key.ends_with('/') {
                    format!("{key}{name}")
                } else {
                    format!("{key}/{name}")
                };
                Self::S3 {
                    bucket: bucket.clone(),
                    key,
                }
            }
            Self::Http(u) => {
                let mut u = u.clone();
                if !u.path().ends_with('/') {
                    let p = format!("{}/", u.path());
                    u.set_path(&p);
                }
                Self::Http(u.join(name).unwrap_or(u))
            }
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(p) => write!(f, "{}", p.display()),
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Self::Http(u) => write!(f, "{u}"),
        }
    }
}

/// Size and version of an object; the ETag (or mtime for local files) tells one
/// upload of a key from the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub uri: String,
    pub size: u64,
    pub etag: Option<String>,
    pub last_modified_ms: i64,
}

/// Reads and writes URIs. Cheap to clone; S3 clients are built once per bucket.
#[derive(Debug, Clone)]
pub struct Storage {
    aws_env: Arc<Vec<(String, String)>>,
    local: Arc<LocalFileSystem>,
    s3: Arc<Mutex<HashMap<String, Arc<AmazonS3>>>>,
}

impl Default for Storage {
    fn default() -> Self {
        Self::from_env()
    }
}

impl Storage {
    /// Credentials and endpoint from the process environment (the standard AWS chain).
    pub fn from_env() -> Self {
        Self::with_env(std::env::vars())
    }

    /// As [`Storage::from_env`], with `AWS_*` settings from `env` instead; tests and
    /// `fargo up` give each store the environment its container would have.
    pub fn with_env<I: IntoIterator<Item = (String, String)>>(env: I) -> Self {
        // reqwest is built without a bundled crypto provider; ring is the process default.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let aws_env = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect();
        Self {
            aws_env: Arc::new(aws_env),
            local: Arc::new(LocalFileSystem::new()),
            s3: Arc::default(),
        }
    }

    fn s3(&self, uri: &str, bucket: &str) -> Result<Arc<AmazonS3>, StorageError> {
        let mut map = self.s3.lock().map_err(|_| StorageError::Backend {
            uri: uri.to_owned(),
            message: "storage client cache poisoned".into(),
        })?;
        if let Some(s) = map.get(bucket) {
            return Ok(s.clone());
        }
        let mut b = AmazonS3Builder::new().with_bucket_name(bucket);
        let mut endpoint_http = false;
        for (k, v) in self.aws_env.iter() {
            if let Ok(key) = k.to_ascii_lowercase().parse() {
                b = b.with_config(key, v);
            }
            if (k == "AWS_ENDPOINT_URL" || k == "AWS_ENDPOINT_URL_S3") && v.starts_with("http://") {
                endpoint_http = true;
            }
        }
        if endpoint_http {
            // A plain-HTTP endpoint is a local S3 twin (moto, MinIO); allow it explicitly.
            b = b.with_allow_http(true);
        }
        let store = Arc::new(b.build().map_err(|e| StorageError::from_store(uri, e))?);
        map.insert(bucket.to_owned(), store.clone());
        Ok(store)
    }

    /// The store and in-store path for `uri`.
    fn resolve(&self, uri: &str) -> Result<(Arc<dyn ObjectStore>, ObjPath), StorageError> {
        match Location::parse(uri)? {
            Location::Local(p) => Ok((self.local.clone(), local_path(uri, &p)?)),
            Location::S3 { bucket, key } => {
                if key.is_empty() {
                    return Err(StorageError::InvalidUri {
                        uri: uri.to_owned(),
                        reason: "no key after the bucket".into(),
                    });
                }
                let store: Arc<dyn ObjectStore> = self.s3(uri, &bucket)?;
                Ok((store, ObjPath::from(key)))
            }
            Location::Http(u) => {
                let base = format!("{}://{}", u.scheme(), u.authority());
                let store: HttpStore = HttpBuilder::new()
                    .with_url(base)
                    .build()
                    .map_err(|e| StorageError::from_store(uri, e))?;
                let path =
                    ObjPath::from_url_path(u.path()).map_err(|e| StorageError::InvalidUri {
                        uri: uri.to_owned(),
                        reason: e.to_string(),
                    })?;
                Ok((Arc::new(store), path))
            }
        }
    }

    /// Size, ETag and modification time of one object.
    pub async fn head(&self, uri: &str) -> Result<ObjectInfo, StorageError> {
        let (store, path) = self.resolve(uri)?;
        let meta = store
            .head(&path)
            .await
            .map_err(|e| StorageError::from_store(uri, e))?;
        Ok(ObjectInfo {
            uri: uri.to_owned(),
            size: meta.size,
            etag: meta.e_tag,
            last_modified_ms: meta.last_modified.timestamp_millis(),
        })
    }

    pub async fn size(&self, uri: &str) -> Result<u64, StorageError> {
        Ok(self.head(uri).await?.size)
    }

    /// The whole object, refused with [`StorageError::TooLarge`] past `max_bytes`.
    pub async fn read_all(&self, uri: &str, max_bytes: u64) -> Result<Bytes, StorageError> {
        let (store, path) = self.resolve(uri)?;
        let got = store
            .get(&path)
            .await
            .map_err(|e| StorageError::from_store(uri, e))?;
        let size = got.meta.size;
        if size > max_bytes {
            return Err(StorageError::TooLarge {
                uri: uri.to_owned(),
                size,
                max: max_bytes,
            });
        }
        // The size in the metadata can lie for HTTP (no Content-Length); count as we go.
        let mut stream = got.into_stream();
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| StorageError::from_store(uri, e))?
        {
            if (buf.len() + chunk.len()) as u64 > max_bytes {
                return Err(StorageError::TooLarge {
                    uri: uri.to_owned(),
                    size: (buf.len() + chunk.len()) as u64,
                    max: max_bytes,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    }

    /// Bytes `range` of the object (an HTTP `Range` request for S3 and http(s)).
    pub async fn read_range(&self, uri: &str, range: Range<u64>) -> Result<Bytes, StorageError> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let (store, path) = self.resolve(uri)?;
        store
            .get_range(&path, range.clone())
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => StorageError::NotFound {
                    uri: uri.to_owned(),
                },
                e if e.to_string().contains("range") || e.to_string().contains("Range") => {
                    StorageError::RangeOutside {
                        uri: uri.to_owned(),
                        start: range.start,
                        end: range.end,
                    }
                }
                e => StorageError::from_store(uri, e),
            })
    }

    /// Writes the whole object, creating local parent folders as needed.
    pub async fn write(&self, uri: &str, bytes: Bytes) -> Result<(), StorageError> {
        if let Location::Http(_) = Location::parse(uri)? {
            return Err(StorageError::Unsupported {
                uri: uri.to_owned(),
                op: "writing",
            });
        }
        let (store, path) = self.resolve(uri)?;
        store
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| StorageError::from_store(uri, e))?;
        Ok(())
    }

    /// Every object under `prefix` (a local folder, recursively, or an S3 prefix).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let loc = Location::parse(prefix)?;
        let (store, path, render): (Arc<dyn ObjectStore>, Option<ObjPath>, RenderUri) = match &loc {
            Location::Local(p) => {
                if !p.is_dir() {
                    return Err(StorageError::NotFound {
                        uri: prefix.to_owned(),
                    });
                }
                (
                    self.local.clone(),
                    Some(local_path(prefix, p)?),
                    Box::new(|o: &ObjPath| format!("/{o}")),
                )
            }
            Location::S3 { bucket, key } => {
                let b = bucket.clone();
                let p = (!key.is_empty()).then(|| ObjPath::from(key.as_str()));
                (
                    self.s3(prefix, bucket)?,
                    p,
                    Box::new(move |o: &ObjPath| format!("s3://{b}/{o}")),
                )
            }
            Location::Http(_) => {
                return Err(StorageError::Unsupported {
                    uri: prefix.to_owned(),
                    op: "listing",
                });
            }
        };
        let metas: Vec<_> = store
            .list(path.as_ref())
            .try_collect()
            .await
            .map_err(|e| StorageError::from_store(prefix, e))?;
        Ok(metas
            .into_iter()
            .map(|m| ObjectInfo {
                uri: render(&m.location),
                size: m.size,
                etag: m.e_tag,
                last_modified_ms: m.last_modified.timestamp_millis(),
            })
            .collect())
    }

    /// Something a library that does its own I/O (FFmpeg) can open: the local path, or
    /// an HTTP URL (presigned for S3, valid for `expires_in`) it reads with range requests.
    pub async fn readable_url(
        &self,
        uri: &str,
        expires_in: Duration,
    ) -> Result<String, StorageError> {
        match Location::parse(uri)? {
            Location::Local(p) => {
                if !p.exists() {
                    return Err(StorageError::NotFound {
                        uri: uri.to_owned(),
                    });
                }
                Ok(p.display().to_string())
            }
            Location::Http(u) => Ok(u.to_string()),
            Location::S3 { bucket, key } => {
                let store = self.s3(uri, &bucket)?;
                let path = ObjPath::from(key);
                // Fail here with NOT_FOUND rather than as an HTTP 404 inside the decoder.
                store
                    .head(&path)
                    .await
                    .map_err(|e| StorageError::from_store(uri, e))?;
                let url = store
                    .signed_url(http::Method::GET, &path, expires_in)
                    .await
                    .map_err(|e| StorageError::from_store(uri, e))?;
                Ok(url.to_string())
            }
        }
    }
}

/// Turns a listed in-store path back into the URI a caller can pass in again.
type RenderUri = Box<dyn Fn(&ObjPath) -> String + Send>;

fn local_path(uri: &str, p: &FsPath) -> Result<ObjPath, StorageError> {
    ObjPath::from_absolute_path(p).map_err(|e| StorageError::InvalidUri {
        uri: uri.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            Location::parse("s3://b/k/x.mp4").unwrap(),
            Location::S3 {
                bucket: "b".into(),
                key: "k/x.mp4".into()
            }
        );
        assert_eq!(
            Location::parse("file:///tmp/a.png").unwrap(),
            Location::Local("/tmp/a.png".into())
        );
        assert!(matches!(
            Location::parse("/tmp/a b.png").unwrap(),
            Location::Local(_)
        ));
        assert!(matches!(
            Location::parse("https://h/x").unwrap(),
            Location::Http(_)
        ));
        assert!(matches!(
            Location::parse("ftp://h/x"),
            Err(StorageError::InvalidUri { .. })
        ));
        assert!(matches!(
            Location::parse("s3:///k"),
            Err(StorageError::InvalidUri { .. })
        ));
        assert_eq!(
            Location::parse("s3://b/out")
                .unwrap()
                .join("a.png")
                .to_string(),
            "s3://b/out/a.png"
        );
    }

    #[tokio::test]
    async fn local_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let st = Storage::with_env(Vec::new());
        let f = dir.path().join("sub/dir/a.bin");
        let uri = format!("file://{}", f.display());
        st.write(&uri, Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        assert_eq!(st.size(&uri).await.unwrap(), 10);
        let plain = f.display().to_string();
        assert_eq!(&st.read_all(&plain, 100).await.unwrap()[..], b"0123456789");
        assert_eq!(&st.read_range(&plain, 2..5).await.unwrap()[..], b"234");
        assert!(matches!(
            st.read_all(&plain, 5).await,
            Err(StorageError::TooLarge {
                size: 10,
                max: 5,
                ..
            })
        ));
        let missing = dir.path().join("nope").display().to_string();
        assert!(matches!(
            st.read_all(&missing, 5).await,
            Err(StorageError::NotFound { .. })
        ));
        assert!(matches!(
            st.size(&missing).await,
            Err(StorageError::NotFound { .. })
        ));
        let listed = st.list(&dir.path().display().to_string()).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].uri, plain);
    }
}
