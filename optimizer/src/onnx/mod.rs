//! The ONNX graph we own: parsing and writing the protobuf ourselves, tensor
//! conversion, and small helpers the passes share.

pub mod proto;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
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

/// Reads an initializer's external data into `raw_data`. The declared
/// range is checked against the file's size, and against the bytes the
/// tensor's dims need, before anything is read or allocated: the model is an
/// untrusted upload and its numbers may claim anything.
fn inline_external(base: &Path, t: &mut TensorProto) -> Result<(), String> {
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.clone())
    };
    let name = t.name.clone();
    let loc = get("location")
        .ok_or_else(|| format!("tensor '{name}': external data without a location"))?;
    let rel = Path::new(&loc);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "tensor '{name}': external data location '{loc}' leaves the model folder"
        ));
    }
    let number = |key: &str| -> Result<Option<u64>, String> {
        get(key)
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    format!("tensor '{name}': external data {key} '{v}' is not a byte count")
                })
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?;
    let mut file =
        std::fs::File::open(base.join(rel)).map_err(|e| format!("tensor '{name}': {loc}: {e}"))?;
    let file_len = file
        .metadata()
        .map_err(|e| format!("tensor '{name}': {loc}: {e}"))?
        .len();
    let length = match length {
        Some(l) => l,
        None => file_len.checked_sub(offset).ok_or_else(|| {
            format!(
                "tensor '{name}': external data offset {offset} is past the end of {loc} \
                 ({file_len} bytes)"
            )
        })?,
    };
    if offset.checked_add(length).is_none_or(|end| end > file_len) {
        return Err(format!(
            "tensor '{name}': external data at offset {offset}, length {length} reaches past \
             the end of {loc} ({file_len} bytes)"
        ));
    }
    // The dims must need exactly the bytes given (for fixed-size types),
    // so a tensor cannot claim more than the file holds.
    let (shape, numel) = declared_numel(t)?;
    if let Some(size) = elem_bytes(t.data_type) {
        let need = numel.checked_mul(size).and_then(|n| u64::try_from(n).ok());
        if need != Some(length) {
            return Err(format!(
                "tensor '{name}': dims {shape:?} of {size}-byte elements need {} bytes, its \
                 external data in {loc} has {length}",
                need.map_or_else(|| "more".to_string(), |n| n.to_string())
            ));
        }
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("tensor '{name}': {loc}: {e}"))?;
    // Within the file's size, checked above; growing as bytes arrive still
    // keeps a file that shrinks meanwhile from costing more than it holds.
    let mut raw = Vec::new();
    file.take(length)
        .read_to_end(&mut raw)
        .map_err(|e| format!("tensor '{name}': {loc}: {e}"))?;
    if raw.len() as u64 != length {
        return Err(format!(
            "tensor '{name}': {loc} ended after {} of the {length} bytes of external data",
            raw.len()
        ));
    }
    t.raw_data = raw;
    t.data_location = 0;
    t.external_data.clear();
    Ok(())
}

/// Tests and benches write models with it; the optimizer writes through
/// `artifact` (sealed, fsynced).
#[cfg(any(test, feature = "internals"))]
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

/// Bytes per element of an ONNX data type; `None` for strings and types
/// without a fixed size.
pub fn elem_bytes(data_type: i32) -> Option<usize> {
    Some(match data_type {
        data_type::FLOAT | data_type::INT32 | data_type::UINT32 => 4,
        data_type::DOUBLE | data_type::INT64 | data_type::UINT64 => 8,
        data_type::FLOAT16 | data_type::BFLOAT16 | data_type::INT16 | data_type::UINT16 => 2,
        data_type::INT8 | data_type::UINT8 | data_type::BOOL => 1,
        _ => return None,
    })
}

/// A tensor's dims and element count, refusing negative dims and counts
/// that overflow (dims come from the untrusted model file).
pub fn declared_numel(t: &TensorProto) -> Result<(Vec<usize>, usize), String> {
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| {
            format!(
                "tensor '{}': dims {:?} include a negative size",
                t.name, t.dims
            )
        })?;
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            format!(
                "tensor '{}': dims {shape:?} hold more elements than can be addressed",
                t.name
            )
        })?;
    Ok((shape, numel))
}

/// That a tensor's dims agree with the values it actually holds: raw_data
/// of exactly count × element size bytes, or a typed field of exactly
/// count values. Checked with overflow-safe arithmetic before anything is
/// allocated from the dims, since they are the model's claim, not its data.
fn check_payload(t: &TensorProto, dtype: DType) -> Result<Vec<usize>, String> {
    let (shape, numel) = declared_numel(t)?;
    if t.data_location == 1 {
        return Err(format!(
            "tensor '{}': its data is stored in an external file, which was not read",
            t.name
        ));
    }
    if !t.raw_data.is_empty() {
        let size = dtype.size();
        let need = numel.checked_mul(size);
        if need != Some(t.raw_data.len()) {
            return Err(format!(
                "tensor '{}': dims {shape:?} of {dtype} need {} bytes, raw_data holds {}",
                t.name,
                need.map_or_else(|| "more".to_string(), |n| n.to_string()),
                t.raw_data.len()
            ));
        }
        return Ok(shape);
    }
    let (field, have) = match dtype {
        DType::F32 => ("float_data", t.float_data.len()),
        DType::F64 => ("double_data", t.double_data.len()),
        DType::I64 => ("int64_data", t.int64_data.len()),
        DType::I32 | DType::I8 | DType::U8 | DType::Bool => ("int32_data", t.int32_data.len()),
    };
    if have != numel {
        return Err(format!(
            "tensor '{}': dims {shape:?} of {dtype} need {numel} values, {field} holds {have}",
            t.name
        ));
    }
    Ok(shape)
}

/// A TensorProto's values as our tensor (raw_data or typed fields). The
/// dims are checked against the data present first ([`check_payload`]), so
/// a hostile tensor is refused by name instead of allocated.
pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor, String> {
    let dtype = dtype_of(t.data_type).ok_or_else(|| {
        format!(
            "tensor '{}': element type {} is not supported here",
            t.name, t.data_type
        )
    })?;
    let shape = check_payload(t, dtype)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_f32(name: &str, dims: &[i64], bytes: usize) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: data_type::FLOAT,
            raw_data: vec![0; bytes],
            ..Default::default()
        }
    }

    #[test]
    fn onnx_initializer_dims_must_match_the_data_present() {
        // Dims claiming 2^60 floats over 16 bytes of raw_data: refused by
        // name before anything is allocated from the dims.
        let e = tensor_from_proto(&raw_f32("w", &[1 << 40, 1 << 20], 16)).unwrap_err();
        assert!(
            e.contains("tensor 'w'")
                && e.contains("[1099511627776, 1048576]")
                && e.contains("need 4611686018427387904 bytes")
                && e.contains("raw_data holds 16"),
            "{e}"
        );
        // A count whose byte size overflows, and one whose count does.
        let e = tensor_from_proto(&raw_f32("w", &[1 << 62, 2], 16)).unwrap_err();
        assert!(
            e.contains("tensor 'w'") && e.contains("need more bytes"),
            "{e}"
        );
        let e = tensor_from_proto(&raw_f32("w", &[1 << 62, 1 << 62], 16)).unwrap_err();
        assert!(
            e.contains("tensor 'w'") && e.contains("more elements than can be addressed"),
            "{e}"
        );
        // Negative dims, and too few raw bytes by one element.
        let e = tensor_from_proto(&raw_f32("w", &[-1, 4], 16)).unwrap_err();
        assert!(e.contains("negative"), "{e}");
        let e = tensor_from_proto(&raw_f32("w", &[2, 2], 12)).unwrap_err();
        assert!(e.contains("need 16 bytes, raw_data holds 12"), "{e}");
        // A typed field must hold exactly the count.
        let t = TensorProto {
            name: "b".into(),
            dims: vec![1 << 40],
            data_type: data_type::INT64,
            int64_data: vec![1, 2, 3],
            ..Default::default()
        };
        let e = tensor_from_proto(&t).unwrap_err();
        assert!(
            e.contains("tensor 'b'") && e.contains("int64_data holds 3"),
            "{e}"
        );
        // Consistent tensors still convert.
        let t = tensor_from_proto(&raw_f32("w", &[2, 2], 16)).unwrap();
        assert_eq!(t.shape, vec![2, 2]);
        let t = TensorProto {
            dims: vec![3],
            data_type: data_type::INT64,
            int64_data: vec![1, 2, 3],
            ..Default::default()
        };
        assert_eq!(
            tensor_from_proto(&t).unwrap().data,
            TensorData::I64(vec![1, 2, 3])
        );
    }

    /// A model whose one initializer keeps its data in `weights.bin`.
    fn external_model(dir: &Path, dims: &[i64], entries: &[(&str, &str)]) -> std::path::PathBuf {
        let t = TensorProto {
            name: "w".into(),
            dims: dims.to_vec(),
            data_type: data_type::FLOAT,
            data_location: 1,
            external_data: entries
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        };
        let model = crate::onnx_build::model(GraphProto {
            initializer: vec![t],
            ..Default::default()
        });
        let path = dir.join("model.onnx");
        save(&model, &path).unwrap();
        path
    }

    #[test]
    fn onnx_external_data_is_checked_against_the_file_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("weights.bin"), [0u8; 16]).unwrap();
        let bad = |dims: &[i64], entries: &[(&str, &str)]| {
            load(&external_model(dir.path(), dims, entries))
                .unwrap_err()
                .to_string()
        };
        // A length far past the file's end.
        let e = bad(
            &[1 << 38],
            &[("location", "weights.bin"), ("length", "1099511627776")],
        );
        assert!(
            e.contains("tensor 'w'")
                && e.contains("reaches past the end of weights.bin (16 bytes)"),
            "{e}"
        );
        // No length: the rest of the file, which must be what the dims need.
        let e = bad(&[1 << 30], &[("location", "weights.bin")]);
        assert!(
            e.contains("tensor 'w'") && e.contains("need 4294967296 bytes") && e.contains("has 16"),
            "{e}"
        );
        let e = bad(&[4], &[("location", "weights.bin"), ("offset", "lots")]);
        assert!(e.contains("offset 'lots' is not a byte count"), "{e}");
        // Consistent: read in.
        let m = load(&external_model(
            dir.path(),
            &[2],
            &[
                ("location", "weights.bin"),
                ("offset", "8"),
                ("length", "8"),
            ],
        ))
        .unwrap();
        let w = &graph(&m).initializer[0];
        assert_eq!((w.raw_data.len(), w.data_location), (8, 0));
        assert_eq!(tensor_from_proto(w).unwrap().shape, vec![2]);
    }
}
