//! Named graph passes on our ONNX IR. Each pass rewrites a model in place
//! and reports how many things it changed, so a deploy log (and a test) can
//! tell a pass that did its job from one that found nothing to do.
//!
//! [`cleanup`] runs the clean-up pipeline to a fixpoint: specialize input
//! shapes, inline `If` nodes whose condition is known, fold constants
//! (with ONNX Runtime as the evaluator, so folded values are exactly what
//! serving would have computed), and drop what no output needs. [`to_fp16`]
//! is a separate conversion the caller measures on its own.

mod constant_fold;
mod constants;
mod dead_nodes;
mod fp16;
mod if_fold;
mod infer;
mod names;
mod opset;
mod shape_specialize;
mod validate;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::onnx::ModelProto;
use crate::tensor::Tensor;

pub use constant_fold::ConstantFold;
#[cfg(any(test, feature = "internals"))]
pub use constant_fold::DEFAULT_MAX_FOLD_BYTES;
pub use dead_nodes::DeadNodes;
pub use fp16::{to_fp16, DEFAULT_KEEP_FP32};
pub use if_fold::IfFold;
pub use opset::{OpsetUpgrade, TARGET as OPSET_TARGET};
pub use shape_specialize::ShapeSpecialize;

/// What a deploy knows about its inputs before serving.
#[derive(Debug, Clone, Default)]
pub struct PassContext {
    /// Inputs whose value is fixed for this deploy (e.g. silero's `sr` = 16000),
    /// from input_ranges with lo == hi or from test data holding one value in every sample.
    pub fixed_inputs: HashMap<String, Tensor>,
    /// Concrete shapes per input when input_shapes has exactly one group (model input order).
    pub input_shapes: Option<Vec<Vec<usize>>>,
}

/// What one pass did: `changed` counts the pass's unit of work (dims set,
/// `If` nodes inlined, nodes folded, things removed); `note` says what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassReport {
    pub name: String,
    pub changed: usize,
    pub note: String,
}

impl PassReport {
    pub fn new(name: &str, changed: usize, note: impl Into<String>) -> Self {
        PassReport {
            name: name.to_string(),
            changed,
            note: note.into(),
        }
    }
}

pub trait Pass {
    fn name(&self) -> &'static str;
    fn run(&self, model: &mut ModelProto, ctx: &PassContext) -> Result<PassReport>;
}

/// Rounds of the pipeline before [`cleanup`] stops even if something still
/// changes. Each round can only uncover work nested one level deeper (an
/// `If` inside an inlined branch, a `Shape` of a tensor whose shape became
/// static), so real models settle in a handful; the bound keeps a
/// pathological model from looping.
pub const MAX_CLEANUP_ROUNDS: usize = 32;

/// Runs the clean-up pipeline to a fixpoint (bounded): specialize shapes, fold constant Ifs, constant-fold, remove dead nodes.
/// Returns one report per pass, summed over the rounds; the note lists what
/// each round with changes did.
pub fn cleanup(model: &mut ModelProto, ctx: &PassContext) -> Result<Vec<PassReport>> {
    let fold = ConstantFold::default();
    let pipeline: [&dyn Pass; 4] = [&ShapeSpecialize, &IfFold, &fold, &DeadNodes];
    let mut totals: Vec<PassReport> = pipeline
        .iter()
        .map(|p| PassReport::new(p.name(), 0, ""))
        .collect();
    let mut notes: Vec<Notes> = pipeline.iter().map(|_| Notes::default()).collect();
    let mut settled = false;
    for round in 1..=MAX_CLEANUP_ROUNDS {
        settled = true;
        for ((pass, total), notes) in pipeline.iter().zip(&mut totals).zip(&mut notes) {
            let r = pass.run(model, ctx)?;
            if round == 1 {
                notes.first_round = r.note.clone();
            }
            if r.changed > 0 {
                settled = false;
                total.changed += r.changed;
                notes.add(round, &r.note);
            }
        }
        if settled {
            break;
        }
    }
    if !settled {
        tracing::warn!(
            "cleanup stopped after {MAX_CLEANUP_ROUNDS} rounds with changes still coming"
        );
    }
    for (total, notes) in totals.iter_mut().zip(notes) {
        total.note = notes.finish();
    }
    Ok(totals)
}

/// A pass's notes over the rounds: "round k: <what it did>" per round with
/// changes, with clauses every round repeats (the fixed inputs) said once.
#[derive(Default)]
struct Notes {
    first_round: String,
    segments: Vec<String>,
}

impl Notes {
    fn add(&mut self, round: usize, note: &str) {
        let mut parts = note.split("; ");
        if let Some(head) = parts.next() {
            self.segments.push(format!("round {round}: {head}"));
        }
        for p in parts {
            if !self.segments.iter().any(|s| s == p) {
                self.segments.push(p.to_string());
            }
        }
    }

    fn finish(self) -> String {
        if self.segments.is_empty() {
            self.first_round
        } else {
            self.segments.join("; ")
        }
    }
}

/// How many nodes of type `op` the model holds, subgraphs included.
#[cfg(any(test, feature = "internals"))]
pub fn count_op(model: &ModelProto, op: &str) -> usize {
    fn count(g: &crate::onnx::GraphProto, op: &str) -> usize {
        g.node
            .iter()
            .map(|n| {
                usize::from(n.op_type == op)
                    + names::subgraphs(n).map(|s| count(s, op)).sum::<usize>()
            })
            .sum()
    }
    model.graph.as_ref().map_or(0, |g| count(g, op))
}

/// How many nodes the model holds, subgraphs included.
#[cfg(any(test, feature = "internals"))]
pub fn count_nodes(model: &ModelProto) -> usize {
    fn count(g: &crate::onnx::GraphProto) -> usize {
        g.node
            .iter()
            .map(|n| 1 + names::subgraphs(n).map(count).sum::<usize>())
            .sum()
    }
    model.graph.as_ref().map_or(0, count)
}
