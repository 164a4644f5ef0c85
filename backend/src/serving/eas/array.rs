//! `ArrayProto` ↔ engine tensor, with the dtype ↔ value-field mapping the
//! SDK uses when it fills a request (`add_feed`) and reads an answer
//! (`get_values`): DT_FLOAT in `float_val`, DT_DOUBLE in `double_val`,
//! DT_INT64 in `int64_val`, DT_BOOL in `bool_val`, and the narrow integer
//! types (INT32, INT8, UINT8) in `int_val`.

use optimizer::tensor::{Tensor, TensorData};

use super::proto::{dt, ArrayProto, ArrayShape};
use crate::serving::ServingError;

/// Whose conventions an answer follows: `pytorch_predict.proto` has no
/// `bool_val`, so a boolean output goes to a Torch client as DT_UINT8 0/1
/// in `int_val` (which its `get_values` reads) rather than in a field its
/// parser would drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Tf,
    Torch,
}

const SUPPORTED: &str = "DT_FLOAT, DT_DOUBLE, DT_INT32, DT_INT64, DT_INT8, DT_UINT8, DT_BOOL";

/// One request array as an engine tensor. `what` names it in errors
/// ("input 'x'", "inputs[0]"). Value buffers are moved, not copied.
pub fn to_tensor(mut a: ArrayProto, what: &str) -> Result<Tensor, ServingError> {
    let bad = |reason: String| ServingError::BadRequest(format!("{what}: {reason}"));
    let dims = a.array_shape.take().map(|s| s.dim).unwrap_or_default();
    let mut shape = Vec::with_capacity(dims.len());
    let mut n: usize = 1;
    for &d in &dims {
        let d = usize::try_from(d)
            .map_err(|_| bad(format!("array_shape {dims:?} has a negative dimension")))?;
        n = n
            .checked_mul(d)
            .ok_or_else(|| bad(format!("array_shape {dims:?} is too large")))?;
        shape.push(d);
    }
    let count = |field: &str, len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(bad(format!(
                "array_shape {dims:?} needs {n} values in {field} (for {}), got {len}",
                dt::name(a.dtype)
            )))
        }
    };
    let narrow =
        |kind: &str, vals: &[i32], fit: fn(i32) -> bool| match vals.iter().position(|&v| !fit(v)) {
            Some(i) => Err(bad(format!(
                "int_val[{i}] = {} is out of {kind} range",
                vals[i]
            ))),
            None => Ok(()),
        };
    let data = match a.dtype {
        dt::FLOAT => {
            count("float_val", a.float_val.len())?;
            TensorData::F32(a.float_val)
        }
        dt::DOUBLE => {
            count("double_val", a.double_val.len())?;
            TensorData::F64(a.double_val)
        }
        dt::INT64 => {
            count("int64_val", a.int64_val.len())?;
            TensorData::I64(a.int64_val)
        }
        dt::INT32 => {
            count("int_val", a.int_val.len())?;
            TensorData::I32(a.int_val)
        }
        dt::INT8 => {
            count("int_val", a.int_val.len())?;
            narrow("DT_INT8", &a.int_val, |v| i8::try_from(v).is_ok())?;
            TensorData::I8(a.int_val.iter().map(|&v| v as i8).collect())
        }
        dt::UINT8 => {
            count("int_val", a.int_val.len())?;
            narrow("DT_UINT8", &a.int_val, |v| u8::try_from(v).is_ok())?;
            TensorData::U8(a.int_val.iter().map(|&v| v as u8).collect())
        }
        dt::BOOL => {
            count("bool_val", a.bool_val.len())?;
            TensorData::Bool(a.bool_val)
        }
        dt::INVALID => {
            return Err(bad(format!(
                "dtype is not set (DT_INVALID); expected one of {SUPPORTED}"
            )))
        }
        other => {
            return Err(bad(format!(
                "{} is not supported here; expected one of {SUPPORTED}",
                dt::name(other)
            )))
        }
    };
    Tensor::new(shape, data).map_err(bad)
}

/// One engine output as an answer array. Buffers are moved, not copied.
pub fn from_tensor(t: Tensor, flavor: Flavor) -> ArrayProto {
    let mut a = ArrayProto {
        array_shape: Some(ArrayShape {
            dim: t.shape.iter().map(|&d| d as i64).collect(),
        }),
        ..Default::default()
    };
    match t.data {
        TensorData::F32(v) => (a.dtype, a.float_val) = (dt::FLOAT, v),
        TensorData::F64(v) => (a.dtype, a.double_val) = (dt::DOUBLE, v),
        TensorData::I64(v) => (a.dtype, a.int64_val) = (dt::INT64, v),
        TensorData::I32(v) => (a.dtype, a.int_val) = (dt::INT32, v),
        TensorData::I8(v) => {
            (a.dtype, a.int_val) = (dt::INT8, v.into_iter().map(i32::from).collect())
        }
        TensorData::U8(v) => {
            (a.dtype, a.int_val) = (dt::UINT8, v.into_iter().map(i32::from).collect())
        }
        TensorData::Bool(v) => match flavor {
            Flavor::Tf => (a.dtype, a.bool_val) = (dt::BOOL, v),
            Flavor::Torch => {
                (a.dtype, a.int_val) = (dt::UINT8, v.into_iter().map(i32::from).collect())
            }
        },
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(dtype: i32, dims: &[i64]) -> ArrayProto {
        ArrayProto {
            dtype,
            array_shape: Some(ArrayShape { dim: dims.to_vec() }),
            ..Default::default()
        }
    }

    #[test]
    fn each_dtype_reads_the_field_the_sdk_fills() {
        let mut a = arr(dt::FLOAT, &[2]);
        a.float_val = vec![1.5, -2.0];
        assert_eq!(
            to_tensor(a, "x").unwrap(),
            Tensor::new(vec![2], TensorData::F32(vec![1.5, -2.0])).unwrap()
        );
        let mut a = arr(dt::DOUBLE, &[1, 1]);
        a.double_val = vec![0.25];
        assert_eq!(to_tensor(a, "x").unwrap().data, TensorData::F64(vec![0.25]));
        let mut a = arr(dt::INT64, &[3]);
        a.int64_val = vec![1, i64::MAX, -5];
        assert_eq!(
            to_tensor(a, "x").unwrap().data,
            TensorData::I64(vec![1, i64::MAX, -5])
        );
        let mut a = arr(dt::INT32, &[1]);
        a.int_val = vec![-7];
        assert_eq!(to_tensor(a, "x").unwrap().data, TensorData::I32(vec![-7]));
        let mut a = arr(dt::INT8, &[2]);
        a.int_val = vec![-128, 127];
        assert_eq!(
            to_tensor(a, "x").unwrap().data,
            TensorData::I8(vec![-128, 127])
        );
        let mut a = arr(dt::UINT8, &[2]);
        a.int_val = vec![0, 255];
        assert_eq!(
            to_tensor(a, "x").unwrap().data,
            TensorData::U8(vec![0, 255])
        );
        let mut a = arr(dt::BOOL, &[2]);
        a.bool_val = vec![true, false];
        assert_eq!(
            to_tensor(a, "x").unwrap().data,
            TensorData::Bool(vec![true, false])
        );
        // A scalar: no shape, one value.
        let a = ArrayProto {
            dtype: dt::INT64,
            int64_val: vec![16000],
            ..Default::default()
        };
        let t = to_tensor(a, "x").unwrap();
        assert!(t.shape.is_empty());
        assert_eq!(t.data, TensorData::I64(vec![16000]));
    }

    #[test]
    fn bad_arrays_are_named_and_explained() {
        let mut a = arr(dt::FLOAT, &[2, 2]);
        a.float_val = vec![1.0; 3];
        let e = to_tensor(a, "input 'x'").unwrap_err();
        assert!(matches!(e, ServingError::BadRequest(_)));
        let e = e.to_string();
        assert!(
            e.starts_with("input 'x': ")
                && e.contains("needs 4 values in float_val (for DT_FLOAT), got 3"),
            "{e}"
        );
        // Values in the wrong field for the dtype.
        let mut a = arr(dt::INT64, &[2]);
        a.int_val = vec![1, 2];
        assert!(to_tensor(a, "x")
            .unwrap_err()
            .to_string()
            .contains("in int64_val (for DT_INT64), got 0"));
        let mut a = arr(dt::UINT8, &[1]);
        a.int_val = vec![300];
        assert!(to_tensor(a, "x")
            .unwrap_err()
            .to_string()
            .contains("int_val[0] = 300 is out of DT_UINT8 range"));
        let mut a = arr(dt::INT8, &[1]);
        a.int_val = vec![-129];
        assert!(to_tensor(a, "x")
            .unwrap_err()
            .to_string()
            .contains("DT_INT8 range"));
        let e = to_tensor(arr(dt::STRING, &[1]), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("DT_STRING is not supported"), "{e}");
        let e = to_tensor(arr(dt::INT16, &[1]), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("DT_INT16 is not supported"), "{e}");
        let e = to_tensor(arr(99, &[1]), "x").unwrap_err().to_string();
        assert!(e.contains("dtype 99 is not supported"), "{e}");
        let e = to_tensor(arr(dt::INVALID, &[1]), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("DT_INVALID"), "{e}");
        let e = to_tensor(arr(dt::FLOAT, &[-1, 4]), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("negative dimension"), "{e}");
        let e = to_tensor(arr(dt::FLOAT, &[i64::MAX, i64::MAX]), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("too large"), "{e}");
    }

    #[test]
    fn outputs_use_the_sdk_fields_and_bool_differs_by_flavor() {
        let t = Tensor::new(vec![1, 2], TensorData::F32(vec![0.5, 1.0])).unwrap();
        let a = from_tensor(t, Flavor::Tf);
        assert_eq!(a.dtype, dt::FLOAT);
        assert_eq!(a.array_shape.unwrap().dim, vec![1, 2]);
        assert_eq!(a.float_val, vec![0.5, 1.0]);
        let a = from_tensor(
            Tensor::new(vec![1], TensorData::I8(vec![-3])).unwrap(),
            Flavor::Tf,
        );
        assert_eq!((a.dtype, a.int_val), (dt::INT8, vec![-3]));
        let a = from_tensor(
            Tensor::new(vec![1], TensorData::U8(vec![200])).unwrap(),
            Flavor::Tf,
        );
        assert_eq!((a.dtype, a.int_val), (dt::UINT8, vec![200]));
        let a = from_tensor(
            Tensor::new(vec![1], TensorData::I64(vec![9])).unwrap(),
            Flavor::Torch,
        );
        assert_eq!((a.dtype, a.int64_val), (dt::INT64, vec![9]));
        let b = Tensor::new(vec![2], TensorData::Bool(vec![true, false])).unwrap();
        let a = from_tensor(b.clone(), Flavor::Tf);
        assert_eq!((a.dtype, a.bool_val), (dt::BOOL, vec![true, false]));
        let a = from_tensor(b, Flavor::Torch);
        assert_eq!((a.dtype, a.int_val), (dt::UINT8, vec![1, 0]));
        assert!(a.bool_val.is_empty());
    }
}
