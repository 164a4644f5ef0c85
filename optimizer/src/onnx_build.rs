//! Small ONNX models built in code, for examples (`whet example-model`) and
//! for tests that need a model of their own.

use crate::onnx::{self, data_type, GraphProto, ModelProto, OperatorSetIdProto, TensorProto};
use crate::tensor::{Tensor, TensorData};

fn weights(n: usize, seed: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (i as f32 * 0.37 + seed).sin() * 0.5)
        .collect()
}

pub fn float_tensor(name: &str, dims: &[i64], values: Vec<f32>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        float_data: values,
        name: name.into(),
        ..Default::default()
    }
}

/// Wraps a graph in a model at opset 17.
pub fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: 8,
        producer_name: "whetstone".into(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        ..Default::default()
    }
}

/// A two-layer perceptron `y = relu(x·W1 + b1)·W2 + b2` with deterministic
/// weights: input `x` FP32 [N, inputs], output `y` FP32 [N, outputs].
pub fn mlp(inputs: usize, hidden: usize, outputs: usize) -> Vec<u8> {
    onnx::to_bytes(&mlp_model(inputs, hidden, outputs))
}

pub fn mlp_model(inputs: usize, hidden: usize, outputs: usize) -> ModelProto {
    let (i, h, o) = (inputs as i64, hidden as i64, outputs as i64);
    let n = |op: &str, ins: &[&str], out: &str| {
        onnx::node(op, &format!("{op}_{out}"), ins, &[out], vec![])
    };
    model(GraphProto {
        name: "mlp".into(),
        node: vec![
            n("MatMul", &["x", "w1"], "h0"),
            n("Add", &["h0", "b1"], "h1"),
            n("Relu", &["h1"], "h2"),
            n("MatMul", &["h2", "w2"], "y0"),
            n("Add", &["y0", "b2"], "y"),
        ],
        initializer: vec![
            float_tensor("w1", &[i, h], weights(inputs * hidden, 0.1)),
            float_tensor("b1", &[h], weights(hidden, 0.7)),
            float_tensor("w2", &[h, o], weights(hidden * outputs, 1.3)),
            float_tensor("b2", &[o], weights(outputs, 2.1)),
        ],
        input: vec![onnx::value_info("x", data_type::FLOAT, &[None, Some(i)])],
        output: vec![onnx::value_info("y", data_type::FLOAT, &[None, Some(o)])],
        ..Default::default()
    })
}

/// A small CNN: Conv(3→c, 3×3, pad 1) → Relu → Conv(c→c) → Relu → Add
/// (residual) → GlobalAveragePool → Flatten → Gemm(c→classes). Input `x`
/// FP32 [N, 3, size, size], output `logits` FP32 [N, classes].
pub fn cnn_model(channels: usize, size: usize, classes: usize) -> ModelProto {
    let c = channels as i64;
    let k = classes as i64;
    let conv = |name: &str, x: &str, w: &str, b: &str, y: &str| {
        onnx::node(
            "Conv",
            name,
            &[x, w, b],
            &[y],
            vec![
                onnx::attr_ints("kernel_shape", &[3, 3]),
                onnx::attr_ints("pads", &[1, 1, 1, 1]),
            ],
        )
    };
    model(GraphProto {
        name: "cnn".into(),
        node: vec![
            conv("conv1", "x", "w1", "b1", "c1"),
            onnx::node("Relu", "relu1", &["c1"], &["r1"], vec![]),
            conv("conv2", "r1", "w2", "b2", "c2"),
            onnx::node("Relu", "relu2", &["c2"], &["r2"], vec![]),
            onnx::node("Add", "res", &["r1", "r2"], &["a"], vec![]),
            onnx::node("GlobalAveragePool", "gap", &["a"], &["p"], vec![]),
            onnx::node(
                "Flatten",
                "flat",
                &["p"],
                &["f"],
                vec![onnx::attr_int("axis", 1)],
            ),
            onnx::node(
                "Gemm",
                "fc",
                &["f", "wf", "bf"],
                &["logits"],
                vec![onnx::attr_int("transB", 1)],
            ),
        ],
        initializer: vec![
            float_tensor("w1", &[c, 3, 3, 3], weights(channels * 27, 0.3)),
            float_tensor("b1", &[c], weights(channels, 0.9)),
            float_tensor(
                "w2",
                &[c, c, 3, 3],
                weights(channels * channels * 9, 1.7)
                    .iter()
                    .map(|v| v * 0.3)
                    .collect(),
            ),
            float_tensor("b2", &[c], weights(channels, 2.3)),
            float_tensor("wf", &[k, c], weights(classes * channels, 0.5)),
            float_tensor("bf", &[k], weights(classes, 1.1)),
        ],
        input: vec![onnx::value_info(
            "x",
            data_type::FLOAT,
            &[None, Some(3), Some(size as i64), Some(size as i64)],
        )],
        output: vec![onnx::value_info(
            "logits",
            data_type::FLOAT,
            &[None, Some(k)],
        )],
        ..Default::default()
    })
}

/// A `Constant` node whose output `out` holds `t`.
pub fn constant_node(out: &str, t: TensorProto) -> onnx::NodeProto {
    let mut n = onnx::node("Constant", &format!("const_{out}"), &[], &[out], vec![]);
    n.attribute.push(onnx::AttributeProto {
        name: "value".into(),
        r#type: onnx::attr_type::TENSOR,
        t: Some(t),
        ..Default::default()
    });
    n
}

/// [`cnn_model`] as older exporters write it (Paddle2ONNX, older tf2onnx and
/// torch exports): at opset 11, every weight in a `Constant` node — the
/// second conv's and the classifier's stored transposed, behind a
/// `Transpose` — and a second output `probs`, a `Softmax` with the old
/// default axis behind `Unsqueeze`/`Squeeze` with `axes` attributes.
pub fn cnn_model_old_export(channels: usize, size: usize, classes: usize) -> ModelProto {
    let mut m = cnn_model(channels, size, classes);
    m.ir_version = 6;
    m.opset_import[0].version = 11;
    let g = onnx::graph_mut(&mut m);
    let mut head = Vec::new();
    for t in std::mem::take(&mut g.initializer) {
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        let transposed = match t.name.as_str() {
            // [o, i, kh, kw] stored as [i, o, kh, kw].
            "w2" => Some((
                [1, 0, 2, 3].as_slice(),
                vec![dims[1], dims[0], dims[2], dims[3]],
            )),
            // [k, c] stored as [c, k].
            "wf" => Some(([1, 0].as_slice(), vec![dims[1], dims[0]])),
            _ => None,
        };
        match transposed {
            Some((perm, stored)) => {
                let inner: usize = dims[2..].iter().product();
                let mut values = vec![0f32; t.float_data.len()];
                for (i, v) in t.float_data.iter().enumerate() {
                    let (a, rest) = (i / (dims[1] * inner), i % (dims[1] * inner));
                    let (b, r) = (rest / inner, rest % inner);
                    values[(b * dims[0] + a) * inner + r] = *v;
                }
                let stored_dims: Vec<i64> = stored.iter().map(|&d| d as i64).collect();
                let raw = format!("{}_stored", t.name);
                head.push(constant_node(
                    &raw,
                    float_tensor(&raw, &stored_dims, values),
                ));
                head.push(onnx::node(
                    "Transpose",
                    &format!("transpose_{}", t.name),
                    &[raw.as_str()],
                    &[t.name.as_str()],
                    vec![onnx::attr_ints("perm", perm)],
                ));
            }
            None => head.push(constant_node(&t.name.clone(), t)),
        }
    }
    head.append(&mut g.node);
    g.node = head;
    g.node.extend([
        onnx::node(
            "Unsqueeze",
            "unsqueeze",
            &["logits"],
            &["l3"],
            vec![onnx::attr_ints("axes", &[1])],
        ),
        onnx::node(
            "Squeeze",
            "squeeze",
            &["l3"],
            &["l2"],
            vec![onnx::attr_ints("axes", &[1])],
        ),
        onnx::node("Softmax", "softmax", &["l2"], &["probs"], vec![]),
    ]);
    let k = classes as i64;
    g.output.push(onnx::value_info(
        "probs",
        data_type::FLOAT,
        &[None, Some(k)],
    ));
    m
}

/// A small segmentation net with a sigmoid-map head: Conv(3→c, 3×3) →
/// HardSwish → Conv(c→c, 3×3, stride 2) → Relu → ConvTranspose(c→c, 2×2,
/// stride 2) → Relu → Conv(c→1, 1×1), plus a skip from the input's channel
/// mean → Sigmoid. Input `x` FP32
/// [N, 3, size, size] (size even), output `mask` FP32 [N, 1, size, size].
pub fn seg_model(channels: usize, size: usize) -> ModelProto {
    let c = channels as i64;
    let s = size as i64;
    let conv =
        |name: &str, x: &str, w: &str, b: &str, y: &str, attrs: Vec<onnx::AttributeProto>| {
            onnx::node("Conv", name, &[x, w, b], &[y], attrs)
        };
    model(GraphProto {
        name: "seg".into(),
        node: vec![
            conv(
                "conv1",
                "x",
                "w1",
                "b1",
                "c1",
                vec![
                    onnx::attr_ints("kernel_shape", &[3, 3]),
                    onnx::attr_ints("pads", &[1, 1, 1, 1]),
                ],
            ),
            onnx::node("HardSwish", "hswish", &["c1"], &["h1"], vec![]),
            conv(
                "down",
                "h1",
                "w2",
                "b2",
                "c2",
                vec![
                    onnx::attr_ints("kernel_shape", &[3, 3]),
                    onnx::attr_ints("pads", &[1, 1, 1, 1]),
                    onnx::attr_ints("strides", &[2, 2]),
                ],
            ),
            onnx::node("Relu", "relu2", &["c2"], &["r2"], vec![]),
            onnx::node(
                "ConvTranspose",
                "up",
                &["r2", "wt", "bt"],
                &["u"],
                vec![
                    onnx::attr_ints("kernel_shape", &[2, 2]),
                    onnx::attr_ints("strides", &[2, 2]),
                ],
            ),
            onnx::node("Relu", "relu3", &["u"], &["r3"], vec![]),
            conv(
                "head",
                "r3",
                "wh",
                "bh",
                "logit",
                vec![onnx::attr_ints("kernel_shape", &[1, 1])],
            ),
            // A skip from the input's channel mean, so the map follows what
            // the image shows.
            onnx::node(
                "ReduceMean",
                "skip_mean",
                &["x"],
                &["xm"],
                vec![onnx::attr_ints("axes", &[1]), onnx::attr_int("keepdims", 1)],
            ),
            onnx::node("Mul", "skip_gain", &["xm", "gain"], &["xs"], vec![]),
            onnx::node("Add", "skip_add", &["logit", "xs"], &["l2"], vec![]),
            onnx::node("Sigmoid", "sigmoid", &["l2"], &["mask"], vec![]),
        ],
        initializer: vec![
            float_tensor("w1", &[c, 3, 3, 3], weights(channels * 27, 0.3)),
            float_tensor("b1", &[c], weights(channels, 0.9)),
            float_tensor(
                "w2",
                &[c, c, 3, 3],
                weights(channels * channels * 9, 1.7)
                    .iter()
                    .map(|v| v * 0.4)
                    .collect(),
            ),
            float_tensor("b2", &[c], weights(channels, 2.3)),
            float_tensor(
                "wt",
                &[c, c, 2, 2],
                weights(channels * channels * 4, 0.8)
                    .iter()
                    .map(|v| v * 0.6)
                    .collect(),
            ),
            float_tensor("bt", &[c], weights(channels, 1.9)),
            float_tensor("wh", &[1, c, 1, 1], weights(channels, 2.9)),
            float_tensor("bh", &[1], vec![-2.4]),
            float_tensor("gain", &[1], vec![8.0]),
        ],
        input: vec![onnx::value_info(
            "x",
            data_type::FLOAT,
            &[None, Some(3), Some(s), Some(s)],
        )],
        output: vec![onnx::value_info(
            "mask",
            data_type::FLOAT,
            &[None, Some(1), Some(s), Some(s)],
        )],
        ..Default::default()
    })
}

/// A text-line recognizer's shape with a CTC head: Conv(3→c, 3×3) → Relu →
/// ReduceMean over the height → Transpose to [N, W, c] → MatMul to the
/// classes, plus a bias → Softmax over the classes. Input `x` FP32
/// [N, 3, 8, width], output `probs` FP32 [N, width, classes] (class 0 the
/// blank).
pub fn ctc_model(channels: usize, width: usize, classes: usize) -> ModelProto {
    let (c, k) = (channels as i64, classes as i64);
    model(GraphProto {
        name: "ctc".into(),
        node: vec![
            onnx::node(
                "Conv",
                "conv1",
                &["x", "w1", "b1"],
                &["c1"],
                vec![
                    onnx::attr_ints("kernel_shape", &[3, 3]),
                    onnx::attr_ints("pads", &[1, 1, 1, 1]),
                ],
            ),
            onnx::node("Relu", "relu1", &["c1"], &["r1"], vec![]),
            onnx::node(
                "ReduceMean",
                "pool_height",
                &["r1"],
                &["p"],
                vec![onnx::attr_ints("axes", &[2]), onnx::attr_int("keepdims", 0)],
            ),
            onnx::node(
                "Transpose",
                "to_time_major",
                &["p"],
                &["t"],
                vec![onnx::attr_ints("perm", &[0, 2, 1])],
            ),
            onnx::node("MatMul", "classifier", &["t", "wc"], &["l0"], vec![]),
            onnx::node("Add", "classifier_bias", &["l0", "bc"], &["logits"], vec![]),
            onnx::node(
                "Softmax",
                "softmax",
                &["logits"],
                &["probs"],
                vec![onnx::attr_int("axis", -1)],
            ),
        ],
        initializer: vec![
            float_tensor("w1", &[c, 3, 3, 3], weights(channels * 27, 0.4)),
            float_tensor("b1", &[c], weights(channels, 1.2)),
            float_tensor(
                "wc",
                &[c, k],
                weights(channels * classes, 0.6)
                    .iter()
                    .map(|v| v * 4.0)
                    .collect(),
            ),
            float_tensor("bc", &[k], weights(classes, 2.2)),
        ],
        input: vec![onnx::value_info(
            "x",
            data_type::FLOAT,
            &[None, Some(3), Some(8), Some(width as i64)],
        )],
        output: vec![onnx::value_info(
            "probs",
            data_type::FLOAT,
            &[None, Some(width as i64), Some(k)],
        )],
        ..Default::default()
    })
}

/// Inputs for the image models above: `n` images `[n, 3, h, w]` of a few
/// soft blobs on a dim background, deterministic in `seed` — inputs with
/// structure, so a map or sequence head draws regions rather than noise.
pub fn blob_images(n: usize, h: usize, w: usize, seed: u64) -> Tensor {
    let mut v = Vec::with_capacity(n * 3 * h * w);
    for i in 0..n {
        let k = seed + i as u64 * 7;
        let centres: Vec<(f32, f32, f32)> = (0..4u64)
            .map(|j| {
                let a = ((k + j * 13) % 97) as f32 / 97.0;
                let b = ((k * 3 + j * 29) % 89) as f32 / 89.0;
                (a * h as f32, b * w as f32, 2.0 + j as f32 * h as f32 / 32.0)
            })
            .collect();
        for ch in 0..3 {
            for r in 0..h {
                for c in 0..w {
                    let blob: f32 = centres
                        .iter()
                        .map(|(cr, cc, s)| {
                            let d = (r as f32 - cr).powi(2) + (c as f32 - cc).powi(2);
                            (-d / (2.0 * s * s)).exp()
                        })
                        .sum();
                    v.push(blob * (1.0 + ch as f32 * 0.3) - 0.4);
                }
            }
        }
    }
    Tensor {
        shape: vec![n, 3, h, w],
        data: TensorData::F32(v),
    }
}
