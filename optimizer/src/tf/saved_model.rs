//! TensorFlow SavedModels (a folder with `saved_model.pb` and `variables/`)
//! to the one flat GraphDef the importer converts.
//!
//! 1. The MetaGraphDef tagged `serve` and one of its signatures
//!    (`serving_default` unless another is named) give the graph, the
//!    tensors to feed and the tensors to fetch, under the names clients know
//!    from `saved_model_cli show`.
//! 2. Function calls are inlined ([`flatten`]): TF2 graphs keep their bodies
//!    in the function library, reached through `StatefulPartitionedCall` /
//!    `PartitionedCall` nodes (nested), with inputs written
//!    `node:output_arg:index` inside a function.
//! 3. Variables become constants ([`freeze`]): the graph's own restore ops
//!    (a Saver's `RestoreV2` feeding `Assign`/`AssignVariableOp`, in TF1 at
//!    the top level, in TF2 inside the restore function) say which checkpoint
//!    key holds which variable; each `ReadVariableOp` (TF2 resource
//!    variables) or `VariableV2` (TF1) the signature needs becomes a `Const`
//!    holding the checkpoint's tensor ([`super::bundle`]).
//!
//! What is left is what a frozen graph would have been, and goes through the
//! same importer, which lists unsupported ops (control flow: `While`, `If`)
//! by node name.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use prost::Message;

use super::bundle::Bundle;
use super::import::parse_input;
use super::proto::{
    attr_value, AttrValue, FunctionDef, FunctionDefLibrary, GraphDef, MetaGraphDef, NodeDef,
    SavedModel, SignatureDef, TensorProto,
};

/// The signature a loader takes when none is named (TensorFlow Serving's
/// and `saved_model_cli`'s default).
pub const DEFAULT_SIGNATURE: &str = "serving_default";
/// The largest `saved_model.pb` read: a protobuf message cannot exceed 2 GiB.
const MAX_SAVED_MODEL_BYTES: u64 = 2 << 30;
/// Function calls nested deeper than this are refused (a recursive library).
const MAX_CALL_DEPTH: usize = 64;
/// The most nodes inlining may produce: a library whose functions call each
/// other many times over would otherwise multiply without bound.
const MAX_FLAT_NODES: usize = 2_000_000;

/// A SavedModel's serving signature and the flat graph that computes it.
pub(crate) struct Flattened {
    pub graph: GraphDef,
    /// Signature input key → the Placeholder node it feeds.
    pub inputs: Vec<(String, String)>,
    /// Signature output key → the flat graph's tensor (`node:index`).
    pub outputs: Vec<(String, String)>,
}

/// Whether `dir` looks like a SavedModel folder.
pub fn is_saved_model(dir: &Path) -> bool {
    dir.join("saved_model.pb").is_file()
}

/// Reads the SavedModel in `dir` and returns the flat, frozen graph of
/// `signature` (default [`DEFAULT_SIGNATURE`]). Errors are messages for the
/// user: they name the file, signature, node or variable concerned.
pub(crate) fn load(dir: &Path, signature: Option<&str>) -> Result<Flattened, String> {
    let pb = dir.join("saved_model.pb");
    let len = std::fs::metadata(&pb)
        .map_err(|e| format!("{}: {e}", pb.display()))?
        .len();
    if len > MAX_SAVED_MODEL_BYTES {
        return Err(format!(
            "{}: {len} bytes, more than a protobuf message can hold",
            pb.display()
        ));
    }
    let bytes = std::fs::read(&pb).map_err(|e| format!("{}: {e}", pb.display()))?;
    let saved = SavedModel::decode(bytes.as_slice())
        .map_err(|e| format!("{}: not a SavedModel protobuf: {e}", pb.display()))?;
    drop(bytes);
    let meta = serving_meta_graph(saved).map_err(|e| format!("{}: {e}", pb.display()))?;
    let name = signature.unwrap_or(DEFAULT_SIGNATURE);
    let sig = pick_signature(&meta, name).map_err(|e| format!("{}: {e}", pb.display()))?;
    let graph = meta.graph_def.unwrap_or_default();
    let restore = meta
        .saver_def
        .map(|s| s.restore_op_name)
        .unwrap_or_default();
    let variables = dir.join("variables");
    // TF2: the variables the graph's function calls capture, by the
    // checkpoint key their saved object has (how TensorFlow itself loads).
    let captured = captured_variables(&graph, meta.object_graph_def.as_ref());
    let mut bundle = None;
    let mut known = HashMap::new();
    if !captured.is_empty() {
        let b = Bundle::open(&variables)?;
        known = checkpoint_keys(&b, &captured)?;
        bundle = Some(b);
    }

    let mut flat = flatten(graph)?;
    let inputs = tensor_names(&sig.inputs, name, "input")?;
    let outputs = tensor_names(&sig.outputs, name, "output")?;
    let mut feeds = Vec::new();
    for (key, tensor) in &inputs {
        let (node, idx, _) = parse_input(tensor);
        let resolved = flat.resolve(&format!("{node}:{idx}"));
        let (node, idx, _) = parse_input(&resolved);
        if idx != 0 || !flat.nodes.iter().any(|n| n.name == node) {
            return Err(format!(
                "signature '{name}': input '{key}' is tensor '{tensor}', which is not a \
                 placeholder of the graph"
            ));
        }
        feeds.push((key.clone(), node.to_string()));
    }
    let fetches: Vec<(String, String)> = outputs
        .iter()
        .map(|(key, tensor)| {
            let (node, idx, _) = parse_input(tensor);
            (key.clone(), flat.resolve(&format!("{node}:{idx}")))
        })
        .collect();
    for n in &mut flat.nodes {
        for inp in &mut n.input {
            *inp = flat_alias(&flat.alias, inp);
        }
    }
    let feed_nodes: HashSet<&str> = feeds.iter().map(|(_, n)| n.as_str()).collect();
    let graph = freeze(
        flat.nodes,
        &fetches,
        &feed_nodes,
        Variables {
            dir: &variables,
            bundle,
            known,
            restore_op: &restore,
        },
    )?;
    Ok(Flattened {
        graph,
        inputs: feeds,
        outputs: fetches,
    })
}

fn serving_meta_graph(saved: SavedModel) -> Result<MetaGraphDef, String> {
    let mut tag_sets = Vec::new();
    for m in saved.meta_graphs {
        let tags = m
            .meta_info_def
            .as_ref()
            .map(|i| i.tags.clone())
            .unwrap_or_default();
        if tags.iter().any(|t| t == "serve") {
            return Ok(m);
        }
        tag_sets.push(format!("[{}]", tags.join(", ")));
    }
    Err(format!(
        "no MetaGraphDef is tagged 'serve' (the tag sets are: {}); save the model for serving \
         (tf.saved_model.save, or tags=[tf.saved_model.SERVING] in TF1)",
        if tag_sets.is_empty() {
            "none".to_string()
        } else {
            tag_sets.join(", ")
        }
    ))
}

fn pick_signature(meta: &MetaGraphDef, name: &str) -> Result<SignatureDef, String> {
    if let Some(s) = meta.signature_def.get(name) {
        return Ok(s.clone());
    }
    let mut have: Vec<&str> = meta
        .signature_def
        .keys()
        .map(String::as_str)
        .filter(|k| !k.starts_with("__"))
        .collect();
    have.sort_unstable();
    Err(format!(
        "no signature '{name}'; the SavedModel's signatures are: {} (choose one with \
         model_info.signature_name)",
        if have.is_empty() {
            "none".to_string()
        } else {
            have.join(", ")
        }
    ))
}

/// A signature's keys and tensor names, sorted by key.
fn tensor_names(
    map: &HashMap<String, super::proto::TensorInfo>,
    sig: &str,
    what: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (key, info) in map {
        match &info.encoding {
            Some(super::proto::tensor_info::Encoding::Name(n)) if !n.is_empty() => {
                out.push((key.clone(), n.clone()))
            }
            _ => {
                return Err(format!(
                    "signature '{sig}': {what} '{key}' is a sparse or composite tensor, which \
                     is not supported (only dense tensors are)"
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(format!("signature '{sig}' has no {what}s"));
    }
    out.sort();
    Ok(out)
}

/// A graph with every function call inlined: the nodes, and the call
/// outputs that now stand for other tensors.
pub(crate) struct Flat {
    pub nodes: Vec<NodeDef>,
    /// `call:i` → the tensor (`node:j`, or another alias) it returns.
    pub alias: HashMap<String, String>,
    /// The most nodes inlining may produce.
    limit: usize,
}

impl Flat {
    /// The tensor `r` (`node:i`) stands for once calls are inlined.
    pub fn resolve(&self, r: &str) -> String {
        flat_alias(&self.alias, r)
    }
}

fn flat_alias(alias: &HashMap<String, String>, r: &str) -> String {
    if r.starts_with('^') {
        return r.to_string();
    }
    let mut cur = r.to_string();
    // Each alias points at a deeper call's result; a chain cannot be longer
    // than the nesting, so this bound only stops a cycle.
    for _ in 0..=MAX_CALL_DEPTH * 4 {
        match alias.get(&cur) {
            Some(next) => cur = next.clone(),
            None => break,
        }
    }
    cur
}

/// Whether a node calls a library function, and which.
fn callee<'a>(n: &'a NodeDef, lib: &HashMap<&str, &'a FunctionDef>) -> Option<&'a str> {
    if matches!(n.op.as_str(), "StatefulPartitionedCall" | "PartitionedCall") {
        return match n.attr.get("f").and_then(|a| a.value.as_ref()) {
            Some(attr_value::Value::Func(f)) => Some(f.name.as_str()),
            _ => None,
        };
    }
    lib.get(n.op.as_str()).map(|f| {
        f.signature
            .as_ref()
            .map_or(n.op.as_str(), |s| s.name.as_str())
    })
}

/// Ops with more than one output argument that inference graphs use: their
/// argument names in order (each one tensor), to number `node:arg:index`.
const OUTPUT_ARGS: &[(&str, &[&str])] = &[
    (
        "FusedBatchNorm",
        &[
            "y",
            "batch_mean",
            "batch_variance",
            "reserve_space_1",
            "reserve_space_2",
        ],
    ),
    (
        "FusedBatchNormV2",
        &[
            "y",
            "batch_mean",
            "batch_variance",
            "reserve_space_1",
            "reserve_space_2",
        ],
    ),
    (
        "FusedBatchNormV3",
        &[
            "y",
            "batch_mean",
            "batch_variance",
            "reserve_space_1",
            "reserve_space_2",
            "reserve_space_3",
        ],
    ),
    ("TopKV2", &["values", "indices"]),
    ("Unique", &["y", "idx"]),
    ("UniqueV2", &["y", "idx"]),
    ("UniqueWithCounts", &["y", "idx", "count"]),
    ("Switch", &["output_false", "output_true"]),
    ("Merge", &["output", "value_index"]),
    (
        "NonMaxSuppressionV4",
        &["selected_indices", "valid_outputs"],
    ),
    (
        "NonMaxSuppressionV5",
        &["selected_indices", "selected_scores", "valid_outputs"],
    ),
    ("BroadcastGradientArgs", &["r0", "r1"]),
];

/// Inlines every function call of `graph` (recursively), dropping control
/// edges, which inference does not need and which would name call nodes
/// that no longer exist.
pub(crate) fn flatten(graph: GraphDef) -> Result<Flat, String> {
    flatten_limited(graph, MAX_FLAT_NODES)
}

/// [`flatten`] with at most `limit` nodes.
fn flatten_limited(graph: GraphDef, limit: usize) -> Result<Flat, String> {
    let GraphDef { node, library, .. } = graph;
    let lib = functions(library.as_ref());
    let mut out = Flat {
        nodes: Vec::new(),
        alias: HashMap::new(),
        limit,
    };
    for n in node {
        let inputs: Vec<String> = n
            .input
            .iter()
            .filter(|i| !i.starts_with('^'))
            .map(|i| {
                let (node, idx, _) = parse_input(i);
                format!("{node}:{idx}")
            })
            .collect();
        match callee(&n, &lib) {
            Some(f) => inline(&lib, f, &n.name, inputs, 1, &mut out)?,
            None => out.push(NodeDef { input: inputs, ..n })?,
        }
    }
    Ok(out)
}

/// A graph's function library by function name.
fn functions(library: Option<&FunctionDefLibrary>) -> HashMap<&str, &FunctionDef> {
    library
        .iter()
        .flat_map(|l| l.function.iter())
        .filter_map(|f| f.signature.as_ref().map(|s| (s.name.as_str(), f)))
        .collect()
}

impl Flat {
    /// Adds a node, within the node budget.
    fn push(&mut self, node: NodeDef) -> Result<(), String> {
        self.nodes.push(node);
        if self.nodes.len() > self.limit {
            return Err(format!(
                "inlining the graph's function calls gives more than {} nodes",
                self.limit
            ));
        }
        Ok(())
    }
}

/// Emits the body of function `name`, called by the flat graph's node
/// `caller` with `args` (tensors of the enclosing scope), its nodes named
/// under `caller/`; the caller's outputs (`caller:i`) then stand for the
/// function's results, in output-argument order.
fn inline(
    lib: &HashMap<&str, &FunctionDef>,
    name: &str,
    caller: &str,
    args: Vec<String>,
    depth: usize,
    out: &mut Flat,
) -> Result<(), String> {
    let prefix = format!("{caller}/");
    if depth > MAX_CALL_DEPTH {
        return Err(format!(
            "node '{caller}': function calls nested more than {MAX_CALL_DEPTH} deep (a recursive function?)"
        ));
    }
    let f = lib.get(name).ok_or_else(|| {
        format!(
            "node '{caller}' calls function '{name}', which the graph's library does not define"
        )
    })?;
    let sig = f.signature.clone().unwrap_or_default();
    if sig.input_arg.len() != args.len() {
        return Err(format!(
            "node '{caller}' calls function '{name}' with {} inputs; it takes {}",
            args.len(),
            sig.input_arg.len()
        ));
    }
    let arg_of: HashMap<&str, &String> = sig
        .input_arg
        .iter()
        .map(|a| a.name.as_str())
        .zip(args.iter())
        .collect();
    let body: HashMap<&str, &NodeDef> = f.node_def.iter().map(|n| (n.name.as_str(), n)).collect();
    // `node:output_arg:index` (or an argument's name) inside the function to
    // a tensor of the flat graph.
    let tensor = |r: &str| -> Result<String, String> {
        let parts: Vec<&str> = r.split(':').collect();
        match parts.as_slice() {
            [arg] => arg_of.get(arg).map(|t| t.to_string()).ok_or_else(|| {
                format!("function '{name}': '{r}' names neither an argument nor a node output")
            }),
            [node, arg, idx @ ..] => {
                let idx: usize = match idx {
                    [] => 0,
                    [i] => i
                        .parse()
                        .map_err(|_| format!("function '{name}': bad input '{r}'"))?,
                    _ => return Err(format!("function '{name}': bad input '{r}'")),
                };
                let n = body.get(node).ok_or_else(|| {
                    format!("function '{name}': input '{r}' names no node of the function")
                })?;
                let flat = output_index(n, arg, idx, lib);
                Ok(format!("{prefix}{node}:{flat}"))
            }
            [] => Err(format!("function '{name}': empty input")),
        }
    };
    for n in &f.node_def {
        let inputs = n
            .input
            .iter()
            .filter(|i| !i.starts_with('^'))
            .map(|i| tensor(i))
            .collect::<Result<Vec<_>, _>>()?;
        let flat_name = format!("{prefix}{}", n.name);
        match callee(n, lib) {
            Some(g) => inline(lib, g, &flat_name, inputs, depth + 1, out)?,
            None => out.push(NodeDef {
                name: flat_name,
                input: inputs,
                ..n.clone()
            })?,
        }
    }
    for (i, a) in sig.output_arg.iter().enumerate() {
        let r = f
            .ret
            .get(&a.name)
            .ok_or_else(|| format!("function '{name}': output '{}' is not returned", a.name))?;
        let result = tensor(r)?;
        out.alias.insert(format!("{caller}:{i}"), result);
    }
    Ok(())
}

/// The flat output number of `node:arg:idx` for node `n` of a function.
fn output_index(n: &NodeDef, arg: &str, idx: usize, lib: &HashMap<&str, &FunctionDef>) -> usize {
    // A call's results are one list (`output`), or, when the node's op is a
    // function itself, that function's output arguments.
    if let Some(f) = lib.get(n.op.as_str()) {
        if let Some(pos) = f
            .signature
            .as_ref()
            .and_then(|s| s.output_arg.iter().position(|a| a.name == arg))
        {
            return pos + idx;
        }
    }
    if let Some((_, args)) = OUTPUT_ARGS.iter().find(|(op, _)| *op == n.op) {
        if let Some(pos) = args.iter().position(|a| *a == arg) {
            return pos + idx;
        }
    }
    idx
}

/// The variable handles top-level function calls capture, with the object
/// graph node of each: a concrete function's trailing inputs are its
/// captures, in the order of its `bound_inputs`.
fn captured_variables(
    graph: &GraphDef,
    objects: Option<&super::proto::SavedObjectGraph>,
) -> HashMap<String, i32> {
    let mut out = HashMap::new();
    let Some(objects) = objects else {
        return out;
    };
    let lib = functions(graph.library.as_ref());
    for n in &graph.node {
        let Some(f) = callee(n, &lib) else { continue };
        let Some(concrete) = objects.concrete_functions.get(f) else {
            continue;
        };
        let inputs: Vec<&str> = n
            .input
            .iter()
            .filter(|i| !i.starts_with('^'))
            .map(|i| parse_input(i).0)
            .collect();
        let k = concrete.bound_inputs.len();
        if k == 0 || inputs.len() < k {
            continue;
        }
        for (handle, &id) in inputs[inputs.len() - k..]
            .iter()
            .zip(&concrete.bound_inputs)
        {
            out.entry(handle.to_string()).or_insert(id);
        }
    }
    out
}

/// The checkpoint key of each captured variable, from the checkpoint's
/// object graph (`VARIABLE_VALUE` of the node the handle is bound to).
fn checkpoint_keys(
    bundle: &Bundle,
    captured: &HashMap<String, i32>,
) -> Result<HashMap<String, String>, String> {
    let Some(bytes) = bundle.string_scalar("_CHECKPOINTABLE_OBJECT_GRAPH")? else {
        return Ok(HashMap::new());
    };
    let graph = super::proto::TrackableObjectGraph::decode(bytes.as_slice())
        .map_err(|e| format!("the checkpoint's object graph does not decode: {e}"))?;
    let mut out = HashMap::new();
    for (handle, &id) in captured {
        let key = usize::try_from(id)
            .ok()
            .and_then(|i| graph.nodes.get(i))
            .and_then(|node| node.attributes.iter().find(|a| a.name == "VARIABLE_VALUE"))
            .map(|a| a.checkpoint_key.clone());
        if let Some(key) = key {
            out.insert(handle.clone(), key);
        }
    }
    Ok(out)
}

/// Where variables' values come from.
struct Variables<'a> {
    /// The SavedModel's `variables/` folder.
    dir: &'a Path,
    /// The checkpoint, if already opened.
    bundle: Option<Bundle>,
    /// Variable node → checkpoint key, from the object graph (TF2).
    known: HashMap<String, String>,
    /// The saver's restore op, for messages.
    restore_op: &'a str,
}

/// Variable ops: TF1 reference variables and TF2 resource handles.
fn is_variable(op: &str) -> bool {
    matches!(op, "VariableV2" | "Variable" | "VarHandleOp")
}

/// Keeps the nodes `fetches` need (stopping at `feeds`), with every variable
/// they read replaced by a Const holding its checkpoint value.
fn freeze(
    nodes: Vec<NodeDef>,
    fetches: &[(String, String)],
    feeds: &HashSet<&str>,
    vars: Variables,
) -> Result<GraphDef, String> {
    let Variables {
        dir: variables,
        mut bundle,
        known,
        restore_op,
    } = vars;
    let index: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    let node_of = |r: &str| index.get(parse_input(r).0).copied();
    // Through Identity nodes to what a tensor really is.
    let through = |r: &str| -> Option<(usize, usize)> {
        let mut cur = r.to_string();
        for _ in 0..1000 {
            let i = node_of(&cur)?;
            let n = &nodes[i];
            if matches!(n.op.as_str(), "Identity" | "Snapshot") && !n.input.is_empty() {
                cur = n.input[0].clone();
                continue;
            }
            return Some((i, parse_input(&cur).1));
        }
        None
    };
    // Which checkpoint key restores which variable: every assignment of a
    // RestoreV2 output to a variable.
    let mut key_of: HashMap<usize, String> = known
        .into_iter()
        .filter_map(|(name, key)| index.get(&name).map(|&i| (i, key)))
        .collect();
    for n in &nodes {
        if !matches!(n.op.as_str(), "Assign" | "AssignVariableOp") || n.input.len() < 2 {
            continue;
        }
        let Some((var, _)) = through(&n.input[0]) else {
            continue;
        };
        if !is_variable(&nodes[var].op) {
            continue;
        }
        let Some((restore, k)) = through(&n.input[1]) else {
            continue;
        };
        if nodes[restore].op != "RestoreV2" || nodes[restore].input.len() < 2 {
            continue;
        }
        let Some((names, _)) = through(&nodes[restore].input[1]) else {
            continue;
        };
        if let Some(attr_value::Value::Tensor(t)) = nodes[names]
            .attr
            .get("value")
            .and_then(|a| a.value.as_ref())
        {
            if let Some(key) = t.string_val.get(k) {
                key_of
                    .entry(var)
                    .or_insert_with(|| String::from_utf8_lossy(key).into_owned());
            }
        }
    }

    let mut value =
        |var: usize, reader: &str| -> Result<TensorProto, String> {
            let v = &nodes[var];
            let key =
                key_of.get(&var).ok_or_else(|| {
                    format!(
                "node '{reader}' reads variable '{}' ({}), which the SavedModel's restore ops \
                 ({}) do not restore from its checkpoint",
                v.name,
                v.op,
                if restore_op.is_empty() { "none declared" } else { restore_op }
            )
                })?;
            let b = match &bundle {
                Some(b) => b,
                None => bundle.insert(Bundle::open(variables)?),
            };
            b.tensor(key, &v.name)
        };

    let mut keep = vec![false; nodes.len()];
    let mut replaced: HashMap<usize, Vec<NodeDef>> = HashMap::new();
    let mut stack = Vec::new();
    for (key, t) in fetches {
        let i = node_of(t)
            .ok_or_else(|| format!("output '{key}': tensor '{t}' names no node of the graph"))?;
        stack.push(i);
    }
    while let Some(i) = stack.pop() {
        if keep[i] {
            continue;
        }
        keep[i] = true;
        let n = &nodes[i];
        if feeds.contains(n.name.as_str()) {
            continue;
        }
        let resource = |j: usize| -> Result<usize, String> {
            let r = n
                .input
                .get(j)
                .ok_or_else(|| format!("node '{}' ({}) lacks input {j}", n.name, n.op))?;
            match through(r) {
                Some((v, _)) if is_variable(&nodes[v].op) => Ok(v),
                _ => Err(format!(
                    "node '{}' ({}) reads a resource that is not a variable of the graph ('{r}'); \
                     only variables restored from the checkpoint are supported",
                    n.name, n.op
                )),
            }
        };
        match n.op.as_str() {
            "ReadVariableOp" => {
                let var = resource(0)?;
                let t = value(var, &n.name)?;
                check_dtype(n, "dtype", &t)?;
                replaced.insert(i, vec![konst(&n.name, t)]);
                continue;
            }
            "ResourceGather" => {
                let var = resource(0)?;
                let t = value(var, &n.name)?;
                check_dtype(n, "dtype", &t)?;
                let params = format!("{}/params", n.name);
                let axis = format!("{}/axis", n.name);
                let axis_t = TensorProto {
                    dtype: super::proto::dt::INT32,
                    int_val: vec![0],
                    ..Default::default()
                };
                let mut attr = n.attr.clone();
                attr.insert("Tparams".into(), type_attr(t.dtype));
                attr.insert("Taxis".into(), type_attr(super::proto::dt::INT32));
                attr.remove("dtype");
                attr.remove("validate_indices");
                let gather = NodeDef {
                    name: n.name.clone(),
                    op: "GatherV2".into(),
                    input: vec![
                        format!("{params}:0"),
                        n.input[1].clone(),
                        format!("{axis}:0"),
                    ],
                    device: String::new(),
                    attr,
                };
                if let Some(idx) = node_of(&n.input[1]) {
                    stack.push(idx);
                }
                replaced.insert(i, vec![konst(&params, t), konst(&axis, axis_t), gather]);
                continue;
            }
            "VariableV2" | "Variable" => {
                let t = value(i, &n.name)?;
                replaced.insert(i, vec![konst(&n.name, t)]);
                continue;
            }
            // A handle used other than by a read (passed into a While loop,
            // say) stays: the importer then lists it, and its user, among
            // the ops it does not support, by node name.
            _ => {}
        }
        for r in &n.input {
            if let Some(j) = node_of(r) {
                stack.push(j);
            }
        }
    }
    let mut out = Vec::new();
    for (i, n) in nodes.into_iter().enumerate() {
        if !keep[i] {
            continue;
        }
        match replaced.remove(&i) {
            Some(new) => out.extend(new),
            None => out.push(n),
        }
    }
    Ok(GraphDef {
        node: out,
        ..Default::default()
    })
}

fn type_attr(t: i32) -> AttrValue {
    AttrValue {
        value: Some(attr_value::Value::Type(t)),
    }
}

fn konst(name: &str, t: TensorProto) -> NodeDef {
    let mut attr = HashMap::new();
    attr.insert("dtype".to_string(), type_attr(t.dtype));
    attr.insert(
        "value".to_string(),
        AttrValue {
            value: Some(attr_value::Value::Tensor(t)),
        },
    );
    NodeDef {
        name: name.to_string(),
        op: "Const".into(),
        input: vec![],
        device: String::new(),
        attr,
    }
}

/// A variable read's declared type against the checkpoint's.
fn check_dtype(n: &NodeDef, key: &str, t: &TensorProto) -> Result<(), String> {
    if let Some(attr_value::Value::Type(d)) = n.attr.get(key).and_then(|a| a.value.as_ref()) {
        if *d != t.dtype {
            return Err(format!(
                "node '{}' ({}) reads a {} variable, but the checkpoint holds {}",
                n.name,
                n.op,
                super::proto::dt::name(*d),
                super::proto::dt::name(t.dtype)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tf::proto::{op_def::ArgDef, FunctionDefLibrary, NameAttrList, OpDef};

    fn call(name: &str, f: &str, inputs: &[&str]) -> NodeDef {
        let mut attr = HashMap::new();
        attr.insert(
            "f".to_string(),
            AttrValue {
                value: Some(attr_value::Value::Func(NameAttrList {
                    name: f.into(),
                    attr: HashMap::new(),
                })),
            },
        );
        NodeDef {
            name: name.into(),
            op: "StatefulPartitionedCall".into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            device: String::new(),
            attr,
        }
    }

    fn node(name: &str, op: &str, inputs: &[&str]) -> NodeDef {
        NodeDef {
            name: name.into(),
            op: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn function(
        name: &str,
        args: &[&str],
        body: Vec<NodeDef>,
        ret: &[(&str, &str)],
    ) -> FunctionDef {
        let arg = |n: &&str| ArgDef {
            name: n.to_string(),
            ..Default::default()
        };
        FunctionDef {
            signature: Some(OpDef {
                name: name.into(),
                input_arg: args.iter().map(arg).collect(),
                output_arg: ret.iter().map(|(n, _)| arg(n)).collect(),
            }),
            node_def: body,
            ret: ret
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn graph(nodes: Vec<NodeDef>, functions: Vec<FunctionDef>) -> GraphDef {
        GraphDef {
            node: nodes,
            library: Some(FunctionDefLibrary {
                function: functions,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn nested_calls_are_inlined_and_outputs_numbered_by_argument() {
        // outer(x) = inner(x) + x; inner(y) = FusedBatchNormV3(y).y, whose
        // `batch_mean` is output 1.
        let inner = function(
            "inner",
            &["y"],
            vec![
                node("bn", "FusedBatchNormV3", &["y"]),
                node("r", "Relu", &["bn:batch_mean:0"]),
            ],
            &[("out", "r:activations:0")],
        );
        let outer = function(
            "outer",
            &["x"],
            vec![
                call("c", "inner", &["x"]),
                node("add", "AddV2", &["c:output:0", "x", "^c"]),
            ],
            &[("sum", "add:z:0")],
        );
        let g = graph(
            vec![
                node("in", "Placeholder", &[]),
                call("top", "outer", &["in"]),
            ],
            vec![inner, outer],
        );
        let flat = flatten(g).unwrap();
        let names: Vec<&str> = flat.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["in", "top/c/bn", "top/c/r", "top/add"]);
        let by = |n: &str| flat.nodes.iter().find(|x| x.name == n).unwrap();
        assert_eq!(by("top/c/bn").input, ["in:0"]);
        assert_eq!(by("top/c/r").input, ["top/c/bn:1"]);
        // The call's result, resolved; the control edge dropped.
        let add: Vec<String> = by("top/add")
            .input
            .iter()
            .map(|i| flat.resolve(i))
            .collect();
        assert_eq!(add, ["top/c/r:0", "in:0"]);
        assert_eq!(flat.resolve("top:0"), "top/add:0");
    }

    #[test]
    fn a_recursive_or_missing_or_misused_function_is_an_error() {
        let rec = function(
            "rec",
            &["x"],
            vec![call("again", "rec", &["x"])],
            &[("o", "again:output:0")],
        );
        let e = flatten(graph(
            vec![node("in", "Placeholder", &[]), call("top", "rec", &["in"])],
            vec![rec],
        ))
        .err()
        .unwrap();
        assert!(e.contains("nested more than"), "{e}");

        let e = flatten(graph(vec![call("top", "nowhere", &[])], vec![]))
            .err()
            .unwrap();
        assert!(
            e.contains("'nowhere'") && e.contains("does not define"),
            "{e}"
        );

        let one = function("one", &["x"], vec![], &[("o", "x")]);
        let e = flatten(graph(vec![call("top", "one", &["a", "b"])], vec![one]))
            .err()
            .unwrap();
        assert!(e.contains("with 2 inputs; it takes 1"), "{e}");

        let bad = function("bad", &["x"], vec![], &[("o", "ghost:output:0")]);
        let e = flatten(graph(vec![call("top", "bad", &["a"])], vec![bad]))
            .err()
            .unwrap();
        assert!(e.contains("names no node of the function"), "{e}");
    }

    #[test]
    fn a_fan_out_of_calls_is_bounded() {
        // Each level calls the next twice: 2^30 leaves if nothing stopped it.
        let mut fs = vec![function(
            "f0",
            &["x"],
            vec![node("leaf", "Relu", &["x"])],
            &[("o", "leaf:activations:0")],
        )];
        for i in 1..30 {
            let prev = format!("f{}", i - 1);
            fs.push(function(
                &format!("f{i}"),
                &["x"],
                vec![call("a", &prev, &["x"]), call("b", &prev, &["a:output:0"])],
                &[("o", "b:output:0")],
            ));
        }
        let g = graph(
            vec![node("in", "Placeholder", &[]), call("top", "f29", &["in"])],
            fs,
        );
        let e = flatten_limited(g, 10_000).err().unwrap();
        assert!(e.contains("more than 10000 nodes"), "{e}");
    }
}
