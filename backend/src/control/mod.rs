//! The control plane's state: the settings of the process, the store (the
//! database), deploy logs and their fan-out, resource groups and GPUs,
//! metrics and request statistics. Nothing here touches a user's model,
//! and nothing here knows HTTP.

pub mod datadir;
pub mod example;
pub mod gpu;
pub mod load;
pub mod logbus;
pub mod metrics;
pub mod notify;
pub mod objects;
pub mod recent;
pub mod requests;
pub mod resources;
pub mod sealing;
pub mod settings;
pub mod store;
pub mod tokens;

pub use settings::Settings;
pub use store::{Store, StoreError};
