//! TorchScript (`torch.jit.save` files, the `pytorch_*` processors) through
//! libtorch, with the `tch` crate: the engine ([`engine`]), freezing through
//! libtorch's C++ API ([`freeze`]), libtorch's CUDA backend found at run time
//! ([`cuda`]) and the o1 search for TorchScript modules ([`o1`]). Built only
//! with the `torch` feature.

pub mod build;
pub mod cuda;
pub mod engine;
pub mod freeze;
pub mod o1;

pub use engine::TorchEngine;
