//! What an optimized artifact folder holds, and how it is addressed.
//!
//! An artifact folder contains `model.onnx` (the winning graph),
//! `artifact.json` (this struct) and `report.json` (the optimization report).

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::api::ModelSignature;

use crate::engine::SessionSettings;
use crate::error::{OptimizerError, Result};

pub const MODEL_FILE: &str = "model.onnx";
pub const META_FILE: &str = "artifact.json";
pub const REPORT_FILE: &str = "report.json";

/// The optimizer's version: part of every artifact key, so a new optimizer
/// never reuses an old optimizer's result.
pub const OPTIMIZER_VERSION: &str = concat!("whetstone-optimizer ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    pub model_file: String,
    /// The candidate that won.
    pub candidate: String,
    /// Session settings the winner was measured with (threads are re-decided
    /// when serving, from the number of instances).
    pub session: SessionSettings,
    pub signature: ModelSignature,
    pub optimizer_version: String,
    pub target: String,
    /// Inputs the artifact was specialized for (folded as constants): serving
    /// must refuse any other value.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub fixed_inputs: std::collections::BTreeMap<String, f64>,
}

impl ArtifactMeta {
    pub fn read(dir: &Path) -> Result<ArtifactMeta> {
        let p = dir.join(META_FILE);
        let bytes = std::fs::read(&p).map_err(|e| OptimizerError::io(&p, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| OptimizerError::Config(format!("{}: {e}", p.display())))
    }
}

/// The hardware an artifact is built for: device, architecture and the CPU
/// features that change which kernels ONNX Runtime picks.
pub fn cpu_target() -> String {
    let mut t = format!("cpu-{}", std::env::consts::ARCH);
    #[cfg(target_arch = "x86_64")]
    {
        for (name, on) in [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
        ] {
            if on {
                t.push('-');
                t.push_str(name);
            }
        }
    }
    t
}

/// Content address of an artifact: model bytes + optimization config +
/// optimizer version + target. Equal keys mean the optimization can be reused.
pub fn artifact_key(
    model_sha256: &str,
    optimization_config: &serde_json::Value,
    target: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        model_sha256,
        &optimization_config.to_string(),
        OPTIMIZER_VERSION,
        crate::runtime::ORT_VERSION,
        target,
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(h.finalize())
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| OptimizerError::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| OptimizerError::io(path, e))?;
    Ok(hex::encode(h.finalize()))
}
