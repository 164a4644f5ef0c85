//! Graph passes on models built here and on the zoo's real models. Every
//! rewrite is checked by running the model before and after in ONNX Runtime
//! (needs the library: `scripts/install-onnxruntime.sh`); the zoo tests need
//! `WHETSTONE_ZOO` or `../shared/zoo` beside the repository.

use std::collections::HashMap;
use std::path::PathBuf;

use optimizer::engine::{Engine, GraphLevel, SessionSettings};
use optimizer::onnx::{
    self, attr_type, data_type, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto,
};
use optimizer::onnx_build::{self, float_tensor};
use optimizer::passes::{
    cleanup, count_nodes, count_op, to_fp16, ConstantFold, DeadNodes, IfFold, Pass, PassContext,
    ShapeSpecialize, DEFAULT_KEEP_FP32,
};
use optimizer::tensor::{Tensor, TensorData};

// ---------------------------------------------------------------- helpers

fn run(model: &ModelProto, inputs: &[(&str, Tensor)]) -> Vec<(String, Tensor)> {
    let mut e = Engine::from_bytes(
        &onnx::to_bytes(model),
        &SessionSettings::new(GraphLevel::Disable, 1),
    )
    .expect("ONNX Runtime loads the model");
    let inputs: Vec<(String, Tensor)> = inputs
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    e.run(&inputs).expect("ONNX Runtime runs the model")
}

fn f32s(t: &Tensor) -> Vec<f32> {
    match &t.data {
        TensorData::F32(v) => v.clone(),
        other => panic!("expected FP32, got {:?}", other.dtype()),
    }
}

fn tensor(shape: &[usize], values: Vec<f32>) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::F32(values)).unwrap()
}

fn ramp(shape: &[usize], seed: f32) -> Tensor {
    let n = shape.iter().product();
    tensor(
        shape,
        (0..n).map(|i| ((i as f32) * 0.61 + seed).sin()).collect(),
    )
}

/// Largest |a - b| over max |a|: a relative error robust to tiny entries.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a
        .iter()
        .fold(0f64, |m, &x| m.max((x as f64).abs()))
        .max(1e-12);
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    diff / scale
}

fn i64_tensor(name: &str, dims: &[i64], v: Vec<i64>) -> TensorProto {
    onnx::tensor_to_proto(
        name,
        &Tensor::new(
            dims.iter().map(|&d| d as usize).collect(),
            TensorData::I64(v),
        )
        .unwrap(),
    )
}

fn bool_tensor(name: &str, v: bool) -> TensorProto {
    onnx::tensor_to_proto(
        name,
        &Tensor::new(vec![], TensorData::Bool(vec![v])).unwrap(),
    )
}

fn constant_node(out: &str, t: TensorProto) -> NodeProto {
    let mut n = onnx::node("Constant", &format!("const_{out}"), &[], &[out], vec![]);
    n.attribute.push(AttributeProto {
        name: "value".into(),
        r#type: attr_type::TENSOR,
        t: Some(t),
        ..Default::default()
    });
    n
}

fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::GRAPH,
        g: Some(g),
        ..Default::default()
    }
}

fn fvi(name: &str, dims: &[Option<i64>]) -> onnx::ValueInfoProto {
    onnx::value_info(name, data_type::FLOAT, dims)
}

fn ctx() -> PassContext {
    PassContext::default()
}

fn init_names(m: &ModelProto) -> Vec<String> {
    let mut v: Vec<String> = onnx::graph(m)
        .initializer
        .iter()
        .map(|t| t.name.clone())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------- constant_fold

/// y = x + Reshape((c1 + c2) * c3, Shape(c4)), where c2 is a Constant node.
fn constant_chain_model() -> ModelProto {
    let vals = |s: f32| (0..6).map(|i| i as f32 * s + 0.5).collect::<Vec<_>>();
    onnx_build::model(GraphProto {
        name: "chain".into(),
        node: vec![
            constant_node("c2", float_tensor("", &[2, 3], vals(0.25))),
            onnx::node("Add", "add", &["c1", "c2"], &["a"], vec![]),
            onnx::node("Mul", "mul", &["a", "c3"], &["m"], vec![]),
            onnx::node("Shape", "shape", &["c4"], &["s"], vec![]),
            onnx::node("Reshape", "reshape", &["m", "s"], &["r"], vec![]),
            onnx::node("Add", "out", &["x", "r"], &["y"], vec![]),
        ],
        initializer: vec![
            float_tensor("c1", &[2, 3], vals(1.0)),
            float_tensor("c3", &[3], vec![2.0, -1.0, 0.5]),
            float_tensor("c4", &[3, 2], vec![0.0; 6]),
        ],
        input: vec![fvi("x", &[Some(3), Some(2)])],
        output: vec![fvi("y", &[Some(3), Some(2)])],
        ..Default::default()
    })
}

#[test]
fn constant_fold_collapses_a_constant_chain_into_one_initializer() {
    let original = constant_chain_model();
    let x = ramp(&[3, 2], 0.3);
    let want = run(&original, &[("x", x.clone())]);

    let mut m = original.clone();
    let r = ConstantFold::default().run(&mut m, &ctx()).unwrap();
    assert_eq!(r.name, "constant_fold");
    assert_eq!(r.changed, 5, "Constant, Add, Mul, Shape, Reshape: {r:?}");
    let g = onnx::graph(&m);
    assert_eq!(g.node.len(), 1, "only the Add reading x is left");
    assert_eq!(g.node[0].input, vec!["x", "r"]);
    // The folded value is the one new initializer; its inputs are now unused.
    assert_eq!(init_names(&m), vec!["c1", "c3", "c4", "r"]);
    let got = run(&m, &[("x", x.clone())]);
    assert_eq!(f32s(&got[0].1), f32s(&want[0].1), "bit-identical");

    let r = DeadNodes.run(&mut m, &ctx()).unwrap();
    assert_eq!(r.changed, 3, "{r:?}");
    assert_eq!(init_names(&m), vec!["r"]);
    assert_eq!(f32s(&run(&m, &[("x", x)])[0].1), f32s(&want[0].1));

    // Nothing left to do: a second run changes nothing.
    assert_eq!(
        ConstantFold::default().run(&mut m, &ctx()).unwrap().changed,
        0
    );
}

#[test]
fn constant_fold_keeps_graph_outputs_nondeterminism_and_big_results() {
    let m0 = onnx_build::model(GraphProto {
        name: "edges".into(),
        node: vec![
            // Writes a graph output: stays a node, so the output keeps its producer.
            onnx::node("Neg", "neg", &["c"], &["direct"], vec![]),
            // Random: never folded.
            onnx::node(
                "RandomNormal",
                "rand",
                &[],
                &["noise"],
                vec![onnx::attr_ints("shape", &[2])],
            ),
            onnx::node("Add", "add_noise", &["noise", "c"], &["noisy"], vec![]),
            // 4 MB of zeros from a 16-byte shape: folding would grow the file.
            onnx::node("ConstantOfShape", "zeros", &["big_shape"], &["big"], vec![]),
            onnx::node("ReduceSum", "sum", &["big"], &["total"], vec![]),
            onnx::node("Add", "with_x", &["x", "total"], &["y"], vec![]),
        ],
        initializer: vec![
            float_tensor("c", &[2], vec![1.0, 2.0]),
            i64_tensor("big_shape", &[2], vec![1024, 1024]),
        ],
        input: vec![fvi("x", &[Some(1)])],
        output: vec![
            fvi("direct", &[Some(2)]),
            fvi("noisy", &[Some(2)]),
            fvi("y", &[None]),
        ],
        ..Default::default()
    });
    let mut m = m0.clone();
    let r = ConstantFold::default().run(&mut m, &ctx()).unwrap();
    assert_eq!(r.changed, 0, "{r:?}");
    assert!(r.note.contains("1 constant nodes left"), "{}", r.note);
    assert_eq!(m, m0);

    // With a size bound below the input's size even small results stay.
    let mut m = constant_chain_model();
    let r = ConstantFold { max_bytes: 8 }.run(&mut m, &ctx()).unwrap();
    assert!(
        onnx::graph(&m)
            .node
            .iter()
            .any(|n| n.op_type == "Add" && n.name == "add"),
        "{r:?}"
    );
}

#[test]
fn constant_fold_uses_fixed_inputs_but_keeps_them_as_inputs() {
    // y = x * (k + 1), with k fixed to 3.
    let m0 = onnx_build::model(GraphProto {
        name: "fixed".into(),
        node: vec![
            onnx::node("Add", "inc", &["k", "one"], &["k1"], vec![]),
            onnx::node("Mul", "scale", &["x", "k1"], &["y"], vec![]),
        ],
        initializer: vec![float_tensor("one", &[], vec![1.0])],
        input: vec![fvi("x", &[Some(2)]), fvi("k", &[])],
        output: vec![fvi("y", &[Some(2)])],
        ..Default::default()
    });
    let mut c = ctx();
    c.fixed_inputs.insert("k".into(), tensor(&[], vec![3.0]));
    let mut m = m0.clone();
    let reports = cleanup(&mut m, &c).unwrap();
    let fold = reports.iter().find(|r| r.name == "constant_fold").unwrap();
    assert_eq!(fold.changed, 1);
    let g = onnx::graph(&m);
    assert_eq!(g.node.len(), 1);
    assert_eq!(
        g.input.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        vec!["x", "k"],
        "the fixed input is still accepted"
    );
    assert!(!init_names(&m).contains(&"k".to_string()));
    let x = tensor(&[2], vec![1.5, -2.0]);
    let k = tensor(&[], vec![3.0]);
    let got = run(&m, &[("x", x.clone()), ("k", k.clone())]);
    assert_eq!(f32s(&got[0].1), vec![6.0, -8.0]);

    // A fixed value that does not fit the declared input is an error naming it.
    let mut bad = ctx();
    bad.fixed_inputs
        .insert("k".into(), tensor(&[3], vec![1.0, 2.0, 3.0]));
    let err = cleanup(&mut m0.clone(), &bad).unwrap_err().to_string();
    assert!(err.contains("input 'k'"), "{err}");
    let mut bad = ctx();
    bad.fixed_inputs.insert("nope".into(), k);
    let err = cleanup(&mut m0.clone(), &bad).unwrap_err().to_string();
    assert!(
        err.contains("'nope'") && err.contains("no such input"),
        "{err}"
    );
}

#[test]
fn constant_fold_computes_shapes_from_static_input_dims() {
    // y = Reshape(x, Concat(Shape(x)[0..1], [-1])): with x's dims given,
    // the whole shape computation folds.
    let m0 = onnx_build::model(GraphProto {
        name: "shapes".into(),
        node: vec![
            onnx::node("Relu", "relu", &["x"], &["rx"], vec![]),
            onnx::node(
                "Shape",
                "shape",
                &["rx"],
                &["s"],
                vec![onnx::attr_int("end", 1)],
            ),
            onnx::node(
                "Concat",
                "concat",
                &["s", "minus_one"],
                &["target"],
                vec![onnx::attr_int("axis", 0)],
            ),
            onnx::node("Reshape", "reshape", &["rx", "target"], &["y"], vec![]),
        ],
        initializer: vec![i64_tensor("minus_one", &[1], vec![-1])],
        input: vec![fvi("x", &[None, None, Some(4)])],
        output: vec![fvi("y", &[None, None])],
        ..Default::default()
    });
    let x = ramp(&[2, 3, 4], 0.1);
    let want = run(&m0, &[("x", x.clone())]);

    let mut m = m0.clone();
    assert_eq!(
        ConstantFold::default().run(&mut m, &ctx()).unwrap().changed,
        0
    );
    let mut c = ctx();
    c.input_shapes = Some(vec![vec![2, 3, 4]]);
    let reports = cleanup(&mut m, &c).unwrap();
    assert_eq!(reports[0].name, "shape_specialize");
    assert_eq!(reports[0].changed, 2);
    let ops: Vec<&str> = onnx::graph(&m)
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    assert_eq!(ops, vec!["Relu", "Reshape"], "{reports:?}");
    assert_eq!(f32s(&run(&m, &[("x", x)])[0].1), f32s(&want[0].1));
}

// ------------------------------------------------------------- dead_nodes

#[test]
fn dead_nodes_removes_what_no_output_needs() {
    let mut then = GraphProto {
        name: "then".into(),
        node: vec![onnx::node(
            "Neg",
            "neg_captured",
            &["captured"],
            &["t_out"],
            vec![],
        )],
        output: vec![fvi("t_out", &[Some(2)])],
        ..Default::default()
    };
    then.node.push(onnx::node(
        "Relu",
        "dead_inside",
        &["captured"],
        &["unused_inside"],
        vec![],
    ));
    let els = GraphProto {
        name: "else".into(),
        node: vec![onnx::node("Identity", "id_x", &["x"], &["e_out"], vec![])],
        output: vec![fvi("e_out", &[Some(2)])],
        ..Default::default()
    };
    let mut if_node = onnx::node("If", "branch", &["flag"], &["y"], vec![]);
    if_node.attribute = vec![
        graph_attr("then_branch", then),
        graph_attr("else_branch", els),
    ];
    let m0 = onnx_build::model(GraphProto {
        name: "dead".into(),
        node: vec![
            // Read only inside the If's branch: alive.
            onnx::node("Abs", "abs", &["x"], &["captured"], vec![]),
            onnx::node("Exp", "dead1", &["x"], &["e"], vec![]),
            onnx::node("Log", "dead2", &["e"], &["l"], vec![]),
            if_node,
        ],
        initializer: vec![
            float_tensor("unused_w", &[2], vec![1.0, 2.0]),
            bool_tensor("flag_default", true),
        ],
        input: vec![
            fvi("x", &[Some(2)]),
            onnx::value_info("flag", data_type::BOOL, &[]),
        ],
        output: vec![fvi("y", &[Some(2)])],
        value_info: vec![fvi("l", &[Some(2)]), fvi("captured", &[Some(2)])],
        ..Default::default()
    });
    let mut m = m0.clone();
    let r = DeadNodes.run(&mut m, &ctx()).unwrap();
    // dead1, dead2, dead_inside; unused_w, flag_default; value_info of l.
    assert_eq!(r.changed, 6, "{r:?}");
    assert!(r.note.contains("3 nodes"), "{}", r.note);
    let g = onnx::graph(&m);
    let names: Vec<&str> = g.node.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, vec!["abs", "branch"]);
    assert_eq!(count_nodes(&m), 4);
    assert!(g.initializer.is_empty());
    assert_eq!(g.value_info.len(), 1);
    let x = tensor(&[2], vec![-1.0, 2.0]);
    for flag in [true, false] {
        let f = Tensor::new(vec![], TensorData::Bool(vec![flag])).unwrap();
        let want = run(&m0, &[("x", x.clone()), ("flag", f.clone())]);
        let got = run(&m, &[("x", x.clone()), ("flag", f)]);
        assert_eq!(f32s(&got[0].1), f32s(&want[0].1));
    }
    assert_eq!(DeadNodes.run(&mut m, &ctx()).unwrap().changed, 0);
}

// ----------------------------------------------------------------- if_fold

/// A branch pair with the same internal names in both branches:
/// then: (( x + t) * w, w) with initializer `w`, returned directly (an
/// Identity when inlined); else: (x - w, t) with `w` a Constant node.
fn branches(scale: f32) -> (GraphProto, GraphProto) {
    let then = GraphProto {
        name: "then".into(),
        node: vec![
            onnx::node("Add", "s", &["x", "t"], &["s"], vec![]),
            onnx::node("Mul", "mul", &["s", "w"], &["then_y"], vec![]),
        ],
        initializer: vec![float_tensor("w", &[2], vec![3.0 * scale, -1.0])],
        output: vec![fvi("then_y", &[Some(2)]), fvi("w", &[Some(2)])],
        ..Default::default()
    };
    let els = GraphProto {
        name: "else".into(),
        node: vec![
            constant_node("w", float_tensor("", &[2], vec![10.0 * scale, 20.0])),
            onnx::node("Sub", "s", &["x", "w"], &["s"], vec![]),
            // ORT refuses a branch that returns an outer value directly.
            onnx::node("Identity", "pass_t", &["t"], &["else_t"], vec![]),
        ],
        output: vec![fvi("s", &[Some(2)]), fvi("else_t", &[Some(2)])],
        ..Default::default()
    };
    (then, els)
}

/// z = y1 + y2 where (y1, t1) = If(cond) and (y2, t2) = If(flag) over
/// [`branches`]: all four branches define `s` and `w`. ONNX lets sibling
/// subgraphs reuse names but not a subgraph shadow its parent, so inlining
/// the first If must rename its `s` and `w`, or the second If becomes invalid.
/// `cond` is an initializer (named) or a Constant node (unnamed); `flag` is
/// a graph input.
fn if_model(cond: TensorProto) -> ModelProto {
    let mut nodes = vec![onnx::node("Neg", "neg", &["x"], &["t"], vec![])];
    let mut initializer = vec![];
    if cond.name.is_empty() {
        nodes.push(constant_node("cond", cond));
    } else {
        initializer.push(cond);
    }
    for (name, c, scale, outs) in [
        ("if", "cond", 1.0, ["y1", "t1"]),
        ("if2", "flag", 0.5, ["y2", "t2"]),
    ] {
        let (then, els) = branches(scale);
        let mut n = onnx::node("If", name, &[c], &outs, vec![]);
        n.attribute = vec![
            graph_attr("then_branch", then),
            graph_attr("else_branch", els),
        ];
        nodes.push(n);
    }
    nodes.push(onnx::node("Add", "final", &["y1", "y2"], &["z"], vec![]));
    onnx_build::model(GraphProto {
        name: "ifs".into(),
        node: nodes,
        initializer,
        input: vec![
            fvi("x", &[Some(2)]),
            onnx::value_info("flag", data_type::BOOL, &[]),
        ],
        output: vec![
            fvi("z", &[Some(2)]),
            fvi("t1", &[Some(2)]),
            fvi("t2", &[Some(2)]),
        ],
        ..Default::default()
    })
}

fn check_if_fold(cond: TensorProto, taken: &str) -> ModelProto {
    let original = if_model(cond);
    let mut m = original.clone();
    let r = IfFold.run(&mut m, &ctx()).unwrap();
    assert_eq!(r.changed, 1, "{r:?}");
    assert!(r.note.contains(taken), "{}", r.note);
    assert_eq!(count_op(&original, "If"), 2);
    assert_eq!(count_op(&m, "If"), 1, "the If on an input stays");
    let x = tensor(&[2], vec![1.0, 4.0]);
    for flag in [true, false] {
        let f = Tensor::new(vec![], TensorData::Bool(vec![flag])).unwrap();
        let inputs = [("x", x.clone()), ("flag", f)];
        assert_eq!(run(&m, &inputs), run(&original, &inputs), "flag {flag}");
    }
    // The inlined branch's `s` and `w` were renamed: the parent does not
    // define a name the remaining If's branches define.
    let g = onnx::graph(&m);
    let defined: Vec<&str> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .chain(g.initializer.iter().map(|t| t.name.as_str()))
        .collect();
    assert!(
        !defined.contains(&"s") && !defined.contains(&"w"),
        "{defined:?}"
    );
    assert!(
        defined.contains(&"y1") && defined.contains(&"t1"),
        "{defined:?}"
    );
    m
}

#[test]
fn if_fold_inlines_the_then_branch_renaming_clashes() {
    let m = check_if_fold(bool_tensor("cond", true), "1 then");
    let g = onnx::graph(&m);
    // The branch's result is written as `y1` directly; the initializer it
    // returns moved up, renamed, and reaches `t1` through an Identity.
    assert!(g
        .node
        .iter()
        .any(|n| n.op_type == "Mul" && n.output == vec!["y1"]));
    let id = g.node.iter().find(|n| n.output == vec!["t1"]).unwrap();
    assert_eq!(id.op_type, "Identity");
    assert!(
        init_names(&m).contains(&id.input[0]),
        "{:?}",
        init_names(&m)
    );
}

#[test]
fn if_fold_inlines_the_else_branch_from_a_constant_node() {
    let mut cond = bool_tensor("", false);
    cond.name.clear();
    let m = check_if_fold(cond, "1 else");
    let g = onnx::graph(&m);
    assert!(g
        .node
        .iter()
        .any(|n| n.op_type == "Sub" && n.output == vec!["y1"]));
    assert!(g
        .node
        .iter()
        .any(|n| n.op_type == "Identity" && n.output == vec!["t1"]));
}

#[test]
fn if_fold_leaves_unknown_conditions_and_folds_nested_ifs_from_fixed_inputs() {
    // Unknown conditions: nothing to do.
    let original = if_model(TensorProto {
        name: "unused".into(),
        ..bool_tensor("", true)
    });
    let mut m = original.clone();
    onnx::graph_mut(&mut m)
        .input
        .push(onnx::value_info("cond", data_type::BOOL, &[]));
    let before = m.clone();
    let r = IfFold.run(&mut m, &ctx()).unwrap();
    assert_eq!(r.changed, 0);
    assert_eq!(m, before);

    // y = If(mode == 2) { If(mode > 1) { x * 2 } else { x } } else { -x },
    // with `mode` fixed to 2: two rounds of folding leave y = x * 2.
    let inner_then = GraphProto {
        name: "inner_then".into(),
        node: vec![onnx::node(
            "Mul",
            "double",
            &["x", "two"],
            &["doubled"],
            vec![],
        )],
        output: vec![fvi("doubled", &[Some(2)])],
        ..Default::default()
    };
    let inner_else = GraphProto {
        name: "inner_else".into(),
        node: vec![onnx::node("Identity", "same", &["x"], &["kept"], vec![])],
        output: vec![fvi("kept", &[Some(2)])],
        ..Default::default()
    };
    let mut inner = onnx::node("If", "inner", &["gt"], &["inner_y"], vec![]);
    inner.attribute = vec![
        graph_attr("then_branch", inner_then),
        graph_attr("else_branch", inner_else),
    ];
    let outer_then = GraphProto {
        name: "outer_then".into(),
        node: vec![
            onnx::node("Greater", "greater", &["mode", "one"], &["gt"], vec![]),
            inner,
        ],
        output: vec![fvi("inner_y", &[Some(2)])],
        ..Default::default()
    };
    let outer_else = GraphProto {
        name: "outer_else".into(),
        node: vec![onnx::node("Neg", "negate", &["x"], &["negated"], vec![])],
        output: vec![fvi("negated", &[Some(2)])],
        ..Default::default()
    };
    let mut outer = onnx::node("If", "outer", &["eq"], &["y"], vec![]);
    outer.attribute = vec![
        graph_attr("then_branch", outer_then),
        graph_attr("else_branch", outer_else),
    ];
    let m0 = onnx_build::model(GraphProto {
        name: "nested".into(),
        node: vec![
            onnx::node("Equal", "equal", &["mode", "two_i"], &["eq"], vec![]),
            outer,
        ],
        initializer: vec![
            float_tensor("two", &[], vec![2.0]),
            i64_tensor("one", &[], vec![1]),
            i64_tensor("two_i", &[], vec![2]),
        ],
        input: vec![
            fvi("x", &[Some(2)]),
            onnx::value_info("mode", data_type::INT64, &[]),
        ],
        output: vec![fvi("y", &[Some(2)])],
        ..Default::default()
    });
    let x = tensor(&[2], vec![1.5, -3.0]);
    let mode = Tensor::new(vec![], TensorData::I64(vec![2])).unwrap();
    let want = run(&m0, &[("x", x.clone()), ("mode", mode.clone())]);
    let mut c = ctx();
    c.fixed_inputs.insert("mode".into(), mode.clone());
    let mut m = m0.clone();
    let reports = cleanup(&mut m, &c).unwrap();
    let ifs = reports.iter().find(|r| r.name == "if_fold").unwrap();
    assert_eq!(ifs.changed, 2, "{reports:?}");
    assert!(ifs.note.contains("mode = 2"), "{}", ifs.note);
    assert_eq!(count_op(&m, "If"), 0);
    let ops: Vec<&str> = onnx::graph(&m)
        .node
        .iter()
        .map(|n| n.op_type.as_str())
        .collect();
    assert_eq!(ops, vec!["Mul"], "{reports:?}");
    assert_eq!(run(&m, &[("x", x), ("mode", mode)]), want);
}

// -------------------------------------------------------- shape_specialize

fn two_input_model() -> ModelProto {
    let mut b = fvi("b", &[None, Some(4)]);
    // `b` shares the symbolic batch `N` with `a`.
    if let Some(onnx::TypeValue::TensorType(t)) = b.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        t.shape.as_mut().unwrap().dim[0].value = Some(onnx::DimValue::DimParam("N".into()));
    }
    onnx_build::model(GraphProto {
        name: "two".into(),
        node: vec![onnx::node("Add", "add", &["a", "b"], &["y"], vec![])],
        input: vec![fvi("a", &[None, Some(4)]), b],
        output: vec![fvi("y", &[None, Some(4)])],
        ..Default::default()
    })
}

fn dims_of(m: &ModelProto, input: usize) -> Vec<Option<i64>> {
    let vi = &onnx::graph(m).input[input];
    let Some(onnx::TypeValue::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        panic!("not a tensor")
    };
    t.shape
        .as_ref()
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value {
            Some(onnx::DimValue::DimValue(v)) => Some(v),
            _ => None,
        })
        .collect()
}

#[test]
fn shape_specialize_sets_dims_and_refuses_conflicts() {
    let mut m = two_input_model();
    let mut c = ctx();
    assert_eq!(ShapeSpecialize.run(&mut m, &c).unwrap().changed, 0);
    c.input_shapes = Some(vec![vec![3, 4], vec![3, 4]]);
    let r = ShapeSpecialize.run(&mut m, &c).unwrap();
    assert_eq!(r.changed, 2, "{r:?}");
    assert_eq!(dims_of(&m, 0), vec![Some(3), Some(4)]);
    assert_eq!(dims_of(&m, 1), vec![Some(3), Some(4)]);
    let e = Engine::from_bytes(
        &onnx::to_bytes(&m),
        &SessionSettings::new(GraphLevel::Disable, 1),
    )
    .unwrap();
    assert_eq!(e.signature().inputs[0].shape, vec![3, 4]);
    assert_eq!(
        ShapeSpecialize.run(&mut m, &c).unwrap().changed,
        0,
        "idempotent"
    );

    let refuse = |shapes: Vec<Vec<usize>>, want: &[&str]| {
        let mut m = two_input_model();
        let c = PassContext {
            input_shapes: Some(shapes),
            ..Default::default()
        };
        let err = ShapeSpecialize.run(&mut m, &c).unwrap_err().to_string();
        for w in want {
            assert!(err.contains(w), "{err} lacks {w}");
        }
        assert_eq!(m, two_input_model(), "an error leaves the model untouched");
    };
    refuse(
        vec![vec![3, 5], vec![3, 4]],
        &["input 'a'", "fixes dim 1 to 4"],
    );
    refuse(vec![vec![3, 4], vec![3]], &["input 'b'", "rank"]);
    refuse(vec![vec![3, 4], vec![2, 4]], &["input 'b'", "'N'"]);
    refuse(vec![vec![3, 4]], &["1 input shapes", "2 inputs"]);
}

// -------------------------------------------------------------------- fp16

fn fp16_close(model: &ModelProto, x: Tensor) -> (ModelProto, f64) {
    let want = run(model, &[("x", x.clone())]);
    let half = to_fp16(model, DEFAULT_KEEP_FP32).unwrap();
    let got = run(&half, &[("x", x)]);
    assert_eq!(got[0].0, want[0].0);
    assert_eq!(got[0].1.shape, want[0].1.shape);
    let err = rel_err(&f32s(&want[0].1), &f32s(&got[0].1));
    println!("{}: fp16 relative error {err:e}", onnx::graph(model).name);
    (half, err)
}

#[test]
fn fp16_cnn_and_mlp_run_and_stay_close() {
    let cnn = onnx_build::cnn_model(8, 16, 10);
    let (half, err) = fp16_close(&cnn, ramp(&[2, 3, 16, 16], 0.2));
    assert!(err < 1e-2, "cnn relative error {err}");
    assert!(err > 0.0, "fp16 must change something");
    let g = onnx::graph(&half);
    assert!(g
        .initializer
        .iter()
        .all(|t| t.data_type == data_type::FLOAT16));
    assert_eq!(onnx::elem_type(&g.input[0]), Some(data_type::FLOAT));
    assert_eq!(onnx::elem_type(&g.output[0]), Some(data_type::FLOAT));
    // One Cast after the input, one before the output.
    assert_eq!(count_op(&half, "Cast"), 2);
    let size = |m: &ModelProto| onnx::to_bytes(m).len();
    assert!(
        size(&half) < size(&cnn) * 6 / 10,
        "{} vs {}",
        size(&half),
        size(&cnn)
    );

    let mlp = onnx_build::mlp_model(4, 16, 3);
    let (_, err) = fp16_close(&mlp, ramp(&[5, 4], 0.7));
    assert!(err < 1e-2, "mlp relative error {err}");
}

#[test]
fn fp16_keeps_listed_ops_and_non_float_tensors_in_their_types() {
    // y = Softmax(MatMul(x, w) + b) ; n = Shape(x) cast to float and added:
    // the Softmax island stays float32, the int64 shape path is untouched.
    let m = onnx_build::model(GraphProto {
        name: "mixed".into(),
        node: vec![
            onnx::node("MatMul", "mm", &["x", "w"], &["h"], vec![]),
            onnx::node("Add", "bias", &["h", "b"], &["hb"], vec![]),
            onnx::node(
                "Softmax",
                "softmax",
                &["hb"],
                &["p"],
                vec![onnx::attr_int("axis", -1)],
            ),
            onnx::node("Shape", "shape", &["x"], &["s"], vec![]),
            onnx::node(
                "Cast",
                "cast",
                &["s"],
                &["sf"],
                vec![onnx::attr_int("to", 1)],
            ),
            onnx::node(
                "ReduceSum",
                "rs",
                &["sf"],
                &["n"],
                vec![onnx::attr_int("keepdims", 0)],
            ),
            onnx::node("Mul", "scale", &["p", "n"], &["y"], vec![]),
        ],
        initializer: vec![
            float_tensor(
                "w",
                &[4, 3],
                (0..12).map(|i| i as f32 * 0.1 - 0.5).collect(),
            ),
            float_tensor("b", &[3], vec![0.1, 0.2, 0.3]),
        ],
        input: vec![fvi("x", &[None, Some(4)])],
        output: vec![fvi("y", &[None, Some(3)])],
        ..Default::default()
    });
    let (half, err) = fp16_close(&m, ramp(&[2, 4], 0.4));
    assert!(err < 1e-2, "relative error {err}");
    let g = onnx::graph(&half);
    let node = |name: &str| g.node.iter().find(|n| n.name == name).unwrap();
    // Softmax reads a float32 copy and writes float32 that Mul reads as float16.
    let sm_in = &node("softmax").input[0];
    assert_ne!(sm_in, "hb");
    let cast_in = g.node.iter().find(|n| n.output.contains(sm_in)).unwrap();
    assert_eq!(cast_in.op_type, "Cast");
    assert_eq!(onnx::attr_i(cast_in, "to", 0), data_type::FLOAT as i64);
    // Shape stays int64; the Cast to float becomes a Cast to float16...
    assert_eq!(node("shape").input, vec!["x"]);
    assert_eq!(
        onnx::attr_i(node("cast"), "to", 0),
        data_type::FLOAT16 as i64
    );
    // ...and the kept ReduceSum reads it back as float32.
    assert_ne!(node("rs").input[0], "sf");

    // With an empty keep list every float op is float16: fewer casts.
    let all = to_fp16(&m, &[]).unwrap();
    assert!(count_op(&all, "Cast") < count_op(&half, "Cast"));
    let got = run(&all, &[("x", ramp(&[2, 4], 0.4))]);
    let want = run(&m, &[("x", ramp(&[2, 4], 0.4))]);
    assert!(rel_err(&f32s(&want[0].1), &f32s(&got[0].1)) < 1e-2);
}

// ------------------------------------------------------------- odd models

fn broken_model() -> ModelProto {
    onnx_build::model(GraphProto {
        name: "broken".into(),
        node: vec![onnx::node("Add", "add", &["x", "missing"], &["y"], vec![])],
        input: vec![fvi("x", &[Some(1)])],
        output: vec![fvi("y", &[Some(1)])],
        ..Default::default()
    })
}

#[test]
fn odd_models_are_errors_or_no_ops_never_panics() {
    let passes: Vec<Box<dyn Pass>> = vec![
        Box::new(ShapeSpecialize),
        Box::new(IfFold),
        Box::new(ConstantFold::default()),
        Box::new(DeadNodes),
    ];
    let empty = onnx_build::model(GraphProto::default());
    let no_graph = ModelProto::default();
    for p in &passes {
        let mut m = empty.clone();
        assert_eq!(p.run(&mut m, &ctx()).unwrap().changed, 0, "{}", p.name());
        let err = p
            .run(&mut no_graph.clone(), &ctx())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no graph"), "{}: {err}", p.name());
        let err = p.run(&mut broken_model(), &ctx()).unwrap_err().to_string();
        assert!(
            err.contains("node 'add'") && err.contains("'missing'"),
            "{}: {err}",
            p.name()
        );
    }
    let mut m = empty.clone();
    assert!(cleanup(&mut m, &ctx())
        .unwrap()
        .iter()
        .all(|r| r.changed == 0));
    assert!(cleanup(&mut broken_model(), &ctx()).is_err());
    assert!(cleanup(&mut no_graph.clone(), &ctx()).is_err());
    assert_eq!(to_fp16(&empty, DEFAULT_KEEP_FP32).unwrap(), empty);
    assert!(to_fp16(&broken_model(), DEFAULT_KEEP_FP32).is_err());
    assert!(to_fp16(&no_graph, DEFAULT_KEEP_FP32).is_err());

    // Two producers of one tensor, an If without its branch: errors.
    let mut twice = broken_model();
    onnx::graph_mut(&mut twice).node = vec![
        onnx::node("Relu", "a", &["x"], &["y"], vec![]),
        onnx::node("Neg", "b", &["x"], &["y"], vec![]),
    ];
    let err = cleanup(&mut twice, &ctx()).unwrap_err().to_string();
    assert!(err.contains("more than one node"), "{err}");
    let mut no_branch = if_model(bool_tensor("cond", true));
    for n in &mut onnx::graph_mut(&mut no_branch).node {
        n.attribute.retain(|a| a.name != "then_branch");
    }
    let err = IfFold.run(&mut no_branch, &ctx()).unwrap_err().to_string();
    assert!(
        err.contains("If node 'if'") && err.contains("then_branch"),
        "{err}"
    );
}

// -------------------------------------------------------------------- zoo

fn zoo() -> PathBuf {
    let p = std::env::var_os("WHETSTONE_ZOO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/zoo"));
    assert!(
        p.join("silero_vad.onnx").is_file(),
        "the model zoo is missing: expected {}/silero_vad.onnx (set WHETSTONE_ZOO to the folder holding the reference models)",
        p.display()
    );
    p
}

fn npz_f32(path: &std::path::Path, key: &str) -> (Vec<usize>, Vec<f32>) {
    let mut npz = npyz::npz::NpzArchive::open(path).unwrap();
    let npy = npz.by_name(key).unwrap().unwrap();
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    (shape, npy.into_vec::<f32>().unwrap())
}

#[test]
fn zoo_silero_with_sr_fixed_folds_to_a_plain_graph_with_the_same_outputs() {
    let zoo = zoo();
    let original = onnx::load(&zoo.join("silero_vad.onnx")).unwrap();
    let sr = Tensor::new(vec![], TensorData::I64(vec![16000])).unwrap();
    let c = PassContext {
        fixed_inputs: HashMap::from([("sr".to_string(), sr.clone())]),
        input_shapes: Some(vec![vec![1, 576], vec![2, 1, 128], vec![]]),
    };
    let mut folded = original.clone();
    let reports = cleanup(&mut folded, &c).unwrap();
    let (ifs_before, ifs_after) = (count_op(&original, "If"), count_op(&folded, "If"));
    let (nodes_before, nodes_after) = (count_nodes(&original), count_nodes(&folded));
    println!("silero: If {ifs_before} -> {ifs_after}, nodes {nodes_before} -> {nodes_after}");
    for r in &reports {
        println!("  {}: {} ({})", r.name, r.changed, r.note);
    }
    assert!(ifs_before > 0);
    assert_eq!(ifs_after, 0, "{reports:?}");
    assert!(
        reports[1].note.contains("sr = 16000"),
        "{}",
        reports[1].note
    );
    assert_eq!(
        onnx::graph(&folded)
            .input
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        vec!["input", "state", "sr"]
    );

    let (shape, chunks) = npz_f32(&zoo.join("test_silero_vad.npz"), "onnx_input");
    assert_eq!(shape[1], 576);
    // With graph optimizations on (as served), ORT folds the original's
    // weight computations too and the two agree bit for bit. With them off,
    // the original computes its LSTM weights on every call, which rounds
    // differently from the folded weights by a few ulps.
    for (level, bound) in [(GraphLevel::All, 0.0), (GraphLevel::Disable, 1e-6)] {
        let max_diff = silero_max_diff(&original, &folded, &chunks[..100 * 576], level);
        println!("silero at {level:?}: max probability difference over 100 chunks: {max_diff:e}");
        assert!(max_diff <= bound, "{level:?}: {max_diff}");
    }
}

/// Runs both models over `chunks` ([n, 576], in order, each carrying its
/// own state from zeros, sr = 16000) and returns the largest difference in
/// speech probability.
fn silero_max_diff(a: &ModelProto, b: &ModelProto, chunks: &[f32], level: GraphLevel) -> f64 {
    let opts = SessionSettings::new(level, 1);
    let mut ea = Engine::from_bytes(&onnx::to_bytes(a), &opts).unwrap();
    let mut eb = Engine::from_bytes(&onnx::to_bytes(b), &opts).unwrap();
    let sr = Tensor::new(vec![], TensorData::I64(vec![16000])).unwrap();
    let zeros = tensor(&[2, 1, 128], vec![0.0; 256]);
    let (mut sa, mut sb) = (zeros.clone(), zeros);
    let get = |o: &[(String, Tensor)], n: &str| o.iter().find(|(k, _)| k == n).unwrap().1.clone();
    let mut max_diff = 0f64;
    for chunk in chunks.chunks_exact(576) {
        let x = tensor(&[1, 576], chunk.to_vec());
        let call = |e: &mut Engine, state: &Tensor| {
            e.run(&[
                ("input".into(), x.clone()),
                ("state".into(), state.clone()),
                ("sr".into(), sr.clone()),
            ])
            .unwrap()
        };
        let (oa, ob) = (call(&mut ea, &sa), call(&mut eb, &sb));
        let (pa, pb) = (f32s(&get(&oa, "output")), f32s(&get(&ob, "output")));
        max_diff = max_diff.max((pa[0] as f64 - pb[0] as f64).abs());
        sa = get(&oa, "stateN");
        sb = get(&ob, "stateN");
    }
    max_diff
}

fn zoo_cleanup_keeps_outputs(file: &str, inputs: Vec<(&str, Tensor)>, shapes: Vec<Vec<usize>>) {
    let zoo = zoo();
    let original = onnx::load(&zoo.join(file)).unwrap();
    let c = PassContext {
        input_shapes: Some(shapes),
        ..Default::default()
    };
    let mut cleaned = original.clone();
    let reports = cleanup(&mut cleaned, &c).unwrap();
    let size = |m: &ModelProto| onnx::to_bytes(m).len();
    println!(
        "{file}: nodes {} -> {}, bytes {} -> {}",
        count_nodes(&original),
        count_nodes(&cleaned),
        size(&original),
        size(&cleaned)
    );
    for r in &reports {
        println!("  {}: {} ({})", r.name, r.changed, r.note);
    }
    assert!(size(&cleaned) <= size(&original), "the file grew");
    let want = run(&original, &inputs);
    let got = run(&cleaned, &inputs);
    for ((wn, wt), (gn, gt)) in want.iter().zip(&got) {
        assert_eq!(wn, gn);
        let err = rel_err(&f32s(wt), &f32s(gt));
        println!("{file}: output {wn} relative error {err:e}");
        assert!(err <= 1e-5, "{wn}: {err}");
    }
}

#[test]
fn zoo_resnet18_cleanup_keeps_outputs() {
    zoo_cleanup_keeps_outputs(
        "resnet18.onnx",
        vec![("input", ramp(&[1, 3, 224, 224], 0.9))],
        vec![vec![1, 3, 224, 224]],
    );
}

#[test]
fn zoo_minilm_cleanup_keeps_outputs() {
    let ids: Vec<i64> = (0..128).map(|i| (i * 7919 + 101) % 30522).collect();
    let t = |v: Vec<i64>| Tensor::new(vec![1, 128], TensorData::I64(v)).unwrap();
    zoo_cleanup_keeps_outputs(
        "minilm.onnx",
        vec![
            ("input_ids", t(ids)),
            ("attention_mask", t(vec![1; 128])),
            ("token_type_ids", t(vec![0; 128])),
        ],
        vec![vec![1, 128]; 3],
    );
}
