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
use std::os::fd::{AsRawFd, OwnedFd};
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
use shared::config::HealthCheck;

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

/// The config's checks of each instance (`metadata.startup_check`, …).
#[derive(Debug, Clone, Default)]
pub struct Checks {
    pub startup: Option<HealthCheck>,
    pub readiness: Option<HealthCheck>,
    pub liveness: Option<HealthCheck>,
}

impl Checks {
    pub fn of(m: &shared::config::Metadata) -> Checks {
        Checks {
            startup: m.startup_check.clone(),
            readiness: m.readiness_check.clone(),
            liveness: m.liveness_check.clone(),
        }
    }

    /// How long a runner may take to load and say hello.
    fn load_timeout(&self) -> Duration {
        self.startup
            .as_ref()
            .map_or(LOAD_TIMEOUT, HealthCheck::budget)
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
    pub checks: Checks,
}

struct Slot {
    conn: Option<UnixStream>,
    /// The runner's probe socket (its fd 3).
    probe: Option<UnixStream>,
    /// Passing its readiness check (true without one).
    ready: bool,
    /// Why the server killed the current runner (a failed liveness check).
    killed_for: Option<String>,
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

    /// The slot once `ready` holds of it, waiting up to
    /// [`WAIT_FOR_RESTART`] (a restart, a readiness check passed again);
    /// 503 saying `what` when it does not, or when the instance is dropped.
    fn wait_until(
        &self,
        what: &str,
        ready: impl Fn(&Slot) -> bool,
    ) -> Result<MutexGuard<'_, Slot>, OptimizerError> {
        let deadline = Instant::now() + WAIT_FOR_RESTART;
        let mut slot = self.lock();
        while !ready(&slot) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || slot.stopping {
                return Err(unavailable(self, &slot, what));
            }
            slot = self
                .changed
                .wait_timeout(slot, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(slot)
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
            ready: s.conn.is_some() && s.ready,
        }
    }

    /// Up and ready for requests.
    pub fn ready(&self) -> bool {
        let s = self.0.lock();
        s.conn.is_some() && s.ready
    }

    pub fn pid(&self) -> Option<u32> {
        self.0.lock().pid
    }

    /// Its instance was dropped: the runner is killed and not restarted.
    pub fn stopped(&self) -> bool {
        self.0.lock().stopping
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
    probe: UnixStream,
    hello: Hello,
    tail: Arc<Mutex<VecDeque<String>>>,
}

fn spawn(launch: &Launch, shared: &Shared) -> Result<Started, String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
    let (probe, probed) = UnixStream::pair().map_err(|e| format!("socket pair: {e}"))?;
    let probed = OwnedFd::from(probed);
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
            // The probe socket becomes the runner's fd 3, open across exec.
            let fd = probed.as_raw_fd();
            if fd == runner::serve::PROBE_FD {
                libc::fcntl(fd, libc::F_SETFD, 0);
            } else if libc::dup2(fd, runner::serve::PROBE_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
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
    let hello = read_hello(&ours, &mut child, &tail, launch.checks.load_timeout());
    match hello {
        Ok(hello) => Ok(Started {
            child,
            conn: ours,
            probe,
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
    timeout: Duration,
) -> Result<Hello, String> {
    conn.set_read_timeout(Some(timeout))
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
        Err(wire::WireError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!(
                "it did not load within {} s (metadata.startup_check allows initial_delay_seconds + period_seconds × failure_threshold; 300 s without one)",
                timeout.as_secs()
            ))
        }
        Ok(None) | Err(_) => {
            // Died while loading (or sent junk): say how, with its last
            // words.
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
                probe: None,
                ready: true,
                killed_for: None,
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
                    slot.probe = first.probe.try_clone().ok();
                    slot.pid = Some(first.child.id());
                    slot.generation = 1;
                    slot.sandbox = first.hello.sandbox.clone();
                }
                if launch.checks.readiness.is_some() || launch.checks.liveness.is_some() {
                    let (p, checks) = (s.clone(), launch.checks.clone());
                    let _ = std::thread::Builder::new()
                        .name(format!("probes {}", launch.label))
                        .spawn(move || probe_loop(&p, &checks));
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

    /// Waits while the runner fails its readiness check (up to
    /// [`WAIT_FOR_RESTART`]; a restart makes it ready again).
    fn wait_ready(&self) -> Result<(), OptimizerError> {
        self.shared
            .wait_until("it is failing its readiness check", |s| s.ready)
            .map(drop)
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
            let slot = self
                .shared
                .wait_until("it is restarting", |s| s.conn.is_some())?;
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
            }
        }
        self.conn
            .as_mut()
            .ok_or_else(|| OptimizerError::Unavailable("no runner".into()))
    }

    /// One request/answer exchange; a broken connection means the runner
    /// died while it held the call.
    fn call(&mut self, kind: u8, body: &[u8]) -> Result<Vec<u8>, OptimizerError> {
        self.wait_ready()?;
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
        let mut reason = exit_reason(status, &tail);
        {
            let mut slot = shared.lock();
            if let Some(why) = slot.killed_for.take() {
                reason = format!("{why}; {reason}");
            }
            slot.conn = None;
            slot.probe = None;
            slot.ready = true;
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
                    slot.probe = s.probe.try_clone().ok();
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

/// One probe of the runner on its probe socket: a byte out, the same byte
/// back within `timeout`. Answers left over from a probe that timed out are
/// skipped by their number.
fn probe_once(sock: &mut UnixStream, seq: u8, timeout: Duration) -> bool {
    use std::io::Write;
    if sock.write_all(&[seq]).is_err() {
        return false;
    }
    let deadline = Instant::now() + timeout;
    let mut b = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match sock.read(&mut b) {
            Ok(1) if b[0] == seq => return true,
            Ok(1) => continue,
            _ => return false,
        }
    }
}

/// Where one check stands for the current runner.
struct CheckState {
    check: HealthCheck,
    due: Instant,
    failed: u32,
    passed: u32,
}

impl CheckState {
    fn new(check: &HealthCheck, started: Instant) -> CheckState {
        CheckState {
            check: check.clone(),
            due: started + check.initial_delay(),
            failed: 0,
            passed: 0,
        }
    }

    /// Counts a probe's result; returns whether the check now fails
    /// (`Some(true)`), passes again (`Some(false)`), or is unchanged.
    fn count(&mut self, ok: bool, now: Instant) -> Option<bool> {
        self.due = now + self.check.period();
        if ok {
            self.failed = 0;
            self.passed += 1;
            (self.passed == self.check.success_threshold()).then_some(false)
        } else {
            self.passed = 0;
            self.failed += 1;
            (self.failed == self.check.failure_threshold()).then_some(true)
        }
    }
}

/// The probe thread of one instance: readiness takes a runner that fails
/// it out of rotation (calls wait for it) until it passes again; liveness
/// kills one that fails it, and the supervisor starts another. Both start
/// afresh with each runner. Ends with the instance.
fn probe_loop(shared: &Shared, checks: &Checks) {
    let mut seq: u8 = 0;
    let mut generation = u64::MAX;
    let mut states: (Option<CheckState>, Option<CheckState>) = (None, None);
    loop {
        let (sock, current) = {
            let slot = shared.lock();
            if slot.stopping {
                return;
            }
            (
                slot.probe.as_ref().and_then(|p| p.try_clone().ok()),
                slot.generation,
            )
        };
        if current != generation {
            generation = current;
            let now = Instant::now();
            states = (
                checks.readiness.as_ref().map(|c| CheckState::new(c, now)),
                checks.liveness.as_ref().map(|c| CheckState::new(c, now)),
            );
        }
        let Some(mut sock) = sock else {
            // Restarting: look again shortly.
            if wait_stopping(shared, Duration::from_millis(100)) {
                return;
            }
            continue;
        };
        let next = [&states.0, &states.1]
            .into_iter()
            .flatten()
            .map(|s| s.due)
            .min();
        let Some(next) = next else { return };
        if wait_stopping(shared, next.saturating_duration_since(Instant::now())) {
            return;
        }
        let now = Instant::now();
        let timeout = [&states.0, &states.1]
            .into_iter()
            .flatten()
            .filter(|s| s.due <= now)
            .map(|s| s.check.timeout())
            .max();
        let Some(timeout) = timeout else { continue };
        seq = seq.wrapping_add(1);
        let ok = probe_once(&mut sock, seq, timeout);
        let counted = now;
        let now = Instant::now();
        let mut slot = shared.lock();
        if slot.generation != generation {
            continue;
        }
        if let Some(r) = states.0.as_mut().filter(|s| s.due <= counted) {
            match r.count(ok, now) {
                Some(true) => {
                    tracing::warn!(
                        "runner {} failed its readiness check: no requests until it passes",
                        shared.label
                    );
                    slot.ready = false;
                }
                Some(false) if !slot.ready => {
                    tracing::info!("runner {} passes its readiness check again", shared.label);
                    slot.ready = true;
                }
                _ => {}
            }
            shared.changed.notify_all();
        }
        if let Some(l) = states.1.as_mut().filter(|s| s.due <= counted) {
            if l.count(ok, now) == Some(true) {
                let why = format!(
                    "failed {} liveness checks in a row (no answer within {} s)",
                    l.check.failure_threshold(),
                    l.check.timeout().as_secs()
                );
                tracing::warn!("runner {} {why}; killing it", shared.label);
                slot.killed_for = Some(why);
                if let Some(pid) = slot.pid {
                    // SAFETY: as in `RunnerHandle::stop`.
                    unsafe {
                        libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use optimizer::engine::GraphLevel;

    /// A "runner" that never says hello: a shell that sleeps (the server's
    /// `--spec` lands in its `$0`), a real child process.
    fn silent(checks: Checks) -> Launch {
        Launch {
            exe: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "sleep 30".into()],
            artifact: std::env::temp_dir(),
            spec: RunnerSpec {
                settings: optimizer::engine::SessionSettings::new(GraphLevel::All, 1),
                confinement: crate::sandbox::Confinement {
                    account: None,
                    read: vec![],
                    read_write: vec![],
                },
            },
            limits: Limits {
                memory_bytes: None,
                oom_score_adj: 500,
            },
            label: "silent/0".into(),
            checks,
        }
    }

    #[test]
    fn a_runner_that_does_not_load_within_its_startup_check_is_failed_and_killed() {
        let check = HealthCheck {
            period_seconds: Some(1),
            failure_threshold: Some(1),
            ..HealthCheck::default()
        };
        let t0 = Instant::now();
        let err = Runner::start(silent(Checks {
            startup: Some(check),
            ..Checks::default()
        }))
        .err()
        .expect("it never says hello");
        let took = t0.elapsed();
        assert!(err.contains("did not load within 1 s"), "{err}");
        assert!(err.contains("startup_check"), "{err}");
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(10),
            "{took:?}"
        );
    }
}
