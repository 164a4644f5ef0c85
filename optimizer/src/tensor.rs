//! A small owned tensor type: what test data, requests and engine outputs are
//! exchanged as. Element types follow KServe v2 datatype names.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    I64,
    I32,
    I8,
    U8,
    Bool,
}

impl Tensor {
    /// This tensor as a KServe v2 JSON tensor named `name`.
    pub fn to_infer_tensor(&self, name: String) -> shared::api::InferTensor {
        let data = match &self.data {
            TensorData::F32(v) => serde_json::json!(v),
            TensorData::F64(v) => serde_json::json!(v),
            TensorData::I64(v) => serde_json::json!(v),
            TensorData::I32(v) => serde_json::json!(v),
            TensorData::I8(v) => serde_json::json!(v),
            TensorData::U8(v) => serde_json::json!(v),
            TensorData::Bool(v) => serde_json::json!(v),
        };
        shared::api::InferTensor {
            name,
            shape: self.shape.iter().map(|&d| d as i64).collect(),
            datatype: self.dtype().kserve_name().to_string(),
            data,
        }
    }
}

impl DType {
    /// KServe v2 datatype name.
    pub fn kserve_name(self) -> &'static str {
        match self {
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::I64 => "INT64",
            DType::I32 => "INT32",
            DType::I8 => "INT8",
            DType::U8 => "UINT8",
            DType::Bool => "BOOL",
        }
    }

    pub fn from_kserve_name(s: &str) -> Option<DType> {
        Some(match s {
            "FP32" => DType::F32,
            "FP64" => DType::F64,
            "INT64" => DType::I64,
            "INT32" => DType::I32,
            "INT8" => DType::I8,
            "UINT8" => DType::U8,
            "BOOL" => DType::Bool,
            _ => return None,
        })
    }

    pub fn from_ort(t: ort::value::TensorElementType) -> Option<DType> {
        use ort::value::TensorElementType as T;
        Some(match t {
            T::Float32 => DType::F32,
            T::Float64 => DType::F64,
            T::Int64 => DType::I64,
            T::Int32 => DType::I32,
            T::Int8 => DType::I8,
            T::Uint8 => DType::U8,
            T::Bool => DType::Bool,
            _ => return None,
        })
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// Bytes per element in the raw little-endian form (BOOL: one byte).
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kserve_name())
    }
}

/// Row-major element storage.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

/// Applies `$body` to the inner Vec of any variant.
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::F32($v) => $body,
            TensorData::F64($v) => $body,
            TensorData::I64($v) => $body,
            TensorData::I32($v) => $body,
            TensorData::I8($v) => $body,
            TensorData::U8($v) => $body,
            TensorData::Bool($v) => $body,
        }
    };
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::I64(_) => DType::I64,
            TensorData::I32(_) => DType::I32,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values widened to f64, for accuracy metrics.
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F64(v) => v.clone(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        }
    }

    /// Appends the elements as raw little-endian bytes (BOOL as one 0/1
    /// byte): the form binary protocols and the runner socket carry.
    pub fn write_le(&self, out: &mut Vec<u8>) {
        // Sized once, then filled in place: the compiler turns this into a
        // plain copy (on little-endian machines), about 4× faster than
        // extending the Vec element by element, which checks its capacity
        // at every element. Serving pays this twice per answer (the runner's
        // frame and the protocol's raw outputs).
        fn le<T: Copy, const N: usize>(out: &mut Vec<u8>, v: &[T], f: fn(T) -> [u8; N]) {
            let start = out.len();
            out.resize(start + v.len() * N, 0);
            for (dst, &x) in out[start..].chunks_exact_mut(N).zip(v) {
                dst.copy_from_slice(&f(x));
            }
        }
        match self {
            TensorData::F32(v) => le(out, v, f32::to_le_bytes),
            TensorData::F64(v) => le(out, v, f64::to_le_bytes),
            TensorData::I64(v) => le(out, v, i64::to_le_bytes),
            TensorData::I32(v) => le(out, v, i32::to_le_bytes),
            TensorData::I8(v) => le(out, v, i8::to_le_bytes),
            TensorData::U8(v) => out.extend_from_slice(v),
            TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        }
    }

    /// Elements `[start, end)` as a new buffer of the same type.
    pub fn slice(&self, start: usize, end: usize) -> TensorData {
        match self {
            TensorData::F32(v) => TensorData::F32(v[start..end].to_vec()),
            TensorData::F64(v) => TensorData::F64(v[start..end].to_vec()),
            TensorData::I64(v) => TensorData::I64(v[start..end].to_vec()),
            TensorData::I32(v) => TensorData::I32(v[start..end].to_vec()),
            TensorData::I8(v) => TensorData::I8(v[start..end].to_vec()),
            TensorData::U8(v) => TensorData::U8(v[start..end].to_vec()),
            TensorData::Bool(v) => TensorData::Bool(v[start..end].to_vec()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    /// A tensor whose element count matches its shape.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, String> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(format!(
                "shape {shape:?} needs {n} elements, got {}",
                data.len()
            ));
        }
        Ok(Tensor { shape, data })
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// A tensor from raw little-endian elements; the byte count must be
    /// exactly the shape's element count times the element size.
    pub fn from_le_bytes(dtype: DType, shape: Vec<usize>, raw: &[u8]) -> Result<Tensor, String> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("shape {shape:?} is too large"))?;
        if n.checked_mul(dtype.size()) != Some(raw.len()) {
            return Err(format!(
                "shape {shape:?} of {dtype} needs {n} × {} bytes, got {}",
                dtype.size(),
                raw.len()
            ));
        }
        macro_rules! le {
            ($t:ty, $variant:ident) => {
                TensorData::$variant(
                    raw.chunks_exact(std::mem::size_of::<$t>())
                        .map(|c| {
                            let mut b = [0u8; std::mem::size_of::<$t>()];
                            b.copy_from_slice(c);
                            <$t>::from_le_bytes(b)
                        })
                        .collect(),
                )
            };
        }
        let data = match dtype {
            DType::F32 => le!(f32, F32),
            DType::F64 => le!(f64, F64),
            DType::I64 => le!(i64, I64),
            DType::I32 => le!(i32, I32),
            DType::I8 => le!(i8, I8),
            DType::U8 => TensorData::U8(raw.to_vec()),
            DType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
        };
        Tensor::new(shape, data)
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Sample `i` along axis 0, keeping a batch dimension of 1.
    pub fn batch_item(&self, i: usize) -> Tensor {
        let per: usize = self.shape.iter().skip(1).product();
        let mut shape = self.shape.clone();
        shape[0] = 1;
        Tensor {
            shape,
            data: self.data.slice(i * per, (i + 1) * per),
        }
    }

    pub(crate) fn to_ort(&self) -> ort::Result<ort::value::DynValue> {
        let shape: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        Ok(
            with_data!(&self.data, v => ort::value::Tensor::from_array((shape, v.clone()))?.into_dyn()),
        )
    }

    pub(crate) fn from_ort(value: &ort::value::DynValue) -> Result<Tensor, String> {
        use ort::value::ValueType;
        let ValueType::Tensor { ty, shape, .. } = value.dtype() else {
            return Err(format!("unsupported output kind {:?}", value.dtype()));
        };
        let dtype = DType::from_ort(*ty)
            .ok_or_else(|| format!("unsupported output element type {ty:?}"))?;
        // ORT hands out a null data pointer for a tensor with no elements;
        // never build a slice from it.
        let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        if dims.iter().product::<usize>() == 0 {
            let empty = match dtype {
                DType::F32 => TensorData::F32(vec![]),
                DType::F64 => TensorData::F64(vec![]),
                DType::I64 => TensorData::I64(vec![]),
                DType::I32 => TensorData::I32(vec![]),
                DType::I8 => TensorData::I8(vec![]),
                DType::U8 => TensorData::U8(vec![]),
                DType::Bool => TensorData::Bool(vec![]),
            };
            return Tensor::new(dims, empty);
        }
        macro_rules! extract {
            ($t:ty, $variant:ident) => {{
                let (shape, data) = value
                    .try_extract_tensor::<$t>()
                    .map_err(|e| e.to_string())?;
                (
                    shape.iter().map(|&d| d.max(0) as usize).collect::<Vec<_>>(),
                    TensorData::$variant(data.to_vec()),
                )
            }};
        }
        let (shape, data) = match dtype {
            DType::F32 => extract!(f32, F32),
            DType::F64 => extract!(f64, F64),
            DType::I64 => extract!(i64, I64),
            DType::I32 => extract!(i32, I32),
            DType::I8 => extract!(i8, I8),
            DType::U8 => extract!(u8, U8),
            DType::Bool => extract!(bool, Bool),
        };
        Tensor::new(shape, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_are_little_endian_appended_and_read_back() {
        let cases = [
            (DType::F32, TensorData::F32(vec![1.0, -2.5])),
            (DType::F64, TensorData::F64(vec![1.0, -2.5])),
            (DType::I64, TensorData::I64(vec![1, -2])),
            (DType::I32, TensorData::I32(vec![1, -2])),
            (DType::I8, TensorData::I8(vec![1, -2])),
            (DType::U8, TensorData::U8(vec![1, 254])),
            (DType::Bool, TensorData::Bool(vec![true, false])),
        ];
        for (dtype, data) in cases {
            // What is already in the buffer stays in front.
            let mut out = vec![0xAA];
            data.write_le(&mut out);
            assert_eq!(out[0], 0xAA, "{dtype}");
            assert_eq!(out.len(), 1 + 2 * dtype.size(), "{dtype}");
            let back = Tensor::from_le_bytes(dtype, vec![2], &out[1..]).unwrap();
            assert_eq!(back.data, data, "{dtype}");
        }
        let mut out = Vec::new();
        TensorData::F32(vec![1.0]).write_le(&mut out);
        assert_eq!(out, [0x00, 0x00, 0x80, 0x3F]);
        let mut out = Vec::new();
        TensorData::I32(vec![-2]).write_le(&mut out);
        assert_eq!(out, [0xFE, 0xFF, 0xFF, 0xFF]);
    }
}
