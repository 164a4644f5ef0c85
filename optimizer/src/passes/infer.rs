//! Element types and shapes of intermediate tensors, as ONNX Runtime infers
//! them. We ask ORT rather than reimplementing ONNX type and shape inference
//! for every operator: the model is loaded once (graph optimizations off)
//! with the tensors of interest added as graph outputs, and the session's
//! output descriptions are read back. Nothing is run.

use std::collections::{HashMap, HashSet};

use crate::engine::{Engine, GraphLevel, SessionSettings};
use crate::error::Result;
use crate::onnx::{self, data_type, ModelProto, ValueInfoProto};
use crate::tensor::DType;

use super::names::NameCounts;

/// What ORT knows about one tensor: its element type (`None` for types our
/// code does not name, or non-tensors) and, when its rank is known, its dims
/// (-1 where not static).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorInfo {
    pub elem_type: Option<i32>,
    pub dims: Option<Vec<i64>>,
}

impl TensorInfo {
    /// Dims when the rank and every dim are known.
    pub fn static_dims(&self) -> Option<Vec<usize>> {
        self.dims
            .as_ref()?
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect()
    }
}

/// Infers `names` (top-level tensors of `model`) plus the graph outputs.
/// Names that are graph inputs or initializers are answered from their
/// declarations by the caller, not here.
///
/// ORT describes a tensor of unknown rank with no dims, exactly like a
/// scalar. With `check_rank`, each name also gets a `Shape` probe node
/// (whose inferred length is the rank), so a scalar can be told from an
/// unknown; without it, an empty dims list is reported as unknown. Only
/// tensors may be probed: `Shape` of a sequence fails the whole session.
pub(crate) fn infer(
    model: &ModelProto,
    names: &[String],
    check_rank: bool,
) -> Result<HashMap<String, TensorInfo>> {
    let mut probe = model.clone();
    let g = onnx::graph_mut(&mut probe);
    let mut fresh = NameCounts::of_graph(g);
    let mut skip: HashSet<String> = g.input.iter().map(|v| v.name.clone()).collect();
    skip.extend(g.initializer.iter().map(|t| t.name.clone()));
    skip.extend(g.output.iter().map(|v| v.name.clone()));
    let untyped = |name: &str| ValueInfoProto {
        name: name.to_string(),
        // No type: ORT fills in what it inferred.
        ..Default::default()
    };
    let mut rank_probe: HashMap<String, String> = HashMap::new();
    for n in names {
        if !skip.insert(n.clone()) {
            continue;
        }
        g.output.push(untyped(n));
        if check_rank {
            let out = fresh.fresh(&format!("{n}_rank_probe"));
            g.node.push(onnx::node(
                "Shape",
                &out,
                &[n.as_str()],
                &[out.as_str()],
                vec![],
            ));
            g.output.push(untyped(&out));
            rank_probe.insert(n.clone(), out);
        }
    }
    let engine = Engine::from_bytes(
        &onnx::to_bytes(&probe),
        &SessionSettings::new(GraphLevel::Disable, 1),
    )?;
    let outputs: HashMap<&str, &[i64]> = engine
        .signature()
        .outputs
        .iter()
        .map(|s| (s.name.as_str(), s.shape.as_slice()))
        .collect();
    let mut out = HashMap::new();
    for spec in &engine.signature().outputs {
        let rank_known = match rank_probe.get(&spec.name) {
            Some(p) => outputs.get(p.as_str()) == Some(&&[spec.shape.len() as i64][..]),
            None => !spec.shape.is_empty(),
        };
        out.insert(
            spec.name.clone(),
            TensorInfo {
                elem_type: elem_type_of(&spec.datatype),
                dims: rank_known.then(|| spec.shape.clone()),
            },
        );
    }
    Ok(out)
}
/// The ONNX element type for a signature datatype: KServe names for the
/// types our tensors carry, ORT's debug names for the rest we care about.
fn elem_type_of(datatype: &str) -> Option<i32> {
    if let Some(d) = DType::from_kserve_name(datatype) {
        return Some(onnx::data_type_of(d));
    }
    Some(match datatype {
        "Float16" => data_type::FLOAT16,
        "Bfloat16" => data_type::BFLOAT16,
        "Int16" => data_type::INT16,
        "Uint16" => data_type::UINT16,
        "Uint32" => data_type::UINT32,
        "Uint64" => data_type::UINT64,
        "String" => data_type::STRING,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::GraphProto;
    use crate::onnx_build;

    /// `s` is a scalar, `u` has a rank ORT cannot know (Reshape to a shape
    /// read from an input), `r` a static shape.
    fn model() -> ModelProto {
        onnx_build::model(GraphProto {
            name: "ranks".into(),
            node: vec![
                onnx::node(
                    "ReduceSum",
                    "sum",
                    &["x"],
                    &["s"],
                    vec![onnx::attr_int("keepdims", 0)],
                ),
                onnx::node("Reshape", "reshape", &["x", "shape"], &["u"], vec![]),
                onnx::node("Relu", "relu", &["x"], &["r"], vec![]),
            ],
            input: vec![
                onnx::value_info("x", data_type::FLOAT, &[Some(2), Some(3)]),
                onnx::value_info("shape", data_type::INT64, &[None]),
            ],
            output: vec![onnx::value_info("r", data_type::FLOAT, &[Some(2), Some(3)])],
            ..Default::default()
        })
    }

    #[test]
    fn a_scalar_is_told_from_an_unknown_rank() {
        let names = ["s".to_string(), "u".to_string(), "r".to_string()];
        let info = infer(&model(), &names, true).unwrap();
        assert_eq!(info["s"].static_dims(), Some(vec![]), "{:?}", info["s"]);
        assert_eq!(info["u"].dims, None, "{:?}", info["u"]);
        assert_eq!(info["r"].static_dims(), Some(vec![2, 3]));
        assert_eq!(info["r"].elem_type, Some(data_type::FLOAT));
        // Without the probe, an empty dims list is not trusted either way.
        let info = infer(&model(), &names, false).unwrap();
        assert_eq!(info["s"].dims, None);
        assert_eq!(info["u"].dims, None);
        assert_eq!(info["s"].elem_type, Some(data_type::FLOAT));
    }
}
