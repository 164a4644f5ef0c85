//! What an optimized artifact folder holds, and how it is addressed.
//!
//! An artifact folder contains `model.onnx` (the winning graph),
//! `artifact.json` (this struct) and `report.json` (the optimization report).

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::api::ModelSignature;

use crate::engine::{EngineKind, SessionSettings};
use crate::error::{OptimizerError, Result};

pub const MODEL_FILE: &str = "model.onnx";
/// The model file of a TorchScript artifact.
pub const TORCH_MODEL_FILE: &str = "model.pt";
pub const META_FILE: &str = "artifact.json";
pub const REPORT_FILE: &str = "report.json";
/// Written last by [`seal`]: the SHA-256 of every other file of the
/// artifact. Its presence means the artifact is complete; [`verify`]
/// checks the files against it before an artifact is served.
pub const SEAL_FILE: &str = "checksums.json";
/// The name (before its extension) of the warm-up file in an artifact.
pub const WARM_UP_STEM: &str = "warm_up";

/// The optimizer's version: part of every artifact key, so a new optimizer
/// never reuses an old optimizer's result. The `+search.N` suffix is bumped
/// whenever the search changes what it would produce for the same model
/// (revision 2: TorchScript freezing; 3: the report's headline is the
/// selected row's time and each row names its gate), since the crate
/// version alone does not move between such changes.
pub const OPTIMIZER_VERSION: &str = concat!(
    "whetstone-optimizer ",
    env!("CARGO_PKG_VERSION"),
    "+search.3"
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// The runtime that serves `model_file`; absent (ONNX Runtime) in
    /// artifacts written before TorchScript was supported.
    #[serde(default, skip_serializing_if = "EngineKind::is_onnxruntime")]
    pub engine: EngineKind,
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
    /// How a TorchScript artifact's module is run (absent for ONNX).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch: Option<TorchSettings>,
    /// A file of the artifact (a copy of the config's `warm_up_data_path`)
    /// whose samples each runner replays before it says it is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_up: Option<String>,
}

/// How a TorchScript module is run: what the o1 candidates differ in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TorchSettings {
    /// `eval()` (dropout off, batch norm on running statistics) and calls
    /// without autograd; off = the module exactly as saved.
    pub inference: bool,
    /// Parameters and float inputs in fp16 (GPU candidates only); outputs
    /// are answered in fp32.
    #[serde(default)]
    pub half: bool,
}

impl TorchSettings {
    /// The module as saved.
    pub const AS_SAVED: TorchSettings = TorchSettings {
        inference: false,
        half: false,
    };
    /// `eval()`, no autograd, fp32: how a module is inspected and served by
    /// default.
    pub const INFERENCE: TorchSettings = TorchSettings {
        inference: true,
        half: false,
    };
}

impl ArtifactMeta {
    /// Writes `artifact.json` into the artifact folder `dir`. Every artifact
    /// (optimized, TorchScript o1 or the model as given) is described
    /// through here.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json(&dir.join(META_FILE), self)
    }

    pub fn read(dir: &Path) -> Result<ArtifactMeta> {
        let p = dir.join(META_FILE);
        let bytes = std::fs::read(&p).map_err(|e| OptimizerError::io(&p, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| OptimizerError::Config(format!("{}: {e}", p.display())))
    }
}

/// Writes one of an artifact's JSON files (`artifact.json`, `report.json`).
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|e| OptimizerError::Config(e.to_string()))?;
    std::fs::write(path, bytes).map_err(|e| OptimizerError::io(path, e))
}

/// Writes an artifact of `model` as given (a service without a plugin)
/// into `dir`: TorchScript is served as saved, in inference mode (what a
/// plugin's o1 starts from); anything else by ONNX Runtime with its default
/// optimizations on `provider`, its threads split across instances.
pub fn write_original(
    dir: &Path,
    model: &Path,
    signature: ModelSignature,
    provider: crate::engine::ExecutionProvider,
    target: String,
) -> Result<()> {
    let engine = EngineKind::of_model(model);
    let (model_file, torch) = match engine {
        EngineKind::TorchScript => (TORCH_MODEL_FILE, Some(TorchSettings::INFERENCE)),
        EngineKind::OnnxRuntime => (MODEL_FILE, None),
    };
    let dst = dir.join(model_file);
    std::fs::copy(model, &dst).map_err(|e| OptimizerError::io(&dst, e))?;
    ArtifactMeta {
        model_file: model_file.into(),
        candidate: "original".into(),
        session: SessionSettings::new(
            crate::engine::GraphLevel::All,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        )
        .on(provider),
        signature,
        optimizer_version: OPTIMIZER_VERSION.into(),
        target,
        fixed_inputs: Default::default(),
        engine,
        torch,
        warm_up: None,
    }
    .write(dir)
}

/// Checksums of an artifact's files (relative path → SHA-256).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seal {
    pub files: std::collections::BTreeMap<String, String>,
}

fn walk(dir: &Path, rel: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    let full = dir.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&full)
        .map_err(|e| OptimizerError::io(&full, e))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ty = e
            .file_type()
            .map_err(|err| OptimizerError::io(e.path(), err))?;
        let r = rel.join(e.file_name());
        if ty.is_dir() {
            walk(dir, &r, out)?;
        } else if ty.is_file() && r != Path::new(SEAL_FILE) {
            out.push(r);
        }
    }
    Ok(())
}

fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| OptimizerError::io(path, e))
}

/// Makes a finished artifact folder durable and verifiable: every file is
/// hashed and fsynced, the checksums are written to [`SEAL_FILE`] (fsynced),
/// and the folder itself is fsynced. Call it before the folder is renamed
/// into place and recorded.
pub fn seal(dir: &Path) -> Result<Seal> {
    let mut files = Vec::new();
    walk(dir, Path::new(""), &mut files)?;
    let mut seal = Seal {
        files: Default::default(),
    };
    for rel in files {
        let p = dir.join(&rel);
        sync(&p)?;
        seal.files
            .insert(rel.to_string_lossy().into_owned(), sha256_file(&p)?);
    }
    let p = dir.join(SEAL_FILE);
    let bytes =
        serde_json::to_vec_pretty(&seal).map_err(|e| OptimizerError::Config(e.to_string()))?;
    std::fs::write(&p, bytes).map_err(|e| OptimizerError::io(&p, e))?;
    sync(&p)?;
    sync(dir)?;
    Ok(seal)
}

/// Checks an artifact folder against its seal: every file listed is there
/// with its checksum. Returns its metadata. An unsealed folder (written
/// before seals existed, or cut short) is refused.
pub fn verify(dir: &Path) -> Result<ArtifactMeta> {
    let p = dir.join(SEAL_FILE);
    let bytes = std::fs::read(&p).map_err(|e| OptimizerError::io(&p, e))?;
    let seal: Seal = serde_json::from_slice(&bytes)
        .map_err(|e| OptimizerError::Config(format!("{}: {e}", p.display())))?;
    for (rel, want) in &seal.files {
        let f = dir.join(rel);
        let got = sha256_file(&f)?;
        if &got != want {
            return Err(OptimizerError::Config(format!(
                "{}: checksum {got} does not match the artifact's seal ({want}); the artifact is damaged",
                f.display()
            )));
        }
    }
    if !seal.files.contains_key(META_FILE) {
        return Err(OptimizerError::Config(format!(
            "{}: the seal does not cover {META_FILE}",
            p.display()
        )));
    }
    ArtifactMeta::read(dir)
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
            // INT8 weights are 7-bit without VNNI (quantize::weight_limit).
            ("avxvnni", std::arch::is_x86_feature_detected!("avxvnni")),
        ] {
            if on {
                t.push('-');
                t.push_str(name);
            }
        }
    }
    t
}

/// The target of an artifact built for a CUDA device: the driver's name for
/// the GPU (kernels, FP16 speed and memory differ by model), so an artifact
/// tuned on one GPU model is never reused for another, nor for a CPU.
pub fn gpu_target(gpu_name: &str) -> String {
    let name: Vec<&str> = gpu_name.split_whitespace().collect();
    format!("gpu-cuda-{}", name.join("_"))
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
