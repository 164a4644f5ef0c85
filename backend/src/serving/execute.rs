//! The one way into a service's engines: every protocol decodes its
//! request to tensors and calls [`execute`].

use std::sync::Arc;
use std::time::Duration;

use optimizer::tensor::Tensor;

use crate::serving::batcher::BatchError;
use crate::serving::instances::ServicePool;
use crate::serving::ServingError;

/// What `observed` learns of a prediction without the protocols passing
/// it along: the version that served it (set when its pool is chosen), its
/// body (for the request log; a shared reference, not a copy) and how its
/// time went in the queue, the batch and the engine (set by `execute`).
#[derive(Debug, Clone, Default)]
pub struct Served {
    pub version: Option<u32>,
    pub request: Option<bytes::Bytes>,
    pub timing: Option<Timing>,
}

/// Where a prediction's time went between the queue and the engine.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// From entering the queue to the engine call, batch filling included.
    pub queued: Duration,
    /// Of that, waiting for the batch to fill.
    pub gathered: Duration,
    pub engine: Duration,
    /// When the engine call started.
    pub started_at: std::time::SystemTime,
    /// Rows of the engine call (the whole batch).
    pub batch_rows: usize,
    /// Requests ahead of it in the queue when it came.
    pub ahead: usize,
}

tokio::task_local! {
    static SERVED: std::cell::RefCell<Served>;
}

/// Outside `observed` (no scope) there is no one to tell.
fn note(f: impl FnOnce(&mut Served)) {
    let _ = SERVED.try_with(|s| f(&mut s.borrow_mut()));
}

/// Records the version whose pool takes the prediction being served.
pub fn note_version(version: u32) {
    note(|s| s.version = Some(version));
}

/// Records the body of the prediction being served.
pub fn note_request(body: &bytes::Bytes) {
    note(|s| s.request = Some(body.clone()));
}

/// Runs decoded inputs on the service's engines. Every protocol goes
/// through here, so queueing, batching and instance choice live in one
/// place (the pool's queue, `batcher.rs`). Returns the outputs and the time
/// spent in the engine call.
pub async fn execute(
    pool: Arc<ServicePool>,
    inputs: Vec<(String, Tensor)>,
) -> Result<(Vec<(String, Tensor)>, Duration), ServingError> {
    let done = pool.run(inputs).await.map_err(|e| match e {
        BatchError::QueueFull { .. } => {
            ServingError::TooManyRequests(format!("service '{}': {e}", pool.name))
        }
        BatchError::Engine(e @ optimizer::OptimizerError::BadInput { .. }) => {
            ServingError::BadRequest(e.to_string())
        }
        BatchError::Engine(e @ optimizer::OptimizerError::Unavailable(_)) => {
            ServingError::Unavailable(format!("service '{}': {e}", pool.name))
        }
        BatchError::Engine(other) => ServingError::Internal(other.to_string()),
        BatchError::Stopped => ServingError::Unavailable(format!("service '{}': {e}", pool.name)),
    })?;
    note(|s| {
        s.timing = Some(Timing {
            queued: done.queued,
            gathered: done.gathered,
            engine: done.engine,
            started_at: done.started_at,
            batch_rows: done.batch_rows,
            ahead: done.ahead,
        })
    });
    Ok((done.outputs, done.engine))
}

/// Runs `f` with a slot for what its prediction learns on the way (see
/// [`Served`]); returns its result and that.
pub async fn observing<T>(f: impl std::future::Future<Output = T>) -> (T, Served) {
    SERVED
        .scope(std::cell::RefCell::new(Served::default()), async {
            let r = f.await;
            (r, SERVED.with(|s| s.take()))
        })
        .await
}
