//! Serving instances: each running service holds `metadata.instance` engine
//! sessions built from its artifact, behind one request queue whose workers
//! spread requests across them and batch them when the config asks
//! (`batcher.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use optimizer::artifact::ArtifactMeta;
use optimizer::engine::{check_inputs, Engine, EngineKind, ExecutionProvider, SessionSettings};

use crate::batcher::DynEngine;
use optimizer::tensor::Tensor;
use optimizer::OptimizerError;
use shared::api::ModelSignature;
use shared::config::Rpc;

use crate::batcher::{BatchError, BatchOptions, Batcher, Done};
use crate::error::AppError;

pub struct ServicePool {
    pub name: String,
    pub token: String,
    pub signature: ModelSignature,
    /// What requests are checked against: the signature the engines report.
    engine_signature: ModelSignature,
    instances: usize,
    batcher: Batcher,
    /// Inputs the artifact was specialized for, with their only allowed value.
    fixed: std::collections::BTreeMap<String, f64>,
}

/// One engine of the artifact's kind. TorchScript needs the `torch` feature;
/// without it the artifact is refused with how to get it.
fn load_engine(
    meta: &ArtifactMeta,
    model: &Path,
    settings: &SessionSettings,
) -> Result<DynEngine, String> {
    match meta.engine {
        EngineKind::OnnxRuntime => Ok(Box::new(
            Engine::load(model, settings).map_err(|e| e.to_string())?,
        )),
        #[cfg(feature = "torch")]
        EngineKind::TorchScript => Ok(Box::new(
            optimizer::torch::TorchEngine::load_on(
                model,
                meta.signature.clone(),
                meta.torch
                    .unwrap_or(optimizer::artifact::TorchSettings::INFERENCE),
                settings.provider,
            )
            .map_err(|e| e.to_string())?,
        )),
        #[cfg(not(feature = "torch"))]
        EngineKind::TorchScript => Err(optimizer::engine::TORCH_FEATURE_HINT.to_string()),
    }
}

impl ServicePool {
    /// Builds `count` sessions of the artifact in `dir` for service `name`,
    /// queued and batched as `rpc` says. Threads are split so instances do
    /// not fight for cores. `serve_on` is the CUDA device of the worker
    /// that serves a GPU artifact: the artifact is keyed by GPU model, not
    /// by device, so one built on `cuda:0` may be served on `cuda:1`.
    pub fn load(
        dir: &Path,
        name: &str,
        count: u32,
        token: String,
        rpc: Option<&Rpc>,
        serve_on: Option<ExecutionProvider>,
    ) -> Result<ServicePool, String> {
        let meta = ArtifactMeta::read(dir).map_err(|e| e.to_string())?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = (cores / count.max(1) as usize).max(1);
        // The thread count the optimizer measured best, capped by this
        // instance's share of the cores.
        let settings = SessionSettings {
            intra_threads: threads.min(meta.session.intra_threads.max(1)),
            provider: serving_provider(meta.session.provider, serve_on)?,
            ..meta.session.clone()
        };
        let model = dir.join(&meta.model_file);
        let mut engines: Vec<DynEngine> = Vec::with_capacity(count as usize);
        for _ in 0..count.max(1) {
            engines.push(load_engine(&meta, &model, &settings)?);
        }
        ServicePool::from_engines(
            name,
            engines,
            meta.signature,
            meta.fixed_inputs,
            token,
            BatchOptions::from_rpc(rpc),
        )
    }

    /// A pool over engines already built (at least one).
    pub fn from_engines(
        name: &str,
        engines: Vec<DynEngine>,
        signature: ModelSignature,
        fixed: std::collections::BTreeMap<String, f64>,
        token: String,
        opts: BatchOptions,
    ) -> Result<ServicePool, String> {
        let Some(first) = engines.first() else {
            return Err("a service needs at least one instance".into());
        };
        let engine_signature = first.signature().clone();
        let instances = engines.len();
        let batcher = Batcher::start(name, engines, &engine_signature, opts)?;
        Ok(ServicePool {
            name: name.to_string(),
            token,
            signature,
            engine_signature,
            instances,
            batcher,
            fixed,
        })
    }

    pub fn len(&self) -> usize {
        self.instances
    }

    pub fn is_empty(&self) -> bool {
        self.instances == 0
    }

    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    /// A deploy-log line when the config asks for dynamic batching: its
    /// settings, or why this model cannot be batched.
    pub fn batching_note(&self) -> Option<String> {
        let o = self.batcher.options();
        if !o.batching {
            return None;
        }
        if self.batcher.merges() {
            return Some(format!(
                "[OK] Dynamic batching: up to {} rows per engine call, {} ms to fill a batch, {} queued requests per instance",
                o.max_batch_size,
                o.max_batch_timeout.as_millis(),
                o.max_queue_size
            ));
        }
        let sig = &self.engine_signature;
        let fixed = sig
            .inputs
            .iter()
            .chain(&sig.outputs)
            .find(|t| t.shape.first().is_none_or(|&d| d >= 0));
        let what = fixed
            .map(|t| {
                format!(
                    "'{}' has shape {}",
                    t.name,
                    optimizer::engine::fmt_dims(&t.shape)
                )
            })
            .unwrap_or_else(|| "the model has no inputs".into());
        Some(format!(
            "[OK] Dynamic batching is off for this model: {what}, with no dynamic dimension 0 to stack requests on, so requests run one by one. A single input_shapes group specializes the graph to that batch size; declare each batch size served (e.g. 1 and 16) to keep it dynamic"
        ))
    }

    /// Refuses, before queueing, what the engine would refuse (names,
    /// datatypes, shapes) and any value other than the one a fixed input
    /// was specialized for.
    pub fn check(&self, inputs: &[(String, Tensor)]) -> Result<(), OptimizerError> {
        for (name, t) in inputs {
            if let Some(&want) = self.fixed.get(name) {
                if let Some(got) = t.data.to_f64().into_iter().find(|v| *v != want) {
                    return Err(OptimizerError::BadInput {
                        name: name.clone(),
                        reason: format!("this service was optimized for {name} = {want} (fixed by input_ranges); got {got}"),
                    });
                }
            }
        }
        check_inputs(&self.engine_signature, inputs).map(|_| ())
    }

    /// Checks `inputs`, queues them and waits for their outputs.
    pub async fn run(&self, inputs: Vec<(String, Tensor)>) -> Result<Done, BatchError> {
        self.check(&inputs).map_err(BatchError::Engine)?;
        self.batcher.submit(inputs).await
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
        let old = self
            .pools
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), Arc::new(pool));
        crate::metrics::set_instances(name, n);
        // The old pool's workers stop once its last request has finished
        // and this (or that request's) reference is gone.
        drop(old);
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

/// Where an artifact built for `stored` is served: a GPU artifact on the
/// serving worker's device (`serve_on`), a CPU artifact on the CPU. A GPU
/// artifact with no device to serve it on is an error, never a CPU session.
fn serving_provider(
    stored: ExecutionProvider,
    serve_on: Option<ExecutionProvider>,
) -> Result<ExecutionProvider, String> {
    match (stored, serve_on) {
        (ExecutionProvider::Cpu, _) => Ok(ExecutionProvider::Cpu),
        (ExecutionProvider::Cuda { .. }, Some(d @ ExecutionProvider::Cuda { .. })) => Ok(d),
        (ExecutionProvider::Cuda { device_id }, _) => Err(format!(
            "the artifact was built for a GPU (cuda:{device_id}) and no GPU of its resource group is available to serve it"
        )),
    }
}

/// Loads a pool off the async runtime (session creation is CPU work).
pub async fn load_pool(
    dir: &Path,
    name: &str,
    count: u32,
    token: String,
    rpc: Option<Rpc>,
    serve_on: Option<ExecutionProvider>,
) -> Result<ServicePool, AppError> {
    let (dir, name) = (dir.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || {
        ServicePool::load(&dir, &name, count, token, rpc.as_ref(), serve_on)
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?
    .map_err(AppError::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use optimizer::engine::GraphLevel;
    use optimizer::tensor::TensorData;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    fn pool(batching: bool) -> ServicePool {
        let engine = Engine::from_bytes(
            &optimizer::onnx_build::mlp(4, 8, 2),
            &SessionSettings::new(GraphLevel::All, 1),
        )
        .expect("engine");
        let sig = engine.signature().clone();
        let opts = BatchOptions {
            batching,
            max_batch_size: 8,
            // Long enough that the requests below are still waiting for
            // their batch when the pool is replaced.
            max_batch_timeout: Duration::from_millis(300),
            max_queue_size: 8,
        };
        ServicePool::from_engines(
            "svc",
            vec![Box::new(engine)],
            sig,
            Default::default(),
            "t".into(),
            opts,
        )
        .expect("pool")
    }

    fn x(v: f32) -> Vec<(String, Tensor)> {
        vec![(
            "x".to_string(),
            Tensor::new(vec![1, 4], TensorData::F32(vec![v; 4])).expect("tensor"),
        )]
    }

    #[test]
    fn a_gpu_artifact_serves_on_the_workers_device_and_never_on_the_cpu() {
        let cuda = |device_id| ExecutionProvider::Cuda { device_id };
        // Built on cuda:0, served by the worker of cuda:1.
        assert_eq!(serving_provider(cuda(0), Some(cuda(1))), Ok(cuda(1)));
        assert_eq!(serving_provider(cuda(1), Some(cuda(1))), Ok(cuda(1)));
        // A CPU artifact stays on the CPU whoever serves it.
        assert_eq!(
            serving_provider(ExecutionProvider::Cpu, Some(cuda(0))),
            Ok(ExecutionProvider::Cpu)
        );
        assert_eq!(
            serving_provider(ExecutionProvider::Cpu, None),
            Ok(ExecutionProvider::Cpu)
        );
        for none in [None, Some(ExecutionProvider::Cpu)] {
            let e = serving_provider(cuda(0), none).expect_err("no GPU: refused");
            assert!(e.contains("cuda:0") && e.contains("GPU"), "{e}");
        }
    }

    #[tokio::test]
    async fn requests_in_flight_finish_on_a_replaced_pool_whose_workers_then_stop() {
        let instances = Instances::default();
        instances.put("svc", pool(true));
        let old = instances.get("svc").expect("pool");
        let live = old.batcher().live_workers();
        let mut pending = Vec::new();
        for i in 0..3 {
            let p = old.clone();
            pending.push(tokio::spawn(async move { p.run(x(i as f32)).await }));
        }
        drop(old);
        // Scale or modify: a new pool takes the name while those wait.
        instances.put("svc", pool(false));
        for p in pending {
            let done = p.await.expect("task").expect("answered by the old pool");
            assert_eq!(done.outputs[0].1.shape, vec![1, 2]);
        }
        // The last reference went with the last request: the old workers exit.
        for _ in 0..1000 {
            if live.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            live.load(Ordering::SeqCst),
            0,
            "the old pool's workers still run"
        );
        let new = instances.get("svc").expect("new pool");
        assert!(new.run(x(1.0)).await.is_ok());
        assert_eq!(new.batcher().live_workers().load(Ordering::SeqCst), 1);
    }
}
