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

/// How a session is built. Stored in the artifact so serving reproduces what
/// was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSettings {
    pub graph_level: GraphLevel,
    pub intra_threads: usize,
    /// Idle ORT threads spin by default and steal the other core from
    /// concurrent work; we turn spinning off unless a candidate proves it helps.
    pub spinning: bool,
}

impl SessionSettings {
    pub fn new(graph_level: GraphLevel, intra_threads: usize) -> Self {
        SessionSettings {
            graph_level,
            intra_threads: intra_threads.max(1),
            spinning: false,
        }
    }
}

pub struct Engine {
    session: Session,
    signature: ModelSignature,
}

/// Where a session's model comes from.
enum Source<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

fn build_session(
    source: Source<'_>,
    settings: &SessionSettings,
    save_to: Option<&Path>,
) -> ort::Result<Session> {
    let env = runtime::environment().map_err(|e| ort::Error::new(e.to_string()))?;
    let mut builder = Session::builder(env)?
        .with_optimization_level(settings.graph_level.to_ort())?
        .with_intra_threads(settings.intra_threads)?
        .with_inter_threads(1)?
        .with_intra_op_spinning(settings.spinning)?
        .with_inter_op_spinning(false)?;
    if let Some(out) = save_to {
        builder = builder.with_optimized_model_path(out)?;
    }
    match source {
        Source::File(path) => builder.commit_from_file(path),
        Source::Bytes(bytes) => builder.commit_from_memory(bytes),
    }
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
            OptimizerError::BadModel {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self::wrap(session))
    }

    /// Loads a serialized model held in memory (a candidate or a
    /// calibration graph built by a pass).
    pub fn from_bytes(bytes: &[u8], settings: &SessionSettings) -> Result<Engine> {
        runtime::environment()?;
        let session = build_session(Source::Bytes(bytes), settings, None).map_err(|e| {
            OptimizerError::Engine(format!("building a session for a transformed model: {e}"))
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

/// Writes the graph ONNX Runtime produces at `level` to `dst`. Levels up to
/// `Extended` give files any ORT of the same version can load on any CPU;
/// `All` adds layout-specific kernels, so artifacts are saved at `Extended`
/// and the serving session applies the rest.
pub fn save_optimized(src: &Path, dst: &Path, level: GraphLevel) -> Result<()> {
    runtime::environment()?;
    let settings = SessionSettings::new(level, 1);
    build_session(Source::File(src), &settings, Some(dst)).map_err(|e| {
        OptimizerError::BadModel {
            path: src.to_path_buf(),
            reason: e.to_string(),
        }
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
