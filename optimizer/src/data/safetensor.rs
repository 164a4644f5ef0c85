//! `.safetensors` (Hugging Face): one tensor per input name, samples stacked
//! on axis 0 like `.npz`. The `safetensors` crate validates the header and
//! offsets; we map element types and copy.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use shared::api::ModelSignature;

use super::elem::{self, Budget, ByteOrder, Elem};
use super::{key_matches, samples, Sample};

pub(super) fn load(path: &Path, sig: &ModelSignature) -> Result<Vec<Sample>, String> {
    let bytes = super::read_file(path)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("not a readable .safetensors file: {e}"))?;
    let mut names = st.names();
    names.sort_unstable();
    let budget = &mut Budget::for_file(bytes.len());
    let mut arrays = Vec::new();
    for spec in &sig.inputs {
        let Some(&key) = names.iter().find(|k| key_matches(k, &spec.name)) else {
            return Err(format!(
                "no tensor for model input '{}'; the file has: {}",
                spec.name,
                names.join(", ")
            ));
        };
        let err = |e: String| format!("tensor '{key}': {e}");
        let view = st.tensor(key).map_err(|e| err(e.to_string()))?;
        let elem = match view.dtype() {
            Dtype::F32 => Elem::F32,
            Dtype::F64 => Elem::F64,
            Dtype::F16 => Elem::F16,
            Dtype::I64 => Elem::I64,
            Dtype::I32 => Elem::I32,
            Dtype::I16 => Elem::I16,
            Dtype::I8 => Elem::I8,
            Dtype::U8 => Elem::U8,
            Dtype::BOOL => Elem::Bool,
            other => {
                return Err(err(format!(
                    "element type {other} is not supported (supported: {})",
                    elem::SUPPORTED
                )))
            }
        };
        // safetensors is little-endian by definition.
        let t = elem::contiguous(elem, ByteOrder::Little, view.data(), view.shape(), budget)
            .map_err(err)?;
        arrays.push((spec, t));
    }
    samples::split_samples(arrays)
}
