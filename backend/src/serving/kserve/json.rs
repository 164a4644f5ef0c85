//! The KServe v2 JSON codec: a request's tensors decoded straight into
//! typed values, the response written straight from the engine's buffers.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use optimizer::tensor::{DType, Tensor, TensorData};
use shared::api::{InferTensor, RequestedOutput};

use crate::serving::execute::execute;
use crate::serving::instances::ServicePool;
use crate::serving::ServingError;

/// Checks a request's `outputs` list before anything is done per output:
/// each output at most once, and no more of them than the model has. Only
/// the first `model_outputs + 1` names are looked at, so a list of
/// thousands costs no more than a short one. The error is the message of a
/// 400. Whether each name is one of the model's outputs is for the caller,
/// which knows them. For both KServe paths: this one and the binary
/// extension's `parse`.
pub(crate) fn check_requested_outputs(names: &[&str], model_outputs: usize) -> Result<(), String> {
    // Among the first `model_outputs + 1` names there is a repeat or an
    // unknown one: name the repeat when there is one.
    let mut seen =
        std::collections::HashSet::with_capacity(names.len().min(model_outputs.saturating_add(1)));
    for name in names.iter().take(model_outputs.saturating_add(1)) {
        if !seen.insert(*name) {
            return Err(format!(
                "output '{name}': requested more than once; list each output at most once"
            ));
        }
    }
    if names.len() > model_outputs {
        return Err(format!(
            "outputs: {} requested but the model has {model_outputs}; list each output at most once",
            names.len()
        ));
    }
    Ok(())
}

/// What a KServe v2 JSON request asks: its inputs as tensors, the outputs
/// it wants (all when `None`) and its id.
type Asked = (Vec<(String, Tensor)>, Option<Vec<String>>, Option<String>);

/// Reads a KServe v2 JSON request for a model with `model_outputs` outputs.
fn parse(body: &[u8], model_outputs: usize) -> Result<Asked, ServingError> {
    let req: Request = serde_json::from_str(super::utf8(body)?).map_err(|e| {
        ServingError::BadRequest(format!("body: expected a KServe v2 inference request {{\"inputs\":[{{\"name\",\"shape\",\"datatype\",\"data\"}}]}}: {e}"))
    })?;
    // Before any per-output work: no output twice, no more than the model has.
    if let Some(o) = &req.outputs {
        let names: Vec<&str> = o.iter().map(|x| x.name.as_str()).collect();
        check_requested_outputs(&names, model_outputs).map_err(ServingError::BadRequest)?;
    }
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for t in req.inputs {
        let tensor = decode(&t.name, &t.datatype, &t.shape, &t.data.0)?;
        inputs.push((t.name, tensor));
    }
    let wanted = req.outputs.map(|o| o.into_iter().map(|x| x.name).collect());
    Ok((inputs, wanted, req.id))
}

/// One KServe v2 JSON inference on `pool`.
pub async fn infer(
    pool: Arc<ServicePool>,
    name: &str,
    version: Option<&str>,
    body: bytes::Bytes,
) -> Result<(Response, Duration), ServingError> {
    let model_outputs = pool.signature.outputs.len();
    let (inputs, wanted, id) =
        crate::serving::decode_body(body, move |b| parse(b, model_outputs)).await?;
    let (outputs, engine) = execute(pool, inputs).await?;
    let outputs: Vec<OutTensor> = outputs
        .iter()
        .filter(|(oname, _)| wanted.as_ref().is_none_or(|w| w.contains(oname)))
        .map(|(oname, t)| OutTensor {
            name: oname,
            shape: t.shape.iter().map(|&d| d as i64).collect(),
            datatype: t.dtype().kserve_name(),
            data: DataRef::of(&t.data),
        })
        .collect();
    let body = OutResponse {
        model_name: name,
        model_version: version,
        id: id.as_deref(),
        outputs,
    }
    .to_json();
    let response = (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    Ok((response, engine))
}

/// The KServe v2 response, serialized straight from the engine's buffers:
/// f32 values print in their shortest f32 form, with no intermediate
/// `serde_json::Value` (most of a large answer's serving cost).
#[derive(serde::Serialize)]
struct OutResponse<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutTensor<'a>>,
}

#[derive(serde::Serialize)]
struct OutTensor<'a> {
    name: &'a str,
    shape: Vec<i64>,
    datatype: &'static str,
    data: DataRef<'a>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum DataRef<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    I64(&'a [i64]),
    I32(&'a [i32]),
    I8(&'a [i8]),
    U8(&'a [u8]),
    Bool(&'a [bool]),
}

impl<'a> DataRef<'a> {
    fn of(d: &'a TensorData) -> DataRef<'a> {
        match d {
            TensorData::F32(v) => DataRef::F32(v),
            TensorData::F64(v) => DataRef::F64(v),
            TensorData::I64(v) => DataRef::I64(v),
            TensorData::I32(v) => DataRef::I32(v),
            TensorData::I8(v) => DataRef::I8(v),
            TensorData::U8(v) => DataRef::U8(v),
            TensorData::Bool(v) => DataRef::Bool(v),
        }
    }

    fn len(&self) -> usize {
        match self {
            DataRef::F32(v) => v.len(),
            DataRef::F64(v) => v.len(),
            DataRef::I64(v) => v.len(),
            DataRef::I32(v) => v.len(),
            DataRef::I8(v) => v.len(),
            DataRef::U8(v) => v.len(),
            DataRef::Bool(v) => v.len(),
        }
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            DataRef::F32(v) => write_array(out, v),
            DataRef::F64(v) => write_array(out, v),
            DataRef::I64(v) => write_array(out, v),
            DataRef::I32(v) => put(out, v),
            DataRef::I8(v) => put(out, v),
            DataRef::U8(v) => put(out, v),
            DataRef::Bool(v) => put(out, v),
        }
    }
}

impl OutResponse<'_> {
    /// Exactly the JSON the `Serialize` derive writes, into one buffer sized
    /// up front, with large arrays formatted on all cores: printing floats
    /// in shortest round-trip form is most of a large answer's serving time
    /// (about 1 ms for MiniLM's 49k values), and between engine calls the
    /// cores are otherwise idle.
    fn to_json(&self) -> Vec<u8> {
        let values: usize = self.outputs.iter().map(|o| o.data.len()).sum();
        let mut out = Vec::with_capacity(256 + values * 12);
        out.extend_from_slice(b"{\"model_name\":");
        put(&mut out, self.model_name);
        if let Some(v) = self.model_version {
            out.extend_from_slice(b",\"model_version\":");
            put(&mut out, v);
        }
        if let Some(id) = self.id {
            out.extend_from_slice(b",\"id\":");
            put(&mut out, id);
        }
        out.extend_from_slice(b",\"outputs\":[");
        for (i, t) in self.outputs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            put(&mut out, t.name);
            out.extend_from_slice(b",\"shape\":");
            put(&mut out, &t.shape);
            out.extend_from_slice(b",\"datatype\":");
            put(&mut out, t.datatype);
            out.extend_from_slice(b",\"data\":");
            t.data.write_json(&mut out);
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        out
    }
}

/// Appends `v` as JSON. Writing to a `Vec` cannot fail, and the values
/// written here (strings, numbers, arrays of them) always serialize.
fn put<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let _ = serde_json::to_writer(out, v);
}

/// Values per thread below which formatting in parallel costs more (thread
/// start) than it saves.
const PARALLEL_MIN_PER_THREAD: usize = 8192;

fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

fn write_items<T: serde::Serialize>(out: &mut Vec<u8>, items: &[T]) {
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put(out, x);
    }
}

/// A JSON array of `v`; long ones are cut into one piece per core, each
/// formatted on its own thread and appended in order.
fn write_array<T: serde::Serialize + Sync>(out: &mut Vec<u8>, v: &[T]) {
    let parts = cores().min(v.len() / PARALLEL_MIN_PER_THREAD);
    if parts < 2 {
        put(out, v);
        return;
    }
    let chunk = v.len().div_ceil(parts);
    out.push(b'[');
    std::thread::scope(|s| {
        let rest: Vec<_> = v
            .chunks(chunk)
            .skip(1)
            .map(|c| {
                let job = std::thread::Builder::new().spawn_scoped(s, move || {
                    let mut buf = Vec::with_capacity(c.len() * 12);
                    write_items(&mut buf, c);
                    buf
                });
                (c, job)
            })
            .collect();
        write_items(out, &v[..chunk]);
        for (c, job) in rest {
            out.push(b',');
            match job.map(|h| h.join()) {
                Ok(Ok(buf)) => out.extend_from_slice(&buf),
                // No thread to be had: format this piece here instead.
                _ => write_items(out, c),
            }
        }
    });
    out.push(b']');
}

/// The KServe v2 JSON request as `run` reads it: tensor data goes straight
/// into typed scalars, with no `serde_json::Value` tree in between.
#[derive(serde::Deserialize)]
struct Request {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<RequestTensor>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(serde::Deserialize)]
struct RequestTensor {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Flat,
}

/// One JSON value of a tensor's `data`, as written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar {
    Int(i64),
    /// Above `i64::MAX`.
    UInt(u64),
    Float(f64),
    Bool(bool),
    /// A string, null or object: no tensor element.
    Other,
}

/// `data` flattened in row-major order: nested arrays and a flat array read
/// the same.
struct Flat(Vec<Scalar>);

impl<'de> serde::Deserialize<'de> for Flat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Flat, D::Error> {
        let mut out = Vec::new();
        d.deserialize_any(FlatInto(&mut out))?;
        Ok(Flat(out))
    }
}

/// Appends one value (recursing into arrays) to the vector it holds.
struct FlatInto<'a>(&'a mut Vec<Scalar>);

impl<'de> serde::de::DeserializeSeed<'de> for FlatInto<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FlatInto<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("numbers or booleans, in a flat or nested array")
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(Scalar::Int(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0
            .push(i64::try_from(v).map_or(Scalar::UInt(v), Scalar::Int));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(Scalar::Float(v));
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(Scalar::Bool(v));
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.0.push(Scalar::Other);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.push(Scalar::Other);
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        self.0.push(Scalar::Other);
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.0.reserve(n);
        }
        while seq.next_element_seed(FlatInto(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// A KServe v2 JSON tensor as an engine tensor; errors name the input.
pub fn to_tensor(t: &InferTensor) -> Result<Tensor, ServingError> {
    let flat: Flat = serde::Deserialize::deserialize(&t.data)
        .map_err(|e| ServingError::BadRequest(format!("input '{}': data: {e}", t.name)))?;
    decode(&t.name, &t.datatype, &t.shape, &flat.0)
}

/// Checks a tensor's datatype, shape and values; errors name the input and
/// the index of a bad value.
fn decode(
    name: &str,
    datatype: &str,
    shape: &[i64],
    flat: &[Scalar],
) -> Result<Tensor, ServingError> {
    let bad = |reason: String| ServingError::BadRequest(format!("input '{name}': {reason}"));
    let dtype = DType::from_kserve_name(datatype)
        .ok_or_else(|| bad(format!("unsupported datatype '{datatype}'; expected one of FP32, FP64, INT64, INT32, INT8, UINT8, BOOL")))?;
    if shape.iter().any(|&d| d < 0) {
        return Err(bad(format!("shape {shape:?} has a negative dimension")));
    }
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let n = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    if flat.len() != n {
        return Err(bad(format!(
            "shape {shape:?} needs {n} values, data has {}",
            flat.len()
        )));
    }
    let num = |i: usize, v: &Scalar| match *v {
        Scalar::Int(x) => Ok(x as f64),
        Scalar::UInt(x) => Ok(x as f64),
        Scalar::Float(x) => Ok(x),
        _ => Err(bad(format!("data[{i}] is not a number"))),
    };
    let int = |i: usize, v: &Scalar| match *v {
        Scalar::Int(x) => Ok(x),
        _ => Err(bad(format!("data[{i}] is not an integer"))),
    };
    fn all<T, E>(flat: &[Scalar], f: impl Fn(usize, &Scalar) -> Result<T, E>) -> Result<Vec<T>, E> {
        flat.iter().enumerate().map(|(i, v)| f(i, v)).collect()
    }
    let out_of = |i: usize, range: &str| bad(format!("data[{i}] out of {range} range"));
    let data = match dtype {
        DType::F32 => TensorData::F32(all(flat, |i, v| num(i, v).map(|x| x as f32))?),
        DType::F64 => TensorData::F64(all(flat, num)?),
        DType::I64 => TensorData::I64(all(flat, int)?),
        DType::I32 => TensorData::I32(all(flat, |i, v| {
            int(i, v).and_then(|x| i32::try_from(x).map_err(|_| out_of(i, "INT32")))
        })?),
        DType::I8 => TensorData::I8(all(flat, |i, v| {
            int(i, v).and_then(|x| i8::try_from(x).map_err(|_| out_of(i, "INT8")))
        })?),
        DType::U8 => TensorData::U8(all(flat, |i, v| {
            int(i, v).and_then(|x| u8::try_from(x).map_err(|_| out_of(i, "UINT8")))
        })?),
        DType::Bool => TensorData::Bool(all(flat, |i, v| match *v {
            Scalar::Bool(b) => Ok(b),
            _ => Err(bad(format!("data[{i}] is not a boolean"))),
        })?),
    };
    Tensor::new(dims, data).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(datatype: &str, shape: Vec<i64>, data: serde_json::Value) -> InferTensor {
        InferTensor {
            name: "x".into(),
            shape,
            datatype: datatype.into(),
            data,
        }
    }

    #[test]
    fn nested_and_flat_data_both_parse() {
        let a = to_tensor(&req(
            "FP32",
            vec![2, 2],
            serde_json::json!([[1, 2], [3, 4.5]]),
        ))
        .unwrap();
        let b = to_tensor(&req("FP32", vec![2, 2], serde_json::json!([1, 2, 3, 4.5]))).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.5]));
    }

    #[test]
    fn the_typed_request_reads_as_the_value_tree_did() {
        let body = r#"{"id":"r1","inputs":[
            {"name":"a","shape":[2,2],"datatype":"INT64","data":[[1,-2],[9223372036854775807,4]]},
            {"name":"b","shape":[3],"datatype":"FP32","data":[0.5,1,-2e-3],"parameters":{"x":1}},
            {"name":"c","shape":[2],"datatype":"BOOL","data":[true,false]}],
            "outputs":[{"name":"y"}]}"#;
        let fast: Request = serde_json::from_str(body).unwrap();
        let tree: shared::api::InferRequest = serde_json::from_str(body).unwrap();
        assert_eq!(fast.id.as_deref(), Some("r1"));
        assert_eq!(fast.outputs.unwrap()[0].name, "y");
        for (t, v) in fast.inputs.iter().zip(&tree.inputs) {
            let fast = decode(&t.name, &t.datatype, &t.shape, &t.data.0).unwrap();
            assert_eq!(fast, to_tensor(v).unwrap(), "input {}", t.name);
        }
        // A value beyond i64 is no INT64, but is a number.
        let big = |dt: &str| {
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"{dt}","data":[18446744073709551615]}}]}}"#
            );
            let parsed: Request = serde_json::from_str(&body).unwrap();
            let t = &parsed.inputs[0];
            decode(&t.name, &t.datatype, &t.shape, &t.data.0)
        };
        assert!(big("INT64")
            .unwrap_err()
            .to_string()
            .contains("data[0] is not an integer"));
        assert!(big("FP64").is_ok());
        let e = to_tensor(&req("FP32", vec![2], serde_json::json!([1, "2"])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("data[1] is not a number"), "{e}");
    }

    #[test]
    fn the_fast_writer_writes_what_the_derive_writes() {
        let big: Vec<f32> = (0..40_000)
            .map(|i| match i {
                7 => f32::NAN,
                8 => f32::INFINITY,
                _ => (i as f32 * 0.37).sin() * 1e3_f32.powi(i % 5 - 2),
            })
            .collect();
        let wide: Vec<f64> = (0..20_000).map(|i| i as f64 / 3.0).collect();
        let ints: Vec<i64> = vec![1, -2, i64::MAX];
        let flags = [true, false];
        for (version, id) in [(Some("1"), Some("a \"quoted\" id")), (None, None)] {
            let resp = OutResponse {
                model_name: "m\u{e9}",
                model_version: version,
                id,
                outputs: vec![
                    OutTensor {
                        name: "big",
                        shape: vec![40_000],
                        datatype: "FP32",
                        data: DataRef::F32(&big),
                    },
                    OutTensor {
                        name: "wide",
                        shape: vec![2, 10_000],
                        datatype: "FP64",
                        data: DataRef::F64(&wide),
                    },
                    OutTensor {
                        name: "ints",
                        shape: vec![3],
                        datatype: "INT64",
                        data: DataRef::I64(&ints),
                    },
                    OutTensor {
                        name: "flags",
                        shape: vec![2],
                        datatype: "BOOL",
                        data: DataRef::Bool(&flags),
                    },
                    OutTensor {
                        name: "empty",
                        shape: vec![0],
                        datatype: "FP32",
                        data: DataRef::F32(&[]),
                    },
                ],
            };
            assert_eq!(
                String::from_utf8(resp.to_json()).unwrap(),
                serde_json::to_string(&resp).unwrap()
            );
        }
    }

    #[test]
    fn wrong_count_and_wrong_type_are_named() {
        let e = to_tensor(&req("INT64", vec![1, 3], serde_json::json!([1, 2])))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("input 'x'") && e.contains("needs 3 values"),
            "{e}"
        );
        let e = to_tensor(&req("INT64", vec![2], serde_json::json!([1, 2.5])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("data[1] is not an integer"), "{e}");
        let e = to_tensor(&req("FP17", vec![1], serde_json::json!([1])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported datatype 'FP17'"), "{e}");
    }
}
