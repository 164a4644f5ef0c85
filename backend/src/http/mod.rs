//! The HTTP edge: the server's accept loop and router, the management API
//! (services, teams, users, shares, resource groups), the prediction
//! routes (and their gRPC twin on `--grpc-addr`, `grpc.rs`), the OpenAPI
//! document and the console's files. Handlers check who
//! is calling, then call into `control`, `deploy` and `serving`; their
//! errors become statuses here and nowhere else (`error.rs`).

pub mod accounts;
pub mod api;
pub mod auth;
pub mod body;
pub mod console;
pub mod error;
pub mod forward;
pub mod grpc;
pub mod openapi;
pub mod predict;
pub mod resources;
pub mod security;
pub mod server;
pub mod shares;
pub mod state;
pub mod tls;
