//! Reductions and arg-max/min. In opset 17 ReduceSum takes its axes as an
//! input, the other reductions as an attribute, so those need constant axes
//! (they always are in frozen inference graphs).

use super::{as_i64, const_int, const_ints, norm_axis, Ctx, Node, Shape, V};
use crate::onnx::{attr_int, attr_ints};
use crate::tensor::DType;
use crate::tf::import::onnx_type;

pub(super) fn convert(cx: &mut Ctx, n: &Node) -> Option<Result<Vec<V>, String>> {
    Some(match n.def.op.as_str() {
        "Mean" => reduce(cx, n, "ReduceMean"),
        "Sum" => reduce(cx, n, "ReduceSum"),
        "Max" => reduce(cx, n, "ReduceMax"),
        "Min" => reduce(cx, n, "ReduceMin"),
        "Prod" => reduce(cx, n, "ReduceProd"),
        // ONNX has no bool reductions: all = min, any = max over 0/1.
        "All" => reduce(cx, n, "ReduceMin"),
        "Any" => reduce(cx, n, "ReduceMax"),
        "ArgMax" => arg(cx, n, "ArgMax"),
        "ArgMin" => arg(cx, n, "ArgMin"),
        _ => return None,
    })
}

fn reduced_shape(s: &Shape, axes: &[usize], keep: bool) -> Shape {
    let s = s.as_ref()?;
    Some(
        s.iter()
            .enumerate()
            .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
                (false, _) => Some(d),
                (true, true) => Some(Some(1)),
                (true, false) => None,
            })
            .collect(),
    )
}

fn reduce(cx: &mut Ctx, n: &Node, onnx_op: &str) -> Result<Vec<V>, String> {
    let (x, ax) = (n.input(0)?, n.input(1)?);
    let keep = n.attr_b("keep_dims", false)?;
    let dt = cx.dtype(x);
    let const_axes = cx.konst(ax).and_then(crate::tf::konst::ints);
    if let Some(axes) = &const_axes {
        if axes.is_empty() {
            // TensorFlow reduces nothing; ONNX would reduce everything.
            return Ok(vec![x]);
        }
    }
    let shape = match (&const_axes, cx.rank(x)) {
        (Some(axes), Some(r)) => {
            let norm: Result<Vec<usize>, String> = axes.iter().map(|&a| norm_axis(a, r)).collect();
            reduced_shape(cx.shape(x), &norm?, keep)
        }
        _ => None,
    };
    let bool_input = dt == DType::Bool;
    let mut xn = cx.name(x);
    let work_dt = if bool_input { DType::I32 } else { dt };
    if bool_input {
        let s = cx.shape(x).clone();
        let c = cx.emit(
            "Cast",
            &[xn],
            vec![attr_int("to", onnx_type(DType::I32))],
            &n.tmp("as_int"),
            DType::I32,
            s,
        );
        xn = cx.name(c);
    }
    let out_name = if bool_input {
        n.tmp("reduced")
    } else {
        n.out(0)
    };
    let keep_attr = attr_int("keepdims", keep as i64);
    let y = if onnx_op == "ReduceSum" {
        // TensorFlow allows scalar axes; ONNX wants a vector.
        let an = match &const_axes {
            Some(a) => cx.i64s(a, &n.tmp("axes")),
            None => {
                let a = as_i64(cx, n, ax, "axes_i64");
                let flat = cx.i64s(&[-1], &n.tmp("flat"));
                let r = cx.emit(
                    "Reshape",
                    &[a, flat],
                    vec![],
                    &n.tmp("axes"),
                    DType::I64,
                    Some(vec![None]),
                );
                cx.name(r)
            }
        };
        cx.emit(
            onnx_op,
            &[xn, an],
            vec![keep_attr],
            &out_name,
            work_dt,
            shape.clone(),
        )
    } else {
        let axes = const_ints(cx, ax, "the reduction axes")?;
        cx.emit(
            onnx_op,
            &[xn],
            vec![keep_attr, attr_ints("axes", &axes)],
            &out_name,
            work_dt,
            shape.clone(),
        )
    };
    if !bool_input {
        return Ok(vec![y]);
    }
    let yn = cx.name(y);
    Ok(vec![cx.emit(
        "Cast",
        &[yn],
        vec![attr_int("to", onnx_type(DType::Bool))],
        &n.out(0),
        DType::Bool,
        shape,
    )])
}

fn arg(cx: &mut Ctx, n: &Node, onnx_op: &str) -> Result<Vec<V>, String> {
    let (x, d) = (n.input(0)?, n.input(1)?);
    let axis = const_int(cx, d, "the dimension")?;
    let out_t = n.attr_dtype("output_type")?.unwrap_or(DType::I64);
    let shape = match cx.rank(x) {
        Some(r) => reduced_shape(cx.shape(x), &[norm_axis(axis, r)?], false),
        None => None,
    };
    let xn = cx.name(x);
    let attrs = vec![attr_int("axis", axis), attr_int("keepdims", 0)];
    if out_t == DType::I64 {
        return Ok(vec![cx.emit(
            onnx_op,
            &[xn],
            attrs,
            &n.out(0),
            DType::I64,
            shape,
        )]);
    }
    let y = cx.emit(
        onnx_op,
        &[xn],
        attrs,
        &n.tmp("index"),
        DType::I64,
        shape.clone(),
    );
    let yn = cx.name(y);
    Ok(vec![cx.emit(
        "Cast",
        &[yn],
        vec![attr_int("to", onnx_type(out_t))],
        &n.out(0),
        out_t,
        shape,
    )])
}
