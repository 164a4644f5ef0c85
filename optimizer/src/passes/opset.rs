//! Raises a model from opset 11 or 12 to 13: the quantized forms need it
//! (per-channel `DequantizeLinear` has an `axis` only from 13), and many real
//! exports (Paddle2ONNX, older tf2onnx and torch exports) target 11 or 12.
//!
//! Between 11 and 13 only a few operators changed meaning, and each is
//! rewritten to its opset-13 form with the same results:
//! - `Squeeze`, `Unsqueeze`, `ReduceSum` (13) and `Split` (13) take their
//!   `axes`/`split` as an input instead of an attribute;
//! - `Dropout` (12) takes `ratio` as an input;
//! - `Softmax`, `LogSoftmax`, `Hardmax` (13) work on one axis instead of
//!   the input coerced to 2-D at `axis` (default 1 before, -1 now): the last
//!   axis is the same either way; any other is rewritten as
//!   `Flatten(axis)` → the op on axis 1 → `Reshape` back to the input's shape.
//!
//! Every other operator of the default domain means the same at 13 (later
//! versions only added types). Subgraphs (`If`, `Loop`, `Scan`) are
//! rewritten too. Opsets below 11 are refused: 10→11 changed far more
//! (`Resize`, `Clip`, `Pad`…).

use std::collections::HashMap;

use crate::error::{OptimizerError, Result};
use crate::onnx::{self, data_type, GraphProto, ModelProto, NodeProto, TensorProto};

use super::constants::declared_dims;
use super::infer::infer;
use super::names::{subgraphs_mut, NameCounts};
use super::{Pass, PassContext, PassReport};

/// The opset this pass raises to.
pub const TARGET: i64 = 13;

/// See the module documentation.
pub struct OpsetUpgrade;

impl Pass for OpsetUpgrade {
    fn name(&self) -> &'static str {
        "opset_upgrade"
    }

    fn run(&self, model: &mut ModelProto, _ctx: &PassContext) -> Result<PassReport> {
        let from = onnx::opset(model);
        if from >= TARGET {
            return Ok(PassReport::new(self.name(), 0, ""));
        }
        if from < 11 {
            return Err(OptimizerError::Config(format!(
                "the model has opset {from}; only opsets 11 and 12 are raised to {TARGET}"
            )));
        }
        let ranks = softmax_ranks(model);
        let mut names = NameCounts::of_graph(onnx::graph(model));
        let mut changed = 0;
        upgrade_graph(onnx::graph_mut(model), &ranks, &mut names, &mut changed);
        for o in &mut model.opset_import {
            if o.domain.is_empty() || o.domain == "ai.onnx" {
                o.version = TARGET;
            }
        }
        // Opset 13 needs IR version 7 or later.
        model.ir_version = model.ir_version.max(7);
        Ok(PassReport::new(
            self.name(),
            changed,
            format!("opset {from} → {TARGET}: {changed} node(s) rewritten"),
        ))
    }
}

/// The rank of the input of each top-level softmax-like node, as ONNX
/// Runtime infers it (absent when unknown, or when inference fails).
fn softmax_ranks(model: &ModelProto) -> HashMap<String, usize> {
    let g = onnx::graph(model);
    let names: Vec<String> = g
        .node
        .iter()
        .filter(|n| is_default(n) && SOFTMAX_LIKE.contains(&n.op_type.as_str()))
        .filter_map(|n| n.input.first().cloned())
        .collect();
    if names.is_empty() {
        return HashMap::new();
    }
    let mut ranks: HashMap<String, usize> = HashMap::new();
    for v in g.input.iter().chain(g.value_info.iter()) {
        if let Some(dims) = declared_dims(v) {
            ranks.insert(v.name.clone(), dims.len());
        }
    }
    if let Ok(inferred) = infer(model, &names, true) {
        for (name, info) in inferred {
            if let Some(d) = info.dims {
                ranks.insert(name, d.len());
            }
        }
    }
    ranks
}

const SOFTMAX_LIKE: [&str; 3] = ["Softmax", "LogSoftmax", "Hardmax"];

fn is_default(n: &NodeProto) -> bool {
    n.domain.is_empty() || n.domain == "ai.onnx"
}

fn int64s(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        dims: vec![values.len() as i64],
        data_type: data_type::INT64,
        int64_data: values.to_vec(),
        name: name.into(),
        ..Default::default()
    }
}

/// Removes attribute `name` of `n` and returns its ints, if it had it.
fn take_ints(n: &mut NodeProto, name: &str) -> Option<Vec<i64>> {
    let i = n.attribute.iter().position(|a| a.name == name)?;
    Some(n.attribute.remove(i).ints)
}

fn upgrade_graph(
    g: &mut GraphProto,
    ranks: &HashMap<String, usize>,
    names: &mut NameCounts,
    changed: &mut usize,
) {
    let nodes = std::mem::take(&mut g.node);
    let mut out = Vec::with_capacity(nodes.len());
    for mut n in nodes {
        for sub in subgraphs_mut(&mut n) {
            // A subgraph's tensors are not in the top-level inference.
            upgrade_graph(sub, &HashMap::new(), names, changed);
        }
        if !is_default(&n) {
            out.push(n);
            continue;
        }
        let base = if n.name.is_empty() {
            n.op_type.to_lowercase()
        } else {
            n.name.clone()
        };
        match n.op_type.as_str() {
            op @ ("Squeeze" | "Unsqueeze" | "ReduceSum" | "Split") => {
                let attr = if op == "Split" { "split" } else { "axes" };
                if let Some(values) = take_ints(&mut n, attr) {
                    let name = names.fresh(&format!("{base}_{attr}"));
                    g.initializer.push(int64s(&name, &values));
                    // ReduceSum's and Split's inputs beyond the first are
                    // new at 13: the list is exactly [data, it].
                    n.input.truncate(1);
                    n.input.push(name);
                    *changed += 1;
                }
            }
            "Dropout" => {
                if let Some(i) = n.attribute.iter().position(|a| a.name == "ratio") {
                    let ratio = n.attribute.remove(i).f;
                    let name = names.fresh(&format!("{base}_ratio"));
                    g.initializer.push(TensorProto {
                        data_type: data_type::FLOAT,
                        float_data: vec![ratio],
                        name: name.clone(),
                        ..Default::default()
                    });
                    n.input.truncate(1);
                    n.input.push(name);
                    *changed += 1;
                }
            }
            op if SOFTMAX_LIKE.contains(&op) => {
                let axis = onnx::attr_i(&n, "axis", 1);
                let rank = n.input.first().and_then(|x| ranks.get(x)).copied();
                let last = axis == -1 || rank.is_some_and(|r| axis == r as i64 - 1);
                n.attribute.retain(|a| a.name != "axis");
                if last {
                    n.attribute.push(onnx::attr_int("axis", -1));
                    out.push(n);
                    *changed += 1;
                    continue;
                }
                // Coerce to 2-D at `axis`, work on the second axis, and give
                // the result the input's shape again.
                let (x, y) = (n.input[0].clone(), n.output[0].clone());
                let flat = names.fresh(&format!("{base}_2d"));
                let flat_out = names.fresh(&format!("{base}_2d_out"));
                let shape = names.fresh(&format!("{base}_shape"));
                out.push(onnx::node(
                    "Flatten",
                    &names.fresh(&format!("{base}_flatten")),
                    &[x.as_str()],
                    &[flat.as_str()],
                    vec![onnx::attr_int("axis", axis)],
                ));
                out.push(onnx::node(
                    "Shape",
                    &names.fresh(&format!("{base}_shape_of_input")),
                    &[x.as_str()],
                    &[shape.as_str()],
                    vec![],
                ));
                n.input[0] = flat;
                n.output[0] = flat_out.clone();
                n.attribute.push(onnx::attr_int("axis", 1));
                out.push(n);
                out.push(onnx::node(
                    "Reshape",
                    &names.fresh(&format!("{base}_reshape")),
                    &[flat_out.as_str(), shape.as_str()],
                    &[y.as_str()],
                    vec![],
                ));
                *changed += 1;
                continue;
            }
            _ => {}
        }
        out.push(n);
    }
    g.node = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, GraphLevel, SessionSettings};
    use crate::onnx::{value_info, OperatorSetIdProto};
    use crate::onnx_build::float_tensor;
    use crate::tensor::{Tensor, TensorData};

    /// x [2, 3, 4] → Unsqueeze(axes 0) → Squeeze(axes 0) → Softmax (axis 1,
    /// the old default: over the last two axes together) → Split (axis 2,
    /// [1, 3]) → ReduceSum(axes [1]) of the second part + the first part,
    /// and LogSoftmax on the last axis: every rewrite at once.
    fn opset11_model() -> ModelProto {
        let n = onnx::node;
        let g = GraphProto {
            name: "old".into(),
            node: vec![
                n(
                    "Unsqueeze",
                    "u",
                    &["x"],
                    &["u"],
                    vec![onnx::attr_ints("axes", &[0])],
                ),
                n(
                    "Squeeze",
                    "s",
                    &["u"],
                    &["s"],
                    vec![onnx::attr_ints("axes", &[0])],
                ),
                n("Mul", "m", &["s", "k"], &["m"], vec![]),
                n("Softmax", "sm", &["m"], &["sm"], vec![]),
                n(
                    "Split",
                    "sp",
                    &["sm"],
                    &["a", "b"],
                    vec![onnx::attr_int("axis", 2), onnx::attr_ints("split", &[1, 3])],
                ),
                n(
                    "ReduceSum",
                    "r",
                    &["b"],
                    &["r"],
                    vec![onnx::attr_ints("axes", &[2]), onnx::attr_int("keepdims", 1)],
                ),
                n("Add", "add", &["a", "r"], &["y0"], vec![]),
                n(
                    "LogSoftmax",
                    "ls",
                    &["m"],
                    &["z"],
                    vec![onnx::attr_int("axis", 2)],
                ),
                n(
                    "Dropout",
                    "d",
                    &["y0"],
                    &["y"],
                    vec![onnx::attr_float("ratio", 0.5)],
                ),
            ],
            initializer: vec![float_tensor("k", &[1], vec![3.0])],
            input: vec![value_info(
                "x",
                data_type::FLOAT,
                &[Some(2), Some(3), Some(4)],
            )],
            output: vec![
                value_info("y", data_type::FLOAT, &[Some(2), Some(3), Some(1)]),
                value_info("z", data_type::FLOAT, &[Some(2), Some(3), Some(4)]),
            ],
            ..Default::default()
        };
        ModelProto {
            ir_version: 6,
            graph: Some(g),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 11,
            }],
            ..Default::default()
        }
    }

    fn run(model: &ModelProto) -> Vec<Vec<f32>> {
        let mut e = Engine::from_bytes(
            &onnx::to_bytes(model),
            &SessionSettings::new(GraphLevel::Disable, 1),
        )
        .expect("session");
        let x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = Tensor::new(vec![2, 3, 4], TensorData::F32(x)).expect("tensor");
        let outs = e.run(&[("x".to_string(), x)]).expect("run");
        outs.into_iter()
            .map(|(_, t)| t.data.to_f64().into_iter().map(|v| v as f32).collect())
            .collect()
    }

    #[test]
    fn opset_11_becomes_13_with_the_same_results() {
        let old = opset11_model();
        let before = run(&old);
        let mut m = old.clone();
        let r = OpsetUpgrade.run(&mut m, &PassContext::default()).unwrap();
        assert_eq!(onnx::opset(&m), 13);
        assert_eq!(r.changed, 7, "{}", r.note);
        let g = onnx::graph(&m);
        assert!(g.node.iter().all(|n| n
            .attribute
            .iter()
            .all(|a| a.name != "axes" && a.name != "split")));
        // The old-default Softmax (axis 1 of 3) is coerced by hand; the
        // LogSoftmax on the last axis is not.
        assert!(g.node.iter().any(|n| n.op_type == "Flatten"));
        assert_eq!(g.node.iter().filter(|n| n.op_type == "Reshape").count(), 1);
        let after = run(&m);
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.len(), a.len());
            for (x, y) in b.iter().zip(a) {
                assert!((x - y).abs() < 1e-6, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn opset_13_is_left_alone_and_10_is_refused() {
        let mut m = crate::onnx_build::mlp_model(4, 8, 2);
        let r = OpsetUpgrade.run(&mut m, &PassContext::default()).unwrap();
        assert_eq!(r.changed, 0);
        let mut old = opset11_model();
        old.opset_import[0].version = 10;
        let e = OpsetUpgrade
            .run(&mut old, &PassContext::default())
            .unwrap_err();
        assert!(e.to_string().contains("opset 10"), "{e}");
    }
}
