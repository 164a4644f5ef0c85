//! The Whetstone server and CLI (`whet`): REST API, deploy log streams,
//! the durable job queue and its workers, serving instances and the
//! prediction endpoint.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod batcher;
pub mod cli;
pub mod client;
pub mod console;
pub mod deploy;
pub mod eas;
pub mod error;
pub mod fetch;
pub mod gpu;
pub mod instances;
pub mod kserve_binary;
pub mod logbus;
pub mod metrics;
pub mod openapi;
pub mod predict;
pub mod recent;
pub mod resources;
pub mod server;
pub mod serving;
pub mod shares;
pub mod state;
pub mod store;

pub use runner::sandbox;
