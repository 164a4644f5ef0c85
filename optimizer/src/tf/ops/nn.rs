//! Convolutions, pools, bias, batch norm, matrix products and softmax.
//!
//! TensorFlow's default layout is NHWC with HWIO filters; ONNX's Conv and
//! pools are NCHW with OIHW weights. Channels-last inputs are transposed to
//! channels-first around each such op, so the model keeps the user's layout;
//! constant filters are re-laid-out here rather than at run time.

use super::{attr_str, broadcast, Ctx, Node, Shape, V};
use crate::onnx::{attr_int, attr_ints};
use crate::tensor::{DType, Tensor, TensorData};
use crate::tf::konst;

pub(super) fn convert(cx: &mut Ctx, n: &Node) -> Option<Result<Vec<V>, String>> {
    Some(match n.def.op.as_str() {
        "Conv2D" => conv(cx, n, false),
        "DepthwiseConv2dNative" => conv(cx, n, true),
        "MaxPool" => pool(cx, n, "MaxPool"),
        "AvgPool" => pool(cx, n, "AveragePool"),
        "BiasAdd" => bias_add(cx, n),
        "FusedBatchNorm" | "FusedBatchNormV2" | "FusedBatchNormV3" => batch_norm(cx, n),
        "MatMul" => matmul(cx, n),
        "BatchMatMul" | "BatchMatMulV2" | "BatchMatMulV3" => batch_matmul(cx, n),
        "Softmax" => softmax(cx, n, "Softmax"),
        "LogSoftmax" => softmax(cx, n, "LogSoftmax"),
        _ => return None,
    })
}

const TO_NCHW: [i64; 4] = [0, 3, 1, 2];
const TO_NHWC: [i64; 4] = [0, 2, 3, 1];

fn permute_shape(s: &Shape, perm: &[i64]) -> Shape {
    let s = s.as_ref()?;
    if s.len() != perm.len() {
        return None;
    }
    Some(perm.iter().map(|&p| s[p as usize]).collect())
}

enum Padding {
    Valid,
    Same,
    /// ONNX order: [h_begin, w_begin, h_end, w_end].
    Explicit([i64; 4]),
}

/// Strides, dilations and padding of a 2-D window op, in (H, W) order.
struct Window {
    nhwc: bool,
    kernel: [i64; 2],
    strides: [i64; 2],
    dilations: [i64; 2],
    padding: Padding,
}

/// The (H, W) entries of a 4-entry per-dimension attribute.
fn hw(n: &Node, key: &str, nhwc: bool, default: i64) -> Result<[i64; 2], String> {
    match n.attr_ints(key)? {
        None => Ok([default, default]),
        Some(v) if v.len() == 4 => {
            let (h, w, b, c) = if nhwc { (1, 2, 0, 3) } else { (2, 3, 0, 1) };
            if v[b] != 1 || v[c] != 1 {
                return Err(format!(
                    "'{key}' {v:?} steps over batch or channels; only spatial values are supported"
                ));
            }
            if v[h] < 1 || v[w] < 1 {
                return Err(format!("'{key}' {v:?} must be positive"));
            }
            Ok([v[h], v[w]])
        }
        Some(v) => Err(format!("'{key}' must have 4 entries, got {v:?}")),
    }
}

fn window(n: &Node, kernel: [i64; 2]) -> Result<Window, String> {
    let nhwc = n.nhwc()?;
    let strides = hw(n, "strides", nhwc, 1)?;
    let dilations = hw(n, "dilations", nhwc, 1)?;
    let padding = match n.attr_s("padding", "VALID")?.as_str() {
        "VALID" => Padding::Valid,
        "SAME" => Padding::Same,
        "EXPLICIT" => {
            let p = n
                .attr_ints("explicit_paddings")?
                .ok_or("padding EXPLICIT without 'explicit_paddings'")?;
            if p.len() != 8 {
                return Err(format!(
                    "'explicit_paddings' must have 8 entries, got {p:?}"
                ));
            }
            let (h, w) = if nhwc { (1, 2) } else { (2, 3) };
            Padding::Explicit([p[2 * h], p[2 * w], p[2 * h + 1], p[2 * w + 1]])
        }
        other => return Err(format!("padding '{other}' is not supported")),
    };
    Ok(Window {
        nhwc,
        kernel,
        strides,
        dilations,
        padding,
    })
}

impl Window {
    /// ONNX attributes for pads (explicit when the input size is known, so
    /// the graph does not depend on auto_pad) and the output (H, W).
    fn pads(&self, in_hw: [Option<i64>; 2]) -> (crate::onnx::AttributeProto, [Option<i64>; 2]) {
        let eff = |i: usize| {
            (self.kernel[i] - 1)
                .saturating_mul(self.dilations[i])
                .saturating_add(1)
        };
        match self.padding {
            Padding::Valid => (
                attr_ints("pads", &[0, 0, 0, 0]),
                [0, 1].map(|i| in_hw[i].map(|x| (x - eff(i)).div_euclid(self.strides[i]) + 1)),
            ),
            Padding::Explicit(p) => (
                attr_ints("pads", &p),
                [0, 1].map(|i| {
                    in_hw[i].map(|x| (x + p[i] + p[i + 2] - eff(i)).div_euclid(self.strides[i]) + 1)
                }),
            ),
            Padding::Same => {
                let out =
                    [0, 1].map(|i| in_hw[i].map(|x| (x + self.strides[i] - 1) / self.strides[i]));
                // The total padding of an axis, when known: from the sizes,
                // or (stride 1) always the dilated kernel less one.
                let total = [0, 1].map(|i| match (in_hw[i], out[i]) {
                    (Some(x), Some(o)) => Some(((o - 1) * self.strides[i] + eff(i) - x).max(0)),
                    _ if self.strides[i] == 1 => Some(eff(i) - 1),
                    _ => None,
                });
                match total {
                    // TensorFlow puts the odd pixel at the end.
                    [Some(th), Some(tw)] => (
                        attr_ints("pads", &[th / 2, tw / 2, th - th / 2, tw - tw / 2]),
                        out,
                    ),
                    // Same rule as ONNX Runtime's SAME_UPPER (which refuses
                    // dilations; TensorFlow has no strided dilated convs).
                    _ => (attr_str("auto_pad", "SAME_UPPER"), out),
                }
            }
        }
    }
}

/// `x` in NCHW: a Transpose for NHWC inputs.
fn to_nchw(cx: &mut Ctx, n: &Node, x: V, nhwc: bool) -> Result<(String, Shape), String> {
    if let Some(r) = cx.rank(x) {
        if r != 4 {
            return Err(format!("expected a 4-D input, got rank {r}"));
        }
    }
    let xn = cx.name(x);
    if !nhwc {
        return Ok((xn, cx.shape(x).clone()));
    }
    let shape = permute_shape(cx.shape(x), &TO_NCHW);
    let t = cx.emit(
        "Transpose",
        &[xn],
        vec![attr_ints("perm", &TO_NCHW)],
        &n.tmp("to_nchw"),
        cx.dtype(x),
        shape.clone(),
    );
    Ok((cx.name(t), shape))
}

/// Emits `op` on NCHW data and brings the result back to the node's layout.
#[allow(clippy::too_many_arguments)]
fn emit_nchw(
    cx: &mut Ctx,
    n: &Node,
    nhwc: bool,
    op: &str,
    inputs: &[String],
    attrs: Vec<crate::onnx::AttributeProto>,
    dt: DType,
    shape_nchw: Shape,
) -> V {
    if !nhwc {
        return cx.emit(op, inputs, attrs, &n.out(0), dt, shape_nchw);
    }
    let y = cx.emit(
        op,
        inputs,
        attrs,
        &n.tmp(&op.to_lowercase()),
        dt,
        shape_nchw.clone(),
    );
    let yn = cx.name(y);
    cx.emit(
        "Transpose",
        &[yn],
        vec![attr_ints("perm", &TO_NHWC)],
        &n.out(0),
        dt,
        permute_shape(&shape_nchw, &TO_NHWC),
    )
}

fn conv(cx: &mut Ctx, n: &Node, depthwise: bool) -> Result<Vec<V>, String> {
    let (x, w) = (n.input(0)?, n.input(1)?);
    let dt = cx.dtype(x);
    let wshape = cx
        .shape(w)
        .clone()
        .ok_or("the filter's shape must be known")?;
    let [Some(kh), Some(kw), Some(wi), Some(wo)] = wshape[..] else {
        return Err(format!(
            "the filter must be 4-D with known sizes, got {wshape:?}"
        ));
    };
    if [kh, kw, wi, wo].iter().any(|d| !(1..=1 << 24).contains(d)) {
        return Err(format!("filter shape {wshape:?} is not a usable kernel"));
    }
    let win = window(n, [kh, kw])?;
    let (xn, xs) = to_nchw(cx, n, x, win.nhwc)?;
    let in_c = xs.as_ref().and_then(|s| s[1]);
    // ONNX weight [Cout, Cin/group, KH, KW] and group count.
    let (weight, group, out_c) = if depthwise {
        // [KH, KW, C, M] → [C·M, 1, KH, KW]: output channel c·M + m reads
        // input channel c, as in TensorFlow.
        let w_name = match cx.konst(w) {
            Some(t) => {
                cx.afford(konst::nbytes(t))?;
                let mut p = konst::permute(t, &[2, 3, 0, 1]);
                p.shape = vec![(wi * wo) as usize, 1, kh as usize, kw as usize];
                let c = cx.add_const(p, &n.tmp("weight"));
                cx.name(c)
            }
            None => {
                let wn = cx.name(w);
                let t = cx.emit(
                    "Transpose",
                    &[wn],
                    vec![attr_ints("perm", &[2, 3, 0, 1])],
                    &n.tmp("weight_cmhw"),
                    dt,
                    Some(vec![Some(wi), Some(wo), Some(kh), Some(kw)]),
                );
                let tn = cx.name(t);
                let shape = cx.i64s(&[wi * wo, 1, kh, kw], &n.tmp("weight_shape"));
                let r = cx.emit(
                    "Reshape",
                    &[tn, shape],
                    vec![],
                    &n.tmp("weight"),
                    dt,
                    Some(vec![Some(wi * wo), Some(1), Some(kh), Some(kw)]),
                );
                cx.name(r)
            }
        };
        (w_name, wi, wi * wo)
    } else {
        // [KH, KW, Cin/group, Cout] → [Cout, Cin/group, KH, KW].
        let w_name = match cx.konst(w) {
            Some(t) => {
                cx.afford(konst::nbytes(t))?;
                let p = konst::permute(t, &[3, 2, 0, 1]);
                let c = cx.add_const(p, &n.tmp("weight"));
                cx.name(c)
            }
            None => {
                let wn = cx.name(w);
                let t = cx.emit(
                    "Transpose",
                    &[wn],
                    vec![attr_ints("perm", &[3, 2, 0, 1])],
                    &n.tmp("weight"),
                    dt,
                    Some(vec![Some(wo), Some(wi), Some(kh), Some(kw)]),
                );
                cx.name(t)
            }
        };
        // Grouped convolution: the input has a multiple of the filter's
        // input channels.
        let group = match in_c {
            Some(c) if wi > 0 && c % wi == 0 => c / wi,
            Some(c) => {
                return Err(format!(
                    "input has {c} channels, the filter expects {wi} (or a divisor)"
                ))
            }
            None => 1,
        };
        (w_name, group, wo)
    };
    if let (true, Some(c)) = (depthwise, in_c) {
        if c != wi {
            return Err(format!("input has {c} channels, the depthwise filter {wi}"));
        }
    }
    let in_hw = match &xs {
        Some(s) => [s[2], s[3]],
        None => [None, None],
    };
    let (pad_attr, out_hw) = win.pads(in_hw);
    let batch = xs.as_ref().and_then(|s| s[0]);
    let attrs = vec![
        attr_ints("kernel_shape", &[kh, kw]),
        attr_ints("strides", &win.strides),
        attr_ints("dilations", &win.dilations),
        attr_int("group", group),
        pad_attr,
    ];
    let shape = Some(vec![batch, Some(out_c), out_hw[0], out_hw[1]]);
    Ok(vec![emit_nchw(
        cx,
        n,
        win.nhwc,
        "Conv",
        &[xn, weight],
        attrs,
        dt,
        shape,
    )])
}

fn pool(cx: &mut Ctx, n: &Node, onnx_op: &str) -> Result<Vec<V>, String> {
    let x = n.input(0)?;
    let dt = cx.dtype(x);
    let nhwc = n.nhwc()?;
    let k = hw(n, "ksize", nhwc, 0)?;
    if k[0] < 1 {
        return Err("no 'ksize' attribute".into());
    }
    let win = window(n, k)?;
    let (xn, xs) = to_nchw(cx, n, x, nhwc)?;
    let in_hw = match &xs {
        Some(s) => [s[2], s[3]],
        None => [None, None],
    };
    let (pad_attr, out_hw) = win.pads(in_hw);
    let mut attrs = vec![
        attr_ints("kernel_shape", &k),
        attr_ints("strides", &win.strides),
        pad_attr,
    ];
    if onnx_op == "AveragePool" {
        // TensorFlow averages over the real pixels only, never the padding.
        attrs.push(attr_int("count_include_pad", 0));
    }
    let shape = xs.map(|s| vec![s[0], s[1], out_hw[0], out_hw[1]]);
    Ok(vec![emit_nchw(
        cx,
        n,
        nhwc,
        onnx_op,
        &[xn],
        attrs,
        dt,
        shape,
    )])
}

/// Per-channel values shaped to broadcast against the data: as they are
/// for channels-last, `[C, 1, …]` for channels-first.
fn per_channel(
    cx: &mut Ctx,
    n: &Node,
    v: V,
    nhwc: bool,
    rank: Option<usize>,
    what: &str,
) -> Result<String, String> {
    if nhwc {
        return Ok(cx.name(v));
    }
    let r = rank.ok_or("channels-first data needs a known rank")?;
    if r < 2 {
        return Err(format!("channels-first data must have rank ≥ 2, got {r}"));
    }
    let trailing = r - 2;
    if let Some(t) = cx.konst(v) {
        cx.afford(konst::nbytes(t))?;
        let mut t = t.clone();
        t.shape.extend(std::iter::repeat_n(1, trailing));
        let c = cx.add_const(t, &n.tmp(what));
        return Ok(cx.name(c));
    }
    let axes: Vec<i64> = (1..=trailing as i64).collect();
    let ax = cx.i64s(&axes, &n.tmp(&format!("{what}_axes")));
    let vn = cx.name(v);
    let shape = cx.shape(v).clone().map(|mut s| {
        s.extend(std::iter::repeat_n(Some(1), trailing));
        s
    });
    let dt = cx.dtype(v);
    let u = cx.emit("Unsqueeze", &[vn, ax], vec![], &n.tmp(what), dt, shape);
    Ok(cx.name(u))
}

fn bias_add(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let (x, b) = (n.input(0)?, n.input(1)?);
    let nhwc = n.nhwc()?;
    let dt = cx.dtype(x);
    let shape = cx.shape(x).clone();
    let rank = cx.rank(x);
    let bn = per_channel(cx, n, b, nhwc, rank, "bias")?;
    let xn = cx.name(x);
    Ok(vec![cx.emit(
        "Add",
        &[xn, bn],
        vec![],
        &n.out(0),
        dt,
        shape,
    )])
}

/// Inference batch norm as `x·m + a` with `m = scale/√(var+ε)` and
/// `a = offset − mean·m`, computed here when the statistics are constant.
fn batch_norm(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    n.expect_inputs(5)?;
    let (x, scale, offset, mean, var) = (
        n.inputs[0],
        n.inputs[1],
        n.inputs[2],
        n.inputs[3],
        n.inputs[4],
    );
    if n.attr_b("is_training", true)? {
        return Err("is_training=true (batch statistics) is not supported; freeze the graph in inference mode".into());
    }
    let eps = n.attr_f("epsilon", 1e-4)?;
    let nhwc = n.nhwc()?;
    let dt = cx.dtype(x);
    let shape = cx.shape(x).clone();
    let rank = cx.rank(x);
    // The four statistics are read as f64 (8 bytes an element) to fold them;
    // held to the import's total for constants like any materialized copy.
    let stat_bytes = [scale, offset, mean, var]
        .iter()
        .filter_map(|&v| cx.konst(v))
        .fold(0usize, |a, t| a.saturating_add(t.numel().saturating_mul(8)));
    cx.afford(stat_bytes)?;
    let consts: Option<Vec<Vec<f64>>> = [scale, offset, mean, var]
        .iter()
        .map(|&v| cx.konst(v).map(|t| t.data.to_f64()))
        .collect();
    let (mul, add) = match consts {
        Some(c) if c.iter().all(|v| v.len() == c[0].len()) && dt.is_float() => {
            let m: Vec<f64> = c[0]
                .iter()
                .zip(&c[3])
                .map(|(s, v)| s / (v + eps as f64).sqrt())
                .collect();
            let a: Vec<f64> = c[1]
                .iter()
                .zip(&c[2])
                .zip(&m)
                .map(|((o, mu), m)| o - mu * m)
                .collect();
            let len = m.len();
            let mk = |v: Vec<f64>| {
                let data = match dt {
                    DType::F64 => TensorData::F64(v),
                    _ => TensorData::F32(v.into_iter().map(|x| x as f32).collect()),
                };
                Tensor {
                    shape: vec![len],
                    data,
                }
            };
            let mv = cx.add_const(mk(m), &n.tmp("mul"));
            let av = cx.add_const(mk(a), &n.tmp("add"));
            (mv, av)
        }
        _ => {
            let cs = cx.shape(scale).clone();
            let e = cx.scalar(dt, eps as f64, &n.tmp("epsilon"));
            let vn = cx.name(var);
            let ve = cx.emit("Add", &[vn, e], vec![], &n.tmp("var_eps"), dt, cs.clone());
            let ven = cx.name(ve);
            let sd = cx.emit("Sqrt", &[ven], vec![], &n.tmp("std"), dt, cs.clone());
            let (sn, sdn) = (cx.name(scale), cx.name(sd));
            let m = cx.emit("Div", &[sn, sdn], vec![], &n.tmp("mul"), dt, cs.clone());
            let (mun, mn) = (cx.name(mean), cx.name(m));
            let mm = cx.emit(
                "Mul",
                &[mun, mn],
                vec![],
                &n.tmp("mean_mul"),
                dt,
                cs.clone(),
            );
            let (on, mmn) = (cx.name(offset), cx.name(mm));
            let a = cx.emit("Sub", &[on, mmn], vec![], &n.tmp("add"), dt, cs);
            (m, a)
        }
    };
    let mn = per_channel(cx, n, mul, nhwc, rank, "mul_c")?;
    let an = per_channel(cx, n, add, nhwc, rank, "add_c")?;
    let xn = cx.name(x);
    let y = cx.emit(
        "Mul",
        &[xn, mn],
        vec![],
        &n.tmp("scaled"),
        dt,
        shape.clone(),
    );
    let yn = cx.name(y);
    let out = cx.emit("Add", &[yn, an], vec![], &n.out(0), dt, shape);
    // batch_mean, batch_variance and the reserve spaces: in inference they
    // are the given statistics.
    Ok(vec![out, mean, var, mean, var, mean])
}

/// `v` with its last two axes swapped (a constant is swapped here).
fn swap_last(cx: &mut Ctx, n: &Node, v: V, what: &str) -> Result<V, String> {
    let r = cx.rank(v).ok_or("transposing an operand of unknown rank")?;
    if r < 2 {
        return Err(format!("transposing an operand of rank {r}"));
    }
    let mut perm: Vec<usize> = (0..r).collect();
    perm.swap(r - 2, r - 1);
    if let Some(t) = cx.konst(v) {
        cx.afford(konst::nbytes(t))?;
        let p = konst::permute(t, &perm);
        return Ok(cx.add_const(p, &n.tmp(what)));
    }
    let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
    let shape = permute_shape(cx.shape(v), &perm);
    let dt = cx.dtype(v);
    let vn = cx.name(v);
    Ok(cx.emit(
        "Transpose",
        &[vn],
        vec![attr_ints("perm", &perm)],
        &n.tmp(what),
        dt,
        shape,
    ))
}

fn matmul_shape(a: &Shape, b: &Shape) -> Shape {
    let (a, b) = (a.as_ref()?, b.as_ref()?);
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let batch = broadcast(
        &Some(a[..a.len() - 2].to_vec()),
        &Some(b[..b.len() - 2].to_vec()),
    )?;
    let mut out = batch;
    out.push(a[a.len() - 2]);
    out.push(b[b.len() - 1]);
    Some(out)
}

fn matmul_with(cx: &mut Ctx, n: &Node, ta: bool, tb: bool) -> Result<Vec<V>, String> {
    let (mut a, mut b) = (n.input(0)?, n.input(1)?);
    if ta {
        a = swap_last(cx, n, a, "a_t")?;
    }
    if tb {
        b = swap_last(cx, n, b, "b_t")?;
    }
    let dt = cx.dtype(a);
    let shape = matmul_shape(cx.shape(a), cx.shape(b));
    let (an, bn) = (cx.name(a), cx.name(b));
    Ok(vec![cx.emit(
        "MatMul",
        &[an, bn],
        vec![],
        &n.out(0),
        dt,
        shape,
    )])
}

fn matmul(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let ta = n.attr_b("transpose_a", false)?;
    let tb = n.attr_b("transpose_b", false)?;
    matmul_with(cx, n, ta, tb)
}

fn batch_matmul(cx: &mut Ctx, n: &Node) -> Result<Vec<V>, String> {
    let ta = n.attr_b("adj_x", false)?;
    let tb = n.attr_b("adj_y", false)?;
    if let Some(t) = n.attr_dtype("Tout")? {
        if t != cx.dtype(n.input(0)?) {
            return Err(
                "BatchMatMulV3 with an output type unlike its inputs is not supported".into(),
            );
        }
    }
    matmul_with(cx, n, ta, tb)
}

fn softmax(cx: &mut Ctx, n: &Node, onnx_op: &str) -> Result<Vec<V>, String> {
    let x = n.input(0)?;
    let (dt, shape) = (cx.dtype(x), cx.shape(x).clone());
    let xn = cx.name(x);
    Ok(vec![cx.emit(
        onnx_op,
        &[xn],
        vec![attr_int("axis", -1)],
        &n.out(0),
        dt,
        shape,
    )])
}
