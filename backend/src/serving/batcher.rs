//! The request queue of one service and its dynamic batcher.
//!
//! Every prediction of a service goes through one bounded FIFO queue. Each
//! instance (one engine session) has a worker thread of its own that takes
//! work from that queue together with an idle engine, so a busy instance
//! never holds up an idle one. An engine serves one call at a time: it is
//! either in the idle list or in the hands of the one thread calling it (no
//! lock around the session).
//!
//! A request that finds the queue empty and an engine idle (the common case
//! at low load) does not queue at all: its own task borrows the engine and
//! calls it in place ([`tokio::task::block_in_place`], on the multi-threaded
//! runtime the server runs), sparing the two thread hand-offs — to a worker
//! and back — that would otherwise sit on its latency. Each hand-off is a
//! wake-up of a sleeping thread, often on another CPU. (`block_in_place`
//! hands the thread's other tasks to another tokio worker, but beside the
//! call, not in its way.) Such a call cannot be abandoned halfway: a caller's
//! deadline takes effect once it returns — a queued call, once taken, would
//! have run to its end on the worker all the same.
//!
//! With `metadata.rpc.batching` on and a model whose inputs and outputs all
//! have a dynamic dimension 0, a worker that takes a request also takes the
//! queued requests that fit with it (same input names, datatypes and
//! dimensions after the first), and waits for more only while more are
//! coming: until the batch holds `max_batch_size` rows, `max_batch_timeout`
//! has passed since it took the first, or the arrivals stop (see
//! [`Traffic::fill_deadline`]); then it runs them as one engine call and
//! splits every output back along dimension 0. A request alone at low load
//! therefore runs at once, as with batching off, and under load the wait
//! shrinks to the gaps between arrivals. While a
//! worker gathers a batch, other workers leave requests that fit it alone,
//! so they join that batch instead of starting a second, half-empty one;
//! requests of another shape go to the next idle worker.
//!
//! Invariants:
//! - A request is answered exactly once: with its own rows of the batch's
//!   outputs, or with an error that concerns it. When a merged call fails
//!   (one request may carry, say, a token id out of range), every request of
//!   that batch is run again on its own, so one bad request fails alone.
//! - A full queue refuses at once ([`BatchError::QueueFull`], HTTP 429)
//!   rather than letting callers wait for a time-out.
//! - Dropping the [`Batcher`] (the service pool was replaced or stopped and
//!   the last request on it has finished) stops its workers; each releases
//!   one engine session as it exits. There are always as many workers as
//!   engines: a worker leaving (close, retire) takes an engine with it,
//!   waiting for one to come back from a call if none is idle.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use optimizer::engine::InferenceEngine;

/// An engine of any runtime (ONNX Runtime, TorchScript), used by one
/// thread at a time.
pub type DynEngine = Box<dyn InferenceEngine>;
use optimizer::tensor::{DType, Tensor, TensorData};
use optimizer::OptimizerError;
use shared::api::ModelSignature;
use shared::config::Rpc;
use tokio::sync::oneshot;

/// Rows in one merged engine call when `max_batch_size` is not given.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 16;
/// How long a batch may wait to fill when `max_batch_timeout` is not given.
pub const DEFAULT_MAX_BATCH_TIMEOUT_MS: u64 = 5;
/// Requests queued per instance when `max_queue_size` is not given.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 64;
/// The longest batch window honoured: a larger `max_batch_timeout` would only
/// hold requests hostage at low load.
const MAX_BATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The serving options of `metadata.rpc` that shape the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOptions {
    pub batching: bool,
    pub max_batch_size: usize,
    pub max_batch_timeout: Duration,
    /// Queued requests per instance; the queue holds this many times the
    /// instance count.
    pub max_queue_size: usize,
    /// Wait for a batch to fill only while requests keep arriving faster than
    /// the engine answers them ([`Traffic::fill_deadline`]). Off, a worker
    /// waits out the whole `max_batch_timeout` for a batch that is not full
    /// (what the merge mechanics' tests use, so that arrival timing cannot
    /// decide what merges).
    pub adaptive: bool,
}

impl BatchOptions {
    pub fn from_rpc(rpc: Option<&Rpc>) -> BatchOptions {
        let rpc = rpc.cloned().unwrap_or_default();
        BatchOptions {
            batching: rpc.batching.unwrap_or(false),
            max_batch_size: rpc
                .max_batch_size
                .map_or(DEFAULT_MAX_BATCH_SIZE, |n| n.max(1) as usize),
            max_batch_timeout: Duration::from_millis(
                rpc.max_batch_timeout
                    .unwrap_or(DEFAULT_MAX_BATCH_TIMEOUT_MS),
            )
            .min(MAX_BATCH_TIMEOUT),
            max_queue_size: rpc
                .max_queue_size
                .map_or(DEFAULT_MAX_QUEUE_SIZE, |n| n.max(1) as usize),
            adaptive: true,
        }
    }
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions::from_rpc(None)
    }
}

/// A request's answer and where its time went.
#[derive(Debug)]
pub struct Done {
    pub outputs: Vec<(String, Tensor)>,
    /// From entering the queue to the start of the engine call that ran it
    /// (includes waiting for a batch to fill).
    pub queued: Duration,
    /// Of `queued`, the time since a worker took it: waiting for its
    /// batch to fill.
    pub gathered: Duration,
    /// The engine call (shared by every request of the batch).
    pub engine: Duration,
    /// When the engine call started (wall clock, for traces).
    pub started_at: std::time::SystemTime,
    /// Rows of the engine call: the batch total, the request's own rows
    /// when it ran alone.
    pub batch_rows: usize,
    /// Requests ahead of it in the queue when it came.
    pub ahead: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the request queue is full: {queued} requests are waiting (metadata.rpc.max_queue_size = {per_instance} per instance, {instances} instance(s)); retry later, or raise max_queue_size or the instance count")]
    QueueFull {
        queued: usize,
        per_instance: usize,
        instances: usize,
    },
    #[error("{0}")]
    Engine(OptimizerError),
    #[error("the service's instances stopped before answering")]
    Stopped,
}

/// What requests must share to be merged: per input (sorted by name) its
/// datatype and its dimensions after the first.
type Key = Vec<(String, DType, Vec<usize>)>;

struct Job {
    inputs: Vec<(String, Tensor)>,
    /// `None`: runs on its own.
    key: Option<Key>,
    rows: usize,
    enqueued: Instant,
    /// Requests ahead of it in the queue when it came.
    ahead: usize,
    /// When a worker took it (into a batch, or to run alone).
    taken: Option<Instant>,
    reply: oneshot::Sender<Result<Done, OptimizerError>>,
}

impl Job {
    /// Its answer, timed against the engine call that started at `started`.
    fn done(
        &self,
        outputs: Vec<(String, Tensor)>,
        started: (Instant, std::time::SystemTime),
        engine: Duration,
        batch_rows: usize,
    ) -> Done {
        Done {
            outputs,
            queued: started.0.saturating_duration_since(self.enqueued),
            gathered: self
                .taken
                .map_or(Duration::ZERO, |t| started.0.saturating_duration_since(t)),
            engine,
            started_at: started.1,
            batch_rows,
            ahead: self.ahead,
        }
    }
}

/// What the batcher has seen of its arrivals and engine calls, to judge
/// whether waiting for a batch to fill can pay.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    last_arrival: Option<Instant>,
    /// Moving average of the time between arrivals, in seconds.
    gap: Option<f64>,
    /// Moving average of one engine call, in seconds.
    call: Option<f64>,
}

/// The weight of the newest observation in the moving averages: about the
/// last ten count.
const EWMA_WEIGHT: f64 = 0.1;
/// Gaps longer than this are idle time, not a rate: they count as this.
const LONGEST_GAP: Duration = Duration::from_secs(1);

fn ewma(old: Option<f64>, new: f64) -> Option<f64> {
    Some(old.map_or(new, |o| o + EWMA_WEIGHT * (new - o)))
}

impl Traffic {
    fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last_arrival {
            let gap = now.saturating_duration_since(last).min(LONGEST_GAP);
            self.gap = ewma(self.gap, gap.as_secs_f64());
        }
        self.last_arrival = Some(now);
    }

    fn called(&mut self, took: Duration) {
        self.call = ewma(self.call, took.as_secs_f64());
    }

    /// Until when a worker holding a batch that is not full may wait for
    /// the next request, or `None` when waiting cannot pay. Waiting pays
    /// only when requests arrive much faster than the engine answers them
    /// (the gap between arrivals under half an engine call): then the next
    /// one is due within a gap or two, and one call for several saves the
    /// engine time they would otherwise queue for. At low load the next
    /// request is not coming before this one would be answered (a client
    /// alone waits for its answer before sending again), so the request
    /// runs at once. The wait ends two gaps (at least a quarter of a call)
    /// after the last arrival: once arrivals stop (every client's request
    /// is in this batch) it stops.
    fn fill_deadline(&self) -> Option<Instant> {
        let (gap, call, last) = (self.gap?, self.call?, self.last_arrival?);
        if gap * 2.0 > call {
            return None;
        }
        // Replies leave together and their clients' next requests straggle
        // back through HTTP and JSON: a quarter of a call gives a burst time
        // to gather.
        Some(last + Duration::from_secs_f64((2.0 * gap).max(call / 4.0)))
    }
}

struct State {
    queue: VecDeque<Job>,
    closed: bool,
    traffic: Traffic,
    /// The keys of partial batches that workers hold while waiting for them
    /// to fill: other workers leave jobs of those keys to them.
    collecting: Vec<Key>,
    /// Engines not in a call: a worker takes one with each batch, and a
    /// request that finds the queue empty may borrow one (see
    /// [`Batcher::submit`]).
    idle: Vec<DynEngine>,
    /// Workers asked to exit (a rolling update or a scale down): the next
    /// that looks for work exits instead, an engine with it.
    retire: usize,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on every new job, on the end of a collection, on close and
    /// when a borrowed engine comes back to a queue that needs it.
    wake: Condvar,
    opts: BatchOptions,
    /// Every input and output has a dynamic dimension 0.
    batchable: bool,
    /// Engines serving (workers not asked to retire); the queue holds
    /// `max_queue_size` per instance.
    instances: AtomicUsize,
    live: Arc<AtomicUsize>,
    service: String,
    /// Numbers the worker threads.
    started: AtomicUsize,
    metrics: Option<crate::control::metrics::QueueMetrics>,
}

/// The queue of one service and one worker thread per engine.
pub struct Batcher {
    shared: Arc<Shared>,
}

/// Whether requests to a model with this signature can be stacked on
/// dimension 0: it must be dynamic in every input and output.
pub fn has_batch_dim(sig: &ModelSignature) -> bool {
    !sig.inputs.is_empty()
        && sig
            .inputs
            .iter()
            .chain(&sig.outputs)
            .all(|t| t.shape.first().is_some_and(|&d| d < 0))
}

impl Batcher {
    /// Starts one worker per engine. `service` labels the metrics and the
    /// worker threads.
    pub fn start(
        service: &str,
        engines: Vec<DynEngine>,
        signature: &ModelSignature,
        opts: BatchOptions,
    ) -> Result<Batcher, String> {
        let live = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closed: false,
                traffic: Traffic::default(),
                collecting: Vec::new(),
                idle: Vec::new(),
                retire: 0,
            }),
            wake: Condvar::new(),
            batchable: has_batch_dim(signature),
            instances: AtomicUsize::new(0),
            opts,
            live,
            metrics: crate::control::metrics::queue_metrics(service),
            service: service.to_string(),
            started: AtomicUsize::new(0),
        });
        let batcher = Batcher { shared };
        for engine in engines {
            // Dropping `batcher` stops the workers already started.
            batcher.add(engine)?;
        }
        Ok(batcher)
    }

    /// Starts one more worker, and gives the queue `engine`.
    pub fn add(&self, engine: DynEngine) -> Result<(), String> {
        let i = self.shared.started.fetch_add(1, Ordering::SeqCst);
        let shared = self.shared.clone();
        self.shared.live.fetch_add(1, Ordering::SeqCst);
        self.shared.instances.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("serve-{i}-{}", self.shared.service))
            .spawn(move || worker(shared));
        if let Err(e) = spawned {
            self.shared.live.fetch_sub(1, Ordering::SeqCst);
            self.shared.instances.fetch_sub(1, Ordering::SeqCst);
            return Err(format!("starting instance {i}: {e}"));
        }
        // After the worker: a worker never waits for an engine that has no
        // worker of its own to take it away when it leaves.
        self.shared.lock().idle.push(engine);
        self.shared.wake.notify_all();
        Ok(())
    }

    /// Asks `n` workers (at most all but one) to exit once their current
    /// call is done; their engines go with them. Returns how many will.
    pub fn retire(&self, n: usize) -> usize {
        let mut st = self.shared.lock();
        let serving = self.shared.instances.load(Ordering::SeqCst);
        let n = n.min(serving.saturating_sub(1));
        st.retire += n;
        self.shared.instances.fetch_sub(n, Ordering::SeqCst);
        drop(st);
        self.shared.wake.notify_all();
        n
    }

    /// Engines serving (retiring ones not counted).
    pub fn instances(&self) -> usize {
        self.shared.instances.load(Ordering::SeqCst)
    }

    pub fn options(&self) -> &BatchOptions {
        &self.shared.opts
    }

    /// Whether requests are merged: batching asked for and a model that
    /// allows it.
    pub fn merges(&self) -> bool {
        self.shared.merges()
    }

    /// Worker threads still running (they exit after [`Batcher::close`]).
    pub fn live_workers(&self) -> Arc<AtomicUsize> {
        self.shared.live.clone()
    }

    /// Queues `inputs` and waits for the answer. Inputs must already be
    /// checked against the signature: requests that merge share one call.
    ///
    /// A request that would be taken at once and run alone anyway (nothing
    /// queued, nothing gathering, an engine idle, and no batch worth waiting
    /// for) runs on that engine from the caller's own thread instead, when
    /// the caller is on a multi-threaded runtime (the only one where
    /// blocking in place is allowed).
    pub async fn submit(&self, inputs: Vec<(String, Tensor)>) -> Result<Done, BatchError> {
        let (key, rows) = self.key_of(&inputs);
        let in_place = may_block_in_place();
        let (reply, answer) = oneshot::channel();
        let enqueued = Instant::now();
        let job = Job {
            inputs,
            key,
            rows,
            enqueued,
            ahead: 0,
            taken: None,
            reply,
        };
        let lent = {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(BatchError::Stopped);
            }
            let instances = self.shared.instances.load(Ordering::Relaxed).max(1);
            if st.queue.len() >= self.shared.opts.max_queue_size.saturating_mul(instances) {
                return Err(BatchError::QueueFull {
                    queued: st.queue.len(),
                    per_instance: self.shared.opts.max_queue_size,
                    instances,
                });
            }
            if self.shared.judges_wait() {
                st.traffic.arrived(enqueued);
            }
            let engine = if in_place && self.shared.runs_at_once(&st, job.key.as_ref()) {
                st.idle.pop()
            } else {
                None
            };
            match engine {
                Some(engine) => Some((engine, job)),
                None => {
                    let ahead = st.queue.len();
                    st.queue.push_back(Job { ahead, ..job });
                    self.shared.set_depth(st.queue.len());
                    None
                }
            }
        };
        if let Some((engine, job)) = lent {
            let mut lent = Lent {
                shared: &self.shared,
                engine: Some(engine),
            };
            let done = tokio::task::block_in_place(|| lent.run(job));
            return done.map_err(BatchError::Engine);
        }
        // All, not one: a collecting worker must see the new job, and an
        // idle one woken instead would only go back to sleep.
        self.shared.wake.notify_all();
        match answer.await {
            Ok(r) => r.map_err(BatchError::Engine),
            Err(_) => Err(BatchError::Stopped),
        }
    }

    /// Stops taking requests; workers finish what is queued, then exit.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }

    fn key_of(&self, inputs: &[(String, Tensor)]) -> (Option<Key>, usize) {
        let rows = inputs
            .first()
            .and_then(|(_, t)| t.shape.first().copied())
            .unwrap_or(1);
        if !self.merges()
            || rows == 0
            || rows >= self.shared.opts.max_batch_size
            || inputs.iter().any(|(_, t)| t.shape.first() != Some(&rows))
        {
            return (None, rows);
        }
        let mut key: Key = inputs
            .iter()
            .map(|(n, t)| (n.clone(), t.dtype(), t.shape[1..].to_vec()))
            .collect();
        key.sort_by(|a, b| a.0.cmp(&b.0));
        (Some(key), rows)
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the queue consistent (every
        // change is one push or remove), so carry on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Batching asked for and a model that allows it.
    fn merges(&self) -> bool {
        self.opts.batching && self.batchable
    }

    /// Whether workers judge how long to wait for a batch from the traffic
    /// (so it is worth recording): batching that merges, adaptive wait.
    fn judges_wait(&self) -> bool {
        self.opts.adaptive && self.merges()
    }

    /// An engine call's time, for the adaptive wait; without it (the
    /// default, batching off) the call takes no lock for it.
    fn record_call(&self, took: Duration) {
        if self.judges_wait() {
            self.lock().traffic.called(took);
        }
    }

    fn set_depth(&self, n: usize) {
        if let Some(m) = &self.metrics {
            m.queue_depth.set(n as i64);
        }
    }

    /// Whether a new request would be taken at once and run alone: nothing
    /// queued ahead of it, no batch gathering that it could join, an engine
    /// idle and not owed to a retiring worker, and no batch worth waiting
    /// for (a request that cannot merge — batching off, or its rows alone
    /// fill a batch — or traffic too light for the adaptive wait,
    /// [`Traffic::fill_deadline`]).
    fn runs_at_once(&self, st: &State, key: Option<&Key>) -> bool {
        st.queue.is_empty()
            && st.collecting.is_empty()
            && !st.idle.is_empty()
            && st.retire == 0
            && (key.is_none() || (self.opts.adaptive && st.traffic.fill_deadline().is_none()))
    }

    /// An engine back from a call in a request's own thread: a worker may
    /// be waiting for one (queued work, or leaving with one).
    fn give_back(&self, engine: DynEngine) {
        let mut st = self.lock();
        st.idle.push(engine);
        let wanted = !st.queue.is_empty() || st.retire > 0 || st.closed;
        drop(st);
        if wanted {
            self.wake.notify_all();
        }
    }

    /// Blocks until there is work for this worker and an engine to run it
    /// on (`held`, the engine of its last batch, goes back to the idle list
    /// first). `None` once closed and drained, or when it is asked to
    /// retire: then it has dropped one engine, its share, waiting for one
    /// to come back from a call if none was idle.
    fn next_batch(&self, held: Option<DynEngine>) -> Option<(Vec<Job>, DynEngine)> {
        let mut st = self.lock();
        st.idle.extend(held);
        let (first, engine) = loop {
            if st.retire > 0 || (st.closed && st.queue.is_empty()) {
                if let Some(engine) = st.idle.pop() {
                    st.retire = st.retire.saturating_sub(1);
                    drop(st);
                    // The session's memory (a runner: its process) goes
                    // with the worker.
                    drop(engine);
                    return None;
                }
            } else if let Some(engine) = st.idle.pop() {
                let State {
                    queue, collecting, ..
                } = &mut *st;
                match pop_free(queue, collecting) {
                    Some(mut job) => {
                        job.taken = Some(Instant::now());
                        break (job, engine);
                    }
                    None => {
                        st.idle.push(engine);
                        // The jobs left may all have been dropped (their
                        // callers gave up): a closed queue may be drained
                        // now, and nothing would wake this worker to see it.
                        if st.closed && st.queue.is_empty() {
                            continue;
                        }
                    }
                }
            }
            st = self.wake.wait(st).unwrap_or_else(|p| p.into_inner());
        };
        let mut rows = first.rows;
        let key = first.key.clone();
        let mut batch = vec![first];
        if let Some(key) = key {
            st.collecting.push(key.clone());
            let max = self.opts.max_batch_size;
            let window_end = Instant::now() + self.opts.max_batch_timeout;
            loop {
                take_matching(&mut st.queue, &key, &mut rows, max, &mut batch);
                if rows >= max || st.closed {
                    break;
                }
                // Re-judged on every wake: each arrival moves it on.
                let deadline = if self.opts.adaptive {
                    match st.traffic.fill_deadline() {
                        Some(d) => d.min(window_end),
                        None => break,
                    }
                } else {
                    window_end
                };
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = self
                    .wake
                    .wait_timeout(st, deadline - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            if let Some(i) = st.collecting.iter().position(|k| *k == key) {
                st.collecting.swap_remove(i);
            }
            // What is left may be another worker's next batch.
            self.wake.notify_all();
        }
        self.set_depth(st.queue.len());
        Some((batch, engine))
    }

    fn run_batch(&self, engine: &mut dyn InferenceEngine, batch: Vec<Job>) {
        let rows: Vec<usize> = batch.iter().map(|j| j.rows).collect();
        let total: usize = rows.iter().sum();
        if batch.len() == 1 {
            for job in batch {
                self.run_alone(engine, job);
            }
            return;
        }
        let started = (Instant::now(), std::time::SystemTime::now());
        let merged = merge(&batch);
        let result =
            merged.and_then(|inputs| guarded_run(engine, &inputs).map_err(|e| e.to_string()));
        let engine_time = started.0.elapsed();
        self.record_call(engine_time);
        match result.and_then(|outputs| split(outputs, &rows)) {
            Ok(parts) => {
                self.observe_batch(total);
                for (job, outputs) in batch.into_iter().zip(parts) {
                    let done = job.done(outputs, started, engine_time, total);
                    let _ = job.reply.send(Ok(done));
                }
            }
            Err(e) => {
                tracing::debug!(
                    "a merged call of {total} rows failed ({e}); running its requests one by one"
                );
                for job in batch {
                    self.run_alone(engine, job);
                }
            }
        }
    }

    fn run_alone(&self, engine: &mut dyn InferenceEngine, job: Job) {
        let done = self.call_alone(engine, &job);
        let _ = job.reply.send(done);
    }

    /// One job's engine call on its own, timed.
    fn call_alone(
        &self,
        engine: &mut dyn InferenceEngine,
        job: &Job,
    ) -> Result<Done, OptimizerError> {
        let started = (Instant::now(), std::time::SystemTime::now());
        let result = guarded_run(engine, &job.inputs);
        let engine_time = started.0.elapsed();
        self.record_call(engine_time);
        self.observe_batch(job.rows);
        result.map(|outputs| job.done(outputs, started, engine_time, job.rows))
    }

    fn observe_batch(&self, rows: usize) {
        if let Some(m) = &self.metrics {
            m.batch_size.observe(rows as f64);
        }
    }
}

/// Decrements the live-worker count however the worker ends.
struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn worker(shared: Arc<Shared>) {
    let _live = LiveGuard(shared.live.clone());
    let mut held = None;
    while let Some((batch, mut engine)) = shared.next_batch(held.take()) {
        shared.run_batch(engine.as_mut(), batch);
        held = Some(engine);
    }
}

/// An engine borrowed from the idle list by a request's own thread; back in
/// the list when dropped, however the call ends.
struct Lent<'a> {
    shared: &'a Shared,
    engine: Option<DynEngine>,
}

impl Lent<'_> {
    fn run(&mut self, job: Job) -> Result<Done, OptimizerError> {
        match self.engine.as_mut() {
            Some(engine) => self.shared.call_alone(engine.as_mut(), &job),
            None => Err(OptimizerError::Engine("no engine was lent".into())),
        }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            self.shared.give_back(engine);
        }
    }
}

/// Whether this thread may block in place: a worker of a multi-threaded
/// tokio runtime (the server's), where `block_in_place` hands the thread's
/// other tasks to another worker. A current-thread runtime has no other
/// worker to hand them to (and `block_in_place` panics there).
fn may_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// An engine call that turns a panic into an error, so one bad call cannot
/// take the instance's worker down with it.
fn guarded_run(
    engine: &mut dyn InferenceEngine,
    inputs: &[(String, Tensor)],
) -> Result<Vec<(String, Tensor)>, OptimizerError> {
    catch_unwind(AssertUnwindSafe(|| engine.run(inputs)))
        .unwrap_or_else(|_| Err(OptimizerError::Engine("the engine call panicked".into())))
}

/// The oldest queued job whose caller is still waiting and that no other
/// worker is gathering a batch for (those join that batch instead of
/// starting a second, half-empty one). Jobs whose caller gave up are
/// dropped on the way.
fn pop_free(queue: &mut VecDeque<Job>, collecting: &[Key]) -> Option<Job> {
    let mut i = 0;
    while i < queue.len() {
        let job = &queue[i];
        if job.reply.is_closed() {
            queue.remove(i);
            continue;
        }
        if job.key.as_ref().is_none_or(|k| !collecting.contains(k)) {
            return queue.remove(i);
        }
        i += 1;
    }
    None
}

/// Moves queued jobs that match `key` and still fit under `max` rows into
/// `batch`, oldest first; the rest keep their order. Jobs whose caller gave
/// up are dropped on the way.
fn take_matching(
    queue: &mut VecDeque<Job>,
    key: &Key,
    rows: &mut usize,
    max: usize,
    batch: &mut Vec<Job>,
) {
    let mut i = 0;
    while i < queue.len() && *rows < max {
        let job = &queue[i];
        if job.reply.is_closed() {
            queue.remove(i);
            continue;
        }
        if job.key.as_ref() == Some(key) && *rows + job.rows <= max {
            if let Some(mut job) = queue.remove(i) {
                job.taken = Some(Instant::now());
                *rows += job.rows;
                batch.push(job);
            }
            continue;
        }
        i += 1;
    }
}

/// The batch's inputs stacked on dimension 0, in the first job's input order.
fn merge(batch: &[Job]) -> Result<Vec<(String, Tensor)>, String> {
    let Some(first) = batch.first() else {
        return Ok(vec![]);
    };
    first
        .inputs
        .iter()
        .map(|(name, _)| {
            let parts = batch
                .iter()
                .map(|j| {
                    j.inputs
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, t)| t)
                        .ok_or_else(|| format!("input '{name}' missing from a merged request"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((name.clone(), concat(&parts)?))
        })
        .collect()
}

/// Tensors of one datatype and equal trailing dimensions, stacked on
/// dimension 0.
pub fn concat(parts: &[&Tensor]) -> Result<Tensor, String> {
    let Some(first) = parts.first() else {
        return Err("nothing to stack".into());
    };
    if first.shape.is_empty() || parts.iter().any(|t| t.shape[1..] != first.shape[1..]) {
        return Err("tensors to stack differ after dimension 0".into());
    }
    let rows: usize = parts.iter().map(|t| t.shape[0]).sum();
    let numel: usize = parts.iter().map(|t| t.numel()).sum();
    macro_rules! stack {
        ($variant:ident) => {{
            let mut out = Vec::with_capacity(numel);
            for t in parts {
                match &t.data {
                    TensorData::$variant(v) => out.extend_from_slice(v),
                    other => {
                        return Err(format!(
                            "cannot stack {} with {}",
                            first.dtype(),
                            other.dtype()
                        ))
                    }
                }
            }
            TensorData::$variant(out)
        }};
    }
    let data = match &first.data {
        TensorData::F32(_) => stack!(F32),
        TensorData::F64(_) => stack!(F64),
        TensorData::I64(_) => stack!(I64),
        TensorData::I32(_) => stack!(I32),
        TensorData::I8(_) => stack!(I8),
        TensorData::U8(_) => stack!(U8),
        TensorData::Bool(_) => stack!(Bool),
    };
    let mut shape = first.shape.clone();
    shape[0] = rows;
    Tensor::new(shape, data)
}

/// Each output cut back into the jobs' rows. Fails when an output does not
/// have the batch's rows on dimension 0 (the model does not batch that way).
fn split(
    outputs: Vec<(String, Tensor)>,
    rows: &[usize],
) -> Result<Vec<Vec<(String, Tensor)>>, String> {
    let total: usize = rows.iter().sum();
    let mut parts: Vec<Vec<(String, Tensor)>> = rows
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for (name, t) in &outputs {
        if t.shape.first() != Some(&total) {
            return Err(format!(
                "output '{name}' has shape {:?}, not {total} rows on dimension 0",
                t.shape
            ));
        }
        let per_row: usize = t.shape[1..].iter().product();
        let mut start = 0;
        for (part, &r) in parts.iter_mut().zip(rows) {
            let mut shape = t.shape.clone();
            shape[0] = r;
            part.push((
                name.clone(),
                Tensor {
                    shape,
                    data: t.data.slice(start * per_row, (start + r) * per_row),
                },
            ));
            start += r;
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use optimizer::engine::Engine;
    use optimizer::engine::GraphLevel;
    use optimizer::engine::SessionSettings;
    use optimizer::onnx::{self, data_type, GraphProto};
    use optimizer::onnx_build;

    fn settings() -> SessionSettings {
        SessionSettings::new(GraphLevel::All, 1)
    }

    /// `y = relu(x·W1 + b1)·W2 + b2`: x FP32 [N, 4], y FP32 [N, 3].
    fn mlp_engine() -> Engine {
        Engine::from_bytes(&onnx_build::mlp(4, 16, 3), &settings()).expect("mlp engine")
    }

    /// `y = x * 2 + 1`, elementwise on FP32 [N, S]: both dimensions dynamic,
    /// so requests of different S must be kept apart.
    fn affine_engine() -> Engine {
        let n = |op: &str, ins: &[&str], out: &str| {
            onnx::node(op, &format!("{op}_{out}"), ins, &[out], vec![])
        };
        let m = onnx_build::model(GraphProto {
            name: "affine".into(),
            node: vec![n("Mul", &["x", "two"], "t"), n("Add", &["t", "one"], "y")],
            initializer: vec![
                onnx_build::float_tensor("two", &[], vec![2.0]),
                onnx_build::float_tensor("one", &[], vec![1.0]),
            ],
            input: vec![onnx::value_info("x", data_type::FLOAT, &[None, None])],
            output: vec![onnx::value_info("y", data_type::FLOAT, &[None, None])],
            ..Default::default()
        });
        Engine::from_bytes(&onnx::to_bytes(&m), &settings()).expect("affine engine")
    }

    fn opts(batching: bool, max_batch_size: usize, timeout_ms: u64, queue: usize) -> BatchOptions {
        BatchOptions {
            batching,
            max_batch_size,
            max_batch_timeout: Duration::from_millis(timeout_ms),
            // The merge mechanics: the whole window, whatever the timing.
            adaptive: false,
            max_queue_size: queue,
        }
    }

    fn start(engines: Vec<Engine>, o: BatchOptions) -> Arc<Batcher> {
        let sig = engines[0].signature().clone();
        let engines = engines
            .into_iter()
            .map(|e| Box::new(e) as DynEngine)
            .collect();
        Arc::new(Batcher::start("batcher_test", engines, &sig, o).expect("start"))
    }

    fn x(rows: usize, cols: usize, seed: usize) -> Vec<(String, Tensor)> {
        let data = (0..rows * cols)
            .map(|i| ((i * 31 + seed * 7) % 17) as f32 / 8.0 - 1.0)
            .collect();
        vec![(
            "x".to_string(),
            Tensor::new(vec![rows, cols], TensorData::F32(data)).expect("tensor"),
        )]
    }

    /// Waits for a condition that the code under test makes true by itself;
    /// the bound only keeps a broken build from hanging.
    async fn eventually(what: &str, f: impl Fn() -> bool) {
        for _ in 0..1000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what} did not happen");
    }

    /// The MLP behind a fixed extra delay per call (an engine slow enough
    /// that arrivals can outpace it), noting the name of each thread that
    /// calls it.
    struct Slow(Engine, Duration, Arc<Mutex<Vec<String>>>);

    impl InferenceEngine for Slow {
        fn signature(&self) -> &ModelSignature {
            self.0.signature()
        }

        fn run(
            &mut self,
            inputs: &[(String, Tensor)],
        ) -> Result<Vec<(String, Tensor)>, OptimizerError> {
            let name = std::thread::current().name().unwrap_or("").to_string();
            self.2.lock().expect("names").push(name);
            std::thread::sleep(self.1);
            self.0.run(inputs)
        }
    }

    /// One instance of the MLP taking `delay_ms` longer a call, batching up
    /// to 16 rows with the adaptive wait and a 30 s window.
    fn slow_adaptive(delay_ms: u64) -> Arc<Batcher> {
        let engine = Slow(
            mlp_engine(),
            Duration::from_millis(delay_ms),
            Default::default(),
        );
        let sig = engine.signature().clone();
        let o = BatchOptions {
            adaptive: true,
            ..opts(true, 16, 30_000, 64)
        };
        Arc::new(Batcher::start("batcher_test", vec![Box::new(engine)], &sig, o).expect("start"))
    }

    /// `clients` tasks, each sending `each` requests one after the other
    /// (the next once the last is answered), as load generators do; every
    /// answer.
    async fn closed_loop(b: &Arc<Batcher>, clients: usize, each: usize) -> Vec<Done> {
        let mut tasks = Vec::new();
        for c in 0..clients {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = Vec::new();
                for i in 0..each {
                    done.push(b.submit(x(1, 4, c * each + i)).await.expect("answer"));
                }
                done
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all
    }

    #[tokio::test]
    async fn at_low_load_a_request_runs_at_once_however_long_the_window() {
        // A 30 s window: a batcher that waited for company would hold each
        // request for all of it. One client sends its next request only
        // once answered: nobody else is coming, so nobody is waited for.
        let b = slow_adaptive(2);
        let t0 = Instant::now();
        let done = closed_loop(&b, 1, 20).await;
        for d in &done {
            assert_eq!(d.batch_rows, 1);
            assert!(d.queued < Duration::from_secs(1), "waited {:?}", d.queued);
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn under_load_requests_batch_and_the_wait_ends_with_the_arrivals() {
        // Eight clients against an engine that takes 20 ms a call: requests
        // arrive far faster than it answers, so they are gathered into
        // batches — and the 30 s window is never waited out, because the
        // wait ends once every client's request has arrived.
        let b = slow_adaptive(20);
        let t0 = Instant::now();
        let done = closed_loop(&b, 8, 10).await;
        assert_eq!(done.len(), 80);
        let mean = done.iter().map(|d| d.batch_rows).sum::<usize>() as f64 / done.len() as f64;
        assert!(mean >= 4.0, "mean batch {mean}");
        assert!(done.iter().all(|d| d.queued < Duration::from_secs(5)));
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn concurrent_requests_merge_and_split_back() {
        let mut reference = mlp_engine();
        // The batch fills at 8 rows (1+2+1+3+1), long before the window ends.
        let b = start(vec![mlp_engine()], opts(true, 8, 30_000, 64));
        let rows = [1usize, 2, 1, 3, 1];
        let mut tasks = Vec::new();
        for (i, &r) in rows.iter().enumerate() {
            let b = b.clone();
            tasks.push(tokio::spawn(async move { b.submit(x(r, 4, i)).await }));
        }
        for (i, (task, &r)) in tasks.into_iter().zip(&rows).enumerate() {
            let done = task.await.expect("task").expect("answer");
            assert_eq!(
                done.batch_rows, 8,
                "request {i} ran in a batch of {}",
                done.batch_rows
            );
            let alone = reference.run(&x(r, 4, i)).expect("reference");
            assert_eq!(done.outputs.len(), 1);
            assert_eq!(done.outputs[0].1.shape, vec![r, 3]);
            let (got, want) = (done.outputs[0].1.data.to_f64(), alone[0].1.data.to_f64());
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                    "request {i}: {got:?} != {want:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn different_trailing_shapes_are_not_merged() {
        // Batches fill at 2 rows: each pair of equal shapes makes one.
        let b = start(vec![affine_engine()], opts(true, 2, 30_000, 64));
        let widths = [3usize, 5, 3, 5];
        let mut tasks = Vec::new();
        for (i, &w) in widths.iter().enumerate() {
            let b = b.clone();
            tasks.push(tokio::spawn(async move { b.submit(x(1, w, i)).await }));
        }
        for (i, (task, &w)) in tasks.into_iter().zip(&widths).enumerate() {
            let done = task.await.expect("task").expect("answer");
            assert_eq!(done.batch_rows, 2);
            let input = x(1, w, i);
            let want: Vec<f64> = input[0]
                .1
                .data
                .to_f64()
                .iter()
                .map(|v| v * 2.0 + 1.0)
                .collect();
            assert_eq!(done.outputs[0].1.shape, vec![1, w]);
            assert_eq!(done.outputs[0].1.data.to_f64(), want, "request {i}");
        }
    }

    #[tokio::test]
    async fn a_lone_request_runs_when_the_window_ends() {
        let b = start(vec![mlp_engine()], opts(true, 16, 20, 64));
        // The bound only turns a window that never ends into a failure
        // instead of a hang.
        let done = tokio::time::timeout(Duration::from_secs(60), b.submit(x(1, 4, 0)))
            .await
            .expect("the batch window never ended")
            .expect("answer");
        assert_eq!(done.batch_rows, 1);
        assert_eq!(done.outputs[0].1.shape, vec![1, 3]);
    }

    #[tokio::test]
    async fn without_batching_requests_run_alone() {
        let b = start(
            vec![mlp_engine(), mlp_engine()],
            opts(false, 16, 30_000, 64),
        );
        let mut tasks = Vec::new();
        for i in 0..6 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move { b.submit(x(2, 4, i)).await }));
        }
        for t in tasks {
            let done = t.await.expect("task").expect("answer");
            assert_eq!(done.batch_rows, 2);
            assert_eq!(done.outputs[0].1.shape, vec![2, 3]);
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        // The only worker holds a width-3 request and waits for more of its
        // kind; width-5 requests cannot join it and stay queued.
        let b = start(vec![affine_engine()], opts(true, 8, 30_000, 2));
        let held = {
            let b = b.clone();
            tokio::spawn(async move { b.submit(x(1, 3, 0)).await })
        };
        eventually("the worker taking the first request", || {
            !b.shared.lock().collecting.is_empty()
        })
        .await;
        let mut queued = Vec::new();
        for i in 0..2 {
            let b = b.clone();
            queued.push(tokio::spawn(async move { b.submit(x(1, 5, i)).await }));
        }
        eventually("two requests queued", || b.shared.lock().queue.len() == 2).await;
        match b.submit(x(1, 5, 9)).await {
            Err(e @ BatchError::QueueFull { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("max_queue_size = 2"), "{msg}");
            }
            other => panic!("expected a full queue, got {other:?}"),
        }
        // Closing ends the wait: what was taken or queued is still answered.
        b.close();
        assert_eq!(held.await.expect("task").expect("answer").batch_rows, 1);
        for t in queued {
            t.await.expect("task").expect("answer");
        }
    }

    #[tokio::test]
    async fn a_gathering_worker_does_not_hold_up_other_shapes() {
        // Worker one gathers width-3 requests for up to 30 s; a width-5
        // request cannot join that batch, so the idle worker two takes it
        // at once (and gathers width 5) instead of leaving it queued.
        let b = start(
            vec![affine_engine(), affine_engine()],
            opts(true, 8, 30_000, 8),
        );
        let mut tasks = Vec::new();
        for (i, w) in [3usize, 5].into_iter().enumerate() {
            let bb = b.clone();
            tasks.push(tokio::spawn(async move { bb.submit(x(1, w, i)).await }));
            eventually("a worker gathering each width", || {
                b.shared.lock().collecting.len() == i + 1
            })
            .await;
        }
        assert!(b.shared.lock().queue.is_empty());
        b.close();
        for (t, w) in tasks.into_iter().zip([3usize, 5]) {
            let done = t.await.expect("task").expect("answer");
            assert_eq!(
                (done.batch_rows, done.outputs[0].1.shape.clone()),
                (1, vec![1, w])
            );
        }
    }

    /// `y = table[ids]`: ids INT64 [N, S], y FP32 [N, S, 2]; an id outside
    /// the 10-row table makes the engine call fail.
    fn lookup_engine() -> Engine {
        let m = onnx_build::model(GraphProto {
            name: "lookup".into(),
            node: vec![onnx::node(
                "Gather",
                "gather",
                &["table", "ids"],
                &["y"],
                vec![],
            )],
            initializer: vec![onnx_build::float_tensor(
                "table",
                &[10, 2],
                (0..20).map(|i| i as f32).collect(),
            )],
            input: vec![onnx::value_info("ids", data_type::INT64, &[None, None])],
            output: vec![onnx::value_info(
                "y",
                data_type::FLOAT,
                &[None, None, Some(2)],
            )],
            ..Default::default()
        });
        Engine::from_bytes(&onnx::to_bytes(&m), &settings()).expect("lookup engine")
    }

    #[tokio::test]
    async fn a_failing_merged_call_fails_only_the_bad_request() {
        let b = start(vec![lookup_engine()], opts(true, 3, 30_000, 64));
        let ids = |v: Vec<i64>| {
            vec![(
                "ids".to_string(),
                Tensor::new(vec![1, 2], TensorData::I64(v)).expect("tensor"),
            )]
        };
        let mut tasks = Vec::new();
        for v in [vec![1, 2], vec![3, 99], vec![4, 0]] {
            let (b, inputs) = (b.clone(), ids(v));
            tasks.push(tokio::spawn(async move { b.submit(inputs).await }));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.expect("task"));
        }
        let good = |r: &Result<Done, BatchError>| match r {
            Ok(d) => d.outputs[0].1.data.to_f64(),
            Err(e) => panic!("a good request failed: {e}"),
        };
        assert_eq!(good(&answers[0]), vec![2.0, 3.0, 4.0, 5.0]);
        assert!(
            matches!(answers[1], Err(BatchError::Engine(_))),
            "the out-of-range id must fail: {:?}",
            answers[1]
        );
        assert_eq!(good(&answers[2]), vec![8.0, 9.0, 0.0, 1.0]);
    }

    #[tokio::test]
    async fn a_closed_queue_of_abandoned_requests_lets_its_worker_go() {
        // The only worker is in a 300 ms call; two requests queue behind it
        // and their callers give up; the queue is closed. Back from its
        // call, the worker drops the abandoned requests and, the queue now
        // drained, exits.
        let (b, _) = noting(1, 300);
        let live = b.live_workers();
        let first = submitting(&b, x(1, 4, 0));
        eventually("the worker taking the first request", || {
            let st = b.shared.lock();
            st.queue.is_empty() && st.idle.is_empty()
        })
        .await;
        let mut abandoned = Vec::new();
        for i in 1..3 {
            abandoned.push(submitting(&b, x(1, 4, i)));
        }
        eventually("two requests queued", || b.shared.lock().queue.len() == 2).await;
        for t in &abandoned {
            t.abort();
        }
        b.close();
        first.await.expect("task").expect("answer");
        eventually("the worker exiting", || live.load(Ordering::SeqCst) == 0).await;
    }

    #[tokio::test]
    async fn dropping_the_batcher_stops_its_workers() {
        let b = Batcher::start(
            "batcher_test",
            vec![Box::new(mlp_engine()), Box::new(mlp_engine())],
            &mlp_engine().signature().clone(),
            opts(true, 4, 5, 8),
        )
        .expect("start");
        b.submit(x(1, 4, 0)).await.expect("answer");
        let live = b.live_workers();
        assert_eq!(live.load(Ordering::SeqCst), 2);
        drop(b);
        eventually("both workers exiting", || live.load(Ordering::SeqCst) == 0).await;
    }

    /// `n` instances of the MLP taking `delay_ms` a call, batching off; and
    /// the names of the threads that called them.
    fn noting(n: usize, delay_ms: u64) -> (Arc<Batcher>, Arc<Mutex<Vec<String>>>) {
        let names = Arc::new(Mutex::new(Vec::new()));
        let engines: Vec<DynEngine> = (0..n)
            .map(|_| {
                Box::new(Slow(
                    mlp_engine(),
                    Duration::from_millis(delay_ms),
                    names.clone(),
                )) as DynEngine
            })
            .collect();
        let sig = mlp_engine().signature().clone();
        let b = Batcher::start("batcher_test", engines, &sig, opts(false, 16, 5, 64));
        (Arc::new(b.expect("start")), names)
    }

    /// `inputs` submitted from a task of their own.
    fn submitting(
        b: &Arc<Batcher>,
        inputs: Vec<(String, Tensor)>,
    ) -> tokio::task::JoinHandle<Result<Done, BatchError>> {
        let b = b.clone();
        tokio::spawn(async move { b.submit(inputs).await })
    }

    fn by_worker(names: &Mutex<Vec<String>>) -> (usize, usize) {
        let names = names.lock().expect("names");
        let workers = names.iter().filter(|n| n.starts_with("serve-")).count();
        (workers, names.len() - workers)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_on_an_idle_instance_runs_on_its_own_thread() {
        let (b, names) = noting(1, 0);
        let mut reference = mlp_engine();
        for i in 0..5 {
            let done = b.submit(x(1, 4, i)).await.expect("answer");
            let want = reference.run(&x(1, 4, i)).expect("reference");
            assert_eq!(done.outputs, want);
            assert_eq!((done.batch_rows, done.ahead), (1, 0));
        }
        // No hand-off to the instance's worker thread, and back.
        assert_eq!(by_worker(&names), (0, 5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_behind_a_borrowed_engine_queue_for_it() {
        // The first request borrows the only engine for 300 ms; the others
        // find it gone and queue, and the worker runs them once it is back.
        let (b, names) = noting(1, 300);
        let first = submitting(&b, x(1, 4, 0));
        eventually("the engine borrowed", || b.shared.lock().idle.is_empty()).await;
        let mut rest = Vec::new();
        for i in 1..4 {
            rest.push(submitting(&b, x(1, 4, i)));
        }
        first.await.expect("task").expect("answer");
        for t in rest {
            t.await.expect("task").expect("answer");
        }
        assert_eq!(by_worker(&names), (3, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_leaving_takes_an_engine_with_it_even_one_lent_out() {
        // Two instances; a request holds one for 500 ms. Retiring one drops
        // the idle one at once; closing waits for the borrowed one.
        let (b, _) = noting(2, 500);
        let live = b.live_workers();
        let call = submitting(&b, x(1, 4, 0));
        eventually("one engine borrowed", || b.shared.lock().idle.len() == 1).await;
        assert_eq!(b.retire(1), 1);
        eventually("the idle instance retired", || {
            live.load(Ordering::SeqCst) == 1
        })
        .await;
        assert!(
            b.shared.lock().idle.is_empty(),
            "the idle engine was dropped"
        );
        b.close();
        assert_eq!(
            live.load(Ordering::SeqCst),
            1,
            "the lent engine is still in its call"
        );
        call.await.expect("task").expect("answer");
        eventually("the last worker leaving with the engine back", || {
            live.load(Ordering::SeqCst) == 0
        })
        .await;
    }

    #[test]
    fn concat_and_split_are_inverse() {
        let a = Tensor::new(vec![1, 2], TensorData::I64(vec![1, 2])).unwrap();
        let b = Tensor::new(vec![2, 2], TensorData::I64(vec![3, 4, 5, 6])).unwrap();
        let c = concat(&[&a, &b]).unwrap();
        assert_eq!(c.shape, vec![3, 2]);
        assert_eq!(c.data, TensorData::I64(vec![1, 2, 3, 4, 5, 6]));
        let parts = split(vec![("y".into(), c)], &[1, 2]).unwrap();
        assert_eq!(parts[0][0].1, a);
        assert_eq!(parts[1][0].1, b);
        let wrong = Tensor::new(vec![1, 3], TensorData::I64(vec![1, 2, 3])).unwrap();
        assert!(concat(&[&a, &wrong]).is_err());
        let f = Tensor::new(vec![1, 2], TensorData::F32(vec![1.0, 2.0])).unwrap();
        assert!(concat(&[&a, &f]).is_err());
        // An output without the batch's rows cannot be split.
        assert!(split(vec![("y".into(), a)], &[1, 2]).is_err());
    }

    #[test]
    fn options_come_from_the_config_with_defaults() {
        // A service's batcher always adapts its wait.
        assert_eq!(
            BatchOptions::from_rpc(None),
            BatchOptions {
                adaptive: true,
                ..opts(
                    false,
                    DEFAULT_MAX_BATCH_SIZE,
                    DEFAULT_MAX_BATCH_TIMEOUT_MS,
                    DEFAULT_MAX_QUEUE_SIZE
                )
            }
        );
        let rpc = Rpc {
            batching: Some(true),
            max_batch_size: Some(8),
            max_batch_timeout: Some(u64::MAX),
            max_queue_size: Some(3),
            ..Default::default()
        };
        let o = BatchOptions::from_rpc(Some(&rpc));
        assert!(o.batching);
        assert_eq!((o.max_batch_size, o.max_queue_size), (8, 3));
        assert_eq!(o.max_batch_timeout, MAX_BATCH_TIMEOUT);
    }
}
