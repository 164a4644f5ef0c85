//! Test and calibration data: reading the files users give, and synthesizing
//! inputs from `input_shapes`/`input_ranges` when they give none.
//!
//! Formats, by extension:
//! - `.npz`: one array per input name, samples stacked on axis 0 (`npz.rs`).
//! - `.safetensors`: the same convention in Hugging Face's format (`safetensor.rs`).
//! - `.npy`: the seed's TensorFlow style, `np.save(path, list_of_feed_dicts)`, an
//!   object array whose payload is a pickle; or a plain numeric array for a
//!   single-input model (`npy.rs`, `numpy.rs`).
//! - `.pth`/`.pt`: the seed's PyTorch style, `torch.save(list_of_tuples)`, a zip
//!   holding a pickle plus raw storages (`pth.rs`).
//!
//! Both pickle formats go through `pickle.rs`, a restricted reader that only
//! records the few numpy/torch constructors it allows and never runs anything.

mod elem;
mod npy;
mod npz;
mod numpy;
mod pickle;
mod pth;
mod safetensor;
mod samples;
mod synth;

use std::path::Path;

use shared::api::{ModelSignature, TensorSpec};

use crate::error::{OptimizerError, Result};
use crate::tensor::Tensor;

pub use npz::write_npz;
pub use synth::{concrete_shapes, synthesize};

/// One set of named inputs: a single model call.
pub type Sample = Vec<(String, Tensor)>;

#[derive(Debug, Clone)]
pub struct Dataset {
    /// Human description for the report, e.g. `test_minilm.npz (10 samples)`.
    pub source: String,
    pub samples: Vec<Sample>,
}

/// Reads a data file into per-call samples matched to the model's inputs.
pub fn load(path: &Path, sig: &ModelSignature) -> Result<Dataset> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let samples = match ext.as_str() {
        "npz" => npz::load(path, sig),
        "npy" => npy::load(path, sig),
        "pth" | "pt" => pth::load(path, sig),
        "safetensors" => safetensor::load(path, sig),
        _ => {
            return Err(bad(
                path,
                "unsupported data file: expected .npz or .safetensors (one array per input, \
                 samples on axis 0), .npy (np.save of a list of feed dicts) or .pth/.pt \
                 (torch.save of a list of tuples of tensors)",
            ))
        }
    }
    .map_err(|reason| bad(path, reason))?;
    if samples.is_empty() {
        return Err(bad(path, "the file holds zero samples"));
    }
    // Readers keep each array's own type and shape; hold them to the model's
    // declaration here, where the error can still name the file and sample.
    for (i, sample) in samples.iter().enumerate() {
        crate::engine::check_inputs(sig, sample).map_err(|e| match e {
            OptimizerError::BadInput { name, reason } => {
                bad(path, format!("sample {i}, input '{name}': {reason}"))
            }
            other => other,
        })?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Dataset {
        source: format!("{name} ({} samples)", samples.len()),
        samples,
    })
}

/// Reads test data for a model that declares no inputs (TorchScript), whose
/// inputs are positional: `.pth`/`.pt` tuples (the seed's PyTorch format) or an
/// `.npz` with arrays `input0`, `input1`, …. Returns the samples and the input
/// specs they imply: each input's datatype and rank from the first sample, a
/// dimension that differs between samples as -1.
pub fn load_positional(path: &Path) -> Result<(Dataset, Vec<TensorSpec>)> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let samples = match ext.as_str() {
        "pth" | "pt" => pth::load_positional(path),
        "npz" => npz::load_positional(path),
        _ => {
            return Err(bad(
                path,
                "unsupported data file for a model with positional inputs (TorchScript): \
                 expected .pth/.pt (torch.save of a list of tuples of tensors) or .npz \
                 (arrays input0, input1, …, samples on axis 0)",
            ))
        }
    }
    .map_err(|reason| bad(path, reason))?;
    let Some(first) = samples.first() else {
        return Err(bad(path, "the file holds zero samples"));
    };
    let mut specs: Vec<TensorSpec> = first
        .iter()
        .map(|(name, t)| TensorSpec {
            name: name.clone(),
            datatype: t.dtype().kserve_name().to_string(),
            shape: t.shape.iter().map(|&d| d as i64).collect(),
        })
        .collect();
    for (i, sample) in samples.iter().enumerate() {
        for (spec, (_, t)) in specs.iter_mut().zip(sample) {
            if t.dtype().kserve_name() != spec.datatype || t.shape.len() != spec.shape.len() {
                return Err(bad(
                    path,
                    format!(
                        "sample {i}, input '{}': {} of rank {}, but sample 0 has {} of rank {}",
                        spec.name,
                        t.dtype(),
                        t.shape.len(),
                        spec.datatype,
                        spec.shape.len()
                    ),
                ));
            }
            for (want, &got) in spec.shape.iter_mut().zip(&t.shape) {
                if *want != got as i64 {
                    *want = -1;
                }
            }
        }
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((
        Dataset {
            source: format!("{name} ({} samples)", samples.len()),
            samples,
        },
        specs,
    ))
}

/// The name of the `i`-th positional input (TorchScript declares no names).
pub fn positional_name(i: usize) -> String {
    format!("input{i}")
}

/// A signature of `n` positional inputs of one placeholder datatype (readers
/// keep each value's own type; `datatype` only decides plain Python numbers).
fn positional_signature(n: usize, datatype: &str) -> ModelSignature {
    ModelSignature {
        format: "torchscript".into(),
        inputs: (0..n)
            .map(|i| TensorSpec {
                name: positional_name(i),
                datatype: datatype.into(),
                shape: vec![],
            })
            .collect(),
        outputs: vec![],
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> OptimizerError {
    OptimizerError::BadData {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The array name a file uses for a graph input: `input_ids:0` in feed-dict
/// style and `input_ids` in `.npz` style both match input `input_ids`.
fn key_matches(key: &str, input: &str) -> bool {
    key == input || key.strip_suffix(":0") == Some(input) || input.strip_suffix(":0") == Some(key)
}

/// Reads a whole data file. The readers below work on bytes in memory: every
/// length they meet is then checked against what is really there.
fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))
}
