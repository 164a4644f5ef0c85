//! Elementwise ops: activations, arithmetic (numpy broadcasting in both
//! frameworks), comparisons, logic, Cast and Select.

use super::{broadcast, Ctx, Node, V};
use crate::onnx::{attr_float, attr_int};
use crate::tensor::DType;
use crate::tf::import::onnx_type;
use crate::tf::konst;

pub(super) fn convert(cx: &mut Ctx, n: &Node) -> Option<Result<Vec<V>, String>> {
    let op = n.def.op.as_str();
    // Same-named ONNX op, one input, output like the input.
    let unary = match op {
        "Relu" => Some("Relu"),
        "Tanh" => Some("Tanh"),
        "Sigmoid" => Some("Sigmoid"),
        "Exp" => Some("Exp"),
        "Log" => Some("Log"),
        "Sqrt" => Some("Sqrt"),
        "Reciprocal" | "Inv" => Some("Reciprocal"),
        "Neg" => Some("Neg"),
        "Abs" => Some("Abs"),
        "Floor" => Some("Floor"),
        "Ceil" => Some("Ceil"),
        // Both round half to even.
        "Round" => Some("Round"),
        "Sign" => Some("Sign"),
        "Erf" => Some("Erf"),
        "Sin" => Some("Sin"),
        "Cos" => Some("Cos"),
        "Softplus" => Some("Softplus"),
        "Softsign" => Some("Softsign"),
        "LogicalNot" => Some("Not"),
        _ => None,
    };
    if let Some(onnx_op) = unary {
        return Some(unary_op(cx, n, onnx_op, vec![]));
    }
    let binary = match op {
        "Add" | "AddV2" => Some("Add"),
        "Sub" => Some("Sub"),
        "Mul" => Some("Mul"),
        "RealDiv" | "Div" => Some("Div"),
        "Maximum" => Some("Max"),
        "Minimum" => Some("Min"),
        "Pow" => Some("Pow"),
        "LogicalAnd" => Some("And"),
        "LogicalOr" => Some("Or"),
        "Less" => Some("Less"),
        "LessEqual" => Some("LessOrEqual"),
        "Greater" => Some("Greater"),
        "GreaterEqual" => Some("GreaterOrEqual"),
        "Equal" => Some("Equal"),
        _ => None,
    };
    if let Some(onnx_op) = binary {
        return Some(binary_op(cx, n, onnx_op));
    }
    Some(match op {
        "Relu6" => relu6(cx, n),
        "Elu" => unary_op(cx, n, "Elu", vec![attr_float("alpha", 1.0)]),
        // TensorFlow's fixed SELU constants.
        "Selu" => unary_op(
            cx,
            n,
            "Selu",
            vec![
                attr_float("alpha", 1.673_263_2),
                attr_float("gamma", 1.050_701),
            ],
        ),
        "LeakyRelu" => n
            .attr_f("alpha", 0.2)
            .and_then(|a| unary_op(cx, n, "LeakyRelu", vec![attr_float("alpha", a)])),
        "Rsqrt" => rsqrt(cx, n),
        "Square" => square(cx, n),
        "SquaredDifference" => squared_difference(cx, n),
        "FloorDiv" => floor_div(cx, n),
        "NotEqual" => not_equal(cx, n),
        "AddN" => add_n(cx, n),
        "Cast" => cast(cx, n),
        "Select" | "SelectV2" => select(cx, n),
        _ => return None,
    })
}

fn unary_op(
    cx: &mut Ctx,
    n: &Node,
    onnx_op: &str,
    attrs: Vec<crate::onnx::AttributeProto>,
) -> Result<Vec<V>, String> {
    let x = n.input(0)?;
    let (dt, shape) = (cx.dtype(x), cx.shape(x).clone());
    let xn = cx.name(x);
    Ok(vec![cx.emit(onnx_op, &[xn], attrs, &n.out(0), dt, shape)])
}

/// Comparison ops answer bool; the rest keep the input type.
fn result_type(onnx_op: &str, input: DType) -> DType {
    match onnx_op {
        "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "Equal" | "And" | "Or" => {
            DType::Bool
        }
        _ => input,
    }
}

fn binary_op(cx: &mut Ctx, n: &Node, onnx_op: &str) -> Result<Vec<V>, String> {
    let (a, b) = (n.input(0)?, n.input(1)?);
    if cx.dtype(a) != cx.dtype(b) {
        return Err(format!(
            "operands have different types ({} and {})",
            cx.dtype(a),
            cx.dtype(b)
        ));
    }
    let dt = result_type(onnx_op, cx.dtype(a));
    let shape = broadcast(cx.shape(a), cx.shape(b));
    let (an, bn) = (cx.name(a), cx.name(b));
    Ok(vec![cx.emit(
        onnx_op,
        &[an, bn],
        vec![],
        &n.out(0),
        dt,
        shape,
    )])
}

fn relu6(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let x = n.input(0)?;
    let (dt, shape) = (cx.dtype(x), cx.shape(x).clone());
    let xn = cx.name(x);
    let lo = cx.scalar(dt, 0.0, &n.tmp("zero"));
    let hi = cx.scalar(dt, 6.0, &n.tmp("six"));
    Ok(vec![cx.emit(
        "Clip",
        &[xn, lo, hi],
        vec![],
        &n.out(0),
        dt,
        shape,
    )])
}

fn rsqrt(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let x = n.input(0)?;
    let (dt, shape) = (cx.dtype(x), cx.shape(x).clone());
    let xn = cx.name(x);
    let s = cx.emit("Sqrt", &[xn], vec![], &n.tmp("sqrt"), dt, shape.clone());
    let sn = cx.name(s);
    Ok(vec![cx.emit(
        "Reciprocal",
        &[sn],
        vec![],
        &n.out(0),
        dt,
        shape,
    )])
}

fn square(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let x = n.input(0)?;
    let (dt, shape) = (cx.dtype(x), cx.shape(x).clone());
    let xn = cx.name(x);
    Ok(vec![cx.emit(
        "Mul",
        &[xn.clone(), xn],
        vec![],
        &n.out(0),
        dt,
        shape,
    )])
}

fn squared_difference(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let (a, b) = (n.input(0)?, n.input(1)?);
    let dt = cx.dtype(a);
    let shape = broadcast(cx.shape(a), cx.shape(b));
    let (an, bn) = (cx.name(a), cx.name(b));
    let d = cx.emit("Sub", &[an, bn], vec![], &n.tmp("diff"), dt, shape.clone());
    let dn = cx.name(d);
    Ok(vec![cx.emit(
        "Mul",
        &[dn.clone(), dn],
        vec![],
        &n.out(0),
        dt,
        shape,
    )])
}

fn floor_div(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let (a, b) = (n.input(0)?, n.input(1)?);
    let dt = cx.dtype(a);
    if !dt.is_float() {
        // ONNX integer Div truncates toward zero; TensorFlow floors.
        return Err(format!(
            "FloorDiv on {dt} is not supported (only floating point)"
        ));
    }
    let shape = broadcast(cx.shape(a), cx.shape(b));
    let (an, bn) = (cx.name(a), cx.name(b));
    let d = cx.emit("Div", &[an, bn], vec![], &n.tmp("div"), dt, shape.clone());
    let dn = cx.name(d);
    Ok(vec![cx.emit("Floor", &[dn], vec![], &n.out(0), dt, shape)])
}

fn not_equal(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let (a, b) = (n.input(0)?, n.input(1)?);
    let shape = broadcast(cx.shape(a), cx.shape(b));
    let (an, bn) = (cx.name(a), cx.name(b));
    let e = cx.emit(
        "Equal",
        &[an, bn],
        vec![],
        &n.tmp("equal"),
        DType::Bool,
        shape.clone(),
    );
    let en = cx.name(e);
    Ok(vec![cx.emit(
        "Not",
        &[en],
        vec![],
        &n.out(0),
        DType::Bool,
        shape,
    )])
}

fn add_n(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let first = n.input(0)?;
    let dt = cx.dtype(first);
    let mut shape = cx.shape(first).clone();
    for &v in &n.inputs[1..] {
        shape = broadcast(&shape, cx.shape(v));
    }
    let names: Vec<String> = n.inputs.iter().map(|&v| cx.name(v)).collect();
    Ok(vec![cx.emit("Sum", &names, vec![], &n.out(0), dt, shape)])
}

fn cast(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let x = n.input(0)?;
    let to = n
        .attr_dtype("DstT")?
        .ok_or("no 'DstT' attribute says the target type")?;
    if let Some(t) = cx.konst(x) {
        cx.afford(t.numel().saturating_mul(to.size()))?;
        let c = konst::cast(t, to);
        return Ok(vec![cx.add_const(c, &n.out(0))]);
    }
    if cx.dtype(x) == to {
        return Ok(vec![x]);
    }
    let shape = cx.shape(x).clone();
    let xn = cx.name(x);
    Ok(vec![cx.emit(
        "Cast",
        &[xn],
        vec![attr_int("to", onnx_type(to))],
        &n.out(0),
        to,
        shape,
    )])
}

/// SelectV2 broadcasts like ONNX Where. TF1 Select also accepts a vector
/// condition that picks whole rows of higher-rank operands: that condition
/// is reshaped to `[N, 1, ...]` first.
fn select(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let (c, a, b) = (n.input(0)?, n.input(1)?, n.input(2)?);
    let dt = cx.dtype(a);
    let shape = broadcast(cx.shape(a), cx.shape(b));
    let mut cn = cx.name(c);
    if n.def.op == "Select" {
        let (cr, ar) = (cx.rank(c), cx.rank(a));
        match (cr, ar) {
            (Some(1), Some(r)) if r > 1 => {
                let axes: Vec<i64> = (1..r as i64).collect();
                let ax = cx.i64s(&axes, &n.tmp("row_axes"));
                let cs = cx.shape(c).clone().map(|mut s| {
                    s.extend(std::iter::repeat_n(Some(1), r - 1));
                    s
                });
                let u = cx.emit(
                    "Unsqueeze",
                    &[cn, ax],
                    vec![],
                    &n.tmp("rows"),
                    DType::Bool,
                    cs,
                );
                cn = cx.name(u);
            }
            (Some(cr), Some(ar)) if cr == ar || cr == 0 => {}
            _ => {
                return Err(
                    "Select needs the ranks of its condition and operands to be known".into(),
                )
            }
        }
    }
    let (an, bn) = (cx.name(a), cx.name(b));
    Ok(vec![cx.emit(
        "Where",
        &[cn, an, bn],
        vec![],
        &n.out(0),
        dt,
        shape,
    )])
}
