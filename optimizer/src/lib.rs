//! The Blade optimizer: inspect a model, build candidate artifacts, verify each
//! against the original on test data, time each over the declared input
//! shapes, and keep the fastest that passes. The original model is always a
//! candidate, so the result is never slower or less accurate than the input.

pub mod artifact;
pub mod bench;
pub mod data;
pub mod engine;
pub mod error;
pub mod onnx;
pub mod onnx_build;
pub mod optimize;
pub mod passes;
pub mod quantize;
pub mod runtime;
pub mod tensor;
pub mod tf;
#[cfg(feature = "torch")]
pub mod torch;
pub mod verify;

pub use error::{OptimizerError, Result};
