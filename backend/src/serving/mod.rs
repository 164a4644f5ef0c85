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

/// Bodies longer than this are decoded on a blocking thread.
pub const OFFLOAD_BYTES: usize = 256 << 10;

/// Decodes a request body with `decode`: here for a small body, on the
/// blocking pool for one over [`OFFLOAD_BYTES`]. Parsing megabytes of JSON
/// or protobuf, or inflating a body, takes milliseconds to seconds that
/// would otherwise hold an async worker thread every other connection
/// needs; for a small body the hand-over would cost more than the work.
pub async fn decode_body<T, F>(body: bytes::Bytes, decode: F) -> Result<T, ServingError>
where
    T: Send + 'static,
    F: FnOnce(&[u8]) -> Result<T, ServingError> + Send + 'static,
{
    if body.len() <= OFFLOAD_BYTES {
        return decode(&body);
    }
    tokio::task::spawn_blocking(move || decode(&body))
        .await
        .map_err(|e| ServingError::Internal(format!("decoding the body: {e}")))?
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A large body is decoded off the runtime's thread, a small one on it
    /// (a current-thread runtime: its one thread is the test's).
    #[tokio::test(flavor = "current_thread")]
    async fn large_bodies_are_decoded_off_the_runtime() {
        let here = std::thread::current().id();
        let on = |n: usize| async move {
            decode_body(bytes::Bytes::from(vec![b' '; n]), |b| {
                Ok((b.len(), std::thread::current().id()))
            })
            .await
            .unwrap()
        };
        let (len, small) = on(1024).await;
        assert_eq!((len, small), (1024, here));
        let (len, large) = on(OFFLOAD_BYTES + 1).await;
        assert_eq!(len, OFFLOAD_BYTES + 1);
        assert_ne!(
            large, here,
            "a large body was decoded on the runtime thread"
        );
        // A decoder's error comes back as it was.
        let e = decode_body(bytes::Bytes::from(vec![0u8; OFFLOAD_BYTES * 2]), |_| {
            Err::<(), _>(ServingError::BadRequest("bad".into()))
        })
        .await
        .unwrap_err();
        assert!(matches!(e, ServingError::BadRequest(m) if m == "bad"));
    }
}
