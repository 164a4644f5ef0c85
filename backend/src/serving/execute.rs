//! The one way into a service's engines: every protocol decodes its
//! request to tensors and calls [`execute`].

use std::sync::Arc;
use std::time::Duration;

use optimizer::tensor::Tensor;

use crate::serving::batcher::BatchError;
use crate::serving::instances::ServicePool;
use crate::serving::ServingError;

/// What `observed` learns of a prediction without the protocols passing
/// it along: the version that served it (set when its pool is chosen) and
/// its time in the queue (set by `execute`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Served {
    pub version: Option<u32>,
    pub queued: Option<Duration>,
}

tokio::task_local! {
    static SERVED: std::cell::Cell<Served>;
}

/// Records the version whose pool takes the prediction being served.
pub fn note_version(version: u32) {
    // Outside `observed` (no scope) there is no one to tell.
    let _ = SERVED.try_with(|s| {
        s.set(Served {
            version: Some(version),
            ..s.get()
        })
    });
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
    let _ = SERVED.try_with(|s| {
        s.set(Served {
            queued: Some(done.queued),
            ..s.get()
        })
    });
    Ok((done.outputs, done.engine))
}

/// Runs `f` with a slot for what its prediction learns on the way (see
/// [`Served`]); returns its result and that.
pub async fn observing<T>(f: impl std::future::Future<Output = T>) -> (T, Served) {
    SERVED
        .scope(std::cell::Cell::new(Served::default()), async {
            let r = f.await;
            (r, SERVED.with(|s| s.get()))
        })
        .await
}
