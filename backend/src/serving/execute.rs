//! The one way into a service's engines: every protocol decodes its
//! request to tensors and calls [`execute`].

use std::sync::Arc;
use std::time::Duration;

use optimizer::tensor::Tensor;

use crate::serving::batcher::BatchError;
use crate::serving::instances::ServicePool;
use crate::serving::ServingError;

tokio::task_local! {
    /// The queue time of the prediction being served: set by `execute`,
    /// read by `observed`, so protocols need not pass it along.
    static QUEUED: std::cell::Cell<Option<Duration>>;
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
    // Outside `observed` (no scope) there is no one to tell.
    let _ = QUEUED.try_with(|q| q.set(Some(done.queued)));
    Ok((done.outputs, done.engine))
}

/// Runs `f` with a slot for the queue time of the prediction it makes;
/// returns its result and that time (None when it never reached a queue).
pub async fn with_queue_time<T>(f: impl std::future::Future<Output = T>) -> (T, Option<Duration>) {
    QUEUED
        .scope(std::cell::Cell::new(None), async {
            let r = f.await;
            (r, QUEUED.with(|q| q.get()))
        })
        .await
}
