//! FP16 conversion with FP32 islands.
//!
//! Every float32 tensor of the main graph gets a *home* precision: that of
//! the node producing it (float16 unless the op is kept in float32), float32
//! for graph inputs. A consumer that needs the other precision reads a Cast
//! of it, made once per tensor and placed right after the producer. Float
//! weights are converted offline instead (a float32 copy stays where a kept
//! op reads them, so e.g. LayerNorm's gamma keeps full precision). Graph
//! inputs and outputs stay float32, so the serving signature is unchanged.
//! Tensors of other types are never touched.
//!
//! Element types of intermediate tensors come from ONNX Runtime's type
//! inference (see `infer`). Nodes with subgraphs (`If`, `Loop`, `Scan`) are
//! kept in float32 with their subgraphs untouched; float tensors they
//! capture from the main graph are handed to them as float32.

use std::collections::{HashMap, HashSet};

use crate::error::{OptimizerError, Result};
use crate::onnx::{
    self, attr_type, data_type, AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto,
};

use super::infer::infer;
use super::names::{has_subgraphs, node_outer_refs, rename_in_graph, subgraphs_mut, NameCounts};
use super::validate::{check_model, graph_of};

/// Ops kept in float32 by default: those whose result leaves float16's
/// range (max 65504) or precision (11 bits) on ordinary inputs.
/// - `Exp`, `Pow`, `Softmax`, `LogSoftmax`: exponentials overflow above
///   e^11; squares of activations above 256 overflow.
/// - `ReduceSum`/`ReduceMean`/`ReduceSumSquare`/`ReduceL2`/`ReduceLogSum`/
///   `ReduceLogSumExp`/`ReduceProd`, `CumSum`: long accumulations lose low
///   bits (a mean over 384 features) or overflow.
/// - `LayerNormalization`, `GroupNormalization`, `InstanceNormalization`:
///   the variance is such an accumulation, and then a small-number `Sqrt`.
/// - `Sqrt`, `Log`, `Erf`: near-zero arguments (variances, probabilities)
///   and GELU's `Erf`, whose error shows directly in transformer outputs.
/// - `Range`: float index ramps lose integers above 2048.
///
/// `Div` and `MatMul` are left in float16 on purpose: they carry most of
/// the compute (keeping them would defeat the conversion), and in the
/// patterns above their inputs are already the normalized values.
pub const DEFAULT_KEEP_FP32: &[&str] = &[
    "Softmax",
    "LogSoftmax",
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceProd",
    "CumSum",
    "Pow",
    "Sqrt",
    "Exp",
    "Log",
    "Erf",
    "Range",
];

/// Ops that stay float32 whatever the keep list says: their float type is
/// set by an attribute (random generators, `EyeLike`), fixed by their
/// meaning (quantization scales), or carried inside a sequence/optional
/// value that a Cast cannot reach.
const ALWAYS_FP32: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "EyeLike",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "MatMulInteger",
    "ConvInteger",
    "SequenceConstruct",
    "SequenceInsert",
    "SequenceAt",
    "SequenceErase",
    "SequenceEmpty",
    "SequenceLength",
    "SequenceMap",
    "SplitToSequence",
    "ConcatFromSequence",
    "Optional",
    "OptionalGetElement",
    "OptionalHasElement",
];

/// Inputs with a float type of their own rather than the op's `T`, which
/// stay float32 in a float16 node (`Resize` scales must be float32).
const FP32_INPUTS: &[(&str, usize)] = &[("Resize", 1), ("Resize", 2), ("Upsample", 1)];

/// Ops that read any element type: a float input is read in whatever
/// precision it already has, with no Cast in front.
const ANY_INPUT_TYPE: &[&str] = &["Cast", "Shape", "Size"];

/// float16's largest finite value; weights beyond it are clamped rather
/// than becoming infinities.
const F16_MAX: f32 = 65504.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Prec {
    F32,
    F16,
}

impl Prec {
    fn data_type(self) -> i32 {
        match self {
            Prec::F32 => data_type::FLOAT,
            Prec::F16 => data_type::FLOAT16,
        }
    }

    fn other(self) -> Prec {
        match self {
            Prec::F32 => Prec::F16,
            Prec::F16 => Prec::F32,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Prec::F32 => "_fp32",
            Prec::F16 => "_fp16",
        }
    }
}

fn default_domain(n: &NodeProto) -> bool {
    n.domain.is_empty() || n.domain == "ai.onnx"
}

/// FP16 conversion with fp32 islands for numerically sensitive ops.
pub fn to_fp16(model: &ModelProto, keep_fp32_ops: &[&str]) -> Result<ModelProto> {
    check_model(model)?;
    let g = graph_of(model)?;
    if g.node.is_empty() {
        return Ok(model.clone());
    }
    let float = float_tensors(model, g)?;
    let plan = Plan::new(g, &float, keep_fp32_ops);
    let mut out = model.clone();
    let og = onnx::graph_mut(&mut out);
    plan.apply(og)?;
    Ok(out)
}

/// The float32 tensors of the main graph.
fn float_tensors(model: &ModelProto, g: &GraphProto) -> Result<HashSet<String>> {
    let mut float: HashSet<String> = g
        .input
        .iter()
        .filter(|v| onnx::elem_type(v) == Some(data_type::FLOAT))
        .map(|v| v.name.clone())
        .collect();
    float.extend(
        g.initializer
            .iter()
            .filter(|t| t.data_type == data_type::FLOAT)
            .map(|t| t.name.clone()),
    );
    let outputs: Vec<String> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter())
        .filter(|o| !o.is_empty())
        .cloned()
        .collect();
    let types = infer(model, &outputs, false)?;
    float.extend(
        types
            .into_iter()
            .filter(|(_, t)| t.elem_type == Some(data_type::FLOAT))
            .map(|(n, _)| n),
    );
    Ok(float)
}

struct Plan<'g> {
    g: &'g GraphProto,
    float: &'g HashSet<String>,
    node_prec: Vec<Prec>,
    /// Home precision of each float tensor produced by a node or fed as a graph input.
    home: HashMap<String, Prec>,
    /// Weights converted offline (non-overridable float initializers).
    weights: HashSet<String>,
    /// The name of each version of a float tensor that something reads.
    name_of: HashMap<(String, Prec), String>,
}

impl<'g> Plan<'g> {
    fn new(g: &'g GraphProto, float: &'g HashSet<String>, keep: &[&str]) -> Plan<'g> {
        let graph_outputs: HashSet<&str> = g.output.iter().map(|v| v.name.as_str()).collect();
        let inputs: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
        let node_prec: Vec<Prec> = g
            .node
            .iter()
            .map(|n| {
                let op = n.op_type.as_str();
                let fixed_constant = op == "Constant"
                    && !n.attribute.iter().any(|a| {
                        matches!(a.name.as_str(), "value" | "value_float" | "value_floats")
                    });
                // A Cast straight to a graph output would only be cast back.
                let cast_to_output =
                    op == "Cast" && n.output.iter().any(|o| graph_outputs.contains(o.as_str()));
                if keep.contains(&op)
                    || ALWAYS_FP32.contains(&op)
                    || has_subgraphs(n)
                    || !default_domain(n)
                    || fixed_constant
                    || cast_to_output
                {
                    Prec::F32
                } else {
                    Prec::F16
                }
            })
            .collect();
        let weights: HashSet<String> = g
            .initializer
            .iter()
            .filter(|t| float.contains(&t.name) && !inputs.contains(t.name.as_str()))
            .map(|t| t.name.clone())
            .collect();
        let mut home: HashMap<String, Prec> = g
            .input
            .iter()
            .filter(|v| float.contains(&v.name))
            .map(|v| (v.name.clone(), Prec::F32))
            .collect();
        for (n, &p) in g.node.iter().zip(&node_prec) {
            for o in n.output.iter().filter(|o| float.contains(*o)) {
                home.insert(o.clone(), p);
            }
        }
        let mut plan = Plan {
            g,
            float,
            node_prec,
            home,
            weights,
            name_of: HashMap::new(),
        };
        plan.name_versions();
        plan
    }

    /// The precision node `i` reads its input `k` (a float tensor) in.
    fn wanted(&self, i: usize, k: usize) -> Prec {
        let n = &self.g.node[i];
        let p = self.node_prec[i];
        let x = &n.input[k];
        if p == Prec::F16 && ANY_INPUT_TYPE.contains(&n.op_type.as_str()) {
            // Weights have no home; their float32 original serves.
            return self.home.get(x).copied().unwrap_or(Prec::F32);
        }
        if p == Prec::F16 && FP32_INPUTS.contains(&(n.op_type.as_str(), k)) {
            return Prec::F32;
        }
        p
    }

    fn needs(&self) -> HashSet<(String, Prec)> {
        let mut needs = HashSet::new();
        for (i, n) in self.g.node.iter().enumerate() {
            for (k, x) in n.input.iter().enumerate() {
                if self.float.contains(x) {
                    needs.insert((x.clone(), self.wanted(i, k)));
                }
            }
            for x in node_outer_refs(n) {
                if self.float.contains(&x) {
                    needs.insert((x, Prec::F32));
                }
            }
        }
        for o in &self.g.output {
            if self.float.contains(&o.name) {
                needs.insert((o.name.clone(), Prec::F32));
            }
        }
        needs
    }

    fn name_versions(&mut self) {
        let needs = self.needs();
        let mut names = NameCounts::of_graph(self.g);
        let graph_outputs: HashSet<&str> = self.g.output.iter().map(|v| v.name.as_str()).collect();
        let mut weights: Vec<&String> = self.weights.iter().collect();
        weights.sort();
        for t in weights {
            let n16 = needs.contains(&(t.clone(), Prec::F16));
            let n32 = needs.contains(&(t.clone(), Prec::F32)) || graph_outputs.contains(t.as_str());
            match (n16, n32) {
                (true, false) => {
                    self.name_of.insert((t.clone(), Prec::F16), t.clone());
                }
                (true, true) => {
                    self.name_of.insert((t.clone(), Prec::F32), t.clone());
                    let fresh = names.fresh(&format!("{t}_fp16"));
                    self.name_of.insert((t.clone(), Prec::F16), fresh);
                }
                _ => {
                    self.name_of.insert((t.clone(), Prec::F32), t.clone());
                }
            }
        }
        let mut homes: Vec<(&String, &Prec)> = self.home.iter().collect();
        homes.sort();
        for (t, &h) in homes {
            let other = h.other();
            if h == Prec::F16 && graph_outputs.contains(t.as_str()) {
                // The output keeps its name and float32 type; the float16
                // value gets a new name.
                let fresh = names.fresh(&format!("{t}_fp16"));
                self.name_of.insert((t.clone(), Prec::F16), fresh);
                self.name_of.insert((t.clone(), Prec::F32), t.clone());
                continue;
            }
            self.name_of.insert((t.clone(), h), t.clone());
            if needs.contains(&(t.clone(), other)) {
                let fresh = names.fresh(&format!("{t}{}", other.suffix()));
                self.name_of.insert((t.clone(), other), fresh);
            }
        }
    }

    fn version(&self, x: &str, p: Prec) -> Result<String> {
        self.name_of
            .get(&(x.to_string(), p))
            .cloned()
            .ok_or_else(|| {
                OptimizerError::Config(format!("fp16: no {p:?} version planned for tensor '{x}'"))
            })
    }

    /// Casts from `t`'s home version to every other version something reads.
    fn casts_for(&self, t: &str) -> Vec<NodeProto> {
        let Some(&h) = self.home.get(t) else {
            return vec![];
        };
        let Some(from) = self.name_of.get(&(t.to_string(), h)) else {
            return vec![];
        };
        let p = h.other();
        match self.name_of.get(&(t.to_string(), p)) {
            Some(to) if to != from => {
                vec![onnx::node(
                    "Cast",
                    &format!("{to}_cast"),
                    &[from],
                    &[to],
                    vec![onnx::attr_int("to", p.data_type() as i64)],
                )]
            }
            _ => vec![],
        }
    }

    fn apply(&self, og: &mut GraphProto) -> Result<()> {
        let mut nodes = Vec::with_capacity(og.node.len() + 16);
        for v in &self.g.input {
            nodes.extend(self.casts_for(&v.name));
        }
        for (i, n) in self.g.node.iter().enumerate() {
            let mut n = n.clone();
            for k in 0..n.input.len() {
                if self.float.contains(&n.input[k]) {
                    n.input[k] = self.version(&n.input[k], self.wanted(i, k))?;
                }
            }
            let captured: HashMap<String, String> = node_outer_refs(&n)
                .into_iter()
                .filter(|x| self.float.contains(x))
                .map(|x| self.version(&x, Prec::F32).map(|v| (x, v)))
                .collect::<Result<_>>()?;
            for sub in subgraphs_mut(&mut n) {
                rename_in_graph(sub, &captured);
            }
            let originals = n.output.clone();
            for o in n.output.iter_mut() {
                if let Some(&h) = self.home.get(o.as_str()) {
                    *o = self.version(o, h)?;
                }
            }
            if self.node_prec[i] == Prec::F16 && originals.iter().any(|o| self.float.contains(o)) {
                convert_attributes(&mut n)?;
            }
            nodes.push(n);
            for o in &originals {
                nodes.extend(self.casts_for(o));
            }
        }
        og.node = nodes;

        let mut extra = Vec::new();
        for t in og
            .initializer
            .iter_mut()
            .filter(|t| self.weights.contains(&t.name))
        {
            let key16 = (t.name.clone(), Prec::F16);
            let has32 = self.name_of.contains_key(&(t.name.clone(), Prec::F32));
            match self.name_of.get(&key16) {
                Some(n16) if !has32 => *t = to_half(t, n16)?,
                Some(n16) => extra.push(to_half(t, n16)?),
                None => {}
            }
        }
        og.initializer.extend(extra);
        for v in og.value_info.iter_mut() {
            if self.home.get(&v.name) == Some(&Prec::F16)
                && self.name_of.get(&(v.name.clone(), Prec::F16)) == Some(&v.name)
            {
                set_elem_type(v, data_type::FLOAT16);
            }
        }
        Ok(())
    }
}

fn set_elem_type(v: &mut onnx::ValueInfoProto, et: i32) {
    if let Some(onnx::TypeValue::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        t.elem_type = et;
    }
}

/// Float16 copy of a float32 tensor, named `name`.
fn to_half(t: &TensorProto, name: &str) -> Result<TensorProto> {
    if t.data_location == 1 {
        return Err(OptimizerError::Config(format!(
            "fp16: tensor '{}' is stored as external data; load the model with onnx::load first",
            t.name
        )));
    }
    let v = onnx::tensor_from_proto(t).map_err(OptimizerError::Config)?;
    let crate::tensor::TensorData::F32(values) = v.data else {
        return Err(OptimizerError::Config(format!(
            "fp16: tensor '{}' is not float32",
            t.name
        )));
    };
    let raw = values
        .iter()
        .flat_map(|&x| half::f16::from_f32(x.clamp(-F16_MAX, F16_MAX)).to_le_bytes())
        .collect();
    Ok(TensorProto {
        name: name.to_string(),
        dims: t.dims.clone(),
        data_type: data_type::FLOAT16,
        raw_data: raw,
        ..Default::default()
    })
}

/// Rewrites the attributes that set a float16 node's output type: Cast's
/// target, Constant's value, ConstantOfShape's fill value.
fn convert_attributes(n: &mut NodeProto) -> Result<()> {
    match n.op_type.as_str() {
        "Cast" => {
            for a in n.attribute.iter_mut().filter(|a| a.name == "to") {
                if a.i == data_type::FLOAT as i64 {
                    a.i = data_type::FLOAT16 as i64;
                }
            }
        }
        "Constant" => {
            let Some(a) = n.attribute.first_mut() else {
                return Ok(());
            };
            let value = match a.name.as_str() {
                "value" => {
                    a.t.as_ref()
                        .filter(|t| t.data_type == data_type::FLOAT)
                        .cloned()
                }
                "value_float" => Some(onnx_build_tensor(&[], vec![a.f])),
                "value_floats" => Some(onnx_build_tensor(
                    &[a.floats.len() as i64],
                    a.floats.clone(),
                )),
                _ => None,
            };
            if let Some(t) = value {
                *a = tensor_attr("value", to_half(&t, &t.name)?);
            }
        }
        "ConstantOfShape" => {
            match n.attribute.iter_mut().find(|a| a.name == "value") {
                Some(a) => {
                    if let Some(t) = a.t.as_ref().filter(|t| t.data_type == data_type::FLOAT) {
                        let h = to_half(t, &t.name)?;
                        a.t = Some(h);
                    }
                }
                // The default fill is a float32 zero.
                None => {
                    let zero = onnx_build_tensor(&[1], vec![0.0]);
                    n.attribute.push(tensor_attr("value", to_half(&zero, "")?));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn onnx_build_tensor(dims: &[i64], values: Vec<f32>) -> TensorProto {
    crate::onnx_build::float_tensor("", dims, values)
}

fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::TENSOR,
        t: Some(t),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_beyond_the_half_range_are_clamped_not_infinite() {
        let t = crate::onnx_build::float_tensor("w", &[4], vec![1.0, -1e6, 1e6, 1e-3]);
        let h = to_half(&t, "w16").unwrap();
        assert_eq!(
            (h.name.as_str(), h.data_type, h.dims.as_slice()),
            ("w16", data_type::FLOAT16, &[4][..])
        );
        let back: Vec<f32> = h
            .raw_data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        assert_eq!(back[..3], [1.0, -65504.0, 65504.0]);
        assert!((back[3] - 1e-3).abs() < 1e-6);
        let ints = onnx::tensor_to_proto(
            "i",
            &crate::tensor::Tensor::new(vec![1], crate::tensor::TensorData::I64(vec![1])).unwrap(),
        );
        assert!(to_half(&ints, "i").is_err());
    }

    #[test]
    fn constant_of_shape_without_a_value_gets_a_half_zero() {
        let mut n = onnx::node("ConstantOfShape", "z", &["s"], &["zeros"], vec![]);
        convert_attributes(&mut n).unwrap();
        let t = onnx::attr(&n, "value").and_then(|a| a.t.as_ref()).unwrap();
        assert_eq!(
            (t.data_type, t.raw_data.as_slice()),
            (data_type::FLOAT16, &[0u8, 0][..])
        );
        let mut c = onnx::node("Cast", "c", &["x"], &["y"], vec![onnx::attr_int("to", 1)]);
        convert_attributes(&mut c).unwrap();
        assert_eq!(onnx::attr_i(&c, "to", 0), data_type::FLOAT16 as i64);
    }
}
