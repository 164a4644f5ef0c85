//! The Blade optimizer: inspect a model, build candidate artifacts, verify each
//! against the original on test data, time each over the declared input
//! shapes, and keep the fastest that passes. The original model is always a
//! candidate, so the result is never slower or less accurate than the input.
//!
//! The public API is what the other crates need: the artifact format
//! ([`artifact`]: key, write, load, verify), [`inspect`], the optimizer's
//! entry point ([`optimize`], with `OptimizeOptions::from_model_info`), the
//! engines behind one trait for the runner ([`engine`], [`torch`]), test
//! data and tensors ([`data`], [`tensor`]), finding ONNX Runtime
//! ([`runtime`]) and small models built in code ([`onnx_build`]). The passes,
//! the quantizer, the verifier, the timing and the importers are private;
//! the `internals` feature makes them public for this crate's own
//! integration tests and benches and for tests elsewhere that build graphs
//! by hand. No non-test build enables it.

pub mod artifact;
pub mod data;
pub mod engine;
pub mod error;
pub mod inspect;
pub mod onnx_build;
pub mod optimize;
pub mod runtime;
pub mod tensor;
#[cfg(feature = "torch")]
pub mod torch;

#[cfg(feature = "internals")]
pub mod bench;
#[cfg(not(feature = "internals"))]
mod bench;
#[cfg(feature = "internals")]
pub mod onnx;
#[cfg(not(feature = "internals"))]
mod onnx;
#[cfg(feature = "internals")]
pub mod passes;
#[cfg(not(feature = "internals"))]
mod passes;
#[cfg(feature = "internals")]
pub mod quantize;
#[cfg(not(feature = "internals"))]
mod quantize;
#[cfg(feature = "internals")]
pub mod tf;
#[cfg(not(feature = "internals"))]
mod tf;
#[cfg(feature = "internals")]
pub mod verify;
#[cfg(not(feature = "internals"))]
mod verify;

pub use error::{OptimizerError, Result};
