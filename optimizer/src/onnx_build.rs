//! A small ONNX writer: builds models from a few node types, for examples
//! (`whet example-model`) and for tests that need a model of their own.
//!
//! The messages are the subset of `onnx.proto` needed to write a graph; field
//! numbers follow the published schema.

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(string, tag = "8")]
    pub name: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeProtoTensor>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProtoTensor {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

/// ONNX `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;

/// A float tensor value-info; `None` dims are symbolic (`N`, `d1`, …).
pub fn float_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Some(v) => Dimension {
                dim_value: Some(*v),
                dim_param: None,
            },
            None => Dimension {
                dim_value: None,
                dim_param: Some(if i == 0 { "N".into() } else { format!("d{i}") }),
            },
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

pub fn float_tensor(name: &str, dims: &[i64], values: Vec<f32>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: FLOAT,
        float_data: values,
        name: name.into(),
    }
}

pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: format!("{op}_{}", outputs.first().copied().unwrap_or("out")),
        op_type: op.into(),
    }
}

/// Wraps a graph in a model at opset 17.
pub fn model(graph: GraphProto) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        producer_name: "whetstone".into(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
    }
    .encode_to_vec()
}

/// A two-layer perceptron `y = relu(x·W1 + b1)·W2 + b2` with deterministic
/// weights: input `x` FP32 [N, inputs], output `y` FP32 [N, outputs].
pub fn mlp(inputs: usize, hidden: usize, outputs: usize) -> Vec<u8> {
    let weights = |n: usize, seed: f32| {
        (0..n)
            .map(|i| (i as f32 * 0.37 + seed).sin() * 0.5)
            .collect::<Vec<f32>>()
    };
    let (i, h, o) = (inputs as i64, hidden as i64, outputs as i64);
    model(GraphProto {
        name: "mlp".into(),
        node: vec![
            node("MatMul", &["x", "w1"], &["h0"]),
            node("Add", &["h0", "b1"], &["h1"]),
            node("Relu", &["h1"], &["h2"]),
            node("MatMul", &["h2", "w2"], &["y0"]),
            node("Add", &["y0", "b2"], &["y"]),
        ],
        initializer: vec![
            float_tensor("w1", &[i, h], weights(inputs * hidden, 0.1)),
            float_tensor("b1", &[h], weights(hidden, 0.7)),
            float_tensor("w2", &[h, o], weights(hidden * outputs, 1.3)),
            float_tensor("b2", &[o], weights(outputs, 2.1)),
        ],
        input: vec![float_info("x", &[None, Some(i)])],
        output: vec![float_info("y", &[None, Some(o)])],
    })
}
