//! GPU discovery at start: which CUDA devices this server has (ordinal, name,
//! memory), through the CUDA driver API loaded at run time (`cudarc` with
//! dynamic loading), so the binary builds and runs on machines without CUDA.
//!
//! The driver API panics when `libcuda` is missing, so every call is behind
//! `is_culib_present()`, and the whole probe runs under `catch_unwind`: a
//! broken or too-old driver must cost the server its GPUs, never its life.

use serde::Serialize;

/// One CUDA device found at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct GpuDevice {
    /// The CUDA ordinal (what `--device cuda:N` and ONNX Runtime's `device_id` use).
    pub ordinal: u32,
    /// The driver's name for it, e.g. "Tesla T4" or "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Total device memory, in bytes.
    pub memory_bytes: u64,
}

/// What discovery found: the devices, or why there are none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct GpuInventory {
    pub devices: Vec<GpuDevice>,
    /// Why no device is usable, when `devices` is empty (no driver, driver
    /// error, zero devices).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// Why there is no GPU when the driver library is missing.
pub const NO_DRIVER: &str = "no CUDA driver found";

/// The one line the server logs at start when there is no driver at all.
pub const NO_DRIVER_LOG: &str = "no CUDA driver found: GPU groups disabled, serving on CPU";

impl GpuInventory {
    /// No GPU, with the reason.
    pub fn none(reason: impl Into<String>) -> GpuInventory {
        GpuInventory {
            devices: Vec::new(),
            unavailable: Some(reason.into()),
        }
    }

    /// An inventory of given devices (discovery's result, or a test's).
    pub fn of(devices: Vec<GpuDevice>) -> GpuInventory {
        if devices.is_empty() {
            return GpuInventory::none("the CUDA driver reports no devices");
        }
        GpuInventory {
            devices,
            unavailable: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Why there is no GPU, for error messages.
    pub fn reason(&self) -> &str {
        self.unavailable
            .as_deref()
            .unwrap_or("no CUDA device found")
    }
}

/// Probes the CUDA driver. Never panics; with no driver the inventory is
/// empty and says so.
pub fn discover() -> GpuInventory {
    // SAFETY: only tries to open the driver library by its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return GpuInventory::none(NO_DRIVER);
    }
    match std::panic::catch_unwind(probe) {
        Ok(Ok(devices)) => GpuInventory::of(devices),
        Ok(Err(e)) => GpuInventory::none(format!("the CUDA driver failed: {e}")),
        Err(_) => GpuInventory::none("the CUDA driver could not be used (it lacks a function this server calls; is it older than CUDA 13?)"),
    }
}

fn probe() -> Result<Vec<GpuDevice>, cudarc::driver::DriverError> {
    use cudarc::driver::result::{device, init};
    init()?;
    let count = device::get_count()?;
    let mut out = Vec::new();
    for ordinal in 0..count.max(0) {
        let dev = device::get(ordinal)?;
        let name = device::get_name(dev)?;
        // SAFETY: `dev` was returned by `device::get` just above.
        let memory = unsafe { device::total_mem(dev) }?;
        out.push(GpuDevice {
            ordinal: ordinal as u32,
            name,
            memory_bytes: memory as u64,
        });
    }
    Ok(out)
}

/// Discovers GPUs and logs what was found: one line when there is no driver.
pub fn discover_and_log() -> GpuInventory {
    let inv = discover();
    if inv.is_empty() {
        match inv.unavailable.as_deref() {
            Some(NO_DRIVER) | None => tracing::info!("{NO_DRIVER_LOG}"),
            Some(other) => tracing::warn!("{other}: GPU groups disabled, serving on CPU"),
        }
    } else {
        for d in &inv.devices {
            tracing::info!(
                "GPU {}: {} ({:.1} GiB)",
                d.ordinal,
                d.name,
                d.memory_bytes as f64 / (1u64 << 30) as f64
            );
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_without_a_gpu_says_why_and_does_not_panic() {
        let inv = discover();
        // On a machine with a working driver and devices this holds too: the
        // point is that the probe returns either devices or a reason.
        if inv.is_empty() {
            assert!(inv.unavailable.is_some(), "{inv:?}");
            assert!(!inv.reason().is_empty());
        } else {
            assert!(inv.unavailable.is_none());
            assert!(inv.devices.iter().all(|d| !d.name.is_empty()));
        }
        // This build machine has no driver at all: the exact one-line reason.
        // SAFETY: only tries to open the driver library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            assert_eq!(inv, GpuInventory::none(NO_DRIVER));
        }
    }

    #[test]
    fn an_empty_device_list_is_no_gpu() {
        let inv = GpuInventory::of(vec![]);
        assert!(inv.is_empty());
        assert!(inv.reason().contains("no devices"));
    }
}
