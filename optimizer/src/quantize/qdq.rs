//! Static INT8 in QDQ form: QuantizeLinear→DequantizeLinear pairs on
//! activations (uint8, calibrated ranges) and DequantizeLinear on int8
//! per-channel weights and int32 biases. ONNX Runtime recognizes
//! `DQ → Conv → Q` and friends and runs them as integer kernels.

use std::collections::{HashMap, HashSet};

use crate::error::{OptimizerError, Result};
use crate::onnx::{self, data_type, GraphProto, ModelProto, NodeProto, TensorProto};
use crate::tensor::{Tensor, TensorData};

use super::calibrate::Range;
use super::{quantize_weight_per_channel, u8_params};

/// Ops with a constant weight as input 1.
const WEIGHTED: &[&str] = &["Conv", "ConvTranspose", "Gemm", "MatMul"];
/// Ops ORT runs on uint8 when their activations are QDQ'd.
const ACTIVATION_OPS: &[&str] = &[
    "Add",
    "Resize",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Concat",
];
/// Activations that a following Q absorbs (ORT drops them when the range starts at 0).
const ABSORBED: &[&str] = &["Relu", "Clip"];

/// Which tensors need calibrated ranges, and which nodes will be quantized.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub activations: Vec<String>,
    pub nodes: Vec<String>,
}

/// Tensors known (or safely inferred) to be float: float graph inputs and
/// initializers, value_info entries, and outputs of ops whose first input is
/// float and that keep the element type.
pub fn float_tensors(g: &GraphProto) -> HashSet<String> {
    let mut f: HashSet<String> = HashSet::new();
    let mut not_float: HashSet<String> = HashSet::new();
    for vi in g.input.iter().chain(&g.value_info).chain(&g.output) {
        match onnx::elem_type(vi) {
            Some(data_type::FLOAT) => {
                f.insert(vi.name.clone());
            }
            Some(_) => {
                not_float.insert(vi.name.clone());
            }
            None => {}
        }
    }
    for t in &g.initializer {
        if t.data_type == data_type::FLOAT {
            f.insert(t.name.clone());
        }
    }
    const TYPE_CHANGING: &[&str] = &[
        "Shape",
        "Size",
        "ArgMax",
        "ArgMin",
        "NonZero",
        "Equal",
        "Greater",
        "Less",
        "GreaterOrEqual",
        "LessOrEqual",
        "Not",
        "And",
        "Or",
        "Xor",
        "IsNaN",
        "IsInf",
        "TopK",
        "Unique",
        "ConstantOfShape",
        "Range",
        "QuantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "If",
        "Loop",
        "Scan",
        "Constant",
    ];
    for n in &g.node {
        let first_float = n.input.first().is_some_and(|i| f.contains(i));
        let out_float = match n.op_type.as_str() {
            "Cast" => onnx::attr_i(n, "to", 0) == data_type::FLOAT as i64,
            "DequantizeLinear" => true,
            op if TYPE_CHANGING.contains(&op) => false,
            _ => first_float,
        };
        if out_float {
            for o in n.output.iter().filter(|o| !not_float.contains(*o)) {
                f.insert(o.clone());
            }
        }
    }
    f
}

pub(crate) fn weight_axis(n: &NodeProto) -> usize {
    match n.op_type.as_str() {
        "Conv" => 0,
        // [C_in, C_out / group, kh, kw]: the output channels are axis 1.
        "ConvTranspose" => 1,
        "Gemm" if onnx::attr_i(n, "transB", 0) == 1 => 0,
        _ => 1,
    }
}

/// Decides what to quantize. `keep_float` names nodes left in float (the
/// accuracy fallback).
pub fn plan(model: &ModelProto, keep_float: &HashSet<String>) -> Plan {
    let g = onnx::graph(model);
    let inits = onnx::initializer_names(g);
    let floats = float_tensors(g);
    let consumers = onnx::consumers(g);
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let is_act =
        |t: &str| !t.is_empty() && floats.contains(t) && !inits.contains(t) && !outputs.contains(t);
    // An output consumed only by a Relu/Clip is quantized after it.
    let after_absorbed = |t: &str| -> String {
        match consumers.get(t).map(Vec::as_slice) {
            Some([only]) if ABSORBED.contains(&g.node[*only].op_type.as_str()) => {
                g.node[*only].output.first().cloned().unwrap_or_default()
            }
            _ => t.to_string(),
        }
    };
    let mut acts: Vec<String> = Vec::new();
    let mut nodes = Vec::new();
    let push = |t: String, acts: &mut Vec<String>| {
        if is_act(&t) && !acts.contains(&t) {
            acts.push(t);
        }
    };
    for n in &g.node {
        if keep_float.contains(&n.name) || !n.domain.is_empty() {
            continue;
        }
        let op = n.op_type.as_str();
        if WEIGHTED.contains(&op) {
            let weight_ok = n
                .input
                .get(1)
                .and_then(|w| g.initializer.iter().find(|t| &t.name == w))
                .is_some_and(|t| {
                    t.data_type == data_type::FLOAT
                        && match op {
                            "Conv" => true,
                            // Per output channel needs one group: with more,
                            // axis 1 is a channel of each group.
                            "ConvTranspose" => onnx::attr_i(n, "group", 1) == 1,
                            _ => t.dims.len() == 2,
                        }
                });
            let input_ok = n
                .input
                .first()
                .is_some_and(|x| is_act(x) || g.input.iter().any(|i| &i.name == x));
            if !weight_ok || !input_ok {
                continue;
            }
            nodes.push(n.name.clone());
            push(n.input[0].clone(), &mut acts);
            if let Some(o) = n.output.first() {
                push(after_absorbed(o), &mut acts);
            }
        } else if ACTIVATION_OPS.contains(&op) {
            if !n
                .input
                .iter()
                .filter(|i| !inits.contains(*i) && !i.is_empty())
                .all(|i| is_act(i))
            {
                continue;
            }
            nodes.push(n.name.clone());
            for i in n.input.iter().filter(|i| !inits.contains(*i)) {
                push(i.clone(), &mut acts);
            }
            if let Some(o) = n.output.first() {
                push(after_absorbed(o), &mut acts);
            }
        }
    }
    // A float graph input feeding a quantized node is quantized too.
    Plan {
        activations: acts,
        nodes,
    }
}

/// What the static quantizer did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub quantized_nodes: usize,
    pub quantized_activations: usize,
}

fn scalar(name: &str, t: Tensor) -> TensorProto {
    onnx::tensor_to_proto(name, &t)
}

/// Builds the QDQ model. Activations without a range (not observed) stay float.
pub fn quantize(
    model: &ModelProto,
    plan: &Plan,
    ranges: &HashMap<String, Range>,
) -> Result<(ModelProto, Summary)> {
    if onnx::opset(model) < 13 {
        return Err(OptimizerError::Config(format!("static INT8 needs opset 13 or later (per-channel DequantizeLinear); the model has opset {}", onnx::opset(model))));
    }
    let mut out = model.clone();
    let g = onnx::graph_mut(&mut out);
    let mut namer = onnx::Namer::new(g);
    let quant_nodes: HashSet<&str> = plan.nodes.iter().map(String::as_str).collect();
    let mut summary = Summary::default();

    // 1. Activation Q/DQ pairs; remember each tensor's scale for biases.
    let mut act_scale: HashMap<String, f32> = HashMap::new();
    let mut dq_name: HashMap<String, String> = HashMap::new();
    let mut pairs: HashMap<String, Vec<NodeProto>> = HashMap::new();
    let mut new_inits: Vec<TensorProto> = Vec::new();
    for t in &plan.activations {
        let Some(r) = ranges.get(t) else { continue };
        let (scale, zp) = u8_params(r.min, r.max);
        let (s_name, z_name) = (
            namer.fresh(&format!("{t}_scale")),
            namer.fresh(&format!("{t}_zero_point")),
        );
        new_inits.push(scalar(
            &s_name,
            Tensor {
                shape: vec![],
                data: TensorData::F32(vec![scale]),
            },
        ));
        new_inits.push(scalar(
            &z_name,
            Tensor {
                shape: vec![],
                data: TensorData::U8(vec![zp]),
            },
        ));
        let (q, dq) = (
            namer.fresh(&format!("{t}_quantized")),
            namer.fresh(&format!("{t}_dequantized")),
        );
        pairs.insert(
            t.clone(),
            vec![
                onnx::node(
                    "QuantizeLinear",
                    &namer.fresh(&format!("{t}_QuantizeLinear")),
                    &[t, &s_name, &z_name],
                    &[&q],
                    vec![],
                ),
                onnx::node(
                    "DequantizeLinear",
                    &namer.fresh(&format!("{t}_DequantizeLinear")),
                    &[&q, &s_name, &z_name],
                    &[&dq],
                    vec![],
                ),
            ],
        );
        act_scale.insert(t.clone(), scale);
        dq_name.insert(t.clone(), dq);
        summary.quantized_activations += 1;
    }

    // 2. Weights and biases of quantized weighted nodes.
    let inits = constants_through_identity(g);
    let mut weight_nodes: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    for (idx, n) in g.node.iter_mut().enumerate() {
        if !quant_nodes.contains(n.name.as_str()) || !WEIGHTED.contains(&n.op_type.as_str()) {
            continue;
        }
        let Some(w) = n.input.get(1).and_then(|w| inits.get(w)) else {
            continue;
        };
        let Some(&sx) = n.input.first().and_then(|x| act_scale.get(x)) else {
            continue;
        };
        let wt = onnx::tensor_from_proto(w).map_err(OptimizerError::Config)?;
        let axis = weight_axis(n);
        let Some((q, scales)) = quantize_weight_per_channel(&wt, axis) else {
            continue;
        };
        let channels = scales.len();
        let base = w.name.clone();
        let (wq, ws, wz, wdq) = (
            namer.fresh(&format!("{base}_quantized")),
            namer.fresh(&format!("{base}_scale")),
            namer.fresh(&format!("{base}_zero_point")),
            namer.fresh(&format!("{base}_dequantized")),
        );
        new_inits.push(onnx::tensor_to_proto(
            &wq,
            &Tensor {
                shape: wt.shape.clone(),
                data: TensorData::I8(q),
            },
        ));
        new_inits.push(onnx::tensor_to_proto(
            &ws,
            &Tensor {
                shape: vec![channels],
                data: TensorData::F32(scales.clone()),
            },
        ));
        new_inits.push(onnx::tensor_to_proto(
            &wz,
            &Tensor {
                shape: vec![channels],
                data: TensorData::I8(vec![0; channels]),
            },
        ));
        let mut extra = vec![onnx::node(
            "DequantizeLinear",
            &namer.fresh(&format!("{base}_DequantizeLinear")),
            &[&wq, &ws, &wz],
            &[&wdq],
            vec![onnx::attr_int("axis", axis as i64)],
        )];
        n.input[1] = wdq;
        // int32 bias with scale sx * sw[c], so ORT can keep the accumulator in integers.
        let bias = n
            .input
            .get(2)
            .filter(|b| !b.is_empty())
            .and_then(|b| inits.get(b))
            .cloned();
        if let Some(b) = bias {
            let bt = onnx::tensor_from_proto(&b).map_err(OptimizerError::Config)?;
            if let TensorData::F32(bv) = &bt.data {
                if bv.len() == channels {
                    let bscale: Vec<f32> = scales.iter().map(|s| s * sx).collect();
                    let bq: Vec<i32> = bv
                        .iter()
                        .zip(&bscale)
                        .map(|(v, s)| {
                            (v / s).round().clamp(i32::MIN as f32, i32::MAX as f32) as i32
                        })
                        .collect();
                    let (bqn, bsn, bzn, bdq) = (
                        namer.fresh(&format!("{}_quantized", b.name)),
                        namer.fresh(&format!("{}_scale", b.name)),
                        namer.fresh(&format!("{}_zero_point", b.name)),
                        namer.fresh(&format!("{}_dequantized", b.name)),
                    );
                    new_inits.push(onnx::tensor_to_proto(
                        &bqn,
                        &Tensor {
                            shape: vec![channels],
                            data: TensorData::I32(bq),
                        },
                    ));
                    new_inits.push(onnx::tensor_to_proto(
                        &bsn,
                        &Tensor {
                            shape: vec![channels],
                            data: TensorData::F32(bscale),
                        },
                    ));
                    new_inits.push(onnx::tensor_to_proto(
                        &bzn,
                        &Tensor {
                            shape: vec![channels],
                            data: TensorData::I32(vec![0; channels]),
                        },
                    ));
                    extra.push(onnx::node(
                        "DequantizeLinear",
                        &namer.fresh(&format!("{}_DequantizeLinear", b.name)),
                        &[&bqn, &bsn, &bzn],
                        &[&bdq],
                        vec![onnx::attr_int("axis", 0)],
                    ));
                    n.input[2] = bdq;
                }
            }
        }
        weight_nodes.insert(idx, extra);
        summary.quantized_nodes += 1;
    }
    // Activation-only ops (Add, pools, Concat) run quantized once their inputs are.
    summary.quantized_nodes += g
        .node
        .iter()
        .filter(|n| {
            quant_nodes.contains(n.name.as_str()) && !WEIGHTED.contains(&n.op_type.as_str())
        })
        .count();

    // 3. Rewire consumers of each quantized activation to its DQ output, and
    //    lay the nodes out in topological order.
    for n in g.node.iter_mut() {
        for i in n.input.iter_mut() {
            if let Some(dq) = dq_name.get(i.as_str()) {
                *i = dq.clone();
            }
        }
    }
    let old = std::mem::take(&mut g.node);
    let mut nodes = Vec::with_capacity(old.len() * 2);
    for input in g.input.iter() {
        if let Some(p) = pairs.remove(&input.name) {
            nodes.extend(p);
        }
    }
    for (idx, n) in old.into_iter().enumerate() {
        if let Some(extra) = weight_nodes.remove(&idx) {
            nodes.extend(extra);
        }
        let outs = n.output.clone();
        nodes.push(n);
        for o in outs {
            if let Some(p) = pairs.remove(&o) {
                nodes.extend(p);
            }
        }
    }
    g.node = nodes;
    g.initializer.extend(new_inits);
    remove_unused_initializers(g);
    Ok((out, summary))
}

/// Drops initializers no node (or subgraph) reads any more.
pub fn remove_unused_initializers(g: &mut GraphProto) {
    let used: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(g.output.iter().map(|o| o.name.clone()))
        .collect();
    let has_subgraphs = g.node.iter().any(|n| {
        n.attribute
            .iter()
            .any(|a| a.g.is_some() || !a.graphs.is_empty())
    });
    if has_subgraphs {
        // Subgraphs may read outer initializers by name; leave them all.
        return;
    }
    g.initializer.retain(|t| used.contains(&t.name));
}

/// Initializers by name, plus the outputs of Identity nodes that pass one
/// through: exporters often route a shared constant that way (the zoo's
/// ResNet does it for every conv bias).
pub(crate) fn constants_through_identity(g: &GraphProto) -> HashMap<String, TensorProto> {
    let mut consts: HashMap<String, TensorProto> = g
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    for n in g
        .node
        .iter()
        .filter(|n| n.op_type == "Identity" && n.domain.is_empty())
    {
        if let (Some(src), Some(out)) = (
            n.input.first().and_then(|i| consts.get(i)).cloned(),
            n.output.first(),
        ) {
            consts.insert(out.clone(), src);
        }
    }
    consts
}
