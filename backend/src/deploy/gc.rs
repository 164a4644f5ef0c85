//! Collecting what nothing uses any more, so the data folder does not grow
//! for ever: uploads no config names, unpacked and downloaded models no
//! service or version uses, artifacts no service, version or placement
//! names, build and upload folders a crash left behind, and log lines past
//! their retention. `whet gc` runs it now; the server runs it every
//! `--gc-period`.
//!
//! Everything is looked up against the database first (every node's
//! services, versions, placements and queued jobs), and nothing younger
//! than the grace period is touched: an upload waits that long for the
//! create that names it, a fresh artifact for the deploy that records it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use shared::api::GcReport;

use crate::control::settings::GcPolicy as Policy;
use crate::control::store::Referenced;
use crate::deploy::{DeployError, Deployer};

/// Runs one sweep.
pub async fn collect(state: &Deployer, policy: Policy) -> Result<GcReport, DeployError> {
    let before = humantime::format_rfc3339_millis(
        SystemTime::now()
            .checked_sub(policy.log_retention)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    )
    .to_string();
    let log_lines_removed = state
        .store
        .prune_logs(&before, policy.log_max_lines.max(1))
        .await?;
    let refs = state.store.referenced().await?;
    // A build runs for up to the optimizer's timeout without finishing
    // its folder: its temporary folder is kept that long at least.
    let build_grace = policy
        .grace
        .max(state.settings.optimize_timeout + state.settings.job_lease);
    let (settings, grace) = (state.settings.clone(), policy.grace);
    let (removed, bytes_freed, gone_artifacts) = tokio::task::spawn_blocking(move || {
        let found = candidates(&settings, &refs);
        let mut removed = vec![];
        let mut bytes = 0u64;
        let mut artifacts = vec![];
        for c in found {
            let keep_for = if c.building { build_grace } else { grace };
            if age(&c.path) < keep_for {
                continue;
            }
            let size = size_of(&c.path);
            let gone = if c.path.is_dir() {
                std::fs::remove_dir_all(&c.path)
            } else {
                std::fs::remove_file(&c.path)
            };
            match gone {
                Ok(()) => {
                    bytes += size;
                    removed.push(
                        c.path
                            .strip_prefix(&settings.data_dir)
                            .unwrap_or(&c.path)
                            .display()
                            .to_string(),
                    );
                    if let Some(key) = c.artifact {
                        artifacts.push(key);
                    }
                }
                Err(e) => tracing::warn!("collecting {}: {e}", c.path.display()),
            }
        }
        (removed, bytes, artifacts)
    })
    .await
    .map_err(|e| DeployError::Internal(e.to_string()))?;
    for key in gone_artifacts {
        state.store.delete_artifact(&key).await?;
    }
    if !removed.is_empty() || log_lines_removed > 0 {
        tracing::info!(
            files = removed.len(),
            bytes = bytes_freed,
            log_lines = log_lines_removed,
            "collected what nothing uses"
        );
    }
    Ok(GcReport {
        removed,
        bytes_freed,
        log_lines_removed,
    })
}

/// Sweeps every `--gc-period` with the server's policy, for as long as it
/// runs.
pub fn spawn_collector(state: &Deployer) {
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(state.settings.gc_period).await;
            if let Err(e) = collect(&state, state.settings.gc).await {
                tracing::warn!("collecting unused files: {e}");
            }
        }
    });
}

/// Something that may be collected.
struct Candidate {
    path: PathBuf,
    /// A build or upload under way may still be writing it.
    building: bool,
    /// The artifact key whose row goes with it.
    artifact: Option<String>,
}

/// What nothing refers to, in the data folder's uploads, models and
/// artifacts (the caller checks ages). Folders the user named (`file://`
/// roots) are never looked at.
fn candidates(settings: &crate::control::Settings, refs: &Referenced) -> Vec<Candidate> {
    let used = |p: &Path| refs.model_dirs.iter().any(|d| Path::new(d).starts_with(p));
    let mut out = vec![];
    let mut each = |dir: PathBuf, f: &mut dyn FnMut(&str, PathBuf) -> Option<Candidate>| {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(c) = f(&name, e.path()) {
                out.push(c);
            }
        }
    };
    let tmp = |path: PathBuf| Candidate {
        path,
        building: true,
        artifact: None,
    };
    let plain = |path: PathBuf| Candidate {
        path,
        building: false,
        artifact: None,
    };
    // uploads/<sha>/<name>, and `.tmp-*` files being received.
    each(settings.uploads_dir(), &mut |name, path| {
        if name.starts_with(".tmp-") {
            Some(tmp(path))
        } else if refs.uploads.contains(name) || used(&path) {
            None
        } else {
            Some(plain(path))
        }
    });
    // models/<sha> (an unpacked upload), models/remote/<digest>.
    each(settings.models_dir(), &mut |name, path| {
        // (`tf/` holds TensorFlow imports, a cache keyed by content;
        // `remote/` is looked into below.)
        let kept = name == "tf" || name == "remote" || refs.uploads.contains(name) || used(&path);
        (!kept).then(|| plain(path))
    });
    each(settings.models_dir().join("remote"), &mut |_, path| {
        (!used(&path)).then(|| plain(path))
    });
    // artifacts/<key>, and `.tmp-*` builds.
    each(settings.artifacts_dir(), &mut |name, path| {
        if name.starts_with(".tmp-") {
            Some(tmp(path))
        } else if refs.artifacts.contains(name) {
            None
        } else {
            Some(Candidate {
                path,
                building: false,
                artifact: Some(name.to_string()),
            })
        }
    });
    out
}

/// How long ago `path` was last written (zero when that cannot be read, so
/// it is kept).
fn age(path: &Path) -> Duration {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or(Duration::ZERO)
}

/// Bytes of the files under `path` (links not followed).
pub fn size_of(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| size_of(&e.path())).sum())
        .unwrap_or(0)
}
