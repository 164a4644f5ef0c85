//! `.npz`: a zip of `.npy` members, one array per input name, samples stacked
//! on axis 0. Reading goes through our `.npy` parser (see `npy.rs`).

use std::io::Read;
use std::path::Path;

use shared::api::ModelSignature;

use super::elem::Budget;
use super::{key_matches, npy, samples, Sample};
use crate::error::{OptimizerError, Result};
use crate::tensor::{Tensor, TensorData};

pub(super) fn load(path: &Path, sig: &ModelSignature) -> Result<Vec<Sample>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| format!("not a readable .npz archive: {e}"))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.strip_suffix(".npy"))
        .map(str::to_string)
        .collect();
    let budget = &mut Budget::for_file(usize::try_from(file_len).unwrap_or(usize::MAX));
    let mut arrays = Vec::new();
    for spec in &sig.inputs {
        let Some(key) = names.iter().find(|k| key_matches(k, &spec.name)) else {
            return Err(format!(
                "no array for model input '{}'; the file has: {}",
                spec.name,
                names.join(", ")
            ));
        };
        let err = |e: String| format!("array '{key}': {e}");
        let member = zip
            .by_name(&format!("{key}.npy"))
            .map_err(|e| err(e.to_string()))?;
        // Compressed members (np.savez_compressed) may claim any size; read
        // no more than the decode budget allows.
        let limit = budget.left().saturating_add(1 << 20);
        let mut bytes = Vec::new();
        member
            .take(limit as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| err(e.to_string()))?;
        let t = npy::parse(&bytes)
            .and_then(|h| npy::numeric(&h, budget))
            .map_err(err)?;
        arrays.push((spec, t));
    }
    samples::split_samples(arrays)
}

/// Reads an `.npz` whose arrays are named `input0`, `input1`, … (positional
/// inputs, for TorchScript): samples on axis 0, each keeping the array's rank
/// with batch 1; a 0-d array is shared by every sample.
pub(super) fn load_positional(path: &Path) -> Result<Vec<Sample>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let zip =
        zip::ZipArchive::new(file).map_err(|e| format!("not a readable .npz archive: {e}"))?;
    let count = (0..)
        .take_while(|i| {
            zip.file_names()
                .any(|n| n == format!("{}.npy", super::positional_name(*i)))
        })
        .count();
    if count == 0 {
        return Err(format!(
            "a model without declared inputs (TorchScript) takes them by position: name the arrays {}, {}, … (found: {})",
            super::positional_name(0),
            super::positional_name(1),
            zip.file_names().collect::<Vec<_>>().join(", ")
        ));
    }
    // Ranks first (split_samples needs them), from the arrays themselves.
    let mut sig = super::positional_signature(count, "FP32");
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| format!("not a readable .npz archive: {e}"))?;
    let budget = &mut Budget::for_file(usize::try_from(file_len).unwrap_or(usize::MAX));
    let mut tensors = Vec::with_capacity(count);
    for spec in &mut sig.inputs {
        let key = spec.name.clone();
        let err = |e: String| format!("array '{key}': {e}");
        let member = zip
            .by_name(&format!("{key}.npy"))
            .map_err(|e| err(e.to_string()))?;
        let limit = budget.left().saturating_add(1 << 20);
        let mut bytes = Vec::new();
        member
            .take(limit as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| err(e.to_string()))?;
        let t = npy::parse(&bytes)
            .and_then(|h| npy::numeric(&h, budget))
            .map_err(err)?;
        spec.shape = t.shape.iter().map(|&d| d as i64).collect();
        tensors.push(t);
    }
    samples::split_samples(sig.inputs.iter().zip(tensors).collect())
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
