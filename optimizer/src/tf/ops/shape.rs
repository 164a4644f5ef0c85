//! Shape and indexing ops: reshapes, axes, concatenation and splitting,
//! slicing, gathering, padding, filling.

use super::{as_i64, attr_str, const_int, const_ints, norm_axis, product, Ctx, Node, Shape, V};
use crate::onnx::{self, attr_int, attr_ints, AttributeProto};
use crate::tensor::{DType, Tensor};
use crate::tf::import::onnx_type;
use crate::tf::konst;

pub(super) fn convert(cx: &mut Ctx, n: &Node) -> Option<Result<Vec<V>, String>> {
    Some(match n.def.op.as_str() {
        "Reshape" => reshape(cx, n),
        "ExpandDims" => expand_dims(cx, n),
        "Squeeze" => squeeze(cx, n),
        "Transpose" => transpose(cx, n),
        "ConcatV2" => concat(cx, n),
        "Pack" => pack(cx, n),
        "Unpack" => unpack(cx, n),
        "Split" => split(cx, n, false),
        "SplitV" => split(cx, n, true),
        "Tile" => tile(cx, n),
        "StridedSlice" => strided_slice(cx, n),
        "Slice" => slice(cx, n),
        "Shape" => shape_op(cx, n),
        "Size" => size(cx, n),
        "Rank" => rank(cx, n),
        "Fill" => fill(cx, n),
        "ZerosLike" => like(cx, n, 0.0),
        "OnesLike" => like(cx, n, 1.0),
        "Range" => range(cx, n),
        "GatherV2" | "Gather" => gather(cx, n),
        "Pad" | "PadV2" | "MirrorPad" => pad(cx, n),
        "OneHot" => one_hot(cx, n),
        _ => return None,
    })
}

fn static_dims(s: &Shape) -> Option<Vec<i64>> {
    s.as_ref()?.iter().copied().collect()
}

fn reshape(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let (x, s) = (n.input(0)?, n.input(1)?);
    let dt = cx.dtype(x);
    let target = cx.konst(s).and_then(konst::ints);
    let shape: Shape = target.as_ref().map(|t| {
        let known = static_dims(cx.shape(x)).and_then(|d| product(&d));
        let kept: Vec<i64> = t.iter().copied().filter(|&d| d >= 0).collect();
        let rest = product(&kept).unwrap_or(0);
        t.iter()
            .map(|&d| match (d, known) {
                (-1, Some(total)) if rest > 0 => Some(total / rest),
                (-1, _) => None,
                (d, _) => Some(d),
            })
            .collect()
    });
    // A constant reshaped is still a constant.
    if let (Some(t), Some(dims)) = (cx.konst(x), static_dims(&shape)) {
        if product(&dims) == Some(t.numel() as i64) && dims.iter().all(|&d| d >= 0) {
            cx.afford(konst::nbytes(t))?;
            let mut t = t.clone();
            t.shape = dims.iter().map(|&d| d as usize).collect();
            return Ok(vec![cx.add_const(t, &n.out(0))]);
        }
    }
    // In TensorFlow a 0 in the target is an empty dimension; in ONNX it
    // copies the input's unless allowzero is set.
    let attrs = match &target {
        Some(t) if t.contains(&0) => vec![attr_int("allowzero", 1)],
        _ => vec![],
    };
    let xn = cx.name(x);
    let sn = as_i64(cx, n, s, "shape");
    Ok(vec![cx.emit(
        "Reshape",
        &[xn, sn],
        attrs,
        &n.out(0),
        dt,
        shape,
    )])
}

fn expand_dims(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let (x, d) = (n.input(0)?, n.input(1)?);
    let axis = const_int(cx, d, "the dimension")?;
    let shape = cx.shape(x).clone().and_then(|mut s| {
        let a = norm_axis(axis, s.len() + 1).ok()?;
        s.insert(a, Some(1));
        Some(s)
    });
    unsqueeze_to(cx, n, x, &[axis], shape, &n.out(0))
}

fn unsqueeze_to(
    cx: &mut Ctx,
    n: &Node,
    x: V,
    axes: &[i64],
    shape: Shape,
    out: &str,
) -> Result<Vec<V>, String> {
    if let (Some(t), Some(dims)) = (cx.konst(x), static_dims(&shape)) {
        cx.afford(konst::nbytes(t))?;
        let mut t = t.clone();
        t.shape = dims.iter().map(|&d| d as usize).collect();
        return Ok(vec![cx.add_const(t, out)]);
    }
    let dt = cx.dtype(x);
    let xn = cx.name(x);
    let an = cx.i64s(axes, &n.tmp("axes"));
    Ok(vec![cx.emit(
        "Unsqueeze",
        &[xn, an],
        vec![],
        out,
        dt,
        shape,
    )])
}

fn squeeze(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let x = n.input(0)?;
    let dt = cx.dtype(x);
    let mut axes = n.attr_ints("squeeze_dims")?.unwrap_or_default();
    if axes.is_empty() {
        axes = n.attr_ints("axis")?.unwrap_or_default();
    }
    let (axes, out_shape): (Vec<i64>, Shape) = match cx.shape(x).clone() {
        Some(s) if !axes.is_empty() => {
            let norm: Vec<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, s.len()))
                .collect::<Result<_, _>>()?;
            let out = s
                .iter()
                .enumerate()
                .filter(|(i, _)| !norm.contains(i))
                .map(|(_, &d)| d)
                .collect();
            (norm.iter().map(|&a| a as i64).collect(), Some(out))
        }
        // No axes: every size-1 dimension, found here when all are known.
        Some(s) if s.iter().all(|d| d.is_some()) => {
            let ones: Vec<i64> = (0..s.len())
                .filter(|&i| s[i] == Some(1))
                .map(|i| i as i64)
                .collect();
            let out = s.into_iter().filter(|&d| d != Some(1)).collect();
            (ones, Some(out))
        }
        _ => (axes, None),
    };
    if let (Some(t), Some(dims)) = (cx.konst(x), static_dims(&out_shape)) {
        cx.afford(konst::nbytes(t))?;
        let mut t = t.clone();
        t.shape = dims.iter().map(|&d| d as usize).collect();
        return Ok(vec![cx.add_const(t, &n.out(0))]);
    }
    let xn = cx.name(x);
    let mut ins = vec![xn];
    if !axes.is_empty() {
        ins.push(cx.i64s(&axes, &n.tmp("axes")));
    }
    Ok(vec![cx.emit(
        "Squeeze",
        &ins,
        vec![],
        &n.out(0),
        dt,
        out_shape,
    )])
}

fn transpose(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let (x, p) = (n.input(0)?, n.input(1)?);
    let perm = const_ints(cx, p, "the permutation")?;
    if let Some(r) = cx.rank(x) {
        let mut seen = vec![false; r];
        for &q in &perm {
            match usize::try_from(q).ok().filter(|&q| q < r) {
                Some(q) if !seen[q] => seen[q] = true,
                _ => return Err(format!("permutation {perm:?} does not fit rank {r}")),
            }
        }
        if perm.len() != r {
            return Err(format!("permutation {perm:?} does not fit rank {r}"));
        }
    }
    if let Some(t) = cx.konst(x) {
        let up: Vec<usize> = perm.iter().map(|&q| q as usize).collect();
        cx.afford(konst::nbytes(t))?;
        let t = konst::permute(t, &up);
        return Ok(vec![cx.add_const(t, &n.out(0))]);
    }
    let shape = cx
        .shape(x)
        .clone()
        .map(|s| perm.iter().map(|&q| s[q as usize]).collect());
    let dt = cx.dtype(x);
    let xn = cx.name(x);
    Ok(vec![cx.emit(
        "Transpose",
        &[xn],
        vec![attr_ints("perm", &perm)],
        &n.out(0),
        dt,
        shape,
    )])
}

fn concat_shape(cx: &Ctx, vals: &[V], axis: usize) -> Shape {
    let first = cx.shape(*vals.first()?).clone()?;
    let mut out = first.clone();
    let mut total = Some(0i64);
    for &v in vals {
        let s = cx.shape(v).as_ref()?;
        if s.len() != first.len() {
            return None;
        }
        total = match (total, s.get(axis).copied().flatten()) {
            (Some(t), Some(d)) => Some(t + d),
            _ => None,
        };
    }
    *out.get_mut(axis)? = total;
    Some(out)
}

fn concat(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    if n.inputs.len() < 2 {
        return Err("ConcatV2 needs values and an axis".into());
    }
    let (values, ax) = n.inputs.split_at(n.inputs.len() - 1);
    let axis = const_int(cx, ax[0], "the axis")?;
    let dt = cx.dtype(values[0]);
    let shape = match cx.rank(values[0]) {
        Some(r) => concat_shape(cx, values, norm_axis(axis, r)?),
        None => None,
    };
    if values.len() == 1 {
        return Ok(vec![values[0]]);
    }
    let names: Vec<String> = values.iter().map(|&v| cx.name(v)).collect();
    Ok(vec![cx.emit(
        "Concat",
        &names,
        vec![attr_int("axis", axis)],
        &n.out(0),
        dt,
        shape,
    )])
}

fn pack(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let first = n.input(0)?;
    let dt = cx.dtype(first);
    let axis = n.attr_i("axis", 0)?;
    // Positions count in the output rank, one more than the inputs'.
    let axis = match cx.rank(first) {
        Some(r) => norm_axis(axis, r + 1)? as i64,
        None if axis >= 0 => axis,
        None => return Err("Pack with a negative axis needs inputs of known rank".into()),
    };
    let mut parts = Vec::new();
    for (i, &v) in n.inputs.iter().enumerate() {
        let shape = cx.shape(v).clone().map(|mut s| {
            s.insert(axis as usize, Some(1));
            s
        });
        let u = unsqueeze_to(cx, n, v, &[axis], shape, &n.tmp(&format!("item{i}")))?;
        parts.push(u[0]);
    }
    let shape = concat_shape(cx, &parts, axis as usize);
    if parts.len() == 1 {
        return Ok(parts);
    }
    let names: Vec<String> = parts.iter().map(|&v| cx.name(v)).collect();
    Ok(vec![cx.emit(
        "Concat",
        &names,
        vec![attr_int("axis", axis)],
        &n.out(0),
        dt,
        shape,
    )])
}

fn unpack(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let x = n.input(0)?;
    let num = n.attr_i("num", -1)?;
    if num < 1 {
        return Err("no positive 'num' attribute".into());
    }
    let r = cx.rank(x).ok_or("Unpack needs an input of known rank")?;
    let axis = norm_axis(n.attr_i("axis", 0)?, r)?;
    let dt = cx.dtype(x);
    let part_shape = cx.shape(x).clone().map(|mut s| {
        s[axis] = Some(1);
        s
    });
    let out_shape = part_shape.clone().map(|mut s| {
        s.remove(axis);
        s
    });
    let xn = cx.name(x);
    let outs: Vec<(String, DType, Shape)> = (0..num)
        .map(|i| (n.tmp(&format!("part{i}")), dt, part_shape.clone()))
        .collect();
    let parts = cx.emit_multi("Split", &[xn], vec![attr_int("axis", axis as i64)], &outs);
    let an = cx.i64s(&[axis as i64], &n.tmp("axes"));
    let mut res = Vec::new();
    for (i, p) in parts.into_iter().enumerate() {
        let pn = cx.name(p);
        res.push(cx.emit(
            "Squeeze",
            &[pn, an.clone()],
            vec![],
            &n.out(i),
            dt,
            out_shape.clone(),
        ));
    }
    Ok(res)
}

fn split(cx: &mut Ctx, n: &Node, sizes_given: bool) -> Result<Vec<V>, String> {
    // Split(axis, value) with num_split; SplitV(value, size_splits, axis).
    let (x, ax) = if sizes_given {
        (n.input(0)?, n.input(2)?)
    } else {
        (n.input(1)?, n.input(0)?)
    };
    let axis = const_int(cx, ax, "the axis")?;
    let dt = cx.dtype(x);
    let r = cx.rank(x);
    let dim = match r {
        Some(r) => cx
            .shape(x)
            .as_ref()
            .and_then(|s| s[norm_axis(axis, r).ok()?]),
        None => None,
    };
    let sizes: Option<Vec<i64>> = if sizes_given {
        let mut s = const_ints(cx, n.input(1)?, "size_splits")?;
        if let Some(k) = s.iter().position(|&v| v == -1) {
            let d = dim.ok_or("size_splits holds -1 and the split dimension is not known")?;
            let rest: i64 = s.iter().filter(|&&v| v != -1).sum();
            s[k] = d - rest;
        }
        Some(s)
    } else {
        None
    };
    let count = match &sizes {
        Some(s) => s.len(),
        None => {
            let k = n.attr_i("num_split", 0)?;
            usize::try_from(k)
                .ok()
                .filter(|&k| k > 0)
                .ok_or("no positive 'num_split' attribute")?
        }
    };
    let outs: Vec<(String, DType, Shape)> = (0..count)
        .map(|i| {
            let shape = match (cx.shape(x), r) {
                (Some(s), Some(rk)) => norm_axis(axis, rk).ok().map(|a| {
                    let mut s = s.clone();
                    s[a] = match (&sizes, dim) {
                        (Some(z), _) => Some(z[i]),
                        (None, Some(d)) => Some(d / count as i64),
                        _ => None,
                    };
                    s
                }),
                _ => None,
            };
            (n.out(i), dt, shape)
        })
        .collect();
    let xn = cx.name(x);
    let mut ins = vec![xn];
    if let Some(s) = &sizes {
        ins.push(cx.i64s(s, &n.tmp("sizes")));
    }
    Ok(cx.emit_multi("Split", &ins, vec![attr_int("axis", axis)], &outs))
}

fn tile(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let (x, m) = (n.input(0)?, n.input(1)?);
    let dt = cx.dtype(x);
    let shape = match (cx.shape(x), cx.konst(m).and_then(konst::ints)) {
        (Some(s), Some(reps)) if reps.len() == s.len() => Some(
            s.iter()
                .zip(&reps)
                .map(|(d, r)| d.and_then(|d| d.checked_mul(*r)))
                .collect(),
        ),
        _ => None,
    };
    let xn = cx.name(x);
    let mn = as_i64(cx, n, m, "repeats");
    Ok(vec![cx.emit(
        "Tile",
        &[xn, mn],
        vec![],
        &n.out(0),
        dt,
        shape,
    )])
}

/// Elements an ONNX Slice keeps along a dimension of size `dim`.
fn slice_len(dim: i64, start: i64, end: i64, step: i64) -> i64 {
    let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
    let norm = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
    if step > 0 {
        let (s, e) = (clamp(norm(start), 0, dim), clamp(norm(end), 0, dim));
        if e > s {
            (e - s + step - 1) / step
        } else {
            0
        }
    } else {
        let (s, e) = (
            clamp(norm(start), -1, dim - 1),
            clamp(norm(end), -1, dim - 1),
        );
        if s > e {
            (s - e + (-step) - 1) / (-step)
        } else {
            0
        }
    }
}

/// One more op in a chain whose last output takes the node's name.
struct Chain<'a> {
    n: &'a Node<'a>,
    steps: Vec<(&'static str, Vec<String>, Vec<AttributeProto>, Shape)>,
}

impl Chain<'_> {
    fn finish(self, cx: &mut Ctx, x: V) -> Vec<V> {
        let dt = cx.dtype(x);
        let mut cur = x;
        let last = self.steps.len();
        for (i, (op, extra, attrs, shape)) in self.steps.into_iter().enumerate() {
            let mut ins = vec![cx.name(cur)];
            ins.extend(extra);
            let out = if i + 1 == last {
                self.n.out(0)
            } else {
                self.n.tmp(&op.to_lowercase())
            };
            cur = cx.emit(op, &ins, attrs, &out, dt, shape);
        }
        vec![cur]
    }
}

fn strided_slice(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    n.expect_inputs(4)?;
    let x = n.inputs[0];
    let begin = const_ints(cx, n.inputs[1], "begin")?;
    let end = const_ints(cx, n.inputs[2], "end")?;
    let strides = const_ints(cx, n.inputs[3], "strides")?;
    if begin.len() != end.len() || begin.len() != strides.len() {
        return Err("begin, end and strides differ in length".into());
    }
    let mask = |k: &str| n.attr_i(k, 0);
    let (bm, em, ellipsis, new_axis, shrink) = (
        mask("begin_mask")?,
        mask("end_mask")?,
        mask("ellipsis_mask")?,
        mask("new_axis_mask")?,
        mask("shrink_axis_mask")?,
    );
    if ellipsis.count_ones() > 1 {
        return Err("more than one ellipsis in ellipsis_mask".into());
    }
    let k = begin.len();
    let bit = |m: i64, i: usize| i < 63 && (m >> i) & 1 == 1;
    let real = (0..k)
        .filter(|&i| !bit(ellipsis, i) && !bit(new_axis, i))
        .count();
    let rank = cx.rank(x);
    let in_shape = cx.shape(x).clone();

    let (mut starts, mut ends, mut axes, mut steps) = (vec![], vec![], vec![], vec![]);
    let mut squeeze_axes = vec![];
    let mut new_axes = vec![];
    // Output dimension per input dimension (None = squeezed away), and the
    // static sizes where known.
    let mut in_dim = 0usize;
    let mut out_pos = 0i64;
    let mut sliced: Vec<(usize, Option<i64>)> = vec![];
    for i in 0..k {
        if bit(ellipsis, i) {
            let r = rank.ok_or("an ellipsis needs an input of known rank")?;
            let covered = r
                .checked_sub(real)
                .ok_or("more slice entries than input dimensions")?;
            in_dim += covered;
            out_pos += covered as i64;
            continue;
        }
        if bit(new_axis, i) {
            new_axes.push(out_pos);
            out_pos += 1;
            continue;
        }
        let st = strides[i];
        if st == 0 {
            return Err("a stride of 0".into());
        }
        let dim = in_shape
            .as_ref()
            .and_then(|s| s.get(in_dim).copied().flatten());
        if bit(shrink, i) {
            // One element: [b, b+1), with -1 meaning the last one.
            let b = begin[i];
            starts.push(b);
            ends.push(if b == -1 { i64::MAX } else { b + 1 });
            steps.push(1);
            axes.push(in_dim as i64);
            squeeze_axes.push(in_dim as i64);
            in_dim += 1;
            continue;
        }
        let s = if bit(bm, i) {
            if st > 0 {
                0
            } else {
                i64::MAX
            }
        } else {
            begin[i]
        };
        let e = if bit(em, i) {
            if st > 0 {
                i64::MAX
            } else {
                i64::MIN
            }
        } else {
            end[i]
        };
        if !(s == 0 && e == i64::MAX && st == 1) {
            starts.push(s);
            ends.push(e);
            steps.push(st);
            axes.push(in_dim as i64);
            sliced.push((in_dim, dim.map(|d| slice_len(d, s, e, st))));
        }
        in_dim += 1;
        out_pos += 1;
    }
    if let Some(r) = rank {
        if in_dim > r {
            return Err(format!("{in_dim} slice entries for an input of rank {r}"));
        }
    }
    // Static shapes along the way.
    let after_slice: Shape = in_shape.map(|mut s| {
        for &(d, len) in &sliced {
            if d < s.len() {
                s[d] = len;
            }
        }
        for &a in &squeeze_axes {
            if let Some(d) = s.get_mut(a as usize) {
                *d = Some(1);
            }
        }
        s
    });
    let after_squeeze: Shape = after_slice.clone().map(|s| {
        s.into_iter()
            .enumerate()
            .filter(|(i, _)| !squeeze_axes.contains(&(*i as i64)))
            .map(|(_, d)| d)
            .collect()
    });
    let final_shape: Shape = after_squeeze.clone().map(|mut s| {
        for &a in &new_axes {
            if (a as usize) <= s.len() {
                s.insert(a as usize, Some(1));
            }
        }
        s
    });
    let mut chain = Chain { n, steps: vec![] };
    if !axes.is_empty() {
        let names = vec![
            cx.i64s(&starts, &n.tmp("starts")),
            cx.i64s(&ends, &n.tmp("ends")),
            cx.i64s(&axes, &n.tmp("axes")),
            cx.i64s(&steps, &n.tmp("steps")),
        ];
        chain.steps.push(("Slice", names, vec![], after_slice));
    }
    if !squeeze_axes.is_empty() {
        let an = cx.i64s(&squeeze_axes, &n.tmp("shrink_axes"));
        chain
            .steps
            .push(("Squeeze", vec![an], vec![], after_squeeze));
    }
    if !new_axes.is_empty() {
        let an = cx.i64s(&new_axes, &n.tmp("new_axes"));
        chain
            .steps
            .push(("Unsqueeze", vec![an], vec![], final_shape));
    }
    if chain.steps.is_empty() {
        return Ok(vec![x]);
    }
    Ok(chain.finish(cx, x))
}

fn slice(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    n.expect_inputs(3)?;
    let x = n.inputs[0];
    let begin = const_ints(cx, n.inputs[1], "begin")?;
    let size = const_ints(cx, n.inputs[2], "size")?;
    if begin.len() != size.len() {
        return Err("begin and size differ in length".into());
    }
    let ends: Vec<i64> = begin
        .iter()
        .zip(&size)
        .map(|(&b, &s)| if s < 0 { i64::MAX } else { b + s })
        .collect();
    let axes: Vec<i64> = (0..begin.len() as i64).collect();
    let shape = cx.shape(x).clone().map(|s| {
        s.iter()
            .enumerate()
            .map(|(i, &d)| match size.get(i) {
                Some(&z) if z >= 0 => Some(z),
                Some(_) => d.map(|d| d - begin[i]),
                None => d,
            })
            .collect()
    });
    let names = vec![
        cx.i64s(&begin, &n.tmp("starts")),
        cx.i64s(&ends, &n.tmp("ends")),
        cx.i64s(&axes, &n.tmp("axes")),
    ];
    let chain = Chain {
        n,
        steps: vec![("Slice", names, vec![], shape)],
    };
    Ok(chain.finish(cx, x))
}

/// An int32/int64 result of an int64 ONNX op, cast when TF wants int32.
fn int_out(
    cx: &mut Ctx,
    n: &Node,
    op: &str,
    x: V,
    out_t: DType,
    shape: Shape,
) -> Result<Vec<V>, String> {
    if !matches!(out_t, DType::I32 | DType::I64) {
        return Err(format!("out_type {out_t} is not supported"));
    }
    let xn = cx.name(x);
    if out_t == DType::I64 {
        return Ok(vec![cx.emit(
            op,
            &[xn],
            vec![],
            &n.out(0),
            DType::I64,
            shape,
        )]);
    }
    let y = cx.emit(
        op,
        &[xn],
        vec![],
        &n.tmp(&op.to_lowercase()),
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

fn int_const(cx: &mut Ctx, n: &Node, vals: Vec<i64>, shape: Vec<usize>, out_t: DType) -> V {
    let t = konst::cast(&konst::i64_tensor(shape, vals), out_t);
    cx.add_const(t, &n.out(0))
}

fn shape_op(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let x = n.input(0)?;
    let out_t = n.attr_dtype("out_type")?.unwrap_or(DType::I32);
    if let Some(d) = static_dims(cx.shape(x)) {
        let len = d.len();
        return Ok(vec![int_const(cx, n, d, vec![len], out_t)]);
    }
    let shape = cx.rank(x).map(|r| vec![Some(r as i64)]);
    int_out(cx, n, "Shape", x, out_t, shape)
}

fn size(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let x = n.input(0)?;
    let out_t = n.attr_dtype("out_type")?.unwrap_or(DType::I32);
    if let Some(d) = static_dims(cx.shape(x)) {
        return Ok(vec![int_const(
            cx,
            n,
            vec![product(&d).ok_or("the input size overflows")?],
            vec![],
            out_t,
        )]);
    }
    int_out(cx, n, "Size", x, out_t, Some(vec![]))
}

fn rank(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let x = n.input(0)?;
    let r = cx
        .rank(x)
        .ok_or("Rank of an input of unknown rank is not supported")?;
    Ok(vec![int_const(cx, n, vec![r as i64], vec![], DType::I32)])
}

fn fill(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let (d, v) = (n.input(0)?, n.input(1)?);
    let dt = cx.dtype(v);
    let dims = cx.konst(d).and_then(konst::ints);
    if let (Some(dims), Some(val)) = (&dims, cx.konst(v)) {
        let numel = product(dims).unwrap_or(i64::MAX);
        // Small fills become constants; large ones, and any the import's
        // total for constants cannot take, stay an Expand.
        let fits = || {
            cx.afford((numel as usize).saturating_mul(dt.size()))
                .is_ok()
        };
        if numel <= 1 << 20 && dims.iter().all(|&x| x >= 0) && fits() {
            // Only the first value is read: widening the whole value tensor
            // to f64 would copy it at 8 bytes an element.
            let first = val.data.slice(0, val.numel().min(1));
            let x = first.to_f64().first().copied().unwrap_or(0.0);
            let mut t = konst::scalar(dt, x);
            let data = broadcast_scalar(&t, numel as usize);
            t = Tensor {
                shape: dims.iter().map(|&x| x as usize).collect(),
                data,
            };
            return Ok(vec![cx.add_const(t, &n.out(0))]);
        }
    }
    let shape = dims.map(|d| d.into_iter().map(Some).collect());
    let vn = cx.name(v);
    let dn = as_i64(cx, n, d, "dims");
    Ok(vec![cx.emit(
        "Expand",
        &[vn, dn],
        vec![],
        &n.out(0),
        dt,
        shape,
    )])
}

fn broadcast_scalar(t: &Tensor, numel: usize) -> crate::tensor::TensorData {
    use crate::tensor::TensorData as D;
    match &t.data {
        D::F32(v) => D::F32(vec![v[0]; numel]),
        D::F64(v) => D::F64(vec![v[0]; numel]),
        D::I64(v) => D::I64(vec![v[0]; numel]),
        D::I32(v) => D::I32(vec![v[0]; numel]),
        D::I8(v) => D::I8(vec![v[0]; numel]),
        D::U8(v) => D::U8(vec![v[0]; numel]),
        D::Bool(v) => D::Bool(vec![v[0]; numel]),
    }
}

fn like(cx: &mut Ctx, n: &Node, value: f64) -> Result<Vec<V>, String> {
    let x = n.input(0)?;
    let dt = cx.dtype(x);
    let shape = cx.shape(x).clone();
    let xn = cx.name(x);
    let s = cx.emit(
        "Shape",
        &[xn],
        vec![],
        &n.tmp("shape"),
        DType::I64,
        cx.rank(x).map(|r| vec![Some(r as i64)]),
    );
    let sn = cx.name(s);
    let attr = AttributeProto {
        name: "value".into(),
        r#type: onnx::attr_type::TENSOR,
        t: Some(onnx::tensor_to_proto("value", &{
            let mut t = konst::scalar(dt, value);
            t.shape = vec![1];
            t
        })),
        ..Default::default()
    };
    Ok(vec![cx.emit(
        "ConstantOfShape",
        &[sn],
        vec![attr],
        &n.out(0),
        dt,
        shape,
    )])
}

fn range(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    n.expect_inputs(3)?;
    let dt = cx.dtype(n.inputs[0]);
    if n.inputs.iter().any(|&v| cx.dtype(v) != dt) {
        return Err("start, limit and delta differ in type".into());
    }
    let names: Vec<String> = n.inputs[..3].iter().map(|&v| cx.name(v)).collect();
    Ok(vec![cx.emit(
        "Range",
        &names,
        vec![],
        &n.out(0),
        dt,
        Some(vec![None]),
    )])
}

fn gather(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let (p, i) = (n.input(0)?, n.input(1)?);
    let axis = if n.def.op == "GatherV2" {
        const_int(cx, n.input(2)?, "the axis")?
    } else {
        0
    };
    if n.attr_i("batch_dims", 0)? != 0 {
        return Err("batch_dims other than 0 is not supported".into());
    }
    let dt = cx.dtype(p);
    let shape = match (cx.shape(p), cx.shape(i)) {
        (Some(ps), Some(is)) => {
            let a = norm_axis(axis, ps.len())?;
            let mut s = ps[..a].to_vec();
            s.extend(is.iter().copied());
            s.extend(ps[a + 1..].iter().copied());
            Some(s)
        }
        _ => None,
    };
    let (pn, inn) = (cx.name(p), cx.name(i));
    Ok(vec![cx.emit(
        "Gather",
        &[pn, inn],
        vec![attr_int("axis", axis)],
        &n.out(0),
        dt,
        shape,
    )])
}

fn pad(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let (x, p) = (n.input(0)?, n.input(1)?);
    let dt = cx.dtype(x);
    let pads = const_ints(cx, p, "the paddings")?;
    if pads.len() % 2 != 0 {
        return Err(format!(
            "paddings hold {} values, not [rank, 2]",
            pads.len()
        ));
    }
    let r = pads.len() / 2;
    if let Some(xr) = cx.rank(x) {
        if xr != r {
            return Err(format!("paddings for rank {r}, input of rank {xr}"));
        }
    }
    // [[b0, e0], [b1, e1], …] → [b0, b1, …, e0, e1, …].
    let mut onnx_pads: Vec<i64> = (0..r).map(|i| pads[2 * i]).collect();
    onnx_pads.extend((0..r).map(|i| pads[2 * i + 1]));
    let shape = cx.shape(x).clone().map(|s| {
        s.iter()
            .enumerate()
            .map(|(i, d)| {
                d.map(|d| {
                    d.saturating_add(pads[2 * i])
                        .saturating_add(pads[2 * i + 1])
                })
            })
            .collect()
    });
    let xn = cx.name(x);
    let pn = cx.i64s(&onnx_pads, &n.tmp("pads"));
    let mut ins = vec![xn, pn];
    let mut attrs = vec![];
    match n.def.op.as_str() {
        "PadV2" => ins.push(cx.name(n.input(2)?)),
        "MirrorPad" => match n.attr_s("mode", "REFLECT")?.as_str() {
            "REFLECT" => attrs.push(attr_str("mode", "reflect")),
            other => {
                return Err(format!(
                    "MirrorPad mode {other} is not supported (only REFLECT)"
                ))
            }
        },
        _ => {}
    }
    Ok(vec![cx.emit("Pad", &ins, attrs, &n.out(0), dt, shape)])
}

fn one_hot(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    n.expect_inputs(4)?;
    let (idx, depth, on, off) = (n.inputs[0], n.inputs[1], n.inputs[2], n.inputs[3]);
    let axis = n.attr_i("axis", -1)?;
    let dt = cx.dtype(on);
    let depth_n = cx
        .konst(depth)
        .and_then(konst::ints)
        .and_then(|v| v.first().copied());
    let shape = cx.shape(idx).clone().and_then(|mut s| {
        let a = norm_axis(axis, s.len() + 1).ok()?;
        s.insert(a, depth_n);
        Some(s)
    });
    // ONNX counts negative indices from the end; TensorFlow gives them an
    // all-off row. Send them out of range (to `depth`) first.
    let idt = cx.dtype(idx);
    let idx_shape = cx.shape(idx).clone();
    let in_ = cx.name(idx);
    let zero = cx.scalar(idt, 0.0, &n.tmp("zero"));
    let neg = cx.emit(
        "Less",
        &[in_.clone(), zero],
        vec![],
        &n.tmp("negative"),
        DType::Bool,
        idx_shape.clone(),
    );
    let dn = cx.name(depth);
    let depth_i = if cx.dtype(depth) == idt {
        dn.clone()
    } else {
        let c = cx.emit(
            "Cast",
            std::slice::from_ref(&dn),
            vec![attr_int("to", onnx_type(idt))],
            &n.tmp("depth_cast"),
            idt,
            Some(vec![]),
        );
        cx.name(c)
    };
    let negn = cx.name(neg);
    let fixed = cx.emit(
        "Where",
        &[negn, depth_i, in_],
        vec![],
        &n.tmp("indices"),
        idt,
        idx_shape,
    );
    let fixed_n = cx.name(fixed);
    // values = [off, on]
    let one = cx.i64s(&[1], &n.tmp("one"));
    let (offn, onn) = (cx.name(off), cx.name(on));
    let off1 = cx.emit(
        "Reshape",
        &[offn, one.clone()],
        vec![],
        &n.tmp("off"),
        dt,
        Some(vec![Some(1)]),
    );
    let on1 = cx.emit(
        "Reshape",
        &[onn, one],
        vec![],
        &n.tmp("on"),
        dt,
        Some(vec![Some(1)]),
    );
    let (a, b) = (cx.name(off1), cx.name(on1));
    let vals = cx.emit(
        "Concat",
        &[a, b],
        vec![attr_int("axis", 0)],
        &n.tmp("values"),
        dt,
        Some(vec![Some(2)]),
    );
    let vn = cx.name(vals);
    Ok(vec![cx.emit(
        "OneHot",
        &[fixed_n, dn, vn],
        vec![attr_int("axis", axis)],
        &n.out(0),
        dt,
        shape,
    )])
}
