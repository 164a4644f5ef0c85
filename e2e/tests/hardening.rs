//! Hardening, end to end on a real server: the data folder belongs to one
//! server and to its account.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use whetstone_e2e::{whet_bin, Server};

#[test]
fn a_second_server_on_the_same_data_folder_is_refused_and_the_first_serves_on() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let first = Server::start(&data, &[]);
    let out = Command::new(whet_bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .expect("whet serve runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second server started: {stderr}");
    assert!(
        stderr.contains("in use by another whet serve")
            && stderr.contains(&format!("pid {}", first.child.id())),
        "{stderr}"
    );
    // The first server is untouched.
    let (status, _) = first.http("GET", "/v2/health/ready", None, b"");
    assert_eq!(status, 200);
}

#[test]
fn the_data_folder_and_its_database_are_closed_to_other_accounts() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let _server = Server::start(&data, &[]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("whetstone.db")), 0o600);
    assert_eq!(mode(&data.join("admin-token")), 0o600);
}

/// Runs SQL on the server's SQLite file from outside (Python's sqlite3):
/// triggers that make the server's own writes fail, as a full disk or a
/// database that refuses a statement would.
fn sqlite(db: &std::path::Path, sql: &str) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=30); c.executescript(sys.argv[2]); c.commit()",
        ])
        .arg(db)
        .arg(sql)
        .output()
        .expect("python3 runs");
    succeeded(&out);
}

/// A command's standard output, once it is known to have succeeded (its
/// output in the failure otherwise).
fn succeeded(out: &std::process::Output) -> String {
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said
}

/// Polls `GET path` until `done` holds of its JSON, for up to `secs`.
fn poll(
    server: &Server,
    path: &str,
    secs: u64,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let (_, v) = server.admin("GET", path, b"");
        if done(&v) || std::time::Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Writes `config` as `NAME.json` in `work` and starts `whet create` on it
/// there, in the background (the CLI follows the deploy; the caller kills
/// it once it has seen what it waits for).
fn start_create(
    server: &Server,
    work: &std::path::Path,
    config: serde_json::Value,
) -> std::process::Child {
    let cfg = work.join(format!("{}.json", config["name"].as_str().expect("a name")));
    std::fs::write(&cfg, config.to_string()).unwrap();
    server
        .cli(&["create", cfg.to_str().unwrap()])
        .current_dir(work)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// A deploy that fails while the database refuses its last log line, and
/// then refuses the job's end for a while, still ends: the service reads
/// Failed, and once the database takes writes again the job is recorded as
/// ended, so the service can be deleted.
#[test]
fn a_deploy_ends_though_its_last_writes_fail() {
    use optimizer::tensor::{Tensor, TensorData};
    let work = tempfile::tempdir().unwrap();
    let m = work.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("mlp.onnx"), optimizer::onnx_build::mlp(4, 16, 3)).unwrap();
    // Samples of the wrong width: the deploy fails at warm-up.
    let wrong = Tensor::new(vec![2, 5], TensorData::F32(vec![0.5; 10])).unwrap();
    optimizer::data::write_npz(&m.join("wrong.npz"), &[("x", &wrong)]).unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, &[]);
    sqlite(
        &data.join("whetstone.db"),
        "CREATE TRIGGER no_error_lines BEFORE INSERT ON logs WHEN NEW.line LIKE '[ERROR]%'
           BEGIN SELECT RAISE(ABORT, 'injected: the log cannot be written'); END;
         CREATE TABLE held (x INTEGER);
         INSERT INTO held VALUES (1);
         CREATE TRIGGER no_failed_jobs BEFORE UPDATE ON jobs
           WHEN NEW.state = 'failed' AND EXISTS (SELECT 1 FROM held)
           BEGIN SELECT RAISE(ABORT, 'injected: the job cannot be ended'); END;",
    );
    let mut cli = start_create(
        &server,
        work.path(),
        serde_json::json!({
            "name": "cold", "model_path": "m", "processor": "onnx_cpu",
            "metadata": { "instance": 1 }, "warm_up_data_path": "wrong.npz",
        }),
    );
    let d = poll(&server, "/api/v2/services/cold", 120, |d| {
        d["status"] == "Failed"
    });
    assert_eq!(d["status"], "Failed", "the deploy never ended: {d}");
    assert!(
        d["message"]
            .as_str()
            .unwrap_or_default()
            .contains("warm_up_data_path"),
        "{d}"
    );
    // The job's end is still refused: it is retried, not dropped.
    std::thread::sleep(std::time::Duration::from_secs(2));
    sqlite(&data.join("whetstone.db"), "DELETE FROM held;");
    let (status, body) = server.admin("DELETE", "/api/v2/services/cold", b"");
    assert_eq!(status, 204, "the job was never recorded as ended: {body}");
    let _ = cli.kill();
    let _ = cli.wait();
    let (status, _) = server.admin("GET", "/api/v2/services/cold", b"");
    assert_eq!(status, 404);
}

/// A signed request (the EAS SDK's `Authorization: EAS …`) is taken once:
/// sent again later it is refused, while a repeat within its second (the
/// SDK's Date resolution) and a freshly signed one are answered.
#[test]
fn a_captured_signed_request_cannot_be_replayed() {
    use backend::serving::eas::signing::{authorization, body_md5, string_to_sign};
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let token = whetstone_e2e::create_mlp(&server, work.path(), "signed", serde_json::json!({}));
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}).to_string();
    let sign = || {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let md5 = body_md5(body.as_bytes());
        let auth = authorization(
            &token,
            &string_to_sign(&md5, "application/json", &date, "signed"),
        );
        (date, md5, auth)
    };
    let send = |(date, md5, auth): &(String, String, String)| {
        whetstone_e2e::http_with(
            &server.addr,
            "POST",
            "/api/predict/signed",
            &[
                ("Authorization", auth.as_str()),
                ("Date", date.as_str()),
                ("Content-MD5", md5.as_str()),
            ],
            body.as_bytes(),
        )
    };
    let captured = sign();
    assert_eq!(send(&captured).0, 200);
    assert_eq!(
        send(&captured).0,
        200,
        "a repeat within the second is a client's, not a replay"
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (status, answer) = send(&captured);
    assert_eq!(status, 401, "a replay was answered: {answer}");
    assert!(answer.contains("already used"), "{answer}");
    assert_eq!(send(&sign()).0, 200);
}

/// Opens a WebSocket on `path` (a log stream) with `token` as bearer, by
/// hand: the handshake, then the server's unmasked frames.
fn open_stream(
    server: &Server,
    path: &str,
    token: Option<&str>,
) -> std::io::BufReader<std::net::TcpStream> {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n",
        server.addr
    )
    .unwrap();
    let mut head = std::io::BufReader::new(s.try_clone().unwrap());
    let mut status = String::new();
    head.read_line(&mut status).unwrap();
    assert!(status.contains(" 101 "), "{path}: {status}");
    loop {
        let mut line = String::new();
        head.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    // Frames that came with the handshake stay in the reader's buffer.
    head
}

/// Reads frames for up to `secs`: `Some` when the stream closed (with the
/// close frame's code, if one came), `None` when it was still open.
fn closed_within(mut s: std::io::BufReader<std::net::TcpStream>, secs: u64) -> Option<Option<u16>> {
    use std::io::Read;
    s.get_ref()
        .set_read_timeout(Some(std::time::Duration::from_secs(secs)))
        .unwrap();
    loop {
        let mut h = [0u8; 2];
        match s.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Some(None),
            Err(_) => return None,
        }
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                s.read_exact(&mut b).unwrap();
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                s.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).unwrap();
        if h[0] & 0x0f == 0x8 {
            return Some(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])));
        }
    }
}

/// Revoking an API token or a share link closes the log streams opened
/// with it at once, instead of leaving them to run until the deploy ends.
#[test]
fn revoking_a_token_or_a_share_link_closes_its_open_streams() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, &[]);
    // No worker can claim a job: the deploy stays queued, its log open.
    sqlite(
        &data.join("whetstone.db"),
        "CREATE TRIGGER no_claims BEFORE UPDATE ON jobs WHEN NEW.state = 'running'
           BEGIN SELECT RAISE(ABORT, 'injected: no claims'); END;",
    );
    std::fs::write(
        work.path().join("mlp.onnx"),
        optimizer::onnx_build::mlp(4, 16, 3),
    )
    .unwrap();
    let mut cli = start_create(
        &server,
        work.path(),
        serde_json::json!({"name": "queued", "model_path": "mlp.onnx", "processor": "onnx_cpu"}),
    );
    let d = poll(&server, "/api/v2/services/queued", 60, |d| {
        d["status"] == "Creating"
    });
    assert_eq!(d["status"], "Creating", "{d}");
    let _ = cli.kill();
    let _ = cli.wait();

    let (s, t) = server.admin(
        "POST",
        "/api/v2/users/admin/tokens",
        br#"{"name":"stream"}"#,
    );
    assert_eq!(s, 201, "{t}");
    let (id, token) = (t["id"].as_i64().unwrap(), t["token"].as_str().unwrap());
    let stream = "/api/v2/services/queued/logs/stream";
    let kept = open_stream(&server, stream, Some(token));
    let ws = open_stream(&server, stream, Some(token));
    let (s, _) = server.admin("DELETE", &format!("/api/v2/users/admin/tokens/{id}"), b"");
    assert_eq!(s, 204);
    assert_eq!(closed_within(ws, 3), Some(Some(1008)));
    assert_eq!(closed_within(kept, 3), Some(Some(1008)));
    assert_eq!(
        server.http("GET", "/api/v2/services", Some(token), b"").0,
        401
    );

    let (s, link) = server.admin("POST", "/api/v2/services/queued/shares", b"{}");
    assert_eq!(s, 201, "{link}");
    let share = link["token"].as_str().unwrap();
    let ws = open_stream(
        &server,
        &format!("/api/v2/shared/{share}/logs/stream"),
        None,
    );
    let other = open_stream(&server, stream, Some(&server.admin_token()));
    let (s, _) = server.admin(
        "DELETE",
        &format!("/api/v2/services/queued/shares/{share}"),
        b"",
    );
    assert_eq!(s, 204);
    assert_eq!(closed_within(ws, 3), Some(Some(1008)));
    // A stream whose access holds is not closed by another's revocation.
    assert_eq!(
        closed_within(other, 2),
        None,
        "the admin's stream was closed too"
    );
}

/// `whet token rotate` gives a service a new prediction token and the old
/// one is refused at once; a token in a modify's config becomes the
/// service's at once too. The instances are not restarted for either.
#[test]
fn a_rotated_token_is_the_only_one_taken() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let first = whetstone_e2e::create_mlp(&server, work.path(), "rot", serde_json::json!({}));
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}).to_string();
    let predict = |t: &str| {
        server
            .http("POST", "/api/predict/rot", Some(t), body.as_bytes())
            .0
    };
    assert_eq!(predict(&first), 200);
    let runners = |server: &Server| {
        let (_, d) = server.admin("GET", "/api/v2/services/rot", b"");
        d["runners"].clone()
    };
    let before = runners(&server);

    let out = server.cli(&["token", "rotate", "rot"]).output().unwrap();
    succeeded(&out);
    let second = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_ne!(second, first);
    assert_eq!(predict(&first), 401, "the old token still works");
    assert_eq!(predict(&second), 200);
    let (_, d) = server.admin("GET", "/api/v2/services/rot", b"");
    assert_eq!(d["token"], second.as_str());
    assert_eq!(
        runners(&server),
        before,
        "the rotation restarted the runners"
    );
    assert!(before[0]["pid"].is_u64(), "{before}");

    // A modify that names a token: taken at once, the rotated one refused.
    let chosen = "a-token-of-my-own-choosing-42";
    let cfg = work.path().join("rot-token.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "name": "rot", "model_path": "mlp.onnx", "processor": "onnx_cpu",
            "metadata": { "instance": 1 }, "token": chosen,
        })
        .to_string(),
    )
    .unwrap();
    let out = server
        .cli(&["modify", "rot", "-s", cfg.to_str().unwrap()])
        .current_dir(work.path())
        .output()
        .unwrap();
    succeeded(&out);
    assert_eq!(predict(&second), 401);
    assert_eq!(predict(chosen), 200);

    // Only a deployer of the service's team may rotate: a stranger's call
    // is a 404, a missing token a 401.
    let (s, _) = server.http("POST", "/api/v2/services/rot/token", None, b"");
    assert_eq!(s, 401);
    let (s, _) = server.admin("POST", "/api/v2/services/nope/token", b"");
    assert_eq!(s, 404);
    assert_eq!(predict(chosen), 200);
}

/// `whet create` of an MLP with `hidden` units as service `name` (its own
/// model file); the CLI's success and output.
fn create_sized(
    server: &Server,
    work: &std::path::Path,
    name: &str,
    hidden: usize,
) -> (bool, String) {
    std::fs::write(
        work.join(format!("{name}.onnx")),
        optimizer::onnx_build::mlp(4, hidden, 3),
    )
    .unwrap();
    whetstone_e2e::create(
        server,
        work,
        &serde_json::json!({"name": name, "model_path": format!("{name}.onnx"), "processor": "onnx_cpu"}),
    )
}

/// `whet gc` collects what nothing uses — the upload and artifact of a
/// deleted service, an upload no config names, a build folder a crash left —
/// keeps what a service uses, and trims each log to `--log-max-lines`.
#[test]
fn gc_collects_what_nothing_uses_and_keeps_what_serves() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, &["--log-max-lines", "3"]);
    let (ok, log) = create_sized(&server, work.path(), "kept", 16);
    assert!(ok, "{log}");
    let (ok, log) = create_sized(&server, work.path(), "gone", 8);
    assert!(ok, "{log}");
    let (_, gone) = server.admin("GET", "/api/v2/services/gone", b"");
    let gone_artifact = gone["artifact"].as_str().unwrap().to_string();
    let (s, _) = server.admin("DELETE", "/api/v2/services/gone", b"");
    assert_eq!(s, 204);
    // An upload no create ever named.
    let (s, up) = server.admin(
        "POST",
        "/api/v2/uploads?filename=stray.onnx",
        &optimizer::onnx_build::mlp(4, 4, 3),
    );
    assert_eq!(s, 200, "{up}");
    let stray = up["sha256"].as_str().unwrap().to_string();
    // A build folder a crash left behind, two days old.
    let abandoned = data.join("artifacts/.tmp-crashed-0123456789abcdef");
    std::fs::create_dir_all(&abandoned).unwrap();
    std::fs::write(abandoned.join("model.onnx"), b"half written").unwrap();
    let aged = Command::new("touch")
        .args(["-d", "2 days ago"])
        .arg(&abandoned)
        .status()
        .unwrap();
    assert!(aged.success());

    // Within the grace period nothing is collected.
    let out = server.cli(&["gc"]).output().unwrap();
    let said = succeeded(&out);
    assert!(
        said.contains("artifacts/.tmp-crashed"),
        "the abandoned build is old enough: {said}"
    );
    assert!(!said.contains(&stray), "{said}");
    assert!(data.join("uploads").join(&stray).exists());

    let out = server.cli(&["gc", "--grace", "0s"]).output().unwrap();
    let said = succeeded(&out);
    eprintln!("{said}");
    assert!(said.contains(&format!("uploads/{stray}")), "{said}");
    assert!(
        said.contains(&format!("artifacts/{gone_artifact}")),
        "{said}"
    );
    assert!(!data.join("artifacts").join(&gone_artifact).exists());
    assert!(!abandoned.exists());

    // What serves is kept, and still serves after a restart of its runner
    // would need it: the artifact and the upload its config names.
    let (_, kept) = server.admin("GET", "/api/v2/services/kept", b"");
    let kept_artifact = kept["artifact"].as_str().unwrap();
    assert!(data.join("artifacts").join(kept_artifact).exists());
    assert!(!said.contains(kept_artifact), "{said}");
    let path = kept["config"]["model_path"].as_str().unwrap();
    let kept_upload = path
        .trim_start_matches("upload://")
        .split('/')
        .next()
        .unwrap();
    assert!(data.join("uploads").join(kept_upload).exists(), "{path}");
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}).to_string();
    let token = kept["token"].as_str().unwrap();
    assert_eq!(
        server
            .http("POST", "/api/predict/kept", Some(token), body.as_bytes())
            .0,
        200
    );
    // A redeploy resolves the upload again.
    let out = server.cli(&["scale", "kept", "2"]).output().unwrap();
    succeeded(&out);
    // The log keeps its last 3 lines.
    let (_, page) = server.admin("GET", "/api/v2/services/kept/logs", b"");
    assert!(page["lines"].as_array().unwrap().len() > 3, "{page}");
    let out = server.cli(&["gc", "--grace", "0s"]).output().unwrap();
    assert!(out.status.success());
    let (_, page) = server.admin("GET", "/api/v2/services/kept/logs", b"");
    assert_eq!(page["lines"].as_array().unwrap().len(), 3, "{page}");

    // Only a site admin collects.
    let (s, _) = server.http("POST", "/api/v2/gc", None, b"");
    assert_eq!(s, 401);
}

/// A team past its storage quota (`--team-quota-mib`) is refused a create
/// with a 413 that says so; what it has keeps serving.
#[test]
fn a_team_past_its_storage_quota_is_refused_a_create() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &["--team-quota-mib", "1"]);
    let (ok, log) = create_sized(&server, work.path(), "small", 16);
    assert!(ok, "{log}");
    // 4 × 131072 float weights: 2 MiB of model.
    let (ok, log) = create_sized(&server, work.path(), "large", 131_072);
    assert!(!ok, "a create past the quota went through: {log}");
    assert!(
        log.contains("quota of 1 MiB") && log.contains("team 'default'"),
        "{log}"
    );
    let (s, _) = server.admin("GET", "/api/v2/services/large", b"");
    assert_eq!(s, 404);
    let (s, d) = server.admin("GET", "/api/v2/services/small", b"");
    assert_eq!((s, d["status"].as_str()), (200, Some("Running")), "{d}");
}

/// SIGTERM drains: the server takes no new connection and says it is not
/// ready, answers the request it is in the middle of, and exits cleanly.
#[test]
fn sigterm_answers_the_requests_in_flight_then_exits() {
    use std::io::{Read, Write};
    let work = tempfile::tempdir().unwrap();
    let mut server = Server::start(&work.path().join("data"), &[]);
    let token = whetstone_e2e::create_mlp(&server, work.path(), "drain", serde_json::json!({}));
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}).to_string();
    // A request half sent when the signal comes.
    let mut inflight = std::net::TcpStream::connect(&server.addr).unwrap();
    write!(
        inflight,
        "POST /api/predict/drain HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..body.len() / 2]
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // No new connections once it drains.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(&server.addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The request in flight is answered.
    inflight
        .write_all(&body.as_bytes()[body.len() / 2..])
        .unwrap();
    let mut answer = String::new();
    inflight
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let _ = inflight.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"outputs\""), "{answer}");
    // And the server exits on its own, cleanly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not exit"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    let _ = &mut server;
}

/// A client that sends a body too large (or with a wrong token) whole,
/// without `Expect: 100-continue`, before it reads — Python's `requests` —
/// reads the 413 (or 401) instead of a connection reset: the server throws
/// the body away after it answers.
#[test]
fn a_refused_large_body_is_answered_not_reset() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let token = whetstone_e2e::create_mlp(&server, work.path(), "big", serde_json::json!({}));
    let script = r#"
import sys, requests
url, token = sys.argv[1], sys.argv[2]
for auth in (token, "wrong-token"):
    r = requests.post(url, data=b"0" * (64 << 20), headers={"Authorization": auth})
    print(r.status_code, r.json()["error"][:60])
# An upload refused before the handler runs (no management token).
r = requests.post(url.split("/api/")[0] + "/api/v2/uploads?filename=m.onnx", data=b"0" * (64 << 20))
print(r.status_code, r.json()["error"][:60])
"#;
    let out = Command::new(whetstone_e2e::clients_python())
        .args(["-c", script])
        .arg(format!("{}/api/predict/big", server.url()))
        .arg(&token)
        .output()
        .unwrap();
    let said = succeeded(&out);
    let codes: Vec<&str> = said.lines().map(|l| &l[..3]).collect();
    assert_eq!(codes, ["413", "401", "401"], "{said}");
    assert!(said.contains("accepts request bodies of at most"), "{said}");
}

/// A private CA (openssl) and a certificate it signed for 127.0.0.1 and
/// localhost: (CA certificate, server certificate chain, server key).
fn private_ca(
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let (ca, ca_key, key, csr, leaf, ext) = (
        p("ca.pem"),
        p("ca.key"),
        p("server.key"),
        p("server.csr"),
        p("server.pem"),
        p("ext.cnf"),
    );
    let s = |p: &std::path::PathBuf| p.to_str().unwrap().to_string();
    run(&[
        &[
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} CA"),
        ][..],
        &ec,
        &["-keyout", &s(&ca_key), "-out", &s(&ca)],
    ]
    .concat());
    run(&[
        &["req", "-subj", "/CN=localhost"][..],
        &ec,
        &["-keyout", &s(&key), "-out", &s(&csr)],
    ]
    .concat());
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        &s(&csr),
        "-CA",
        &s(&ca),
        "-CAkey",
        &s(&ca_key),
        "-CAcreateserial",
        "-extfile",
        &s(&ext),
        "-out",
        &s(&leaf),
    ]);
    // The chain a server presents: its certificate, then the CA's.
    let chain = [std::fs::read(&leaf).unwrap(), std::fs::read(&ca).unwrap()].concat();
    std::fs::write(&leaf, chain).unwrap();
    (ca, leaf, key)
}

/// `whet serve --tls-cert/--tls-key` serves HTTPS only, and the CLI
/// verifies it: refused without the certificate in its trust, working with
/// `--ca-cert` (a create that follows its log over wss:// included), and
/// third-party clients (Python's requests; Triton's gRPC client on
/// `--grpc-addr`, which speaks TLS too) predict over it.
#[test]
fn tls_is_served_and_the_cli_verifies_it() {
    let work = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(work.path(), "ours");
    let (other, _, _) = private_ca(work.path(), "theirs");
    let server = Server::start(
        &work.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--grpc-addr",
            "127.0.0.1:0",
        ],
    );
    assert_eq!(server.scheme, "https");
    // Plain HTTP on the TLS port gets no answer.
    let (s, _, _) = std::panic::catch_unwind(|| {
        whetstone_e2e::http_head(&server.addr, "GET", "/healthz", &[], b"")
    })
    .unwrap_or((0, vec![], String::new()));
    assert_ne!(s, 200, "plain HTTP answered on the TLS port");

    // Not trusted: refused, saying why.
    let out = server.cli(&["list"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an untrusted certificate was accepted"
    );
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let out = server
        .cli(&["list", "--ca-cert", other.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "another certificate vouched for this one"
    );

    // Trusted: a create that follows its deploy log over wss://.
    std::fs::write(
        work.path().join("mlp.onnx"),
        optimizer::onnx_build::mlp(4, 16, 3),
    )
    .unwrap();
    let cfg = work.path().join("tls.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "name": "tls", "model_path": "mlp.onnx", "processor": "onnx_cpu",
            "metadata": { "instance": 1, "enable_grpc": true },
        })
        .to_string(),
    )
    .unwrap();
    let out = server
        .cli(&["create", cfg.to_str().unwrap()])
        .env("WHET_CA_CERT", &ca)
        .current_dir(work.path())
        .output()
        .unwrap();
    let said = succeeded(&out);
    assert!(
        said.contains("Service is running"),
        "the log was not followed: {said}"
    );
    let out = server
        .cli(&["desc", "tls", "--json", "--ca-cert", ca.to_str().unwrap()])
        .output()
        .unwrap();
    succeeded(&out);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let script = r#"
import sys, requests
url, token, cert = sys.argv[1:4]
body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}
r = requests.post(url, json=body, headers={"Authorization": token}, verify=cert)
print(r.status_code, r.json()["outputs"][0]["shape"])
"#;
    let out = Command::new(whetstone_e2e::clients_python())
        .args(["-c", script])
        .arg(format!("{}/api/predict/tls", server.url()))
        .arg(d["token"].as_str().unwrap())
        .arg(&ca)
        .output()
        .unwrap();
    let said = succeeded(&out);
    assert!(said.starts_with("200 [1, 3]"), "{said}");

    // gRPC over TLS: trusted with the CA, refused without it.
    let script = r#"
import sys, numpy as np, tritonclient.grpc as g
addr, token, cert = sys.argv[1:4]
x = g.InferInput("x", [1, 4], "FP32")
x.set_data_from_numpy(np.array([[0.1, 0.2, 0.3, 0.4]], dtype=np.float32))
auth = {"authorization": f"Bearer {token}"}
c = g.InferenceServerClient(addr, ssl=True, root_certificates=cert)
print("tls", c.infer("tls", [x], headers=auth).as_numpy("y").shape)
try:
    g.InferenceServerClient(addr, ssl=True).infer("tls", [x], headers=auth, client_timeout=10)
    print("untrusted: answered")
except Exception as e:
    print("untrusted: refused", e.status())
try:
    g.InferenceServerClient(addr).infer("tls", [x], headers=auth, client_timeout=10)
    print("plaintext: answered")
except Exception as e:
    print("plaintext: refused", e.status())
"#;
    let out = Command::new(whetstone_e2e::clients_python())
        .args(["-c", script])
        .arg(server.grpc_addr.as_deref().expect("a gRPC address"))
        .arg(d["token"].as_str().unwrap())
        .arg(&ca)
        .output()
        .unwrap();
    let said = succeeded(&out);
    assert!(said.contains("tls (1, 3)"), "{said}");
    assert!(
        said.contains("untrusted: refused StatusCode.UNAVAILABLE"),
        "{said}"
    );
    assert!(
        said.contains("plaintext: refused StatusCode.UNAVAILABLE"),
        "{said}"
    );
}

/// A certificate or key that cannot be used stops `whet serve` at once,
/// naming the flag and the file.
#[test]
fn a_bad_tls_file_is_named_at_start() {
    let work = tempfile::tempdir().unwrap();
    let (_, cert, _) = private_ca(work.path(), "ours");
    let junk = work.path().join("junk.key");
    std::fs::write(&junk, "not a key").unwrap();
    let out = Command::new(whet_bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(work.path().join("data"))
        .args([
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            junk.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--tls-key") && err.contains("junk.key"),
        "{err}"
    );
    // One without the other is a usage error too.
    let out = Command::new(whet_bin())
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A `file://` model is checked again when the deploy reads it: a file
/// replaced, after the create checked it, by a link to a model outside the
/// model roots is not read, and the deploy fails saying so.
#[test]
fn a_file_model_swapped_for_a_link_outside_the_roots_is_not_read() {
    let work = tempfile::tempdir().unwrap();
    let (root, outside) = (work.path().join("root"), work.path().join("outside"));
    std::fs::create_dir_all(root.join("m")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        root.join("m/model.onnx"),
        optimizer::onnx_build::mlp(4, 16, 3),
    )
    .unwrap();
    std::fs::write(
        outside.join("secret.onnx"),
        optimizer::onnx_build::mlp(4, 8, 3),
    )
    .unwrap();
    let data = work.path().join("data");
    let server = Server::start(&data, &["--model-root", root.to_str().unwrap()]);
    // The deploy waits in the queue while the file is swapped.
    sqlite(
        &data.join("whetstone.db"),
        "CREATE TRIGGER no_claims BEFORE UPDATE ON jobs WHEN NEW.state = 'running'
           BEGIN SELECT RAISE(ABORT, 'injected: no claims'); END;",
    );
    let model = format!("file://{}", root.join("m/model.onnx").display());
    let mut cli = start_create(
        &server,
        work.path(),
        serde_json::json!({"name": "swap", "model_path": model, "processor": "onnx_cpu"}),
    );
    let d = poll(&server, "/api/v2/services/swap", 60, |d| {
        d["status"] == "Creating"
    });
    assert_eq!(d["status"], "Creating", "{d}");
    std::fs::remove_file(root.join("m/model.onnx")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.onnx"), root.join("m/model.onnx")).unwrap();
    sqlite(&data.join("whetstone.db"), "DROP TRIGGER no_claims;");
    let d = poll(&server, "/api/v2/services/swap", 120, |d| {
        d["status"] == "Failed" || d["status"] == "Running"
    });
    let _ = cli.kill();
    let _ = cli.wait();
    assert_eq!(
        d["status"], "Failed",
        "a model outside the roots was deployed: {d}"
    );
    let message = d["message"].as_str().unwrap_or_default();
    assert!(message.contains("outside the allowed model roots"), "{d}");
}

/// Prediction tokens are sealed at rest: the database holds no token in
/// the clear (a folder of an older server has its tokens sealed at the
/// next start, and they keep working), and a server started with another
/// secret key says so instead of answering with tokens it cannot read.
#[test]
fn prediction_tokens_are_sealed_at_rest() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let db = data.join("whetstone.db");
    let mut server = Server::start(&data, &[]);
    let token = whetstone_e2e::create_mlp(&server, work.path(), "sealed", serde_json::json!({}));
    server.kill();
    let dump = |sql: &str| {
        let out = Command::new("python3")
            .args(["-c", "import sqlite3, sys; print('\\n'.join(str(r[0]) for r in sqlite3.connect(sys.argv[1]).execute(sys.argv[2])))"])
            .arg(&db)
            .arg(sql)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stored = dump("SELECT token FROM services");
    assert!(
        stored.starts_with("sealed1:") && !stored.contains(&token),
        "{stored}"
    );

    // As an older server left it: the token in the clear, and in the config.
    let legacy = "a-legacy-token-in-the-clear-1";
    sqlite(
        &db,
        &format!(
            "UPDATE services SET token = '{legacy}', config = json_set(config, '$.token', '{legacy}');"
        ),
    );
    let server = Server::start(&data, &[]);
    let stored = dump("SELECT token || ' ' || config FROM services");
    assert!(
        stored.starts_with("sealed1:") && !stored.contains(legacy),
        "{stored}"
    );
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}).to_string();
    assert_eq!(
        server
            .http("POST", "/api/predict/sealed", Some(legacy), body.as_bytes())
            .0,
        200
    );
    drop(server);

    // Another key: the server does not start, and says why.
    let other = work.path().join("other-key");
    std::fs::write(&other, "00".repeat(32)).unwrap();
    let out = Command::new(whet_bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(&data)
        .args(["--secret-key-file", other.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("another secret key") && err.contains("--secret-key-file"),
        "{err}"
    );
}
