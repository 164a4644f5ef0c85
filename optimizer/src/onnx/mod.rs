//! The ONNX graph we own: parsing and writing the protobuf ourselves, tensor
//! conversion, and small helpers the passes share.

pub mod proto;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use prost::Message;

use crate::error::{OptimizerError, Result};
use crate::tensor::{DType, Tensor, TensorData};
pub use proto::*;

/// Reads a model file. Tensors stored as external data (models over 2 GB)
/// are read in, so the result stands alone.
pub fn load(path: &Path) -> Result<ModelProto> {
    let bytes = std::fs::read(path).map_err(|e| OptimizerError::io(path, e))?;
    let mut model = ModelProto::decode(bytes.as_slice()).map_err(|e| OptimizerError::BadModel {
        path: path.to_path_buf(),
        reason: format!("not an ONNX protobuf: {e}"),
    })?;
    if model.graph.is_none() {
        return Err(OptimizerError::BadModel {
            path: path.to_path_buf(),
            reason: "the model has no graph".into(),
        });
    }
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(g) = model.graph.as_mut() {
        for t in g.initializer.iter_mut().filter(|t| t.data_location == 1) {
            inline_external(base, t).map_err(|reason| OptimizerError::BadModel {
                path: path.to_path_buf(),
                reason,
            })?;
        }
    }
    Ok(model)
}

fn inline_external(base: &Path, t: &mut TensorProto) -> Result<(), String> {
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.clone())
    };
    let loc = get("location")
        .ok_or_else(|| format!("tensor '{}': external data without a location", t.name))?;
    let rel = Path::new(&loc);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "tensor '{}': external data location '{loc}' leaves the model folder",
            t.name
        ));
    }
    let data =
        std::fs::read(base.join(rel)).map_err(|e| format!("tensor '{}': {loc}: {e}", t.name))?;
    let offset: usize = get("offset").and_then(|v| v.parse().ok()).unwrap_or(0);
    let length: usize = get("length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(data.len().saturating_sub(offset));
    let end = offset
        .checked_add(length)
        .filter(|&e| e <= data.len())
        .ok_or_else(|| format!("tensor '{}': external data range out of {loc}", t.name))?;
    t.raw_data = data[offset..end].to_vec();
    t.data_location = 0;
    t.external_data.clear();
    Ok(())
}

pub fn save(model: &ModelProto, path: &Path) -> Result<()> {
    std::fs::write(path, model.encode_to_vec()).map_err(|e| OptimizerError::io(path, e))
}

pub fn to_bytes(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

pub fn graph(model: &ModelProto) -> &GraphProto {
    model.graph.as_ref().expect("load() guarantees a graph")
}

pub fn graph_mut(model: &mut ModelProto) -> &mut GraphProto {
    model.graph.get_or_insert_with(GraphProto::default)
}

/// The opset version of the default ONNX domain.
pub fn opset(model: &ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(1)
}

pub fn dtype_of(data_type: i32) -> Option<DType> {
    Some(match data_type {
        data_type::FLOAT => DType::F32,
        data_type::DOUBLE => DType::F64,
        data_type::INT64 => DType::I64,
        data_type::INT32 => DType::I32,
        data_type::INT8 => DType::I8,
        data_type::UINT8 => DType::U8,
        data_type::BOOL => DType::Bool,
        _ => return None,
    })
}

pub fn data_type_of(d: DType) -> i32 {
    match d {
        DType::F32 => data_type::FLOAT,
        DType::F64 => data_type::DOUBLE,
        DType::I64 => data_type::INT64,
        DType::I32 => data_type::INT32,
        DType::I8 => data_type::INT8,
        DType::U8 => data_type::UINT8,
        DType::Bool => data_type::BOOL,
    }
}

fn le_chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

/// A TensorProto's values as our tensor (raw_data or typed fields).
pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor, String> {
    let dtype = dtype_of(t.data_type).ok_or_else(|| {
        format!(
            "tensor '{}': element type {} is not supported here",
            t.name, t.data_type
        )
    })?;
    let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let raw = !t.raw_data.is_empty();
    let data = match dtype {
        DType::F32 if raw => TensorData::F32(
            le_chunks::<4>(&t.raw_data)
                .map(f32::from_le_bytes)
                .collect(),
        ),
        DType::F32 => TensorData::F32(t.float_data.clone()),
        DType::F64 if raw => TensorData::F64(
            le_chunks::<8>(&t.raw_data)
                .map(f64::from_le_bytes)
                .collect(),
        ),
        DType::F64 => TensorData::F64(t.double_data.clone()),
        DType::I64 if raw => TensorData::I64(
            le_chunks::<8>(&t.raw_data)
                .map(i64::from_le_bytes)
                .collect(),
        ),
        DType::I64 => TensorData::I64(t.int64_data.clone()),
        DType::I32 if raw => TensorData::I32(
            le_chunks::<4>(&t.raw_data)
                .map(i32::from_le_bytes)
                .collect(),
        ),
        DType::I32 => TensorData::I32(t.int32_data.clone()),
        DType::I8 if raw => TensorData::I8(t.raw_data.iter().map(|&b| b as i8).collect()),
        DType::I8 => TensorData::I8(t.int32_data.iter().map(|&v| v as i8).collect()),
        DType::U8 if raw => TensorData::U8(t.raw_data.clone()),
        DType::U8 => TensorData::U8(t.int32_data.iter().map(|&v| v as u8).collect()),
        DType::Bool if raw => TensorData::Bool(t.raw_data.iter().map(|&b| b != 0).collect()),
        DType::Bool => TensorData::Bool(t.int32_data.iter().map(|&v| v != 0).collect()),
    };
    Tensor::new(shape, data).map_err(|e| format!("tensor '{}': {e}", t.name))
}

/// Our tensor as a TensorProto (always raw_data, little-endian).
pub fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    let raw: Vec<u8> = match &t.data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::U8(v) => v.clone(),
        TensorData::Bool(v) => v.iter().map(|&x| x as u8).collect(),
    };
    TensorProto {
        name: name.to_string(),
        dims: t.shape.iter().map(|&d| d as i64).collect(),
        data_type: data_type_of(t.dtype()),
        raw_data: raw,
        ..Default::default()
    }
}

pub fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).map(|a| a.i).unwrap_or(default)
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::INT,
        i: v,
        ..Default::default()
    }
}

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

pub fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attr_type::FLOAT,
        f: v,
        ..Default::default()
    }
}

pub fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        name: name.to_string(),
        op_type: op.into(),
        attribute: attrs,
        ..Default::default()
    }
}

/// A tensor value-info with an element type and dims (`None` = symbolic).
pub fn value_info(name: &str, elem_type: i32, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .enumerate()
        .map(|(i, d)| Dimension {
            value: Some(match d {
                Some(v) => DimValue::DimValue(*v),
                None => DimValue::DimParam(if i == 0 { "N".into() } else { format!("d{i}") }),
            }),
            denotation: String::new(),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(TypeTensor {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            })),
            denotation: String::new(),
        }),
        ..Default::default()
    }
}

/// Element type of a value-info, when it is a tensor.
pub fn elem_type(vi: &ValueInfoProto) -> Option<i32> {
    match vi.r#type.as_ref()?.value.as_ref()? {
        TypeValue::TensorType(t) => Some(t.elem_type),
        _ => None,
    }
}

/// Names of all initializers.
pub fn initializer_names(g: &GraphProto) -> HashSet<String> {
    g.initializer.iter().map(|t| t.name.clone()).collect()
}

/// For each tensor name, the indices of the nodes that consume it.
pub fn consumers(g: &GraphProto) -> HashMap<String, Vec<usize>> {
    let mut m: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for inp in n.input.iter().filter(|s| !s.is_empty()) {
            m.entry(inp.clone()).or_default().push(i);
        }
    }
    m
}

/// For each tensor name, the index of the node producing it.
pub fn producers(g: &GraphProto) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in &n.output {
            m.insert(o.clone(), i);
        }
    }
    m
}

/// A name not used by any tensor or node of the graph, derived from `base`.
pub struct Namer {
    used: HashSet<String>,
}

impl Namer {
    pub fn new(g: &GraphProto) -> Namer {
        let mut used = HashSet::new();
        for n in &g.node {
            used.insert(n.name.clone());
            used.extend(n.input.iter().cloned());
            used.extend(n.output.iter().cloned());
        }
        used.extend(g.initializer.iter().map(|t| t.name.clone()));
        used.extend(g.input.iter().map(|v| v.name.clone()));
        used.extend(g.output.iter().map(|v| v.name.clone()));
        Namer { used }
    }

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
}
