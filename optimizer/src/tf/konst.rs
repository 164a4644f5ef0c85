//! Constant tensors: TensorFlow's TensorProto to our `Tensor`, and the small
//! tensor arithmetic the importer does itself (weight layouts, axes).

use super::import::dtype_of;
use super::proto::{dt, TensorProto};
use crate::tensor::{DType, Tensor, TensorData};

/// The most bytes one constant may take once materialized: 2 GiB.
///
/// A frozen GraphDef is one protobuf, which cannot exceed 2 GiB, so no
/// constant whose values the file stores is larger; and the ONNX model the
/// import writes is one protobuf too. A constant splatted from a short value
/// list (`float_val: 0` over a big shape: a zeros tensor) may legitimately be
/// larger than its file, so for those this ceiling is the only bound, and
/// it is what keeps a 100-byte upload from asking for petabytes.
pub const MAX_CONSTANT_BYTES: usize = 2 << 30;

/// Most values an integer argument (axes, a shape, paddings, a permutation)
/// is read into a `Vec<i64>` for: such arguments have about a rank's worth
/// of values, and reading a large constant this way would widen every
/// element to 8 bytes.
pub(crate) const MAX_INT_ARG: usize = 1 << 16;

/// What a TensorProto declares, checked before anything is allocated: the
/// shape, its element count and the bytes the materialized tensor takes.
pub(crate) struct Layout {
    pub shape: Vec<usize>,
    pub numel: usize,
    pub bytes: usize,
}

/// Checks a TensorProto's declared shape against the values it holds, with
/// checked arithmetic, before anything is allocated from the shape: the
/// element count and byte size must not overflow, `tensor_content` must
/// hold exactly count × element size bytes, a typed value list must not be
/// longer than the shape, and the whole must fit [`MAX_CONSTANT_BYTES`].
pub(crate) fn layout(t: &TensorProto) -> Result<Layout, String> {
    let dtype = dtype_of(t.dtype)?;
    let mut shape = Vec::new();
    if let Some(s) = &t.tensor_shape {
        for d in &s.dim {
            let d = usize::try_from(d.size)
                .map_err(|_| format!("constant with unknown dimension {}", d.size))?;
            shape.push(d);
        }
    }
    let type_name = dt::name(t.dtype);
    let size = dtype.size();
    let (numel, bytes) = match shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| Some((n, n.checked_mul(size)?)))
    {
        Some(nb) => nb,
        None => {
            return Err(format!(
                "declared shape {shape:?} of {type_name} needs more bytes than can be \
                 addressed (the size overflows); the limit for one constant is \
                 {MAX_CONSTANT_BYTES} bytes"
            ))
        }
    };
    if !t.tensor_content.is_empty() {
        let have = t.tensor_content.len();
        if have != bytes {
            return Err(format!(
                "declared shape {shape:?} of {type_name} needs {numel} × {size} = {bytes} \
                 bytes, tensor_content has {have}"
            ));
        }
    } else {
        let given = match dtype {
            DType::F32 => t.float_val.len(),
            DType::F64 => t.double_val.len(),
            DType::I32 | DType::I8 | DType::U8 => t.int_val.len(),
            DType::I64 => t.int64_val.len(),
            DType::Bool => t.bool_val.len(),
        };
        if given > numel {
            return Err(format!(
                "constant holds {given} values for {numel} elements (declared shape {shape:?})"
            ));
        }
    }
    if bytes > MAX_CONSTANT_BYTES {
        return Err(format!(
            "declared shape {shape:?} of {type_name} would need {bytes} bytes, over the limit \
             of {MAX_CONSTANT_BYTES} bytes for one constant"
        ));
    }
    Ok(Layout {
        shape,
        numel,
        bytes,
    })
}

/// A TensorProto's values. TensorFlow stores them either as raw
/// little-endian bytes in `tensor_content` (whatever the shape, scalars
/// included) or in the typed `*_val` field; a typed field shorter than the
/// shape is filled with its last value (one value splats to the whole
/// shape) and an empty one means zeros. The declared size is checked by
/// [`layout`] first, so a hostile shape is refused, not allocated.
pub(crate) fn from_proto(t: &TensorProto) -> Result<Tensor, String> {
    let dtype = dtype_of(t.dtype)?;
    let Layout { shape, numel, .. } = layout(t)?;
    if !t.tensor_content.is_empty() {
        let raw = &t.tensor_content;
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
        DType::F32 => TensorData::F32(fill(&t.float_val, numel, |v| v)),
        DType::F64 => TensorData::F64(fill(&t.double_val, numel, |v| v)),
        DType::I32 => TensorData::I32(fill(&t.int_val, numel, |v| v)),
        DType::I64 => TensorData::I64(fill(&t.int64_val, numel, |v| v)),
        DType::I8 => TensorData::I8(fill(&t.int_val, numel, |v| v as i8)),
        DType::U8 => TensorData::U8(fill(&t.int_val, numel, |v| v as u8)),
        DType::Bool => TensorData::Bool(fill(&t.bool_val, numel, |v| v)),
    };
    Tensor::new(shape, data)
}

/// `vals` completed to `numel` with its last value (zero when empty),
/// converted on the way so no second full-size copy is made. `layout` has
/// checked that `vals` is not longer than `numel`.
fn fill<T: Copy + Default, U>(vals: &[T], numel: usize, conv: impl Fn(T) -> U) -> Vec<U> {
    let last = vals.last().copied().unwrap_or_default();
    vals.iter()
        .copied()
        .chain(std::iter::repeat(last))
        .take(numel)
        .map(conv)
        .collect()
}

/// Bytes a tensor's values take (the budget unit of the import).
pub(crate) fn nbytes(t: &Tensor) -> usize {
    t.numel().saturating_mul(t.dtype().size())
}

fn le<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
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

/// Integer values of an integer tensor used as an argument (axes, shapes,
/// permutations); `None` for other types, and for a tensor of more than
/// [`MAX_INT_ARG`] values, which no such argument has (callers then treat
/// it as not constant, or refuse it by name).
pub(crate) fn ints(t: &Tensor) -> Option<Vec<i64>> {
    if t.numel() > MAX_INT_ARG {
        return None;
    }
    Some(match &t.data {
        TensorData::I32(v) => v.iter().map(|&x| x as i64).collect(),
        TensorData::I64(v) => v.clone(),
        TensorData::I8(v) => v.iter().map(|&x| x as i64).collect(),
        TensorData::U8(v) => v.iter().map(|&x| x as i64).collect(),
        _ => return None,
    })
}

/// One element on its way through [`cast`]: integers stay exact, the rest
/// go through f64.
#[derive(Clone, Copy)]
enum Num {
    I(i64),
    F(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::I(i) => i as f64,
            Num::F(x) => x,
        }
    }
}

/// `f` applied to every element, read as a [`Num`].
fn map_nums<U>(d: &TensorData, f: impl Fn(Num) -> U) -> Vec<U> {
    match d {
        TensorData::F32(v) => v.iter().map(|&x| f(Num::F(x as f64))).collect(),
        TensorData::F64(v) => v.iter().map(|&x| f(Num::F(x))).collect(),
        TensorData::I64(v) => v.iter().map(|&x| f(Num::I(x))).collect(),
        TensorData::I32(v) => v.iter().map(|&x| f(Num::I(x as i64))).collect(),
        TensorData::I8(v) => v.iter().map(|&x| f(Num::I(x as i64))).collect(),
        TensorData::U8(v) => v.iter().map(|&x| f(Num::I(x as i64))).collect(),
        TensorData::Bool(v) => v
            .iter()
            .map(|&x| f(Num::F(if x { 1.0 } else { 0.0 })))
            .collect(),
    }
}

/// The tensor converted to `to` element by element, as a Cast would:
/// integer to int32/int64 exactly (wrapping like `as`), anything else through
/// f64. Element by element so that no widened copy of the whole constant is
/// made on the way (8 bytes an element).
pub(crate) fn cast(t: &Tensor, to: DType) -> Tensor {
    if t.dtype() == to {
        return t.clone();
    }
    let d = &t.data;
    let data = match to {
        DType::F32 => TensorData::F32(map_nums(d, |n| n.f() as f32)),
        DType::F64 => TensorData::F64(map_nums(d, Num::f)),
        DType::I32 => TensorData::I32(map_nums(d, |n| match n {
            Num::I(i) => i as i32,
            Num::F(x) => x as i32,
        })),
        DType::I64 => TensorData::I64(map_nums(d, |n| match n {
            Num::I(i) => i,
            Num::F(x) => x as i64,
        })),
        DType::I8 => TensorData::I8(map_nums(d, |n| n.f() as i8)),
        DType::U8 => TensorData::U8(map_nums(d, |n| n.f() as u8)),
        DType::Bool => TensorData::Bool(map_nums(d, |n| n.f() != 0.0)),
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
    // Walks the output in order, stepping the source position like an
    // odometer, so no index table as large as the tensor is built.
    fn gather<T: Copy>(v: &[T], n: usize, shape: &[usize], strides: &[usize]) -> Vec<T> {
        let mut out = Vec::with_capacity(n);
        let mut idx = vec![0usize; shape.len()];
        let mut pos = 0usize;
        for _ in 0..n {
            out.push(v[pos]);
            for ax in (0..shape.len()).rev() {
                idx[ax] += 1;
                pos += strides[ax];
                if idx[ax] < shape[ax] {
                    break;
                }
                pos -= strides[ax] * shape[ax];
                idx[ax] = 0;
            }
        }
        out
    }
    let (s, st) = (&out_shape[..], &strides[..]);
    let data = match &t.data {
        TensorData::F32(v) => TensorData::F32(gather(v, n, s, st)),
        TensorData::F64(v) => TensorData::F64(gather(v, n, s, st)),
        TensorData::I64(v) => TensorData::I64(gather(v, n, s, st)),
        TensorData::I32(v) => TensorData::I32(gather(v, n, s, st)),
        TensorData::I8(v) => TensorData::I8(gather(v, n, s, st)),
        TensorData::U8(v) => TensorData::U8(gather(v, n, s, st)),
        TensorData::Bool(v) => TensorData::Bool(gather(v, n, s, st)),
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
    use crate::tf::proto::TensorShapeProto;

    fn shape(dims: &[i64]) -> Option<TensorShapeProto> {
        Some(TensorShapeProto::of(dims))
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
