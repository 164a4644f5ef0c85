//! Serving: each service instance is a runner process (the `runner`
//! crate: `whet-runner`, or `whet runner` for TorchScript) that the server
//! supervises and talks to over a Unix socket (`supervisor.rs`). The queue
//! and the batcher (`batcher.rs`) stay in the server and see every runner
//! as an engine; `instances.rs` keeps each running service's pool. The
//! protocols (`eas`, `kserve`) decode a request to tensors and call
//! `execute`, the one way into a service's engines.

pub mod batcher;
pub mod eas;
pub mod execute;
pub mod instances;
pub mod kserve;
pub mod supervisor;
pub mod telemetry;

pub use runner::wire;

/// What can go wrong serving a prediction. The HTTP edge maps each kind to
/// its status; the message is the client's to read.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// The request is malformed or does not fit the model's signature.
    #[error("{0}")]
    BadRequest(String),
    /// A signed request whose signature does not hold.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The service's queue is full (`metadata.rpc.max_queue_size`).
    #[error("{0}")]
    TooManyRequests(String),
    /// The service is not running, or its runner is restarting.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}
