//! `whet-runner` (and `whet runner`): one service instance in a process of its own.
//!
//! The server starts it with its working directory set to the artifact
//! folder and one end of a Unix socket pair as standard input. The runner
//! loads the runtime library while it still may, confines itself
//! ([`crate::sandbox::confine`]: the runner account, then Landlock: read
//! the artifact and nothing of the server's), loads the engine, says
//! `HELLO` with the signature, and then answers `RUN` frames one at a time
//! until the socket closes — which is also how it learns that the server
//! is gone. It never touches the database, the admin token, uploads or
//! another service's artifact: it cannot open them.

use std::io::{BufReader, BufWriter};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use optimizer::artifact::ArtifactMeta;
use optimizer::engine::{Engine, EngineKind, InferenceEngine, SessionSettings};
use optimizer::OptimizerError;
use serde::{Deserialize, Serialize};

use crate::sandbox::{self, Confinement};
use crate::wire::{self, ErrorKind, Hello};

/// What the server tells a runner, as one JSON argument.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerSpec {
    pub settings: SessionSettings,
    pub confinement: Confinement,
}

#[derive(clap::Args, Debug)]
pub struct RunnerArgs {
    /// The runner's settings (JSON), written by the server.
    #[arg(long)]
    pub spec: String,
    /// Confine as a runner would, then try to read PATH and exit: 0 if it
    /// could be read, 3 if not. Used by the tests of the sandbox.
    #[arg(long, hide = true)]
    pub check_read: Option<PathBuf>,
}

type DynEngine = Box<dyn InferenceEngine>;

/// One engine of the artifact's kind. TorchScript needs the `torch` feature;
/// without it the artifact is refused with how to get it.
fn load_engine(
    meta: &ArtifactMeta,
    model: &Path,
    settings: &SessionSettings,
) -> Result<DynEngine, String> {
    match meta.engine {
        EngineKind::OnnxRuntime => Ok(Box::new(
            Engine::load(model, settings).map_err(|e| e.to_string())?,
        )),
        #[cfg(feature = "torch")]
        EngineKind::TorchScript => Ok(Box::new(
            optimizer::torch::TorchEngine::load_on(
                model,
                meta.signature.clone(),
                meta.torch
                    .unwrap_or(optimizer::artifact::TorchSettings::INFERENCE),
                settings.provider,
            )
            .map_err(|e| e.to_string())?,
        )),
        #[cfg(not(feature = "torch"))]
        EngineKind::TorchScript => Err(optimizer::engine::TORCH_FEATURE_HINT.to_string()),
    }
}

/// Loads what must come from outside the artifact folder (the runtime
/// library, libtorch's CUDA backend) before confinement forbids it.
fn preload(meta: &ArtifactMeta, settings: &SessionSettings) -> Result<(), String> {
    match meta.engine {
        EngineKind::OnnxRuntime => optimizer::runtime::environment()
            .map(|_| ())
            .map_err(|e| e.to_string()),
        #[cfg(feature = "torch")]
        EngineKind::TorchScript => {
            if matches!(
                settings.provider,
                optimizer::engine::ExecutionProvider::Cuda { .. }
            ) {
                if let optimizer::torch::cuda::TorchCuda::Unavailable(why) =
                    optimizer::torch::cuda::probe()
                {
                    return Err(why.clone());
                }
            }
            Ok(())
        }
        #[cfg(not(feature = "torch"))]
        EngineKind::TorchScript => {
            let _ = settings;
            Err(optimizer::engine::TORCH_FEATURE_HINT.to_string())
        }
    }
}

/// The runner's main; returns the process exit code.
pub fn main(args: &RunnerArgs) -> i32 {
    // SAFETY: the server gives every runner its socket as fd 0, and nothing
    // else in this process uses fd 0.
    let sock = unsafe { UnixStream::from_raw_fd(0) };
    let mut out = match sock.try_clone() {
        Ok(s) => BufWriter::with_capacity(1 << 16, s),
        Err(e) => {
            eprintln!("runner: socket: {e}");
            return 2;
        }
    };
    let fail = |out: &mut BufWriter<UnixStream>, msg: String| -> i32 {
        eprintln!("runner: {msg}");
        let _ = wire::write_frame(out, wire::ERROR, &wire::encode_error(ErrorKind::Load, &msg));
        1
    };
    let spec: RunnerSpec = match serde_json::from_str(&args.spec) {
        Ok(s) => s,
        Err(e) => return fail(&mut out, format!("bad --spec: {e}")),
    };
    // Checked against its seal: a damaged artifact is refused, never served.
    let meta = match optimizer::artifact::verify(Path::new(".")) {
        Ok(m) => m,
        Err(e) => return fail(&mut out, format!("reading the artifact: {e}")),
    };
    // Landlock first, while this is the only thread; the runtime (whose
    // library folder the rules name) is loaded inside the domain, and the
    // account switch comes last, once the libraries are mapped.
    let mut confinement = spec.confinement.clone();
    confinement.read.extend(sandbox::system_read_paths());
    confinement.read.extend(sandbox::runtime_library_dirs());
    let landlock = match sandbox::restrict(&confinement) {
        Ok(s) => s,
        Err(e) => return fail(&mut out, format!("confining the runner: {e}")),
    };
    if let Err(e) = preload(&meta, &spec.settings) {
        return fail(&mut out, e);
    }
    let sandbox = match sandbox::switch_account(&confinement) {
        Ok(Some(account)) => format!("{account}, {landlock}"),
        Ok(None) => landlock,
        Err(e) => return fail(&mut out, format!("confining the runner: {e}")),
    };
    if let Some(path) = &args.check_read {
        return match std::fs::read(path) {
            Ok(bytes) => {
                println!(
                    "read {} bytes of {} ({sandbox})",
                    bytes.len(),
                    path.display()
                );
                0
            }
            Err(e) => {
                println!("cannot read {}: {e} ({sandbox})", path.display());
                3
            }
        };
    }
    let model = Path::new(".").join(&meta.model_file);
    let mut engine = match load_engine(&meta, &model, &spec.settings) {
        Ok(e) => e,
        Err(e) => return fail(&mut out, e),
    };
    if let Some(file) = &meta.warm_up {
        match warm_up(engine.as_mut(), Path::new(".").join(file).as_path()) {
            Ok((n, took)) => eprintln!("runner: warmed up with {n} request(s) in {took:.2} s"),
            Err(e) => return fail(&mut out, e),
        }
    }
    // Loading parsed the model and freed what it parsed through: hand the
    // freed heap back, since an idle runner's resident memory is the
    // price of every instance on the machine.
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    answer_probes();
    let hello = Hello {
        signature: engine.signature().clone(),
        sandbox,
    };
    let body = match serde_json::to_vec(&hello) {
        Ok(b) => b,
        Err(e) => return fail(&mut out, e.to_string()),
    };
    if wire::write_frame(&mut out, wire::HELLO, &body).is_err() {
        return 0;
    }
    let mut input = BufReader::with_capacity(1 << 16, sock);
    serve(&mut input, &mut out, engine.as_mut())
}

/// The file descriptor on which the server probes a runner (its readiness
/// and liveness checks), apart from the request socket on fd 0.
pub const PROBE_FD: i32 = 3;

/// Answers the server's probes on [`PROBE_FD`], if it gave one: each byte
/// is echoed back by a thread of its own, so a probe finds the process
/// alive even while a long call runs, and gets nothing from a process that
/// is stopped or hung. Started once the engine is loaded: the probes check
/// a runner that serves, and its confinement was set up single-threaded.
fn answer_probes() {
    // SAFETY: fstat on a descriptor number with a zeroed buffer; it only
    // fails when the descriptor is not open.
    let is_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(PROBE_FD, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
    };
    if !is_socket {
        return;
    }
    // SAFETY: the server passes its probe socket as this descriptor and
    // nothing else in this process uses it.
    let sock = unsafe { UnixStream::from_raw_fd(PROBE_FD) };
    let _ = std::thread::Builder::new()
        .name("probes".into())
        .spawn(move || {
            use std::io::{Read, Write};
            let mut sock = sock;
            let mut b = [0u8; 1];
            while let Ok(1) = sock.read(&mut b) {
                if sock.write_all(&b).is_err() {
                    break;
                }
            }
        });
}

/// The most warm-up requests replayed (the file may hold more samples).
pub const WARM_UP_MAX: usize = 64;

/// Replays the samples of the artifact's warm-up file on `engine` (at most
/// [`WARM_UP_MAX`]), so that the first real request finds it warm: lazily
/// built kernels, allocations and caches. A sample the model refuses is
/// the config's mistake, said with the file and the sample's number.
/// Returns how many ran and the seconds they took.
fn warm_up(engine: &mut dyn InferenceEngine, file: &Path) -> Result<(usize, f64), String> {
    let t0 = std::time::Instant::now();
    let sig = engine.signature().clone();
    let data = if sig.open_inputs() {
        optimizer::data::load_positional(file).map(|(d, _)| d)
    } else {
        optimizer::data::load(file, &sig)
    }
    .map_err(|e| format!("warm_up_data_path: {e}"))?;
    let n = data.samples.len().min(WARM_UP_MAX);
    for (i, sample) in data.samples[..n].iter().enumerate() {
        run(engine, sample).map_err(|(_, e)| {
            format!("warm_up_data_path: request {i} of the warm-up file failed: {e}")
        })?;
    }
    engine
        .reset()
        .map_err(|e| format!("resetting the state after the warm-up: {e}"))?;
    Ok((n, t0.elapsed().as_secs_f64()))
}

fn serve(
    input: &mut BufReader<UnixStream>,
    out: &mut BufWriter<UnixStream>,
    engine: &mut dyn InferenceEngine,
) -> i32 {
    loop {
        let (kind, body) = match wire::read_frame(input) {
            Ok(Some(f)) => f,
            // The server closed the socket: this instance is no longer wanted.
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("runner: {e}");
                return 2;
            }
        };
        let answer = match kind {
            wire::RUN => match wire::decode_tensors(&body) {
                Ok(inputs) => run(engine, &inputs),
                Err(e) => Err((ErrorKind::BadInput, e.to_string())),
            },
            wire::RESET => engine
                .reset()
                .map(|()| Vec::new())
                .map_err(|e| (ErrorKind::Engine, e.to_string())),
            other => Err((ErrorKind::Engine, format!("unknown frame kind {other}"))),
        };
        let sent = match answer {
            Ok(outputs) if kind == wire::RESET => {
                debug_assert!(outputs.is_empty());
                wire::write_frame(out, wire::DONE, &[])
            }
            Ok(outputs) => wire::write_frame(out, wire::OUTPUTS, &wire::encode_tensors(&outputs)),
            Err((k, msg)) => wire::write_frame(out, wire::ERROR, &wire::encode_error(k, &msg)),
        };
        if sent.is_err() {
            return 0;
        }
    }
}

type Answer = Result<Vec<(String, optimizer::tensor::Tensor)>, (ErrorKind, String)>;

fn run(engine: &mut dyn InferenceEngine, inputs: &[(String, optimizer::tensor::Tensor)]) -> Answer {
    match catch_unwind(AssertUnwindSafe(|| engine.run(inputs))) {
        Ok(Ok(outputs)) => Ok(outputs),
        Ok(Err(e @ OptimizerError::BadInput { .. })) => Err((ErrorKind::BadInput, e.to_string())),
        Ok(Err(e)) => Err((ErrorKind::Engine, e.to_string())),
        Err(_) => Err((ErrorKind::Engine, "the engine call panicked".into())),
    }
}
