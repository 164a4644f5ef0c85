//! A real PostgreSQL for the tests: a fresh cluster in a temporary folder, on
//! a free loopback port, made with the distribution's `initdb` and run with
//! `pg_ctl` (Debian's `postgresql` package; `.ci/run` installs it). Stopped
//! and removed on drop.
//!
//! PostgreSQL refuses to run as root, so under root the cluster belongs to
//! the `postgres` account and its commands run through `runuser`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Postgres {
    /// The cluster's folder (data and socket), removed on drop.
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// Commands run as `postgres` (the tests run as root).
    as_postgres: bool,
}

/// The folder holding `initdb` and `pg_ctl`: `WHET_PG_BIN`, else the newest
/// `/usr/lib/postgresql/N/bin`, else whatever `PATH` finds.
fn bin_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("WHET_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    let out = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match out {
        Some(p) if !p.is_empty() => Path::new(&p).parent().unwrap().to_path_buf(),
        _ => panic!(
            "PostgreSQL is not installed: no initdb in /usr/lib/postgresql/*/bin or on PATH \
             (apt-get install postgresql, or set WHET_PG_BIN to the folder holding initdb and pg_ctl)"
        ),
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Postgres {
    /// Makes and starts a new cluster; panics with the tools' output when
    /// that fails.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let as_postgres = is_root();
        // The folder must belong to the account the server runs as; made by
        // that account, in a place every account can reach.
        let mk = if as_postgres {
            Command::new("runuser")
                .args([
                    "-u",
                    "postgres",
                    "--",
                    "mktemp",
                    "-d",
                    "/tmp/whet-pg.XXXXXX",
                ])
                .output()
        } else {
            Command::new("mktemp")
                .args(["-d", "/tmp/whet-pg.XXXXXX"])
                .output()
        }
        .expect("mktemp");
        assert!(
            mk.status.success(),
            "mktemp: {}",
            String::from_utf8_lossy(&mk.stderr)
        );
        let dir = PathBuf::from(String::from_utf8_lossy(&mk.stdout).trim());
        let mut pg = Postgres {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        let data = pg.data_dir();
        pg.run_ok(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        // The port was free when picked, but on a busy machine another
        // process (a client's ephemeral port, another test's server) may take
        // it before PostgreSQL binds it: no URL was handed out yet, so a
        // failed first start tries another port.
        for attempt in 1..=3 {
            match pg.try_start_server() {
                Ok(()) => return pg,
                Err(e) if attempt < 3 => {
                    eprintln!("PostgreSQL did not start on port {} (attempt {attempt}), trying another port: {e}", pg.port);
                    pg.port = free_port();
                }
                Err(e) => panic!("{e}"),
            }
        }
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.args(args);
        c
    }

    fn run_ok(&self, tool: &str, args: &[&str]) -> Output {
        let out = self
            .command(tool, args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts (or starts again) the server and waits until it accepts
    /// connections.
    pub fn start_server(&self) {
        // Started again on its own port (URLs were handed out): a start that
        // fails on a busy machine is tried again after a pause.
        let mut last = String::new();
        for _ in 0..3 {
            match self.try_start_server() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
        panic!("{last}");
    }

    /// One `pg_ctl start`; on failure, its output and the end of the
    /// server's log.
    fn try_start_server(&self) -> Result<(), String> {
        let data = self.data_dir();
        let log = self.dir.join("server.log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let out = self
            .command(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-o",
                    &opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            )
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        // A server that did come up late must not hold the data folder.
        self.stop_server();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        Err(format!(
            "pg_ctl start on port {} failed: {}{}\nserver log (last lines):\n{}",
            self.port,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }

    /// Stops the server (fast shutdown: open sessions are ended).
    pub fn stop_server(&self) {
        let data = self.data_dir();
        let _ = self
            .command(
                "pg_ctl",
                &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
            )
            .output();
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name` and returns its URL.
    pub fn database(&self, name: &str) -> String {
        let port = self.port.to_string();
        self.run_ok(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name],
        );
        self.url(name)
    }

    /// The URL of database `name` (`postgres://postgres@127.0.0.1:PORT/name`).
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
