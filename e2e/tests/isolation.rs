//! The server never runs a user's model, and one user cannot take it down:
//! real `whet serve`, real runner processes killed for real, a real
//! sandbox, hostile uploads and a flood of bodies.

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use whetstone_e2e::{example, Server};

/// `whet example-model` into `dir`, with the service renamed `name`.
fn create(server: &Server, cfg: &Path) {
    let out = server
        .cli(&["create", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "whet create failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn detail(server: &Server, name: &str) -> serde_json::Value {
    let (s, v) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
    assert_eq!(s, 200, "{v}");
    v
}

const REQUEST: &str =
    r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0.1,0.2,0.3,0.4]}]}"#;

fn predict(server: &Server, name: &str, token: &str) -> (u16, String) {
    server.http(
        "POST",
        &format!("/api/predict/{name}"),
        Some(token),
        REQUEST.as_bytes(),
    )
}

fn runner_pid(server: &Server, name: &str) -> u32 {
    detail(server, name)["runners"][0]["pid"]
        .as_u64()
        .expect("a running runner has a pid") as u32
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_default()
        .to_string()
}

fn is_root() -> bool {
    status_field(std::process::id(), "Uid:")
        .split_whitespace()
        .nth(1)
        == Some("0")
}

#[test]
fn a_killed_runner_is_restarted_and_no_other_service_notices() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let a = example(&server, &work.path().join("a"), "victim");
    let b = example(&server, &work.path().join("b"), "bystander");
    create(&server, &a);
    create(&server, &b);
    let ta = detail(&server, "victim")["token"]
        .as_str()
        .unwrap()
        .to_string();
    let tb = detail(&server, "bystander")["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, before) = predict(&server, "victim", &ta);
    assert_eq!(s, 200, "{before}");

    // The runner is a process of its own, not the server.
    let pid = runner_pid(&server, "victim");
    assert_ne!(pid, server.child.id());
    if is_root() {
        let uid = status_field(pid, "Uid:");
        assert!(
            uid.split_whitespace().nth(1) != Some("0"),
            "the runner runs as root: {uid}"
        );
    }

    // SIGKILL, for real.
    let killed = Instant::now();
    assert_eq!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .code(),
        Some(0)
    );
    // The other service answers at once.
    let (s, body) = predict(&server, "bystander", &tb);
    assert_eq!(s, 200, "{body}");
    // The victim answers again, the same, within 10 s; meanwhile only 503s.
    let mut answered = None;
    while killed.elapsed() < Duration::from_secs(10) {
        let (s, body) = predict(&server, "victim", &ta);
        match s {
            200 => {
                answered = Some(body);
                break;
            }
            503 => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("unexpected {other} while the runner restarts: {body}"),
        }
    }
    let after = answered.expect("the service did not answer within 10 s of the kill");
    assert_eq!(after, before, "the restarted runner answers differently");

    let d = detail(&server, "victim");
    let r = &d["runners"][0];
    assert!(r["restarts"].as_u64().unwrap() >= 1, "{d}");
    assert!(
        r["last_exit"].as_str().unwrap_or("").contains("signal 9"),
        "{d}"
    );
    assert_ne!(r["pid"].as_u64().unwrap() as u32, pid);
    // `whet desc` shows it too.
    let out = server.cli(&["desc", "victim"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("restarts: 1") && text.contains("signal 9"),
        "{text}"
    );
}

/// Starts the runner program exactly as the server started `pid` (its
/// command line and working folder), asking it to read `path` once confined.
fn check_read_as(pid: u32, path: &Path) -> (i32, String) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    let (_ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let out = Command::new(&args[0])
        .args(&args[1..])
        .arg("--check-read")
        .arg(path)
        .current_dir(cwd)
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            theirs,
        )))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_runner_reads_its_artifact_and_nothing_of_the_server() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, &[]);
    let a = example(&server, &work.path().join("a"), "confined");
    create(&server, &a);
    let pid = runner_pid(&server, "confined");
    let sandbox = detail(&server, "confined")["runners"][0]["sandbox"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(sandbox.contains("landlock"), "{sandbox}");

    let (code, said) = check_read_as(pid, Path::new("artifact.json"));
    assert_eq!(code, 0, "the runner cannot read its own artifact: {said}");
    for secret in [
        data.join("admin-token"),
        data.join("whetstone.db"),
        a.parent().unwrap().join("model/model.onnx"),
        PathBuf::from("/etc/shadow"),
    ] {
        let (code, said) = check_read_as(pid, &secret);
        assert_eq!(code, 3, "a runner could read {}: {said}", secret.display());
    }
}

#[test]
fn a_flood_of_bodies_is_refused_before_it_is_read() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let a = example(&server, &work.path().join("a"), "steady");
    create(&server, &a);
    let token = detail(&server, "steady")["token"]
        .as_str()
        .unwrap()
        .to_string();
    let hwm = |pid: u32| -> u64 {
        status_field(pid, "VmHWM:")
            .split_whitespace()
            .nth(1)
            .and_then(|k| k.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = hwm(server.child.id());

    // 24 unauthenticated 200 MB POSTs to a service that does not exist, and
    // 4 to a real one with a wrong token, all at once.
    let addr = server.addr.clone();
    let senders: Vec<_> = (0..28)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let path = if i < 24 { "/api/predict/nothing_here" } else { "/api/predict/steady" };
                let mut s = TcpStream::connect(&addr).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: wrong\r\nContent-Length: {}\r\n\r\n",
                    200u64 << 20
                );
                let _ = s.write_all(head.as_bytes());
                let chunk = vec![b'1'; 1 << 20];
                let started = Instant::now();
                let mut sent = 0u64;
                while sent < 200 << 20 && started.elapsed() < Duration::from_secs(20) {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                    sent += chunk.len() as u64;
                }
            })
        })
        .collect();
    for t in senders {
        t.join().unwrap();
    }
    let (s, body) = predict(&server, "steady", &token);
    assert_eq!(s, 200, "{body}");
    let grown = hwm(server.child.id()).saturating_sub(before);
    assert!(
        grown < 256 << 10,
        "the server's peak RSS grew by {} MB under the flood",
        grown >> 10
    );

    // An authorized body over the service's limit: 413 before any of it
    // is sent.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /api/predict/steady HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nContent-Length: {}\r\n\r\n",
        2u64 << 20
    )
    .unwrap();
    let mut answer = [0u8; 12];
    std::io::Read::read_exact(&mut s, &mut answer).unwrap();
    assert_eq!(
        &answer,
        b"HTTP/1.1 413",
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn a_graph_whose_constant_claims_petabytes_is_refused_and_the_server_lives() {
    use optimizer::tf::proto::{
        attr_value, tensor_shape_proto, AttrValue, GraphDef, NodeDef, TensorProto, TensorShapeProto,
    };
    use prost::Message;
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let a = example(&server, &work.path().join("a"), "neighbour");
    create(&server, &a);
    let token = detail(&server, "neighbour")["token"]
        .as_str()
        .unwrap()
        .to_string();

    // Const of shape [2^40, 1024] given by one float_val.
    let dim = |size| tensor_shape_proto::Dim {
        size,
        name: String::new(),
    };
    let big = TensorProto {
        dtype: 1,
        tensor_shape: Some(TensorShapeProto {
            dim: vec![dim(1 << 40), dim(1024)],
            unknown_rank: false,
        }),
        float_val: vec![1.0],
        ..Default::default()
    };
    let mut node = NodeDef {
        name: "bomb".into(),
        op: "Const".into(),
        ..Default::default()
    };
    node.attr.insert(
        "value".into(),
        AttrValue {
            value: Some(attr_value::Value::Tensor(big)),
        },
    );
    node.attr.insert(
        "dtype".into(),
        AttrValue {
            value: Some(attr_value::Value::Type(1)),
        },
    );
    let mut out = NodeDef {
        name: "y".into(),
        op: "Identity".into(),
        input: vec!["bomb".into()],
        ..Default::default()
    };
    out.attr.insert(
        "T".into(),
        AttrValue {
            value: Some(attr_value::Value::Type(1)),
        },
    );
    let graph = GraphDef {
        node: vec![node, out],
        ..Default::default()
    };
    let dir = work.path().join("tf");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("frozen.pb"), graph.encode_to_vec()).unwrap();
    let cfg = serde_json::json!({
        "name": "bomb",
        "model_path": dir.to_str().unwrap(),
        "processor": "tensorflow_cpu_1.15",
        "metadata": { "instance": 1 },
    });
    let (ok, said) = whetstone_e2e::create(&server, work.path(), &cfg);
    assert!(!ok, "the bomb was accepted: {said}");
    assert!(said.contains("model_path"), "{said}");
    // The server is alive and the other service answers.
    let (s, body) = predict(&server, "neighbour", &token);
    assert_eq!(s, 200, "{body}");
    let (s, _) = server.admin("GET", "/api/v2/services/bomb", b"");
    assert_eq!(s, 404, "a refused create stored the service");
}

fn logs(server: &Server, name: &str) -> String {
    let out = server.cli(&["logs", name]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `test_data.npz` of `dir` with one byte of its first array changed: a
/// valid file of the same name whose values differ.
fn perturb_npz(path: &Path) {
    use std::io::Read;
    let mut arch = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut entries = Vec::new();
    for i in 0..arch.len() {
        let mut e = arch.by_index(i).unwrap();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        entries.push((e.name().to_string(), bytes));
    }
    let last = entries[0].1.len() - 2;
    entries[0].1[last] ^= 0x10;
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(&bytes).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn artifacts_are_keyed_by_data_bytes_and_built_once_per_key() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    // Two deploys of one model and data at once: one build, one reuse.
    let a = example(&server, &work.path().join("a"), "twin_a");
    let b = example(&server, &work.path().join("b"), "twin_b");
    let run = |cfg: PathBuf| {
        let c = server.cli(&["create", cfg.to_str().unwrap()]);
        std::thread::spawn(move || {
            let mut c = c;
            c.output().unwrap()
        })
    };
    let (ra, rb) = (run(a.clone()), run(b));
    for r in [ra, rb] {
        let out = r.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (la, lb) = (logs(&server, "twin_a"), logs(&server, "twin_b"));
    let built = [&la, &lb]
        .iter()
        .filter(|l| l.contains("Running plugin eas-plugin-"))
        .count();
    let reused = [&la, &lb]
        .iter()
        .filter(|l| l.contains("Reusing optimized artifact"))
        .count();
    assert_eq!((built, reused), (1, 1), "A:\n{la}\nB:\n{lb}");
    let art = |n: &str| detail(&server, n)["artifact"].as_str().unwrap().to_string();
    assert_eq!(art("twin_a"), art("twin_b"));

    // The same model with other data under the same file name: a new build.
    let c = example(&server, &work.path().join("c"), "other_data");
    perturb_npz(&c.parent().unwrap().join("model/test_data.npz"));
    create(&server, &c);
    let lc = logs(&server, "other_data");
    assert!(lc.contains("Running plugin eas-plugin-"), "{lc}");
    assert_ne!(art("other_data"), art("twin_a"));
}
