//! The Whetstone server and CLI (`whet`): REST API, deploy log streams,
//! the durable job queue and its workers, serving instances and the
//! prediction endpoint.

pub mod accounts;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod console;
pub mod deploy;
pub mod error;
pub mod fetch;
pub mod instances;
pub mod logbus;
pub mod metrics;
pub mod openapi;
pub mod predict;
pub mod recent;
pub mod server;
pub mod shares;
pub mod state;
pub mod store;
