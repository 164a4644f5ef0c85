//! TensorFlow frozen graphs (`GraphDef` `.pb`) to ONNX (opset 17).
//!
//! Our own importer: the available Rust TensorFlow readers fail on the graphs
//! we serve, and tf2onnx needs a full Python TensorFlow. The protobuf messages
//! are declared by hand in `proto.rs`; `import.rs` walks the graph and `ops/`
//! maps each op.
//!
//! The user's interface is kept: graph inputs and outputs carry the
//! TensorFlow tensor names (`input:0`, `l2_normalize:0`) and NHWC inputs stay
//! NHWC; convolutions and pools are wrapped in NHWC↔NCHW transposes (pairs
//! that meet cancel here, the rest ONNX Runtime's layout optimizer removes).

mod import;
mod konst;
mod ops;
pub mod proto;

#[cfg(test)]
mod tests;

use std::path::Path;

use crate::error::{OptimizerError, Result};
use crate::onnx::ModelProto;

#[cfg(any(test, feature = "internals"))]
pub use import::MAX_GRAPH_CONSTANT_BYTES;
#[cfg(any(test, feature = "internals"))]
pub use konst::MAX_CONSTANT_BYTES;

/// What to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Node names (`input_ids`, or tensor names `input_ids:0`) that become
    /// graph inputs. Default: every Placeholder the outputs depend on.
    pub inputs: Option<Vec<String>>,
    /// Node names (`l2_normalize`) or tensor names (`split:1`) that become
    /// graph outputs. Default: every node no other node consumes (NoOps,
    /// Consts and Placeholders left out).
    pub outputs: Option<Vec<String>>,
    /// Input shapes that replace the Placeholder's declared shape
    /// (`-1` = any size), e.g. to fix a batch size.
    pub input_shapes: Vec<(String, Vec<i64>)>,
}

/// What to tell a user who hands us a SavedModel.
pub(crate) const SAVED_MODEL_HINT: &str =
    "this is a TensorFlow SavedModel (saved_model.pb with a variables/ folder), not a frozen graph; \
     freeze it into a single GraphDef .pb first, e.g. with TensorFlow's freeze_graph tool, \
     tf.compat.v1.graph_util.convert_variables_to_constants (TF1 sessions), or \
     tensorflow.python.framework.convert_to_constants.convert_variables_to_constants_v2 on the \
     serving function (TF2), then write graph_def.SerializeToString() to a .pb file";

/// Converts a frozen GraphDef to an ONNX model (opset 17).
///
/// Errors name the node (and op) they concern; unsupported ops are all
/// listed at once. The graph is untrusted: a constant whose declared size
/// overflows, disagrees with its stored bytes or exceeds
/// [`MAX_CONSTANT_BYTES`], or constants totalling more than
/// [`MAX_GRAPH_CONSTANT_BYTES`], are refused before they are allocated.
pub fn import(pb: &[u8], opts: &ImportOptions) -> Result<ModelProto> {
    import::import(pb, opts)
}

/// Reads and converts a frozen graph file. A SavedModel folder, or its
/// `saved_model.pb`, is refused with how to freeze it.
pub fn import_path(path: &Path, opts: &ImportOptions) -> Result<ModelProto> {
    let saved = |p: &Path| OptimizerError::TfImport(format!("{}: {SAVED_MODEL_HINT}", p.display()));
    if path.is_dir() {
        let pb = path.join("saved_model.pb");
        if pb.is_file() {
            return Err(saved(&pb));
        }
        return Err(OptimizerError::TfImport(format!(
            "{}: a folder, not a frozen TensorFlow graph (.pb)",
            path.display()
        )));
    }
    if path.file_name().is_some_and(|n| n == "saved_model.pb")
        && path.parent().is_some_and(|d| d.join("variables").is_dir())
    {
        return Err(saved(path));
    }
    let bytes = std::fs::read(path).map_err(|e| OptimizerError::io(path, e))?;
    import(&bytes, opts).map_err(|e| match e {
        OptimizerError::TfImport(m) => OptimizerError::TfImport(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// One op type of a graph: how many nodes use it and whether we convert it.
#[cfg(any(test, feature = "internals"))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpCount {
    pub op: String,
    pub count: usize,
    pub supported: bool,
}

/// The graph's op types with their node counts, sorted by op name, to see at
/// a glance what a model needs.
#[cfg(any(test, feature = "internals"))]
pub fn op_census(pb: &[u8]) -> Result<Vec<OpCount>> {
    let graph = import::decode(pb)?;
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for n in &graph.node {
        *counts.entry(n.op.as_str()).or_default() += 1;
    }
    Ok(counts
        .into_iter()
        .map(|(op, count)| OpCount {
            op: op.to_string(),
            count,
            supported: ops::is_supported(op) || op == "Placeholder",
        })
        .collect())
}

/// A Const's TensorProto as a tensor (raw `tensor_content` or the typed
/// `*_val` fields, single values splatted to the shape). A declared size
/// that overflows, disagrees with `tensor_content`, or exceeds
/// [`MAX_CONSTANT_BYTES`] is refused before anything is allocated.
#[cfg(any(test, feature = "internals"))]
pub fn const_tensor(t: &proto::TensorProto) -> Result<crate::tensor::Tensor> {
    konst::from_proto(t).map_err(OptimizerError::TfImport)
}

/// The TensorFlow op types the importer converts.
#[cfg(any(test, feature = "internals"))]
pub fn supported_ops() -> &'static [&'static str] {
    ops::SUPPORTED
}
