//! The object store nodes share (`whet serve --store URL`): an
//! S3-compatible bucket (`s3://BUCKET/PREFIX`, configured from the standard
//! `AWS_*` variables) or a folder. Sealed artifacts are published there under
//! `artifacts/<key>/`, and a node that serves an artifact it did not build
//! fetches it into its own data folder, where the seal is checked before the
//! copy is used. Without `--store` there is none: the data folder is the
//! only copy, as on one machine.
//!
//! Files travel in chunks (multipart uploads, streamed downloads), so memory
//! stays bounded whatever an artifact's size.

use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The store's own errors: what failed, and where.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("{0}")]
    Url(String),
    #[error("object store {store}: {what}: {source}")]
    Store {
        store: String,
        what: String,
        source: object_store::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Upload chunk (and multipart part) size.
const CHUNK: usize = 8 << 20;

#[derive(Clone)]
pub struct Objects {
    inner: Arc<dyn ObjectStore>,
    /// `s3://bucket/prefix` or the folder, for messages.
    label: String,
}

fn io(path: &Path, source: std::io::Error) -> ObjectsError {
    ObjectsError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl Objects {
    /// `s3://BUCKET[/PREFIX]` or a folder path (created when missing).
    pub fn open(url: &str) -> Result<Objects, ObjectsError> {
        let inner: Arc<dyn ObjectStore> = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ObjectsError::Url(format!(
                    "--store {url}: expected s3://BUCKET/PREFIX"
                )));
            }
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| ObjectsError::Url(format!("--store {url}: {e}")))?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
            }
        } else if url.contains("://") {
            return Err(ObjectsError::Url(format!(
                "--store {url}: expected s3://BUCKET/PREFIX or a folder"
            )));
        } else {
            std::fs::create_dir_all(url).map_err(|e| io(Path::new(url), e))?;
            Arc::new(
                object_store::local::LocalFileSystem::new_with_prefix(url)
                    .map_err(|e| ObjectsError::Url(format!("--store {url}: {e}")))?,
            )
        };
        Ok(Objects {
            inner,
            label: url.to_string(),
        })
    }

    /// A store already built (a model path's bucket), named `label` in messages.
    pub fn from_store(inner: Arc<dyn ObjectStore>, label: String) -> Objects {
        Objects { inner, label }
    }

    /// The objects under `prefix/` (or the object `prefix` itself when it is
    /// one), as (key, path below `prefix` in parts, size, ETag), sorted by key;
    /// at most `max` of them (more is an error). Names whose parts would leave a
    /// folder (`.`, `..`, empty) are refused.
    pub async fn list(&self, prefix: &str, max: usize) -> Result<Vec<Listed>, ObjectsError> {
        let base = ObjectPath::from(prefix);
        let mut out = vec![];
        let mut listing = self.inner.list(Some(&base));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.err(format!("listing {prefix}/"), e))?;
            let parts: Vec<String> = meta
                .location
                .prefix_match(&base)
                .map(|parts| parts.map(|p| p.as_ref().to_string()).collect())
                .unwrap_or_default();
            if parts.is_empty() {
                continue;
            }
            if parts.iter().any(|p| p == ".." || p == "." || p.is_empty()) {
                return Err(ObjectsError::Url(format!(
                    "{}: object '{}' has a name that would leave its folder",
                    self.label, meta.location
                )));
            }
            if out.len() == max {
                return Err(ObjectsError::Url(format!(
                    "{}: more than {max} objects under {prefix}/",
                    self.label
                )));
            }
            out.push(Listed {
                key: meta.location.to_string(),
                parts,
                size: meta.size,
                e_tag: meta.e_tag,
            });
        }
        if out.is_empty() && !prefix.is_empty() {
            // Not a folder: maybe one object.
            match self.inner.head(&base).await {
                Ok(meta) => out.push(Listed {
                    key: meta.location.to_string(),
                    parts: vec![meta.location.filename().unwrap_or("model").to_string()],
                    size: meta.size,
                    e_tag: meta.e_tag,
                }),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(format!("looking for {prefix}"), e)),
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn err(&self, what: String, source: object_store::Error) -> ObjectsError {
        ObjectsError::Store {
            store: self.label.clone(),
            what,
            source,
        }
    }

    /// Uploads every file of `dir` under `prefix/`, the file named `last`
    /// after all the others: a reader that finds `last` finds the rest.
    pub async fn put_dir(&self, prefix: &str, dir: &Path, last: &str) -> Result<(), ObjectsError> {
        let mut files = vec![];
        list_files(dir, Path::new(""), &mut files)?;
        files.sort_by_key(|rel| rel.as_os_str() == last);
        for rel in files {
            let key = format!("{prefix}/{}", rel.to_string_lossy());
            self.put_file(&key, &dir.join(&rel)).await?;
        }
        Ok(())
    }

    /// Uploads one file in chunks.
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<(), ObjectsError> {
        let location = ObjectPath::from(key);
        let mut f = tokio::fs::File::open(file).await.map_err(|e| io(file, e))?;
        let upload = self
            .inner
            .put_multipart(&location)
            .await
            .map_err(|e| self.err(format!("uploading {key}"), e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = f.read(&mut buf).await.map_err(|e| io(file, e))?;
            if n == 0 {
                break;
            }
            w.wait_for_capacity(2)
                .await
                .map_err(|e| self.err(format!("uploading {key}"), e))?;
            w.write(&buf[..n]);
        }
        w.finish()
            .await
            .map_err(|e| self.err(format!("uploading {key}"), e))?;
        Ok(())
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> Result<bool, ObjectsError> {
        match self.inner.head(&ObjectPath::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(format!("looking for {key}"), e)),
        }
    }

    /// Downloads every object under `prefix/` into `dir` (created), keeping
    /// their relative paths. Names that would leave `dir` are refused.
    pub async fn get_dir(&self, prefix: &str, dir: &Path) -> Result<usize, ObjectsError> {
        let base = ObjectPath::from(prefix);
        let mut listing = self.inner.list(Some(&base));
        let mut n = 0;
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.err(format!("listing {prefix}/"), e))?;
            let rel: Vec<String> = meta
                .location
                .prefix_match(&base)
                .map(|parts| parts.map(|p| p.as_ref().to_string()).collect())
                .unwrap_or_default();
            if rel.is_empty() || rel.iter().any(|p| p == ".." || p == "." || p.is_empty()) {
                continue;
            }
            let target = rel.iter().fold(dir.to_path_buf(), |p, part| p.join(part));
            self.get_file(meta.location.as_ref(), &target).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Downloads one object to `file` (its folder created), streamed.
    pub async fn get_file(&self, key: &str, file: &Path) -> Result<(), ObjectsError> {
        self.get_file_within(key, file, u64::MAX).await
    }

    /// As [`Objects::get_file`], refusing an object of more than `max` bytes
    /// (counted as they arrive: the listing's size is the server's word).
    pub async fn get_file_within(
        &self,
        key: &str,
        file: &Path,
        max: u64,
    ) -> Result<(), ObjectsError> {
        if let Some(parent) = file.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io(parent, e))?;
        }
        let got = self
            .inner
            .get(&ObjectPath::from(key))
            .await
            .map_err(|e| self.err(format!("downloading {key}"), e))?;
        let mut stream = got.into_stream();
        let mut f = tokio::fs::File::create(file)
            .await
            .map_err(|e| io(file, e))?;
        let mut got = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.err(format!("downloading {key}"), e))?;
            got += chunk.len() as u64;
            if got > max {
                return Err(ObjectsError::Url(format!(
                    "{}: {key} is larger than the {max} bytes allowed",
                    self.label
                )));
            }
            f.write_all(&chunk).await.map_err(|e| io(file, e))?;
        }
        f.sync_all().await.map_err(|e| io(file, e))?;
        Ok(())
    }
}

/// One object of a listing.
pub struct Listed {
    pub key: String,
    /// Its path below the listed prefix, in parts.
    pub parts: Vec<String>,
    pub size: u64,
    pub e_tag: Option<String>,
}

fn list_files(
    root: &Path,
    rel: &Path,
    out: &mut Vec<std::path::PathBuf>,
) -> Result<(), ObjectsError> {
    let dir = root.join(rel);
    for e in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
        let e = e.map_err(|e| io(&dir, e))?;
        let ty = e.file_type().map_err(|err| io(&e.path(), err))?;
        let r = rel.join(e.file_name());
        if ty.is_dir() {
            list_files(root, &r, out)?;
        } else if ty.is_file() {
            out.push(r);
        }
    }
    Ok(())
}
