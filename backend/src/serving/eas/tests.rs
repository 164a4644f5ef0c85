//! Decoding and answering TF/Torch requests, with bytes produced by the SDK
//! itself (eas-prediction 0.36 on protobuf 3.20.3) as well as by prost.

use super::proto::*;
use super::*;
use axum::http::HeaderValue;
use optimizer::tensor::{Tensor, TensorData};
use shared::api::TensorSpec;

fn spec(name: &str, datatype: &str, shape: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
    }
}

/// A model taking `ids` then `x`, answering `y` then `z`.
fn sig() -> ModelSignature {
    ModelSignature {
        format: "onnx".into(),
        inputs: vec![spec("ids", "INT64", &[-1]), spec("x", "FP32", &[1, 2])],
        outputs: vec![spec("y", "FP32", &[1, 2]), spec("z", "INT64", &[1])],
    }
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn ids() -> Tensor {
    Tensor::new(vec![2], TensorData::I64(vec![101, 7592])).unwrap()
}

fn x() -> Tensor {
    Tensor::new(vec![1, 2], TensorData::F32(vec![0.25, -1.0])).unwrap()
}

fn input<'a>(inputs: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &inputs.iter().find(|(n, _)| n == name).unwrap().1
}

fn outputs() -> Vec<(String, Tensor)> {
    vec![
        (
            "y".into(),
            Tensor::new(vec![1, 2], TensorData::F32(vec![3.0, 4.5])).unwrap(),
        ),
        (
            "z".into(),
            Tensor::new(vec![1], TensorData::I64(vec![7])).unwrap(),
        ),
    ]
}

/// `TFRequest('predict')` with feeds x: DT_FLOAT [1,2] [0.5, 1.5] and
/// ids: DT_INT64 [2] [1, 300], fetching y — as the SDK serializes it.
const SDK_TF: &str = "0a077072656469637412170a01781212080112040a0201021a080000003f0000c03f12130a03696473120c080912030a01023a0301ac021a0179";
/// `TorchRequest()` with feed 0: DT_INT64 [2] [101, 7592], feed 1: DT_FLOAT
/// [1,2] [0.25, -1.0], fetching output 1.
const SDK_TORCH: &str =
    "0a0c080912030a01023a0365a83b0a12080112040a0201021a080000803e000080bf120101";
/// `TorchRequest(True)` (snappy) with map feeds x and ids as above.
const SDK_TORCH_SNAPPY_MAP: &str = "2eb41a170a01781212080112040a0201021a080000803e000080bf1a130a03696473120c080912030a01023a0365a83b";

/// `TFRequest('predict')` with just the x feed: these bytes also decode as a
/// TorchRequest (signature_name "predict" reads as an empty ArrayProto).
const SDK_TF_AMBIGUOUS: &str =
    "0a077072656469637412170a01781212080112040a0201021a080000003f0000c03f";

#[test]
fn a_tf_request_that_also_reads_as_torch_is_taken_as_tf() {
    let body = unhex(SDK_TF_AMBIGUOUS);
    assert!(TorchPredictRequest::decode(body.as_slice()).is_ok_and(|r| r.inputs.len() == 1));
    let Decoded::Tf(p) = decode(&sig(), &body).unwrap() else {
        panic!("not read as a TFRequest")
    };
    assert_eq!(p.inputs.len(), 1);
    assert_eq!(input(&p.inputs, "x").data, TensorData::F32(vec![0.5, 1.5]));
}

#[test]
fn sdk_tf_request_decodes_by_name() {
    let Decoded::Tf(p) = decode(&sig(), &unhex(SDK_TF)).unwrap() else {
        panic!("not read as a TFRequest")
    };
    assert_eq!(p.output_filter, vec!["y".to_string()]);
    assert_eq!(p.inputs.len(), 2);
    assert_eq!(
        input(&p.inputs, "x"),
        &Tensor::new(vec![1, 2], TensorData::F32(vec![0.5, 1.5])).unwrap()
    );
    assert_eq!(
        input(&p.inputs, "ids"),
        &Tensor::new(vec![2], TensorData::I64(vec![1, 300])).unwrap()
    );
}

#[test]
fn sdk_torch_request_maps_indices_to_signature_order() {
    let Decoded::Torch(p) = decode(&sig(), &unhex(SDK_TORCH)).unwrap() else {
        panic!("not read as a TorchRequest")
    };
    assert_eq!(
        p.inputs,
        vec![("ids".to_string(), ids()), ("x".to_string(), x())]
    );
    assert_eq!(p.output_filter, vec![1]);
    assert!(p.by_index && !p.by_name);
}

#[test]
fn sdk_snappy_torch_request_with_map_inputs_decodes() {
    let body = unhex(SDK_TORCH_SNAPPY_MAP);
    // Compressed, it is no TorchRequest with inputs.
    assert!(!matches!(TorchPredictRequest::decode(body.as_slice()),
        Ok(r) if !r.map_inputs.is_empty() || !r.inputs.is_empty()));
    let Decoded::Torch(p) = decode(&sig(), &body).unwrap() else {
        panic!("not read as a TorchRequest")
    };
    assert_eq!(input(&p.inputs, "ids"), &ids());
    assert_eq!(input(&p.inputs, "x"), &x());
    assert!(p.by_name && !p.by_index);
    assert!(p.output_filter.is_empty());
}

#[test]
fn tf_round_trip_through_prost_and_the_answer() {
    let mut req = TfPredictRequest {
        signature_name: "serving_default".into(),
        ..Default::default()
    };
    req.inputs
        .insert("x".into(), array::from_tensor(x(), array::Flavor::Tf));
    req.inputs.insert(
        "flag".into(),
        array::from_tensor(
            Tensor::new(vec![3], TensorData::Bool(vec![true, false, true])).unwrap(),
            array::Flavor::Tf,
        ),
    );
    let Decoded::Tf(p) = decode(&sig(), &req.encode_to_vec()).unwrap() else {
        panic!("not read as a TFRequest")
    };
    assert_eq!(input(&p.inputs, "x"), &x());
    assert_eq!(
        input(&p.inputs, "flag").data,
        TensorData::Bool(vec![true, false, true])
    );
    assert!(p.output_filter.is_empty());

    let all = TfPredictResponse::decode(tf::answer(outputs(), &[]).as_slice()).unwrap();
    assert_eq!(all.outputs.len(), 2);
    assert_eq!(all.outputs["y"].dtype, dt::FLOAT);
    assert_eq!(all.outputs["y"].float_val, vec![3.0, 4.5]);
    assert_eq!(
        all.outputs["y"].array_shape.as_ref().unwrap().dim,
        vec![1, 2]
    );
    assert_eq!(all.outputs["z"].dtype, dt::INT64);
    assert_eq!(all.outputs["z"].int64_val, vec![7]);
    let some = TfPredictResponse::decode(tf::answer(outputs(), &["z".into()]).as_slice()).unwrap();
    assert_eq!(some.outputs.keys().collect::<Vec<_>>(), vec!["z"]);
}

#[test]
fn torch_answers_follow_how_inputs_were_addressed() {
    let Decoded::Torch(p) = decode(&sig(), &unhex(SDK_TORCH)).unwrap() else {
        panic!()
    };
    // Filter [1]: just z, positionally.
    let r = TorchPredictResponse::decode(torch::answer(outputs(), &p, &sig()).unwrap().as_slice())
        .unwrap();
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(
        (r.outputs[0].dtype, r.outputs[0].int64_val.clone()),
        (dt::INT64, vec![7])
    );
    assert!(r.map_outputs.is_empty());

    // By name, no filter: every output by name.
    let Decoded::Torch(p) = decode(&sig(), &unhex(SDK_TORCH_SNAPPY_MAP)).unwrap() else {
        panic!()
    };
    let r = TorchPredictResponse::decode(torch::answer(outputs(), &p, &sig()).unwrap().as_slice())
        .unwrap();
    assert!(r.outputs.is_empty());
    assert_eq!(r.map_outputs["y"].float_val, vec![3.0, 4.5]);
    assert_eq!(r.map_outputs["z"].int64_val, vec![7]);

    // Both ways, a repeated filter index: each listed once per mention.
    let req = TorchPredictRequest {
        inputs: vec![array::from_tensor(ids(), array::Flavor::Torch)],
        map_inputs: [(
            "x".to_string(),
            array::from_tensor(x(), array::Flavor::Torch),
        )]
        .into(),
        output_filter: vec![0, 0],
        ..Default::default()
    };
    let Decoded::Torch(p) = decode(&sig(), &req.encode_to_vec()).unwrap() else {
        panic!()
    };
    assert!(p.by_index && p.by_name);
    let r = TorchPredictResponse::decode(torch::answer(outputs(), &p, &sig()).unwrap().as_slice())
        .unwrap();
    assert_eq!(r.outputs.len(), 2);
    assert_eq!(r.outputs[1].float_val, vec![3.0, 4.5]);
    assert_eq!(r.map_outputs.keys().collect::<Vec<_>>(), vec!["y"]);
}

fn bad(body: &[u8]) -> String {
    match decode(&sig(), body) {
        Err(ServingError::BadRequest(m)) => m,
        other => panic!("expected a 400, got {other:?}"),
    }
}

#[test]
fn malformed_bodies_are_400_with_a_reason() {
    let m = bad(b"");
    assert!(m.contains("empty body"), "{m}");
    let m = bad(&[0xff, 0xff, 0xff, 0xff]);
    assert!(
        m.contains("not a KServe v2 JSON request, nor an EAS TFRequest or TorchRequest"),
        "{m}"
    );
    // A real request cut short.
    let sdk = unhex(SDK_TF);
    let m = bad(&sdk[..sdk.len() - 9]);
    assert!(m.contains("TFRequest or TorchRequest"), "{m}");
    let m = bad(b"hello, this is not protobuf");
    assert!(m.contains("TFRequest or TorchRequest"), "{m}");
    // A message that decodes but has no inputs.
    let m = bad(&TfPredictRequest {
        signature_name: "s".into(),
        ..Default::default()
    }
    .encode_to_vec());
    assert!(m.contains("no inputs"), "{m}");
}

#[test]
fn wrong_content_is_400_naming_the_part() {
    // Torch: more inputs by index than the model takes.
    let req = TorchPredictRequest {
        inputs: vec![array::from_tensor(ids(), array::Flavor::Torch); 3],
        ..Default::default()
    };
    let m = bad(&req.encode_to_vec());
    assert!(
        m.contains("3 given by index, but the model takes 2: 0 = 'ids', 1 = 'x'"),
        "{m}"
    );
    // Torch: output index out of range, also when snappy-compressed.
    let req = TorchPredictRequest {
        inputs: vec![array::from_tensor(ids(), array::Flavor::Torch)],
        output_filter: vec![5],
        ..Default::default()
    };
    let m = bad(&req.encode_to_vec());
    assert!(m.contains("no output at index 5"), "{m}");
    let snapped = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap();
    assert!(bad(&snapped).contains("no output at index 5"));
    // TF: an unknown output name, and a count that does not fit the shape.
    let mut req = TfPredictRequest::default();
    req.inputs
        .insert("x".into(), array::from_tensor(x(), array::Flavor::Tf));
    req.output_filter = vec!["nope".into()];
    let m = bad(&req.encode_to_vec());
    assert!(
        m.contains("no output 'nope'; its outputs are 'y', 'z'"),
        "{m}"
    );
    req.output_filter.clear();
    req.inputs.get_mut("x").unwrap().float_val.pop();
    let m = bad(&req.encode_to_vec());
    assert!(
        m.contains("input 'x'") && m.contains("needs 2 values in float_val"),
        "{m}"
    );
}

#[test]
fn body_kind_is_found_from_content_type_or_bytes() {
    let none = HeaderMap::new();
    let with = |ct: &'static str| {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        h
    };
    assert!(is_json_body(&none, br#"{"inputs":[]}"#));
    assert!(is_json_body(
        &with("application/octet-stream"),
        b"  \n{\"inputs\":[]}"
    ));
    assert!(is_json_body(
        &with("application/json; charset=utf-8"),
        b"\x0a\x01"
    ));
    assert!(!is_json_body(
        &with("application/x-protobuf"),
        br#"{"inputs":[]}"#
    ));
    assert!(!is_json_body(&none, &unhex(SDK_TF)));
    assert!(!is_json_body(&none, &unhex(SDK_TORCH)));
    assert!(!is_json_body(&none, &unhex(SDK_TORCH_SNAPPY_MAP)));
    // Broken JSON is still JSON (and gets the JSON error message).
    assert!(is_json_body(&none, b"{\"inputs\": ["));
    // A protobuf starting with "\n{" (field 1, 123 bytes long) is protobuf.
    let req = TorchPredictRequest {
        inputs: vec![ArrayProto {
            dtype: dt::FLOAT,
            array_shape: Some(ArrayShape {
                dim: vec![1, 1, 28],
            }),
            float_val: vec![0.0; 28],
            ..Default::default()
        }],
        ..Default::default()
    };
    let bytes = req.encode_to_vec();
    assert_eq!(&bytes[..2], b"\n{");
    assert!(!is_json_body(&none, &bytes));
    // A snappy stream of a 123-byte message starts with "{" and is protobuf.
    let snapped = snap::raw::Encoder::new().compress_vec(&bytes[2..]).unwrap();
    assert_eq!(snapped[0], b'{');
    assert!(!is_json_body(&none, &snapped));
}

#[test]
fn snappy_streams_decode_at_their_densest_and_false_claims_are_not_tried() {
    // 64 KiB of one byte compresses close to snappy's densest ratio.
    let plain = vec![7u8; 64 << 10];
    let packed = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
    let possible = packed.len() * 22 + 64;
    assert!(plain.len() <= possible, "{} > {possible}", plain.len());
    // A 3-byte body claiming 1 GiB is answered as "neither", not inflated.
    let mut claim = Vec::new();
    let mut n: u64 = 1 << 30;
    while n >= 0x80 {
        claim.push((n as u8) | 0x80);
        n >>= 7;
    }
    claim.push(n as u8);
    assert!(bad(&claim).contains("TFRequest or TorchRequest"));
}

/// A plain PyTorch deploy declares no inputs: a Torch request's `inputs`
/// go by position (named `input0`, `input1`, …), `map_inputs` after them in
/// name order, and `output_filter` picks from what the module returned.
#[test]
fn an_open_signature_takes_torch_inputs_by_position() {
    let open = ModelSignature::open_torchscript();
    let req = TorchPredictRequest {
        inputs: vec![
            array::from_tensor(x(), array::Flavor::Torch),
            array::from_tensor(ids(), array::Flavor::Torch),
        ],
        output_filter: vec![1],
        ..Default::default()
    };
    let Decoded::Torch(p) = decode(&open, &req.encode_to_vec()).unwrap() else {
        panic!("not read as a Torch request")
    };
    let names: Vec<&str> = p.inputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["input0", "input1"]);
    assert_eq!(p.inputs[1].1, ids());
    let r = TorchPredictResponse::decode(torch::answer(outputs(), &p, &open).unwrap().as_slice())
        .unwrap();
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(r.outputs[0].int64_val, vec![7]);
    let beyond = TorchPredictRequest {
        inputs: vec![array::from_tensor(x(), array::Flavor::Torch)],
        output_filter: vec![5],
        ..Default::default()
    };
    let Decoded::Torch(p) = decode(&open, &beyond.encode_to_vec()).unwrap() else {
        panic!("not read as a Torch request")
    };
    match torch::answer(outputs(), &p, &open) {
        Err(ServingError::BadRequest(m)) => assert!(m.contains("no output at index 5"), "{m}"),
        other => panic!("{other:?}"),
    }
}
