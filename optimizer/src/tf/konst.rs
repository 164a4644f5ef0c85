//! Constant tensors: TensorFlow's TensorProto to our `Tensor`, and the small
//! tensor arithmetic the importer does itself (weight layouts, axes).

use super::import::dtype_of;
use super::proto::TensorProto;
use crate::tensor::{DType, Tensor, TensorData};

/// A TensorProto's values. TensorFlow stores them either as raw
/// little-endian bytes in `tensor_content` (whatever the shape, scalars
/// included) or in the typed `*_val` field; a typed field shorter than the
/// shape is filled with its last value (one value splats to the whole
/// shape) and an empty one means zeros.
pub(crate) fn from_proto(t: &TensorProto) -> Result<Tensor, String> {
    let dtype = dtype_of(t.dtype)?;
    let mut shape = Vec::new();
    if let Some(s) = &t.tensor_shape {
        for d in &s.dim {
            let d = usize::try_from(d.size)
                .map_err(|_| format!("constant with unknown dimension {}", d.size))?;
            shape.push(d);
        }
    }
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("constant shape overflows")?;
    if !t.tensor_content.is_empty() {
        let raw = &t.tensor_content;
        let size = elem_size(dtype);
        if numel.checked_mul(size) != Some(raw.len()) {
            return Err(format!(
                "constant of shape {shape:?} needs {numel} × {size} bytes, tensor_content has {}",
                raw.len()
            ));
        }
        let data = match dtype {
            DType::F32 => TensorData::F32(le(raw).map(f32::from_le_bytes).collect()),
            DType::F64 => TensorData::F64(le(raw).map(f64::from_le_bytes).collect()),
            DType::I32 => TensorData::I32(le(raw).map(i32::from_le_bytes).collect()),
            DType::I64 => TensorData::I64(le(raw).map(i64::from_le_bytes).collect()),
            DType::I8 => TensorData::I8(raw.iter().map(|&b| b as i8).collect()),
            DType::U8 => TensorData::U8(raw.clone()),
            DType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
        };
        return Tensor::new(shape, data);
    }
    let data = match dtype {
        DType::F32 => TensorData::F32(fill(&t.float_val, numel)?),
        DType::F64 => TensorData::F64(fill(&t.double_val, numel)?),
        DType::I32 => TensorData::I32(fill(&t.int_val, numel)?),
        DType::I64 => TensorData::I64(fill(&t.int64_val, numel)?),
        DType::I8 => TensorData::I8(
            fill(&t.int_val, numel)?
                .into_iter()
                .map(|v| v as i8)
                .collect(),
        ),
        DType::U8 => TensorData::U8(
            fill(&t.int_val, numel)?
                .into_iter()
                .map(|v| v as u8)
                .collect(),
        ),
        DType::Bool => TensorData::Bool(fill(&t.bool_val, numel)?),
    };
    Tensor::new(shape, data)
}

fn fill<T: Copy + Default>(vals: &[T], numel: usize) -> Result<Vec<T>, String> {
    if vals.len() > numel {
        return Err(format!(
            "constant holds {} values for {numel} elements",
            vals.len()
        ));
    }
    let last = vals.last().copied().unwrap_or_default();
    let mut out = vals.to_vec();
    out.resize(numel, last);
    Ok(out)
}

fn le<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

fn elem_size(d: DType) -> usize {
    match d {
        DType::F32 | DType::I32 => 4,
        DType::F64 | DType::I64 => 8,
        DType::I8 | DType::U8 | DType::Bool => 1,
    }
}

pub(crate) fn i64_tensor(shape: Vec<usize>, vals: Vec<i64>) -> Tensor {
    Tensor {
        shape,
        data: TensorData::I64(vals),
    }
}

/// A rank-0 tensor of `dtype` holding `x` (converted as `as` would).
pub(crate) fn scalar(dtype: DType, x: f64) -> Tensor {
    let data = match dtype {
        DType::F32 => TensorData::F32(vec![x as f32]),
        DType::F64 => TensorData::F64(vec![x]),
        DType::I32 => TensorData::I32(vec![x as i32]),
        DType::I64 => TensorData::I64(vec![x as i64]),
        DType::I8 => TensorData::I8(vec![x as i8]),
        DType::U8 => TensorData::U8(vec![x as u8]),
        DType::Bool => TensorData::Bool(vec![x != 0.0]),
    };
    Tensor {
        shape: vec![],
        data,
    }
}

/// Integer values of an integer tensor (axes, shapes, permutations).
pub(crate) fn ints(t: &Tensor) -> Option<Vec<i64>> {
    Some(match &t.data {
        TensorData::I32(v) => v.iter().map(|&x| x as i64).collect(),
        TensorData::I64(v) => v.clone(),
        TensorData::I8(v) => v.iter().map(|&x| x as i64).collect(),
        TensorData::U8(v) => v.iter().map(|&x| x as i64).collect(),
        _ => return None,
    })
}

/// The tensor converted to `to` element by element, as a Cast would.
pub(crate) fn cast(t: &Tensor, to: DType) -> Tensor {
    if t.dtype() == to {
        return t.clone();
    }
    let f = t.data.to_f64();
    let data = match to {
        DType::F32 => TensorData::F32(f.iter().map(|&x| x as f32).collect()),
        DType::F64 => TensorData::F64(f),
        DType::I32 => TensorData::I32(ints(t).map_or_else(
            || f.iter().map(|&x| x as i32).collect(),
            |v| v.iter().map(|&x| x as i32).collect(),
        )),
        DType::I64 => {
            TensorData::I64(ints(t).unwrap_or_else(|| f.iter().map(|&x| x as i64).collect()))
        }
        DType::I8 => TensorData::I8(f.iter().map(|&x| x as i8).collect()),
        DType::U8 => TensorData::U8(f.iter().map(|&x| x as u8).collect()),
        DType::Bool => TensorData::Bool(f.iter().map(|&x| x != 0.0).collect()),
    };
    Tensor {
        shape: t.shape.clone(),
        data,
    }
}

/// The tensor with its axes permuted (`out.shape[i] = in.shape[perm[i]]`).
pub(crate) fn permute(t: &Tensor, perm: &[usize]) -> Tensor {
    let rank = t.shape.len();
    let out_shape: Vec<usize> = perm.iter().map(|&p| t.shape[p]).collect();
    // Row-major strides of the input, visited in output order.
    let mut in_strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * t.shape[i + 1];
    }
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let n = t.numel();
    let mut src = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    for _ in 0..n {
        src.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>());
        for ax in (0..rank).rev() {
            idx[ax] += 1;
            if idx[ax] < out_shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    macro_rules! gather {
        ($v:expr, $variant:ident) => {
            TensorData::$variant(src.iter().map(|&i| $v[i]).collect())
        };
    }
    let data = match &t.data {
        TensorData::F32(v) => gather!(v, F32),
        TensorData::F64(v) => gather!(v, F64),
        TensorData::I64(v) => gather!(v, I64),
        TensorData::I32(v) => gather!(v, I32),
        TensorData::I8(v) => gather!(v, I8),
        TensorData::U8(v) => gather!(v, U8),
        TensorData::Bool(v) => gather!(v, Bool),
    };
    Tensor {
        shape: out_shape,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tf::proto::dt;
    use crate::tf::proto::{tensor_shape_proto::Dim, TensorShapeProto};

    fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
        Some(TensorShapeProto {
            dim: dims
                .iter()
                .map(|&size| Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        })
    }

    #[test]
    fn tf_const_forms() {
        // A scalar whose value sits in tensor_content with an empty int_val.
        let t = from_proto(&TensorProto {
            dtype: dt::INT32,
            tensor_shape: shape(&[]),
            tensor_content: 7i32.to_le_bytes().to_vec(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.shape, Vec::<usize>::new());
        assert_eq!(t.data, TensorData::I32(vec![7]));
        // One typed value splats to the shape.
        let t = from_proto(&TensorProto {
            dtype: dt::FLOAT,
            tensor_shape: shape(&[2, 2]),
            float_val: vec![1.5],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.data, TensorData::F32(vec![1.5; 4]));
        // A short list is completed with its last value; none means zeros.
        let t = from_proto(&TensorProto {
            dtype: dt::INT64,
            tensor_shape: shape(&[4]),
            int64_val: vec![1, 2],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.data, TensorData::I64(vec![1, 2, 2, 2]));
        let t = from_proto(&TensorProto {
            dtype: dt::BOOL,
            tensor_shape: shape(&[3]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(t.data, TensorData::Bool(vec![false; 3]));
        // Raw content of the wrong size, too many values, strings: errors.
        assert!(from_proto(&TensorProto {
            dtype: dt::FLOAT,
            tensor_shape: shape(&[3]),
            tensor_content: vec![0; 8],
            ..Default::default()
        })
        .is_err());
        assert!(from_proto(&TensorProto {
            dtype: dt::INT32,
            tensor_shape: shape(&[1]),
            int_val: vec![1, 2],
            ..Default::default()
        })
        .is_err());
        assert!(from_proto(&TensorProto {
            dtype: dt::STRING,
            ..Default::default()
        })
        .unwrap_err()
        .contains("string"));
    }

    #[test]
    fn tf_permute_matches_index_math() {
        let t = Tensor::new(vec![2, 3, 4], TensorData::I64((0..24).collect())).unwrap();
        let p = permute(&t, &[2, 0, 1]);
        assert_eq!(p.shape, vec![4, 2, 3]);
        let TensorData::I64(v) = &p.data else {
            panic!()
        };
        for a in 0..4 {
            for b in 0..2 {
                for c in 0..3 {
                    assert_eq!(v[a * 6 + b * 3 + c], (b * 12 + c * 4 + a) as i64);
                }
            }
        }
    }
}
