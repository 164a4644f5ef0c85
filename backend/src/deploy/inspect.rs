//! Inspection of a user's model at create/modify, in a child process.
//!
//! Parsing an ONNX file, importing a TensorFlow graph or loading and
//! running a TorchScript module (which is code) can abort, hang or
//! allocate without bound. The server never does it: it starts
//! `whet inspect` with the model folder as its working directory, a memory
//! ceiling, a wall-clock limit and the same confinement as a runner (the
//! runner account when root; Landlock: read the model folder, write
//! nowhere), sends an [`InspectRequest`] on stdin and reads one
//! [`InspectAnswer`] back — followed, for a TensorFlow import, by the ONNX
//! bytes, which the server streams into its models folder under a size cap.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shared::api::ModelSignature;
use shared::config::ModelInfo;

use crate::control::Settings;
use crate::deploy::DeployError;
use crate::sandbox::{self, Account, Confinement, Limits};

/// The largest answer (JSON) an inspector may send.
const MAX_ANSWER: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InspectKind {
    Onnx,
    /// A frozen GraphDef (or a SavedModel folder, refused with how to freeze).
    TensorFlow,
    TorchScript,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InspectRequest {
    pub kind: InspectKind,
    /// The model file, relative to the model folder (the child's cwd).
    pub file: PathBuf,
    /// The plugin's `model_info` entry: its key and value.
    pub model_info: Option<(String, ModelInfo)>,
    pub account: Option<Account>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum InspectAnswer {
    /// The signature; for a TensorFlow import, `onnx_bytes` of ONNX follow.
    Ok {
        signature: ModelSignature,
        onnx_bytes: u64,
    },
    /// A config error at this JSON path.
    Invalid { path: String, message: String },
    /// The server cannot do this now (a runtime library is missing).
    Unavailable(String),
}

/// What the server learns from an inspection.
pub struct Inspected {
    pub signature: ModelSignature,
}

fn at(info: &Option<(String, ModelInfo)>, field: &str) -> String {
    match info {
        Some((name, _)) if field.is_empty() => format!("plugins[0].config.model_info[\"{name}\"]"),
        Some((name, _)) => format!("plugins[0].config.model_info[\"{name}\"].{field}"),
        None => "model_path".to_string(),
    }
}

fn label(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn invalid(path: String, message: impl Into<String>) -> InspectAnswer {
    InspectAnswer::Invalid {
        path,
        message: message.into(),
    }
}

fn onnx_answer(r: optimizer::Result<ModelSignature>, file: &Path) -> InspectAnswer {
    match r {
        Ok(signature) => InspectAnswer::Ok {
            signature,
            onnx_bytes: 0,
        },
        Err(optimizer::OptimizerError::RuntimeMissing(m)) => InspectAnswer::Unavailable(m),
        Err(e) => invalid(
            "model_path".into(),
            format!("{}: not a valid ONNX model: {e}", label(file)),
        ),
    }
}

/// Runs in the child: what used to run in the server.
fn answer(req: &InspectRequest) -> (InspectAnswer, Vec<u8>) {
    let file = &req.file;
    match req.kind {
        InspectKind::Onnx => (onnx_answer(optimizer::inspect::onnx(file), file), vec![]),
        InspectKind::TensorFlow => {
            let info = req.model_info.as_ref().map(|(_, i)| i);
            let inputs = info.and_then(|i| i.inputs.clone());
            let outputs = info.and_then(|i| i.outputs.clone());
            let signature = info.and_then(|i| i.signature_name.as_deref());
            match optimizer::inspect::tensorflow(file, inputs, outputs, signature) {
                Ok(g) => (
                    InspectAnswer::Ok {
                        signature: g.signature,
                        onnx_bytes: g.onnx.len() as u64,
                    },
                    g.onnx,
                ),
                Err(optimizer::OptimizerError::RuntimeMissing(m)) => {
                    (InspectAnswer::Unavailable(m), vec![])
                }
                Err(e) => (invalid(at(&req.model_info, ""), e.to_string()), vec![]),
            }
        }
        InspectKind::TorchScript => (torchscript(req), vec![]),
    }
}

/// A TorchScript module declares no inputs: they are positional, and their
/// types and shapes come from the test data, or without it from
/// `input_shapes` (fp32); dimensions that `input_shapes` groups vary are
/// dynamic. The module is run once to learn the outputs. Deployed plainly
/// (no plugin: nothing to optimize, no data), it is only loaded, and serves
/// whatever inputs a request gives, by position (EAS's PyTorch processor).
fn torchscript(req: &InspectRequest) -> InspectAnswer {
    let Some((_, info)) = req.model_info.as_ref() else {
        #[cfg(feature = "torch")]
        return match optimizer::inspect::torchscript_open(&req.file) {
            Ok(signature) => InspectAnswer::Ok {
                signature,
                onnx_bytes: 0,
            },
            Err(e) => invalid("model_path".into(), e.to_string()),
        };
        #[cfg(not(feature = "torch"))]
        return invalid("processor".into(), optimizer::engine::TORCH_FEATURE_HINT);
    };
    if info.test_data.is_none() && info.input_shapes.is_none() {
        return invalid(
            "plugins[0].config.model_info".into(),
            "optimizing a TorchScript model needs its inputs: name its test_data (torch.save of a list of tuples of tensors, one tuple per call) or its input_shapes (fp32 inputs) in the plugin's model_info (without a plugin the module is served as given, its inputs by position)",
        );
    }
    let shapes = match info.shapes() {
        Ok(s) => s,
        Err(e) => return invalid(at(&req.model_info, "input_shapes"), e),
    };
    let ranges = match info.ranges() {
        Ok(r) => r,
        Err(e) => return invalid(at(&req.model_info, "input_ranges"), e),
    };
    #[cfg(feature = "torch")]
    {
        let data = info.test_data.as_ref().map(PathBuf::from);
        let field = if data.is_some() {
            "test_data"
        } else {
            "input_shapes"
        };
        match optimizer::inspect::torchscript(&req.file, data.as_deref(), &shapes, &ranges) {
            Ok(signature) => InspectAnswer::Ok {
                signature,
                onnx_bytes: 0,
            },
            // The file itself is not TorchScript: the model is at fault.
            Err(e @ optimizer::OptimizerError::BadModel { .. }) => {
                invalid("model_path".into(), e.to_string())
            }
            Err(e) => invalid(
                at(&req.model_info, field),
                format!("{} does not run on its {field}: {e}", label(&req.file)),
            ),
        }
    }
    #[cfg(not(feature = "torch"))]
    {
        let _ = (shapes, ranges);
        invalid("processor".into(), optimizer::engine::TORCH_FEATURE_HINT)
    }
}

/// `whet inspect`: the child's main. Returns the exit code.
pub fn child_main() -> i32 {
    let mut text = Vec::new();
    if let Err(e) = std::io::stdin()
        .take(MAX_ANSWER as u64)
        .read_to_end(&mut text)
    {
        eprintln!("inspect: reading the request: {e}");
        return 2;
    }
    let req: InspectRequest = match serde_json::from_slice(&text) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("inspect: bad request: {e}");
            return 2;
        }
    };
    // Landlock while this is the only thread (the runtime's library folder
    // is readable in it), then the runtime, then the account switch.
    let confinement = Confinement {
        account: req.account,
        read: std::iter::once(PathBuf::from("."))
            .chain(sandbox::system_read_paths())
            .chain(sandbox::runtime_library_dirs())
            .collect(),
        read_write: vec![],
    };
    if let Err(e) = sandbox::restrict(&confinement) {
        eprintln!("inspect: confining: {e}");
        return 2;
    }
    if req.kind != InspectKind::TorchScript {
        if let Err(e) = optimizer::runtime::environment() {
            return send(&InspectAnswer::Unavailable(e.to_string()), &[]);
        }
    }
    if let Err(e) = sandbox::switch_account(&confinement) {
        eprintln!("inspect: confining: {e}");
        return 2;
    }
    let (a, bytes) = answer(&req);
    send(&a, &bytes)
}

fn send(a: &InspectAnswer, bytes: &[u8]) -> i32 {
    let Ok(json) = serde_json::to_vec(a) else {
        return 2;
    };
    let mut out = std::io::stdout().lock();
    let ok = out
        .write_all(&(json.len() as u32).to_le_bytes())
        .and_then(|()| out.write_all(&json))
        .and_then(|()| out.write_all(bytes))
        .and_then(|()| out.flush());
    if ok.is_err() {
        return 2;
    }
    0
}

/// Runs an inspection for the server (blocking: call it off the async
/// runtime). `dir` is the model folder, `req.file` relative to it. For a
/// TensorFlow import the ONNX is written to `onnx_out`. A child that fails,
/// runs out of memory or time is a 422 on `model_path` that says so.
pub fn inspect(
    settings: &Settings,
    dir: &Path,
    req: &InspectRequest,
    memory_mb: Option<u64>,
    onnx_out: Option<&Path>,
) -> Result<Inspected, DeployError> {
    let memory_mb = memory_mb.or(Some(settings.child_memory_mib).filter(|&m| m > 0));
    let mut cmd = Command::new(&settings.whet_exe);
    cmd.arg("inspect")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    sandbox::clean_env(&mut cmd);
    let mut hook = sandbox::pre_exec_hook(Limits {
        memory_bytes: memory_mb.map(|m| m << 20),
        oom_score_adj: 1000,
    });
    // SAFETY: the hook only makes async-signal-safe system calls.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            // This thread waits for the child until it ends.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            hook()
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        DeployError::Internal(format!(
            "starting the model inspector ({}): {e}",
            settings.whet_exe.display()
        ))
    })?;
    let body = serde_json::to_vec(req).map_err(|e| DeployError::Internal(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&body);
    }
    let stderr = child.stderr.take();
    let err_tail = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr {
            let _ = e.take(64 << 10).read_to_string(&mut s);
        }
        s
    });
    let stdout = child.stdout.take();
    let max_onnx = settings.max_model_bytes;
    let onnx_out = onnx_out.map(Path::to_path_buf);
    let reader = std::thread::spawn(move || -> Result<Option<InspectAnswer>, String> {
        let Some(mut out) = stdout else {
            return Ok(None);
        };
        let mut len = [0u8; 4];
        if out.read_exact(&mut len).is_err() {
            return Ok(None);
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_ANSWER {
            return Err(format!("an answer of {len} bytes"));
        }
        let mut json = vec![0u8; len];
        out.read_exact(&mut json).map_err(|e| e.to_string())?;
        let a: InspectAnswer = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
        if let (InspectAnswer::Ok { onnx_bytes, .. }, Some(path)) = (&a, onnx_out) {
            if *onnx_bytes > max_onnx {
                return Err(format!(
                    "the imported model is {onnx_bytes} bytes, over the limit of {max_onnx}"
                ));
            }
            let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
            let n = std::io::copy(&mut out.take(*onnx_bytes), &mut f).map_err(|e| e.to_string())?;
            if n != *onnx_bytes {
                return Err("the imported model was cut short".into());
            }
            f.sync_all().map_err(|e| e.to_string())?;
        }
        Ok(Some(a))
    });
    let deadline = Instant::now() + settings.inspect_timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                return Err(DeployError::Internal(format!(
                    "waiting for the inspector: {e}"
                )))
            }
        }
    };
    let answer = reader.join().unwrap_or(Ok(None));
    let tail = err_tail.join().unwrap_or_default();
    let model = label(&req.file);
    let Some(status) = status else {
        return Err(DeployError::invalid(
            "model_path",
            format!(
                "inspecting {model} took longer than {} s; the model was not accepted",
                settings.inspect_timeout.as_secs()
            ),
        ));
    };
    match answer {
        Ok(Some(InspectAnswer::Ok { signature, .. })) if status.success() => {
            Ok(Inspected { signature })
        }
        Ok(Some(InspectAnswer::Invalid { path, message })) => {
            Err(DeployError::invalid(&path, message))
        }
        Ok(Some(InspectAnswer::Unavailable(m))) => Err(DeployError::Unavailable(m)),
        Err(e) => Err(DeployError::invalid(
            "model_path",
            format!("inspecting {model}: {e}"),
        )),
        Ok(_) => {
            use std::os::unix::process::ExitStatusExt;
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let how = match status.signal() {
                Some(6) | Some(9) => format!(
                    "the inspector ran out of memory{} or was killed",
                    memory_mb
                        .map(|m| format!(" (limit {m} MB: metadata.memory)"))
                        .unwrap_or_default()
                ),
                Some(n) => format!("the inspector crashed (signal {n})"),
                None => format!("the inspector failed ({status})"),
            };
            let last: String = last.chars().take(500).collect();
            Err(DeployError::invalid(
                "model_path",
                format!(
                    "{model} could not be inspected: {how}{}",
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(": {last}")
                    }
                ),
            ))
        }
    }
}
