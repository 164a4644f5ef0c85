//! Confinement of the child processes that touch a user's model (runners,
//! inspection, the optimizer).
//!
//! Two layers, each used where the machine allows it:
//! - between fork and exec ([`pre_exec_hook`]): a memory ceiling
//!   (`RLIMIT_DATA`: heap and anonymous mappings, not the shared libraries)
//!   and `oom_score_adj`, so that under memory pressure the kernel kills the
//!   child, never the server;
//! - in the child itself, once it has loaded its libraries ([`confine`]):
//!   a switch to an unprivileged user when it was started as root, then a
//!   Landlock domain that lets it read only the folders it needs, write
//!   nowhere, open no TCP connection and signal no process outside it.
//!
//! Without Landlock (kernels before 5.13, or with it disabled) only the
//! user switch remains, which the status of every runner says.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The account runners switch to when the server runs as root.
pub const RUNNER_ACCOUNT: &str = "whet-runner";

/// A uid/gid pair to run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
}

/// What happens between fork and exec of a child.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `RLIMIT_DATA` in bytes; `None`: unlimited.
    pub memory_bytes: Option<u64>,
    /// 0..=1000; higher is killed first by the OOM killer.
    pub oom_score_adj: u16,
}

/// The closure to pass to `Command::pre_exec`. It only makes system calls
/// (no allocation, no locks), as code between fork and exec must.
pub fn pre_exec_hook(limits: Limits) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    let mut adj = [0u8; 8];
    let adj_len = {
        let s = limits.oom_score_adj.min(1000).to_string();
        adj[..s.len()].copy_from_slice(s.as_bytes());
        s.len()
    };
    move || {
        if let Some(bytes) = limits.memory_bytes {
            let r = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            // SAFETY: setrlimit with a valid pointer to a local struct.
            if unsafe { libc::setrlimit(libc::RLIMIT_DATA, &r) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // Raising one's own score needs no privilege; a failure (no /proc)
        // leaves the default, which is not worth refusing to start over.
        // SAFETY: open/write/close on a NUL-terminated literal and a local buffer.
        unsafe {
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::write(fd, adj.as_ptr().cast(), adj_len);
                libc::close(fd);
            }
        }
        Ok(())
    }
}

/// The only environment variables a confined child inherits: what the
/// runtimes and logging read. The server's environment may hold secrets
/// (object-store keys); a child that runs a user's model never sees them.
pub const CHILD_ENV: [&str; 8] = [
    "PATH",
    "LD_LIBRARY_PATH",
    "WHET_ORT_LIB",
    "OMP_WAIT_POLICY",
    "WHET_LOG",
    "HOME",
    "XDG_DATA_HOME",
    "TMPDIR",
];

/// `cmd` with an empty environment but for [`CHILD_ENV`].
pub fn clean_env(cmd: &mut std::process::Command) {
    cmd.env_clear();
    for key in CHILD_ENV {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
}

/// The account runners use when this process is root: `whet-runner`,
/// created as a system account when missing, else `nobody`. `None` when
/// the server is not root (its children then run as its own user, confined
/// by Landlock alone).
pub fn runner_account() -> Option<Account> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    if let Some(a) = lookup(RUNNER_ACCOUNT) {
        return Some(a);
    }
    let made = std::process::Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            RUNNER_ACCOUNT,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if let Some(a) = lookup(RUNNER_ACCOUNT) {
        return Some(a);
    }
    tracing::warn!(
        ?made,
        "could not create the '{RUNNER_ACCOUNT}' account; runners run as 'nobody'"
    );
    lookup("nobody").or(Some(Account {
        uid: 65534,
        gid: 65534,
    }))
}

fn lookup(name: &str) -> Option<Account> {
    let c = CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; the
    // fields are copied out before any other call could overwrite it.
    unsafe {
        let pw = libc::getpwnam(c.as_ptr());
        if pw.is_null() {
            return None;
        }
        Some(Account {
            uid: (*pw).pw_uid,
            gid: (*pw).pw_gid,
        })
    }
}

/// What a confined child may reach.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Confinement {
    /// Switch to this account when running as root.
    pub account: Option<Account>,
    /// Folders and files readable (everything else is not).
    pub read: Vec<PathBuf>,
    /// Folders and files readable and writable (devices of a GPU).
    pub read_write: Vec<PathBuf>,
}

/// What every confined child reads besides its own files: the system's
/// shared libraries (the runtime is loaded once the domain is in force, and
/// pulls its dependencies from there), CPU topology (ONNX Runtime and
/// libtorch size their thread pools from it) and the harmless devices.
pub fn system_read_paths() -> Vec<PathBuf> {
    [
        "/lib",
        "/lib64",
        "/usr/lib",
        "/usr/lib64",
        "/etc/ld.so.cache",
        "/sys/devices/system/cpu",
        "/sys/fs/cgroup",
        "/proc/cpuinfo",
        "/proc/self",
        "/proc/meminfo",
        "/dev/null",
        "/dev/zero",
        "/dev/urandom",
        "/etc/localtime",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

/// Confines the calling process in two steps around loading its
/// libraries: [`restrict`] (Landlock, while the process still has one
/// thread: a domain covers the calling thread and the threads it starts
/// later, never those already running), then the caller loads the runtime
/// (which starts threads), then [`switch_account`] (setuid applies to every
/// thread). The rules name the runtime's library folder so that it can be
/// loaded after the domain is in force.
pub fn restrict(c: &Confinement) -> Result<String, String> {
    use landlock::{
        path_beneath_rules, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetStatus, Scope, ABI,
    };
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        });
    if let Some(n) = threads.filter(|&n| n != 1) {
        return Err(format!(
            "the process already runs {n} threads; it must be confined before it starts any"
        ));
    }
    let abi = ABI::V6;
    let err = |e: landlock::RulesetError| format!("setting up Landlock: {e}");
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?
        .handle_access(AccessNet::from_all(abi))
        .map_err(err)?
        .scope(Scope::from_all(abi))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(&c.read, AccessFs::from_read(abi)))
        .map_err(err)?
        .add_rules(path_beneath_rules(&c.read_write, AccessFs::from_all(abi)))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "landlock (fully enforced)".to_string(),
        RulesetStatus::PartiallyEnforced => "landlock (partly enforced: older kernel)".to_string(),
        RulesetStatus::NotEnforced => {
            "no landlock (the kernel does not support it): only the account switch applies"
                .to_string()
        }
    })
}

/// The second step of confinement: the runner account, when running as
/// root. Returns what it did, for the status.
pub fn switch_account(c: &Confinement) -> Result<Option<String>, String> {
    let mut said = None;
    if let Some(a) = c.account {
        // SAFETY: plain system calls; their results are checked. glibc
        // applies set*id to every thread of the process.
        unsafe {
            if libc::geteuid() == 0 {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(a.gid) != 0
                    || libc::setuid(a.uid) != 0
                {
                    return Err(format!(
                        "switching to uid {} gid {}: {}",
                        a.uid,
                        a.gid,
                        io::Error::last_os_error()
                    ));
                }
                if a.uid != 0 && libc::setuid(0) == 0 {
                    return Err("root could be regained after switching users".into());
                }
                said = Some(format!("uid {}", a.uid));
            }
        }
    }
    // A change of credentials clears the parent-death signal: set it again,
    // so the child never outlives the thread that started it.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    Ok(said)
}

/// The folders holding the ONNX Runtime library this process would load
/// (readable under Landlock, so it can be loaded once confined).
pub fn runtime_library_dirs() -> Vec<PathBuf> {
    optimizer::runtime::library_candidates()
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| p.canonicalize().ok())
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect()
}

/// Makes `dir` and what it holds readable by other users (runners switch
/// to their own account): folders 0755, files 0644, no links followed.
pub fn make_readable(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.is_dir() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        for entry in std::fs::read_dir(dir)? {
            make_readable(&entry?.path())?;
        }
    } else if meta.is_file() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}
