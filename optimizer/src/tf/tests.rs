//! Small GraphDefs built here, imported, run in ONNX Runtime and compared
//! with values computed directly (naive loops in NHWC for convolutions and
//! pools), so a wrong layout, padding or attribute mapping fails.

use prost::Message;

use super::proto::{
    attr_value::{ListValue, Value},
    dt, AttrValue, GraphDef, NodeDef, TensorProto, TensorShapeProto,
};
use super::{import, import_path, op_census, ImportOptions};
use crate::engine::{Engine, GraphLevel, SessionSettings};
use crate::onnx;
use crate::tensor::{Tensor, TensorData};
use crate::OptimizerError;

// ------------------------------------------------------------ graph builders

fn av(v: Value) -> AttrValue {
    AttrValue { value: Some(v) }
}

fn a_i(v: i64) -> AttrValue {
    av(Value::I(v))
}

fn a_f(v: f32) -> AttrValue {
    av(Value::F(v))
}

fn a_b(v: bool) -> AttrValue {
    av(Value::B(v))
}

fn a_s(v: &str) -> AttrValue {
    av(Value::S(v.as_bytes().to_vec()))
}

fn a_t(t: i32) -> AttrValue {
    av(Value::Type(t))
}

fn a_ints(v: &[i64]) -> AttrValue {
    av(Value::List(ListValue {
        i: v.to_vec(),
        ..Default::default()
    }))
}

fn tshape(dims: &[i64]) -> TensorShapeProto {
    TensorShapeProto::of(dims)
}

fn node(name: &str, op: &str, inputs: &[&str], attrs: Vec<(&str, AttrValue)>) -> NodeDef {
    NodeDef {
        name: name.into(),
        op: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        device: String::new(),
        attr: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

fn placeholder(name: &str, dtype: i32, shape: &[i64]) -> NodeDef {
    node(
        name,
        "Placeholder",
        &[],
        vec![
            ("dtype", a_t(dtype)),
            ("shape", av(Value::Shape(tshape(shape)))),
        ],
    )
}

fn const_node(name: &str, t: TensorProto) -> NodeDef {
    let dtype = t.dtype;
    node(
        name,
        "Const",
        &[],
        vec![("dtype", a_t(dtype)), ("value", av(Value::Tensor(t)))],
    )
}

/// A float constant stored as raw bytes (how TensorFlow writes weights).
fn const_f32(name: &str, shape: &[i64], v: &[f32]) -> NodeDef {
    const_node(
        name,
        TensorProto {
            dtype: dt::FLOAT,
            tensor_shape: Some(tshape(shape)),
            tensor_content: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        },
    )
}

/// An int32 constant in the typed field.
fn const_i32(name: &str, shape: &[i64], v: &[i32]) -> NodeDef {
    const_node(
        name,
        TensorProto {
            dtype: dt::INT32,
            tensor_shape: Some(tshape(shape)),
            int_val: v.to_vec(),
            ..Default::default()
        },
    )
}

fn encode(nodes: Vec<NodeDef>) -> Vec<u8> {
    GraphDef {
        node: nodes,
        ..Default::default()
    }
    .encode_to_vec()
}

fn f32t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::F32(v)).unwrap()
}

fn i32t(shape: &[usize], v: Vec<i32>) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::I32(v)).unwrap()
}

/// Imports with the given outputs and runs on the feeds; outputs in order.
fn run(nodes: Vec<NodeDef>, outputs: &[&str], feeds: &[(&str, Tensor)]) -> Vec<Tensor> {
    let opts = ImportOptions {
        outputs: Some(outputs.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let model = import(&encode(nodes), &opts).unwrap_or_else(|e| panic!("import: {e}"));
    let mut e = Engine::from_bytes(
        &onnx::to_bytes(&model),
        &SessionSettings::new(GraphLevel::Disable, 1),
    )
    .unwrap_or_else(|e| panic!("ONNX Runtime loads the model: {e}"));
    let feeds: Vec<(String, Tensor)> = feeds
        .iter()
        .map(|(n, t)| (format!("{n}:0"), t.clone()))
        .collect();
    let out = e.run(&feeds).unwrap_or_else(|e| panic!("run: {e}"));
    for ((name, _), want) in out.iter().zip(outputs) {
        let want = if want.contains(':') {
            want.to_string()
        } else {
            format!("{want}:0")
        };
        assert_eq!(name, &want, "outputs keep the TensorFlow tensor names");
    }
    out.into_iter().map(|(_, t)| t).collect()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    match &t.data {
        TensorData::F32(v) => v.clone(),
        other => panic!("expected FP32, got {:?}", other.dtype()),
    }
}

fn ints(t: &Tensor) -> Vec<i64> {
    match &t.data {
        TensorData::I32(v) => v.iter().map(|&x| x as i64).collect(),
        TensorData::I64(v) => v.clone(),
        other => panic!("expected integers, got {:?}", other.dtype()),
    }
}

fn bools(t: &Tensor) -> Vec<bool> {
    match &t.data {
        TensorData::Bool(v) => v.clone(),
        other => panic!("expected BOOL, got {:?}", other.dtype()),
    }
}

#[track_caller]
fn close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}\n got {got:?}\nwant {want:?}"
        );
    }
}

/// Deterministic values in [-1, 1].
fn vals(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.731 + seed).sin()).collect()
}

// ------------------------------------------------------------ elementwise

type Unary = fn(f32) -> f32;
type Binary = fn(f32, f32) -> f32;

#[test]
fn tf_elementwise_ops() {
    let x = vec![-2.0f32, -0.5, 0.0, 0.7, 3.0, 7.5];
    let p = vec![0.5f32, 1.0, 2.0, 4.0, 0.25, 9.0];
    let b = vec![1.0f32, -2.0, 0.5];
    let unary: &[(&str, Unary)] = &[
        ("Relu", |v| v.max(0.0)),
        ("Relu6", |v| v.clamp(0.0, 6.0)),
        ("Elu", |v| if v > 0.0 { v } else { v.exp() - 1.0 }),
        ("Softplus", |v| (1.0 + v.exp()).ln()),
        ("Tanh", f32::tanh),
        ("Sigmoid", |v| 1.0 / (1.0 + (-v).exp())),
        ("Exp", f32::exp),
        ("Neg", |v| -v),
        ("Abs", f32::abs),
        ("Square", |v| v * v),
        ("Floor", f32::floor),
    ];
    let positive: &[(&str, Unary)] = &[
        ("Log", f32::ln),
        ("Sqrt", f32::sqrt),
        ("Rsqrt", |v| 1.0 / v.sqrt()),
        ("Reciprocal", |v| 1.0 / v),
    ];
    let binary: &[(&str, Binary)] = &[
        ("AddV2", |a, b| a + b),
        ("Add", |a, b| a + b),
        ("Sub", |a, b| a - b),
        ("Mul", |a, b| a * b),
        ("RealDiv", |a, b| a / b),
        ("Maximum", f32::max),
        ("Minimum", f32::min),
        ("SquaredDifference", |a, b| (a - b) * (a - b)),
        ("FloorDiv", |a, b| (a / b).floor()),
    ];
    let mut nodes = vec![
        placeholder("x", dt::FLOAT, &[-1, 3]),
        placeholder("p", dt::FLOAT, &[2, 3]),
        const_f32("b", &[3], &b),
        // Reached through an Identity chain, as frozen variables are.
        node("b/read", "Identity", &["b"], vec![("T", a_t(dt::FLOAT))]),
        node("b/read2", "Identity", &["b/read", "^x"], vec![]),
    ];
    let mut outputs = vec![];
    for (op, _) in unary {
        nodes.push(node(op, op, &["x"], vec![]));
        outputs.push(op.to_string());
    }
    for (op, _) in positive {
        nodes.push(node(op, op, &["p"], vec![]));
        outputs.push(op.to_string());
    }
    for (op, _) in binary {
        nodes.push(node(op, op, &["x", "b/read2"], vec![]));
        outputs.push(op.to_string());
    }
    nodes.push(node(
        "LeakyRelu",
        "LeakyRelu",
        &["x"],
        vec![("alpha", a_f(0.1))],
    ));
    nodes.push(node("Pow", "Pow", &["p", "b"], vec![]));
    nodes.push(node("AddN", "AddN", &["x", "p", "x"], vec![("N", a_i(3))]));
    outputs.extend(["LeakyRelu", "Pow", "AddN"].map(String::from));
    let outs: Vec<&str> = outputs.iter().map(|s| s.as_str()).collect();
    let got = run(
        nodes,
        &outs,
        &[
            ("x", f32t(&[2, 3], x.clone())),
            ("p", f32t(&[2, 3], p.clone())),
        ],
    );
    let mut k = 0;
    for (op, f) in unary {
        let want: Vec<f32> = x.iter().map(|&v| f(v)).collect();
        close(op, &f32s(&got[k]), &want);
        k += 1;
    }
    for (op, f) in positive {
        let want: Vec<f32> = p.iter().map(|&v| f(v)).collect();
        close(op, &f32s(&got[k]), &want);
        k += 1;
    }
    for (op, f) in binary {
        let want: Vec<f32> = x.iter().enumerate().map(|(i, &v)| f(v, b[i % 3])).collect();
        close(op, &f32s(&got[k]), &want);
        k += 1;
    }
    let leaky: Vec<f32> = x
        .iter()
        .map(|&v| if v > 0.0 { v } else { 0.1 * v })
        .collect();
    close("LeakyRelu", &f32s(&got[k]), &leaky);
    let pow: Vec<f32> = p
        .iter()
        .enumerate()
        .map(|(i, &v)| v.powf(b[i % 3]))
        .collect();
    close("Pow", &f32s(&got[k + 1]), &pow);
    let addn: Vec<f32> = x.iter().zip(&p).map(|(a, b)| 2.0 * a + b).collect();
    close("AddN", &f32s(&got[k + 2]), &addn);
}

#[test]
fn tf_compare_logic_select_cast() {
    let nodes = vec![
        placeholder("a", dt::FLOAT, &[2, 3]),
        placeholder("b", dt::FLOAT, &[2, 3]),
        placeholder("c", dt::BOOL, &[2]),
        node("less", "Less", &["a", "b"], vec![]),
        node("greater", "Greater", &["a", "b"], vec![]),
        node("equal", "Equal", &["a", "b"], vec![]),
        node("ne", "NotEqual", &["a", "b"], vec![]),
        node("ge", "GreaterEqual", &["a", "b"], vec![]),
        node("and", "LogicalAnd", &["less", "ne"], vec![]),
        node("not", "LogicalNot", &["less"], vec![]),
        // TF1 Select with a vector condition picks whole rows.
        node("rows", "Select", &["c", "a", "b"], vec![]),
        node("elems", "SelectV2", &["less", "a", "b"], vec![]),
        node("cast", "Cast", &["a"], vec![("DstT", a_t(dt::INT32))]),
    ];
    let a = vec![1.0f32, 2.0, 3.0, -4.5, 5.0, 6.0];
    let b = vec![3.0f32, 2.0, 1.0, 0.0, 5.0, 7.0];
    let got = run(
        nodes,
        &[
            "less", "greater", "equal", "ne", "ge", "and", "not", "rows", "elems", "cast",
        ],
        &[
            ("a", f32t(&[2, 3], a.clone())),
            ("b", f32t(&[2, 3], b.clone())),
            (
                "c",
                Tensor::new(vec![2], TensorData::Bool(vec![false, true])).unwrap(),
            ),
        ],
    );
    let cmp =
        |f: fn(f32, f32) -> bool| a.iter().zip(&b).map(|(&x, &y)| f(x, y)).collect::<Vec<_>>();
    assert_eq!(bools(&got[0]), cmp(|x, y| x < y));
    assert_eq!(bools(&got[1]), cmp(|x, y| x > y));
    assert_eq!(bools(&got[2]), cmp(|x, y| x == y));
    assert_eq!(bools(&got[3]), cmp(|x, y| x != y));
    assert_eq!(bools(&got[4]), cmp(|x, y| x >= y));
    assert_eq!(bools(&got[5]), cmp(|x, y| x < y && x != y));
    assert_eq!(bools(&got[6]), cmp(|x, y| x >= y));
    assert_eq!(f32s(&got[7]), [&b[..3], &a[3..]].concat());
    let elems: Vec<f32> = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| if x < y { x } else { y })
        .collect();
    assert_eq!(f32s(&got[8]), elems);
    assert_eq!(ints(&got[9]), vec![1, 2, 3, -4, 5, 6]);
}

// ------------------------------------------------------------ convolutions

struct ConvCase {
    stride: usize,
    dilation: usize,
    same: bool,
}

/// Direct NHWC convolution (regular or depthwise) with TensorFlow padding.
fn conv_ref(
    x: &[f32],
    [n, h, w, c]: [usize; 4],
    f: &[f32],
    [kh, kw, fi, fo]: [usize; 4],
    case: &ConvCase,
    depthwise: bool,
) -> (Vec<f32>, [usize; 4]) {
    let (s, d) = (case.stride, case.dilation);
    let eff_h = (kh - 1) * d + 1;
    let eff_w = (kw - 1) * d + 1;
    let (oh, ow, top, left) = if case.same {
        let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
        let th = ((oh - 1) * s + eff_h).saturating_sub(h);
        let tw = ((ow - 1) * s + eff_w).saturating_sub(w);
        (oh, ow, th / 2, tw / 2)
    } else {
        ((h - eff_h) / s + 1, (w - eff_w) / s + 1, 0, 0)
    };
    let oc = if depthwise { c * fo } else { fo };
    let mut out = vec![0f32; n * oh * ow * oc];
    for b in 0..n {
        for oy in 0..oh {
            for ox in 0..ow {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let iy = (oy * s + ky * d) as isize - top as isize;
                        let ix = (ox * s + kx * d) as isize - left as isize;
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let xi = ((b * h + iy as usize) * w + ix as usize) * c;
                        let o = ((b * oh + oy) * ow + ox) * oc;
                        for ic in 0..c {
                            let xv = x[xi + ic];
                            if depthwise {
                                for m in 0..fo {
                                    out[o + ic * fo + m] +=
                                        xv * f[((ky * kw + kx) * fi + ic) * fo + m];
                                }
                            } else {
                                for k in 0..fo {
                                    out[o + k] += xv * f[((ky * kw + kx) * fi + ic) * fo + k];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (out, [n, oh, ow, oc])
}

fn conv_attrs(case: &ConvCase) -> Vec<(&'static str, AttrValue)> {
    let (s, d) = (case.stride as i64, case.dilation as i64);
    vec![
        ("T", a_t(dt::FLOAT)),
        ("strides", a_ints(&[1, s, s, 1])),
        ("dilations", a_ints(&[1, d, d, 1])),
        ("padding", a_s(if case.same { "SAME" } else { "VALID" })),
        ("data_format", a_s("NHWC")),
    ]
}

fn conv_cases() -> Vec<ConvCase> {
    vec![
        ConvCase {
            stride: 1,
            dilation: 1,
            same: true,
        },
        ConvCase {
            stride: 2,
            dilation: 1,
            same: true,
        },
        ConvCase {
            stride: 2,
            dilation: 1,
            same: false,
        },
        ConvCase {
            stride: 1,
            dilation: 2,
            same: true,
        },
        ConvCase {
            stride: 3,
            dilation: 1,
            same: true,
        },
    ]
}

#[test]
fn tf_conv2d_nhwc_padding_strides_dilations() {
    let xs = [2, 7, 6, 3];
    let fs = [3, 2, 3, 4];
    let x = vals(xs.iter().product(), 0.3);
    let f = vals(fs.iter().product(), 1.1);
    // Once with a static input shape (explicit pads), once with unknown
    // spatial sizes (auto_pad).
    for dims in [[-1i64, 7, 6, 3], [-1, -1, -1, 3]] {
        let mut nodes = vec![
            placeholder("x", dt::FLOAT, &dims),
            const_f32("w", &[3, 2, 3, 4], &f),
        ];
        let cases = conv_cases();
        let names: Vec<String> = (0..cases.len()).map(|i| format!("conv{i}")).collect();
        for (case, name) in cases.iter().zip(&names) {
            nodes.push(node(name, "Conv2D", &["x", "w"], conv_attrs(case)));
        }
        let outs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let got = run(nodes, &outs, &[("x", f32t(&xs, x.clone()))]);
        for (i, case) in cases.iter().enumerate() {
            let (want, shape) = conv_ref(&x, xs, &f, fs, case, false);
            assert_eq!(got[i].shape, shape.to_vec(), "conv{i} shape ({dims:?})");
            close(&format!("conv{i} {dims:?}"), &f32s(&got[i]), &want);
        }
    }
}

#[test]
fn tf_depthwise_conv_and_bias() {
    let xs = [1, 6, 5, 2];
    let fs = [3, 3, 2, 3];
    let x = vals(xs.iter().product(), 0.9);
    let f = vals(fs.iter().product(), 2.2);
    let bias = vec![0.5f32, -1.0, 2.0, 0.25, -0.75, 1.5];
    let mut nodes = vec![
        placeholder("x", dt::FLOAT, &[1, 6, 5, 2]),
        const_f32("w", &[3, 3, 2, 3], &f),
        const_f32("bias", &[6], &bias),
    ];
    let cases = conv_cases();
    let mut outs = vec![];
    for (i, case) in cases.iter().enumerate() {
        let name = format!("dw{i}");
        nodes.push(node(
            &name,
            "DepthwiseConv2dNative",
            &["x", "w"],
            conv_attrs(case),
        ));
        outs.push(name);
    }
    nodes.push(node(
        "biased",
        "BiasAdd",
        &["dw0", "bias"],
        vec![("data_format", a_s("NHWC"))],
    ));
    outs.push("biased".into());
    let outs: Vec<&str> = outs.iter().map(|s| s.as_str()).collect();
    let got = run(nodes, &outs, &[("x", f32t(&xs, x.clone()))]);
    for (i, case) in cases.iter().enumerate() {
        let (want, shape) = conv_ref(&x, xs, &f, fs, case, true);
        assert_eq!(got[i].shape, shape.to_vec(), "dw{i} shape");
        close(&format!("dw{i}"), &f32s(&got[i]), &want);
    }
    let (dw0, _) = conv_ref(&x, xs, &f, fs, &cases[0], true);
    let want: Vec<f32> = dw0
        .iter()
        .enumerate()
        .map(|(i, v)| v + bias[i % 6])
        .collect();
    close("BiasAdd", &f32s(&got[cases.len()]), &want);
}

/// NHWC data → NCHW data.
fn to_nchw(x: &[f32], [n, h, w, c]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for b in 0..n {
        for y in 0..h {
            for xx in 0..w {
                for k in 0..c {
                    out[((b * c + k) * h + y) * w + xx] = x[((b * h + y) * w + xx) * c + k];
                }
            }
        }
    }
    out
}

#[test]
fn tf_conv_and_bias_channels_first() {
    let xs = [1, 5, 5, 2];
    let fs = [3, 3, 2, 3];
    let x = vals(xs.iter().product(), 0.4);
    let f = vals(fs.iter().product(), 1.7);
    let bias = vec![1.0f32, 2.0, 3.0];
    let case = ConvCase {
        stride: 2,
        dilation: 1,
        same: true,
    };
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[1, 2, 5, 5]),
        const_f32("w", &[3, 3, 2, 3], &f),
        const_f32("bias", &[3], &bias),
        node(
            "conv",
            "Conv2D",
            &["x", "w"],
            vec![
                ("strides", a_ints(&[1, 1, 2, 2])),
                ("padding", a_s("SAME")),
                ("data_format", a_s("NCHW")),
            ],
        ),
        node(
            "out",
            "BiasAdd",
            &["conv", "bias"],
            vec![("data_format", a_s("NCHW"))],
        ),
    ];
    let got = run(
        nodes,
        &["out"],
        &[("x", f32t(&[1, 2, 5, 5], to_nchw(&x, xs)))],
    );
    let (want, shape) = conv_ref(&x, xs, &f, fs, &case, false);
    let mut want = to_nchw(&want, shape);
    for (i, v) in want.iter_mut().enumerate() {
        *v += bias[(i / 9) % 3];
    }
    assert_eq!(got[0].shape, vec![1, 3, 3, 3]);
    close("NCHW conv", &f32s(&got[0]), &want);
}

#[test]
fn tf_pools() {
    let xs = [1, 5, 6, 2];
    let x = vals(xs.iter().product(), 0.2);
    let attrs = |same: bool| {
        vec![
            ("ksize", a_ints(&[1, 3, 3, 1])),
            ("strides", a_ints(&[1, 2, 2, 1])),
            ("padding", a_s(if same { "SAME" } else { "VALID" })),
        ]
    };
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[1, 5, 6, 2]),
        node("max_same", "MaxPool", &["x"], attrs(true)),
        node("avg_same", "AvgPool", &["x"], attrs(true)),
        node("max_valid", "MaxPool", &["x"], attrs(false)),
        node("avg_valid", "AvgPool", &["x"], attrs(false)),
    ];
    let got = run(
        nodes,
        &["max_same", "avg_same", "max_valid", "avg_valid"],
        &[("x", f32t(&xs, x.clone()))],
    );
    for (k, (same, max)) in [(true, true), (true, false), (false, true), (false, false)]
        .iter()
        .enumerate()
    {
        let (h, w, c) = (5usize, 6usize, 2usize);
        let (oh, ow, top, left) = if *same {
            let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
            (
                oh,
                ow,
                ((oh - 1) * 2 + 3 - h) / 2,
                ((ow - 1) * 2 + 3 - w) / 2,
            )
        } else {
            ((h - 3) / 2 + 1, (w - 3) / 2 + 1, 0, 0)
        };
        let mut want = vec![];
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut acc: Vec<f32> = vec![];
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let iy = (oy * 2 + ky) as isize - top as isize;
                            let ix = (ox * 2 + kx) as isize - left as isize;
                            if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                acc.push(x[(iy as usize * w + ix as usize) * c + ch]);
                            }
                        }
                    }
                    want.push(if *max {
                        acc.iter().copied().fold(f32::MIN, f32::max)
                    } else {
                        acc.iter().sum::<f32>() / acc.len() as f32
                    });
                }
            }
        }
        assert_eq!(got[k].shape, vec![1, oh, ow, c]);
        close(&format!("pool {k}"), &f32s(&got[k]), &want);
    }
}

#[test]
fn tf_fused_batch_norm() {
    let x = vals(2 * 2 * 2 * 3, 0.5);
    let (scale, offset, mean, var) = (
        vec![1.0f32, 2.0, 0.5],
        vec![0.1f32, -0.2, 0.3],
        vec![0.5f32, -0.5, 0.0],
        vec![1.0f32, 4.0, 0.25],
    );
    let eps = 0.001f32;
    let stats = |p: &str| {
        vec![
            const_f32(&format!("{p}scale"), &[3], &scale),
            const_f32(&format!("{p}offset"), &[3], &offset),
            const_f32(&format!("{p}mean"), &[3], &mean),
            const_f32(&format!("{p}var"), &[3], &var),
        ]
    };
    let bn_attrs = |fmt: &str| {
        vec![
            ("epsilon", a_f(eps)),
            ("is_training", a_b(false)),
            ("data_format", a_s(fmt)),
        ]
    };
    let mut nodes = vec![
        placeholder("x", dt::FLOAT, &[2, 2, 2, 3]),
        placeholder("xc", dt::FLOAT, &[2, 3, 2, 2]),
        // Statistics fed at run time take the general path.
        placeholder("mean_in", dt::FLOAT, &[3]),
    ];
    nodes.extend(stats(""));
    nodes.push(node(
        "bn",
        "FusedBatchNormV3",
        &["x", "scale", "offset", "mean", "var"],
        bn_attrs("NHWC"),
    ));
    nodes.push(node(
        "bnc",
        "FusedBatchNorm",
        &["xc", "scale", "offset", "mean", "var"],
        bn_attrs("NCHW"),
    ));
    nodes.push(node(
        "bnd",
        "FusedBatchNormV3",
        &["x", "scale", "offset", "mean_in", "var"],
        bn_attrs("NHWC"),
    ));
    let xs = [2, 2, 2, 3];
    let got = run(
        nodes,
        &["bn", "bnc", "bnd"],
        &[
            ("x", f32t(&xs, x.clone())),
            ("xc", f32t(&[2, 3, 2, 2], to_nchw(&x, xs))),
            ("mean_in", f32t(&[3], mean.clone())),
        ],
    );
    let want: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let c = i % 3;
            (v - mean[c]) / (var[c] + eps).sqrt() * scale[c] + offset[c]
        })
        .collect();
    close("FusedBatchNormV3 NHWC", &f32s(&got[0]), &want);
    close("FusedBatchNorm NCHW", &f32s(&got[1]), &to_nchw(&want, xs));
    close("FusedBatchNormV3 fed statistics", &f32s(&got[2]), &want);
}

// ------------------------------------------------------------ matrix products

fn matmul_ref(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
        }
    }
    out
}

fn transpose2(a: &[f32], r: usize, c: usize) -> Vec<f32> {
    (0..c)
        .flat_map(|j| (0..r).map(move |i| a[i * c + j]))
        .collect()
}

#[test]
fn tf_matmul_batch_matmul_softmax() {
    let a = vals(2 * 3, 0.1);
    let w = vals(3 * 4, 0.7);
    let wt = transpose2(&w, 3, 4); // [4, 3]
    let bm = vals(2 * 2 * 3, 1.3); // [2, 2, 3]
    let by = vals(2 * 4 * 3, 2.9); // [2, 4, 3], used with adj_y
    let nodes = vec![
        placeholder("a", dt::FLOAT, &[-1, 3]),
        placeholder("at", dt::FLOAT, &[3, 2]),
        placeholder("bm", dt::FLOAT, &[2, 2, 3]),
        placeholder("by", dt::FLOAT, &[2, 4, 3]),
        const_f32("wt", &[4, 3], &wt),
        node(
            "mm",
            "MatMul",
            &["a", "wt"],
            vec![("transpose_b", a_b(true))],
        ),
        node(
            "mm_ta",
            "MatMul",
            &["at", "wt"],
            vec![("transpose_a", a_b(true)), ("transpose_b", a_b(true))],
        ),
        node(
            "bmm",
            "BatchMatMulV2",
            &["bm", "by"],
            vec![("adj_y", a_b(true))],
        ),
        node("sm", "Softmax", &["mm"], vec![]),
        node("lsm", "LogSoftmax", &["mm"], vec![]),
    ];
    let got = run(
        nodes,
        &["mm", "mm_ta", "bmm", "sm", "lsm"],
        &[
            ("a", f32t(&[2, 3], a.clone())),
            ("at", f32t(&[3, 2], transpose2(&a, 2, 3))),
            ("bm", f32t(&[2, 2, 3], bm.clone())),
            ("by", f32t(&[2, 4, 3], by.clone())),
        ],
    );
    let mm = matmul_ref(&a, &w, 2, 3, 4);
    close("MatMul transpose_b", &f32s(&got[0]), &mm);
    close("MatMul transpose_a", &f32s(&got[1]), &mm);
    let mut bmm = vec![];
    for b in 0..2 {
        let yt = transpose2(&by[b * 12..(b + 1) * 12], 4, 3);
        bmm.extend(matmul_ref(&bm[b * 6..(b + 1) * 6], &yt, 2, 3, 4));
    }
    assert_eq!(got[2].shape, vec![2, 2, 4]);
    close("BatchMatMulV2 adj_y", &f32s(&got[2]), &bmm);
    let mut sm = vec![];
    for row in mm.chunks(4) {
        let m = row.iter().copied().fold(f32::MIN, f32::max);
        let e: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
        let s: f32 = e.iter().sum();
        sm.extend(e.iter().map(|v| v / s));
    }
    close("Softmax", &f32s(&got[3]), &sm);
    let lsm: Vec<f32> = sm.iter().map(|v| v.ln()).collect();
    close("LogSoftmax", &f32s(&got[4]), &lsm);
}

// ------------------------------------------------------------ reductions

#[test]
fn tf_reductions_and_argmax() {
    // x [2, 3, 2]
    let x: Vec<f32> = vec![
        1.0, -2.0, 3.0, 0.5, -1.0, 4.0, 2.0, 2.5, -3.0, 1.5, 0.25, -0.5,
    ];
    let at = |i: usize, j: usize, k: usize| x[(i * 3 + j) * 2 + k];
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[2, 3, 2]),
        const_i32("ax12", &[2], &[1, 2]),
        // A scalar axis whose value is in tensor_content, int_val empty.
        const_node(
            "ax1",
            TensorProto {
                dtype: dt::INT32,
                tensor_shape: Some(tshape(&[])),
                tensor_content: 1i32.to_le_bytes().to_vec(),
                ..Default::default()
            },
        ),
        const_i32("axneg", &[1], &[-1]),
        const_i32("none", &[0], &[]),
        node(
            "mean",
            "Mean",
            &["x", "ax12"],
            vec![("keep_dims", a_b(true))],
        ),
        node("sum", "Sum", &["x", "ax1"], vec![("keep_dims", a_b(false))]),
        node("max", "Max", &["x", "axneg"], vec![]),
        node("min", "Min", &["x", "ax1"], vec![]),
        node("prod", "Prod", &["x", "axneg"], vec![]),
        node("same", "Sum", &["x", "none"], vec![]),
        node(
            "argmax",
            "ArgMax",
            &["x", "ax1"],
            vec![("output_type", a_t(dt::INT32))],
        ),
        node("argmin", "ArgMin", &["x", "axneg"], vec![]),
    ];
    let got = run(
        nodes,
        &[
            "mean", "sum", "max", "min", "prod", "same", "argmax", "argmin",
        ],
        &[("x", f32t(&[2, 3, 2], x.clone()))],
    );
    let mean: Vec<f32> = (0..2)
        .map(|i| {
            (0..3)
                .flat_map(|j| (0..2).map(move |k| (j, k)))
                .map(|(j, k)| at(i, j, k))
                .sum::<f32>()
                / 6.0
        })
        .collect();
    assert_eq!(got[0].shape, vec![2, 1, 1]);
    close("Mean", &f32s(&got[0]), &mean);
    let over_j = |f: fn(f32, f32) -> f32, init: f32| -> Vec<f32> {
        (0..2)
            .flat_map(|i| (0..2).map(move |k| (i, k)))
            .map(|(i, k)| (0..3).map(|j| at(i, j, k)).fold(init, f))
            .collect()
    };
    assert_eq!(got[1].shape, vec![2, 2]);
    close("Sum", &f32s(&got[1]), &over_j(|a, b| a + b, 0.0));
    let over_k = |f: fn(f32, f32) -> f32| -> Vec<f32> {
        (0..6).map(|r| f(x[2 * r], x[2 * r + 1])).collect()
    };
    assert_eq!(got[2].shape, vec![2, 3]);
    close("Max", &f32s(&got[2]), &over_k(f32::max));
    close("Min", &f32s(&got[3]), &over_j(f32::min, f32::MAX));
    close("Prod", &f32s(&got[4]), &over_k(|a, b| a * b));
    assert_eq!(got[5].shape, vec![2, 3, 2], "empty axes reduce nothing");
    close("Sum over no axes", &f32s(&got[5]), &x);
    assert_eq!(got[6].dtype(), crate::tensor::DType::I32);
    let argmax: Vec<i64> = (0..2)
        .flat_map(|i| (0..2).map(move |k| (i, k)))
        .map(|(i, k)| {
            (0..3)
                .max_by(|&a, &b| at(i, a, k).total_cmp(&at(i, b, k)))
                .unwrap() as i64
        })
        .collect();
    assert_eq!(ints(&got[6]), argmax);
    let argmin: Vec<i64> = (0..6)
        .map(|r| if x[2 * r] <= x[2 * r + 1] { 0 } else { 1 })
        .collect();
    assert_eq!(ints(&got[7]), argmin);
}

// ------------------------------------------------------------ shapes

#[test]
fn tf_shape_ops() {
    // x [2, 3, 4] = 0..24
    let x: Vec<f32> = (0..24).map(|v| v as f32).collect();
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[-1, 3, 4]),
        placeholder("y", dt::FLOAT, &[-1, 3, 4]),
        const_i32("shape", &[2], &[-1, 6]),
        const_i32("dim", &[], &[-1]),
        const_i32("perm", &[3], &[2, 0, 1]),
        const_i32("axis1", &[], &[1]),
        const_i32("axis2", &[], &[2]),
        const_i32("sizes", &[3], &[1, -1, 2]),
        const_i32("mult", &[3], &[1, 2, 1]),
        const_i32("pads", &[3, 2], &[0, 0, 1, 0, 0, 2]),
        const_f32("pad_value", &[], &[9.0]),
        const_i32("fill_dims", &[2], &[2, 2]),
        const_f32("fill_value", &[], &[3.5]),
        const_i32("idx", &[2], &[2, 0]),
        node("reshape", "Reshape", &["x", "shape"], vec![]),
        node("expand", "ExpandDims", &["x", "dim"], vec![]),
        node(
            "squeeze",
            "Squeeze",
            &["expand"],
            vec![("squeeze_dims", a_ints(&[-1]))],
        ),
        node("transpose", "Transpose", &["x", "perm"], vec![]),
        node(
            "concat",
            "ConcatV2",
            &["x", "y", "axis1"],
            vec![("N", a_i(2))],
        ),
        node(
            "pack",
            "Pack",
            &["x", "y"],
            vec![("axis", a_i(1)), ("N", a_i(2))],
        ),
        node(
            "unpack",
            "Unpack",
            &["x"],
            vec![("num", a_i(3)), ("axis", a_i(1))],
        ),
        node(
            "split",
            "Split",
            &["axis2", "x"],
            vec![("num_split", a_i(2))],
        ),
        node(
            "splitv",
            "SplitV",
            &["x", "sizes", "axis2"],
            vec![("num_split", a_i(3))],
        ),
        node("tile", "Tile", &["x", "mult"], vec![]),
        node("pad", "Pad", &["x", "pads"], vec![]),
        node("padv2", "PadV2", &["x", "pads", "pad_value"], vec![]),
        node(
            "shape_of",
            "Shape",
            &["x"],
            vec![("out_type", a_t(dt::INT32))],
        ),
        node("fill", "Fill", &["fill_dims", "fill_value"], vec![]),
        node("gather", "GatherV2", &["x", "idx", "axis2"], vec![]),
        node("zeros", "ZerosLike", &["x"], vec![]),
    ];
    let got = run(
        nodes,
        &[
            "reshape",
            "expand",
            "squeeze",
            "transpose",
            "concat",
            "pack",
            "unpack:0",
            "unpack:2",
            "split:1",
            "splitv:1",
            "splitv:2",
            "tile",
            "pad",
            "padv2",
            "shape_of",
            "fill",
            "gather",
            "zeros",
        ],
        &[
            ("x", f32t(&[2, 3, 4], x.clone())),
            ("y", f32t(&[2, 3, 4], x.iter().map(|v| -v).collect())),
        ],
    );
    let at = |i: usize, j: usize, k: usize| x[(i * 3 + j) * 4 + k];
    assert_eq!(got[0].shape, vec![4, 6]);
    assert_eq!(f32s(&got[0]), x);
    assert_eq!(got[1].shape, vec![2, 3, 4, 1]);
    assert_eq!(got[2].shape, vec![2, 3, 4]);
    assert_eq!(got[3].shape, vec![4, 2, 3]);
    let tr: Vec<f32> = (0..4)
        .flat_map(|k| (0..2).flat_map(move |i| (0..3).map(move |j| (i, j, k))))
        .map(|(i, j, k)| at(i, j, k))
        .collect();
    assert_eq!(f32s(&got[3]), tr);
    assert_eq!(got[4].shape, vec![2, 6, 4]);
    let cat: Vec<f32> = (0..2)
        .flat_map(|i| (0..6).flat_map(move |j| (0..4).map(move |k| (i, j, k))))
        .map(|(i, j, k)| if j < 3 { at(i, j, k) } else { -at(i, j - 3, k) })
        .collect();
    assert_eq!(f32s(&got[4]), cat);
    assert_eq!(got[5].shape, vec![2, 2, 3, 4]);
    let pk: Vec<f32> = (0..2)
        .flat_map(|i| (0..2).flat_map(move |s| (0..12).map(move |r| (i, s, r))))
        .map(|(i, s, r)| {
            if s == 0 {
                x[i * 12 + r]
            } else {
                -x[i * 12 + r]
            }
        })
        .collect();
    assert_eq!(f32s(&got[5]), pk);
    assert_eq!(got[6].shape, vec![2, 4]);
    assert_eq!(f32s(&got[6]), [&x[0..4], &x[12..16]].concat());
    assert_eq!(f32s(&got[7]), [&x[8..12], &x[20..24]].concat());
    assert_eq!(got[8].shape, vec![2, 3, 2]);
    let right: Vec<f32> = (0..6).flat_map(|r| [x[r * 4 + 2], x[r * 4 + 3]]).collect();
    assert_eq!(f32s(&got[8]), right);
    assert_eq!(got[9].shape, vec![2, 3, 1], "SplitV's -1 takes the rest");
    assert_eq!(
        f32s(&got[9]),
        (0..6).map(|r| x[r * 4 + 1]).collect::<Vec<_>>()
    );
    assert_eq!(f32s(&got[10]), right);
    assert_eq!(got[11].shape, vec![2, 6, 4]);
    let tiled: Vec<f32> = (0..2)
        .flat_map(|i| (0..6).flat_map(move |j| (0..4).map(move |k| (i, j % 3, k))))
        .map(|(i, j, k)| at(i, j, k))
        .collect();
    assert_eq!(f32s(&got[11]), tiled);
    // Pad [[0,0],[1,0],[0,2]]: one row before axis 1, two columns after axis 2.
    assert_eq!(got[12].shape, vec![2, 4, 6]);
    let padded = |fill: f32| -> Vec<f32> {
        (0..2)
            .flat_map(|i| (0..4).flat_map(move |j| (0..6).map(move |k| (i, j, k))))
            .map(|(i, j, k)| {
                if j == 0 || k >= 4 {
                    fill
                } else {
                    at(i, j - 1, k)
                }
            })
            .collect()
    };
    assert_eq!(f32s(&got[12]), padded(0.0));
    assert_eq!(f32s(&got[13]), padded(9.0));
    assert_eq!(got[14].dtype(), crate::tensor::DType::I32);
    assert_eq!(ints(&got[14]), vec![2, 3, 4], "Shape with a dynamic batch");
    assert_eq!(f32s(&got[15]), vec![3.5; 4]);
    assert_eq!(got[16].shape, vec![2, 3, 2]);
    let g: Vec<f32> = (0..6).flat_map(|r| [x[r * 4 + 2], x[r * 4]]).collect();
    assert_eq!(f32s(&got[16]), g);
    assert_eq!(f32s(&got[17]), vec![0.0; 24]);
}

#[test]
fn tf_strided_slice_and_slice() {
    // x [3, 4, 5] = 0..60
    let x: Vec<f32> = (0..60).map(|v| v as f32).collect();
    let at = |i: i64, j: i64, k: i64| x[((i * 4 + j) * 5 + k) as usize];
    let c = |name: &str, v: &[i32]| const_i32(name, &[v.len() as i64], v);
    let ss = |name: &str, tag: &str, masks: &[(&'static str, i64)]| {
        node(
            name,
            "StridedSlice",
            &[
                "x",
                &format!("{tag}_b"),
                &format!("{tag}_e"),
                &format!("{tag}_s"),
            ],
            masks.iter().map(|&(k, v)| (k, a_i(v))).collect(),
        )
    };
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[-1, 4, 5]),
        // x[1:, ::2, 4:0:-2]
        c("a_b", &[1, 0, 4]),
        c("a_e", &[0, 0, 0]),
        c("a_s", &[1, 2, -2]),
        ss("a", "a", &[("end_mask", 0b011)]),
        // x[-1, :, 2] (shrink twice, begin/end masks on the middle)
        c("b_b", &[-1, 0, 2]),
        c("b_e", &[0, 0, 3]),
        c("b_s", &[1, 1, 1]),
        ss(
            "b",
            "b",
            &[
                ("shrink_axis_mask", 0b101),
                ("begin_mask", 0b010),
                ("end_mask", 0b010),
            ],
        ),
        // x[..., 1:3] with an ellipsis
        c("c_b", &[0, 1]),
        c("c_e", &[0, 3]),
        c("c_s", &[1, 1]),
        ss("c", "c", &[("ellipsis_mask", 0b01)]),
        // x[0, tf.newaxis, 1:3] → [1, 2, 5]
        c("d_b", &[0, 0, 1]),
        c("d_e", &[1, 0, 3]),
        c("d_s", &[1, 1, 1]),
        ss(
            "d",
            "d",
            &[("shrink_axis_mask", 0b001), ("new_axis_mask", 0b010)],
        ),
        // tf.slice(x, [1, 2, 0], [1, -1, 3])
        c("sl_b", &[1, 2, 0]),
        c("sl_z", &[1, -1, 3]),
        node("sl", "Slice", &["x", "sl_b", "sl_z"], vec![]),
    ];
    let got = run(
        nodes,
        &["a", "b", "c", "d", "sl"],
        &[("x", f32t(&[3, 4, 5], x.clone()))],
    );
    let mut a = vec![];
    for i in 1..3 {
        for j in (0..4).step_by(2) {
            for k in [4, 2] {
                a.push(at(i, j, k));
            }
        }
    }
    assert_eq!(got[0].shape, vec![2, 2, 2]);
    assert_eq!(f32s(&got[0]), a);
    assert_eq!(got[1].shape, vec![4]);
    assert_eq!(
        f32s(&got[1]),
        (0..4).map(|j| at(2, j, 2)).collect::<Vec<_>>()
    );
    assert_eq!(got[2].shape, vec![3, 4, 2]);
    let cc: Vec<f32> = (0..12).flat_map(|r| [x[r * 5 + 1], x[r * 5 + 2]]).collect();
    assert_eq!(f32s(&got[2]), cc);
    assert_eq!(got[3].shape, vec![1, 2, 5]);
    assert_eq!(f32s(&got[3]), x[5..15].to_vec());
    assert_eq!(got[4].shape, vec![1, 2, 3]);
    let sl: Vec<f32> = (2..4)
        .flat_map(|j| (0..3).map(move |k| at(1, j, k)))
        .collect();
    assert_eq!(f32s(&got[4]), sl);
}

#[test]
fn tf_range_one_hot_int_ops() {
    let nodes = vec![
        placeholder("n", dt::INT32, &[]),
        placeholder("idx", dt::INT32, &[4]),
        const_i32("zero", &[], &[0]),
        const_i32("two", &[], &[2]),
        const_i32("depth", &[], &[3]),
        const_f32("on", &[], &[5.0]),
        const_f32("off", &[], &[-1.0]),
        node(
            "range",
            "Range",
            &["zero", "n", "two"],
            vec![("Tidx", a_t(dt::INT32))],
        ),
        node(
            "onehot",
            "OneHot",
            &["idx", "depth", "on", "off"],
            vec![("axis", a_i(-1))],
        ),
    ];
    let got = run(
        nodes,
        &["range", "onehot"],
        &[
            ("n", i32t(&[], vec![7])),
            ("idx", i32t(&[4], vec![0, 2, -1, 1])),
        ],
    );
    assert_eq!(ints(&got[0]), vec![0, 2, 4, 6]);
    assert_eq!(got[1].shape, vec![4, 3]);
    #[rustfmt::skip]
    let want = vec![
        5.0, -1.0, -1.0,
        -1.0, -1.0, 5.0,
        -1.0, -1.0, -1.0, // a negative index is all off in TensorFlow
        -1.0, 5.0, -1.0,
    ];
    assert_eq!(f32s(&got[1]), want);
}

#[test]
fn tf_textcnn_like_embedding_block() {
    // GatherV2 → ExpandDims → Conv2D (as conv1d) → Squeeze → BiasAdd →
    // Relu → Max over time → l2_normalize, as in the zoo's textcnn.
    let vocab = 7;
    let emb = vals(vocab * 4, 0.6); // [7, 4]
    let f = vals(2 * 4 * 3, 1.9); // [1, 2, 4, 3] as conv1d over time
    let bias = vec![0.1f32, -0.3, 0.2];
    let nodes = vec![
        placeholder("ids", dt::INT32, &[-1, 5]),
        const_f32("emb", &[7, 4], &emb),
        const_i32("axis0", &[], &[0]),
        node(
            "lookup",
            "GatherV2",
            &["emb", "ids", "axis0"],
            vec![("batch_dims", a_i(0))],
        ),
        const_i32("dim1", &[], &[1]),
        node("expand", "ExpandDims", &["lookup", "dim1"], vec![]),
        const_f32("w", &[1, 2, 4, 3], &f),
        node(
            "conv",
            "Conv2D",
            &["expand", "w"],
            vec![
                ("strides", a_ints(&[1, 1, 1, 1])),
                ("padding", a_s("VALID")),
            ],
        ),
        node(
            "sq",
            "Squeeze",
            &["conv"],
            vec![("squeeze_dims", a_ints(&[1]))],
        ),
        const_f32("bias", &[3], &bias),
        node("ba", "BiasAdd", &["sq", "bias"], vec![]),
        node("relu", "Relu", &["ba"], vec![]),
        node("time", "Max", &["relu", "dim1"], vec![]),
        node("square", "Square", &["time"], vec![]),
        const_i32("last", &[1], &[1]),
        node(
            "sum",
            "Sum",
            &["square", "last"],
            vec![("keep_dims", a_b(true))],
        ),
        const_f32("eps", &[], &[1e-12]),
        node("maximum", "Maximum", &["sum", "eps"], vec![]),
        node("rsqrt", "Rsqrt", &["maximum"], vec![]),
        node("l2", "Mul", &["time", "rsqrt"], vec![]),
    ];
    let ids = vec![1, 3, 6, 0, 2, 5, 5, 4, 1, 0];
    let got = run(nodes, &["l2"], &[("ids", i32t(&[2, 5], ids.clone()))]);
    let mut want = vec![];
    for b in 0..2 {
        let mut best = [f32::MIN; 3];
        for t in 0..4 {
            for (o, slot) in best.iter_mut().enumerate() {
                let mut acc = bias[o];
                for dt_ in 0..2 {
                    let tok = ids[b * 5 + t + dt_] as usize;
                    for c in 0..4 {
                        acc += emb[tok * 4 + c] * f[(dt_ * 4 + c) * 3 + o];
                    }
                }
                *slot = slot.max(acc.max(0.0));
            }
        }
        let norm = best.iter().map(|v| v * v).sum::<f32>().max(1e-12).sqrt();
        want.extend(best.iter().map(|v| v / norm));
    }
    close("textcnn block", &f32s(&got[0]), &want);
}

// ------------------------------------------------------------ graph walk

#[test]
fn tf_default_inputs_outputs_and_names() {
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[-1, 2]),
        placeholder("unused", dt::FLOAT, &[1]),
        node("relu", "Relu", &["x"], vec![]),
        node("out", "Identity", &["relu", "^init"], vec![]),
        node("init", "NoOp", &[], vec![]),
        const_f32("dangling", &[1], &[1.0]),
    ];
    let model = import(&encode(nodes), &ImportOptions::default()).unwrap();
    let g = onnx::graph(&model);
    let ins: Vec<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    let outs: Vec<&str> = g.output.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(ins, ["x:0"], "only the Placeholders the outputs need");
    assert_eq!(outs, ["out:0"], "sinks, not NoOps or dangling constants");
    assert_eq!(crate::onnx::opset(&model), 17);
}

#[test]
fn tf_explicit_inputs_cut_the_graph_and_shapes_override() {
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[-1, 2]),
        node("neg", "Neg", &["x"], vec![("T", a_t(dt::FLOAT))]),
        node("out", "Relu", &["neg"], vec![]),
    ];
    let opts = ImportOptions {
        inputs: Some(vec!["neg:0".into()]),
        outputs: Some(vec!["out".into()]),
        input_shapes: vec![("neg".into(), vec![3, 2])],
    };
    let model = import(&encode(nodes), &opts).unwrap();
    let mut e = Engine::from_bytes(
        &onnx::to_bytes(&model),
        &SessionSettings::new(GraphLevel::Disable, 1),
    )
    .unwrap();
    assert_eq!(e.signature().inputs[0].name, "neg:0");
    assert_eq!(e.signature().inputs[0].shape, vec![3, 2]);
    let out = e
        .run(&[(
            "neg:0".into(),
            f32t(&[3, 2], vec![-1.0, 2.0, -3.0, 4.0, 0.0, -0.5]),
        )])
        .unwrap();
    assert_eq!(f32s(&out[0].1), vec![0.0, 2.0, 0.0, 4.0, 0.0, 0.0]);
}

#[test]
fn tf_back_to_back_convs_cancel_transposes() {
    let f = vals(3 * 3 * 2 * 2, 0.8);
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[1, 4, 4, 2]),
        const_f32("w", &[3, 3, 2, 2], &f),
        node(
            "c1",
            "Conv2D",
            &["x", "w"],
            vec![("strides", a_ints(&[1, 1, 1, 1])), ("padding", a_s("SAME"))],
        ),
        node(
            "c2",
            "Conv2D",
            &["c1", "w"],
            vec![("strides", a_ints(&[1, 1, 1, 1])), ("padding", a_s("SAME"))],
        ),
    ];
    let model = import(&encode(nodes.clone()), &ImportOptions::default()).unwrap();
    let transposes = onnx::graph(&model)
        .node
        .iter()
        .filter(|n| n.op_type == "Transpose")
        .count();
    assert_eq!(transposes, 2, "only the entry and exit transposes remain");
    let x = vals(32, 0.1);
    let got = run(nodes, &["c2"], &[("x", f32t(&[1, 4, 4, 2], x.clone()))]);
    let case = ConvCase {
        stride: 1,
        dilation: 1,
        same: true,
    };
    let (c1, s1) = conv_ref(&x, [1, 4, 4, 2], &f, [3, 3, 2, 2], &case, false);
    let (c2, _) = conv_ref(&c1, s1, &f, [3, 3, 2, 2], &case, false);
    close("two convs", &f32s(&got[0]), &c2);
}

#[test]
fn tf_unsupported_ops_are_all_listed() {
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[2]),
        node("a/b", "FooOp", &["x"], vec![]),
        node("c", "BarOp", &["a/b"], vec![]),
        node("d", "Relu", &["c"], vec![]),
        // Not needed by the output: not reported.
        node("e", "BazOp", &["x"], vec![]),
    ];
    let opts = ImportOptions {
        outputs: Some(vec!["d".into()]),
        ..Default::default()
    };
    let e = import(&encode(nodes), &opts).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, OptimizerError::TfImport(_)));
    assert!(
        msg.contains("unsupported TensorFlow ops: FooOp (node a/b), BarOp (node c)"),
        "{msg}"
    );
    assert!(!msg.contains("BazOp"), "{msg}");
}

#[test]
fn tf_malformed_graphs_are_errors() {
    // Not a protobuf at all.
    let e = import(b"\xff\xff\xff garbage", &ImportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("not a TensorFlow GraphDef"), "{e}");
    // An input naming no node.
    let e = import(
        &encode(vec![node("r", "Relu", &["ghost"], vec![])]),
        &ImportOptions::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("input 'ghost' names no node"), "{e}");
    // A Conv2D without a constant-shaped filter attribute it needs.
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[1, 4, 4, 2]),
        placeholder("w", dt::FLOAT, &[]),
        node("c", "Conv2D", &["x", "w"], vec![("padding", a_s("SAME"))]),
    ];
    let e = import(&encode(nodes), &ImportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("node 'c' (Conv2D)"), "{e}");
    // A Const with a bad payload names the node.
    let bad = const_node(
        "k",
        TensorProto {
            dtype: dt::FLOAT,
            tensor_shape: Some(tshape(&[4])),
            tensor_content: vec![1, 2, 3],
            ..Default::default()
        },
    );
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[4]),
        bad,
        node("m", "Mul", &["x", "k"], vec![]),
    ];
    let e = import(&encode(nodes), &ImportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("node 'k' (Const)"), "{e}");
    // A TF1 while loop (a cycle) is refused, not looped over.
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[1]),
        node("a", "Add", &["x", "b"], vec![]),
        node("b", "Relu", &["a"], vec![]),
    ];
    let opts = ImportOptions {
        outputs: Some(vec!["b".into()]),
        ..Default::default()
    };
    let e = import(&encode(nodes), &opts).unwrap_err();
    assert!(e.to_string().contains("cycle"), "{e}");
    // An input of unknown rank must be given a shape.
    let mut unranked = placeholder("x", dt::FLOAT, &[]);
    unranked.attr.insert(
        "shape".into(),
        av(Value::Shape(TensorShapeProto {
            dim: vec![],
            unknown_rank: true,
        })),
    );
    let nodes = vec![unranked.clone(), node("r", "Relu", &["x"], vec![])];
    let e = import(&encode(nodes.clone()), &ImportOptions::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("input node 'x' (Placeholder): the Placeholder's rank is unknown"),
        "{e}"
    );
    let opts = ImportOptions {
        input_shapes: vec![("x".into(), vec![-1, 2])],
        ..Default::default()
    };
    assert!(import(&encode(nodes), &opts).is_ok());
    // Unknown outputs.
    let opts = ImportOptions {
        outputs: Some(vec!["nope".into()]),
        ..Default::default()
    };
    let e = import(&encode(vec![placeholder("x", dt::FLOAT, &[1])]), &opts).unwrap_err();
    assert!(
        e.to_string()
            .contains("output nodes not in the graph: nope"),
        "{e}"
    );
}

#[test]
fn a_saved_model_folder_is_read_as_one_and_its_bare_pb_is_told_to_come_with_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("variables")).unwrap();
    // saved_model_schema_version = 1, then a meta graph without tags.
    let saved = [0x08u8, 0x01, 0x12, 0x00];
    let pb = dir.path().join("saved_model.pb");
    std::fs::write(&pb, saved).unwrap();
    // The folder, or its saved_model.pb beside variables/, is read as a
    // SavedModel: this one has no MetaGraphDef for serving.
    for path in [dir.path().to_path_buf(), pb.clone()] {
        let e = import_path(&path, &ImportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("saved_model.pb"), "{e}");
        assert!(e.contains("no MetaGraphDef is tagged 'serve'"), "{e}");
    }
    // The same bytes handed over alone, as a frozen graph would be.
    let e = import(&saved, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("SavedModel") && e.contains("variables/ folder"),
        "{e}"
    );
}

#[test]
fn tf_op_census_counts_and_flags() {
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[1]),
        node("a", "Relu", &["x"], vec![]),
        node("b", "Relu", &["a"], vec![]),
        node("c", "FooOp", &["b"], vec![]),
    ];
    let census = op_census(&encode(nodes)).unwrap();
    let row = |op: &str| census.iter().find(|c| c.op == op).cloned().unwrap();
    assert_eq!((row("Relu").count, row("Relu").supported), (2, true));
    assert!(!row("FooOp").supported);
    assert!(row("Placeholder").supported);
}

// ------------------------------------------------- hostile constant sizes

/// A float Const of `shape` whose values are one `float_val` (TensorFlow
/// splats the last value over the shape).
fn splat_f32(name: &str, shape: &[i64], v: f32) -> NodeDef {
    const_node(
        name,
        TensorProto {
            dtype: dt::FLOAT,
            tensor_shape: Some(tshape(shape)),
            float_val: vec![v],
            ..Default::default()
        },
    )
}

#[test]
fn tf_huge_splatted_const_is_refused_before_allocating() {
    // 2^40 × 1024 floats = 4 PiB from one value: refused with the node, the
    // shape, the bytes and the limit, not allocated (this test finishing,
    // rather than the process aborting, is the proof).
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[1]),
        splat_f32("huge", &[1 << 40, 1024], 1.0),
        node("m", "Mul", &["x", "huge"], vec![]),
    ];
    let pb = encode(nodes);
    assert!(pb.len() < 200, "the hostile graph is {} bytes", pb.len());
    let check = |e: &str| {
        assert!(e.contains("node 'huge' (Const)"), "{e}");
        assert!(e.contains("[1099511627776, 1024]"), "{e}");
        assert!(e.contains("4503599627370496 bytes"), "{e}");
        assert!(e.contains(&super::MAX_CONSTANT_BYTES.to_string()), "{e}");
    };
    let e = import(&pb, &ImportOptions::default()).unwrap_err();
    assert!(matches!(e, OptimizerError::TfImport(_)), "{e:?}");
    check(&e.to_string());
    // From a file, the way uploads are imported: the path is named too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.pb");
    std::fs::write(&path, &pb).unwrap();
    let e = import_path(&path, &ImportOptions::default())
        .unwrap_err()
        .to_string();
    check(&e);
    assert!(e.contains("hostile.pb"), "{e}");
    // A shape whose element count overflows usize.
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[1]),
        splat_f32("wide", &[1 << 62, 1 << 62], 0.0),
        node("m", "Mul", &["x", "wide"], vec![]),
    ];
    let e = import(&encode(nodes), &ImportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("node 'wide' (Const)") && e.contains("overflows"),
        "{e}"
    );
}

#[test]
fn tf_const_content_length_must_match_its_shape() {
    for (content, shape) in [(12usize, vec![2i64, 2]), (16, vec![1 << 40, 4])] {
        let bad = const_node(
            "k",
            TensorProto {
                dtype: dt::FLOAT,
                tensor_shape: Some(tshape(&shape)),
                tensor_content: vec![0; content],
                ..Default::default()
            },
        );
        let nodes = vec![
            placeholder("x", dt::FLOAT, &[4]),
            bad,
            node("m", "Mul", &["x", "k"], vec![]),
        ];
        let e = import(&encode(nodes), &ImportOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("node 'k' (Const)"), "{e}");
        assert!(
            e.contains(&format!("{shape:?}"))
                && e.contains(&format!("tensor_content has {content}")),
            "{e}"
        );
    }
}

#[test]
fn tf_constants_of_one_import_are_limited_together() {
    // Three 4 KiB splats under a 10 KiB total: the third is refused, by name.
    let nodes = vec![
        placeholder("x", dt::FLOAT, &[1024]),
        splat_f32("c1", &[1024], 1.0),
        splat_f32("c2", &[1024], 2.0),
        splat_f32("c3", &[1024], 3.0),
        node("a1", "Add", &["x", "c1"], vec![]),
        node("a2", "Add", &["a1", "c2"], vec![]),
        node("a3", "Add", &["a2", "c3"], vec![]),
    ];
    let pb = encode(nodes);
    let e = super::import::import_limited(&pb, &ImportOptions::default(), 10 << 10)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("node 'c3' (Const)") && e.contains("over the limit of 10240 bytes"),
        "{e}"
    );
    assert!(super::import::import_limited(&pb, &ImportOptions::default(), 16 << 10).is_ok());
    // One constant copied by many consuming nodes (each Transpose of a
    // constant is folded into a new constant) is held to the same total.
    let mut nodes = vec![
        splat_f32("w", &[32, 32], 1.0),
        const_i32("perm", &[2], &[1, 0]),
    ];
    for i in 0..5 {
        nodes.push(node(&format!("t{i}"), "Transpose", &["w", "perm"], vec![]));
    }
    let e = super::import::import_limited(&encode(nodes), &ImportOptions::default(), 16 << 10)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("(Transpose)") && e.contains("over the limit of 16384 bytes"),
        "{e}"
    );
}
