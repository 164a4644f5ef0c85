//! The TensorFlow importer on the zoo's frozen graphs: import, run in ONNX
//! Runtime on the zoo's test inputs, compare with TensorFlow's outputs.
//! Needs the zoo (`WHETSTONE_ZOO`, default `../../shared/zoo` from this
//! crate) and the ONNX Runtime library (`scripts/install-onnxruntime.sh`).

use std::path::{Path, PathBuf};

use optimizer::data::{self, Dataset};
use optimizer::engine::{Engine, GraphLevel, SessionSettings};
use optimizer::onnx;
use optimizer::tensor::Tensor;
use optimizer::tf::{self, ImportOptions};
use shared::api::{ModelSignature, TensorSpec};

fn zoo() -> PathBuf {
    let dir = std::env::var_os("WHETSTONE_ZOO")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/zoo"));
    assert!(
        dir.join("textcnn_frozen.pb").is_file() && dir.join("mobilenet_v2_frozen.pb").is_file(),
        "the model zoo is missing: no textcnn_frozen.pb / mobilenet_v2_frozen.pb in {}; set \
         WHETSTONE_ZOO to the folder holding the zoo's models and data files",
        dir.display()
    );
    dir
}

fn read(name: &str) -> Vec<u8> {
    let p = zoo().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn census_of_zoo_graphs() {
    for file in ["mobilenet_v2_frozen.pb", "textcnn_frozen.pb"] {
        let census = tf::op_census(&read(file)).expect("the graph decodes");
        eprintln!("{file}: {census:?}");
        let missing: Vec<&str> = census
            .iter()
            .filter(|c| !c.supported)
            .map(|c| c.op.as_str())
            .collect();
        assert!(missing.is_empty(), "{file}: unsupported ops {missing:?}");
    }
}

fn sig_of(outputs: &[(&str, &[i64])]) -> ModelSignature {
    ModelSignature {
        format: "onnx".into(),
        inputs: outputs
            .iter()
            .map(|&(name, shape)| TensorSpec {
                name: name.into(),
                datatype: "FP32".into(),
                shape: shape.to_vec(),
            })
            .collect(),
        outputs: vec![],
    }
}

/// The reference arrays of a `ref_*.npz`, one sample per row.
fn references(file: &str, key: &str, width: i64) -> Dataset {
    data::load(&zoo().join(file), &sig_of(&[(key, &[-1, width])]))
        .expect("the reference file reads")
}

fn engine(model: &onnx::ModelProto) -> Engine {
    Engine::from_bytes(
        &onnx::to_bytes(model),
        &SessionSettings::new(GraphLevel::All, 1),
    )
    .expect("ONNX Runtime loads the imported model")
}

fn f32s(t: &Tensor) -> Vec<f32> {
    match &t.data {
        optimizer::tensor::TensorData::F32(v) => v.clone(),
        other => panic!("expected FP32, got {:?}", other.dtype()),
    }
}

/// max |a − b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, &x| m.max(x.abs() as f64));
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

#[test]
fn textcnn_matches_tensorflow() {
    let opts = ImportOptions {
        outputs: Some(vec!["l2_normalize".into()]),
        ..Default::default()
    };
    let model = tf::import(&read("textcnn_frozen.pb"), &opts).expect("textcnn imports");
    let mut e = engine(&model);
    let sig = e.signature().clone();
    assert_eq!(sig.inputs.len(), 1);
    assert_eq!(sig.inputs[0].name, "input_ids:0");
    assert_eq!(sig.inputs[0].datatype, "INT32");
    assert_eq!(sig.outputs[0].name, "l2_normalize:0");
    let inputs = data::load(&zoo().join("test_textcnn.npz"), &sig).expect("test data reads");
    let refs = references("ref_textcnn.npz", "l2_normalize", 128);
    assert_eq!(inputs.samples.len(), refs.samples.len());
    for (i, (x, r)) in inputs.samples.iter().zip(&refs.samples).enumerate() {
        let out = e.run(x).expect("runs");
        let err = rel_err(&f32s(&out[0].1), &f32s(&r[0].1));
        eprintln!("textcnn sample {i}: relative error {err:e}");
        assert!(err <= 1e-4, "sample {i}: relative error {err}");
    }
    // The feed-dict twin of the test data gives the same inputs.
    let npy = data::load(&zoo().join("test_textcnn.npy"), &sig).expect("feed dicts read");
    assert_eq!(npy.samples, inputs.samples);
}

#[test]
fn textcnn_default_outputs_and_inputs() {
    // Without options: the Placeholder is the input, the final Identity (the
    // graph's only sink; NoOp is left out) the output.
    let pb = read("textcnn_frozen.pb");
    let model = tf::import(&pb, &ImportOptions::default()).expect("imports");
    let g = onnx::graph(&model);
    let ins: Vec<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    let outs: Vec<&str> = g.output.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(ins, ["input_ids:0"]);
    assert_eq!(outs, ["Identity:0"]);
    let mut e = engine(&model);
    let sig = e.signature().clone();
    let inputs = data::load(&zoo().join("test_textcnn.npz"), &sig).expect("test data reads");
    let refs = references("ref_textcnn.npz", "l2_normalize", 128);
    let out = e.run(&inputs.samples[0]).expect("runs");
    assert!(rel_err(&f32s(&out[0].1), &f32s(&refs.samples[0][0].1)) <= 1e-4);
}

const LOGITS: &str = "mobilenetv2_1.00_224_1/predictions_1/BiasAdd";

#[test]
fn mobilenet_matches_tensorflow() {
    let opts = ImportOptions {
        outputs: Some(vec!["output".into(), LOGITS.into()]),
        ..Default::default()
    };
    let model = tf::import(&read("mobilenet_v2_frozen.pb"), &opts).expect("mobilenet imports");
    let mut e = engine(&model);
    let sig = e.signature().clone();
    assert_eq!(sig.inputs[0].name, "input:0");
    assert_eq!(
        sig.inputs[0].shape,
        vec![-1, 224, 224, 3],
        "NHWC stays the interface"
    );
    let names: Vec<&str> = sig.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["output:0", &format!("{LOGITS}:0")]);
    let inputs = data::load(&zoo().join("test_mobilenet_v2.npy"), &sig).expect("feed dicts read");
    let refs = references("ref_mobilenet_v2.npz", "output", 1000);
    assert_eq!(inputs.samples.len(), refs.samples.len());
    for (i, (x, r)) in inputs.samples.iter().zip(&refs.samples).enumerate() {
        let out = e.run(x).expect("runs");
        let (probs, logits) = (f32s(&out[0].1), f32s(&out[1].1));
        let err = rel_err(&probs, &f32s(&r[0].1));
        assert!(err <= 1e-4, "sample {i}: softmax relative error {err}");
        // The random-weight logits are tiny (MANIFEST.md) but not all equal.
        let spread = logits.iter().fold(0f32, |m, &x| m.max(x.abs()));
        assert!(
            spread > 0.0 && spread < 1e-6,
            "sample {i}: max |logit| {spread}"
        );
        assert!(logits.iter().any(|&l| l != logits[0]));
    }
}

/// The zoo keeps only the (uniform) softmax of the random-weight mobilenet,
/// which cannot tell a right conversion from a wrong one. So its logits are
/// checked against a direct NHWC evaluation of the TensorFlow graph itself
/// (naive loops, TensorFlow's padding rules), on two test images.
#[test]
fn mobilenet_logits_match_direct_evaluation() {
    use prost::Message;
    let pb = read("mobilenet_v2_frozen.pb");
    let graph = tf::proto::GraphDef::decode(pb.as_slice()).expect("decodes");
    let opts = ImportOptions {
        outputs: Some(vec![LOGITS.into()]),
        ..Default::default()
    };
    let model = tf::import(&pb, &opts).expect("mobilenet imports");
    let mut e = engine(&model);
    let sig = e.signature().clone();
    let inputs = data::load(&zoo().join("test_mobilenet_v2.npy"), &sig).expect("feed dicts read");
    for (i, x) in inputs.samples.iter().take(2).enumerate() {
        let got = f32s(&e.run(x).expect("runs")[0].1);
        let input = direct::Arr {
            shape: x[0].1.shape.clone(),
            data: f32s(&x[0].1),
        };
        let want = direct::evaluate(&graph, "input", input, LOGITS);
        assert_eq!(want.data.len(), got.len());
        let err = rel_err(&got, &want.data);
        eprintln!("sample {i}: logits relative error {err:e}");
        assert!(err <= 1e-4, "sample {i}: logits relative error {err}");
    }
}

/// A direct evaluator of the ops of the zoo's mobilenet graph, in NHWC.
mod direct {
    use std::collections::HashMap;

    use optimizer::tensor::TensorData;
    use optimizer::tf::proto::{attr_value::Value, GraphDef, NodeDef};

    #[derive(Clone)]
    pub struct Arr {
        pub shape: Vec<usize>,
        pub data: Vec<f32>,
    }

    pub fn evaluate(g: &GraphDef, input: &str, x: Arr, target: &str) -> Arr {
        let nodes: HashMap<&str, &NodeDef> = g.node.iter().map(|n| (n.name.as_str(), n)).collect();
        let mut memo: HashMap<String, Arr> = HashMap::new();
        memo.insert(input.to_string(), x);
        eval(&nodes, &mut memo, target)
    }

    fn eval(nodes: &HashMap<&str, &NodeDef>, memo: &mut HashMap<String, Arr>, name: &str) -> Arr {
        if let Some(a) = memo.get(name) {
            return a.clone();
        }
        let n = nodes[name];
        let ins: Vec<Arr> = n
            .input
            .iter()
            .filter(|s| !s.starts_with('^'))
            .map(|s| eval(nodes, memo, s.split(':').next().unwrap()))
            .collect();
        let out = op(n, &ins);
        memo.insert(name.to_string(), out.clone());
        out
    }

    fn attr<'a>(n: &'a NodeDef, k: &str) -> Option<&'a Value> {
        n.attr.get(k).and_then(|a| a.value.as_ref())
    }

    fn ints(n: &NodeDef, k: &str) -> Vec<i64> {
        match attr(n, k) {
            Some(Value::List(l)) => l.i.clone(),
            _ => vec![1, 1, 1, 1],
        }
    }

    fn same(n: &NodeDef) -> bool {
        match attr(n, "padding") {
            Some(Value::S(s)) => s == b"SAME",
            other => panic!("{}: padding {other:?}", n.name),
        }
    }

    fn op(n: &NodeDef, x: &[Arr]) -> Arr {
        match n.op.as_str() {
            "Const" => {
                let Some(Value::Tensor(t)) = attr(n, "value") else {
                    panic!("{}", n.name)
                };
                let t = optimizer::tf::const_tensor(t).unwrap();
                let data = match &t.data {
                    TensorData::F32(v) => v.clone(),
                    other => other.to_f64().iter().map(|&v| v as f32).collect(),
                };
                Arr {
                    shape: t.shape.clone(),
                    data,
                }
            }
            "Identity" => x[0].clone(),
            "AddV2" | "Add" | "BiasAdd" => binary(&x[0], &x[1], |a, b| a + b),
            "Sub" => binary(&x[0], &x[1], |a, b| a - b),
            "Mul" => binary(&x[0], &x[1], |a, b| a * b),
            "Rsqrt" => map(&x[0], |v| 1.0 / v.sqrt()),
            "Relu6" => map(&x[0], |v| v.clamp(0.0, 6.0)),
            "Pad" => pad(&x[0], &x[1]),
            "Conv2D" => conv(&x[0], &x[1], ints(n, "strides")[1] as usize, same(n), false),
            "DepthwiseConv2dNative" => {
                conv(&x[0], &x[1], ints(n, "strides")[1] as usize, same(n), true)
            }
            "Mean" => {
                assert_eq!(x[1].data, vec![1.0, 2.0], "{}: spatial mean", n.name);
                let [b, h, w, c] = x[0].shape[..] else {
                    panic!()
                };
                let mut out = vec![0f32; b * c];
                for (i, v) in x[0].data.iter().enumerate() {
                    out[(i / (h * w * c)) * c + i % c] += v / (h * w) as f32;
                }
                Arr {
                    shape: vec![b, c],
                    data: out,
                }
            }
            "MatMul" => {
                let (a, w) = (&x[0], &x[1]);
                let (m, k, nn) = (a.shape[0], a.shape[1], w.shape[1]);
                let mut out = vec![0f32; m * nn];
                for i in 0..m {
                    for t in 0..k {
                        let av = a.data[i * k + t];
                        for j in 0..nn {
                            out[i * nn + j] += av * w.data[t * nn + j];
                        }
                    }
                }
                Arr {
                    shape: vec![m, nn],
                    data: out,
                }
            }
            other => panic!("the direct evaluator has no {other} (node {})", n.name),
        }
    }

    fn map(a: &Arr, f: impl Fn(f32) -> f32) -> Arr {
        Arr {
            shape: a.shape.clone(),
            data: a.data.iter().map(|&v| f(v)).collect(),
        }
    }

    /// Numpy broadcasting of `b` onto `a`'s shape (the only case the graph has).
    fn binary(a: &Arr, b: &Arr, f: impl Fn(f32, f32) -> f32) -> Arr {
        let (a, b, swapped) = if a.data.len() >= b.data.len() {
            (a, b, false)
        } else {
            (b, a, true)
        };
        let r = a.shape.len();
        let bs: Vec<usize> = std::iter::repeat_n(1, r - b.shape.len())
            .chain(b.shape.iter().copied())
            .collect();
        let mut strides = vec![0usize; r];
        let mut acc = 1;
        for i in (0..r).rev() {
            strides[i] = if bs[i] == 1 { 0 } else { acc };
            acc *= bs[i];
        }
        let mut idx = vec![0usize; r];
        let mut data = Vec::with_capacity(a.data.len());
        for &av in &a.data {
            let bi: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
            let bv = b.data[bi];
            data.push(if swapped { f(bv, av) } else { f(av, bv) });
            for ax in (0..r).rev() {
                idx[ax] += 1;
                if idx[ax] < a.shape[ax] {
                    break;
                }
                idx[ax] = 0;
            }
        }
        Arr {
            shape: a.shape.clone(),
            data,
        }
    }

    fn pad(x: &Arr, p: &Arr) -> Arr {
        let [b, h, w, c] = x.shape[..] else { panic!() };
        let p: Vec<usize> = p.data.iter().map(|&v| v as usize).collect();
        assert_eq!((p[0], p[1], p[6], p[7]), (0, 0, 0, 0));
        let (oh, ow) = (h + p[2] + p[3], w + p[4] + p[5]);
        let mut out = vec![0f32; b * oh * ow * c];
        for n in 0..b {
            for y in 0..h {
                for xx in 0..w {
                    let src = ((n * h + y) * w + xx) * c;
                    let dst = ((n * oh + y + p[2]) * ow + xx + p[4]) * c;
                    out[dst..dst + c].copy_from_slice(&x.data[src..src + c]);
                }
            }
        }
        Arr {
            shape: vec![b, oh, ow, c],
            data: out,
        }
    }

    fn conv(x: &Arr, f: &Arr, s: usize, same: bool, depthwise: bool) -> Arr {
        let [b, h, w, c] = x.shape[..] else { panic!() };
        let [kh, kw, fi, fo] = f.shape[..] else {
            panic!()
        };
        let (oh, ow, top, left) = if same {
            let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
            let th = ((oh - 1) * s + kh).saturating_sub(h);
            let tw = ((ow - 1) * s + kw).saturating_sub(w);
            (oh, ow, th / 2, tw / 2)
        } else {
            ((h - kh) / s + 1, (w - kw) / s + 1, 0, 0)
        };
        let oc = if depthwise { c * fo } else { fo };
        let mut out = vec![0f32; b * oh * ow * oc];
        for n in 0..b {
            for oy in 0..oh {
                for ox in 0..ow {
                    let o = ((n * oh + oy) * ow + ox) * oc;
                    for ky in 0..kh {
                        let iy = (oy * s + ky) as isize - top as isize;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = (ox * s + kx) as isize - left as isize;
                            if ix < 0 || ix >= w as isize {
                                continue;
                            }
                            let xi = ((n * h + iy as usize) * w + ix as usize) * c;
                            let fk = (ky * kw + kx) * fi * fo;
                            for ic in 0..c {
                                let xv = x.data[xi + ic];
                                let fr = &f.data[fk + ic * fo..fk + (ic + 1) * fo];
                                if depthwise {
                                    for (m, fv) in fr.iter().enumerate() {
                                        out[o + ic * fo + m] += xv * fv;
                                    }
                                } else {
                                    for (k, fv) in fr.iter().enumerate() {
                                        out[o + k] += xv * fv;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Arr {
            shape: vec![b, oh, ow, oc],
            data: out,
        }
    }
}
