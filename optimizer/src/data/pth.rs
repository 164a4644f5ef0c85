//! PyTorch `.pth`/`.pt` as `torch.save(list_of_tuples)` writes it (the zip
//! format, torch >= 1.6): `<prefix>/data.pkl` is a pickle whose tensors are
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`, each
//! storage a persistent id `('storage', torch.FloatStorage, key, location,
//! numel)` naming the raw little-endian file `<prefix>/data/<key>`.
//! `<prefix>/byteorder` says "little" or "big" (absent in old files: little).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use shared::api::{ModelSignature, TensorSpec};

use super::elem::{self, Budget, ByteOrder, Elem};
use super::pickle::{self, Global, Obj, Pickle, Value};
use super::{samples, Sample};
use crate::tensor::Tensor;

/// Largest `data.pkl` we read: the pickle holds only structure, kilobytes per
/// thousand tensors.
const MAX_PICKLE: u64 = 256 << 20;

/// Deflate cannot expand data by more than about 1032x; a storage claiming
/// more is corrupt (torch itself always stores storages uncompressed).
const MAX_DEFLATE_RATIO: u64 = 1032;

pub(super) fn load(path: &Path, sig: &ModelSignature) -> Result<Vec<Sample>, String> {
    load_with(path, |_, _| sig.clone())
}

/// Reads a file whose samples give a model's inputs by position (TorchScript
/// declares none): the first sample's arity decides how many inputs there are,
/// named by [`super::positional_name`]. Python ints decode as INT64 scalars
/// (an `int` argument such as a sample rate).
pub(super) fn load_positional(path: &Path) -> Result<Vec<Sample>, String> {
    load_with(path, |p, items| {
        let arity = match items.first().and_then(|v| p.obj(v)) {
            Some(Obj::Tuple(v)) | Some(Obj::List(v)) => v.len(),
            _ => 1,
        };
        super::positional_signature(arity, "INT64")
    })
}

fn load_with(
    path: &Path,
    sig_of: impl FnOnce(&Pickle, &[Value]) -> ModelSignature,
) -> Result<Vec<Sample>, String> {
    let file = File::open(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let zip = zip::ZipArchive::new(file).map_err(|e| {
        format!(
            "not a PyTorch .pth/.pt archive (the zip format torch.save writes; files from \
             torch.save(..., _use_new_zipfile_serialization=False) are not supported): {e}"
        )
    })?;
    let mut archive = Archive::open(zip)?;
    let pkl = archive.read("data.pkl", MAX_PICKLE)?;
    let order = match archive.read("byteorder", 16) {
        Ok(b) if b == b"big" => ByteOrder::Big,
        Ok(b) if b == b"little" => ByteOrder::Little,
        Ok(b) => {
            return Err(format!(
                "unknown byteorder '{}'",
                String::from_utf8_lossy(&b).escape_debug()
            ))
        }
        Err(_) => ByteOrder::Little,
    };
    let p = pickle::parse(&pkl).map_err(|e| format!("data.pkl: {e}"))?;
    let items = p.seq(p.root()).ok_or_else(|| {
        format!(
            "expected torch.save of a list of tuples of tensors, found {}",
            p.describe(p.root())
        )
    })?;
    let mut budget = Budget::for_file(usize::try_from(file_len).unwrap_or(usize::MAX));
    let mut storages = Storages {
        archive,
        order,
        loaded: HashMap::new(),
    };
    let sig = &sig_of(&p, items);
    samples::from_pickle(&p, items, sig, |v, spec| {
        tensor(&p, v, spec, &mut storages, &mut budget)
    })
}

/// A tensor (or `nn.Parameter`) from its rebuild call, as a contiguous copy.
fn tensor(
    p: &Pickle,
    v: &Value,
    spec: &TensorSpec,
    storages: &mut Storages,
    budget: &mut Budget,
) -> Result<Tensor, String> {
    if let Some(t) = samples::python_scalar(v, spec) {
        return t;
    }
    let mut call = p.call(v);
    if let Some((Global::RebuildParameter, [data, ..], _)) = call {
        call = p.call(data);
    }
    let Some((Global::RebuildTensorV2, args, _)) = call else {
        return Err(format!("expected a torch tensor, found {}", p.describe(v)));
    };
    let [storage, offset, size, stride, ..] = args else {
        return Err("_rebuild_tensor_v2 needs (storage, offset, size, stride, ...)".into());
    };
    let offset = offset
        .as_int()
        .and_then(|o| usize::try_from(o).ok())
        .ok_or("a tensor's storage offset is not a non-negative int")?;
    let size = p
        .dims(size)
        .ok_or("a tensor's size is not a tuple of sizes")?;
    let stride = p
        .dims(stride)
        .ok_or("a tensor's stride is not a tuple of non-negative ints")?;
    let (elem, bytes) = storages.get(p, storage)?;
    elem::gather(elem, storages.order, &bytes, &size, &stride, offset, budget)
}

/// Storage files, each read once: tensors often share one (views, slices).
struct Storages {
    archive: Archive,
    order: ByteOrder,
    loaded: HashMap<String, (Elem, Rc<[u8]>)>,
}

impl Storages {
    fn get(&mut self, p: &Pickle, storage: &Value) -> Result<(Elem, Rc<[u8]>), String> {
        let expected = "expected a storage reference ('storage', torch.<Type>Storage, key, \
                        location, numel)";
        let Some(Obj::Persistent(pid)) = p.obj(storage) else {
            return Err(format!("{expected}, found {}", p.describe(storage)));
        };
        let Some([tag, Value::Global(Global::TorchStorage(kind)), key, _location, numel]) =
            p.seq(pid)
        else {
            return Err(format!("{expected}, found {}", p.describe(pid)));
        };
        let (Some("storage"), Some(key), Some(numel)) =
            (tag.as_str(), key.as_str(), numel.as_int())
        else {
            return Err(expected.into());
        };
        let elem = storage_elem(kind)?;
        if let Some((e, bytes)) = self.loaded.get(key) {
            return Ok((*e, bytes.clone()));
        }
        let len = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(elem.size()))
            .ok_or_else(|| format!("storage '{key}' has an impossible size {numel}"))?;
        let bytes: Rc<[u8]> = self.archive.read_exact(&format!("data/{key}"), len)?.into();
        self.loaded.insert(key.to_string(), (elem, bytes.clone()));
        Ok((elem, bytes))
    }
}

fn storage_elem(kind: &str) -> Result<Elem, String> {
    Ok(match kind {
        "FloatStorage" => Elem::F32,
        "DoubleStorage" => Elem::F64,
        "HalfStorage" => Elem::F16,
        "LongStorage" => Elem::I64,
        "IntStorage" => Elem::I32,
        "ShortStorage" => Elem::I16,
        "CharStorage" => Elem::I8,
        "ByteStorage" => Elem::U8,
        "BoolStorage" => Elem::Bool,
        other => {
            return Err(format!(
                "tensors of torch.{other} are not supported (supported: {})",
                elem::SUPPORTED
            ))
        }
    })
}

/// The zip with its record prefix (the folder torch puts everything in,
/// named after the file at save time, so not predictable).
struct Archive {
    zip: zip::ZipArchive<File>,
    prefix: String,
}

impl Archive {
    fn open(zip: zip::ZipArchive<File>) -> Result<Archive, String> {
        let prefixes: Vec<&str> = zip
            .file_names()
            .filter_map(|n| n.strip_suffix("data.pkl"))
            .filter(|p| p.is_empty() || (p.ends_with('/') && p.matches('/').count() == 1))
            .collect();
        let prefix = match prefixes.as_slice() {
            [one] => one.to_string(),
            [] => return Err("no data.pkl in the archive: not a torch.save file".into()),
            _ => return Err("several data.pkl records in the archive".into()),
        };
        Ok(Archive { zip, prefix })
    }

    /// A whole record of at most `max` bytes.
    fn read(&mut self, name: &str, max: u64) -> Result<Vec<u8>, String> {
        let full = format!("{}{name}", self.prefix);
        let entry = self
            .zip
            .by_name(&full)
            .map_err(|e| format!("{full}: {e}"))?;
        if entry.size() > max {
            return Err(format!(
                "{full} is implausibly large ({} bytes)",
                entry.size()
            ));
        }
        let mut out = Vec::new();
        entry
            .take(max)
            .read_to_end(&mut out)
            .map_err(|e| format!("{full}: {e}"))?;
        Ok(out)
    }

    /// The first `len` bytes of a storage record, which must hold that many.
    fn read_exact(&mut self, name: &str, len: usize) -> Result<Vec<u8>, String> {
        let full = format!("{}{name}", self.prefix);
        let entry = self
            .zip
            .by_name(&full)
            .map_err(|e| format!("storage record {full}: {e}"))?;
        let len64 = len as u64;
        let plausible = entry.compressed_size().saturating_mul(MAX_DEFLATE_RATIO);
        if entry.size() < len64 || len64 > plausible.max(entry.compressed_size()) {
            return Err(format!(
                "storage record {full} holds {} bytes; the pickle needs {len}",
                entry.size()
            ));
        }
        // Not preallocated from the (untrusted) length: the vector grows only
        // as real bytes arrive.
        let mut out = Vec::new();
        entry
            .take(len64)
            .read_to_end(&mut out)
            .map_err(|e| format!("storage record {full}: {e}"))?;
        if out.len() != len {
            return Err(format!("storage record {full} is cut short"));
        }
        Ok(out)
    }
}
