//! Models that live in an object store rather than on this node: `s3://`
//! and the seed's `oss://` model paths (Alibaba OSS speaks the S3 protocol),
//! and uploads received by another node (kept in the shared store,
//! `--store`). Either is copied into this node's data folder first, within
//! the server's model size limit, and the rest of the deploy reads the copy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;
use shared::ServiceConfig;

use crate::control::objects::Objects;
use crate::control::settings::Settings;

use super::{resolve, DeployError};

/// At most this many objects under one model path.
const MAX_OBJECTS: usize = 10_000;

/// Where an upload is kept in the shared store.
pub fn upload_key(sha: &str, name: &str) -> String {
    format!("uploads/{sha}/{name}")
}

fn invalid(path: &str, msg: impl Into<String>) -> DeployError {
    DeployError::invalid(path, msg)
}

/// Makes the model of `cfg` local when it is not: an `s3://`/`oss://` path
/// is downloaded (the local copy is returned), an upload another node
/// received is fetched from the shared store into this node's uploads (then
/// found where `resolve` looks). `None` for everything else.
pub async fn materialize(
    settings: &Settings,
    objects: Option<&Objects>,
    cfg: &ServiceConfig,
) -> Result<Option<PathBuf>, DeployError> {
    let path = cfg.model_path.as_str();
    if path.starts_with("upload://") {
        // A malformed one is left to `resolve`, which says what is wrong.
        if let (Some(objects), Some((sha, name))) = (objects, resolve::upload_parts(path)) {
            fetch_upload(settings, objects, sha, name).await?;
        }
        return Ok(None);
    }
    let (scheme, rest) = match path.split_once("://") {
        Some((s @ ("s3" | "oss"), rest)) => (s, rest),
        _ => return Ok(None),
    };
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(invalid(
            "model_path",
            format!("expected {scheme}://BUCKET/PATH, got '{path}'"),
        ));
    }
    let store = bucket_store(scheme, bucket, cfg.oss_endpoint.as_deref())?;
    download(settings, &store, path, cfg.oss_endpoint.as_deref(), key)
        .await
        .map(Some)
}

/// A client for `bucket`: credentials, region and (for `s3://`) endpoint
/// from the standard `AWS_*` variables; for `oss://`, the config's
/// `oss_endpoint`. The server signs requests with its own credentials, so
/// it sends them only to Alibaba's OSS endpoints or the endpoint it was
/// configured with, never to a host a config names.
fn bucket_store(
    scheme: &str,
    bucket: &str,
    oss_endpoint: Option<&str>,
) -> Result<Objects, DeployError> {
    let label = format!("{scheme}://{bucket}");
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let (Some(endpoint), "oss") = (oss_endpoint, scheme) {
        let configured = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
        let configured = configured.trim_end_matches('/');
        let endpoint = endpoint.trim_end_matches('/');
        if endpoint.contains("://") {
            if endpoint != configured {
                return Err(invalid(
                    "oss_endpoint",
                    format!("'{endpoint}' is not the S3 endpoint this server is configured with (AWS_ENDPOINT_URL); name an Alibaba OSS endpoint like oss-cn-hangzhou.aliyuncs.com"),
                ));
            }
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        } else {
            let alibaba = endpoint.starts_with("oss-") && endpoint.ends_with(".aliyuncs.com");
            if !alibaba {
                return Err(invalid(
                    "oss_endpoint",
                    format!("expected an Alibaba OSS endpoint like oss-cn-hangzhou.aliyuncs.com, got '{endpoint}'"),
                ));
            }
            // OSS answers virtual-hosted requests only: the bucket is part
            // of the host.
            builder = builder
                .with_endpoint(format!("https://{bucket}.{endpoint}"))
                .with_virtual_hosted_style_request(true);
        }
    }
    let s3 = builder
        .build()
        .map_err(|e| invalid("model_path", format!("{label}: {e}")))?;
    Ok(Objects::from_store(Arc::new(s3), label))
}

/// Downloads what `model_path` names — one object, or every object under
/// it — into `models/remote/<digest>/`, the digest covering the path and
/// each object's name, size and ETag: an unchanged model is downloaded once,
/// a changed one again. Returns the local file or folder.
async fn download(
    settings: &Settings,
    store: &Objects,
    model_path: &str,
    oss_endpoint: Option<&str>,
    key: &str,
) -> Result<PathBuf, DeployError> {
    let key = key.trim_end_matches('/');
    let at = |e: crate::control::objects::ObjectsError| invalid("model_path", e.to_string());
    let listed = store.list(key, MAX_OBJECTS).await.map_err(at)?;
    if listed.is_empty() {
        return Err(invalid(
            "model_path",
            format!("nothing at '{model_path}': expected a model file or a folder holding one"),
        ));
    }
    let total: u64 = listed.iter().map(|o| o.size).sum();
    if total > settings.max_model_bytes {
        return Err(invalid(
            "model_path",
            format!(
                "'{model_path}' holds {total} bytes, over this server's limit of {} (--max-model-mib)",
                settings.max_model_bytes
            ),
        ));
    }
    let single = listed.len() == 1 && listed[0].key == key;
    let mut digest = sha2::Sha256::new();
    digest.update(model_path.as_bytes());
    digest.update([0]);
    digest.update(oss_endpoint.unwrap_or_default().as_bytes());
    for o in &listed {
        digest.update([0]);
        digest.update(o.key.as_bytes());
        digest.update(o.size.to_le_bytes());
        digest.update(o.e_tag.as_deref().unwrap_or_default().as_bytes());
    }
    let root = settings.models_dir().join("remote");
    let dir = root.join(hex::encode(digest.finalize()));
    let local = |dir: &Path| match single {
        true => dir.join(&listed[0].parts[0]),
        false => dir.to_path_buf(),
    };
    if dir.is_dir() {
        return Ok(local(&dir));
    }
    let io = |e: std::io::Error| DeployError::Internal(format!("{}: {e}", root.display()));
    tokio::fs::create_dir_all(&root).await.map_err(io)?;
    let tmp = root.join(format!(".tmp-{}", rand::random::<u64>()));
    let fetch = async {
        let mut left = settings.max_model_bytes;
        for o in &listed {
            let target = o.parts.iter().fold(tmp.clone(), |p, part| p.join(part));
            store
                .get_file_within(&o.key, &target, left)
                .await
                .map_err(at)?;
            let got = tokio::fs::metadata(&target).await.map_err(io)?.len();
            left = left.saturating_sub(got);
        }
        Ok(())
    };
    // Another deploy of the same model may finish first.
    super::fetch_into_place(&tmp, &dir, fetch, Path::is_dir).await?;
    Ok(local(&dir))
}

/// Fetches upload `sha/name` from the shared store when this node does not
/// hold it (another node received it), checking its bytes against the
/// SHA-256 that names it.
async fn fetch_upload(
    settings: &Settings,
    objects: &Objects,
    sha: &str,
    name: &str,
) -> Result<(), DeployError> {
    let dir = settings.uploads_dir().join(sha);
    if dir.join(name).exists() {
        return Ok(());
    }
    let key = upload_key(sha, name);
    if !objects.exists(&key).await? {
        return Ok(());
    }
    let io = |e: std::io::Error| DeployError::Internal(format!("{}: {e}", dir.display()));
    tokio::fs::create_dir_all(settings.uploads_dir())
        .await
        .map_err(io)?;
    let tmp = settings
        .uploads_dir()
        .join(format!(".tmp-{}", rand::random::<u64>()));
    let fetch = async {
        objects
            .get_file_within(&key, &tmp, settings.max_model_bytes)
            .await?;
        let file = tmp.clone();
        let got = tokio::task::spawn_blocking(move || optimizer::artifact::sha256_file(&file))
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))?
            .map_err(|e| DeployError::Internal(e.to_string()))?;
        if !got.eq_ignore_ascii_case(sha) {
            return Err(DeployError::Unavailable(format!(
                "upload {sha}/{name} in the shared store is damaged (its bytes hash to {got})"
            )));
        }
        Ok(())
    };
    super::fetch_into_place(&tmp, &dir.join(name), fetch, |_| false).await
}
