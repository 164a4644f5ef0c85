//! Removes what no graph output depends on: nodes, initializers and
//! value_info entries, in the main graph and in every subgraph (where the
//! subgraph's own outputs are what must be kept).

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::onnx::{GraphProto, ModelProto};

use super::names::{node_outer_refs, subgraphs_mut};
use super::validate::{check_model, graph_of_mut};
use super::{Pass, PassContext, PassReport};

pub struct DeadNodes;

#[derive(Default)]
struct Removed {
    nodes: usize,
    initializers: usize,
    value_info: usize,
}

impl Pass for DeadNodes {
    fn name(&self) -> &'static str {
        "dead_nodes"
    }

    fn run(&self, model: &mut ModelProto, _ctx: &PassContext) -> Result<PassReport> {
        check_model(model)?;
        let mut r = Removed::default();
        prune(graph_of_mut(model)?, &mut r);
        Ok(PassReport::new(
            self.name(),
            r.nodes + r.initializers + r.value_info,
            format!(
                "{} nodes, {} initializers, {} value_info entries removed",
                r.nodes, r.initializers, r.value_info
            ),
        ))
    }
}

fn prune(g: &mut GraphProto, r: &mut Removed) {
    // Inner graphs first: what they stop reading no longer keeps outer
    // tensors alive.
    for n in &mut g.node {
        for sub in subgraphs_mut(n) {
            prune(sub, r);
        }
    }
    let producer: HashMap<&str, usize> = g
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
    let mut live = vec![false; g.node.len()];
    let mut used: HashSet<String> = g.output.iter().map(|v| v.name.clone()).collect();
    let mut work: Vec<String> = used.iter().cloned().collect();
    while let Some(name) = work.pop() {
        let Some(&i) = producer.get(name.as_str()) else {
            continue;
        };
        if live[i] {
            continue;
        }
        live[i] = true;
        let n = &g.node[i];
        let reads = n
            .input
            .iter()
            .filter(|x| !x.is_empty())
            .cloned()
            .chain(node_outer_refs(n));
        for x in reads {
            if used.insert(x.clone()) {
                work.push(x);
            }
        }
    }
    let before = g.node.len();
    let mut i = 0;
    g.node.retain(|_| {
        let keep = live[i];
        i += 1;
        keep
    });
    r.nodes += before - g.node.len();

    // Initializers that double as graph inputs are part of the signature
    // (overridable defaults); they stay.
    let inputs: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    let before = g.initializer.len();
    g.initializer
        .retain(|t| used.contains(&t.name) || inputs.contains(t.name.as_str()));
    r.initializers += before - g.initializer.len();
    let before = g.sparse_initializer.len();
    g.sparse_initializer.retain(|s| {
        s.values
            .as_ref()
            .is_none_or(|v| used.contains(&v.name) || inputs.contains(v.name.as_str()))
    });
    r.initializers += before - g.sparse_initializer.len();

    let produced: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter())
        .map(String::as_str)
        .collect();
    let before = g.value_info.len();
    g.value_info
        .retain(|v| produced.contains(v.name.as_str()) || used.contains(&v.name));
    r.value_info += before - g.value_info.len();
}
