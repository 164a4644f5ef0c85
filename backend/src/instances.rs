//! Serving instances: each running service holds `metadata.instance` engine
//! sessions built from its artifact; requests are spread across them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use optimizer::artifact::ArtifactMeta;
use optimizer::engine::{Engine, SessionSettings};
use optimizer::tensor::Tensor;
use shared::api::ModelSignature;

use crate::error::AppError;

pub struct ServicePool {
    pub token: String,
    pub signature: ModelSignature,
    engines: Vec<Mutex<Engine>>,
    next: AtomicUsize,
    /// Inputs the artifact was specialized for, with their only allowed value.
    fixed: std::collections::BTreeMap<String, f64>,
}

impl ServicePool {
    /// Builds `count` sessions of the artifact in `dir`. Threads are split so
    /// instances do not fight for cores.
    pub fn load(dir: &Path, count: u32, token: String) -> Result<ServicePool, String> {
        let meta = ArtifactMeta::read(dir).map_err(|e| e.to_string())?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = (cores / count.max(1) as usize).max(1);
        // The thread count the optimizer measured best, capped by this
        // instance's share of the cores.
        let settings = SessionSettings {
            intra_threads: threads.min(meta.session.intra_threads.max(1)),
            ..meta.session.clone()
        };
        let model = dir.join(&meta.model_file);
        let mut engines = Vec::with_capacity(count as usize);
        for _ in 0..count.max(1) {
            engines.push(Mutex::new(
                Engine::load(&model, &settings).map_err(|e| e.to_string())?,
            ));
        }
        Ok(ServicePool {
            token,
            signature: meta.signature,
            engines,
            next: AtomicUsize::new(0),
            fixed: meta.fixed_inputs,
        })
    }

    pub fn len(&self) -> usize {
        self.engines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.engines.is_empty()
    }

    /// Runs on the next instance in turn, or on any idle one if that is busy.
    pub fn run(
        &self,
        inputs: &[(String, Tensor)],
    ) -> Result<Vec<(String, Tensor)>, optimizer::OptimizerError> {
        for (name, t) in inputs {
            if let Some(&want) = self.fixed.get(name) {
                if let Some(got) = t.data.to_f64().into_iter().find(|v| *v != want) {
                    return Err(optimizer::OptimizerError::BadInput {
                        name: name.clone(),
                        reason: format!("this service was optimized for {name} = {want} (fixed by input_ranges); got {got}"),
                    });
                }
            }
        }
        let n = self.engines.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for k in 0..n {
            if let Ok(mut e) = self.engines[(start + k) % n].try_lock() {
                return e.run(inputs);
            }
        }
        let mut e = self.engines[start]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        e.run(inputs)
    }
}

#[derive(Clone, Default)]
pub struct Instances {
    pools: Arc<RwLock<HashMap<String, Arc<ServicePool>>>>,
}

impl Instances {
    pub fn get(&self, name: &str) -> Option<Arc<ServicePool>> {
        self.pools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Swaps in a new pool; requests in flight on the old one finish on it.
    pub fn put(&self, name: &str, pool: ServicePool) {
        let n = pool.len();
        self.pools
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::new(pool));
        crate::metrics::set_instances(name, n);
    }

    pub fn remove(&self, name: &str) -> bool {
        crate::metrics::set_instances(name, 0);
        self.pools
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
    }
}

/// Loads a pool off the async runtime (session creation is CPU work).
pub async fn load_pool(dir: &Path, count: u32, token: String) -> Result<ServicePool, AppError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || ServicePool::load(&dir, count, token))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(AppError::Internal)
}
