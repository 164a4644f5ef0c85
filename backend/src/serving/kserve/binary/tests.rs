use super::*;
use crate::serving::kserve::json::check_requested_outputs;
use optimizer::tensor::TensorData;
use shared::api::TensorSpec;
use std::io::Write;

fn spec(name: &str, datatype: &str, shape: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
    }
}

fn sig() -> ModelSignature {
    ModelSignature {
        format: "onnx".into(),
        inputs: vec![spec("ids", "INT64", &[1, -1]), spec("x", "FP32", &[1, 2])],
        outputs: vec![spec("y", "FP32", &[1, 2]), spec("z", "INT64", &[1])],
    }
}

fn headers(json_len: Option<usize>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some(n) = json_len {
        h.insert(HEADER_LENGTH, HeaderValue::from(n));
    }
    h
}

/// A body as Triton's client builds it: JSON, then each binary input's bytes.
fn body(json: &Value, binary: &[&[u8]]) -> (HeaderMap, Vec<u8>) {
    let mut b = serde_json::to_vec(json).unwrap();
    let n = b.len();
    for part in binary {
        b.extend_from_slice(part);
    }
    (headers(Some(n)), b)
}

fn f32_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64_le(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bad(h: &HeaderMap, b: &[u8]) -> String {
    match parse(h, b, &sig()) {
        Err(ServingError::BadRequest(m)) => m,
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[test]
fn binary_and_json_inputs_parse_in_order() {
    let req = json!({
        "id": "r1",
        "inputs": [
            {"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}},
            {"name": "ids", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]},
            {"name": "extra", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}},
        ],
        "parameters": {"binary_data_output": true}
    });
    let (h, b) = body(&req, &[&f32_le(&[0.5, -1.25]), &i64_le(&[7, i64::MIN])]);
    let p = parse(&h, &b, &sig()).unwrap();
    assert_eq!(p.id.as_deref(), Some("r1"));
    assert_eq!(
        p.inputs,
        vec![
            (
                "x".into(),
                Tensor::new(vec![1, 2], TensorData::F32(vec![0.5, -1.25])).unwrap()
            ),
            (
                "ids".into(),
                Tensor::new(vec![1, 3], TensorData::I64(vec![1, 2, 3])).unwrap()
            ),
            (
                "extra".into(),
                Tensor::new(vec![2], TensorData::I64(vec![7, i64::MIN])).unwrap()
            ),
        ]
    );
    // No outputs listed: all of them, raw as binary_data_output says.
    assert_eq!(p.outputs, vec![("y".into(), true), ("z".into(), true)]);
}

#[test]
fn requested_outputs_choose_raw_or_json_each() {
    let req = json!({
        "inputs": [{"name": "ids", "shape": [1, 1], "datatype": "INT64", "data": [5]}],
        "outputs": [{"name": "z", "parameters": {"binary_data": false}}, {"name": "y"}],
        "parameters": {"binary_data_output": true}
    });
    let b = serde_json::to_vec(&req).unwrap();
    // No binary inputs: no header length needed.
    let p = parse(&headers(None), &b, &sig()).unwrap();
    assert_eq!(p.outputs, vec![("z".into(), false), ("y".into(), true)]);

    let req = json!({
        "inputs": [{"name": "ids", "shape": [1, 1], "datatype": "INT64", "data": [5]}],
        "outputs": [{"name": "y", "parameters": {"binary_data": true}}, {"name": "z"}]
    });
    let p = parse(&headers(None), &serde_json::to_vec(&req).unwrap(), &sig()).unwrap();
    assert_eq!(p.outputs, vec![("y".into(), true), ("z".into(), false)]);

    let req = json!({
        "inputs": [{"name": "ids", "shape": [1, 1], "datatype": "INT64", "data": [5]}],
        "outputs": [{"name": "w"}]
    });
    let m = bad(&headers(None), &serde_json::to_vec(&req).unwrap());
    assert!(m.contains("output 'w'") && m.contains("'y', 'z'"), "{m}");
    let req = json!({
        "inputs": [{"name": "ids", "shape": [1, 1], "datatype": "INT64", "data": [5]}],
        "outputs": [{"name": "y", "parameters": {"classification": 3}}]
    });
    assert!(bad(&headers(None), &serde_json::to_vec(&req).unwrap()).contains("classification"));
    let req = json!({
        "inputs": [{"name": "ids", "shape": [1, 1], "datatype": "INT64", "data": [5]}],
        "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]
    });
    assert!(bad(&headers(None), &serde_json::to_vec(&req).unwrap()).contains("true or false"));
}

#[test]
fn inconsistent_binary_requests_are_400_with_the_reason() {
    let x = |size: u64| json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": size}}]});
    // binary_data_size larger than what follows the header.
    let (h, b) = body(&x(16), &[&f32_le(&[1.0, 2.0])]);
    let m = bad(&h, &b);
    assert!(m.contains("binary_data_size 16 but only 8 bytes"), "{m}");
    // Bytes left over.
    let (h, b) = body(&x(8), &[&f32_le(&[1.0, 2.0, 3.0])]);
    assert!(bad(&h, &b).contains("4 bytes of binary data are left over"));
    // Size that does not fit the shape.
    let (h, b) = body(&x(4), &[&f32_le(&[1.0])]);
    let m = bad(&h, &b);
    assert!(
        m.contains("input 'x'") && m.contains("needs 2 × 4 bytes"),
        "{m}"
    );
    // Header length past the end of the body.
    let (_, b) = body(&x(8), &[&f32_le(&[1.0, 2.0])]);
    let m = bad(&headers(Some(b.len() + 1)), &b);
    assert!(m.contains("Inference-Header-Content-Length"), "{m}");
    let mut h = HeaderMap::new();
    h.insert(HEADER_LENGTH, HeaderValue::from_static("ten"));
    assert!(bad(&h, &b).contains("Inference-Header-Content-Length"));
    // A header length that cuts the JSON short.
    assert!(bad(&headers(Some(10)), &b).contains("expected a KServe v2 inference request"));
    // Both, or neither, of data and binary_data_size.
    let both = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0], "parameters": {"binary_data_size": 4}}]});
    let (h, b) = body(&both, &[&f32_le(&[1.0])]);
    assert!(bad(&h, &b).contains("both data and parameters.binary_data_size"));
    let neither = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}], "parameters": {"binary_data_output": true}});
    let (h, b) = body(&neither, &[]);
    assert!(bad(&h, &b).contains("neither data nor"));
    // BYTES and unknown types.
    let s = json!({"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}]});
    let (h, b) = body(&s, &[b"\x01\x00\x00\x00a"]);
    assert!(bad(&h, &b).contains("BYTES tensors are not supported"));
    let s = json!({"inputs": [{"name": "s", "shape": [1], "datatype": "FP16", "parameters": {"binary_data_size": 2}}]});
    let (h, b) = body(&s, &[b"\x00\x3c"]);
    assert!(bad(&h, &b).contains("unsupported datatype 'FP16'"));
    let s = json!({"inputs": [{"name": "s", "shape": [-1], "datatype": "FP32", "parameters": {"binary_data_size": 0}}]});
    let (h, b) = body(&s, &[]);
    assert!(bad(&h, &b).contains("negative dimension"));
}

#[test]
fn raw_bytes_round_trip_every_datatype() {
    let cases = [
        TensorData::F32(vec![1.5, -0.0, f32::MAX]),
        TensorData::F64(vec![1e-300, -2.5, 3.0]),
        TensorData::I64(vec![i64::MIN, 0, i64::MAX]),
        TensorData::I32(vec![-1, 2, i32::MAX]),
        TensorData::I8(vec![-128, 0, 127]),
        TensorData::U8(vec![0, 128, 255]),
        TensorData::Bool(vec![true, false, true]),
    ];
    for data in cases {
        let t = Tensor::new(vec![1, 3], data).unwrap();
        let raw = to_raw(&t);
        assert_eq!(raw.len(), 3 * t.dtype().size());
        let back = from_raw("t", t.dtype().kserve_name(), &[1, 3], &raw).unwrap();
        assert_eq!(back, t);
    }
    // Little-endian, as the extension specifies.
    let t = Tensor::new(vec![1], TensorData::I32(vec![1])).unwrap();
    assert_eq!(to_raw(&t), vec![1, 0, 0, 0]);
    let t = Tensor::new(vec![1], TensorData::F32(vec![1.0])).unwrap();
    assert_eq!(to_raw(&t), vec![0x00, 0x00, 0x80, 0x3f]);
}

#[tokio::test]
async fn answers_put_raw_outputs_after_the_json_header() {
    let outputs = vec![
        (
            "y".to_string(),
            Tensor::new(vec![1, 2], TensorData::F32(vec![3.0, 4.5])).unwrap(),
        ),
        (
            "z".to_string(),
            Tensor::new(vec![1], TensorData::I64(vec![7])).unwrap(),
        ),
    ];
    let r = answer(
        "m",
        "1",
        Some("r1"),
        &[("z".into(), true), ("y".into(), false)],
        outputs.clone(),
    )
    .unwrap();
    let len: usize = r.headers()[HEADER_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/octet-stream"
    );
    let body = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    let head: Value = serde_json::from_slice(&body[..len]).unwrap();
    assert_eq!(head["model_name"], "m");
    assert_eq!(head["model_version"], "1");
    assert_eq!(head["id"], "r1");
    assert_eq!(head["outputs"][0]["name"], "z");
    assert_eq!(head["outputs"][0]["datatype"], "INT64");
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
    assert!(head["outputs"][0].get("data").is_none());
    assert_eq!(head["outputs"][1]["name"], "y");
    assert_eq!(head["outputs"][1]["data"], json!([3.0, 4.5]));
    assert_eq!(&body[len..], &i64_le(&[7])[..]);

    // Nothing raw: a plain JSON answer, no header length.
    let r = answer("m", "1", None, &[("y".into(), false)], outputs).unwrap();
    assert!(r.headers().get(HEADER_LENGTH).is_none());
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    let body = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["outputs"][0]["shape"], json!([1, 2]));
    assert!(v.get("id").is_none());
}

#[test]
fn compressed_bodies_are_inflated_first() {
    let req = json!({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]});
    let (mut h, b) = body(&req, &[&f32_le(&[1.0, 2.0])]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b).unwrap();
    let gz = gz.finish().unwrap();
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    assert!(applies(&h, &gz));
    let p = parse(&h, &gz, &sig()).unwrap();
    assert_eq!(p.inputs[0].1.data, TensorData::F32(vec![1.0, 2.0]));
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&b).unwrap();
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static("deflate"),
    );
    assert!(parse(&h, &z.finish().unwrap(), &sig()).is_ok());
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
    assert!(bad(&h, &b).contains("Content-Encoding 'br' is not supported"));
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    assert!(bad(&h, b"not gzip").contains("Content-Encoding gzip"));
}

#[test]
fn only_extension_requests_leave_the_json_fast_path() {
    let plain = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#;
    assert!(!applies(&HeaderMap::new(), plain));
    assert!(applies(&headers(Some(10)), plain));
    let raw_out = br#"{"inputs":[],"parameters":{"binary_data_output":true}}"#;
    assert!(applies(&HeaderMap::new(), raw_out));
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    assert!(!applies(&h, plain));
}

#[test]
fn model_config_lists_triton_types_and_full_shapes() {
    let c = model_config("m", &sig());
    assert_eq!(c["max_batch_size"], 0);
    assert_eq!(
        c["input"][0],
        json!({"name": "ids", "data_type": "TYPE_INT64", "dims": [1, -1]})
    );
    assert_eq!(c["output"][1]["data_type"], "TYPE_INT64");
}

#[test]
fn an_output_requested_twice_is_refused_by_name() {
    let req = json!({
        "inputs": [{"name": "ids", "shape": [1, 1], "datatype": "INT64", "data": [5]}],
        "outputs": [{"name": "z"}, {"name": "y"}, {"name": "z", "parameters": {"binary_data": true}}]
    });
    let m = bad(&headers(None), &serde_json::to_vec(&req).unwrap());
    assert!(
        m.contains("output 'z'") && m.contains("more than once"),
        "{m}"
    );
}

#[test]
fn more_outputs_than_the_model_has_are_refused_at_once() {
    // Three distinct names for a two-output model: refused on the count,
    // before inputs are decoded (this one's input is not even valid).
    let req = json!({
        "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}],
        "outputs": [{"name": "y"}, {"name": "z"}, {"name": "w"}]
    });
    let m = bad(&headers(None), &serde_json::to_vec(&req).unwrap());
    assert!(m.contains("3 requested but the model has 2"), "{m}");
    // The request that cost 20 s and gigabytes: one output 20,000 times.
    let outputs: Vec<Value> = (0..20_000)
        .map(|_| json!({"name": "y", "parameters": {"binary_data": true}}))
        .collect();
    let req = json!({
        "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}],
        "outputs": outputs
    });
    let (h, b) = body(&req, &[&f32_le(&[1.0, 2.0])]);
    let t0 = std::time::Instant::now();
    let m = bad(&h, &b);
    assert!(
        m.contains("output 'y'") && m.contains("more than once"),
        "{m}"
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn check_requested_outputs_names_the_repeat_or_counts() {
    assert!(check_requested_outputs(&[], 2).is_ok());
    assert!(check_requested_outputs(&["y", "z"], 2).is_ok());
    let e = check_requested_outputs(&["y", "y"], 2).unwrap_err();
    assert!(e.contains("output 'y'"), "{e}");
    // A repeat past the model's count is not looked for: the count says it.
    let e = check_requested_outputs(&["a", "b", "c", "a"], 2).unwrap_err();
    assert!(e.contains("4 requested but the model has 2"), "{e}");
    let e = check_requested_outputs(&["a", "a", "b"], 0).unwrap_err();
    assert!(e.contains("3 requested but the model has 0"), "{e}");
}
