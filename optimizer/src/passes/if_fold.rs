//! Inlines `If` nodes whose condition is known before serving.
//!
//! Exporters put whole networks behind `If` nodes on configuration inputs
//! (silero VAD: one branch per sample rate, nested `If`s on batch size).
//! With the condition known, the chosen branch's nodes move into the
//! enclosing graph: names that would clash there get fresh ones, branch
//! outputs become the `If`'s outputs, branch initializers move up. `If`s
//! nested in the branch become ordinary nodes of the enclosing graph and
//! are folded on a later round once their conditions are computed.

use std::collections::{HashMap, HashSet};

use crate::error::{OptimizerError, Result};
use crate::onnx::{self, GraphProto, ModelProto, NodeProto};

use super::constants::{constant_value, fixed_tensors, truth_value};
use super::names::{rename_in_graph, subgraphs_mut, NameCounts};
use super::validate::{check_model, graph_of_mut};
use super::{Pass, PassContext, PassReport};

/// Folds `If` nodes whose `cond` is an initializer, a `Constant` node or a
/// fixed input, in the main graph and in nested subgraphs. A condition
/// computed from constants becomes an initializer through constant folding
/// first (the [`super::cleanup`] pipeline alternates the two). Fixed inputs
/// stay graph inputs; the report names them, because the folded model is
/// only right for their fixed values.
pub struct IfFold;

impl Pass for IfFold {
    fn name(&self) -> &'static str {
        "if_fold"
    }

    fn run(&self, model: &mut ModelProto, ctx: &PassContext) -> Result<PassReport> {
        check_model(model)?;
        let g = graph_of_mut(model)?;
        let fixed = fixed_tensors(g, ctx)?;
        let mut known: HashMap<String, bool> = HashMap::new();
        for (name, t) in &fixed {
            if let Some(b) = truth_value(t) {
                known.insert(name.clone(), b);
            }
        }
        let mut names = NameCounts::of_graph(g);
        let mut taken = Taken::default();
        fold_in_graph(g, &known, &fixed_names(&fixed), &mut names, &mut taken)?;
        let mut fixed_list: Vec<String> = fixed
            .iter()
            .map(|(n, t)| match onnx::tensor_from_proto(t) {
                Ok(v) if v.numel() == 1 => format!("{n} = {}", v.data.to_f64()[0]),
                _ => n.clone(),
            })
            .collect();
        fixed_list.sort();
        let changed = taken.then + taken.otherwise;
        let mut note = format!(
            "{changed} If nodes inlined ({} then, {} else)",
            taken.then, taken.otherwise
        );
        if !fixed_list.is_empty() {
            note.push_str(&format!(
                "; fixed inputs (serving must refuse other values): {}",
                fixed_list.join(", ")
            ));
        }
        Ok(PassReport::new(self.name(), changed, note))
    }
}

#[derive(Default)]
struct Taken {
    then: usize,
    otherwise: usize,
}

fn fixed_names(fixed: &HashMap<String, onnx::TensorProto>) -> Vec<String> {
    fixed.keys().cloned().collect()
}

/// One-element constants defined directly in `g`, as truth values. Graph
/// inputs shadow initializers of the same name (older IR versions use that
/// for overridable defaults), unless they are fixed.
fn local_truths(g: &GraphProto, fixed: &[String]) -> HashMap<String, bool> {
    let overridable: Vec<&str> = g
        .input
        .iter()
        .map(|v| v.name.as_str())
        .filter(|n| !fixed.iter().any(|f| f == n))
        .collect();
    let mut out = HashMap::new();
    for t in &g.initializer {
        if !overridable.contains(&t.name.as_str()) {
            if let Some(b) = truth_value(t) {
                out.insert(t.name.clone(), b);
            }
        }
    }
    for n in &g.node {
        if let Some(b) = constant_value(n).as_ref().and_then(truth_value) {
            out.insert(n.output[0].clone(), b);
        }
    }
    out
}

fn fold_in_graph(
    g: &mut GraphProto,
    outer: &HashMap<String, bool>,
    fixed: &[String],
    names: &mut NameCounts,
    taken: &mut Taken,
) -> Result<()> {
    let mut known = outer.clone();
    known.extend(local_truths(g, fixed));
    let mut i = 0;
    while i < g.node.len() {
        let n = &g.node[i];
        let cond = n.input.first().and_then(|c| known.get(c)).copied();
        let is_if = n.op_type == "If" && (n.domain.is_empty() || n.domain == "ai.onnx");
        let Some(cond) = cond.filter(|_| is_if) else {
            i += 1;
            continue;
        };
        let if_node = g.node.remove(i);
        let inlined = inline_branch(if_node, cond, names)?;
        if cond {
            taken.then += 1;
        } else {
            taken.otherwise += 1;
        }
        for t in &inlined.initializer {
            if let Some(b) = truth_value(t) {
                known.insert(t.name.clone(), b);
            }
        }
        for n in &inlined.node {
            if let Some(b) = constant_value(n).as_ref().and_then(truth_value) {
                known.insert(n.output[0].clone(), b);
            }
        }
        // The branch's nodes take the If's place, so everything they read is
        // still defined before them; nested Ifs among them are visited next.
        g.node.splice(i..i, inlined.node);
        g.initializer.extend(inlined.initializer);
        g.sparse_initializer.extend(inlined.sparse_initializer);
        let described: HashSet<String> = g.value_info.iter().map(|v| v.name.clone()).collect();
        g.value_info.extend(
            inlined
                .value_info
                .into_iter()
                .filter(|v| !described.contains(&v.name)),
        );
    }
    // Subgraphs see this graph's constants; fixed inputs only exist at the
    // top level, where they are already in `known`.
    for n in &mut g.node {
        for sub in subgraphs_mut(n) {
            fold_in_graph(sub, &known, &[], names, taken)?;
        }
    }
    Ok(())
}

/// The chosen branch of `if_node`, renamed to fit the enclosing graph and
/// wired to the `If`'s output names.
fn inline_branch(if_node: NodeProto, cond: bool, names: &mut NameCounts) -> Result<GraphProto> {
    let attr_name = if cond { "then_branch" } else { "else_branch" };
    let bad =
        |reason: String| OptimizerError::Config(format!("If node '{}': {reason}", if_node.name));
    let mut branch = onnx::attr(&if_node, attr_name)
        .and_then(|a| a.g.clone())
        .ok_or_else(|| bad(format!("no '{attr_name}' graph")))?;
    if branch.output.len() != if_node.output.len() {
        return Err(bad(format!(
            "'{attr_name}' has {} outputs, the node {}",
            branch.output.len(),
            if_node.output.len()
        )));
    }
    // From here on, a name still counted is used outside this If (the
    // discarded branch no longer counts).
    names.add_node(&if_node, -1);

    let produced: HashMap<&str, usize> = branch
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            n.output
                .iter()
                .filter(|o| !o.is_empty())
                .map(move |o| (o.as_str(), i))
        })
        .collect();
    let mut map: HashMap<String, String> = HashMap::new();
    // A branch output computed by a branch node is renamed to the If's
    // output directly; anything else (an outer tensor, an initializer, an
    // output listed twice) gets an Identity.
    let mut identities = Vec::new();
    for (bo, io) in branch.output.iter().zip(&if_node.output) {
        if io.is_empty() {
            continue;
        }
        if produced.contains_key(bo.name.as_str()) && !map.contains_key(&bo.name) {
            map.insert(bo.name.clone(), io.clone());
        } else {
            identities.push((bo.name.clone(), io.clone()));
        }
    }
    let internal = produced
        .keys()
        .map(|s| s.to_string())
        .chain(branch.initializer.iter().map(|t| t.name.clone()))
        .chain(
            branch
                .sparse_initializer
                .iter()
                .filter_map(|s| s.values.as_ref().map(|v| v.name.clone())),
        )
        .collect::<Vec<_>>();
    for name in internal {
        if !map.contains_key(&name) && names.in_use(&name) {
            let fresh = names.fresh(&name);
            map.insert(name, fresh);
        }
    }
    rename_in_graph(&mut branch, &map);
    for n in &mut branch.node {
        if !n.name.is_empty() && names.in_use(&n.name) {
            n.name = names.fresh(&n.name);
        }
    }
    for (bo, io) in identities {
        let from = map.get(&bo).cloned().unwrap_or(bo);
        let node_name = names.fresh(&format!("{}_{io}", if_node.name));
        branch
            .node
            .push(onnx::node("Identity", &node_name, &[&from], &[&io], vec![]));
    }
    // What moves into the enclosing graph now counts there.
    for n in &branch.node {
        names.add_node(n, 1);
    }
    for t in &branch.initializer {
        names.add_name(&t.name, 1);
    }
    Ok(GraphProto {
        node: branch.node,
        initializer: branch.initializer,
        sparse_initializer: branch.sparse_initializer,
        value_info: branch.value_info,
        ..Default::default()
    })
}
