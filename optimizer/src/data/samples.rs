//! Turning what a file holds into per-call samples in the model's input order.
//! Two conventions:
//! - stacked (`.npz`, `.safetensors`, plain `.npy`): one array per input,
//!   samples on axis 0 ([`split_samples`]);
//! - listed (pickles): one list element per call, a feed dict, a tuple in input
//!   order, or a bare tensor for a single-input model ([`from_pickle`]).

use shared::api::{ModelSignature, TensorSpec};

use super::pickle::{Obj, Pickle, Value};
use super::{key_matches, Sample};
use crate::tensor::{DType, Tensor, TensorData};

/// Turns one stacked array per input into per-call samples. An array of the
/// model's rank holds samples on axis 0 (each becomes batch 1); one rank
/// higher holds whole batches on axis 0; a scalar is shared by every sample.
pub(super) fn split_samples(arrays: Vec<(&TensorSpec, Tensor)>) -> Result<Vec<Sample>, String> {
    let mut count: Option<usize> = None;
    for (spec, t) in &arrays {
        if t.shape.is_empty() {
            continue; // shared by every sample
        }
        let n = if t.shape.len() == spec.shape.len() || t.shape.len() == spec.shape.len() + 1 {
            t.shape.first().copied().unwrap_or(1)
        } else {
            return Err(format!(
                "array for input '{}' has shape {:?}; expected rank {} (samples on axis 0) or {}",
                spec.name,
                t.shape,
                spec.shape.len(),
                spec.shape.len() + 1
            ));
        };
        match count {
            Some(c) if c != n => {
                return Err(format!(
                    "inputs disagree on the number of samples ({c} vs {n} for '{}')",
                    spec.name
                ))
            }
            _ => count = Some(n),
        }
    }
    let n = count.unwrap_or(1);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let mut sample = Vec::with_capacity(arrays.len());
        for (spec, t) in &arrays {
            let item = if t.shape.is_empty() {
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

/// Matches each pickled list element to the model's inputs. `decode` turns one
/// value (an array, tensor or scalar) into a tensor for the given input; only
/// values that feed an input are decoded, so extra dict keys are ignored
/// whatever they hold. Each tensor keeps its own shape: one element is one call.
pub(super) fn from_pickle(
    p: &Pickle,
    items: &[Value],
    sig: &ModelSignature,
    mut decode: impl FnMut(&Value, &TensorSpec) -> Result<Tensor, String>,
) -> Result<Vec<Sample>, String> {
    let inputs = &sig.inputs;
    let mut samples = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let mut sample = Vec::with_capacity(inputs.len());
        match p.obj(item) {
            Some(Obj::Dict(pairs)) => {
                for spec in inputs {
                    let found = pairs
                        .iter()
                        .find(|(k, _)| k.as_str().is_some_and(|k| key_matches(k, &spec.name)));
                    let Some((key, value)) = found else {
                        return Err(format!(
                            "sample {i}: no value for model input '{}'; the sample has keys: {}",
                            spec.name,
                            key_list(pairs)
                        ));
                    };
                    let key = key.as_str().unwrap_or_default();
                    let t = decode(value, spec).map_err(|e| format!("sample {i}, '{key}': {e}"))?;
                    sample.push((spec.name.clone(), t));
                }
            }
            Some(Obj::Tuple(values)) | Some(Obj::List(values)) => {
                if values.len() != inputs.len() {
                    return Err(format!(
                        "sample {i} holds {} but the model has {} ({}); a tuple gives the \
                         inputs in order",
                        counted(values.len(), "value"),
                        counted(inputs.len(), "input"),
                        input_list(sig)
                    ));
                }
                for (j, (value, spec)) in values.iter().zip(inputs).enumerate() {
                    let t = decode(value, spec).map_err(|e| {
                        format!("sample {i}, value {j} (input '{}'): {e}", spec.name)
                    })?;
                    sample.push((spec.name.clone(), t));
                }
            }
            _ => {
                let [spec] = inputs.as_slice() else {
                    return Err(format!(
                        "sample {i} is a single value, but the model has {} ({}); give a feed \
                         dict or a tuple per sample",
                        counted(inputs.len(), "input"),
                        input_list(sig)
                    ));
                };
                let t = decode(item, spec).map_err(|e| format!("sample {i}: {e}"))?;
                sample.push((spec.name.clone(), t));
            }
        }
        samples.push(sample);
    }
    Ok(samples)
}

/// A plain Python number (allowed in feed dicts: "scalars allowed") as a 0-d
/// tensor of the input's declared type; `None` when `v` is not a number.
pub(super) fn python_scalar(v: &Value, spec: &TensorSpec) -> Option<Result<Tensor, String>> {
    let (int, float) = match *v {
        Value::Bool(b) => (Some(b as i64), b as i64 as f64),
        Value::Int(i) => (Some(i), i as f64),
        Value::Float(f) => (None, f),
        _ => return None,
    };
    let Some(dtype) = DType::from_kserve_name(&spec.datatype) else {
        return Some(Err(format!(
            "a Python number cannot feed input '{}' of type {}",
            spec.name, spec.datatype
        )));
    };
    let out_of_range = || {
        format!(
            "the Python number does not fit input '{}' ({dtype})",
            spec.name
        )
    };
    let data = match (dtype, int) {
        (DType::F32, _) => TensorData::F32(vec![float as f32]),
        (DType::F64, _) => TensorData::F64(vec![float]),
        (DType::I64, Some(i)) => TensorData::I64(vec![i]),
        (DType::I32, Some(i)) => match i32::try_from(i) {
            Ok(x) => TensorData::I32(vec![x]),
            Err(_) => return Some(Err(out_of_range())),
        },
        (DType::I8, Some(i)) => match i8::try_from(i) {
            Ok(x) => TensorData::I8(vec![x]),
            Err(_) => return Some(Err(out_of_range())),
        },
        (DType::U8, Some(i)) => match u8::try_from(i) {
            Ok(x) => TensorData::U8(vec![x]),
            Err(_) => return Some(Err(out_of_range())),
        },
        (DType::Bool, Some(i)) => TensorData::Bool(vec![i != 0]),
        (_, None) => {
            return Some(Err(format!(
                "a Python float cannot feed input '{}' of type {dtype}",
                spec.name
            )))
        }
    };
    Some(Tensor::new(Vec::new(), data))
}

fn key_list(pairs: &[(Value, Value)]) -> String {
    let keys: Vec<&str> = pairs
        .iter()
        .map(|(k, _)| k.as_str().unwrap_or("<not a string>"))
        .take(20)
        .collect();
    let more = if pairs.len() > keys.len() {
        ", …"
    } else {
        ""
    };
    format!("{}{more}", keys.join(", "))
}

fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn input_list(sig: &ModelSignature) -> String {
    sig.inputs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
