//! TensorFlow SavedModels made by TensorFlow itself (scripts/make-savedmodels.py,
//! committed in tests/savedmodels/): each signature imports, runs in ONNX
//! Runtime on the inputs it was saved with, and matches TensorFlow's own
//! outputs within 1e-4. Needs the ONNX Runtime library
//! (`scripts/install-onnxruntime.sh`), not TensorFlow.

use std::path::{Path, PathBuf};

use optimizer::engine::{Engine, GraphLevel, SessionSettings};
use optimizer::onnx;
use optimizer::tensor::{Tensor, TensorData};
use optimizer::tf;
use optimizer::OptimizerError;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/savedmodels")
        .join(name)
}

/// Every array of an `.npz`, by name, as a tensor.
fn npz(path: &Path) -> Vec<(String, Tensor)> {
    let mut archive =
        npyz::npz::NpzArchive::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let names: Vec<String> = archive.array_names().map(str::to_string).collect();
    let mut out = Vec::new();
    for name in names {
        let arr = archive.by_name(&name).unwrap().unwrap();
        let shape: Vec<usize> = arr.shape().iter().map(|&d| d as usize).collect();
        let descr = arr.dtype().descr();
        let data = match descr.trim_matches('\'') {
            "<f4" => TensorData::F32(arr.into_vec().unwrap()),
            "<i4" => TensorData::I32(arr.into_vec().unwrap()),
            "<i8" => TensorData::I64(arr.into_vec().unwrap()),
            other => panic!("{}: array '{name}' of type {other}", path.display()),
        };
        out.push((name, Tensor::new(shape, data).unwrap()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Imports one signature, runs it on its saved inputs and compares with
/// TensorFlow's outputs: floats within 1e-4, integers exactly.
fn matches_tensorflow(model: &str, signature: &str) {
    let dir = fixture(model);
    let onnx_model = tf::import_saved_model(&dir.join("model"), Some(signature), &[])
        .unwrap_or_else(|e| panic!("{model}/{signature}: {e}"));
    let mut engine = Engine::from_bytes(
        &onnx::to_bytes(&onnx_model),
        &SessionSettings::new(GraphLevel::All, 1),
    )
    .expect("ONNX Runtime loads the imported model");
    let inputs = npz(&dir.join(format!("{signature}.inputs.npz")));
    let expected = npz(&dir.join(format!("{signature}.outputs.npz")));
    // The service's names are the signature's keys.
    let mut names: Vec<String> = engine
        .signature()
        .inputs
        .iter()
        .map(|t| t.name.clone())
        .collect();
    names.sort();
    assert_eq!(
        names,
        inputs.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    );
    let outputs = engine.run(&inputs).expect("the imported model runs");
    assert_eq!(
        outputs.len(),
        expected.len(),
        "{model}/{signature}: outputs {outputs:?}"
    );
    for (name, want) in &expected {
        let (_, got) = outputs
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{model}/{signature}: no output '{name}'"));
        assert_eq!(
            got.shape, want.shape,
            "{model}/{signature}: output '{name}'"
        );
        match (&got.data, &want.data) {
            (TensorData::F32(g), TensorData::F32(w)) => {
                let worst = g
                    .iter()
                    .zip(w)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                eprintln!("{model}/{signature}: '{name}' max |diff| {worst:e}");
                assert!(
                    worst <= 1e-4,
                    "{model}/{signature}: '{name}' differs by {worst}"
                );
            }
            (g, w) => assert_eq!(g, w, "{model}/{signature}: output '{name}'"),
        }
    }
}

#[test]
fn keras_conv_net_saved_with_tf_saved_model_save() {
    matches_tensorflow("keras_convnet", "serving_default");
}

#[test]
fn keras_text_model_with_an_embedding_and_a_gru() {
    matches_tensorflow("text_gru", "serving_default");
}

#[test]
fn a_module_with_two_signatures_serves_either() {
    matches_tensorflow("two_signatures", "serving_default");
    matches_tensorflow("two_signatures", "scores");
}

#[test]
fn a_tf1_graph_saved_with_simple_save() {
    matches_tensorflow("tf1_simple_save", "serving_default");
}

#[test]
fn the_default_signature_is_serving_default_and_a_missing_one_is_named() {
    let dir = fixture("two_signatures").join("model");
    let via_path = tf::import_path(&dir, &Default::default()).expect("the folder imports");
    let outputs: Vec<&str> = via_path
        .graph
        .as_ref()
        .unwrap()
        .output
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(outputs, ["label", "probabilities"]);
    match tf::import_saved_model(&dir, Some("predict"), &[]) {
        Err(OptimizerError::TfImport(m)) => {
            assert!(m.contains("no signature 'predict'"), "{m}");
            assert!(m.contains("scores, serving_default"), "{m}");
            assert!(m.contains("signature_name"), "{m}");
        }
        other => panic!("expected a TfImport error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_while_loop_is_refused_naming_its_node() {
    // A Keras GRU left rolled is a While loop over function bodies: listed
    // as unsupported with its node, like any op the importer has no mapping for.
    let dir = fixture("text_gru_loop").join("model");
    match tf::import_saved_model(&dir, None, &[]) {
        Err(OptimizerError::TfImport(m)) => {
            assert!(m.contains("unsupported TensorFlow ops"), "{m}");
            assert!(m.contains("While (node ") && m.contains("gru"), "{m}");
        }
        other => panic!("expected a TfImport error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn an_embedding_lookup_on_a_resource_variable() {
    // tf.nn.embedding_lookup on a tf.Variable: a ResourceGather on its handle.
    matches_tensorflow("embedding_lookup", "serving_default");
}
