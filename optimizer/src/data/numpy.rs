//! numpy objects as the pickle reader records them, and numpy's type codes.
//!
//! What numpy pickles look like (numpy 1.x and 2.x, protocols 2-5):
//! - an array: `_reconstruct(ndarray, (0,), b'b')`, then `BUILD` with
//!   `(version, shape, dtype, is_fortran, raw)`, where `raw` is bytes (or, at
//!   protocol 2, `_codecs.encode(latin1_str, 'latin1')`), or a list of objects
//!   for an object array;
//! - with protocol 5: `_frombuffer(buffer, dtype, shape, order)`;
//! - a scalar: `scalar(dtype, raw)`;
//! - a dtype: `dtype('f4', False, True)`, then `BUILD` with
//!   `(3, '<', None, None, None, -1, -1, flags)`; element 1 is the byte order.

use std::borrow::Cow;

use super::elem::{self, Budget, ByteOrder, Elem};
use super::pickle::{Global, Pickle, Value};
use crate::tensor::Tensor;

/// What a numpy type code denotes for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NpType {
    Elem(Elem),
    /// `O`: Python objects, i.e. a pickle.
    Object,
}

/// A type code without byte order (`f4`, `i8`, `b1`, `O8`, `?`).
pub(super) fn type_code(code: &str) -> Result<NpType, String> {
    Ok(NpType::Elem(match code {
        "f4" => Elem::F32,
        "f8" => Elem::F64,
        "f2" => Elem::F16,
        "i8" => Elem::I64,
        "i4" => Elem::I32,
        "i2" => Elem::I16,
        "i1" => Elem::I8,
        "u1" => Elem::U8,
        "b1" | "?" => Elem::Bool,
        "O" | "O4" | "O8" => return Ok(NpType::Object),
        other => {
            return Err(format!(
                "numpy element type '{}' is not supported (supported: {})",
                other.escape_debug(),
                elem::SUPPORTED
            ))
        }
    }))
}

/// A `.npy` header `descr` such as `<f4`, `|b1` or `|O`.
pub(super) fn descr(descr: &str) -> Result<(NpType, ByteOrder), String> {
    let (order, code) = match descr.as_bytes().first() {
        Some(b'>') => (ByteOrder::Big, &descr[1..]),
        Some(b'<' | b'|' | b'=') => (ByteOrder::Little, &descr[1..]),
        _ => (ByteOrder::Little, descr),
    };
    Ok((type_code(code)?, order))
}

/// A pickled `numpy.dtype`.
fn dtype(p: &Pickle, v: &Value) -> Result<(NpType, ByteOrder), String> {
    let Some((Global::NumpyDtype, args, state)) = p.call(v) else {
        return Err(format!("expected a numpy dtype, found {}", p.describe(v)));
    };
    let code = args
        .first()
        .and_then(Value::as_str)
        .ok_or("a numpy dtype without a type code")?;
    let ty = type_code(code)?;
    // No state means native order; every machine numpy wheels target is
    // little-endian.
    let order = match state.and_then(|s| p.seq(s)).and_then(|s| s.get(1)) {
        Some(v) if v.as_str() == Some(">") => ByteOrder::Big,
        _ => ByteOrder::Little,
    };
    Ok((ty, order))
}

/// The raw bytes of an array or scalar, in any of the spellings above.
fn raw_bytes<'p>(p: &'p Pickle, v: &'p Value) -> Result<Cow<'p, [u8]>, String> {
    match v {
        Value::Bytes(b) => Ok(Cow::Borrowed(b)),
        // Python 2 pickles carry bytes as latin-1 text.
        Value::Str(s) => latin1(s).map(Cow::Owned),
        _ => match p.call(v) {
            Some((Global::CodecsEncode, [Value::Str(s), enc], _))
                if matches!(enc.as_str(), Some("latin1" | "latin-1")) =>
            {
                latin1(s).map(Cow::Owned)
            }
            _ => Err(format!("expected raw array bytes, found {}", p.describe(v))),
        },
    }
}

fn latin1(s: &str) -> Result<Vec<u8>, String> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| "array bytes are not latin-1 text".into()))
        .collect()
}

/// An `np.save`d object array: its elements (the per-call feed dicts).
pub(super) fn object_array_items<'p>(p: &'p Pickle, v: &'p Value) -> Result<&'p [Value], String> {
    let expected = "expected a pickled numpy object array of feed dicts (np.save(path, \
                    list_of_dicts))";
    if let Some(items) = p.seq(v) {
        return Ok(items); // a bare pickled list: same meaning
    }
    let Some((Global::NdarrayReconstruct, _, Some(state))) = p.call(v) else {
        return Err(format!("{expected}, found {}", p.describe(v)));
    };
    let (_, dt, _, data) = array_state(p, state)?;
    match dtype(p, dt)?.0 {
        NpType::Object => p
            .seq(data)
            .ok_or_else(|| format!("{expected}; its data is {}", p.describe(data))),
        NpType::Elem(_) => Err(format!("{expected}, found a numeric array")),
    }
}

/// `(shape, dtype, is_fortran, raw)` from `BUILD`'s state. numpy's
/// `__setstate__` also accepts the 4-tuple form without the leading version.
fn array_state<'p>(
    p: &'p Pickle,
    state: &'p Value,
) -> Result<(&'p Value, &'p Value, &'p Value, &'p Value), String> {
    match p.seq(state) {
        Some([_, shape, dt, fortran, data]) | Some([shape, dt, fortran, data]) => {
            Ok((shape, dt, fortran, data))
        }
        _ => Err(format!(
            "expected an ndarray state (version, shape, dtype, is_fortran, data), found {}",
            p.describe(state)
        )),
    }
}

/// A numeric array or numpy scalar as a tensor; plain Python numbers follow
/// the input's declared type.
pub(super) fn tensor(
    p: &Pickle,
    v: &Value,
    spec: &shared::api::TensorSpec,
    budget: &mut Budget,
) -> Result<Tensor, String> {
    if let Some(t) = super::samples::python_scalar(v, spec) {
        return t;
    }
    let expected = "expected a numpy array or scalar";
    let (shape, (ty, order), fortran, raw) = match p.call(v) {
        Some((Global::NdarrayReconstruct, _, Some(state))) => {
            let (shape, dt, fortran, data) = array_state(p, state)?;
            let shape = p
                .dims(shape)
                .ok_or("an ndarray shape is not a tuple of sizes")?;
            let fortran = fortran
                .as_int()
                .ok_or("an ndarray is_fortran flag is not a bool")?
                != 0;
            (shape, dtype(p, dt)?, fortran, data)
        }
        Some((Global::NumpyFromBuffer, [buf, dt, shape, order], _)) => {
            let shape = p
                .dims(shape)
                .ok_or("an ndarray shape is not a tuple of sizes")?;
            (shape, dtype(p, dt)?, order.as_str() == Some("F"), buf)
        }
        Some((Global::NumpyScalar, [dt, raw], _)) => (Vec::new(), dtype(p, dt)?, false, raw),
        _ => return Err(format!("{expected}, found {}", p.describe(v))),
    };
    let NpType::Elem(elem) = ty else {
        return Err("nested object arrays are not supported; give numeric arrays".into());
    };
    let raw = raw_bytes(p, raw)?;
    if fortran {
        elem::check_len(elem, raw.len(), &shape)?;
        elem::gather(
            elem,
            order,
            &raw,
            &shape,
            &elem::f_strides(&shape),
            0,
            budget,
        )
    } else {
        elem::contiguous(elem, order, &raw, &shape, budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::pickle;
    use crate::tensor::TensorData;
    use shared::api::TensorSpec;

    fn spec(dt: &str) -> TensorSpec {
        TensorSpec {
            name: "x".into(),
            datatype: dt.into(),
            shape: vec![-1, 2],
        }
    }

    /// A numpy 1.x array pickle at protocol 2: GLOBALs, and the raw data as
    /// `_codecs.encode(latin1_text, 'latin1')`.
    fn protocol2_array(
        code: &str,
        order: &str,
        shape: &[u8],
        fortran: bool,
        raw: &[u8],
    ) -> Vec<u8> {
        let mut p = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85U\x01b\x87R(K\x01".to_vec();
        p.push(b'(');
        for &d in shape {
            p.extend([b'K', d]);
        }
        p.push(b't');
        p.extend(b"cnumpy\ndtype\n");
        p.extend([b'U', code.len() as u8]);
        p.extend(code.as_bytes());
        p.extend(b"\x89\x88\x87R(K\x03");
        p.extend([b'U', 1, order.as_bytes()[0]]);
        p.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb");
        p.push(if fortran { 0x88 } else { 0x89 });
        p.extend(b"c_codecs\nencode\n");
        let text: String = raw.iter().map(|&b| char::from(b)).collect();
        p.push(b'X');
        p.extend((text.len() as u32).to_le_bytes());
        p.extend(text.as_bytes());
        p.extend(b"U\x06latin1\x86R");
        p.extend(b"tb.");
        p
    }

    fn decode(pkl: &[u8], dt: &str) -> Result<Tensor, String> {
        let p = pickle::parse(pkl)?;
        tensor(&p, p.root(), &spec(dt), &mut Budget::for_file(pkl.len()))
    }

    #[test]
    fn protocol2_arrays_with_latin1_data() {
        let raw: Vec<u8> = [1.0f32, 200.5, -3.0, 4.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = decode(&protocol2_array("f4", "<", &[2, 2], false, &raw), "FP32").unwrap();
        assert_eq!(t.shape, vec![2, 2]);
        assert_eq!(t.data, TensorData::F32(vec![1.0, 200.5, -3.0, 4.0]));
    }

    #[test]
    fn fortran_order_and_big_endian() {
        // Column-major [[1, 2, 3], [4, 5, 6]] stored big-endian.
        let raw: Vec<u8> = [1i16, 4, 2, 5, 3, 6]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let t = decode(&protocol2_array("i2", ">", &[2, 3], true, &raw), "INT32").unwrap();
        assert_eq!(t.data, TensorData::I32(vec![1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn wrong_sizes_and_types_are_named() {
        let e = decode(
            &protocol2_array("f4", "<", &[2, 2], false, &[0; 12]),
            "FP32",
        )
        .unwrap_err();
        assert!(e.contains("12 bytes") && e.contains("needs 16"), "{e}");
        let e = decode(&protocol2_array("u2", "<", &[2], false, &[0; 4]), "FP32").unwrap_err();
        assert!(
            e.contains("'u2' is not supported") && e.contains("int16"),
            "{e}"
        );
    }

    #[test]
    fn numpy_scalars_are_0d_and_python_numbers_follow_the_input() {
        // numpy 2 STACK_GLOBAL spelling: scalar(dtype('f8') + BUILD, raw)
        let mut p = b"\x80\x04\x8c\x16numpy._core.multiarray\x8c\x06scalar\x93\x8c\x05numpy\x8c\x05dtype\x93\x8c\x02f8\x89\x88\x87R(K\x03\x8c\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbC\x08".to_vec();
        p.extend(0.5f64.to_le_bytes());
        p.extend(b"\x86R.");
        let t = decode(&p, "FP64").unwrap();
        assert_eq!(
            (t.shape.clone(), t.data),
            (vec![], TensorData::F64(vec![0.5]))
        );
        let t = decode(b"\x80\x02K\x07.", "INT64").unwrap();
        assert_eq!(
            (t.shape.clone(), t.data),
            (vec![], TensorData::I64(vec![7]))
        );
        assert!(decode(b"\x80\x02M\x00\x01.", "INT8")
            .unwrap_err()
            .contains("does not fit"));
        assert!(decode(b"\x80\x02N.", "FP32")
            .unwrap_err()
            .contains("found None"));
    }

    #[test]
    fn descr_strings() {
        assert_eq!(
            descr("<f4"),
            Ok((NpType::Elem(Elem::F32), ByteOrder::Little))
        );
        assert_eq!(descr(">i8"), Ok((NpType::Elem(Elem::I64), ByteOrder::Big)));
        assert_eq!(descr("|O"), Ok((NpType::Object, ByteOrder::Little)));
        assert!(descr("<c8").is_err());
        assert!(descr("").is_err());
    }
}
