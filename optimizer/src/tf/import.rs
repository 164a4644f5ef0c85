//! The graph walk: pick the inputs and outputs, keep only the nodes the
//! outputs need, refuse every unsupported op at once, convert node by node
//! in topological order, then tidy the ONNX graph.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::konst;
use super::ops;
use super::proto::{attr_value, dt, AttrValue, GraphDef, NodeDef, TensorShapeProto};
use super::{ImportOptions, SAVED_MODEL_HINT};
use crate::error::{OptimizerError, Result};
use crate::onnx::{self, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};
use crate::tensor::{DType, Tensor};

/// A static shape: `None` = rank unknown; a `None` dim = size unknown.
pub(crate) type Shape = Option<Vec<Option<i64>>>;

/// One tensor value of the converted graph. A constant stays in Rust until
/// an ONNX node consumes it, so ops that need a constant argument (axes,
/// permutations, paddings) can read it, and unused constants cost nothing.
#[derive(Debug, Clone)]
pub(crate) struct Val {
    /// The ONNX value name, once something produces it.
    pub onnx: Option<String>,
    pub dtype: DType,
    pub shape: Shape,
    pub konst: Option<Tensor>,
    /// What to call a constant once it becomes an initializer.
    hint: String,
}

/// Handle to a [`Val`].
pub(crate) type V = usize;

/// The most bytes the constants one import materializes may take together:
/// 8 GiB. The graph's own constants are at most 2 GiB (a GraphDef is one
/// protobuf), and converting keeps re-laid-out copies next to them (each
/// convolution or matmul weight permuted to ONNX layout, casts, reshapes)
/// plus any splatted constants, so a real graph stays well inside. Without
/// a total, a small hostile graph could multiply one large constant through
/// many consuming nodes, each copy within [`konst::MAX_CONSTANT_BYTES`].
pub const MAX_GRAPH_CONSTANT_BYTES: usize = 4 * konst::MAX_CONSTANT_BYTES;

/// Conversion state: values, the ONNX nodes and initializers built so far,
/// and every name in use.
pub(crate) struct Ctx {
    vals: Vec<Val>,
    pub nodes: Vec<NodeProto>,
    pub inits: Vec<TensorProto>,
    used: HashSet<String>,
    /// Bytes of every constant materialized so far (see `afford`).
    const_bytes: usize,
    /// What `const_bytes` may reach: [`MAX_GRAPH_CONSTANT_BYTES`], smaller
    /// in tests.
    const_limit: usize,
    /// Set when `add_const` took the total past the limit (a site that
    /// does not call `afford` first); the import fails after that node.
    over_limit: Option<String>,
}

impl Ctx {
    fn new(const_limit: usize) -> Ctx {
        Ctx {
            vals: Vec::new(),
            nodes: Vec::new(),
            inits: Vec::new(),
            used: HashSet::new(),
            const_bytes: 0,
            const_limit,
            over_limit: None,
        }
    }

    /// Whether `bytes` more of constants fit the import's total; called
    /// before a constant is materialized (a Const's values, a permuted or
    /// cast copy of another constant), so that an oversized one is refused
    /// instead of allocated. `add_const` does the charging.
    pub fn afford(&self, bytes: usize) -> Result<(), String> {
        let total = self.const_bytes.saturating_add(bytes);
        if total > self.const_limit {
            return Err(format!(
                "materializing {bytes} more bytes of constants would bring the graph's \
                 constants to {total} bytes, over the limit of {} bytes for one import",
                self.const_limit
            ));
        }
        Ok(())
    }

    pub fn val(&self, v: V) -> &Val {
        &self.vals[v]
    }

    pub fn dtype(&self, v: V) -> DType {
        self.vals[v].dtype
    }

    pub fn shape(&self, v: V) -> &Shape {
        &self.vals[v].shape
    }

    pub fn rank(&self, v: V) -> Option<usize> {
        self.vals[v].shape.as_ref().map(|s| s.len())
    }

    pub fn konst(&self, v: V) -> Option<&Tensor> {
        self.vals[v].konst.as_ref()
    }

    /// A name derived from `base` that nothing uses yet.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.used.contains(&name) {
            name = format!("{base}_{i}");
            i += 1;
        }
        self.used.insert(name.clone());
        name
    }

    /// A constant value, kept in Rust until something consumes it.
    pub fn add_const(&mut self, t: Tensor, hint: &str) -> V {
        let bytes = konst::nbytes(&t);
        if self.over_limit.is_none() {
            if let Err(e) = self.afford(bytes) {
                self.over_limit = Some(e);
            }
        }
        self.const_bytes = self.const_bytes.saturating_add(bytes);
        let shape = Some(t.shape.iter().map(|&d| Some(d as i64)).collect());
        self.vals.push(Val {
            onnx: None,
            dtype: t.dtype(),
            shape,
            konst: Some(t),
            hint: hint.to_string(),
        });
        self.vals.len() - 1
    }

    /// A value produced outside any node (a graph input).
    fn add_input(&mut self, name: &str, dtype: DType, shape: Shape) -> V {
        self.used.insert(name.to_string());
        self.vals.push(Val {
            onnx: Some(name.to_string()),
            dtype,
            shape,
            konst: None,
            hint: String::new(),
        });
        self.vals.len() - 1
    }

    /// The ONNX name of `v`; a constant becomes an initializer the first
    /// time it is asked for.
    pub fn name(&mut self, v: V) -> String {
        if let Some(n) = &self.vals[v].onnx {
            return n.clone();
        }
        let hint = self.vals[v].hint.clone();
        let name = self.fresh(&hint);
        if let Some(t) = &self.vals[v].konst {
            self.inits.push(onnx::tensor_to_proto(&name, t));
        }
        self.vals[v].onnx = Some(name.clone());
        name
    }

    /// An int64 1-D initializer (axes, shapes, pads) as an ONNX name.
    pub fn i64s(&mut self, vals: &[i64], hint: &str) -> String {
        let v = self.add_const(konst::i64_tensor(vec![vals.len()], vals.to_vec()), hint);
        self.name(v)
    }

    /// A scalar initializer of `dtype` holding `x`, as an ONNX name.
    pub fn scalar(&mut self, dtype: DType, x: f64, hint: &str) -> String {
        let v = self.add_const(konst::scalar(dtype, x), hint);
        self.name(v)
    }

    /// Adds one ONNX node with a single output named after `out` and returns
    /// the output value.
    pub fn emit(
        &mut self,
        op: &str,
        inputs: &[String],
        attrs: Vec<AttributeProto>,
        out: &str,
        dtype: DType,
        shape: Shape,
    ) -> V {
        let outs = self.emit_multi(op, inputs, attrs, &[(out.to_string(), dtype, shape)]);
        outs[0]
    }

    /// Adds one ONNX node with several outputs.
    pub fn emit_multi(
        &mut self,
        op: &str,
        inputs: &[String],
        attrs: Vec<AttributeProto>,
        outs: &[(String, DType, Shape)],
    ) -> Vec<V> {
        let mut names = Vec::with_capacity(outs.len());
        let mut vs = Vec::with_capacity(outs.len());
        for (base, dtype, shape) in outs {
            let name = self.fresh(base);
            self.vals.push(Val {
                onnx: Some(name.clone()),
                dtype: *dtype,
                shape: shape.clone(),
                konst: None,
                hint: String::new(),
            });
            vs.push(self.vals.len() - 1);
            names.push(name);
        }
        let base = &outs[0].0;
        let base = match base.rsplit_once(':') {
            Some((b, i)) if i.parse::<usize>().is_ok() => b,
            _ => base,
        };
        let node_name = self.fresh(&format!("{base}/{op}"));
        self.nodes.push(NodeProto {
            input: inputs.to_vec(),
            output: names,
            name: node_name,
            op_type: op.to_string(),
            attribute: attrs,
            ..Default::default()
        });
        vs
    }
}

/// One TensorFlow node as a converter sees it: the NodeDef and its data
/// inputs, already converted.
pub(crate) struct Node<'a> {
    pub def: &'a NodeDef,
    pub inputs: Vec<V>,
}

impl Node<'_> {
    /// The ONNX name for this node's output `i`: the TensorFlow tensor name.
    pub fn out(&self, i: usize) -> String {
        format!("{}:{i}", self.def.name)
    }

    /// A name for an intermediate value of this node's conversion.
    pub fn tmp(&self, what: &str) -> String {
        format!("{}/{what}", self.def.name)
    }

    /// Data input `i`, or an error naming what is missing.
    pub fn input(&self, i: usize) -> Result<V, String> {
        self.inputs.get(i).copied().ok_or_else(|| {
            format!(
                "expected at least {} inputs, got {}",
                i + 1,
                self.inputs.len()
            )
        })
    }

    pub fn expect_inputs(&self, n: usize) -> Result<(), String> {
        if self.inputs.len() < n {
            return Err(format!("expected {n} inputs, got {}", self.inputs.len()));
        }
        Ok(())
    }

    pub fn attr(&self, key: &str) -> Option<&attr_value::Value> {
        self.def
            .attr
            .get(key)
            .and_then(|a: &AttrValue| a.value.as_ref())
    }

    pub fn attr_i(&self, key: &str, default: i64) -> Result<i64, String> {
        match self.attr(key) {
            None => Ok(default),
            Some(attr_value::Value::I(i)) => Ok(*i),
            Some(_) => Err(format!("attribute '{key}' is not an integer")),
        }
    }

    pub fn attr_f(&self, key: &str, default: f32) -> Result<f32, String> {
        match self.attr(key) {
            None => Ok(default),
            Some(attr_value::Value::F(f)) => Ok(*f),
            Some(_) => Err(format!("attribute '{key}' is not a float")),
        }
    }

    pub fn attr_b(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.attr(key) {
            None => Ok(default),
            Some(attr_value::Value::B(b)) => Ok(*b),
            Some(_) => Err(format!("attribute '{key}' is not a bool")),
        }
    }

    pub fn attr_s(&self, key: &str, default: &str) -> Result<String, String> {
        match self.attr(key) {
            None => Ok(default.to_string()),
            Some(attr_value::Value::S(s)) => Ok(String::from_utf8_lossy(s).into_owned()),
            Some(_) => Err(format!("attribute '{key}' is not a string")),
        }
    }

    pub fn attr_ints(&self, key: &str) -> Result<Option<Vec<i64>>, String> {
        match self.attr(key) {
            None => Ok(None),
            Some(attr_value::Value::List(l)) => Ok(Some(l.i.clone())),
            Some(_) => Err(format!("attribute '{key}' is not a list of integers")),
        }
    }

    /// A `type` attribute as our element type.
    pub fn attr_dtype(&self, key: &str) -> Result<Option<DType>, String> {
        match self.attr(key) {
            None => Ok(None),
            Some(attr_value::Value::Type(t)) => dtype_of(*t).map(Some),
            Some(_) => Err(format!("attribute '{key}' is not a type")),
        }
    }

    /// The `data_format` attribute: true for channels-last (the default).
    pub fn nhwc(&self) -> Result<bool, String> {
        let f = self.attr_s("data_format", "NHWC")?;
        match f.as_str() {
            "NHWC" | "NWC" | "NDHWC" => Ok(true),
            "NCHW" | "NCW" | "NCDHW" => Ok(false),
            other => Err(format!("data_format '{other}' is not supported")),
        }
    }
}

/// A TensorFlow element type as ours; the error says which type it was.
pub(crate) fn dtype_of(t: i32) -> Result<DType, String> {
    Ok(match t {
        dt::FLOAT => DType::F32,
        dt::DOUBLE => DType::F64,
        dt::INT32 => DType::I32,
        dt::INT64 => DType::I64,
        dt::UINT8 => DType::U8,
        dt::INT8 => DType::I8,
        dt::BOOL => DType::Bool,
        other => return Err(format!("element type {} is not supported", dt::name(other))),
    })
}

pub(crate) fn shape_of(s: &TensorShapeProto) -> Shape {
    if s.unknown_rank {
        return None;
    }
    Some(
        s.dim
            .iter()
            .map(|d| if d.size < 0 { None } else { Some(d.size) })
            .collect(),
    )
}

/// `node`, `node:3` or `^node` → (node name, output index, control?).
pub(crate) fn parse_input(s: &str) -> (&str, usize, bool) {
    let (s, control) = match s.strip_prefix('^') {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    if let Some((node, idx)) = s.rsplit_once(':') {
        if let Ok(i) = idx.parse::<usize>() {
            return (node, i, control);
        }
    }
    (s, 0, control)
}

fn err(msg: impl Into<String>) -> OptimizerError {
    OptimizerError::TfImport(msg.into())
}

/// Ops that produce no data a caller could want as a default output.
const NOT_OUTPUTS: &[&str] = &[
    "NoOp",
    "Const",
    "Placeholder",
    "Assert",
    "SaveV2",
    "RestoreV2",
];

/// Decodes a frozen GraphDef, telling a SavedModel apart with a hint.
pub(crate) fn decode(pb: &[u8]) -> Result<GraphDef> {
    // A SavedModel's saved_model.pb starts with field 1 as a varint
    // (saved_model_schema_version), which a GraphDef never does (its field 1
    // is the repeated NodeDef, length-delimited).
    let looks_saved_model = pb.first() == Some(&0x08);
    let graph = match GraphDef::decode(pb) {
        Ok(g) => g,
        Err(_) if looks_saved_model => return Err(err(SAVED_MODEL_HINT.to_string())),
        Err(e) => {
            return Err(err(format!(
                "not a TensorFlow GraphDef protobuf (frozen .pb): {e}"
            )))
        }
    };
    if graph.node.is_empty() {
        return Err(err(format!(
            "the GraphDef has no nodes; if this is a SavedModel's saved_model.pb: {}",
            SAVED_MODEL_HINT
        )));
    }
    Ok(graph)
}

pub(crate) fn import(pb: &[u8], opts: &ImportOptions) -> Result<ModelProto> {
    import_limited(pb, opts, MAX_GRAPH_CONSTANT_BYTES)
}

/// [`import`] with the total for constants given (tests use a small one).
pub(crate) fn import_limited(
    pb: &[u8],
    opts: &ImportOptions,
    const_limit: usize,
) -> Result<ModelProto> {
    import_graph(decode(pb)?, opts, &Names::default(), const_limit)
}

/// The ONNX names of the graph's inputs and outputs, where they are not the
/// TensorFlow tensor names (a SavedModel's signature keys).
#[derive(Debug, Default)]
pub(crate) struct Names {
    /// Input node → the ONNX input's name.
    pub inputs: HashMap<String, String>,
    /// One per entry of `ImportOptions::outputs`, in order; two may name the
    /// same tensor.
    pub outputs: Vec<String>,
}

/// Converts a decoded GraphDef; see [`import_limited`].
pub(crate) fn import_graph(
    graph: GraphDef,
    opts: &ImportOptions,
    names: &Names,
    const_limit: usize,
) -> Result<ModelProto> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        if n.name.is_empty() {
            return Err(err(format!("node #{i} ({}) has no name", n.op)));
        }
        if by_name.insert(n.name.as_str(), i).is_some() {
            return Err(err(format!("two nodes are named '{}'", n.name)));
        }
    }
    for n in &graph.node {
        for inp in &n.input {
            let (src, _, _) = parse_input(inp);
            if !by_name.contains_key(src) {
                return Err(err(format!(
                    "node '{}' ({}): input '{inp}' names no node of the graph",
                    n.name, n.op
                )));
            }
        }
    }

    // Inputs: the caller's list, else every Placeholder the outputs need.
    let strip = |s: &str| parse_input(s).0.to_string();
    let explicit_inputs: Option<Vec<String>> = opts
        .inputs
        .as_ref()
        .map(|v| v.iter().map(|s| strip(s)).collect());
    if let Some(ins) = &explicit_inputs {
        let missing: Vec<&str> = ins
            .iter()
            .filter(|s| !by_name.contains_key(s.as_str()))
            .map(|s| s.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(err(format!(
                "input nodes not in the graph: {}",
                missing.join(", ")
            )));
        }
    }

    // Outputs: tensor names (`node:i`) the graph must produce.
    let outputs: Vec<(String, usize)> = match &opts.outputs {
        Some(list) => {
            let mut out = Vec::new();
            let mut missing = Vec::new();
            for s in list {
                let (node, i, _) = parse_input(s);
                if !by_name.contains_key(node) {
                    missing.push(s.clone());
                } else if !names.outputs.is_empty()
                    || !out.iter().any(|(n, j)| n == node && *j == i)
                {
                    out.push((node.to_string(), i));
                }
            }
            if !missing.is_empty() {
                return Err(err(format!(
                    "output nodes not in the graph: {}",
                    missing.join(", ")
                )));
            }
            out
        }
        None => {
            let mut consumed: HashSet<&str> = HashSet::new();
            for n in &graph.node {
                for inp in &n.input {
                    let (src, _, control) = parse_input(inp);
                    if !control {
                        consumed.insert(src);
                    }
                }
            }
            graph
                .node
                .iter()
                .filter(|n| {
                    !consumed.contains(n.name.as_str()) && !NOT_OUTPUTS.contains(&n.op.as_str())
                })
                .map(|n| (n.name.clone(), 0))
                .collect()
        }
    };
    if outputs.is_empty() {
        return Err(err(
            "the graph has no output: every node is consumed or a NoOp/Const/Placeholder; name the outputs",
        ));
    }

    let is_input = |name: &str, op: &str| match &explicit_inputs {
        Some(list) => list.iter().any(|s| s == name),
        None => op == "Placeholder",
    };

    // Nodes the outputs need, through data edges, stopping at the inputs.
    let mut needed = vec![false; graph.node.len()];
    let mut stack: Vec<usize> = outputs.iter().map(|(n, _)| by_name[n.as_str()]).collect();
    while let Some(i) = stack.pop() {
        if needed[i] {
            continue;
        }
        needed[i] = true;
        let n = &graph.node[i];
        if is_input(&n.name, &n.op) {
            continue;
        }
        for inp in &n.input {
            let (src, _, control) = parse_input(inp);
            if !control {
                stack.push(by_name[src]);
            }
        }
    }

    // Every unsupported op at once, so one round trip fixes the graph.
    let unsupported: Vec<String> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(i, n)| needed[*i] && !is_input(&n.name, &n.op) && !ops::is_supported(&n.op))
        .map(|(_, n)| format!("{} (node {})", n.op, n.name))
        .collect();
    if !unsupported.is_empty() {
        return Err(err(format!(
            "unsupported TensorFlow ops: {}",
            unsupported.join(", ")
        )));
    }

    let order = topo_order(&graph, &by_name, &needed, &is_input)?;

    let mut cx = Ctx::new(const_limit);
    // The TensorFlow tensor names are the ONNX names of inputs and outputs;
    // reserve the outputs' so nothing else takes them.
    let out_names: Vec<(String, String)> = outputs
        .iter()
        .enumerate()
        .map(|(k, (n, i))| {
            let tf = format!("{n}:{i}");
            (
                names.outputs.get(k).cloned().unwrap_or_else(|| tf.clone()),
                tf,
            )
        })
        .collect();
    // Names chosen for the graph's ends (signature keys) are taken before
    // any other value is named, so that none can take them.
    let chosen: HashSet<String> = names
        .inputs
        .values()
        .chain(out_names.iter().filter(|(n, tf)| n != tf).map(|(n, _)| n))
        .cloned()
        .collect();
    cx.used.extend(chosen.iter().cloned());
    let mut tensors: HashMap<String, V> = HashMap::new();
    let mut graph_inputs = Vec::new();
    for &i in &order {
        let def = &graph.node[i];
        if is_input(&def.name, &def.op) {
            let onnx_name = names
                .inputs
                .get(&def.name)
                .cloned()
                .unwrap_or_else(|| format!("{}:0", def.name));
            let v = input_val(&mut cx, def, opts, &onnx_name)?;
            let vi = value_info(&cx, v, &onnx_name);
            graph_inputs.push(vi);
            tensors.insert(format!("{}:0", def.name), v);
            continue;
        }
        let mut inputs = Vec::new();
        for inp in &def.input {
            let (src, idx, control) = parse_input(inp);
            if control {
                continue;
            }
            let key = format!("{src}:{idx}");
            let v = tensors.get(&key).copied().ok_or_else(|| {
                err(format!(
                    "node '{}' ({}): input '{inp}' is not produced by node '{src}'",
                    def.name, def.op
                ))
            })?;
            inputs.push(v);
        }
        let node = Node { def, inputs };
        let outs = ops::convert(&mut cx, &node)
            .map_err(|e| err(format!("node '{}' ({}): {e}", def.name, def.op)))?;
        if let Some(e) = cx.over_limit.take() {
            return Err(err(format!("node '{}' ({}): {e}", def.name, def.op)));
        }
        for (k, v) in outs.into_iter().enumerate() {
            tensors.insert(format!("{}:{k}", def.name), v);
        }
    }

    let mut graph_outputs = Vec::new();
    for (name, tf) in &out_names {
        let v = *tensors
            .get(tf)
            .ok_or_else(|| err(format!("output '{name}': the node has no such output")))?;
        let have = cx.name(v);
        if have != *name {
            // The value carries another name (an Identity chain, a constant,
            // a shared value): give the user's tensor name its own node.
            if cx.used.contains(name) && !chosen.contains(name) {
                return Err(err(format!(
                    "output '{name}': the name is taken by another value"
                )));
            }
            cx.used.insert(name.clone());
            cx.nodes.push(onnx::node(
                "Identity",
                &format!("{name}/Identity"),
                &[&have],
                &[name],
                vec![],
            ));
        }
        graph_outputs.push(value_info(&cx, v, name));
    }

    let mut g = GraphProto {
        name: "tensorflow".into(),
        node: std::mem::take(&mut cx.nodes),
        initializer: std::mem::take(&mut cx.inits),
        input: graph_inputs,
        output: graph_outputs,
        ..Default::default()
    };
    cancel_transposes(&mut g);
    remove_dead(&mut g);
    let mut model = crate::onnx_build::model(g);
    model.producer_name = "whetstone-tf-import".into();
    Ok(model)
}

/// Topological order of the needed nodes (inputs first), iteratively so deep
/// graphs cannot overflow the stack. A cycle (TF1 while loops) is an error.
fn topo_order(
    graph: &GraphDef,
    by_name: &HashMap<&str, usize>,
    needed: &[bool],
    is_input: &dyn Fn(&str, &str) -> bool,
) -> Result<Vec<usize>> {
    // 0 = new, 1 = on the stack, 2 = done
    let mut state = vec![0u8; graph.node.len()];
    let mut order = Vec::new();
    for start in 0..graph.node.len() {
        if !needed[start] || state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (i, ref mut next)) = stack.last_mut() {
            let n = &graph.node[i];
            let deps: &[String] = if is_input(&n.name, &n.op) {
                &[]
            } else {
                &n.input
            };
            let mut pushed = false;
            while *next < deps.len() {
                let (src, _, control) = parse_input(&deps[*next]);
                *next += 1;
                if control {
                    continue;
                }
                let j = by_name[src];
                match state[j] {
                    0 => {
                        state[j] = 1;
                        stack.push((j, 0));
                        pushed = true;
                        break;
                    }
                    1 => {
                        return Err(err(format!(
                            "the graph has a cycle through node '{}' ({}); control-flow loops are not supported",
                            graph.node[j].name, graph.node[j].op
                        )))
                    }
                    _ => {}
                }
            }
            if !pushed {
                state[i] = 2;
                order.push(i);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// A graph input from a Placeholder (or any node the caller named as input).
fn input_val(cx: &mut Ctx, def: &NodeDef, opts: &ImportOptions, onnx_name: &str) -> Result<V> {
    let node = Node {
        def,
        inputs: vec![],
    };
    let ctx = |e: String| err(format!("input node '{}' ({}): {e}", def.name, def.op));
    let dtype = match node.attr_dtype("dtype").map_err(ctx)? {
        Some(d) => d,
        None => node
            .attr_dtype("T")
            .map_err(ctx)?
            .ok_or_else(|| ctx("no 'dtype' attribute says its element type".into()))?,
    };
    let overridden = opts
        .input_shapes
        .iter()
        .find(|(k, _)| parse_input(k).0 == def.name)
        .map(|(_, s)| {
            s.iter()
                .map(|&d| if d < 0 { None } else { Some(d) })
                .collect()
        });
    let shape: Shape = match overridden {
        Some(s) => Some(s),
        None => match node.attr("shape") {
            Some(attr_value::Value::Shape(s)) => shape_of(s),
            _ => None,
        },
    };
    // Serving checks every request against the input's rank, so it must be
    // known.
    if shape.is_none() {
        return Err(ctx(
            "the Placeholder's rank is unknown; give its shape in the import's input shapes".into(),
        ));
    }
    Ok(cx.add_input(onnx_name, dtype, shape))
}

fn value_info(cx: &Ctx, v: V, name: &str) -> onnx::ValueInfoProto {
    let val = cx.val(v);
    let elem = onnx::data_type_of(val.dtype);
    // Unknown sizes get no symbolic name: equal names would tell ONNX
    // Runtime that two dimensions are equal, which we do not know.
    let shape = val.shape.as_ref().map(|dims| onnx::TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| onnx::Dimension {
                value: d.map(onnx::DimValue::DimValue),
                denotation: String::new(),
            })
            .collect(),
    });
    onnx::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(onnx::TypeProto {
            value: Some(onnx::TypeValue::TensorType(onnx::TypeTensor {
                elem_type: elem,
                shape,
            })),
            denotation: String::new(),
        }),
        ..Default::default()
    }
}

/// `Transpose(Transpose(x, p), q)` with `q∘p` the identity is `x`: the
/// NHWC↔NCHW pairs around back-to-back convolutions and pools cancel here.
fn cancel_transposes(g: &mut GraphProto) {
    let perm_of = |n: &NodeProto| onnx::attr(n, "perm").map(|a| a.ints.clone());
    let producers = onnx::producers(g);
    let keep: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    let mut rename: HashMap<String, String> = HashMap::new();
    for n in &g.node {
        if n.op_type != "Transpose" || keep.contains(&n.output[0]) {
            continue;
        }
        let Some(q) = perm_of(n) else { continue };
        let Some(&pi) = n.input.first().and_then(|i| producers.get(i)) else {
            continue;
        };
        let prev = &g.node[pi];
        if prev.op_type != "Transpose" {
            continue;
        }
        let Some(p) = perm_of(prev) else { continue };
        let identity = p.len() == q.len()
            && q.iter().enumerate().all(|(i, &qi)| {
                usize::try_from(qi).ok().and_then(|k| p.get(k)) == Some(&(i as i64))
            });
        if identity {
            rename.insert(n.output[0].clone(), prev.input[0].clone());
        }
    }
    if rename.is_empty() {
        return;
    }
    for n in g.node.iter_mut() {
        for inp in n.input.iter_mut() {
            if let Some(r) = rename.get(inp) {
                *inp = r.clone();
            }
        }
    }
}

/// Drops nodes and initializers no output needs.
fn remove_dead(g: &mut GraphProto) {
    let producers = onnx::producers(g);
    let mut live: HashSet<String> = HashSet::new();
    let mut stack: Vec<String> = g.output.iter().map(|o| o.name.clone()).collect();
    let mut live_nodes = vec![false; g.node.len()];
    while let Some(name) = stack.pop() {
        if !live.insert(name.clone()) {
            continue;
        }
        if let Some(&i) = producers.get(&name) {
            if !live_nodes[i] {
                live_nodes[i] = true;
                stack.extend(g.node[i].input.iter().filter(|s| !s.is_empty()).cloned());
            }
        }
    }
    let mut i = 0;
    g.node.retain(|_| {
        i += 1;
        live_nodes[i - 1]
    });
    g.initializer.retain(|t| live.contains(&t.name));
}

/// Element type code for ONNX attributes that name a type (Cast `to`).
pub(crate) fn onnx_type(d: DType) -> i64 {
    onnx::data_type_of(d) as i64
}
