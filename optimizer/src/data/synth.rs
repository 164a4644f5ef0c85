//! Inputs made up from `input_shapes`/`input_ranges` when the user gives no data.

use rand::{Rng, SeedableRng};
use shared::api::ModelSignature;
use shared::config::ValueRange;

use super::Sample;
use crate::error::{OptimizerError, Result};
use crate::tensor::{DType, Tensor, TensorData};

/// Concrete shapes for one call: from an `input_shapes` group when given, else
/// the declared shape with dynamic dimensions set to 1 (batch) or `default_dim`.
pub fn concrete_shapes(
    sig: &ModelSignature,
    group: Option<&[Vec<usize>]>,
    default_dim: usize,
) -> Result<Vec<Vec<usize>>> {
    if let Some(group) = group {
        // A shape string cannot be empty, so `1` stands for a scalar input.
        let group: Vec<Vec<usize>> = group
            .iter()
            .zip(&sig.inputs)
            .map(|(g, spec)| {
                if spec.shape.is_empty() && g.as_slice() == [1] {
                    vec![]
                } else {
                    g.clone()
                }
            })
            .chain(group.iter().skip(sig.inputs.len()).cloned())
            .collect();
        let group = group.as_slice();
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

/// The most elements one synthesized input may hold (256 MiB of fp32): a
/// declared shape such as `100000*100000` is refused instead of exhausting
/// memory (the server synthesizes inputs while validating a deploy).
pub const MAX_SYNTH_ELEMENTS: usize = 1 << 26;

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
        let n = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= MAX_SYNTH_ELEMENTS)
            .ok_or_else(|| OptimizerError::BadInput {
                name: spec.name.clone(),
                reason: format!(
                    "shape {shape:?} is too large to synthesize test inputs for (at most {MAX_SYNTH_ELEMENTS} elements)"
                ),
            })?;
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
