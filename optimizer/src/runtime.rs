//! Finding and loading the ONNX Runtime shared library.
//!
//! `ort` is built with `load-dynamic`: nothing is linked at build time, and its
//! first call panics when no library can be found. We look the library up
//! ourselves, in a fixed order, and turn "not found" into an error that says how
//! to install it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{OptimizerError, Result};

/// The ONNX Runtime release the project is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";

static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();

/// Where the installer puts the library by default.
pub fn default_install_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("whetstone/onnxruntime"))
}

/// Candidate library paths, most specific first.
pub fn library_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for var in ["WHET_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(p) = std::env::var_os(var) {
            out.push(PathBuf::from(p));
        }
    }
    let file = format!("libonnxruntime.so.{ORT_VERSION}");
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push(dir.join(&file));
            out.push(dir.join("libonnxruntime.so"));
        }
    }
    if let Some(dir) = std::env::var_os("WHET_ORT_DIR").map(PathBuf::from) {
        out.push(dir.join(&file));
    }
    if let Some(dir) = default_install_dir() {
        out.push(dir.join(&file));
        out.push(dir.join("libonnxruntime.so"));
    }
    out.push(PathBuf::from("/usr/local/lib").join(&file));
    out
}

fn find_library() -> Option<PathBuf> {
    library_candidates().into_iter().find(|p| p.is_file())
}

/// The process-wide ONNX Runtime environment, loaded on first use.
pub fn environment() -> Result<&'static ort::environment::Environment> {
    let env = ENV.get_or_init(|| {
        let Some(lib) = find_library() else {
            return Err(format!(
                "ONNX Runtime {ORT_VERSION} shared library not found (looked at {}). \
                 Install it with `scripts/install-onnxruntime.sh`, or set WHET_ORT_LIB to the path of libonnxruntime.so",
                library_candidates().iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        };
        load(&lib).map_err(|e| format!("loading ONNX Runtime from {}: {e}", lib.display()))
    });
    env.as_ref()
        .map_err(|e| OptimizerError::RuntimeMissing(e.clone()))
}

fn load(lib: &Path) -> std::result::Result<ort::environment::Environment, String> {
    let builder = ort::init_from(lib).map_err(|e| e.to_string())?;
    builder
        .with_name("whetstone")
        .build()
        .map_err(|e| e.to_string())
}

/// A short description of the runtime for reports and logs.
pub fn describe() -> String {
    format!("onnxruntime {ORT_VERSION} (CPU)")
}
