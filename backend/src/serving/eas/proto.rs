//! The EAS SDK's protobuf messages as prost types, written from the field
//! numbers of its `tf_request.proto` and `pytorch_predict.proto` (no `protoc`
//! needed). The two files declare the same `ArrayProto` on the wire, except
//! that only the TensorFlow one has `bool_val`; one struct serves both, and a
//! TorchRequest never carries field 8.

#![allow(missing_docs)]

use std::collections::BTreeMap;

/// `ArrayDataType`, shared by both files. Kept as plain `i32` constants so an
/// unknown value decodes (and is refused with its number) instead of failing
/// the whole message.
pub mod dt {
    pub const INVALID: i32 = 0;
    pub const FLOAT: i32 = 1;
    pub const DOUBLE: i32 = 2;
    pub const INT32: i32 = 3;
    pub const UINT8: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT8: i32 = 6;
    pub const STRING: i32 = 7;
    pub const INT64: i32 = 9;
    pub const BOOL: i32 = 10;

    /// The enum's name for `v`, for messages.
    pub fn name(v: i32) -> String {
        const NAMES: [&str; 22] = [
            "DT_INVALID",
            "DT_FLOAT",
            "DT_DOUBLE",
            "DT_INT32",
            "DT_UINT8",
            "DT_INT16",
            "DT_INT8",
            "DT_STRING",
            "DT_COMPLEX64",
            "DT_INT64",
            "DT_BOOL",
            "DT_QINT8",
            "DT_QUINT8",
            "DT_QINT32",
            "DT_BFLOAT16",
            "DT_QINT16",
            "DT_QUINT16",
            "DT_UINT16",
            "DT_COMPLEX128",
            "DT_HALF",
            "DT_RESOURCE",
            "DT_VARIANT",
        ];
        usize::try_from(v)
            .ok()
            .and_then(|i| NAMES.get(i))
            .map_or_else(|| format!("dtype {v}"), |n| n.to_string())
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayShape {
    #[prost(int64, repeated, tag = "1")]
    pub dim: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayProto {
    /// An `ArrayDataType` value (see [`dt`]).
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    #[prost(message, optional, tag = "2")]
    pub array_shape: Option<ArrayShape>,
    #[prost(float, repeated, tag = "3")]
    pub float_val: Vec<f32>,
    #[prost(double, repeated, tag = "4")]
    pub double_val: Vec<f64>,
    /// INT32, INT16, INT8, UINT8 (and the quantized types) travel here.
    #[prost(int32, repeated, tag = "5")]
    pub int_val: Vec<i32>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub string_val: Vec<Vec<u8>>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_val: Vec<i64>,
    /// TensorFlow file only.
    #[prost(bool, repeated, tag = "8")]
    pub bool_val: Vec<bool>,
}

/// `TFRequest`'s body (`tf_request.proto`, no package).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TfPredictRequest {
    #[prost(string, tag = "1")]
    pub signature_name: String,
    #[prost(btree_map = "string, message", tag = "2")]
    pub inputs: BTreeMap<String, ArrayProto>,
    #[prost(string, repeated, tag = "3")]
    pub output_filter: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TfPredictResponse {
    #[prost(btree_map = "string, message", tag = "1")]
    pub outputs: BTreeMap<String, ArrayProto>,
}

/// `TorchRequest`'s body (`pytorch_predict.proto`, package `pytorch.eas`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TorchPredictRequest {
    /// Inputs by position.
    #[prost(message, repeated, tag = "1")]
    pub inputs: Vec<ArrayProto>,
    /// Output positions to return.
    #[prost(int32, repeated, tag = "2")]
    pub output_filter: Vec<i32>,
    /// Inputs by name.
    #[prost(btree_map = "string, message", tag = "3")]
    pub map_inputs: BTreeMap<String, ArrayProto>,
    #[prost(int32, tag = "100")]
    pub debug_level: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TorchPredictResponse {
    #[prost(message, repeated, tag = "1")]
    pub outputs: Vec<ArrayProto>,
    #[prost(btree_map = "string, message", tag = "2")]
    pub map_outputs: BTreeMap<String, ArrayProto>,
}
