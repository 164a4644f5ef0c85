use super::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use super::*;
use shared::api::TensorSpec;

fn sig() -> ModelSignature {
    let spec = |name: &str, datatype: &str| TensorSpec {
        name: name.into(),
        datatype: datatype.into(),
        shape: vec![-1, 4],
    };
    ModelSignature {
        inputs: vec![spec("x", "FP32"), spec("ids", "INT8")],
        outputs: vec![spec("y", "FP32"), spec("z", "INT64")],
        ..Default::default()
    }
}

fn input(
    name: &str,
    datatype: &str,
    shape: Vec<i64>,
    contents: Option<InferTensorContents>,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape,
        contents,
        ..Default::default()
    }
}

#[test]
fn typed_and_raw_inputs_decode_to_the_same_tensors() {
    let typed = ModelInferRequest {
        id: "a".into(),
        inputs: vec![
            input(
                "x",
                "FP32",
                vec![1, 2],
                Some(InferTensorContents {
                    fp32_contents: vec![1.5, -2.0],
                    ..Default::default()
                }),
            ),
            input(
                "ids",
                "INT8",
                vec![2],
                Some(InferTensorContents {
                    int_contents: vec![-128, 127],
                    ..Default::default()
                }),
            ),
        ],
        ..Default::default()
    };
    let raw = ModelInferRequest {
        id: "a".into(),
        inputs: vec![
            input("x", "FP32", vec![1, 2], None),
            input("ids", "INT8", vec![2], None),
        ],
        raw_input_contents: vec![
            [1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()]
                .concat()
                .into(),
            vec![0x80u8, 0x7f].into(),
        ],
        ..Default::default()
    };
    let a = parse(typed, &sig()).unwrap();
    let b = parse(raw, &sig()).unwrap();
    assert_eq!(a.id, "a");
    assert_eq!(a.outputs, ["y", "z"], "no outputs asked: all of them");
    for ((na, ta), (nb, tb)) in a.inputs.iter().zip(&b.inputs) {
        assert_eq!(na, nb);
        assert_eq!(ta.shape, tb.shape);
        assert_eq!(ta.data, tb.data);
    }
    assert_eq!(a.inputs[1].1.data, TensorData::I8(vec![-128, 127]));
}

#[test]
fn bad_inputs_are_named_with_what_was_expected() {
    let err = |req: ModelInferRequest| parse(req, &sig()).unwrap_err().to_string();
    let e = err(ModelInferRequest {
        inputs: vec![input(
            "x",
            "FP32",
            vec![1, 4],
            Some(InferTensorContents {
                fp32_contents: vec![1.0; 3],
                ..Default::default()
            }),
        )],
        ..Default::default()
    });
    assert!(
        e.contains("input 'x'") && e.contains("needs 4 elements in contents.fp32_contents, got 3"),
        "{e}"
    );
    let e = err(ModelInferRequest {
        inputs: vec![input("x", "FP32", vec![1, 4], None)],
        ..Default::default()
    });
    assert!(e.contains("neither contents nor raw_input_contents"), "{e}");
    let e = err(ModelInferRequest {
        inputs: vec![input(
            "ids",
            "INT8",
            vec![1],
            Some(InferTensorContents {
                int_contents: vec![300],
                ..Default::default()
            }),
        )],
        ..Default::default()
    });
    assert!(e.contains("out of range for INT8"), "{e}");
    let e = err(ModelInferRequest {
        inputs: vec![
            input("x", "FP32", vec![1, 4], None),
            input("ids", "INT8", vec![1], None),
        ],
        raw_input_contents: vec![vec![0u8; 16].into()],
        ..Default::default()
    });
    assert!(
        e.contains("raw_input_contents has 1 entries for 2 inputs"),
        "{e}"
    );
    let e = err(ModelInferRequest {
        inputs: vec![input("x", "FP32", vec![1, 4], None)],
        raw_input_contents: vec![vec![0u8; 15].into()],
        ..Default::default()
    });
    assert!(
        e.contains("input 'x'") && e.contains("needs 4 × 4 bytes"),
        "{e}"
    );
    let e = err(ModelInferRequest {
        inputs: vec![
            input("x", "FP32", vec![1, 4], None),
            input(
                "ids",
                "INT8",
                vec![1],
                Some(InferTensorContents {
                    int_contents: vec![1],
                    ..Default::default()
                }),
            ),
        ],
        raw_input_contents: vec![vec![0u8; 16].into(), vec![0u8; 1].into()],
        ..Default::default()
    });
    assert!(
        e.contains("input 'ids': has contents while the request sends raw_input_contents"),
        "{e}"
    );
    let e = err(ModelInferRequest {
        inputs: vec![input("x", "FP16", vec![1], None)],
        raw_input_contents: vec![vec![0u8; 2].into()],
        ..Default::default()
    });
    assert!(e.contains("unsupported datatype 'FP16'"), "{e}");
    let e = err(ModelInferRequest {
        inputs: vec![input(
            "x",
            "FP32",
            vec![-1, 4],
            Some(InferTensorContents::default()),
        )],
        ..Default::default()
    });
    assert!(e.contains("negative dimension"), "{e}");
    let e = err(ModelInferRequest {
        outputs: vec![InferRequestedOutputTensor {
            name: "w".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    assert!(e.contains("output 'w'") && e.contains("'y', 'z'"), "{e}");
}

#[test]
fn answers_are_raw_in_the_order_asked() {
    let y = Tensor::new(vec![1, 2], TensorData::F32(vec![1.0, 2.0])).unwrap();
    let z = Tensor::new(vec![1], TensorData::I64(vec![7])).unwrap();
    let wanted = vec!["z".to_string(), "y".to_string()];
    let a = answer(
        "m",
        "1",
        "id9".into(),
        &wanted,
        vec![("y".into(), y), ("z".into(), z)],
    )
    .unwrap();
    assert_eq!(
        (
            a.model_name.as_str(),
            a.model_version.as_str(),
            a.id.as_str()
        ),
        ("m", "1", "id9")
    );
    let names: Vec<_> = a
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.datatype.as_str(), o.shape.clone()))
        .collect();
    assert_eq!(names, [("z", "INT64", vec![1]), ("y", "FP32", vec![1, 2])]);
    assert_eq!(&a.raw_output_contents[0][..], &7i64.to_le_bytes());
    assert_eq!(
        &a.raw_output_contents[1][..],
        &[1.0f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat()[..]
    );
}

#[test]
fn the_model_config_names_triton_data_types() {
    let c = model_config("m", &sig());
    assert_eq!(c.input[0].data_type, proto::DataType::TypeFp32 as i32);
    assert_eq!(c.input[1].data_type, proto::DataType::TypeInt8 as i32);
    assert_eq!(c.output[1].data_type, proto::DataType::TypeInt64 as i32);
    assert_eq!(c.input[0].dims, vec![-1, 4]);
}

#[test]
fn a_forwarded_request_is_the_binary_extension_and_its_answer_comes_back() {
    let req = ModelInferRequest {
        id: "f".into(),
        inputs: vec![input(
            "x",
            "FP32",
            vec![1, 2],
            Some(InferTensorContents {
                fp32_contents: vec![1.0, 2.0],
                ..Default::default()
            }),
        )],
        ..Default::default()
    };
    let (body, head_len) = to_binary_request(&req).unwrap();
    // What the HTTP route parses out of it.
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(super::super::binary::HEADER_LENGTH, head_len.into());
    let parsed = super::super::binary::parse(&headers, &body, &sig()).unwrap();
    assert_eq!(parsed.id.as_deref(), Some("f"));
    assert_eq!(parsed.inputs[0].1.data, TensorData::F32(vec![1.0, 2.0]));
    assert!(
        parsed.outputs.iter().all(|(_, raw)| *raw),
        "outputs asked raw"
    );
    // And what the HTTP route answers, back as gRPC.
    let y = Tensor::new(vec![1, 2], TensorData::F32(vec![3.0, 4.0])).unwrap();
    let resp = super::super::binary::answer(
        "m",
        "1",
        Some("f"),
        &[("y".into(), true)],
        vec![("y".into(), y)],
    )
    .unwrap();
    let head_len: usize = resp.headers()[super::super::binary::HEADER_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = futures_executor(resp.into_body());
    let a = from_binary_answer(bytes, head_len).unwrap();
    assert_eq!((a.model_name.as_str(), a.id.as_str()), ("m", "f"));
    assert_eq!(a.outputs[0].shape, vec![1, 2]);
    assert_eq!(
        &a.raw_output_contents[0][..],
        &[3.0f32.to_le_bytes(), 4.0f32.to_le_bytes()].concat()[..]
    );
    assert!(from_binary_answer(bytes::Bytes::from_static(b"{}"), 99).is_err());
}

fn futures_executor(body: axum::body::Body) -> bytes::Bytes {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(axum::body::to_bytes(body, usize::MAX))
        .unwrap()
}
