use std::path::PathBuf;

/// Everything that can go wrong in the optimizer. Messages name the file or
/// tensor involved and say what was expected, because they reach the user's
/// deploy log verbatim.
#[derive(Debug, thiserror::Error)]
pub enum OptimizerError {
    #[error("{0}")]
    RuntimeMissing(String),
    #[error("{path}: not a model ONNX Runtime can load: {reason}")]
    BadModel { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    BadData { path: PathBuf, reason: String },
    #[error("input '{name}': {reason}")]
    BadInput { name: String, reason: String },
    #[error("{0}")]
    Config(String),
    /// A TensorFlow graph that cannot be imported; the message names the
    /// node (and op) concerned.
    #[error("TensorFlow import: {0}")]
    TfImport(String),
    #[error("engine error: {0}")]
    Engine(String),
    /// The engine's process is gone for now (a runner being restarted):
    /// the call may succeed if retried.
    #[error("{0}")]
    Unavailable(String),
    /// The execution provider a session asked for (CUDA) cannot be used.
    /// Never answered by running on another provider instead.
    #[error("{0}")]
    Provider(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl OptimizerError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        OptimizerError::Io {
            path: path.into(),
            source,
        }
    }
}

impl<T> From<ort::Error<T>> for OptimizerError {
    fn from(e: ort::Error<T>) -> Self {
        OptimizerError::Engine(e.to_string())
    }
}

pub type Result<T, E = OptimizerError> = std::result::Result<T, E>;
