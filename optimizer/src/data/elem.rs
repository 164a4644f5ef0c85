//! Element types as files store them, and turning raw (possibly strided)
//! storage bytes into our row-major `Tensor`s. Every reader ends here, so this
//! is also where the memory budget is enforced.

use std::borrow::Cow;

use half::f16;

use crate::tensor::{Tensor, TensorData};

/// An element type a data file may hold. Narrower types we have no
/// `TensorData` variant for are widened: float16 to f32, int16 to i32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Elem {
    F32,
    F64,
    F16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

/// For error messages that say what would have been accepted.
pub(super) const SUPPORTED: &str =
    "float32, float64, float16, int64, int32, int16, int8, uint8, bool";

impl Elem {
    /// Bytes per element in the file.
    pub fn size(self) -> usize {
        match self {
            Elem::F64 | Elem::I64 => 8,
            Elem::F32 | Elem::I32 => 4,
            Elem::F16 | Elem::I16 => 2,
            Elem::I8 | Elem::U8 | Elem::Bool => 1,
        }
    }

    /// Bytes per element once decoded (after widening).
    fn decoded_size(self) -> usize {
        match self {
            Elem::F16 | Elem::I16 => 4,
            other => other.size(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ByteOrder {
    Little,
    Big,
}

/// How many decoded bytes one file may produce. Pickles can reference one
/// array from many samples (memo lookups cost two bytes each) and torch views
/// can repeat a storage with stride 0, so output is not bounded by input size;
/// this budget is. Real data decodes to about its file size (2x for float16).
pub(super) struct Budget {
    left: usize,
    limit: usize,
}

impl Budget {
    const BASE: usize = 1 << 30;

    pub fn for_file(file_len: usize) -> Budget {
        let limit = Self::BASE.saturating_add(file_len.saturating_mul(16));
        Budget { left: limit, limit }
    }

    pub fn take(&mut self, bytes: usize) -> Result<(), String> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(format!(
                "refusing to decode more than {} MiB of tensor data from this file \
                 (is the same array referenced over and over?)",
                self.limit >> 20
            )),
        }
    }

    /// What is left, for bounding reads of compressed archive members.
    pub fn left(&self) -> usize {
        self.left
    }
}

/// Element count of `shape`, refusing products that overflow.
pub(super) fn numel(shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} is too large"))
}

/// Row-major strides (in elements). Saturating: with a zero dimension the
/// strides are never used, and with none they cannot overflow once `numel`
/// has succeeded.
pub(super) fn c_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}

/// Column-major strides (numpy's `fortran_order`).
pub(super) fn f_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for i in 1..shape.len() {
        strides[i] = strides[i - 1].saturating_mul(shape[i - 1]);
    }
    strides
}

/// Contiguous little/big-endian bytes of `shape` as a tensor.
pub(super) fn contiguous(
    elem: Elem,
    order: ByteOrder,
    bytes: &[u8],
    shape: &[usize],
    budget: &mut Budget,
) -> Result<Tensor, String> {
    check_len(elem, bytes.len(), shape)?;
    gather(elem, order, bytes, shape, &c_strides(shape), 0, budget)
}

/// That `len` bytes hold exactly the elements of `shape`.
pub(super) fn check_len(elem: Elem, len: usize, shape: &[usize]) -> Result<(), String> {
    let needed = numel(shape)?
        .checked_mul(elem.size())
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    if len != needed {
        return Err(format!(
            "the data has {len} bytes, but shape {shape:?} of {} needs {needed}",
            elem_name(elem)
        ));
    }
    Ok(())
}

/// The view `storage[offset + Σ index·stride]` (strides in elements, as torch
/// and numpy state them) copied out in row-major order.
pub(super) fn gather(
    elem: Elem,
    order: ByteOrder,
    storage: &[u8],
    shape: &[usize],
    strides: &[usize],
    offset: usize,
    budget: &mut Budget,
) -> Result<Tensor, String> {
    if shape.len() != strides.len() {
        return Err(format!(
            "shape {shape:?} and strides {strides:?} differ in length"
        ));
    }
    let n = numel(shape)?;
    let size = elem.size();
    let available = storage.len() / size;
    // Size-1 dimensions never step, whatever stride the file states; zeroing
    // them keeps the index arithmetic below within the checked bound.
    let strides: Vec<usize> = shape
        .iter()
        .zip(strides)
        .map(|(&d, &s)| if d > 1 { s } else { 0 })
        .collect();
    if n > 0 {
        let last = shape
            .iter()
            .zip(&strides)
            .try_fold(offset, |acc, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| acc.checked_add(x))
            });
        match last {
            Some(last) if last < available => {}
            _ => {
                return Err(format!(
                    "the view (offset {offset}, shape {shape:?}, strides {strides:?}) reaches \
                     past the {available} elements its storage holds"
                ))
            }
        }
    }
    budget.take(n.saturating_mul(elem.decoded_size()))?;

    // In bounds: the last element checked above is the furthest one.
    let bytes: Cow<[u8]> = if n == 0 {
        Cow::Borrowed(&[])
    } else if is_row_major(shape, &strides) {
        Cow::Borrowed(&storage[offset * size..(offset + n) * size])
    } else {
        let mut out = Vec::with_capacity(n * size);
        let mut index = vec![0usize; shape.len()];
        let mut pos = offset;
        for _ in 0..n {
            out.extend_from_slice(&storage[pos * size..(pos + 1) * size]);
            // Odometer step: the last axis moves fastest.
            for axis in (0..shape.len()).rev() {
                index[axis] += 1;
                pos += strides[axis];
                if index[axis] < shape[axis] {
                    break;
                }
                pos -= strides[axis] * shape[axis];
                index[axis] = 0;
            }
        }
        Cow::Owned(out)
    };
    Tensor::new(shape.to_vec(), decode(elem, order, &bytes))
}

/// Whether a view with these (zeroed-for-size-1) strides is plain row-major.
fn is_row_major(shape: &[usize], strides: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d > 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}

/// Whole elements of `bytes` (a trailing partial element is ignored; callers
/// pass exact lengths).
fn decode(elem: Elem, order: ByteOrder, b: &[u8]) -> TensorData {
    let big = order == ByteOrder::Big;
    match elem {
        Elem::F32 => TensorData::F32(words(b, big, f32::from_le_bytes, f32::from_be_bytes)),
        Elem::F64 => TensorData::F64(words(b, big, f64::from_le_bytes, f64::from_be_bytes)),
        Elem::F16 => TensorData::F32(
            words(b, big, u16::from_le_bytes, u16::from_be_bytes)
                .into_iter()
                .map(|bits| f16::from_bits(bits).to_f32())
                .collect(),
        ),
        Elem::I64 => TensorData::I64(words(b, big, i64::from_le_bytes, i64::from_be_bytes)),
        Elem::I32 => TensorData::I32(words(b, big, i32::from_le_bytes, i32::from_be_bytes)),
        Elem::I16 => TensorData::I32(
            words(b, big, i16::from_le_bytes, i16::from_be_bytes)
                .into_iter()
                .map(i32::from)
                .collect(),
        ),
        Elem::I8 => TensorData::I8(b.iter().map(|&x| x as i8).collect()),
        Elem::U8 => TensorData::U8(b.to_vec()),
        // numpy and torch write 0/1; anything else is true, as in C.
        Elem::Bool => TensorData::Bool(b.iter().map(|&x| x != 0).collect()),
    }
}

fn words<const N: usize, T>(
    b: &[u8],
    big: bool,
    le: fn([u8; N]) -> T,
    be: fn([u8; N]) -> T,
) -> Vec<T> {
    let convert = if big { be } else { le };
    b.chunks_exact(N)
        .map(|c| {
            let mut word = [0u8; N];
            word.copy_from_slice(c);
            convert(word)
        })
        .collect()
}

pub(super) fn elem_name(elem: Elem) -> &'static str {
    match elem {
        Elem::F32 => "float32",
        Elem::F64 => "float64",
        Elem::F16 => "float16",
        Elem::I64 => "int64",
        Elem::I32 => "int32",
        Elem::I16 => "int16",
        Elem::I8 => "int8",
        Elem::U8 => "uint8",
        Elem::Bool => "bool",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn budget() -> Budget {
        Budget::for_file(0)
    }

    #[test]
    fn strided_views_come_out_row_major() {
        let storage = f32_bytes(&[0., 1., 2., 3., 4., 5.]);
        let b = &mut budget();
        // (3,2) row-major storage, viewed transposed as (2,3).
        let t = gather(
            Elem::F32,
            ByteOrder::Little,
            &storage,
            &[2, 3],
            &[1, 2],
            0,
            b,
        )
        .unwrap();
        assert_eq!(t.data, TensorData::F32(vec![0., 2., 4., 1., 3., 5.]));
        // Every other element from offset 1.
        let t = gather(Elem::F32, ByteOrder::Little, &storage, &[3], &[2], 1, b).unwrap();
        assert_eq!(t.data, TensorData::F32(vec![1., 3., 5.]));
        // A 0-d view and a stride-0 broadcast.
        let t = gather(Elem::F32, ByteOrder::Little, &storage, &[], &[], 4, b).unwrap();
        assert_eq!(
            (t.shape.clone(), t.data),
            (vec![], TensorData::F32(vec![4.]))
        );
        let t = gather(
            Elem::F32,
            ByteOrder::Little,
            &storage,
            &[2, 2],
            &[0, 1],
            2,
            b,
        )
        .unwrap();
        assert_eq!(t.data, TensorData::F32(vec![2., 3., 2., 3.]));
        // Size-1 dimensions may carry any stride.
        let t = gather(
            Elem::F32,
            ByteOrder::Little,
            &storage,
            &[1, 2],
            &[usize::MAX, 1],
            0,
            b,
        )
        .unwrap();
        assert_eq!(t.data, TensorData::F32(vec![0., 1.]));
    }

    #[test]
    fn views_past_the_storage_or_overflowing_are_errors() {
        let storage = f32_bytes(&[0.; 6]);
        let b = &mut budget();
        let e = gather(
            Elem::F32,
            ByteOrder::Little,
            &storage,
            &[2, 3],
            &[3, 1],
            1,
            b,
        );
        assert!(e.unwrap_err().contains("reaches past the 6 elements"));
        let huge = [usize::MAX / 2, 4];
        assert!(gather(Elem::F32, ByteOrder::Little, &storage, &huge, &[4, 1], 0, b).is_err());
        assert!(gather(
            Elem::F32,
            ByteOrder::Little,
            &storage,
            &[2, 2],
            &[usize::MAX, 1],
            0,
            b
        )
        .is_err());
        assert!(gather(Elem::F32, ByteOrder::Little, &storage, &[2], &[1, 1], 0, b).is_err());
    }

    #[test]
    fn narrow_types_widen_and_byte_order_is_honoured() {
        let b = &mut budget();
        let half: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect();
        let t = contiguous(Elem::F16, ByteOrder::Little, &half, &[2], b).unwrap();
        assert_eq!(t.data, TensorData::F32(vec![1.5, -2.0]));
        let t = contiguous(Elem::I16, ByteOrder::Big, &[0xff, 0xfe, 0, 7], &[2], b).unwrap();
        assert_eq!(t.data, TensorData::I32(vec![-2, 7]));
        let t = contiguous(Elem::Bool, ByteOrder::Little, &[0, 1, 2], &[3], b).unwrap();
        assert_eq!(t.data, TensorData::Bool(vec![false, true, true]));
        let e = contiguous(Elem::I64, ByteOrder::Little, &[0; 12], &[2], b).unwrap_err();
        assert!(e.contains("has 12 bytes") && e.contains("needs 16"), "{e}");
    }

    #[test]
    fn the_budget_caps_decoded_bytes() {
        let mut b = Budget { left: 8, limit: 8 };
        let storage = f32_bytes(&[1.0]);
        assert!(gather(
            Elem::F32,
            ByteOrder::Little,
            &storage,
            &[2],
            &[0],
            0,
            &mut b
        )
        .is_ok());
        let e = gather(
            Elem::F32,
            ByteOrder::Little,
            &storage,
            &[2],
            &[0],
            0,
            &mut b,
        );
        assert!(e.unwrap_err().contains("refusing to decode"));
    }
}
