//! Where a node finds an artifact: its own data folder, or the object store
//! the nodes share (`--store`), from which it is fetched and checked against
//! its seal before anything uses it. A node publishes what it builds there
//! before the database records it, so an artifact the database names can be
//! had by every node.

use std::path::PathBuf;

use optimizer::artifact;

use super::{DeployError, Deployer};

/// The artifact's objects: `artifacts/<key>/…`.
fn prefix(key: &str) -> String {
    format!("artifacts/{key}")
}

/// Publishes a sealed artifact folder to the shared store, when there is
/// one; its seal goes last, so a node that finds the seal finds every file.
pub async fn publish(
    state: &Deployer,
    key: &str,
    dir: &std::path::Path,
) -> Result<(), DeployError> {
    if let Some(objects) = &state.objects {
        objects
            .put_dir(&prefix(key), dir, artifact::SEAL_FILE)
            .await?;
    }
    Ok(())
}

/// The sealed local folder of artifact `key`: this node's copy, else one
/// fetched from the shared store (whole, then verified against its seal,
/// then renamed into place). `None` when neither has it.
pub async fn local(state: &Deployer, key: &str) -> Result<Option<PathBuf>, DeployError> {
    let dir = state.settings.artifacts_dir().join(key);
    if dir.join(artifact::SEAL_FILE).is_file() {
        return Ok(Some(dir));
    }
    let Some(objects) = &state.objects else {
        return Ok(None);
    };
    let seal = format!("{}/{}", prefix(key), artifact::SEAL_FILE);
    if !objects.exists(&seal).await? {
        return Ok(None);
    }
    let tmp = super::build_dir(state, key);
    let fetch = async {
        objects.get_dir(&prefix(key), &tmp).await?;
        let t = tmp.clone();
        tokio::task::spawn_blocking(move || artifact::verify(&t))
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))?
            .map_err(|e| {
                DeployError::Internal(format!(
                    "artifact {key} fetched from the shared store fails its seal: {e}"
                ))
            })
            .map(drop)
    };
    super::fetch_into_place(&tmp, &dir, fetch, |d| d.join(artifact::SEAL_FILE).is_file()).await?;
    Ok(Some(dir))
}
