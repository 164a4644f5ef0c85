//! The TensorFlow protobuf messages the importer reads (GraphDef,
//! SavedModel, checkpoint bundle entries), generated at build time from
//! `proto/tensorflow.proto` (our declaration of the fields we use, with
//! TensorFlow's field numbers; see `build.rs`), and the `DataType` values.

// Generated code: not every message or field declared is read.
#![allow(missing_docs, dead_code, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));

impl TensorShapeProto {
    /// A known-rank shape of these sizes (-1: unknown).
    pub fn of(dims: &[i64]) -> TensorShapeProto {
        TensorShapeProto {
            dim: dims
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }
    }
}

/// `DataType` enum values (`types.proto`). Reference types (`_REF`, +100)
/// only occur in unfrozen graphs.
pub mod dt {
    pub const FLOAT: i32 = 1;
    pub const DOUBLE: i32 = 2;
    pub const INT32: i32 = 3;
    pub const UINT8: i32 = 4;
    pub const INT16: i32 = 5;
    pub const INT8: i32 = 6;
    pub const STRING: i32 = 7;
    pub const INT64: i32 = 9;
    pub const BOOL: i32 = 10;
    pub const BFLOAT16: i32 = 14;
    pub const HALF: i32 = 19;
    pub const RESOURCE: i32 = 20;

    /// A readable name for error messages.
    pub fn name(t: i32) -> String {
        match t {
            FLOAT => "float32".into(),
            DOUBLE => "float64".into(),
            INT32 => "int32".into(),
            UINT8 => "uint8".into(),
            INT16 => "int16".into(),
            INT8 => "int8".into(),
            STRING => "string".into(),
            INT64 => "int64".into(),
            BOOL => "bool".into(),
            BFLOAT16 => "bfloat16".into(),
            HALF => "float16".into(),
            RESOURCE => "resource".into(),
            t if t > 100 => format!("{} reference (an unfrozen variable)", name(t - 100)),
            t => format!("DataType {t}"),
        }
    }
}
