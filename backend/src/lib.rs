//! The Whetstone server and CLI (`whet`), in layers that import downward
//! only:
//!
//! - `cli`: the client commands (and local tools: `optimize`, `bench`,
//!   `example-model`); it talks to a server over HTTP only.
//! - `http`: the edge — routes, extractors, OpenAPI, console, errors as
//!   statuses.
//! - `deploy`: the durable deploy worker, resolving a model, the inspection
//!   and optimizer children, artifacts.
//! - `serving`: the runner processes and their supervisor, the queue and
//!   batcher, the EAS and KServe codecs.
//! - `control`: settings, the store, logs, resources, metrics.

pub mod cli;
pub mod control;
pub mod deploy;
pub mod http;
pub mod serving;

pub use runner::sandbox;
