//! Bias correction (`weight_adjustment` for static INT8). Rounding weights to
//! int8 shifts each output channel's mean by `(W - W_q) · E[x]`; adding that
//! to the bias cancels it. `E[x]` is each input channel's mean in the float
//! model over the calibration samples (streamed), so only the weights' own
//! error is corrected — upstream layers correct theirs.

use crate::data::Sample;
use crate::error::{OptimizerError, Result};
use crate::onnx::{self, ModelProto};
use crate::tensor::{Tensor, TensorData};

use super::calibrate::channel_means;
use super::qdq::{constants_through_identity, weight_axis, Plan};
use super::quantize_weight_per_channel;

/// The float model with corrected biases, and how many layers were corrected.
pub fn correct(
    model: &ModelProto,
    plan: &Plan,
    samples: &[Sample],
    threads: usize,
) -> Result<(ModelProto, usize)> {
    let g = onnx::graph(model);
    let consts = constants_through_identity(g);
    struct Target {
        node: usize,
        weight: Tensor,
        bias: Vec<f32>,
    }
    let mut targets = Vec::new();
    for (i, n) in g.node.iter().enumerate() {
        if !(n.op_type == "Conv" || n.op_type == "Gemm") || !plan.nodes.contains(&n.name) {
            continue;
        }
        let get = |k: usize| {
            n.input
                .get(k)
                .filter(|b| !b.is_empty())
                .and_then(|b| consts.get(b))
                .and_then(|t| onnx::tensor_from_proto(t).ok())
        };
        if let (
            Some(weight),
            Some(Tensor {
                data: TensorData::F32(bias),
                ..
            }),
        ) = (get(1), get(2))
        {
            targets.push(Target {
                node: i,
                weight,
                bias,
            });
        }
    }
    let inputs: Vec<String> = targets
        .iter()
        .filter_map(|t| g.node[t.node].input.first().cloned())
        .collect();
    let means = channel_means(model, &inputs, samples, threads)?;

    let mut out = model.clone();
    let og = onnx::graph_mut(&mut out);
    let mut namer = onnx::Namer::new(og);
    let mut corrected = 0;
    for t in targets {
        let node = &og.node[t.node];
        let Some(mean) = node.input.first().and_then(|x| means.get(x)) else {
            continue;
        };
        let axis = weight_axis(node);
        let TensorData::F32(w) = &t.weight.data else {
            continue;
        };
        let Some((q, scales)) = quantize_weight_per_channel(&t.weight, axis) else {
            continue;
        };
        let shape = &t.weight.shape;
        let outs = shape[axis];
        // Conv: [O, I, kh, kw]; Gemm transB: [N, K]; Gemm: [K, N].
        let (ins, inner) = if node.op_type == "Conv" {
            (shape[1], shape[2..].iter().product::<usize>())
        } else {
            (shape[1 - axis], 1)
        };
        if mean.len() != ins || t.bias.len() != outs {
            continue;
        }
        let mut delta = vec![0f64; outs];
        for (idx, (&wf, &wq)) in w.iter().zip(&q).enumerate() {
            let (o, i) = match (node.op_type.as_str(), axis) {
                ("Conv", _) => (idx / (ins * inner), (idx / inner) % ins),
                (_, 0) => (idx / ins, idx % ins),
                _ => (idx % outs, idx / outs),
            };
            let err = wf as f64 - wq as f64 * scales[o] as f64;
            delta[o] += err * mean[i];
        }
        let new_bias: Vec<f32> = t
            .bias
            .iter()
            .zip(&delta)
            .map(|(b, d)| b + *d as f32)
            .collect();
        let name = namer.fresh(&format!("{}_bias_corrected", og.node[t.node].name));
        let bt =
            Tensor::new(vec![outs], TensorData::F32(new_bias)).map_err(OptimizerError::Config)?;
        og.initializer.push(onnx::tensor_to_proto(&name, &bt));
        og.node[t.node].input[2] = name;
        corrected += 1;
    }
    Ok((out, corrected))
}
