//! Serving: each service instance is a runner process (the `runner`
//! crate: `whet-runner`, or `whet runner` for TorchScript) that the server
//! supervises and talks to over a Unix socket (`supervisor.rs`). The queue
//! and the batcher stay in the server and see every runner as an engine.

pub mod supervisor;

pub use runner::wire;
