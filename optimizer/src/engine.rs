//! The ONNX Runtime engine: one session with explicit settings, typed input
//! checks (so a bad request is a clear error, not an engine crash), and a run
//! call over our own `Tensor` type.

use std::path::Path;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::ValueType;
use serde::{Deserialize, Serialize};
use shared::api::{ModelSignature, TensorSpec};

use crate::error::{OptimizerError, Result};
use crate::runtime;
use crate::tensor::{DType, Tensor};

/// ONNX Runtime graph optimization level, as stored in an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphLevel {
    Disable,
    Basic,
    Extended,
    All,
}

impl GraphLevel {
    fn to_ort(self) -> GraphOptimizationLevel {
        match self {
            GraphLevel::Disable => GraphOptimizationLevel::Disable,
            GraphLevel::Basic => GraphOptimizationLevel::Level1,
            GraphLevel::Extended => GraphOptimizationLevel::Level2,
            GraphLevel::All => GraphOptimizationLevel::Level3,
        }
    }
}

/// Which ONNX Runtime execution provider runs a session.
///
/// A session asked to run on CUDA either gets the CUDA provider or fails with
/// [`OptimizerError::Provider`]: ONNX Runtime's default of falling back to the
/// CPU when a provider cannot be registered would serve a GPU service on CPU
/// without anyone noticing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    Cuda {
        device_id: i32,
    },
}

impl ExecutionProvider {
    pub fn is_cpu(&self) -> bool {
        *self == ExecutionProvider::Cpu
    }
}

impl std::fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecutionProvider::Cpu => f.write_str("cpu"),
            ExecutionProvider::Cuda { device_id } => write!(f, "cuda:{device_id}"),
        }
    }
}

impl std::str::FromStr for ExecutionProvider {
    type Err = String;

    /// `cpu` or `cuda:N` (N the CUDA device ordinal; `cuda` alone is device 0).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let usage = || format!("expected `cpu` or `cuda:N` (N = CUDA device number), got {s:?}");
        match s {
            "cpu" => Ok(ExecutionProvider::Cpu),
            "cuda" => Ok(ExecutionProvider::Cuda { device_id: 0 }),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(usage)?;
                let device_id = n.parse::<u16>().map_err(|_| usage())?;
                Ok(ExecutionProvider::Cuda {
                    device_id: i32::from(device_id),
                })
            }
        }
    }
}

/// How a session is built. Stored in the artifact so serving reproduces what
/// was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSettings {
    pub graph_level: GraphLevel,
    pub intra_threads: usize,
    /// Idle ORT threads spin by default and steal the other core from
    /// concurrent work; we turn spinning off unless a candidate proves it helps.
    pub spinning: bool,
    /// Absent in CPU artifacts (and in those written before GPUs were
    /// supported), which therefore keep loading on the CPU.
    #[serde(default, skip_serializing_if = "ExecutionProvider::is_cpu")]
    pub provider: ExecutionProvider,
    /// On a CUDA provider: TensorRT's execution provider first (ONNX
    /// Runtime gives it every subgraph it can build an engine for), CUDA for
    /// the rest. Absent: CUDA alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensorrt: Option<TensorRt>,
}

/// TensorRT's precisions for a session (its engine is built when the
/// session is, and rebuilt for input shapes outside the ones it has seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorRt {
    /// Layers may run in fp16 where TensorRT finds it faster.
    pub fp16: bool,
    /// INT8: the graph's QuantizeLinear/DequantizeLinear pairs (from our
    /// calibration set) become INT8 layers (TensorRT's explicit quantization).
    pub int8: bool,
}

impl SessionSettings {
    pub fn new(graph_level: GraphLevel, intra_threads: usize) -> Self {
        SessionSettings {
            graph_level,
            intra_threads: intra_threads.max(1),
            spinning: false,
            provider: ExecutionProvider::Cpu,
            tensorrt: None,
        }
    }

    /// The same settings with TensorRT in front of CUDA.
    pub fn with_tensorrt(self, tensorrt: TensorRt) -> Self {
        SessionSettings {
            tensorrt: Some(tensorrt),
            ..self
        }
    }

    /// The same settings on another execution provider.
    pub fn on(self, provider: ExecutionProvider) -> Self {
        SessionSettings { provider, ..self }
    }
}

/// What verification, timing and serving need from an engine, whichever
/// runtime is behind it (ONNX Runtime here, TorchScript in `crate::torch`).
/// An engine is used by one thread at a time, but moves between threads.
pub trait InferenceEngine: Send {
    /// Inputs and outputs, in the order the model takes and returns them.
    fn signature(&self) -> &ModelSignature;

    /// Runs one inference on named inputs (any order; checked against the
    /// signature), returning the outputs in signature order.
    fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>>;

    /// Returns a stateful model to its initial state. Stateless engines
    /// (every ONNX model: state is an explicit input there) do nothing.
    fn reset(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Which runtime serves an artifact (recorded in its metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// ONNX Runtime; also what artifacts written before this field meant.
    #[default]
    OnnxRuntime,
    /// TorchScript through libtorch (the `torch` cargo feature).
    TorchScript,
}

impl EngineKind {
    pub fn is_onnxruntime(&self) -> bool {
        *self == EngineKind::OnnxRuntime
    }

    /// The engine a model file needs, from its extension: `.pt`/`.jit` are
    /// TorchScript (`torch.jit.save`), everything else goes to ONNX Runtime.
    pub fn of_model(path: &Path) -> EngineKind {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        if TORCHSCRIPT_EXTENSIONS.contains(&ext.as_str()) {
            EngineKind::TorchScript
        } else {
            EngineKind::OnnxRuntime
        }
    }
}

/// Extensions of TorchScript model files. (`.pth` is the seed's test data
/// format, never a model.)
pub const TORCHSCRIPT_EXTENSIONS: &[&str] = &["pt", "jit"];

/// How to get TorchScript support, named wherever it is missing.
pub const TORCH_FEATURE_HINT: &str = "TorchScript (pytorch_* processors) needs a build with the `torch` cargo feature: run scripts/install-libtorch.sh, then build with `--features torch` (scripts/serve.sh and scripts/test.sh do both)";

pub struct Engine {
    session: Session,
    signature: ModelSignature,
}

/// Where a session's model comes from.
enum Source<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

/// Why a session could not be built: its execution provider (the model may
/// be fine), or anything else ONNX Runtime said.
enum BuildError {
    Provider(String),
    Ort(String),
}

impl<T> From<ort::Error<T>> for BuildError {
    fn from(e: ort::Error<T>) -> Self {
        BuildError::Ort(e.to_string())
    }
}

impl BuildError {
    /// A provider failure stays one (it must never read as a bad model);
    /// anything else becomes what `other` makes of the message.
    fn into_error(self, other: impl FnOnce(String) -> OptimizerError) -> OptimizerError {
        match self {
            BuildError::Provider(m) => OptimizerError::Provider(m),
            BuildError::Ort(m) => other(m),
        }
    }
}

/// The GPU library's installer, named in every CUDA provider error.
const GPU_INSTALL_HINT: &str =
    "install ONNX Runtime's GPU build with `scripts/install-onnxruntime.sh --gpu` and run on a machine with an NVIDIA driver";

/// An execution provider's `is_available` answer as why it is not.
fn available(answer: ort::Result<bool>) -> std::result::Result<(), String> {
    match answer {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "the ONNX Runtime library loaded ({}) was built without it",
            runtime::describe()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Registers the CUDA provider on `builder`, failing (not falling back to the
/// CPU) when this ONNX Runtime has no CUDA provider or it cannot start.
fn register_cuda(
    builder: ort::session::builder::SessionBuilder,
    device_id: i32,
    tensorrt: Option<TensorRt>,
) -> std::result::Result<ort::session::builder::SessionBuilder, BuildError> {
    use ort::ep::{ExecutionProvider as _, TensorRT, CUDA};
    let fail = |why: String| {
        BuildError::Provider(format!(
            "the CUDA execution provider (device {device_id}) is not usable: {why}; a GPU session is never run on the CPU instead ({GPU_INSTALL_HINT})"
        ))
    };
    let mut providers = Vec::new();
    if let Some(t) = tensorrt {
        let fail = |why: String| {
            BuildError::Provider(format!(
                "the TensorRT execution provider (device {device_id}) is not usable: {why} (install TensorRT's libraries with `scripts/install-onnxruntime.sh --gpu --tensorrt`)"
            ))
        };
        available(TensorRT::is_available()).map_err(fail)?;
        providers.push(
            TensorRT::default()
                .with_device_id(device_id)
                .with_fp16(t.fp16)
                .with_int8(t.int8)
                .build()
                .error_on_failure(),
        );
    }
    available(CUDA::is_available()).map_err(fail)?;
    // error_on_failure: without it a failed registration is only a log line
    // and the session silently runs on the CPU.
    providers.push(
        CUDA::default()
            .with_device_id(device_id)
            .build()
            .error_on_failure(),
    );
    builder
        .with_execution_providers(providers)
        .map_err(|e| fail(e.to_string()))
}

fn build_session(
    source: Source<'_>,
    settings: &SessionSettings,
    save_to: Option<&Path>,
) -> std::result::Result<Session, BuildError> {
    let env = runtime::environment().map_err(|e| BuildError::Ort(e.to_string()))?;
    let mut builder = Session::builder(env)?
        .with_optimization_level(settings.graph_level.to_ort())?
        .with_intra_threads(settings.intra_threads)?
        .with_inter_threads(1)?
        .with_intra_op_spinning(settings.spinning)?
        .with_inter_op_spinning(false)?;
    match (settings.provider, settings.tensorrt) {
        (ExecutionProvider::Cuda { device_id }, tensorrt) => {
            builder = register_cuda(builder, device_id, tensorrt)?;
        }
        (ExecutionProvider::Cpu, Some(_)) => {
            return Err(BuildError::Provider(
                "TensorRT runs on a CUDA device, and this session is on the CPU".into(),
            ))
        }
        (ExecutionProvider::Cpu, None) => {}
    }
    if let Some(out) = save_to {
        builder = builder.with_optimized_model_path(out)?;
    }
    Ok(match source {
        Source::File(path) => builder.commit_from_file(path)?,
        Source::Bytes(bytes) => builder.commit_from_memory(bytes)?,
    })
}

fn spec_of(name: &str, ty: &ValueType) -> TensorSpec {
    match ty {
        ValueType::Tensor { ty, shape, .. } => TensorSpec {
            name: name.to_string(),
            datatype: DType::from_ort(*ty)
                .map(|d| d.kserve_name().to_string())
                .unwrap_or_else(|| format!("{ty:?}")),
            shape: shape.iter().copied().collect(),
        },
        other => TensorSpec {
            name: name.to_string(),
            datatype: format!("{other:?}"),
            shape: vec![],
        },
    }
}

impl Engine {
    /// Loads `path` with `settings`. A file ONNX Runtime cannot parse is a
    /// `BadModel` error naming the file.
    pub fn load(path: &Path, settings: &SessionSettings) -> Result<Engine> {
        runtime::environment()?;
        let session = build_session(Source::File(path), settings, None).map_err(|e| {
            e.into_error(|reason| OptimizerError::BadModel {
                path: path.to_path_buf(),
                reason,
            })
        })?;
        Ok(Self::wrap(session))
    }

    /// Loads a serialized model held in memory (a candidate or a
    /// calibration graph built by a pass).
    pub fn from_bytes(bytes: &[u8], settings: &SessionSettings) -> Result<Engine> {
        runtime::environment()?;
        let session = build_session(Source::Bytes(bytes), settings, None).map_err(|e| {
            e.into_error(|m| {
                OptimizerError::Engine(format!("building a session for a transformed model: {m}"))
            })
        })?;
        Ok(Self::wrap(session))
    }

    fn wrap(session: Session) -> Engine {
        let signature = ModelSignature {
            format: "onnx".into(),
            inputs: session
                .inputs()
                .iter()
                .map(|o| spec_of(o.name(), o.dtype()))
                .collect(),
            outputs: session
                .outputs()
                .iter()
                .map(|o| spec_of(o.name(), o.dtype()))
                .collect(),
        };
        Engine { session, signature }
    }

    pub fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    /// Runs one inference. `inputs` may come in any order; each must match the
    /// model's declared dtype and shape (see [`check_inputs`]).
    pub fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let ordered = check_inputs(&self.signature, inputs)?;
        let mut values = Vec::with_capacity(ordered.len());
        for (spec, t) in self.signature.inputs.iter().zip(ordered) {
            values.push((spec.name.clone(), t.to_ort()?));
        }
        let outputs = self.session.run(values)?;
        let mut out = Vec::with_capacity(outputs.len());
        for (name, value) in outputs.iter() {
            let t = Tensor::from_ort(&value)
                .map_err(|e| OptimizerError::Engine(format!("output '{name}': {e}")))?;
            out.push((name.to_string(), t));
        }
        Ok(out)
    }
}

impl InferenceEngine for Engine {
    fn signature(&self) -> &ModelSignature {
        Engine::signature(self)
    }

    fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        Engine::run(self, inputs)
    }
}

/// Writes the graph ONNX Runtime produces at `level` to `dst`. Levels up to
/// `Extended` give files any ORT of the same version can load on any CPU;
/// `All` adds layout-specific kernels, so artifacts are saved at `Extended`
/// and the serving session applies the rest.
pub fn save_optimized(src: &Path, dst: &Path, level: GraphLevel) -> Result<()> {
    save_optimized_on(src, dst, level, ExecutionProvider::Cpu)
}

/// [`save_optimized`] with the graph partitioned for `provider`: ONNX Runtime
/// fuses only nodes assigned to a provider that has the fused kernel, so a
/// GPU artifact must be optimized with the GPU provider registered.
pub fn save_optimized_on(
    src: &Path,
    dst: &Path,
    level: GraphLevel,
    provider: ExecutionProvider,
) -> Result<()> {
    runtime::environment()?;
    let settings = SessionSettings::new(level, 1).on(provider);
    build_session(Source::File(src), &settings, Some(dst)).map_err(|e| {
        e.into_error(|reason| OptimizerError::BadModel {
            path: src.to_path_buf(),
            reason,
        })
    })?;
    Ok(())
}

/// Reads a model's inputs and outputs without optimizing it.
pub fn inspect(path: &Path) -> Result<ModelSignature> {
    Ok(Engine::load(path, &SessionSettings::new(GraphLevel::Disable, 1))?.signature)
}

/// Matches named inputs to the signature: every declared input present once,
/// no unknown names, dtype equal, rank equal, fixed dimensions equal.
/// Returns the tensors in the model's input order.
pub fn check_inputs<'a>(
    sig: &ModelSignature,
    inputs: &'a [(String, Tensor)],
) -> Result<Vec<&'a Tensor>> {
    if sig.open_inputs() {
        // Positional, as given: the module itself judges them.
        if inputs.is_empty() {
            return Err(OptimizerError::BadInput {
                name: "inputs".into(),
                reason: "no input given; the module takes its inputs by position".into(),
            });
        }
        return Ok(inputs.iter().map(|(_, t)| t).collect());
    }
    for (name, _) in inputs {
        if !sig.inputs.iter().any(|s| &s.name == name) {
            return Err(OptimizerError::BadInput {
                name: name.clone(),
                reason: format!(
                    "the model has no such input; expected one of {}",
                    sig.inputs
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    let mut ordered = Vec::with_capacity(sig.inputs.len());
    for spec in &sig.inputs {
        let mut found = inputs.iter().filter(|(n, _)| n == &spec.name);
        let Some((_, t)) = found.next() else {
            return Err(OptimizerError::BadInput {
                name: spec.name.clone(),
                reason: format!(
                    "missing; expected {} with shape {}",
                    spec.datatype,
                    fmt_dims(&spec.shape)
                ),
            });
        };
        if found.next().is_some() {
            return Err(OptimizerError::BadInput {
                name: spec.name.clone(),
                reason: "given more than once".into(),
            });
        }
        if t.dtype().kserve_name() != spec.datatype {
            return Err(OptimizerError::BadInput {
                name: spec.name.clone(),
                reason: format!("expected datatype {}, got {}", spec.datatype, t.dtype()),
            });
        }
        let fits = t.shape.len() == spec.shape.len()
            && t.shape
                .iter()
                .zip(&spec.shape)
                .all(|(&got, &want)| want < 0 || got as i64 == want);
        if !fits {
            return Err(OptimizerError::BadInput {
                name: spec.name.clone(),
                reason: format!(
                    "expected shape {} (-1 = any size), got {}",
                    fmt_dims(&spec.shape),
                    fmt_dims(&t.shape.iter().map(|&d| d as i64).collect::<Vec<_>>())
                ),
            });
        }
        ordered.push(t);
    }
    Ok(ordered)
}

pub fn fmt_dims(dims: &[i64]) -> String {
    format!(
        "[{}]",
        dims.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}
