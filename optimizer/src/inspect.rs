//! What a model takes and gives, without optimizing it: the library half of
//! the inspection child (`whet inspect`), which runs it confined, under a
//! memory and time limit, because parsing, importing or running a user's
//! model can abort, hang or allocate without bound.

use std::path::Path;

use shared::api::ModelSignature;

use crate::engine::{Engine, GraphLevel, SessionSettings};
use crate::{onnx, tf, OptimizerError, Result};

/// An ONNX file's inputs and outputs, as ONNX Runtime loads them.
pub fn onnx(file: &Path) -> Result<ModelSignature> {
    crate::engine::inspect(file)
}

/// A frozen TensorFlow graph imported to ONNX.
pub struct ImportedGraph {
    pub signature: ModelSignature,
    /// The ONNX model the graph became: the file every later step (the
    /// optimizer, the runner) reads instead of the GraphDef.
    pub onnx: Vec<u8>,
}

/// Imports a frozen GraphDef, or a SavedModel (`file` its folder or its
/// `saved_model.pb`): its signature `signature` (default
/// `serving_default`), whose keys become the tensor names. For a frozen
/// graph, `inputs` and `outputs` are the node or tensor names the config
/// chose; `None` takes the defaults of [`tf::ImportOptions`]. A
/// SavedModel's signature decides both.
///
/// Every failure is [`OptimizerError::TfImport`] (naming the node) or an
/// I/O error on `file`, except [`OptimizerError::RuntimeMissing`]: ONNX
/// Runtime, which reads the imported graph's signature, is not installed.
pub fn tensorflow(
    file: &Path,
    inputs: Option<Vec<String>>,
    outputs: Option<Vec<String>>,
    signature: Option<&str>,
) -> Result<ImportedGraph> {
    let model = match tf::saved_model_root(file) {
        Some(dir) => tf::import_saved_model(dir, signature, &[])?,
        None if signature.is_some() => {
            return Err(OptimizerError::TfImport(format!(
                "{}: a frozen graph, which has no signatures; signature_name applies to \
                 SavedModel folders",
                file.display()
            )))
        }
        None => {
            let opts = tf::ImportOptions {
                inputs,
                outputs,
                input_shapes: vec![],
            };
            tf::import_path(file, &opts)?
        }
    };
    let bytes = onnx::to_bytes(&model);
    let settings = SessionSettings::new(GraphLevel::Disable, 1);
    match Engine::from_bytes(&bytes, &settings) {
        Ok(engine) => Ok(ImportedGraph {
            signature: engine.signature().clone(),
            onnx: bytes,
        }),
        Err(e @ OptimizerError::RuntimeMissing(_)) => Err(e),
        // The importer wrote a graph ONNX Runtime refuses: say so in the
        // importer's terms rather than blaming an ONNX file the user never had.
        Err(e) => Err(OptimizerError::TfImport(format!(
            "the graph imported from {} does not load in ONNX Runtime: {e}",
            file.display()
        ))),
    }
}

/// A TorchScript module declares no inputs: they are positional, their
/// types and shapes come from `test_data` or else from `input_shapes`
/// (fp32), and the module is run once to learn its outputs.
#[cfg(feature = "torch")]
pub fn torchscript(
    file: &Path,
    test_data: Option<&Path>,
    input_shapes: &[Vec<Vec<usize>>],
    input_ranges: &[Vec<shared::config::ValueRange>],
) -> Result<ModelSignature> {
    crate::torch::engine::inspect(file, test_data, input_shapes, input_ranges)
}

/// A TorchScript module deployed plainly (no test data, no input_shapes):
/// checks that libtorch loads it and returns the open signature (see
/// [`ModelSignature::open_inputs`]).
#[cfg(feature = "torch")]
pub fn torchscript_open(file: &Path) -> Result<ModelSignature> {
    let sig = ModelSignature::open_torchscript();
    crate::torch::engine::TorchEngine::load(
        file,
        sig.clone(),
        crate::artifact::TorchSettings::INFERENCE,
    )?;
    Ok(sig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tf::proto::{
        attr_value::Value, tensor_shape_proto::Dim, AttrValue, GraphDef, NodeDef, TensorShapeProto,
    };

    #[test]
    fn a_graph_that_is_not_a_graphdef_is_a_tf_import_error() {
        let dir = tempfile::tempdir().unwrap();
        let pb = dir.path().join("frozen.pb");
        std::fs::write(&pb, b"\xff\xff\xff not protobuf").unwrap();
        match tensorflow(&pb, None, None, None) {
            Err(OptimizerError::TfImport(m)) => assert!(m.contains("frozen.pb"), "{m}"),
            Err(OptimizerError::RuntimeMissing(_)) => {}
            other => panic!("expected a TfImport error, got {:?}", other.err()),
        }
    }

    #[test]
    fn an_identity_graph_imports_with_its_placeholder_as_input() {
        let placeholder = NodeDef {
            name: "x".into(),
            op: "Placeholder".into(),
            attr: [
                (
                    "dtype".to_string(),
                    AttrValue {
                        value: Some(Value::Type(1)),
                    },
                ),
                (
                    "shape".to_string(),
                    AttrValue {
                        value: Some(Value::Shape(TensorShapeProto {
                            dim: [-1, 3]
                                .into_iter()
                                .map(|size| Dim {
                                    size,
                                    name: String::new(),
                                })
                                .collect(),
                            unknown_rank: false,
                        })),
                    },
                ),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let identity = NodeDef {
            name: "y".into(),
            op: "Identity".into(),
            input: vec!["x".into()],
            ..Default::default()
        };
        let graph = GraphDef {
            node: vec![placeholder, identity],
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let pb = dir.path().join("frozen.pb");
        std::fs::write(&pb, prost::Message::encode_to_vec(&graph)).unwrap();
        match tensorflow(&pb, None, None, None) {
            Ok(g) => {
                assert_eq!(g.signature.inputs[0].name, "x:0");
                assert_eq!(g.signature.outputs.len(), 1);
                assert!(!g.onnx.is_empty());
            }
            // No ONNX Runtime on this machine: nothing more to check here.
            Err(OptimizerError::RuntimeMissing(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
}
