//! The structural checks every pass relies on, run before it touches a
//! model: a graph exists, every tensor a node reads is defined somewhere in
//! scope, and no tensor has two producers. A model that fails them is
//! reported as an error naming the node, instead of a pass silently
//! producing something ONNX Runtime rejects later.

use std::collections::HashSet;

use crate::error::{OptimizerError, Result};
use crate::onnx::{GraphProto, ModelProto};

use super::names::{defined_names, subgraphs};

pub(crate) fn graph_of(model: &ModelProto) -> Result<&GraphProto> {
    model
        .graph
        .as_ref()
        .ok_or_else(|| OptimizerError::Config("the model has no graph".into()))
}

pub(crate) fn graph_of_mut(model: &mut ModelProto) -> Result<&mut GraphProto> {
    model
        .graph
        .as_mut()
        .ok_or_else(|| OptimizerError::Config("the model has no graph".into()))
}

/// Checks `model`'s graph and all its subgraphs; see the module comment.
pub(crate) fn check_model(model: &ModelProto) -> Result<()> {
    check_graph(graph_of(model)?, &HashSet::new())
}

fn check_graph(g: &GraphProto, outer: &HashSet<&str>) -> Result<()> {
    let mut produced = HashSet::new();
    for n in &g.node {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if !produced.insert(o.as_str()) {
                return Err(OptimizerError::Config(format!(
                    "graph '{}': tensor '{o}' is produced by more than one node (the second is '{}', {})",
                    g.name, n.name, n.op_type
                )));
            }
        }
    }
    let mut scope: HashSet<&str> = outer.clone();
    scope.extend(defined_names(g));
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            if !scope.contains(i.as_str()) {
                return Err(OptimizerError::Config(format!(
                    "graph '{}': node '{}' ({}) reads '{i}', which no node, initializer or input defines",
                    g.name, n.name, n.op_type
                )));
            }
        }
        for sub in subgraphs(n) {
            check_graph(sub, &scope)?;
        }
    }
    for o in &g.output {
        if !scope.contains(o.name.as_str()) {
            return Err(OptimizerError::Config(format!(
                "graph '{}': output '{}' is not defined by any node, initializer or input",
                g.name, o.name
            )));
        }
    }
    Ok(())
}
