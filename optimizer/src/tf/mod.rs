//! TensorFlow models to ONNX (opset 17): frozen graphs (`GraphDef` `.pb`)
//! and SavedModel folders (`saved_model.pb` with `variables/`).
//!
//! Our own importer: the available Rust TensorFlow readers fail on the graphs
//! we serve, and tf2onnx needs a full Python TensorFlow. The protobuf messages
//! are generated from `proto/tensorflow.proto` (`proto.rs`);
//! `saved_model.rs` turns a SavedModel's signature into one flat, frozen
//! GraphDef (function calls inlined, variables read from the checkpoint by
//! `bundle.rs`); `import.rs` walks a graph and `ops/` maps each op.
//!
//! The user's interface is kept: graph inputs and outputs carry the
//! TensorFlow tensor names (`input:0`, `l2_normalize:0`) and NHWC inputs stay
//! NHWC; convolutions and pools are wrapped in NHWC↔NCHW transposes (pairs
//! that meet cancel here, the rest ONNX Runtime's layout optimizer removes).

mod bundle;
mod import;
mod konst;
mod ops;
pub mod proto;
mod saved_model;

#[cfg(test)]
mod tests;

use std::path::Path;

use crate::error::{OptimizerError, Result};
use crate::onnx::ModelProto;

use saved_model::is_saved_model;

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

/// What to tell a user who hands us a SavedModel's `saved_model.pb` alone.
pub(crate) const SAVED_MODEL_HINT: &str =
    "this is a TensorFlow SavedModel's saved_model.pb, which is not a frozen graph and is \
     nothing without its variables: deploy the whole SavedModel folder (saved_model.pb with its \
     variables/ folder), or an archive (.tar.gz, .zip) of it";

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

/// Reads and converts a frozen graph file, or a SavedModel folder (its
/// `serving_default` signature; [`import_saved_model`] takes another).
pub fn import_path(path: &Path, opts: &ImportOptions) -> Result<ModelProto> {
    if let Some(dir) = saved_model_root(path) {
        return import_saved_model(dir, None, &opts.input_shapes);
    }
    if path.is_dir() {
        return Err(OptimizerError::TfImport(format!(
            "{}: a folder, but not a SavedModel (no saved_model.pb in it), and not a frozen \
             TensorFlow graph (.pb)",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| OptimizerError::io(path, e))?;
    import(&bytes, opts).map_err(|e| match e {
        OptimizerError::TfImport(m) => OptimizerError::TfImport(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// The SavedModel folder `path` is or whose `saved_model.pb` it is.
pub fn saved_model_root(path: &Path) -> Option<&Path> {
    if path.is_dir() {
        return is_saved_model(path).then_some(path);
    }
    if path.file_name().is_some_and(|n| n == "saved_model.pb") {
        return path.parent();
    }
    None
}

/// Converts signature `signature` (default [`DEFAULT_SIGNATURE`]) of the
/// SavedModel in `dir`: its graph with function calls inlined and variables
/// read from the checkpoint, imported as a frozen graph is. The ONNX inputs
/// and outputs carry the signature's keys (the names `saved_model_cli show`
/// lists); `input_shapes` is keyed by them too.
pub fn import_saved_model(
    dir: &Path,
    signature: Option<&str>,
    input_shapes: &[(String, Vec<i64>)],
) -> Result<ModelProto> {
    let flat = saved_model::load(dir, signature).map_err(OptimizerError::TfImport)?;
    if let Some((key, _)) = flat
        .inputs
        .iter()
        .find(|(k, _)| flat.outputs.iter().any(|(o, _)| o == k))
    {
        return Err(OptimizerError::TfImport(format!(
            "{}: the signature names both an input and an output '{key}'",
            dir.display()
        )));
    }
    let node_of = |key: &str| {
        flat.inputs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, n)| n.clone())
    };
    let mut shapes = Vec::new();
    for (key, shape) in input_shapes {
        let node = node_of(key).ok_or_else(|| {
            OptimizerError::TfImport(format!(
                "{}: input shape given for '{key}', which is not an input of the signature",
                dir.display()
            ))
        })?;
        shapes.push((node, shape.clone()));
    }
    let opts = ImportOptions {
        inputs: Some(flat.inputs.iter().map(|(_, n)| n.clone()).collect()),
        outputs: Some(flat.outputs.iter().map(|(_, t)| t.clone()).collect()),
        input_shapes: shapes,
    };
    let names = import::Names {
        inputs: flat
            .inputs
            .iter()
            .map(|(k, n)| (n.clone(), k.clone()))
            .collect(),
        outputs: flat.outputs.iter().map(|(k, _)| k.clone()).collect(),
    };
    import::import_graph(flat.graph, &opts, &names, import::MAX_GRAPH_CONSTANT_BYTES).map_err(|e| {
        match e {
            OptimizerError::TfImport(m) => {
                OptimizerError::TfImport(format!("{}: {m}", dir.display()))
            }
            other => other,
        }
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
