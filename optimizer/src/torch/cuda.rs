//! libtorch's CUDA backend, found at run time (as candle and cudarc do: a
//! probe, never a link-time requirement).
//!
//! `libtorch_cuda.so` registers libtorch's CUDA hooks when it is loaded, but
//! nothing in our code calls into it, so the linker's `--as-needed` drops it
//! and tch then sees no CUDA at all. Loading it ourselves (`RTLD_GLOBAL`)
//! brings the hooks back. It needs the CUDA 13 libraries the full PyTorch
//! wheel depends on (cuBLAS, cuDNN, NCCL, …), which the minimal CPU install
//! leaves out: `scripts/install-libtorch.sh --gpu` adds them. Without them,
//! or without a driver, TorchScript is CPU-only and GPU deploys say why.

use std::sync::OnceLock;

/// Where libtorch's CUDA backend stands in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TorchCuda {
    /// Loaded, with this many devices visible to libtorch.
    Available { devices: usize },
    /// Not usable, and why (in words a user can act on).
    Unavailable(String),
}

/// How to get libtorch's CUDA libraries, for messages.
pub const TORCH_CUDA_HINT: &str = "install libtorch's CUDA libraries with `scripts/install-libtorch.sh --gpu` and `source` the env.sh it names before `whet serve`";

/// Loads libtorch's CUDA backend once and reports what libtorch then sees.
pub fn probe() -> &'static TorchCuda {
    static STATUS: OnceLock<TorchCuda> = OnceLock::new();
    STATUS.get_or_init(load)
}

fn load() -> TorchCuda {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // By name first: the binary's run path (whet records libtorch's lib
    // folder) or LD_LIBRARY_PATH find it; then next to LIBTORCH, which the
    // test binaries and `cargo run` have.
    let mut candidates = vec![std::path::PathBuf::from("libtorch_cuda.so")];
    if let Some(root) = std::env::var_os("LIBTORCH") {
        candidates.push(std::path::Path::new(&root).join("lib/libtorch_cuda.so"));
    }
    let mut why = Vec::new();
    for path in &candidates {
        // SAFETY: loading libtorch_cuda runs its static initializers, which
        // register libtorch's CUDA hooks in the libtorch already loaded; it
        // has no other side effects and is never unloaded (forgotten below).
        match unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) } {
            Ok(lib) => {
                std::mem::forget(lib);
                let devices = tch::Cuda::device_count().max(0) as usize;
                if devices == 0 || !tch::Cuda::is_available() {
                    return TorchCuda::Unavailable(
                        "libtorch's CUDA backend loaded, but it sees no CUDA device (no NVIDIA driver, or no GPU)".into(),
                    );
                }
                return TorchCuda::Available { devices };
            }
            // libloading's own text is "dlopen failed"; dlerror()'s, which
            // names the missing library, is its source.
            Err(e) => why.push(match std::error::Error::source(&e) {
                Some(detail) => detail.to_string(),
                None => e.to_string(),
            }),
        }
    }
    why.dedup();
    TorchCuda::Unavailable(format!(
        "libtorch's CUDA backend cannot be loaded ({}): {TORCH_CUDA_HINT}",
        why.join("; ")
    ))
}

/// The tch device for a CUDA ordinal, checked against what libtorch sees.
pub fn device(device_id: i32) -> crate::error::Result<tch::Device> {
    match probe() {
        TorchCuda::Available { devices } if (device_id as usize) < *devices && device_id >= 0 => {
            Ok(tch::Device::Cuda(device_id as usize))
        }
        TorchCuda::Available { devices } => Err(crate::error::OptimizerError::Provider(format!(
            "cuda:{device_id} is not one of the {devices} CUDA devices libtorch sees"
        ))),
        TorchCuda::Unavailable(why) => Err(crate::error::OptimizerError::Provider(format!(
            "TorchScript on cuda:{device_id}: {why}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_answers_without_panicking_and_says_why_not() {
        eprintln!("libtorch CUDA: {:?}", probe());
        match probe() {
            TorchCuda::Available { devices } => assert!(*devices > 0),
            TorchCuda::Unavailable(why) => {
                assert!(why.contains("CUDA"), "{why}");
                // A GPU deploy gets the reason as a provider error, never a
                // CPU engine.
                let e = device(0).expect_err("no CUDA: no device");
                assert!(e.to_string().contains("cuda:0"), "{e}");
            }
        }
    }
}
