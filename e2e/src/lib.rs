//! Helpers for the end-to-end tests: the real `whet` binary as a server
//! process and as the CLI, a minimal HTTP client, and the reference zoo.

pub mod moto;
pub mod postgres;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The folder of reference models and data (`WHETSTONE_ZOO`, default
/// `../shared/zoo` beside the repository). Panics with a clear message when
/// it is missing: these tests need the real models.
pub fn zoo() -> PathBuf {
    let p = std::env::var_os("WHETSTONE_ZOO")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/zoo"));
    assert!(
        p.join("minilm.onnx").is_file(),
        "the model zoo is missing: expected {}/minilm.onnx (set WHETSTONE_ZOO to the folder holding the reference models)",
        p.display()
    );
    p
}

/// The `whet` binary of this workspace's build.
pub fn whet_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WHET_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> -> target/<profile>/whet
    let exe = std::env::current_exe().expect("current test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target folder");
    let p = dir.join("whet");
    assert!(p.is_file(), "{} not built: run `cargo build [--release] -p whetstone-backend --bin whet` first (scripts/test.sh builds the debug one)", p.display());
    p
}

/// A running `whet serve` process on a free loopback port.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub data: PathBuf,
    /// `http`, or `https` for a server started with `--tls-cert`.
    pub scheme: String,
    /// The gRPC listener's address, for a server started with `--grpc-addr`.
    pub grpc_addr: Option<String>,
}

impl Server {
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(data, extra, &[])
    }

    /// [`Server::start`] with these environment variables set.
    pub fn start_with_env(data: &Path, extra: &[&str], env: &[(String, String)]) -> Server {
        let mut child = Command::new(whet_bin())
            .args(["serve", "--addr", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("WHET_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start whet serve");
        let stdout = child.stdout.take().expect("server stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("server start line");
        // Keep draining: a closed pipe would turn the server's next line into an error.
        std::thread::spawn(move || {
            for l in reader.lines().map_while(Result::ok) {
                eprintln!("[whet serve] {l}");
            }
        });
        let (scheme, rest) = line
            .split_once("://")
            .unwrap_or_else(|| panic!("unexpected server start line: {line:?}"));
        let scheme = scheme.rsplit(' ').next().unwrap_or("http").to_string();
        let addr = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("unexpected server start line: {line:?}"))
            .to_string();
        // "… (gRPC on HOST:PORT; data: …)"
        let grpc_addr = line
            .split_once("(gRPC on ")
            .and_then(|(_, rest)| rest.split(';').next())
            .map(str::to_string);
        Server {
            child,
            addr,
            data: data.to_path_buf(),
            scheme,
            grpc_addr,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin-token"))
            .expect("admin token file")
            .trim()
            .to_string()
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A `whet` CLI command against this server.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(whet_bin());
        c.args(args)
            .env("WHET_SERVER", self.url())
            .env("WHET_DATA", &self.data)
            .env_remove("WHET_TOKEN");
        c
    }

    pub fn http(&self, method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> (u16, String) {
        http(&self.addr, method, path, auth, body)
    }

    pub fn admin(&self, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let (s, b) = self.http(
            method,
            path,
            Some(&format!("Bearer {}", self.admin_token())),
            body,
        );
        (
            s,
            serde_json::from_str(&b).unwrap_or(serde_json::Value::String(b)),
        )
    }
}

/// Writes `whet example-model` into `dir` with the service named `name`, and
/// returns its service config.
pub fn example(server: &Server, dir: &Path, name: &str) -> PathBuf {
    let out = server
        .cli(&["example-model", dir.to_str().unwrap()])
        .output()
        .expect("run whet example-model");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg_path = dir.join("service.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).expect("read service.json"))
            .expect("service.json is JSON");
    cfg["name"] = serde_json::json!(name);
    std::fs::write(&cfg_path, cfg.to_string()).expect("write service.json");
    cfg_path
}

/// Sets `metadata.instance` of the service config at `cfg`.
pub fn set_instances(cfg: &Path, instances: u32) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg).expect("read service.json"))
            .expect("service.json is JSON");
    v["metadata"]["instance"] = serde_json::json!(instances);
    std::fs::write(cfg, v.to_string()).expect("write service.json");
}

/// A data folder `to` for a second node (of its own, as on another
/// machine), with the admin token the first node wrote in `from`, so that
/// its CLI finds it, and the key it seals prediction tokens with (nodes
/// that share a database share it, as `--secret-key-file` would give it).
pub fn second_data_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the data folder");
    std::fs::copy(from.join("admin-token"), to.join("admin-token")).expect("copy the admin token");
    std::fs::copy(from.join("secret-key"), to.join("secret-key")).expect("copy the secret key");
}

/// [`example`] deployed through `server` as `example_mlp` with `instances`
/// instances: returns the service's token and a request for it.
pub fn deploy_example(server: &Server, dir: &Path, instances: u32) -> (String, Vec<u8>) {
    let cfg = example(server, dir, "example_mlp");
    set_instances(&cfg, instances);
    let out = server
        .cli(&["create", cfg.to_str().unwrap()])
        .output()
        .expect("run whet create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, d) = server.admin("GET", "/api/v2/services/example_mlp", b"");
    let token = d["token"].as_str().expect("a service token").to_string();
    let request = std::fs::read(dir.join("request.json")).expect("read request.json");
    (token, request)
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let auth = auth.map(|a| ("Authorization", a));
    http_with(addr, method, path, auth.as_slice(), body)
}

/// [`http`] with these extra headers.
pub fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let (status, _, body) = http_head(addr, method, path, headers, body);
    (status, body)
}

/// [`http_with`] that also returns the response's header lines
/// (`name: value`, names in lower case).
pub fn http_head(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<String>, String) {
    let mut s = TcpStream::connect(addr).expect("connect to server");
    s.set_read_timeout(Some(Duration::from_secs(120))).ok();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .expect("send request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let lines: Vec<String> = head
        .lines()
        .skip(1)
        .map(|l| match l.split_once(':') {
            Some((k, v)) => format!("{}: {}", k.trim().to_ascii_lowercase(), v.trim()),
            None => l.to_string(),
        })
        .collect();
    let chunked = lines
        .iter()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    (
        status,
        lines,
        if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        },
    )
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// `whet create` of `cfg`, written as `<name>.json` into `work` and run from
/// there (a relative `model_path` is read in `work`): whether it succeeded,
/// and what it printed (its output, then its errors).
pub fn create(server: &Server, work: &Path, cfg: &serde_json::Value) -> (bool, String) {
    let name = cfg["name"].as_str().expect("a config with a name");
    let path = work.join(format!("{name}.json"));
    std::fs::write(&path, cfg.to_string()).expect("write the config");
    let out = server
        .cli(&["create", path.to_str().expect("UTF-8 path")])
        .current_dir(work)
        .output()
        .expect("whet create runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// `whet create` of service `name`: an MLP (4 inputs `x`, 3 outputs `y`,
/// dynamic batch) written as `mlp.onnx` into `work`, served by `onnx_cpu`
/// without a plugin, with the keys of `extra` set on the config (a
/// `metadata` object merges into the default one). Panics unless the
/// deploy succeeds; returns the service's token.
pub fn create_mlp(server: &Server, work: &Path, name: &str, extra: serde_json::Value) -> String {
    std::fs::write(work.join("mlp.onnx"), optimizer::onnx_build::mlp(4, 16, 3))
        .expect("write the model");
    let mut cfg = serde_json::json!({
        "name": name,
        "model_path": "mlp.onnx",
        "processor": "onnx_cpu",
        "metadata": { "instance": 1 },
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        match (k.as_str(), v.as_object()) {
            ("metadata", Some(m)) => {
                for (mk, mv) in m {
                    cfg["metadata"][mk] = mv.clone();
                }
            }
            _ => cfg[k] = v.clone(),
        }
    }
    let (ok, said) = create(server, work, &cfg);
    assert!(ok, "{said}");
    let (s, d) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
    assert_eq!(s, 200, "{d}");
    d["token"].as_str().expect("a token").to_string()
}

/// Reads an f32 array from an .npz file.
pub fn npz_f32(path: &Path, name: &str) -> (Vec<u64>, Vec<f32>) {
    let mut npz = npyz::npz::NpzArchive::open(path).expect("open npz");
    let arr = npz
        .by_name(name)
        .expect("read npz")
        .unwrap_or_else(|| panic!("{name} not in {}", path.display()));
    let shape = arr.shape().to_vec();
    (shape, arr.into_vec().expect("f32 data"))
}

/// A model folder holding the zoo's MiniLM and its test data (as links), the
/// `model_path` the tests and benchmarks deploy.
pub fn minilm_folder(zoo: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).expect("create model folder");
    for f in ["minilm.onnx", "test_minilm.npz"] {
        std::os::unix::fs::symlink(zoo.join(f), dir.join(f)).expect("link zoo file");
    }
}

/// The seed's CPU plugin config for the zoo's MiniLM: o1, one shape group,
/// its test data. `model_path` is relative to the config file.
pub fn minilm_config(name: &str, model_path: &str) -> String {
    serde_json::json!({
        "name": name,
        "model_path": model_path,
        "processor": "onnx_cpu",
        "metadata": { "instance": 1, "memory": 4000 },
        "plugins": [{
            "command": "blade --mode eas_plugin --optimize_for cpu",
            "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
            "config": { "model_info": { "minilm.onnx": {
                "optimization_level": "o1",
                "test_data": "test_minilm.npz",
                "input_shapes": [["1*128", "1*128", "1*128"]]
            } } }
        }]
    })
    .to_string()
}

/// The `[OK]` lines of the seed's deploy log that a one-instance deploy with
/// a plugin prints, in order (other lines may come between).
pub const SEED_LINES_IN_ORDER: &[&str] = &[
    "[OK] Service is being created",
    "[OK] Scheduling process to node ",
    "[OK] Downloading model file: ",
    "[OK] Fetching processor from [",
    "[OK] Successfully downloaded all artifacts",
    "[OK] Running plugin eas-plugin-",
    "[OK] Successfully created ingress",
    "[OK] Successfully synchronized resources",
    "[OK] Waiting [Total: 1, Pending: 1, Running: 0]",
    "[OK] Running [Total: 1, Pending: 0, Running: 1]",
    "[OK] Service is running",
];

/// Every pattern starts some line, in this order (other lines may come between).
pub fn assert_in_order(lines: &[String], patterns: &[&str]) {
    let mut it = lines.iter();
    for p in patterns {
        assert!(
            it.any(|l| l.starts_with(p)),
            "log line starting with {p:?} missing or out of order in:\n{}",
            lines.join("\n")
        );
    }
}

/// Deploys the zoo's MiniLM (the seed's o1 CPU plugin config, one
/// instance) as service `name` on `server`, waits until it is Running, and
/// returns its service token.
pub fn deploy_minilm(server: &Server, work: &Path, name: &str) -> String {
    deploy_minilm_with(server, work, name, |_| {})
}

/// [`deploy_minilm`] of [`minilm_config`] changed by `edit`.
pub fn deploy_minilm_with(
    server: &Server,
    work: &Path,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    let zoo = zoo();
    let model = format!("{name}-model");
    minilm_folder(&zoo, &work.join(&model));
    let cfg = work.join(format!("{name}.json"));
    let mut config: serde_json::Value =
        serde_json::from_str(&minilm_config(name, &model)).expect("the MiniLM config");
    edit(&mut config);
    std::fs::write(&cfg, config.to_string()).expect("write service config");
    // `whet create` streams the deploy log and returns when it is done.
    let out = server
        .cli(&["create", cfg.to_str().expect("UTF-8 path")])
        .output()
        .expect("run whet create");
    assert!(
        out.status.success(),
        "whet create {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, detail) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
    assert_eq!(s, 200, "{detail}");
    assert_eq!(detail["status"], "Running", "{detail}");
    detail["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {detail}"))
        .to_string()
}

/// The Python of the third-party client venv that `scripts/install-clients.sh`
/// creates at the repository root (`.clients-venv`). Panics with the fix when
/// it is missing.
pub fn clients_python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.clients-venv/bin/python");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/install-clients.sh (scripts/test.sh does) to install the EAS SDK, Triton's client and perf_analyzer that these tests drive",
        p.display()
    );
    p
}

/// The client scripts the tests run with [`clients_python`].
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// The SIMD flags of this machine's CPU that decide engine speed (our
/// machines differ: some have AVX-512 VNNI, some only AVX2), for a
/// benchmark to print beside its figures.
pub fn cpu_flags() -> String {
    optimizer::bench::cpu_flags()
}
