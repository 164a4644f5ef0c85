//! Op mappings, grouped by kind. Each converter gets the node and its
//! converted inputs and returns one value per TensorFlow output.

mod elementwise;
mod nn;
mod reduce;
mod shape;

use super::import::{Ctx, Node, Shape, V};
use super::konst;

/// Every op [`convert`] knows (Placeholder is handled by the graph walk).
pub(crate) const SUPPORTED: &[&str] = &[
    // graph plumbing
    "Const",
    "Identity",
    "IdentityN",
    "StopGradient",
    "Snapshot",
    "PreventGradient",
    "PlaceholderWithDefault",
    "NoOp",
    // elementwise
    "Relu",
    "Relu6",
    "Elu",
    "Selu",
    "LeakyRelu",
    "Softplus",
    "Softsign",
    "Tanh",
    "Sigmoid",
    "Exp",
    "Log",
    "Sqrt",
    "Rsqrt",
    "Reciprocal",
    "Inv",
    "Square",
    "Neg",
    "Abs",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Erf",
    "Sin",
    "Cos",
    "Add",
    "AddV2",
    "AddN",
    "Sub",
    "Mul",
    "RealDiv",
    "Div",
    "FloorDiv",
    "Maximum",
    "Minimum",
    "Pow",
    "SquaredDifference",
    "Less",
    "LessEqual",
    "Greater",
    "GreaterEqual",
    "Equal",
    "NotEqual",
    "LogicalAnd",
    "LogicalOr",
    "LogicalNot",
    "Cast",
    "Select",
    "SelectV2",
    // neural network
    "Conv2D",
    "DepthwiseConv2dNative",
    "BiasAdd",
    "MaxPool",
    "AvgPool",
    "FusedBatchNorm",
    "FusedBatchNormV2",
    "FusedBatchNormV3",
    "MatMul",
    "BatchMatMul",
    "BatchMatMulV2",
    "BatchMatMulV3",
    "Softmax",
    "LogSoftmax",
    // reductions
    "Mean",
    "Sum",
    "Max",
    "Min",
    "Prod",
    "All",
    "Any",
    "ArgMax",
    "ArgMin",
    // shapes and indexing
    "Reshape",
    "ExpandDims",
    "Squeeze",
    "Transpose",
    "ConcatV2",
    "Pack",
    "Unpack",
    "Split",
    "SplitV",
    "Tile",
    "StridedSlice",
    "Slice",
    "Shape",
    "Size",
    "Rank",
    "Fill",
    "ZerosLike",
    "OnesLike",
    "Range",
    "GatherV2",
    "Gather",
    "Pad",
    "PadV2",
    "MirrorPad",
    "OneHot",
];

pub(crate) fn is_supported(op: &str) -> bool {
    SUPPORTED.contains(&op)
}

/// Converts one node; errors say what about the node is not supported.
pub(crate) fn convert(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let op = n.def.op.as_str();
    match op {
        "Const" => {
            let Some(super::proto::attr_value::Value::Tensor(t)) = n.attr("value") else {
                return Err("no 'value' tensor attribute".into());
            };
            // Size checked against the per-constant ceiling and the graph's
            // total before a byte of it is allocated.
            cx.afford(konst::layout(t)?.bytes)?;
            let t = konst::from_proto(t)?;
            Ok(vec![cx.add_const(t, &n.out(0))])
        }
        // Pure aliases: the value passes through unchanged.
        "Identity" | "StopGradient" | "Snapshot" | "PreventGradient" | "PlaceholderWithDefault" => {
            Ok(vec![n.input(0)?])
        }
        "IdentityN" => Ok(n.inputs.clone()),
        "NoOp" => Ok(vec![]),
        _ => elementwise::convert(cx, n)
            .or_else(|| nn::convert(cx, n))
            .or_else(|| reduce::convert(cx, n))
            .or_else(|| shape::convert(cx, n))
            .unwrap_or_else(|| Err("op not supported".into())),
    }
}

// ------------------------------------------------------------- shared helpers

/// The broadcast of two static shapes (numpy rules), as far as it is known.
pub(crate) fn broadcast(a: &Shape, b: &Shape) -> Shape {
    let (a, b) = (a.as_ref()?, b.as_ref()?);
    let rank = a.len().max(b.len());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            Some(1)
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            Some(1)
        };
        out.push(match (da, db) {
            (Some(1), d) | (d, Some(1)) => d,
            (Some(x), Some(y)) if x == y => Some(x),
            (Some(x), None) | (None, Some(x)) => Some(x),
            _ => None,
        });
    }
    Some(out)
}

/// The product of sizes, or None when it overflows (sizes come from the
/// user's graph).
pub(crate) fn product(v: &[i64]) -> Option<i64> {
    v.iter().try_fold(1i64, |a, &d| a.checked_mul(d))
}

/// A constant integer argument (axes, shapes, permutations), or an error
/// saying which argument must be constant.
pub(crate) fn const_ints(cx: &Ctx, v: V, what: &str) -> Result<Vec<i64>, String> {
    if let Some(t) = cx.konst(v).filter(|t| t.numel() > konst::MAX_INT_ARG) {
        return Err(format!(
            "{what} holds {} values; an argument of more than {} is not plausible",
            t.numel(),
            konst::MAX_INT_ARG
        ));
    }
    cx.konst(v)
        .and_then(konst::ints)
        .ok_or_else(|| format!("{what} must be a constant integer tensor in a frozen graph"))
}

/// A constant scalar integer argument.
pub(crate) fn const_int(cx: &Ctx, v: V, what: &str) -> Result<i64, String> {
    let v = const_ints(cx, v, what)?;
    match v.as_slice() {
        [x] => Ok(*x),
        _ => Err(format!("{what} must hold one value, it holds {}", v.len())),
    }
}

/// A negative axis counted from the end, checked against the rank.
pub(crate) fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// An integer value as int64 for ONNX inputs that require it (shapes,
/// repeats, pads): constants convert here, others get a Cast.
pub(crate) fn as_i64(cx: &mut Ctx, n: &Node, v: V, what: &str) -> String {
    use crate::tensor::DType;
    if cx.dtype(v) == DType::I64 {
        return cx.name(v);
    }
    if let Some(vals) = cx.konst(v).and_then(konst::ints) {
        let shape = cx.konst(v).map(|t| t.shape.clone()).unwrap_or_default();
        let c = cx.add_const(konst::i64_tensor(shape, vals), &n.tmp(what));
        return cx.name(c);
    }
    let x = cx.name(v);
    let shape = cx.shape(v).clone();
    let out = cx.emit(
        "Cast",
        &[x],
        vec![crate::onnx::attr_int(
            "to",
            super::import::onnx_type(DType::I64),
        )],
        &n.tmp(what),
        DType::I64,
        shape,
    );
    cx.name(out)
}

/// A string attribute for ONNX nodes (auto_pad, mode).
pub(crate) fn attr_str(name: &str, v: &str) -> crate::onnx::AttributeProto {
    crate::onnx::AttributeProto {
        name: name.into(),
        r#type: crate::onnx::attr_type::STRING,
        s: v.as_bytes().to_vec(),
        ..Default::default()
    }
}
