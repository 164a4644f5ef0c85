//! Test and calibration data: reading the files users give, and synthesizing
//! inputs from `input_shapes`/`input_ranges` when they give none.

use std::path::Path;

use rand::{Rng, SeedableRng};
use shared::api::{ModelSignature, TensorSpec};
use shared::config::ValueRange;

use crate::error::{OptimizerError, Result};
use crate::tensor::{DType, Tensor, TensorData};

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
        "npz" => load_npz(path, sig)?,
        "npy" | "pth" | "pt" => {
            return Err(bad(path, format!(
                "the pickle-based '.{ext}' format is not readable yet; give the same samples as .npz \
                 (one array per input name, samples stacked on axis 0)"
            )))
        }
        _ => return Err(bad(path, "unsupported data file: expected .npz (one array per input, samples on axis 0)")),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Dataset {
        source: format!("{name} ({} samples)", samples.len()),
        samples,
    })
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

fn read_npy<R: std::io::Read>(path: &Path, key: &str, npy: npyz::NpyFile<R>) -> Result<Tensor> {
    use npyz::{DType as NDType, TypeChar};
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let NDType::Plain(ts) = npy.dtype() else {
        return Err(bad(
            path,
            format!("array '{key}': structured arrays are not supported"),
        ));
    };
    let err = |e: std::io::Error| bad(path, format!("array '{key}': {e}"));
    let data = match (ts.type_char(), ts.size_field()) {
        (TypeChar::Float, 4) => TensorData::F32(npy.into_vec().map_err(err)?),
        (TypeChar::Float, 8) => TensorData::F64(npy.into_vec().map_err(err)?),
        (TypeChar::Int, 8) => TensorData::I64(npy.into_vec().map_err(err)?),
        (TypeChar::Int, 4) => TensorData::I32(npy.into_vec().map_err(err)?),
        (TypeChar::Int, 1) => TensorData::I8(npy.into_vec().map_err(err)?),
        (TypeChar::Uint, 1) => TensorData::U8(npy.into_vec().map_err(err)?),
        (TypeChar::Bool, 1) => TensorData::Bool(npy.into_vec().map_err(err)?),
        _ => return Err(bad(path, format!("array '{key}': unsupported dtype {ts}"))),
    };
    Tensor::new(shape, data).map_err(|e| bad(path, format!("array '{key}': {e}")))
}

fn load_npz(path: &Path, sig: &ModelSignature) -> Result<Vec<Sample>> {
    let mut npz = npyz::npz::NpzArchive::open(path)
        .map_err(|e| bad(path, format!("not a readable .npz archive: {e}")))?;
    let names: Vec<String> = npz.array_names().map(str::to_string).collect();
    let mut arrays = Vec::new();
    for spec in &sig.inputs {
        let Some(key) = names.iter().find(|k| key_matches(k, &spec.name)) else {
            return Err(bad(
                path,
                format!(
                    "no array for model input '{}'; the file has: {}",
                    spec.name,
                    names.join(", ")
                ),
            ));
        };
        let npy = npz
            .by_name(key)
            .map_err(|e| bad(path, format!("array '{key}': {e}")))?
            .ok_or_else(|| bad(path, format!("array '{key}' vanished while reading")))?;
        arrays.push((spec, read_npy(path, key, npy)?));
    }
    split_samples(path, arrays)
}

/// Turns one stacked array per input into per-call samples. An array of the
/// model's rank holds samples on axis 0 (each becomes batch 1); one rank
/// higher holds whole batches on axis 0; a scalar is shared by every sample.
fn split_samples(path: &Path, arrays: Vec<(&TensorSpec, Tensor)>) -> Result<Vec<Sample>> {
    let mut count: Option<usize> = None;
    for (spec, t) in &arrays {
        if t.shape.is_empty() && !spec.shape.is_empty() {
            continue;
        }
        let n = if t.shape.len() == spec.shape.len() || t.shape.len() == spec.shape.len() + 1 {
            t.shape.first().copied().unwrap_or(1)
        } else {
            return Err(bad(
                path,
                format!(
                "array for input '{}' has shape {:?}; expected rank {} (samples on axis 0) or {}",
                spec.name,
                t.shape,
                spec.shape.len(),
                spec.shape.len() + 1
            ),
            ));
        };
        match count {
            Some(c) if c != n => {
                return Err(bad(
                    path,
                    format!(
                        "inputs disagree on the number of samples ({c} vs {n} for '{}')",
                        spec.name
                    ),
                ))
            }
            _ => count = Some(n),
        }
    }
    let n = count.unwrap_or(1);
    if n == 0 {
        return Err(bad(path, "the file holds zero samples"));
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let mut sample = Vec::with_capacity(arrays.len());
        for (spec, t) in &arrays {
            let item = if spec.shape.is_empty() || (t.shape.is_empty()) {
                t.clone()
            } else if t.shape.len() == spec.shape.len() {
                t.batch_item(i)
            } else {
                let mut one = t.batch_item(i);
                one.shape.remove(0);
                one
            };
            sample.push((spec.name.clone(), item));
        }
        samples.push(sample);
    }
    Ok(samples)
}

/// Concrete shapes for one call: from an `input_shapes` group when given, else
/// the declared shape with dynamic dimensions set to 1 (batch) or `default_dim`.
pub fn concrete_shapes(
    sig: &ModelSignature,
    group: Option<&[Vec<usize>]>,
    default_dim: usize,
) -> Result<Vec<Vec<usize>>> {
    if let Some(group) = group {
        if group.len() != sig.inputs.len() {
            return Err(OptimizerError::Config(format!(
                "input_shapes group has {} shapes but the model has {} inputs ({})",
                group.len(),
                sig.inputs.len(),
                sig.inputs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        for (spec, shape) in sig.inputs.iter().zip(group) {
            let fits = shape.len() == spec.shape.len()
                && shape
                    .iter()
                    .zip(&spec.shape)
                    .all(|(&g, &w)| w < 0 || g as i64 == w);
            if !fits {
                return Err(OptimizerError::Config(format!(
                    "input_shapes gives {:?} for input '{}', whose declared shape is {}",
                    shape,
                    spec.name,
                    crate::engine::fmt_dims(&spec.shape)
                )));
            }
        }
        return Ok(group.to_vec());
    }
    Ok(sig
        .inputs
        .iter()
        .map(|s| {
            s.shape
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if d >= 0 {
                        d as usize
                    } else if i == 0 {
                        1
                    } else {
                        default_dim
                    }
                })
                .collect()
        })
        .collect())
}

/// Random inputs of the given shapes. Values follow `ranges` when given;
/// otherwise floats in [0,1) and integers in {0,1} (safe for ids, masks and
/// segment ids alike).
pub fn synthesize(
    sig: &ModelSignature,
    shapes: &[Vec<usize>],
    ranges: Option<&[ValueRange]>,
    seed: u64,
) -> Result<Sample> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sample = Vec::with_capacity(sig.inputs.len());
    for (i, (spec, shape)) in sig.inputs.iter().zip(shapes).enumerate() {
        let n: usize = shape.iter().product();
        let range = ranges.and_then(|r| r.get(i)).copied();
        let (lo, hi) = match range {
            Some(ValueRange::Numeric { lo, hi }) => (lo, hi),
            Some(ValueRange::Chars { lo, hi }) => (lo as u32 as f64, hi as u32 as f64),
            None => (0.0, 1.0),
        };
        let dtype =
            DType::from_kserve_name(&spec.datatype).ok_or_else(|| OptimizerError::BadInput {
                name: spec.name.clone(),
                reason: format!("cannot synthesize values of type {}", spec.datatype),
            })?;
        let float = |rng: &mut rand::rngs::StdRng| {
            if hi > lo {
                rng.random_range(lo..hi)
            } else {
                lo
            }
        };
        let int = |rng: &mut rand::rngs::StdRng| {
            let (a, b) = (lo.ceil() as i64, hi.floor() as i64);
            if b > a {
                rng.random_range(a..=b)
            } else {
                a
            }
        };
        let data = match dtype {
            DType::F32 => TensorData::F32((0..n).map(|_| float(&mut rng) as f32).collect()),
            DType::F64 => TensorData::F64((0..n).map(|_| float(&mut rng)).collect()),
            DType::I64 => TensorData::I64((0..n).map(|_| int(&mut rng)).collect()),
            DType::I32 => TensorData::I32((0..n).map(|_| int(&mut rng) as i32).collect()),
            DType::I8 => TensorData::I8(
                (0..n)
                    .map(|_| int(&mut rng).clamp(-128, 127) as i8)
                    .collect(),
            ),
            DType::U8 => {
                TensorData::U8((0..n).map(|_| int(&mut rng).clamp(0, 255) as u8).collect())
            }
            DType::Bool => TensorData::Bool((0..n).map(|_| rng.random_bool(0.5)).collect()),
        };
        sample.push((
            spec.name.clone(),
            Tensor::new(shape.clone(), data).map_err(OptimizerError::Config)?,
        ));
    }
    Ok(sample)
}

/// Writes arrays as an `.npz` archive (uncompressed `.npy` members), the
/// format `load` reads: one array per input, samples on axis 0.
pub fn write_npz(path: &Path, arrays: &[(&str, &Tensor)]) -> Result<()> {
    use std::io::Write;
    let io = |e: std::io::Error| OptimizerError::io(path, e);
    let zerr = |e: zip::result::ZipError| OptimizerError::io(path, std::io::Error::other(e));
    let file = std::fs::File::create(path).map_err(io)?;
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, t) in arrays {
        let (descr, bytes): (&str, Vec<u8>) = match &t.data {
            TensorData::F32(v) => ("<f4", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::F64(v) => ("<f8", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::I64(v) => ("<i8", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::I32(v) => ("<i4", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorData::I8(v) => ("|i1", v.iter().map(|&x| x as u8).collect()),
            TensorData::U8(v) => ("|u1", v.clone()),
            TensorData::Bool(v) => ("|b1", v.iter().map(|&x| x as u8).collect()),
        };
        let dims = t.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        let shape = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        // .npy v1.0: magic, version, u16 header length; data 64-byte aligned.
        let total = 10 + header.len() + 1;
        header.push_str(&" ".repeat((64 - total % 64) % 64));
        header.push('\n');
        zip.start_file(format!("{name}.npy"), opts).map_err(zerr)?;
        zip.write_all(b"\x93NUMPY\x01\x00").map_err(io)?;
        zip.write_all(&(header.len() as u16).to_le_bytes())
            .map_err(io)?;
        zip.write_all(header.as_bytes()).map_err(io)?;
        zip.write_all(&bytes).map_err(io)?;
    }
    zip.finish().map_err(zerr)?;
    Ok(())
}
