//! Serving instances: each running service holds `metadata.instance` engine
//! sessions built from its artifact, behind one request queue whose workers
//! spread requests across them and batch them when the config asks
//! (`batcher.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use optimizer::artifact::ArtifactMeta;
use optimizer::engine::{check_inputs, ExecutionProvider, SessionSettings};

use crate::control::Settings;
use crate::sandbox::Limits;
use crate::serving::supervisor::{Checks, Launch, Runner, RunnerHandle};
use runner::serve::RunnerSpec;

use crate::serving::batcher::DynEngine;
use optimizer::tensor::Tensor;
use optimizer::OptimizerError;
use shared::api::ModelSignature;
use shared::config::Metadata;

use crate::control::store::{canary_key, Weights};
use crate::serving::batcher::{BatchError, BatchOptions, Batcher, Done};
use crate::serving::ServingError;

pub struct ServicePool {
    pub name: String,
    /// The version of the service it serves (a deploy of a new version
    /// with the same artifact keeps the pool and renumbers it).
    version: std::sync::atomic::AtomicU32,
    /// The prediction token (rotated in place: `set_token`).
    token: RwLock<String>,
    pub signature: ModelSignature,
    /// What requests are checked against: the signature the engines report.
    engine_signature: ModelSignature,
    batcher: Batcher,
    /// Inputs the artifact was specialized for, with their only allowed value.
    fixed: std::collections::BTreeMap<String, f64>,
    /// The supervised runner of each instance (empty for a pool over
    /// in-process engines, which only tests build); a retired one is
    /// stopping and left out of the status.
    runners: std::sync::Mutex<Vec<RunnerHandle>>,
    /// How to start another instance (None for in-process engines).
    launch: Option<Launch>,
    /// Whether the service answers over gRPC (`metadata.enable_grpc`; a
    /// new version with the same artifact keeps the pool: [`Self::serve_as`]).
    grpc: std::sync::atomic::AtomicBool,
}

impl ServicePool {
    /// Starts `count` runner processes on the artifact in `dir` for
    /// service `name`, queued and batched as `rpc` says. Threads are split
    /// so instances do not fight for cores. `serve_on` is the CUDA device
    /// of the worker that serves a GPU artifact: the artifact is keyed by
    /// GPU model, not by device, so one built on `cuda:0` may be served on
    /// `cuda:1`. Blocks until every runner has loaded its engine.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        settings: &Settings,
        dir: &Path,
        name: &str,
        count: u32,
        token: String,
        metadata: &Metadata,
        serve_on: Option<ExecutionProvider>,
    ) -> Result<ServicePool, String> {
        if !dir.join(optimizer::artifact::SEAL_FILE).is_file() {
            // Recorded before artifacts were sealed (it was complete then):
            // seal it now, so that runners can verify it.
            optimizer::artifact::seal(dir)
                .map_err(|e| format!("sealing {}: {e}", dir.display()))?;
        }
        let meta = ArtifactMeta::read(dir).map_err(|e| e.to_string())?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = (cores / count.max(1) as usize).max(1);
        // The thread count the optimizer measured best, capped by this
        // instance's share of the cores.
        let session = SessionSettings {
            intra_threads: threads.min(meta.session.intra_threads.max(1)),
            provider: serving_provider(meta.session.provider, serve_on)?,
            ..meta.session.clone()
        };
        if settings.runner_account.is_some() {
            // Runners switch to their own account: the artifact must be
            // readable by it (the folders above it stay closed).
            crate::sandbox::make_readable(dir)
                .map_err(|e| format!("making {} readable: {e}", dir.display()))?;
        }
        // The runner adds the system's libraries and CPU files itself.
        let mut read: Vec<PathBuf> = vec![PathBuf::from(".")];
        let mut read_write = Vec::new();
        if matches!(session.provider, ExecutionProvider::Cuda { .. }) {
            // CUDA reads its libraries lazily and talks to the driver
            // through /dev/nvidia*.
            read.extend(["/usr", "/lib", "/lib64", "/etc", "/proc", "/sys"].map(PathBuf::from));
            read.extend(
                optimizer::runtime::library_candidates()
                    .into_iter()
                    .filter_map(|p| p.parent().map(Path::to_path_buf)),
            );
            if let Some(lib) = std::env::var_os("LD_LIBRARY_PATH") {
                read.extend(std::env::split_paths(&lib));
            }
            read_write.push(PathBuf::from("/dev"));
        }
        let (exe, args) =
            crate::serving::supervisor::runner_program(&settings.whet_exe, meta.engine);
        let launch = Launch {
            exe,
            args,
            artifact: dir.to_path_buf(),
            spec: RunnerSpec {
                settings: session.clone(),
                confinement: crate::sandbox::Confinement {
                    account: settings.runner_account,
                    read,
                    read_write,
                },
            },
            limits: Limits {
                memory_bytes: metadata.memory.map(|m| m << 20),
                oom_score_adj: 500,
            },
            label: name.to_string(),
            checks: Checks::of(metadata),
        };
        let started = start_runners(&launch, 0, count.max(1) as usize)?;
        let runners = started.iter().map(Runner::handle).collect();
        let engines: Vec<DynEngine> = started
            .into_iter()
            .map(|r| Box::new(r) as DynEngine)
            .collect();
        let mut pool = ServicePool::from_engines(
            name,
            engines,
            meta.signature,
            meta.fixed_inputs,
            token,
            BatchOptions {
                adaptive: settings.adaptive_batching,
                ..BatchOptions::from_rpc(metadata.rpc.as_ref())
            },
        )?;
        pool.runners = std::sync::Mutex::new(runners);
        pool.launch = Some(launch);
        pool.set_grpc(metadata.enable_grpc.unwrap_or(false));
        Ok(pool)
    }

    /// The instances' runners, a retired one kept until its process has
    /// exited and been reaped (then forgotten here, whoever looks).
    fn runner_handles(&self) -> std::sync::MutexGuard<'_, Vec<RunnerHandle>> {
        let mut runners = self.runners.lock().unwrap_or_else(|p| p.into_inner());
        runners.retain(|r| !(r.stopped() && r.pid().is_none()));
        runners
    }

    /// Starts `n` more instances (blocking until they are loaded) and
    /// gives them requests from the same queue.
    pub fn grow(&self, n: usize) -> Result<(), String> {
        let Some(launch) = &self.launch else {
            return Err("a pool of in-process engines cannot grow".into());
        };
        let first = self.runner_handles().len();
        for r in start_runners(launch, first, n)? {
            self.runner_handles().push(r.handle());
            self.batcher.add(Box::new(r))?;
        }
        Ok(())
    }

    /// Stops `n` instances (never the last) once their current call is
    /// done; returns how many will stop.
    pub fn shrink(&self, n: usize) -> usize {
        self.batcher.retire(n)
    }

    /// The largest request body this service accepts (413 above it).
    pub fn max_body_bytes(&self) -> usize {
        body_limit(&self.engine_signature, self.batcher.options())
    }

    /// Whether an instance can take requests: one runner up and ready (a
    /// pool over in-process engines always can).
    pub fn ready(&self) -> bool {
        let runners = self.runner_handles();
        runners.is_empty() || runners.iter().any(RunnerHandle::ready)
    }

    /// Each instance's runner process, for the service's status (a retired
    /// one left out).
    pub fn runner_states(&self) -> Vec<shared::api::RunnerState> {
        self.runner_handles()
            .iter()
            .filter(|r| !r.stopped())
            .enumerate()
            .map(|(i, r)| r.state(i))
            .collect()
    }

    /// Whether every retired instance's runner process has exited (and been
    /// reaped).
    pub fn retired_runners_exited(&self) -> bool {
        self.runner_handles().iter().all(|r| !r.stopped())
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
        let batcher = Batcher::start(name, engines, &engine_signature, opts)?;
        Ok(ServicePool {
            name: name.to_string(),
            version: Default::default(),
            token: RwLock::new(token),
            signature,
            engine_signature,
            batcher,
            fixed,
            runners: Default::default(),
            launch: None,
            grpc: Default::default(),
        })
    }

    /// Instances serving (those retiring not counted).
    pub fn len(&self) -> usize {
        self.batcher.instances()
    }

    pub fn version(&self) -> u32 {
        self.version.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The service's prediction token.
    pub fn token(&self) -> String {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes a rotated token: the old one is refused from now on.
    pub fn set_token(&self, token: &str) {
        let mut t = self.token.write().unwrap_or_else(|p| p.into_inner());
        if *t != token {
            *t = token.to_string();
        }
    }

    pub fn set_version(&self, version: u32) {
        self.version
            .store(version, std::sync::atomic::Ordering::Relaxed);
    }

    /// Numbers the pool with the version it serves now, and takes that
    /// version's serving switches (a deploy with the same artifact keeps
    /// the pool).
    pub fn serve_as(&self, version: u32, metadata: &Metadata) {
        self.set_version(version);
        self.set_grpc(metadata.enable_grpc.unwrap_or(false));
    }

    /// Whether the service answers over gRPC (`metadata.enable_grpc`).
    pub fn grpc(&self) -> bool {
        self.grpc.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_grpc(&self, on: bool) {
        self.grpc.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
            .unwrap_or_else(|| match sig.open_inputs() {
                true => {
                    "its inputs are not declared (a plain TorchScript deploy takes them as given)"
                        .into()
                }
                false => "the model has no inputs".into(),
            });
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

impl Drop for ServicePool {
    /// The last reference is gone (stop, delete, or a replaced pool whose
    /// last request has finished): the runners are killed now, even one
    /// stuck in a call, so a hung model never outlives its service.
    fn drop(&mut self) {
        for r in self.runner_handles().iter() {
            r.stop();
        }
    }
}

/// The pools this node serves, by placement name (a service's own, and
/// [`canary_key`] for a version served beside it), and every service's
/// traffic split.
#[derive(Clone, Default)]
pub struct Instances {
    pools: Arc<RwLock<HashMap<String, Arc<ServicePool>>>>,
    /// The new pool of a rolling update, beside the old one until it
    /// replaces it: requests go to each by its share of the instances.
    incoming: Arc<RwLock<HashMap<String, Arc<ServicePool>>>>,
    splits: Arc<RwLock<HashMap<String, Weights>>>,
}

impl Instances {
    /// Replaces the routing table of traffic splits (read from the store).
    pub fn set_splits(&self, splits: impl IntoIterator<Item = (String, Weights)>) {
        *self.splits.write().unwrap_or_else(|p| p.into_inner()) =
            splits.into_iter().filter(|(_, w)| !w.is_empty()).collect();
    }

    /// Sets (or, when empty, ends) the split of one service.
    pub fn set_split(&self, name: &str, weights: Weights) {
        let mut splits = self.splits.write().unwrap_or_else(|p| p.into_inner());
        if weights.is_empty() {
            splits.remove(name);
        } else {
            splits.insert(name.to_string(), weights);
        }
    }

    /// The version a new request of `name` goes to, drawn by its split's
    /// weights; `None` when it has no split.
    pub fn draw(&self, name: &str) -> Option<u32> {
        let splits = self.splits.read().unwrap_or_else(|p| p.into_inner());
        pick(splits.get(name)?, rand::random::<u32>())
    }

    /// The pool that serves version `version` of `name` here: the
    /// service's own when it runs that version, else that version's pool
    /// beside it.
    pub fn of_version(&self, name: &str, version: u32) -> Option<Arc<ServicePool>> {
        if let Some(p) = self.get(name).filter(|p| p.version() == version) {
            return Some(p);
        }
        let own = [self.main(name), self.incoming_of(name)];
        own.into_iter()
            .flatten()
            .find(|p| p.version() == version)
            .or_else(|| self.get(&canary_key(name, version)))
    }

    /// The pool under `key` itself, not the incoming one of a rolling
    /// update.
    pub fn main(&self, key: &str) -> Option<Arc<ServicePool>> {
        self.pools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn incoming_of(&self, key: &str) -> Option<Arc<ServicePool>> {
        self.incoming
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Sets (or clears) the new pool of a rolling update of `key`.
    pub fn set_incoming(&self, key: &str, pool: Option<Arc<ServicePool>>) {
        let mut incoming = self.incoming.write().unwrap_or_else(|p| p.into_inner());
        match pool {
            Some(p) => incoming.insert(key.to_string(), p),
            None => incoming.remove(key),
        };
    }

    /// [`Instances::put`] of a pool already shared (the end of a rolling
    /// update).
    pub fn put_shared(&self, key: &str, pool: Arc<ServicePool>) {
        let n = pool.len();
        let old = self
            .pools
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), pool);
        crate::control::metrics::set_instances(key, n);
        // The old pool's workers stop once its last request has finished
        // and this (or that request's) reference is gone.
        drop(old);
    }

    /// The pool that takes a request of `name`: during a rolling update,
    /// the old or the new one by their shares of the instances.
    pub fn get(&self, name: &str) -> Option<Arc<ServicePool>> {
        let main = self.main(name);
        match (main, self.incoming_of(name)) {
            (Some(old), Some(new)) => {
                let (a, b) = (old.len() as u32, new.len() as u32);
                if rand::random::<u32>() % (a + b).max(1) < b {
                    Some(new)
                } else {
                    Some(old)
                }
            }
            (main, new) => main.or(new),
        }
    }

    /// Gives every pool of service `name` (its own, a rolling update's new
    /// one, the versions beside it) the service's current token.
    pub fn set_token(&self, name: &str, token: &str) {
        for map in [&self.pools, &self.incoming] {
            for pool in map.read().unwrap_or_else(|p| p.into_inner()).values() {
                if pool.name == name {
                    pool.set_token(token);
                }
            }
        }
    }

    /// Swaps in a new pool; requests in flight on the old one finish on it.
    pub fn put(&self, name: &str, pool: ServicePool) {
        self.put_shared(name, Arc::new(pool));
    }

    pub fn remove(&self, name: &str) -> bool {
        crate::control::metrics::set_instances(name, 0);
        self.set_incoming(name, None);
        self.pools
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some()
    }
}

/// The version whose share of the split holds `r` (modulo the total of
/// the weights); `None` when no version has a share.
fn pick(weights: &Weights, r: u32) -> Option<u32> {
    let total: u32 = weights.values().sum();
    if total == 0 {
        return None;
    }
    let mut r = r % total;
    for (&v, &w) in weights {
        if r < w {
            return Some(v);
        }
        r -= w;
    }
    None
}

/// Starts runners `first..first + n` of `launch` at once (loading is the
/// slow part) and waits for all; one failure fails them all (those started
/// are dropped, which kills them).
fn start_runners(launch: &Launch, first: usize, n: usize) -> Result<Vec<Runner>, String> {
    let started: Vec<Result<Runner, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (first..first + n)
            .map(|i| {
                let l = Launch {
                    label: format!("{}/{i}", launch.label),
                    ..launch.clone()
                };
                scope.spawn(move || Runner::start(l))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("the runner start panicked".into()))
            })
            .collect()
    });
    started.into_iter().collect()
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

/// The body limit of a service: its inputs at up to 1024 rows (or
/// `max_batch_size`, if larger), at the size of their JSON form (up to 24
/// bytes a number), doubled for field names and spacing; at least 1 MiB,
/// and the server's ceiling of 256 MiB for inputs with a dynamic dimension
/// other than the batch (a sequence length, an image size).
pub fn body_limit(sig: &ModelSignature, opts: &BatchOptions) -> usize {
    const FLOOR: usize = 1 << 20;
    const CEILING: usize = 256 << 20;
    const PER_ELEMENT: usize = 24;
    if sig.open_inputs() {
        // Inputs of any shape: the ceiling, as for a dynamic dimension.
        return CEILING;
    }
    let rows = opts.max_batch_size.max(1024);
    let mut total = 0usize;
    for t in &sig.inputs {
        let mut n = 1usize;
        for (i, &d) in t.shape.iter().enumerate() {
            n = match (usize::try_from(d), i) {
                (Ok(d), _) => n.saturating_mul(d),
                (Err(_), 0) => n.saturating_mul(rows),
                (Err(_), _) => return CEILING,
            };
        }
        total = total.saturating_add(n.saturating_mul(PER_ELEMENT));
    }
    total.saturating_mul(2).clamp(FLOOR, CEILING)
}

/// Starts a pool's runners off the async runtime (it waits for them).
#[allow(clippy::too_many_arguments)]
pub async fn load_pool(
    settings: &Arc<Settings>,
    dir: &Path,
    name: &str,
    count: u32,
    token: String,
    metadata: Metadata,
    serve_on: Option<ExecutionProvider>,
) -> Result<ServicePool, ServingError> {
    let (settings, dir, name) = (settings.clone(), dir.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || {
        ServicePool::load(&settings, &dir, &name, count, token, &metadata, serve_on)
    })
    .await
    .map_err(|e| ServingError::Internal(e.to_string()))?
    .map_err(ServingError::Internal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use optimizer::engine::{Engine, GraphLevel};
    use optimizer::tensor::TensorData;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    #[test]
    fn a_split_draws_each_version_by_its_weight() {
        let w: Weights = [(1, 90), (2, 10), (3, 0)].into_iter().collect();
        let drawn: Vec<u32> = (0..100).filter_map(|r| pick(&w, r)).collect();
        assert_eq!(drawn.iter().filter(|&&v| v == 1).count(), 90);
        assert_eq!(drawn.iter().filter(|&&v| v == 2).count(), 10);
        assert!(!drawn.contains(&3));
        assert_eq!(pick(&[(4, 0)].into_iter().collect(), 7), None);
        let instances = Instances::default();
        assert_eq!(instances.draw("svc"), None);
        instances.set_split("svc", [(2, 100)].into_iter().collect());
        assert_eq!(instances.draw("svc"), Some(2));
        instances.set_split("svc", Weights::new());
        assert_eq!(instances.draw("svc"), None);
    }

    #[test]
    fn a_version_is_served_by_the_services_pool_or_the_one_beside_it() {
        let instances = Instances::default();
        let main = pool(false);
        main.set_version(2);
        instances.put("svc", main);
        let old = pool(false);
        old.set_version(1);
        instances.put(&canary_key("svc", 1), old);
        assert_eq!(instances.of_version("svc", 2).map(|p| p.version()), Some(2));
        assert_eq!(instances.of_version("svc", 1).map(|p| p.version()), Some(1));
        assert!(instances.of_version("svc", 3).is_none());
    }

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
            adaptive: false,
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
