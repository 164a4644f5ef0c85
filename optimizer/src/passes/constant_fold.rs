//! Replaces nodes whose inputs are all known before serving by initializers.
//!
//! ONNX Runtime itself evaluates them: the nodes of one topological wave and
//! their constant inputs become a small model that is run once with graph
//! optimizations off. That keeps folded values bit-identical to what the
//! serving session would compute and spares us an operator library.
//! `Constant` nodes become initializers directly, and `Shape`/`Size` of a
//! tensor whose shape ONNX Runtime infers as static are computed here.

use std::collections::{HashMap, HashSet};

use crate::engine::{Engine, GraphLevel, SessionSettings};
use crate::error::Result;
use crate::onnx::{self, attr, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use crate::tensor::{Tensor, TensorData};

use super::constants::{constant_value, declared_dims, fixed_tensors, tensor_bytes};
use super::infer::infer;
use super::names::{has_subgraphs, node_outer_refs, rename_in_node};
use super::validate::{check_model, graph_of, graph_of_mut};
use super::{Pass, PassContext, PassReport};

/// Largest tensor a fold may write into the model.
pub const DEFAULT_MAX_FOLD_BYTES: usize = 64 << 20;

/// A folded tensor may be larger than the node's inputs only up to this
/// size: `Expand`, `Tile`, `ConstantOfShape` or a widening `Cast` of a
/// constant would otherwise trade a little compute for a bigger file.
const GROWTH_ALLOWANCE_BYTES: usize = 1 << 20;

/// Ops whose result is not a function of their inputs, or that must stay
/// nodes for the model to keep its meaning: `DequantizeLinear` of an int8
/// weight is how a QDQ model says "this weight is quantized"; folding it
/// would turn the weight back into float.
const NEVER_FOLD: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
    "DequantizeLinear",
];

/// See the module comment. `max_bytes` bounds every folded tensor.
pub struct ConstantFold {
    pub max_bytes: usize,
}

impl Default for ConstantFold {
    fn default() -> Self {
        ConstantFold {
            max_bytes: DEFAULT_MAX_FOLD_BYTES,
        }
    }
}

/// Where a known value lives while a fold is planned.
struct Known<'g> {
    initializers: HashMap<&'g str, &'g TensorProto>,
    computed: HashMap<String, TensorProto>,
    /// Outputs of folded `Identity` nodes: the tensor they copy.
    aliases: HashMap<String, String>,
}

impl Known<'_> {
    fn get(&self, name: &str) -> Option<&TensorProto> {
        let name = self.aliases.get(name).map_or(name, String::as_str);
        self.computed
            .get(name)
            .or_else(|| self.initializers.get(name).copied())
    }

    fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// What folding decided: nodes to drop, tensors they leave behind, and
/// names to read instead of a dropped `Identity`'s output.
struct Plan {
    removed: HashSet<usize>,
    computed: HashMap<String, TensorProto>,
    aliases: HashMap<String, String>,
}

/// Bound on plan-and-apply rounds inside one run. A round folds everything
/// computable from known values; the next one exists because folding can
/// make more shapes static (`Reshape` to a now-constant shape), which makes
/// more `Shape` nodes foldable.
const MAX_ROUNDS: usize = 64;

impl Pass for ConstantFold {
    fn name(&self) -> &'static str {
        "constant_fold"
    }

    fn run(&self, model: &mut ModelProto, ctx: &PassContext) -> Result<PassReport> {
        check_model(model)?;
        // Nodes ORT could not evaluate (or whose result was too big), by
        // first output: not retried in later rounds.
        let mut failed: HashSet<String> = HashSet::new();
        let (mut folded, mut added) = (0, 0);
        for _ in 0..MAX_ROUNDS {
            let plan = self.plan(model, ctx, &mut failed)?;
            if plan.removed.is_empty() {
                break;
            }
            folded += plan.removed.len();
            added += apply(graph_of_mut(model)?, plan, ctx);
        }
        let skipped = failed.len();
        Ok(PassReport::new(
            self.name(),
            folded,
            format!(
                "{folded} nodes folded into {added} initializers{}",
                if skipped > 0 {
                    format!("; {skipped} constant nodes left as they are (too large, or ONNX Runtime could not evaluate them alone)")
                } else {
                    String::new()
                }
            ),
        ))
    }
}

impl ConstantFold {
    fn plan(
        &self,
        model: &ModelProto,
        ctx: &PassContext,
        failed: &mut HashSet<String>,
    ) -> Result<Plan> {
        let g = graph_of(model)?;
        let fixed = fixed_tensors(g, ctx)?;
        let overridable: HashSet<&str> = g
            .input
            .iter()
            .map(|v| v.name.as_str())
            .filter(|n| !fixed.contains_key(*n))
            .collect();
        let mut known = Known {
            initializers: g
                .initializer
                .iter()
                .filter(|t| !overridable.contains(t.name.as_str()))
                .map(|t| (t.name.as_str(), t))
                .collect(),
            computed: fixed,
            aliases: HashMap::new(),
        };
        let graph_outputs: HashSet<&str> = g.output.iter().map(|v| v.name.as_str()).collect();
        // Folding a node that writes a graph output would leave the output
        // as a bare initializer (or an Identity that folds again next round);
        // such nodes stay, and their inputs fold.
        let writes_output =
            |n: &NodeProto| n.output.iter().any(|o| graph_outputs.contains(o.as_str()));
        let mut removed = HashSet::new();

        for (i, n) in g.node.iter().enumerate() {
            if writes_output(n) {
                continue;
            }
            if let Some(t) = constant_value(n) {
                known.computed.insert(t.name.clone(), t);
                removed.insert(i);
            }
        }

        for (i, out) in self.fold_shapes(model, g, &known, &removed)? {
            if !writes_output(&g.node[i]) {
                known.computed.insert(out.name.clone(), out);
                removed.insert(i);
            }
        }

        let key = |n: &NodeProto| n.output.first().cloned().unwrap_or_default();
        loop {
            let ready = |i: &usize| {
                let n = &g.node[*i];
                !removed.contains(i)
                    && foldable(n)
                    && !writes_output(n)
                    && !failed.contains(&key(n))
                    && n.input.iter().all(|x| x.is_empty() || known.contains(x))
            };
            let wave: Vec<usize> = (0..g.node.len()).filter(ready).collect();
            if wave.is_empty() {
                break;
            }
            // An Identity of a known value folds to its source: consumers
            // read the source, and shared weights are not copied.
            let (copies, wave): (Vec<usize>, Vec<usize>) = wave.into_iter().partition(|&i| {
                let n = &g.node[i];
                n.op_type == "Identity"
                    && (n.domain.is_empty() || n.domain == "ai.onnx")
                    && n.input.len() == 1
                    && n.output.len() == 1
            });
            for i in copies {
                let n = &g.node[i];
                let src = &n.input[0];
                let root = known.aliases.get(src).unwrap_or(src).clone();
                known.aliases.insert(n.output[0].clone(), root);
                removed.insert(i);
            }
            if wave.is_empty() {
                continue;
            }
            let results = evaluate_wave(model, g, &wave, &known);
            for i in wave {
                let n = &g.node[i];
                let fits = results.get(&i).is_some_and(|outs| {
                    let in_bytes: usize = n
                        .input
                        .iter()
                        .filter_map(|x| known.get(x))
                        .map(tensor_bytes)
                        .sum();
                    outs.iter().all(|t| {
                        let b = tensor_bytes(t);
                        b <= self.max_bytes && b <= in_bytes.max(GROWTH_ALLOWANCE_BYTES)
                    })
                });
                match results.get(&i) {
                    Some(outs) if fits => {
                        for t in outs {
                            known.computed.insert(t.name.clone(), t.clone());
                        }
                        removed.insert(i);
                    }
                    _ => {
                        failed.insert(key(n));
                    }
                }
            }
        }
        Ok(Plan {
            removed,
            computed: known.computed,
            aliases: known.aliases,
        })
    }

    /// `Shape` and `Size` nodes whose input has a static shape, with their
    /// values. Shapes come from declared graph inputs and initializers, and
    /// from ONNX Runtime's inference for intermediate tensors.
    fn fold_shapes(
        &self,
        model: &ModelProto,
        g: &GraphProto,
        known: &Known<'_>,
        removed: &HashSet<usize>,
    ) -> Result<Vec<(usize, TensorProto)>> {
        let candidates: Vec<usize> = (0..g.node.len())
            .filter(|i| !removed.contains(i))
            .filter(|&i| {
                let n = &g.node[i];
                matches!(n.op_type.as_str(), "Shape" | "Size")
                    && (n.domain.is_empty() || n.domain == "ai.onnx")
                    && n.output.len() == 1
                    && n.input.len() == 1
            })
            .collect();
        if candidates.is_empty() {
            return Ok(vec![]);
        }
        let mut dims: HashMap<String, Vec<usize>> = HashMap::new();
        for v in &g.input {
            if let Some(d) = declared_dims(v).and_then(|d| {
                d.into_iter()
                    .map(|x| x.map(|v| v as usize))
                    .collect::<Option<Vec<_>>>()
            }) {
                dims.insert(v.name.clone(), d);
            }
        }
        for (name, t) in known.initializers.iter() {
            dims.insert(
                name.to_string(),
                t.dims.iter().map(|&d| d.max(0) as usize).collect(),
            );
        }
        for (name, t) in &known.computed {
            dims.insert(
                name.clone(),
                t.dims.iter().map(|&d| d.max(0) as usize).collect(),
            );
        }
        let unknown: Vec<String> = candidates
            .iter()
            .map(|&i| g.node[i].input[0].clone())
            .filter(|x| !dims.contains_key(x))
            .collect();
        if !unknown.is_empty() {
            // A model ORT cannot load still folds everything else; the
            // shapes are a bonus, not a requirement.
            match infer(model, &unknown, true) {
                Ok(info) => {
                    for (name, ti) in info {
                        if let Some(d) = ti.static_dims() {
                            dims.entry(name).or_insert(d);
                        }
                    }
                }
                Err(e) => tracing::debug!("shape inference for folding failed: {e}"),
            }
        }
        let mut out = Vec::new();
        for i in candidates {
            let n = &g.node[i];
            let Some(d) = dims.get(&n.input[0]) else {
                continue;
            };
            let value = if n.op_type == "Size" {
                Tensor {
                    shape: vec![],
                    data: TensorData::I64(vec![d.iter().product::<usize>() as i64]),
                }
            } else {
                let rank = d.len() as i64;
                let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                let start = clamp(onnx::attr_i(n, "start", 0));
                let end = clamp(attr(n, "end").map_or(rank, |a| a.i));
                let s: Vec<i64> = d
                    .get(start..end.max(start))
                    .unwrap_or(&[])
                    .iter()
                    .map(|&x| x as i64)
                    .collect();
                Tensor {
                    shape: vec![s.len()],
                    data: TensorData::I64(s),
                }
            };
            out.push((i, onnx::tensor_to_proto(&n.output[0], &value)));
        }
        Ok(out)
    }
}

fn foldable(n: &NodeProto) -> bool {
    !n.output.iter().all(String::is_empty)
        && n.op_type != "Constant"
        && !NEVER_FOLD.contains(&n.op_type.as_str())
        && !has_subgraphs(n)
}

/// Runs the wave's nodes in one ONNX Runtime session; if that fails (an
/// output type our tensors cannot carry, an op ORT cannot run on its own),
/// each node alone, so one bad node does not block the rest. Returns the
/// outputs of each node that could be evaluated.
fn evaluate_wave(
    model: &ModelProto,
    g: &GraphProto,
    wave: &[usize],
    known: &Known<'_>,
) -> HashMap<usize, Vec<TensorProto>> {
    let nodes: Vec<&NodeProto> = wave.iter().map(|&i| &g.node[i]).collect();
    if let Ok(values) = evaluate(model, &nodes, known) {
        return split_by_node(wave, &nodes, values);
    }
    let mut out = HashMap::new();
    if wave.len() > 1 {
        for (&i, n) in wave.iter().zip(&nodes) {
            match evaluate(model, &[n], known) {
                Ok(values) => out.extend(split_by_node(&[i], &[n], values)),
                Err(e) => tracing::debug!("not folding node '{}' ({}): {e}", n.name, n.op_type),
            }
        }
    }
    out
}

fn split_by_node(
    idx: &[usize],
    nodes: &[&NodeProto],
    mut values: HashMap<String, TensorProto>,
) -> HashMap<usize, Vec<TensorProto>> {
    let mut out = HashMap::new();
    for (&i, n) in idx.iter().zip(nodes) {
        let outs: Option<Vec<TensorProto>> = n
            .output
            .iter()
            .filter(|o| !o.is_empty())
            .map(|o| values.remove(o))
            .collect();
        if let Some(outs) = outs {
            out.insert(i, outs);
        }
    }
    out
}

/// Builds a model of `nodes` with their known inputs as initializers and
/// every output as a graph output, and runs it once.
fn evaluate(
    model: &ModelProto,
    nodes: &[&NodeProto],
    known: &Known<'_>,
) -> Result<HashMap<String, TensorProto>> {
    let mut initializer = Vec::new();
    let mut seen = HashSet::new();
    for x in nodes.iter().flat_map(|n| n.input.iter()) {
        if !x.is_empty() && seen.insert(x.as_str()) {
            if let Some(t) = known.get(x) {
                let mut t = t.clone();
                t.name.clone_from(x); // an alias's source has another name
                initializer.push(t);
            }
        }
    }
    let output = nodes
        .iter()
        .flat_map(|n| n.output.iter())
        .filter(|o| !o.is_empty())
        .map(|o| ValueInfoProto {
            name: o.clone(),
            ..Default::default()
        })
        .collect();
    let probe = ModelProto {
        ir_version: model.ir_version.max(4),
        opset_import: model.opset_import.clone(),
        functions: model.functions.clone(),
        graph: Some(GraphProto {
            name: "constant_fold".into(),
            node: nodes.iter().map(|&n| n.clone()).collect(),
            initializer,
            output,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut engine = Engine::from_bytes(
        &onnx::to_bytes(&probe),
        &SessionSettings::new(GraphLevel::Disable, 1),
    )?;
    Ok(engine
        .run(&[])?
        .into_iter()
        .map(|(name, t)| {
            let p = onnx::tensor_to_proto(&name, &t);
            (name, p)
        })
        .collect())
}

/// Drops the folded nodes and adds, as initializers, the computed tensors
/// that something left in the model still reads. Returns how many were added.
fn apply(g: &mut GraphProto, plan: Plan, ctx: &PassContext) -> usize {
    let Plan {
        removed,
        mut computed,
        aliases,
    } = plan;
    let mut i = 0;
    g.node.retain(|_| {
        let keep = !removed.contains(&i);
        i += 1;
        keep
    });
    for n in &mut g.node {
        rename_in_node(n, &aliases);
    }
    let mut needed: HashSet<String> = g.output.iter().map(|v| v.name.clone()).collect();
    for n in &g.node {
        needed.extend(n.input.iter().filter(|x| !x.is_empty()).cloned());
        needed.extend(node_outer_refs(n));
    }
    let existing: HashSet<String> = g.initializer.iter().map(|t| t.name.clone()).collect();
    let graph_inputs: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    let mut names: Vec<String> = computed
        .keys()
        .filter(|k| {
            needed.contains(*k)
                && !existing.contains(*k)
                // Fixed inputs stay graph inputs: serving still accepts them.
                && !(ctx.fixed_inputs.contains_key(*k) && graph_inputs.contains(k.as_str()))
        })
        .cloned()
        .collect();
    names.sort();
    let added = names.len();
    for name in names {
        if let Some(t) = computed.remove(&name) {
            g.initializer.push(t);
        }
    }
    added
}
