//! Declares the deploy's concrete input shapes on the graph inputs, so that
//! shape inference (and with it `Shape`-dependent folding) sees static dims.

use std::collections::HashMap;

use crate::error::{OptimizerError, Result};
use crate::onnx::{
    initializer_names, DimValue, Dimension, ModelProto, TensorShapeProto, TypeValue,
};

use super::constants::{declared_dims, fmt_declared};
use super::validate::{check_model, graph_of_mut};
use super::{Pass, PassContext, PassReport};

/// Sets each graph input's dims to `ctx.input_shapes` (in the model's input
/// order, which excludes initializers listed as inputs). Symbolic or unknown
/// dims take the concrete value; a static dim must already equal it, and a
/// symbolic name shared by several inputs must get one value: anything else
/// is an error naming the input.
pub struct ShapeSpecialize;

impl Pass for ShapeSpecialize {
    fn name(&self) -> &'static str {
        "shape_specialize"
    }

    fn run(&self, model: &mut ModelProto, ctx: &PassContext) -> Result<PassReport> {
        check_model(model)?;
        let Some(shapes) = &ctx.input_shapes else {
            return Ok(PassReport::new(
                self.name(),
                0,
                "no single input-shape group given",
            ));
        };
        let g = graph_of_mut(model)?;
        let inits = initializer_names(g);
        let inputs: Vec<usize> = (0..g.input.len())
            .filter(|&i| !inits.contains(&g.input[i].name))
            .collect();
        if inputs.len() != shapes.len() {
            return Err(OptimizerError::Config(format!(
                "{} input shapes given for a model with {} inputs ({})",
                shapes.len(),
                inputs.len(),
                inputs
                    .iter()
                    .map(|&i| g.input[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        // First check everything, then write: an error leaves the model untouched.
        let mut params: HashMap<String, (usize, String)> = HashMap::new();
        for (&i, shape) in inputs.iter().zip(shapes) {
            let vi = &g.input[i];
            let conflict = |reason: String| OptimizerError::BadInput {
                name: vi.name.clone(),
                reason,
            };
            let Some(TypeValue::TensorType(tt)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
            else {
                return Err(conflict(
                    "not a tensor input, so it cannot take a shape".into(),
                ));
            };
            let Some(declared) = declared_dims(vi) else {
                continue; // no shape declared: any shape fits
            };
            if declared.len() != shape.len() {
                return Err(conflict(format!(
                    "declared shape {} has rank {}, the deploy gives {shape:?}",
                    fmt_declared(&declared),
                    declared.len()
                )));
            }
            let dims = tt.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or(&[]);
            for (axis, (d, &want)) in dims.iter().zip(shape).enumerate() {
                match &d.value {
                    Some(DimValue::DimValue(v)) if *v >= 0 && *v as usize != want => {
                        return Err(conflict(format!(
                            "declared shape {} fixes dim {axis} to {v}, the deploy gives {shape:?}",
                            fmt_declared(&declared)
                        )));
                    }
                    Some(DimValue::DimParam(p)) if !p.is_empty() => {
                        if let Some((other, first)) = params.get(p) {
                            if *other != want {
                                return Err(conflict(format!(
                                    "dim {axis} is '{p}', which input '{first}' already sets to {other}; the deploy gives {want}"
                                )));
                            }
                        } else {
                            params.insert(p.clone(), (want, vi.name.clone()));
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut changed = 0;
        for (&i, shape) in inputs.iter().zip(shapes) {
            let Some(TypeValue::TensorType(tt)) =
                g.input[i].r#type.as_mut().and_then(|t| t.value.as_mut())
            else {
                continue;
            };
            let s = tt.shape.get_or_insert_with(TensorShapeProto::default);
            if s.dim.is_empty() && !shape.is_empty() {
                s.dim = vec![Dimension::default(); shape.len()];
            }
            for (d, &want) in s.dim.iter_mut().zip(shape) {
                let want = want as i64;
                if d.value != Some(DimValue::DimValue(want)) {
                    d.value = Some(DimValue::DimValue(want));
                    changed += 1;
                }
            }
        }
        Ok(PassReport::new(
            self.name(),
            changed,
            format!("{changed} input dims made static"),
        ))
    }
}
