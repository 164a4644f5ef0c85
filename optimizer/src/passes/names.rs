//! Tensor names across a graph and its subgraphs: walking subgraphs, finding
//! what a subgraph reads from enclosing scopes, renaming, and handing out
//! fresh names.
//!
//! ONNX forbids a subgraph from redefining a name visible from an enclosing
//! scope, so a name means the same tensor everywhere in a model. That makes
//! renaming a plain substitution over the whole subtree, and it is why fresh
//! names must avoid every name in the model, not only the top-level graph's
//! (the reason this module has its own name set instead of `onnx::Namer`).

use std::collections::{HashMap, HashSet};

use crate::onnx::{GraphProto, NodeProto};

/// The graphs held by a node's attributes (`If` branches, `Loop`/`Scan` bodies).
pub(crate) fn subgraphs(n: &NodeProto) -> impl Iterator<Item = &GraphProto> {
    n.attribute
        .iter()
        .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
}

pub(crate) fn subgraphs_mut(n: &mut NodeProto) -> impl Iterator<Item = &mut GraphProto> {
    n.attribute
        .iter_mut()
        .flat_map(|a| a.g.iter_mut().chain(a.graphs.iter_mut()))
}

pub(crate) fn has_subgraphs(n: &NodeProto) -> bool {
    subgraphs(n).next().is_some()
}

/// Names `g` defines itself: its inputs, initializers and node outputs.
pub(crate) fn defined_names(g: &GraphProto) -> HashSet<&str> {
    let mut d: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    d.extend(g.initializer.iter().map(|t| t.name.as_str()));
    d.extend(
        g.sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref().map(|v| v.name.as_str())),
    );
    d.extend(
        g.node
            .iter()
            .flat_map(|n| n.output.iter())
            .filter(|o| !o.is_empty())
            .map(String::as_str),
    );
    d
}

/// Names `g` (or any graph nested in it) reads without defining them: the
/// values it captures from enclosing scopes.
pub(crate) fn outer_refs(g: &GraphProto) -> HashSet<String> {
    let defined = defined_names(g);
    let mut refs = HashSet::new();
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(i.as_str()) {
                refs.insert(i.clone());
            }
        }
        for sub in subgraphs(n) {
            refs.extend(
                outer_refs(sub)
                    .into_iter()
                    .filter(|r| !defined.contains(r.as_str())),
            );
        }
    }
    refs.extend(
        g.output
            .iter()
            .filter(|o| !defined.contains(o.name.as_str()))
            .map(|o| o.name.clone()),
    );
    refs
}

/// Outer-scope names read by the subgraphs of `n`.
pub(crate) fn node_outer_refs(n: &NodeProto) -> HashSet<String> {
    subgraphs(n).flat_map(outer_refs).collect()
}

fn rename(s: &mut String, map: &HashMap<String, String>) {
    if let Some(new) = map.get(s.as_str()) {
        s.clone_from(new);
    }
}

/// Renames tensors in `n` and everything nested in it.
pub(crate) fn rename_in_node(n: &mut NodeProto, map: &HashMap<String, String>) {
    n.input.iter_mut().for_each(|s| rename(s, map));
    n.output.iter_mut().for_each(|s| rename(s, map));
    for sub in subgraphs_mut(n) {
        rename_in_graph(sub, map);
    }
}

/// Renames tensors everywhere in `g`: node inputs and outputs, initializers,
/// graph inputs, outputs and value_info, recursively.
pub(crate) fn rename_in_graph(g: &mut GraphProto, map: &HashMap<String, String>) {
    if map.is_empty() {
        return;
    }
    for n in &mut g.node {
        rename_in_node(n, map);
    }
    g.initializer
        .iter_mut()
        .for_each(|t| rename(&mut t.name, map));
    for s in &mut g.sparse_initializer {
        if let Some(v) = s.values.as_mut() {
            rename(&mut v.name, map);
        }
    }
    for v in g
        .input
        .iter_mut()
        .chain(g.output.iter_mut())
        .chain(g.value_info.iter_mut())
    {
        rename(&mut v.name, map);
    }
}

/// How often each name occurs in a model (tensor and node names alike), so
/// a pass can tell whether a name is in use outside the part it is moving,
/// and hand out names that occur nowhere.
#[derive(Default)]
pub(crate) struct NameCounts {
    counts: HashMap<String, i64>,
}

impl NameCounts {
    pub fn of_graph(g: &GraphProto) -> NameCounts {
        let mut c = NameCounts::default();
        c.add_graph(g, 1);
        c
    }

    pub fn add_name(&mut self, name: &str, by: i64) {
        self.bump(name, by);
    }

    fn bump(&mut self, name: &str, by: i64) {
        if name.is_empty() {
            return;
        }
        *self.counts.entry(name.to_string()).or_insert(0) += by;
    }

    /// Adds (`by` = 1) or removes (`by` = -1) the names of a node and its subgraphs.
    pub fn add_node(&mut self, n: &NodeProto, by: i64) {
        self.bump(&n.name, by);
        for s in n.input.iter().chain(n.output.iter()) {
            self.bump(s, by);
        }
        for sub in subgraphs(n) {
            self.add_graph(sub, by);
        }
    }

    pub fn add_graph(&mut self, g: &GraphProto, by: i64) {
        for n in &g.node {
            self.add_node(n, by);
        }
        for t in &g.initializer {
            self.bump(&t.name, by);
        }
        for s in &g.sparse_initializer {
            if let Some(v) = &s.values {
                self.bump(&v.name, by);
            }
        }
        for v in g.input.iter().chain(g.output.iter()) {
            self.bump(&v.name, by);
        }
    }

    pub fn in_use(&self, name: &str) -> bool {
        self.counts.get(name).is_some_and(|&c| c > 0)
    }

    /// A name derived from `base` that occurs nowhere; it counts as used from now on.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.counts.contains_key(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.counts.insert(name.clone(), 1);
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{self, attr_type, AttributeProto};

    fn if_node(then: GraphProto) -> NodeProto {
        let mut n = onnx::node("If", "if", &["c"], &["y"], vec![]);
        n.attribute.push(AttributeProto {
            name: "then_branch".into(),
            r#type: attr_type::GRAPH,
            g: Some(then),
            ..Default::default()
        });
        n
    }

    #[test]
    fn outer_refs_are_reads_not_defined_inside() {
        let inner = GraphProto {
            node: vec![
                onnx::node("Relu", "r", &["x"], &["t"], vec![]),
                onnx::node("Add", "a", &["t", "w"], &["u"], vec![]),
            ],
            output: vec![onnx::value_info("u", 1, &[])],
            ..Default::default()
        };
        let refs = outer_refs(&inner);
        assert_eq!(
            refs,
            HashSet::from(["x".to_string(), "w".to_string()]),
            "{refs:?}"
        );
        let outer = GraphProto {
            node: vec![
                onnx::node("Neg", "n", &["a"], &["x"], vec![]),
                if_node(inner),
            ],
            ..Default::default()
        };
        // `x` is defined by the outer graph; `w` and `a` and `c` come from further out.
        assert_eq!(
            outer_refs(&outer),
            HashSet::from(["a".to_string(), "w".to_string(), "c".to_string()])
        );
    }

    #[test]
    fn renaming_reaches_nested_graphs_and_fresh_names_avoid_them() {
        let inner = GraphProto {
            node: vec![onnx::node("Relu", "r", &["x"], &["t"], vec![])],
            output: vec![onnx::value_info("t", 1, &[])],
            ..Default::default()
        };
        let mut g = GraphProto {
            node: vec![
                onnx::node("Neg", "n", &["a"], &["x"], vec![]),
                if_node(inner),
            ],
            ..Default::default()
        };
        let mut names = NameCounts::of_graph(&g);
        assert!(names.in_use("t"));
        assert_eq!(names.fresh("t"), "t_1");
        assert_eq!(names.fresh("t"), "t_2");
        rename_in_graph(
            &mut g,
            &HashMap::from([("x".to_string(), "x2".to_string())]),
        );
        let sub = subgraphs(&g.node[1]).next().unwrap();
        assert_eq!(sub.node[0].input, vec!["x2"]);
        assert_eq!(g.node[0].output, vec!["x2"]);
    }
}
