//! Which tensors hold values known before serving: initializers (unless a
//! graph input of the same name can override them), `Constant` nodes, and
//! the inputs fixed for this deploy.

use std::collections::HashMap;

use crate::error::{OptimizerError, Result};
use crate::onnx::{self, data_type, DimValue, GraphProto, NodeProto, TensorProto, TypeValue};
use crate::tensor::{Tensor, TensorData};

use super::PassContext;

/// Bytes per element of an ONNX data type; `None` for strings and unknown types.
pub(crate) fn elem_size(dt: i32) -> Option<usize> {
    onnx::elem_bytes(dt)
}

/// Element count from the dims; `usize::MAX` when the product overflows
/// (dims come from the model file, and this only sizes or filters tensors:
/// an impossible count must read as huge, not wrap to a small one).
pub(crate) fn numel(t: &TensorProto) -> usize {
    let mut dims = t.dims.iter().map(|&d| d.max(0) as usize);
    if dims.clone().any(|d| d == 0) {
        return 0;
    }
    dims.try_fold(1usize, |a, d| a.checked_mul(d))
        .unwrap_or(usize::MAX)
}

/// The size a tensor takes in the model file (strings counted by content).
pub(crate) fn tensor_bytes(t: &TensorProto) -> usize {
    match elem_size(t.data_type) {
        Some(s) => numel(t).saturating_mul(s),
        None => t.string_data.iter().map(Vec::len).sum(),
    }
}

/// The value of a `Constant` node, named as its output. `None` for forms
/// we leave to the node itself (sparse values, references to function
/// attributes).
pub(crate) fn constant_value(n: &NodeProto) -> Option<TensorProto> {
    if n.op_type != "Constant" || !(n.domain.is_empty() || n.domain == "ai.onnx") {
        return None;
    }
    let out = n.output.first().filter(|o| !o.is_empty())?;
    let a = n.attribute.first()?;
    if n.attribute.len() != 1 || !a.ref_attr_name.is_empty() {
        return None;
    }
    let mut t = match a.name.as_str() {
        "value" => a.t.clone()?,
        "value_float" => onnx::tensor_to_proto("", &scalar(TensorData::F32(vec![a.f]))),
        "value_int" => onnx::tensor_to_proto("", &scalar(TensorData::I64(vec![a.i]))),
        "value_floats" => onnx::tensor_to_proto("", &vector(TensorData::F32(a.floats.clone()))),
        "value_ints" => onnx::tensor_to_proto("", &vector(TensorData::I64(a.ints.clone()))),
        "value_string" => TensorProto {
            data_type: data_type::STRING,
            string_data: vec![a.s.clone()],
            ..Default::default()
        },
        "value_strings" => TensorProto {
            dims: vec![a.strings.len() as i64],
            data_type: data_type::STRING,
            string_data: a.strings.clone(),
            ..Default::default()
        },
        _ => return None,
    };
    // An external-data tensor inside an attribute would need the model's folder.
    if t.data_location == 1 {
        return None;
    }
    t.name.clone_from(out);
    Some(t)
}

fn scalar(data: TensorData) -> Tensor {
    Tensor {
        shape: vec![],
        data,
    }
}

fn vector(data: TensorData) -> Tensor {
    Tensor {
        shape: vec![data.len()],
        data,
    }
}

/// The fixed inputs of `ctx` as tensors named after the graph inputs, checked
/// against the declared inputs: the name must be an input, the element type
/// must match, and the shape must fit the declared one. A single value given
/// with another rank (a `[1]` sample for a scalar input) takes the declared
/// shape, since both mean the same value to the model.
pub(crate) fn fixed_tensors(
    g: &GraphProto,
    ctx: &PassContext,
) -> Result<HashMap<String, TensorProto>> {
    let mut out = HashMap::new();
    let mut names: Vec<&String> = ctx.fixed_inputs.keys().collect();
    names.sort();
    for name in names {
        let value = &ctx.fixed_inputs[name];
        let bad = |reason: String| OptimizerError::BadInput {
            name: name.clone(),
            reason,
        };
        let vi =
            g.input.iter().find(|v| &v.name == name).ok_or_else(|| {
                bad("fixed for this deploy but the model has no such input".into())
            })?;
        let want_type = onnx::elem_type(vi);
        let got_type = onnx::data_type_of(value.dtype());
        if want_type.is_some_and(|w| w != got_type) {
            return Err(bad(format!(
                "fixed value is {} but the model declares element type {}",
                value.dtype(),
                want_type.unwrap_or_default()
            )));
        }
        let mut t = onnx::tensor_to_proto(name, value);
        if let Some(dims) = declared_dims(vi) {
            let fits = dims.len() == value.shape.len()
                && dims
                    .iter()
                    .zip(&value.shape)
                    .all(|(d, &v)| d.is_none_or(|d| d == v as i64));
            let static_dims: Option<Vec<i64>> = dims.iter().copied().collect();
            match static_dims {
                _ if fits => {}
                Some(sd) if sd.iter().product::<i64>() == value.numel() as i64 => t.dims = sd,
                _ => {
                    return Err(bad(format!(
                        "fixed value has shape {:?}, which does not fit the declared shape {}",
                        value.shape,
                        fmt_declared(&dims)
                    )))
                }
            }
        }
        out.insert(name.clone(), t);
    }
    Ok(out)
}

/// Declared dims of a tensor value-info (`None` = symbolic or unknown), or
/// `None` when no shape is declared.
pub(crate) fn declared_dims(vi: &onnx::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    let Some(TypeValue::TensorType(tt)) = vi.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let shape = tt.shape.as_ref()?;
    Some(
        shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(DimValue::DimValue(v)) if v >= 0 => Some(v),
                _ => None,
            })
            .collect(),
    )
}

pub(crate) fn fmt_declared(dims: &[Option<i64>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or_else(|| "?".to_string(), |v| v.to_string()))
        .collect();
    format!("[{}]", parts.join(","))
}

/// Truth value of a one-element tensor (an `If` condition), if it is one.
pub(crate) fn truth_value(t: &TensorProto) -> Option<bool> {
    if numel(t) != 1 {
        return None;
    }
    let v = onnx::tensor_from_proto(t).ok()?;
    Some(v.data.to_f64().first().copied()? != 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::GraphProto;

    fn graph() -> GraphProto {
        GraphProto {
            input: vec![
                onnx::value_info("sr", data_type::INT64, &[]),
                onnx::value_info("x", data_type::FLOAT, &[None, Some(2)]),
            ],
            ..Default::default()
        }
    }

    fn ctx(name: &str, t: Tensor) -> PassContext {
        PassContext {
            fixed_inputs: HashMap::from([(name.to_string(), t)]),
            input_shapes: None,
        }
    }

    #[test]
    fn hostile_constant_dims_are_refused_not_allocated() {
        // A Constant node whose value claims 2^60 floats over 4 bytes: the
        // conversion names the node's output and refuses it.
        let n = onnx::node(
            "Constant",
            "c",
            &[],
            &["c_out"],
            vec![onnx::AttributeProto {
                name: "value".into(),
                r#type: onnx::attr_type::TENSOR,
                t: Some(TensorProto {
                    dims: vec![1 << 30, 1 << 30],
                    data_type: data_type::FLOAT,
                    raw_data: vec![0; 4],
                    ..Default::default()
                }),
                ..Default::default()
            }],
        );
        let t = constant_value(&n).unwrap();
        let e = onnx::tensor_from_proto(&t).unwrap_err();
        assert!(
            e.contains("tensor 'c_out'") && e.contains("raw_data holds 4"),
            "{e}"
        );
        // Element counts that overflow read as huge, never wrap or panic.
        let t = TensorProto {
            dims: vec![1 << 40, 1 << 40, 1 << 40],
            data_type: data_type::FLOAT,
            ..Default::default()
        };
        assert_eq!(numel(&t), usize::MAX);
        assert_eq!(tensor_bytes(&t), usize::MAX);
        assert_eq!(truth_value(&t), None);
        let t = TensorProto {
            dims: vec![1 << 40, 1 << 40, 0],
            ..t
        };
        assert_eq!(numel(&t), 0);
    }

    #[test]
    fn fixed_inputs_take_the_declared_shape_or_are_refused() {
        // A one-sample `[1]` value for a scalar input becomes the scalar.
        let sr = Tensor::new(vec![1], TensorData::I64(vec![16000])).unwrap();
        let fixed = fixed_tensors(&graph(), &ctx("sr", sr)).unwrap();
        assert!(fixed["sr"].dims.is_empty());
        assert_eq!(truth_value(&fixed["sr"]), Some(true));
        // Symbolic dims accept any size.
        let x = Tensor::new(vec![5, 2], TensorData::F32(vec![0.0; 10])).unwrap();
        assert_eq!(
            fixed_tensors(&graph(), &ctx("x", x)).unwrap()["x"].dims,
            vec![5, 2]
        );
        let refused = [
            (
                "x",
                Tensor::new(vec![5, 3], TensorData::F32(vec![0.0; 15])).unwrap(),
                "does not fit",
            ),
            (
                "sr",
                Tensor::new(vec![], TensorData::I32(vec![8000])).unwrap(),
                "element type",
            ),
            (
                "y",
                Tensor::new(vec![], TensorData::I64(vec![1])).unwrap(),
                "no such input",
            ),
        ];
        for (name, t, why) in refused {
            let err = fixed_tensors(&graph(), &ctx(name, t))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("input '{name}'")) && err.contains(why),
                "{err}"
            );
        }
    }

    #[test]
    fn constant_nodes_of_every_form_become_tensors() {
        let mut n = onnx::node(
            "Constant",
            "c",
            &[],
            &["k"],
            vec![onnx::attr_ints("value_ints", &[3, 4])],
        );
        let t = constant_value(&n).unwrap();
        assert_eq!(
            (t.name.as_str(), t.dims.as_slice(), tensor_bytes(&t)),
            ("k", &[2][..], 16)
        );
        n.attribute = vec![onnx::attr_float("value_float", 0.5)];
        let t = constant_value(&n).unwrap();
        assert!(t.dims.is_empty());
        assert_eq!(truth_value(&t), Some(true));
        n.attribute.clear();
        assert_eq!(constant_value(&n), None, "no value: left to the node");
        n.op_type = "Identity".into();
        assert_eq!(constant_value(&n), None);
    }
}
