//! Dynamic (online) INT8: MatMuls with a constant weight get int8 weights
//! (per output column, or per tensor) and quantize their activation at run
//! time. Emitted as DynamicQuantizeLinear → MatMulInteger → Cast → Mul, the
//! pattern ONNX Runtime fuses into one DynamicQuantizeMatMul kernel.

use std::collections::{HashMap, HashSet};

use crate::error::{OptimizerError, Result};
use crate::onnx::{self, data_type, ModelProto, NodeProto};
use crate::tensor::{Tensor, TensorData};

use super::qdq::{float_tensors, remove_unused_initializers};
use super::quantize_weight_per_channel;

#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub quantized_nodes: usize,
}

/// MatMul nodes a dynamic quantizer can take: float activation × 2-D float initializer.
pub fn candidates(model: &ModelProto) -> Vec<String> {
    let g = onnx::graph(model);
    let floats = float_tensors(g);
    g.node
        .iter()
        .filter(|n| n.op_type == "MatMul" && n.domain.is_empty())
        .filter(|n| n.input.first().is_some_and(|x| floats.contains(x)))
        .filter(|n| {
            n.input
                .get(1)
                .and_then(|w| g.initializer.iter().find(|t| &t.name == w))
                .is_some_and(|t| t.data_type == data_type::FLOAT && t.dims.len() == 2)
        })
        .map(|n| n.name.clone())
        .collect()
}

/// SmoothQuant-style migration factors for each activation read by a
/// candidate MatMul: `s_j = max|X_j|^α / max|W_j|^(1-α)` (α = 0.5: the square root of the ratio) over every weight that
/// reads it, so activation outliers move into the (per-channel quantized)
/// weights. Channels never seen active keep s = 1.
pub fn smooth_factors(
    model: &ModelProto,
    absmax: &HashMap<String, Vec<f32>>,
    alpha: f32,
) -> HashMap<String, Vec<f32>> {
    let g = onnx::graph(model);
    let names: HashSet<String> = candidates(model).into_iter().collect();
    let mut wmax: HashMap<String, Vec<f32>> = HashMap::new();
    for n in g.node.iter().filter(|n| names.contains(&n.name)) {
        let (Some(x), Some(w)) = (
            n.input.first(),
            n.input
                .get(1)
                .and_then(|w| g.initializer.iter().find(|t| &t.name == w)),
        ) else {
            continue;
        };
        let Ok(wt) = onnx::tensor_from_proto(w) else {
            continue;
        };
        let (TensorData::F32(v), [k, cols]) = (&wt.data, wt.shape.as_slice()) else {
            continue;
        };
        let m = wmax.entry(x.clone()).or_insert_with(|| vec![0.0; *k]);
        if m.len() != *k {
            continue;
        }
        for (i, val) in v.iter().enumerate() {
            m[i / cols] = m[i / cols].max(val.abs());
        }
    }
    wmax.into_iter()
        .filter_map(|(x, wm)| {
            let am = absmax.get(&x).filter(|a| a.len() == wm.len())?;
            let s = am
                .iter()
                .zip(&wm)
                .map(|(&a, &w)| {
                    if a > 0.0 && w > 0.0 {
                        (a.powf(alpha) / w.powf(1.0 - alpha)).clamp(1e-4, 1e4)
                    } else {
                        1.0
                    }
                })
                .collect();
            Some((x, s))
        })
        .collect()
}

/// Rewrites every candidate MatMul not in `keep_float`.
#[cfg(any(test, feature = "internals"))]
pub fn quantize(
    model: &ModelProto,
    keep_float: &HashSet<String>,
    per_channel: bool,
) -> Result<(ModelProto, Summary)> {
    quantize_smoothed(model, keep_float, per_channel, &HashMap::new())
}

/// As `quantize`, with SmoothQuant factors per activation: the activation is
/// divided by them at run time (one elementwise Mul per activation) and the
/// weight rows multiplied by them, which leaves the float result unchanged
/// but makes both easier to quantize.
pub fn quantize_smoothed(
    model: &ModelProto,
    keep_float: &HashSet<String>,
    per_channel: bool,
    smooth: &HashMap<String, Vec<f32>>,
) -> Result<(ModelProto, Summary)> {
    if onnx::opset(model) < 11 {
        return Err(OptimizerError::Config(format!(
            "dynamic INT8 needs opset 11 or later; the model has opset {}",
            onnx::opset(model)
        )));
    }
    let targets: HashSet<String> = candidates(model)
        .into_iter()
        .filter(|n| !keep_float.contains(n))
        .collect();
    let mut out = model.clone();
    let g = onnx::graph_mut(&mut out);
    let mut namer = onnx::Namer::new(g);
    let inits: HashMap<String, crate::onnx::TensorProto> = g
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    // One DynamicQuantizeLinear per activation, shared by the MatMuls reading it
    // (Q, K and V projections read the same tensor).
    let mut dql: HashMap<String, (String, String, String)> = HashMap::new();
    let mut summary = Summary::default();
    let old = std::mem::take(&mut g.node);
    let mut nodes: Vec<NodeProto> = Vec::with_capacity(old.len() + targets.len() * 4);
    let mut new_inits = Vec::new();
    for n in old {
        if !targets.contains(&n.name) {
            nodes.push(n);
            continue;
        }
        let (x, w_name, y) = (n.input[0].clone(), n.input[1].clone(), n.output[0].clone());
        let Some(w) = inits.get(&w_name) else {
            nodes.push(n);
            continue;
        };
        let mut wt = onnx::tensor_from_proto(w).map_err(OptimizerError::Config)?;
        let factors = smooth
            .get(&x)
            .filter(|f| wt.shape.first() == Some(&f.len()));
        if let (Some(f), TensorData::F32(v)) = (factors, &mut wt.data) {
            let cols = v.len() / f.len();
            for (i, val) in v.iter_mut().enumerate() {
                *val *= f[i / cols];
            }
        }
        let (q, scales) = if per_channel {
            quantize_weight_per_channel(&wt, 1)
        } else {
            // Per tensor: one scale over the whole weight.
            let flat = Tensor {
                shape: vec![1, wt.numel()],
                data: wt.data.clone(),
            };
            quantize_weight_per_channel(&flat, 0)
        }
        .ok_or_else(|| OptimizerError::Config(format!("weight '{w_name}' is not float")))?;
        let n_out = scales.len();
        let (wq, ws, wz) = (
            namer.fresh(&format!("{w_name}_quantized")),
            namer.fresh(&format!("{w_name}_scale")),
            namer.fresh(&format!("{w_name}_zero_point")),
        );
        new_inits.push(onnx::tensor_to_proto(
            &wq,
            &Tensor {
                shape: wt.shape.clone(),
                data: TensorData::I8(q),
            },
        ));
        let scale_shape = if per_channel { vec![n_out] } else { vec![] };
        new_inits.push(onnx::tensor_to_proto(
            &ws,
            &Tensor {
                shape: scale_shape.clone(),
                data: TensorData::F32(scales),
            },
        ));
        new_inits.push(onnx::tensor_to_proto(
            &wz,
            &Tensor {
                shape: scale_shape,
                data: TensorData::I8(vec![0; n_out]),
            },
        ));
        let (xq, xs, xz) = match dql.get(&x) {
            Some(v) => v.clone(),
            None => {
                let v = (
                    namer.fresh(&format!("{x}_quantized")),
                    namer.fresh(&format!("{x}_scale")),
                    namer.fresh(&format!("{x}_zero_point")),
                );
                let mut src = x.clone();
                if let Some(f) = factors {
                    let (inv, smoothed) = (
                        namer.fresh(&format!("{x}_smooth_inverse")),
                        namer.fresh(&format!("{x}_smoothed")),
                    );
                    new_inits.push(onnx::tensor_to_proto(
                        &inv,
                        &Tensor {
                            shape: vec![f.len()],
                            data: TensorData::F32(f.iter().map(|v| 1.0 / v).collect()),
                        },
                    ));
                    nodes.push(onnx::node(
                        "Mul",
                        &namer.fresh(&format!("{x}_smooth_Mul")),
                        &[&x, &inv],
                        &[&smoothed],
                        vec![],
                    ));
                    src = smoothed;
                }
                nodes.push(onnx::node(
                    "DynamicQuantizeLinear",
                    &namer.fresh(&format!("{x}_DynamicQuantizeLinear")),
                    &[&src],
                    &[&v.0, &v.1, &v.2],
                    vec![],
                ));
                dql.insert(x.clone(), v.clone());
                v
            }
        };
        let base = n.name.clone();
        let (s, yi, yf) = (
            namer.fresh(&format!("{base}_scale")),
            namer.fresh(&format!("{base}_int32")),
            namer.fresh(&format!("{base}_float")),
        );
        nodes.push(onnx::node(
            "Mul",
            &namer.fresh(&format!("{base}_scale_Mul")),
            &[&xs, &ws],
            &[&s],
            vec![],
        ));
        nodes.push(onnx::node(
            "MatMulInteger",
            &namer.fresh(&format!("{base}_MatMulInteger")),
            &[&xq, &wq, &xz, &wz],
            &[&yi],
            vec![],
        ));
        nodes.push(onnx::node(
            "Cast",
            &namer.fresh(&format!("{base}_Cast")),
            &[&yi],
            &[&yf],
            vec![onnx::attr_int("to", data_type::FLOAT as i64)],
        ));
        nodes.push(onnx::node(
            "Mul",
            &namer.fresh(&format!("{base}_output_Mul")),
            &[&yf, &s],
            &[&y],
            vec![],
        ));
        summary.quantized_nodes += 1;
    }
    g.node = nodes;
    g.initializer.extend(new_inits);
    remove_unused_initializers(g);
    Ok((out, summary))
}
