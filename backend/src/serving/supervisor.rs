//! The server's side of a runner: starts `whet runner` for one instance,
//! restarts it with backoff when it dies, and implements
//! [`InferenceEngine`] by sending each engine call over the instance's
//! socket — so the queue and the batcher (`batcher.rs`) work unchanged,
//! their worker thread owning a [`Runner`] where it used to own a session.
//!
//! A runner that crashes, is killed or runs out of memory fails only the
//! call it held (503, saying so) and is started again: 100 ms after a
//! crash, doubling to 10 s while it keeps crashing within 30 s of starting.
//! Calls that arrive meanwhile wait for it, up to [`WAIT_FOR_RESTART`].

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, Read};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use optimizer::engine::InferenceEngine;
use optimizer::tensor::Tensor;
use optimizer::OptimizerError;
use shared::api::{ModelSignature, RunnerState};

use super::wire::{self, ErrorKind, Hello};
use crate::sandbox::{self, Limits};
use runner::serve::RunnerSpec;

/// How long a call waits for a restarting runner before it is answered 503.
pub const WAIT_FOR_RESTART: Duration = Duration::from_secs(10);
/// How long a runner may take to load its engine and say hello.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A runner that lived this long was healthy: the next crash restarts fast.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// Lines of a runner's stderr kept for the exit reason.
const TAIL_LINES: usize = 4;

/// The program that serves an artifact of this engine: `whet-runner`
/// beside `whet` for ONNX Runtime (no libtorch in it: a fraction of the
/// memory per instance), else `whet runner`.
pub fn runner_program(
    whet_exe: &std::path::Path,
    engine: optimizer::engine::EngineKind,
) -> (PathBuf, Vec<String>) {
    let lean = whet_exe.with_file_name("whet-runner");
    if engine.is_onnxruntime() && lean.is_file() {
        (lean, vec![])
    } else {
        (whet_exe.to_path_buf(), vec!["runner".to_string()])
    }
}

/// How to start the runners of one service.
#[derive(Debug, Clone)]
pub struct Launch {
    pub exe: PathBuf,
    /// Arguments before `--spec` (`runner` for `whet runner`).
    pub args: Vec<String>,
    pub artifact: PathBuf,
    pub spec: RunnerSpec,
    pub limits: Limits,
    /// `service/instance`, for logs.
    pub label: String,
}

struct Slot {
    conn: Option<UnixStream>,
    pid: Option<u32>,
    /// Bumped each time a runner starts or dies.
    generation: u64,
    restarts: u32,
    last_exit: Option<String>,
    sandbox: String,
    stopping: bool,
}

struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
    label: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The state of one runner for `whet desc`, the API and the console.
#[derive(Clone)]
pub struct RunnerHandle(Arc<Shared>);

impl RunnerHandle {
    pub fn state(&self, instance: usize) -> RunnerState {
        let s = self.0.lock();
        RunnerState {
            instance: instance as u32,
            pid: s.pid,
            up: s.conn.is_some(),
            restarts: s.restarts,
            last_exit: s.last_exit.clone(),
            sandbox: s.sandbox.clone(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.0.lock().pid
    }

    /// The instance is no longer wanted: kill its runner now and do not
    /// restart it. A worker blocked on a call to it sees the socket close.
    pub fn stop(&self) {
        let mut slot = self.0.lock();
        slot.stopping = true;
        if let Some(pid) = slot.pid {
            // SAFETY: kill of a child the supervisor has not reaped (it
            // clears `pid` under this lock before reaping).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        self.0.changed.notify_all();
    }

    /// Kills the runner of `generation` if it is still the current one
    /// (the supervisor then starts another).
    fn kill_generation(&self, generation: u64) {
        let slot = self.0.lock();
        if slot.generation == generation {
            if let Some(pid) = slot.pid {
                // SAFETY: as in `stop`.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}

/// One instance: a supervised runner process, used as an engine.
pub struct Runner {
    shared: Arc<Shared>,
    signature: ModelSignature,
    /// The connection this engine uses and the generation it belongs to.
    conn: Option<(u64, BufReader<UnixStream>, BufWriter<UnixStream>)>,
}

struct Started {
    child: Child,
    conn: UnixStream,
    hello: Hello,
    tail: Arc<Mutex<VecDeque<String>>>,
}

fn spawn(launch: &Launch, shared: &Shared) -> Result<Started, String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
    let spec = serde_json::to_string(&launch.spec).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&launch.exe);
    cmd.args(&launch.args)
        .arg("--spec")
        .arg(spec)
        .current_dir(&launch.artifact)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    sandbox::clean_env(&mut cmd);
    let mut hook = sandbox::pre_exec_hook(launch.limits);
    // SAFETY: the hook only makes async-signal-safe system calls; prctl
    // ties the runner to the supervisor thread that started it, which lives
    // exactly as long as the runner is wanted.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            hook()
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the runner ({}): {e}", launch.exe.display()))?;
    // `Command` holds the runner's end of the socket until it is dropped:
    // without this, a runner dying while it loads would not close the
    // socket, and its death would go unseen until the load timeout.
    drop(cmd);
    // Published at once, so that dropping the instance kills a runner that
    // is still loading.
    {
        let mut slot = shared.lock();
        if slot.stopping {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the instance was stopped".into());
        }
        slot.pid = Some(child.id());
    }
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    if let Some(err) = child.stderr.take() {
        let (tail, label) = (tail.clone(), launch.label.clone());
        let _ = std::thread::Builder::new()
            .name(format!("runner-log {label}"))
            .spawn(move || {
                let mut err = BufReader::new(err);
                let mut buf = Vec::new();
                loop {
                    // A line is read up to 4 KiB; the rest of a longer one is
                    // skipped, so a runner cannot grow the server with output.
                    buf.clear();
                    match (&mut err).take(4096).read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    if buf.last() != Some(&b'\n') && buf.len() == 4096 {
                        let mut skip = Vec::new();
                        loop {
                            skip.clear();
                            match (&mut err).take(4096).read_until(b'\n', &mut skip) {
                                Ok(0) | Err(_) => break,
                                Ok(_) if skip.last() == Some(&b'\n') => break,
                                Ok(_) => {}
                            }
                        }
                    }
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    tracing::info!(target: "runner", "{label}: {line}");
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if t.len() == TAIL_LINES {
                        t.pop_front();
                    }
                    t.push_back(line.chars().take(500).collect());
                }
            });
    }
    let hello = read_hello(&ours, &mut child, &tail);
    match hello {
        Ok(hello) => Ok(Started {
            child,
            conn: ours,
            hello,
            tail,
        }),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

fn read_hello(
    conn: &UnixStream,
    child: &mut Child,
    tail: &Mutex<VecDeque<String>>,
) -> Result<Hello, String> {
    conn.set_read_timeout(Some(LOAD_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(conn);
    let frame = wire::read_frame(&mut r);
    let _ = conn.set_read_timeout(None);
    match frame {
        Ok(Some((wire::HELLO, body))) => {
            serde_json::from_slice(&body).map_err(|e| format!("the runner's hello: {e}"))
        }
        Ok(Some((wire::ERROR, body))) => Err(wire::decode_error(&body).1),
        Ok(Some((k, _))) => Err(format!("the runner sent frame {k} before its hello")),
        Ok(None) | Err(_) => {
            // Died while loading (or hung past the timeout, or sent junk):
            // say how, with its last words.
            let _ = child.kill();
            let status = child.wait().ok();
            Err(exit_reason(status, tail))
        }
    }
}

/// "killed by signal 9 (SIGKILL)", "exited with code 1: <last stderr line>".
fn exit_reason(status: Option<std::process::ExitStatus>, tail: &Mutex<VecDeque<String>>) -> String {
    // Give the log thread a moment to take the last lines.
    std::thread::sleep(Duration::from_millis(20));
    let last = tail
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .cloned();
    let how = match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with code {c}"),
            (_, Some(9)) => "killed by signal 9 (SIGKILL: killed, or out of memory)".to_string(),
            (_, Some(6)) => "aborted (signal 6: often an allocation that failed)".to_string(),
            (_, Some(11)) => "crashed (signal 11, segmentation fault)".to_string(),
            (_, Some(n)) => format!("killed by signal {n}"),
            _ => format!("{s}"),
        },
        None => "exited".to_string(),
    };
    match last {
        Some(l) => format!("{how}: {l}"),
        None => how,
    }
}

impl Runner {
    /// Starts the runner and waits until its engine is loaded. A runner
    /// that cannot load its artifact is an error here (the deploy fails);
    /// later crashes are restarted by the supervisor thread.
    pub fn start(launch: Launch) -> Result<Runner, String> {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot {
                conn: None,
                pid: None,
                generation: 0,
                restarts: 0,
                last_exit: None,
                sandbox: String::new(),
                stopping: false,
            }),
            changed: Condvar::new(),
            label: launch.label.clone(),
        });
        // The runner is started by the thread that supervises it: its
        // parent-death signal follows that thread, which lives exactly as
        // long as the instance (a pool thread that idles out would take
        // the runner with it).
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let s = shared.clone();
        std::thread::Builder::new()
            .name(format!("runner {}", launch.label))
            .spawn(move || {
                let first = match spawn(&launch, &s) {
                    Ok(first) => first,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                {
                    let mut slot = s.lock();
                    slot.conn = first.conn.try_clone().ok();
                    slot.pid = Some(first.child.id());
                    slot.generation = 1;
                    slot.sandbox = first.hello.sandbox.clone();
                }
                if tx.send(Ok(first.hello.signature.clone())).is_err() {
                    let mut child = first.child;
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                supervise(s, launch, first)
            })
            .map_err(|e| format!("starting the supervisor thread: {e}"))?;
        let signature = rx
            .recv()
            .map_err(|_| "the runner's supervisor thread ended".to_string())??;
        Ok(Runner {
            shared,
            signature,
            conn: None,
        })
    }

    pub fn handle(&self) -> RunnerHandle {
        RunnerHandle(self.shared.clone())
    }

    /// The connection of the live runner, waiting for a restart if needed.
    fn connection(
        &mut self,
    ) -> Result<&mut (u64, BufReader<UnixStream>, BufWriter<UnixStream>), OptimizerError> {
        let current = self.shared.lock().generation;
        if self.conn.as_ref().is_some_and(|(g, _, _)| *g != current) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let deadline = Instant::now() + WAIT_FOR_RESTART;
            let mut slot = self.shared.lock();
            loop {
                if let Some(c) = slot.conn.as_ref() {
                    let r = c
                        .try_clone()
                        .map_err(|e| unavailable(&self.shared, &slot, &e.to_string()))?;
                    let w = c
                        .try_clone()
                        .map_err(|e| unavailable(&self.shared, &slot, &e.to_string()))?;
                    self.conn = Some((
                        slot.generation,
                        BufReader::with_capacity(1 << 16, r),
                        BufWriter::with_capacity(1 << 16, w),
                    ));
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || slot.stopping {
                    return Err(unavailable(&self.shared, &slot, "it is restarting"));
                }
                slot = self
                    .shared
                    .changed
                    .wait_timeout(slot, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        self.conn
            .as_mut()
            .ok_or_else(|| OptimizerError::Unavailable("no runner".into()))
    }

    /// One request/answer exchange; a broken connection means the runner
    /// died while it held the call.
    fn call(&mut self, kind: u8, body: &[u8]) -> Result<Vec<u8>, OptimizerError> {
        let conn = self.connection()?;
        let generation = conn.0;
        let exchange =
            wire::write_frame(&mut conn.2, kind, body).and_then(|()| wire::read_frame(&mut conn.1));
        match exchange {
            Ok(Some((wire::OUTPUTS | wire::DONE, body))) => Ok(body),
            Ok(Some((wire::ERROR, body))) => {
                let (k, msg) = wire::decode_error(&body);
                Err(match k {
                    ErrorKind::BadInput => OptimizerError::BadInput {
                        name: "request".into(),
                        reason: msg,
                    },
                    _ => OptimizerError::Engine(msg),
                })
            }
            Ok(Some((k, _))) => {
                // Out of step with the protocol: this runner is not trusted
                // again; killing it makes the supervisor start a fresh one.
                self.conn = None;
                self.handle().kill_generation(generation);
                Err(OptimizerError::Engine(format!(
                    "the runner answered with frame kind {k}; it is restarted"
                )))
            }
            Ok(None) | Err(_) => {
                self.conn = None;
                // Wait briefly for the supervisor to see the exit and say why.
                let deadline = Instant::now() + Duration::from_secs(1);
                let mut slot = self.shared.lock();
                while slot.generation == generation && Instant::now() < deadline {
                    slot = self
                        .shared
                        .changed
                        .wait_timeout(slot, Duration::from_millis(50))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                Err(unavailable(
                    &self.shared,
                    &slot,
                    "its runner process ended while handling this request; it is being restarted",
                ))
            }
        }
    }
}

fn unavailable(shared: &Shared, slot: &Slot, what: &str) -> OptimizerError {
    let why = slot
        .last_exit
        .as_deref()
        .map(|e| format!(" (last exit: {e})"))
        .unwrap_or_default();
    OptimizerError::Unavailable(format!("instance {}: {what}{why}", shared.label))
}

impl InferenceEngine for Runner {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn run(&mut self, inputs: &[(String, Tensor)]) -> optimizer::Result<Vec<(String, Tensor)>> {
        let body = self.call(wire::RUN, &wire::encode_tensors(inputs))?;
        wire::decode_tensors(&body).map_err(|e| OptimizerError::Engine(e.to_string()))
    }

    fn reset(&mut self) -> optimizer::Result<()> {
        self.call(wire::RESET, &[]).map(|_| ())
    }
}

impl Drop for Runner {
    /// The instance is no longer wanted (scale down, stop, redeploy,
    /// delete): the runner is killed and not restarted.
    fn drop(&mut self) {
        self.handle().stop();
    }
}

/// The supervisor thread: waits for the runner to exit, records why, and
/// starts it again with backoff until the instance is dropped.
fn supervise(shared: Arc<Shared>, launch: Launch, first: Started) {
    let mut current = Some(first);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(Started {
            mut child, tail, ..
        }) = current.take()
        else {
            break;
        };
        let started = Instant::now();
        // Wait for the exit without reaping, clear the pid, then reap: the
        // pid stays ours (no reuse) for as long as `Drop` may signal it.
        // SAFETY: waitid on our own child with a zeroed siginfo.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                child.id() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
        }
        shared.lock().pid = None;
        let status = child.wait().ok();
        let reason = exit_reason(status, &tail);
        {
            let mut slot = shared.lock();
            slot.conn = None;
            slot.pid = None;
            slot.generation += 1;
            if slot.stopping {
                shared.changed.notify_all();
                return;
            }
            slot.restarts += 1;
            tracing::warn!("runner {} {reason}; restarting", shared.label);
            slot.last_exit = Some(reason);
            shared.changed.notify_all();
        }
        crate::control::metrics::observe_runner_restart(&launch.label);
        if started.elapsed() >= HEALTHY_AFTER {
            backoff = FIRST_BACKOFF;
        }
        loop {
            if wait_stopping(&shared, backoff) {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match spawn(&launch, &shared) {
                Ok(s) => {
                    let mut slot = shared.lock();
                    if slot.stopping {
                        drop(slot);
                        let mut child = s.child;
                        let _ = child.kill();
                        let _ = child.wait();
                        return;
                    }
                    slot.conn = s.conn.try_clone().ok();
                    slot.pid = Some(s.child.id());
                    slot.generation += 1;
                    slot.sandbox = s.hello.sandbox.clone();
                    shared.changed.notify_all();
                    drop(slot);
                    current = Some(s);
                    break;
                }
                Err(e) => {
                    tracing::warn!("runner {}: restart failed: {e}", shared.label);
                    let mut slot = shared.lock();
                    slot.restarts += 1;
                    slot.last_exit = Some(e);
                    shared.changed.notify_all();
                }
            }
        }
    }
}

/// Sleeps `d` unless the instance is dropped meanwhile (then `true`).
fn wait_stopping(shared: &Shared, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    let mut slot = shared.lock();
    loop {
        if slot.stopping {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        slot = shared
            .changed
            .wait_timeout(slot, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}
