//! Resolving a config's `model_path` to a model file on this machine, and
//! unpacking archives safely (no path escapes, no links, bounded size).
//!
//! Everything here is blocking file work: call it from `spawn_blocking`.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use shared::api::ModelSignature;
use shared::ServiceConfig;

use crate::error::AppError;
use crate::state::Settings;
use crate::store::ResolvedModel;

const ARCHIVE_EXTS: [&str; 4] = [".tar.gz", ".tgz", ".tar", ".zip"];
const MAX_ENTRIES: usize = 100_000;

pub fn is_archive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ARCHIVE_EXTS.iter().any(|e| n.ends_with(e))
}

/// A relative path whose every component is a plain name.
fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Unpacks `archive` into a fresh folder `dest` (which must not exist).
/// On any problem nothing is left behind and the error names the entry.
pub fn unpack(archive: &Path, dest: &Path, max_bytes: u64) -> Result<(), String> {
    let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let result = unpack_into(archive, &tmp, max_bytes);
    match result {
        Ok(()) => std::fs::rename(&tmp, dest)
            .map_err(|e| format!("moving unpacked model into place: {e}")),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn unpack_into(archive: &Path, dest: &Path, max_bytes: u64) -> Result<(), String> {
    // The format comes from the content, not the name: uploads sit under
    // temporary names while they are checked.
    let mut magic = [0u8; 4];
    let mut file = File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let n = file.read(&mut magic).map_err(|e| e.to_string())?;
    let magic = &magic[..n];
    let file = File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let mut total = 0u64;
    let mut write_entry = |rel: &Path, reader: &mut dyn Read, size: u64| -> Result<(), String> {
        total = total.saturating_add(size);
        if total > max_bytes {
            return Err(format!(
                "archive unpacks to more than the limit of {max_bytes} bytes"
            ));
        }
        let out = dest.join(rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut f = File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        // Bound the copy by the declared size, plus one byte to detect a lie.
        let copied = std::io::copy(&mut reader.take(size.saturating_add(1)), &mut f)
            .map_err(|e| e.to_string())?;
        if copied > size {
            return Err(format!(
                "archive entry '{}' is larger than its header says",
                rel.display()
            ));
        }
        Ok(())
    };
    if magic.starts_with(b"PK\x03\x04") || magic.starts_with(b"PK\x05\x06") {
        let mut zip = zip::ZipArchive::new(BufReader::new(file))
            .map_err(|e| format!("not a readable zip archive: {e}"))?;
        if zip.len() > MAX_ENTRIES {
            return Err(format!(
                "archive has {} entries; the limit is {MAX_ENTRIES}",
                zip.len()
            ));
        }
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(|e| format!("zip entry {i}: {e}"))?;
            let raw = entry.name().to_string();
            let Some(rel) =
                safe_relative(Path::new(&raw)).filter(|_| entry.enclosed_name().is_some())
            else {
                return Err(format!("archive entry '{raw}' escapes the model folder (absolute path or '..'); refusing the archive"));
            };
            if entry.is_symlink() {
                return Err(format!(
                    "archive entry '{raw}' is a symbolic link; links are not accepted"
                ));
            }
            if entry.is_dir() {
                std::fs::create_dir_all(dest.join(&rel)).map_err(|e| e.to_string())?;
                continue;
            }
            let size = entry.size();
            write_entry(&rel, &mut entry, size)?;
        }
        return Ok(());
    }
    let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut tar = tar::Archive::new(reader);
    let entries = tar
        .entries()
        .map_err(|e| format!("not a readable tar archive: {e}"))?;
    for (i, entry) in entries.enumerate() {
        if i >= MAX_ENTRIES {
            return Err(format!("archive has more than {MAX_ENTRIES} entries"));
        }
        let mut entry = entry.map_err(|e| format!("tar entry {i}: {e}"))?;
        let raw = entry.path().map_err(|e| e.to_string())?.to_path_buf();
        let shown = raw.display().to_string();
        let Some(rel) = safe_relative(&raw) else {
            if raw.components().all(|c| matches!(c, Component::CurDir)) {
                continue;
            }
            return Err(format!("archive entry '{shown}' escapes the model folder (absolute path or '..'); refusing the archive"));
        };
        use tar::EntryType;
        match entry.header().entry_type() {
            EntryType::Directory => {
                std::fs::create_dir_all(dest.join(&rel)).map_err(|e| e.to_string())?
            }
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.header().size().map_err(|e| e.to_string())?;
                write_entry(&rel, &mut entry, size)?
            }
            EntryType::XGlobalHeader | EntryType::XHeader => {}
            other => {
                return Err(format!(
                    "archive entry '{shown}' is a {other:?}; only files and folders are accepted"
                ))
            }
        }
    }
    Ok(())
}

/// Unpacks `archive` (named by its content hash) into the models folder once.
pub fn unpacked_dir(settings: &Settings, archive: &Path, sha256: &str) -> Result<PathBuf, String> {
    let dest = settings.models_dir().join(sha256);
    if dest.is_dir() {
        return Ok(dest);
    }
    std::fs::create_dir_all(settings.models_dir()).map_err(|e| e.to_string())?;
    unpack(archive, &dest, settings.max_model_bytes)?;
    Ok(dest)
}

fn invalid(path: &str, msg: impl Into<String>) -> AppError {
    AppError::invalid(path, msg)
}

/// Where `model_path` points, as a local file or folder.
fn locate_source(settings: &Settings, model_path: &str) -> Result<PathBuf, AppError> {
    if let Some(rest) = model_path.strip_prefix("upload://") {
        let (sha, name) = rest.split_once('/').unwrap_or((rest, ""));
        let ok = sha.len() == 64
            && sha.bytes().all(|b| b.is_ascii_hexdigit())
            && !name.is_empty()
            && safe_relative(Path::new(name)).is_some();
        let p = settings.uploads_dir().join(sha).join(name);
        if !ok || !p.exists() {
            return Err(invalid("model_path", format!("unknown upload '{model_path}'; upload the model first (the CLI does it for local paths)")));
        }
        return Ok(p);
    }
    if let Some(rest) = model_path.strip_prefix("file://") {
        let p = PathBuf::from(rest);
        if !p.is_absolute() {
            return Err(invalid(
                "model_path",
                format!("expected an absolute path after file://, got '{rest}'"),
            ));
        }
        let real = p
            .canonicalize()
            .map_err(|e| invalid("model_path", format!("{}: {e}", p.display())))?;
        let allowed = settings
            .model_roots
            .iter()
            .filter_map(|r| r.canonicalize().ok())
            .any(|r| real.starts_with(r));
        if !allowed {
            let roots = settings
                .model_roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>();
            return Err(invalid(
                "model_path",
                if roots.is_empty() {
                    "file:// paths are disabled on this server (start it with --model-root DIR to allow a folder); the CLI uploads local paths instead".to_string()
                } else {
                    format!(
                        "{} is outside the allowed model roots ({})",
                        real.display(),
                        roots.join(", ")
                    )
                },
            ));
        }
        return Ok(real);
    }
    if let Some((scheme, _)) = model_path.split_once("://") {
        return Err(invalid(
            "model_path",
            format!("'{scheme}://' model paths need an object store, which this server has not configured; use a local path with the CLI (it uploads it) or file://"),
        ));
    }
    Err(invalid("model_path", format!("'{model_path}' is a local path of the client: let `whet create` upload it, or use upload:// or file://")))
}

fn find_models(dir: &Path, depth: usize, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() && depth > 0 {
            find_models(&p, depth - 1, ext, out);
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)) {
            out.push(p);
        }
    }
}

/// Imports a TensorFlow frozen graph into ONNX once: the result is kept under
/// `models/tf/<key>.onnx`, keyed by the graph's bytes and the declared
/// inputs/outputs, so a redeploy finds it and the artifact key (the ONNX
/// file's hash) stays stable. Everything downstream — inspection, the
/// optimizer, serving — then sees an ordinary ONNX model whose tensor names
/// are the graph's (`input:0`).
fn import_tensorflow(
    settings: &Settings,
    pb: &Path,
    info: Option<(&str, &shared::config::ModelInfo)>,
) -> Result<PathBuf, AppError> {
    let field = |info: Option<(&str, _)>| match info {
        Some((name, _)) => format!("plugins[0].config.model_info[\"{name}\"]"),
        None => "model_path".to_string(),
    };
    let opts = optimizer::tf::ImportOptions {
        inputs: info.and_then(|(_, i)| i.inputs.clone()),
        outputs: info.and_then(|(_, i)| i.outputs.clone()),
        input_shapes: vec![],
    };
    let sha =
        optimizer::artifact::sha256_file(pb).map_err(|e| AppError::Internal(e.to_string()))?;
    let key = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(sha.as_bytes());
        h.update(format!("{:?}|{:?}|tf-import-v1", opts.inputs, opts.outputs).as_bytes());
        hex::encode(h.finalize())
    };
    let dir = settings.models_dir().join("tf");
    let out = dir.join(format!("{key}.onnx"));
    if out.is_file() {
        return Ok(out);
    }
    let model =
        optimizer::tf::import_path(pb, &opts).map_err(|e| invalid(&field(info), e.to_string()))?;
    std::fs::create_dir_all(&dir)?;
    // Written whole, then renamed: a crash never leaves half a model.
    let tmp = dir.join(format!(".tmp-{key}"));
    std::fs::write(&tmp, optimizer::onnx::to_bytes(&model))?;
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

/// Reads an ONNX model's signature; a file ONNX Runtime cannot load is a
/// config error on `model_path`.
fn inspect_onnx(file: &Path) -> Result<ModelSignature, AppError> {
    optimizer::engine::inspect(file).map_err(|e| match e {
        optimizer::OptimizerError::RuntimeMissing(m) => AppError::Unavailable(m),
        other => invalid(
            "model_path",
            format!(
                "{}: not a valid ONNX model: {}",
                file.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default(),
                other
            ),
        ),
    })
}

/// A TorchScript module declares no inputs: they are positional, and their
/// types and shapes come from the test data, or without it from
/// `input_shapes` (fp32); dimensions that `input_shapes` groups vary are
/// dynamic. The module is run once to learn the outputs.
fn inspect_torchscript(
    dir: &Path,
    file: &Path,
    model_info: Option<(&str, &shared::config::ModelInfo)>,
) -> Result<ModelSignature, AppError> {
    let info = model_info.filter(|(_, i)| i.test_data.is_some() || i.input_shapes.is_some());
    let Some((name, info)) = info else {
        return Err(invalid(
            "plugins[0].config.model_info",
            "a TorchScript model declares no inputs: name its test_data (torch.save of a list of tuples of tensors, one tuple per call) or its input_shapes (fp32 inputs) in the plugin's model_info",
        ));
    };
    let at = |field: &str| format!("plugins[0].config.model_info[\"{name}\"].{field}");
    let shapes = info.shapes().map_err(|e| invalid(&at("input_shapes"), e))?;
    let ranges = info.ranges().map_err(|e| invalid(&at("input_ranges"), e))?;
    #[cfg(feature = "torch")]
    {
        let label = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let data = info.test_data.as_ref().map(|rel| dir.join(rel));
        let field = if data.is_some() {
            "test_data"
        } else {
            "input_shapes"
        };
        optimizer::torch::engine::inspect(file, data.as_deref(), &shapes, &ranges).map_err(|e| {
            match e {
                // The file itself is not TorchScript: the model is at fault.
                e @ optimizer::OptimizerError::BadModel { .. } => {
                    invalid("model_path", e.to_string())
                }
                e => invalid(
                    &at(field),
                    format!("{label} does not run on its {field}: {e}"),
                ),
            }
        })
    }
    #[cfg(not(feature = "torch"))]
    {
        let _ = (dir, file, shapes, ranges);
        Err(AppError::invalid(
            "processor",
            optimizer::engine::TORCH_FEATURE_HINT,
        ))
    }
}

/// Resolves the model of `cfg`: fetches/unpacks it, finds the model file,
/// checks the data files it names, hashes the model, and inspects it with the
/// engine (inputs/outputs checked against `model_info`). Every failure is a
/// path-tagged config error; nothing about the service is stored here.
pub fn resolve(settings: &Settings, cfg: &ServiceConfig) -> Result<ResolvedModel, AppError> {
    let source = locate_source(settings, &cfg.model_path)?;
    let (dir, direct_file) = if source.is_dir() {
        (source, None)
    } else {
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if is_archive(&name) {
            let sha = optimizer::artifact::sha256_file(&source)
                .map_err(|e| AppError::Internal(e.to_string()))?;
            let dir =
                unpacked_dir(settings, &source, &sha).map_err(|e| invalid("model_path", e))?;
            (dir, None)
        } else {
            let parent = source.parent().map(Path::to_path_buf).unwrap_or_default();
            (parent, Some(source))
        }
    };

    let model_info = cfg.model_info();
    let runtime = cfg.processor_info().map(|p| p.runtime);
    let tensorflow = runtime == Some(shared::processor::Runtime::TensorFlow);
    let pytorch = runtime == Some(shared::processor::Runtime::PyTorch);
    let model_ext = if tensorflow {
        "pb"
    } else if pytorch {
        "pt/.jit"
    } else {
        "onnx"
    };
    // A SavedModel folder is refused by the importer with how to freeze it.
    if tensorflow && direct_file.is_none() && dir.join("saved_model.pb").is_file() {
        import_tensorflow(settings, &dir, model_info)?;
    }
    let file = match (model_info, direct_file) {
        (Some((name, _)), direct) => {
            let p = dir.join(name);
            let matches_direct = direct.as_ref().is_none_or(|d| d == &p);
            if !p.is_file() || !matches_direct {
                return Err(invalid(
                    &format!("plugins[0].config.model_info[\"{name}\"]"),
                    format!(
                        "model file '{name}' not found in model_path ({})",
                        cfg.model_path
                    ),
                ));
            }
            p
        }
        (None, Some(f)) => f,
        (None, None) => {
            let mut found = Vec::new();
            if pytorch {
                // TorchScript (`torch.jit.save`); a `.pt` named as test or
                // calibration data is data, not the model.
                let data: Vec<PathBuf> = model_info
                    .iter()
                    .flat_map(|(_, i)| [&i.test_data, &i.calibration_dataset])
                    .flatten()
                    .map(|rel| dir.join(rel))
                    .collect();
                for ext in optimizer::engine::TORCHSCRIPT_EXTENSIONS {
                    find_models(&dir, 3, ext, &mut found);
                }
                found.retain(|p| !data.contains(p));
            } else {
                find_models(&dir, 3, model_ext, &mut found);
            }
            match found.len() {
                1 => found.remove(0),
                0 => {
                    return Err(invalid(
                        "model_path",
                        format!("no .{model_ext} model file found in the model folder"),
                    ))
                }
                _ => {
                    let names: Vec<String> = found
                        .iter()
                        .filter_map(|p| p.strip_prefix(&dir).ok())
                        .map(|p| p.display().to_string())
                        .collect();
                    return Err(invalid(
                        "model_path",
                        format!(
                            "several model files ({}); name one in plugins[0].config.model_info",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
    };

    if let Some((name, info)) = model_info {
        for (key, value) in [
            ("test_data", &info.test_data),
            ("calibration_dataset", &info.calibration_dataset),
        ] {
            if let Some(rel) = value {
                if !dir.join(rel).is_file() {
                    return Err(invalid(
                        &format!("plugins[0].config.model_info[\"{name}\"].{key}"),
                        format!("file '{rel}' not found in model_path"),
                    ));
                }
            }
        }
    }

    let file = if tensorflow {
        import_tensorflow(settings, &file, model_info)?
    } else {
        file
    };
    let sig = if pytorch {
        inspect_torchscript(&dir, &file, model_info)?
    } else {
        inspect_onnx(&file)?
    };
    if let (Some((name, info)), false) = (model_info, pytorch) {
        for (kind, declared, actual) in [
            ("inputs", &info.inputs, &sig.inputs),
            ("outputs", &info.outputs, &sig.outputs),
        ] {
            for (i, n) in declared.iter().flatten().enumerate() {
                if !actual
                    .iter()
                    .any(|s| &s.name == n || s.name.strip_suffix(":0") == Some(n.as_str()))
                {
                    return Err(invalid(
                        &format!("plugins[0].config.model_info[\"{name}\"].{kind}[{i}]"),
                        format!(
                            "the model has no {} named '{n}'; it has: {}",
                            &kind[..kind.len() - 1],
                            actual
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
        }
    }
    let sha256 =
        optimizer::artifact::sha256_file(&file).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(ResolvedModel {
        dir: dir.display().to_string(),
        file: file.display().to_string(),
        sha256,
        signature: serde_json::to_string(&sig).map_err(|e| AppError::Internal(e.to_string()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_with(names: &[&str]) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new().suffix(".zip").tempfile().unwrap();
        let mut z = zip::ZipWriter::new(f.reopen().unwrap());
        for n in names {
            z.start_file(*n, zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(b"hello").unwrap();
        }
        z.finish().unwrap();
        f
    }

    #[test]
    fn zip_with_parent_entries_is_refused_and_leaves_nothing() {
        let z = zip_with(&["ok.txt", "../evil.txt"]);
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("m");
        let err = unpack(z.path(), &dest, 1 << 20).unwrap_err();
        assert!(
            err.contains("../evil.txt") && err.contains("escapes"),
            "{err}"
        );
        assert!(!dest.exists());
        assert!(!root.path().join("evil.txt").exists());
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            0,
            "temporary folder left behind"
        );
    }

    #[test]
    fn good_zip_unpacks() {
        let z = zip_with(&["a/model.onnx", "b.npz"]);
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("m");
        unpack(z.path(), &dest, 1 << 20).unwrap();
        assert_eq!(std::fs::read(dest.join("a/model.onnx")).unwrap(), b"hello");
    }

    #[test]
    fn size_limit_is_enforced() {
        let z = zip_with(&["a", "b", "c"]);
        let root = tempfile::tempdir().unwrap();
        let err = unpack(z.path(), &root.path().join("m"), 12).unwrap_err();
        assert!(err.contains("limit"), "{err}");
    }

    #[test]
    fn tar_with_absolute_or_parent_path_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let tar_path = root.path().join("x.tar");
        // The tar crate refuses to write '..' paths, so build the header by hand.
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../../etc/foo");
        header.set_size(5);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut b = tar::Builder::new(File::create(&tar_path).unwrap());
        b.append(&header, &b"hello"[..]).unwrap();
        b.into_inner().unwrap();
        let err = unpack(&tar_path, &root.path().join("m"), 1 << 20).unwrap_err();
        assert!(err.contains("escapes"), "{err}");
        assert!(!root.path().join("m").exists());
    }
}
