//! Everything the server, the CLI, the optimizer and the console agree on:
//! the EAS service config, its validation, and the API/event types.
//!
//! Invariant: this crate does no I/O and builds for `wasm32-unknown-unknown`.

pub mod api;
pub mod config;
pub mod processor;
pub mod validate;

pub use config::ServiceConfig;
pub use validate::{parse_and_validate, validate, ValidationError};
