//! Small ONNX models built in code, for examples (`whet example-model`) and
//! for tests that need a model of their own.

use crate::onnx::{self, data_type, GraphProto, ModelProto, OperatorSetIdProto, TensorProto};

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
