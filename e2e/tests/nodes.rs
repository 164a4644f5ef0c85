//! Several `whet serve` nodes sharing one real PostgreSQL: a node killed in
//! the middle of a deploy, and another node finishing it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use whetstone_e2e::postgres::Postgres;
use whetstone_e2e::{minilm_config, minilm_folder, zoo, Server};

/// Node A claims MiniLM's o1 deploy and is SIGKILLed while it works; node B,
/// on the same database and data folder, takes the deploy over once A's
/// lease runs out, resumes it at its recorded stage, and serves it. The log
/// says what happened, and there is one artifact.
#[test]
fn a_deploy_survives_the_node_running_it() {
    let zoo = zoo();
    let pg = Postgres::start();
    let url = pg.database("whet");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let args = ["--database", url.as_str(), "--job-lease", "3s"];
    let mut a = Server::start(&data, &args);
    minilm_folder(&zoo, &work.path().join("m"));
    let cfg = work.path().join("svc.json");
    std::fs::write(&cfg, minilm_config("failover", "m")).unwrap();
    // `whet create` follows the log from node A; it ends when A dies.
    let mut create = a
        .cli(&["create", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stage = |s: &Server| {
        let (code, v) = s.admin("GET", "/api/v2/services/failover", b"");
        // 404 until `whet create` has uploaded the model and created it.
        assert!(code == 200 || code == 404, "{code} {v}");
        (
            v["status"].as_str().unwrap_or_default().to_string(),
            v["stage"].as_str().unwrap_or_default().to_string(),
        )
    };
    // Kill A once the deploy is past fetching the model: its plugin stage
    // (the optimizer, tens of seconds for MiniLM) is under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, stage) = stage(&a);
        assert_ne!(
            status, "Running",
            "the deploy ended before node A could be killed"
        );
        assert_ne!(status, "Failed", "the deploy failed on node A");
        if stage == "plugin" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no plugin stage on node A: {status} {stage}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // B joins while A works: a second node, idle, on the same database.
    let b = Server::start(&data, &args);
    assert_eq!(stage(&b).1, "plugin", "node B sees the deploy A runs");
    a.kill();
    let killed = Instant::now();
    let _ = create.wait();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (status, stage) = stage(&b);
        if status == "Running" {
            break;
        }
        assert_ne!(status, "Failed", "the deploy failed after the takeover");
        assert!(
            Instant::now() < deadline,
            "node B did not finish the deploy: {status} {stage}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let failover = killed.elapsed();
    eprintln!("node A killed -> deploy Running on node B: {failover:.1?}");

    let out = b.cli(&["logs", "failover"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("stopped renewing its lease")
            && log.contains("takes the deploy over: resuming the deploy at stage plugin"),
        "{log}"
    );
    assert!(log.contains("[OK] Service is running"), "{log}");
    // One artifact for the one key: A's cut-short build left no second one.
    let artifacts: Vec<_> = std::fs::read_dir(data.join("artifacts"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");

    let (_, v) = b.admin("GET", "/api/v2/services/failover", b"");
    let token = v["token"].as_str().unwrap().to_string();
    let body = serde_json::json!({"inputs": [
        {"name": "input_ids", "shape": [1, 128], "datatype": "INT64", "data": vec![101i64; 128]},
        {"name": "attention_mask", "shape": [1, 128], "datatype": "INT64", "data": vec![1i64; 128]},
        {"name": "token_type_ids", "shape": [1, 128], "datatype": "INT64", "data": vec![0i64; 128]}
    ]})
    .to_string();
    let (code, answer) = b.http(
        "POST",
        "/api/predict/failover",
        Some(&token),
        body.as_bytes(),
    );
    assert_eq!(code, 200, "{answer}");
}

fn example(server: &Server, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let out = server
        .cli(&["example-model", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg_path = dir.join("service.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["name"] = serde_json::json!(name);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    cfg_path
}

fn cli_ok(server: &Server, args: &[&str]) -> String {
    let out = server.cli(args).output().unwrap();
    assert!(
        out.status.success(),
        "whet {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const REQUEST: &str =
    r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0.1,0.2,0.3,0.4]}]}"#;

fn predict(server: &Server, name: &str) -> (u16, String) {
    let (s, v) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
    assert_eq!(s, 200, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    server.http(
        "POST",
        &format!("/api/predict/{name}"),
        Some(&token),
        REQUEST.as_bytes(),
    )
}

/// Node B has a data folder of its own: it serves what node A built by
/// fetching the artifact from the shared store and checking its seal.
/// Returns node B with what it runs on (dropped in this order: the node,
/// then PostgreSQL, then the folders).
fn second_node_serves_from_the_shared_store(
    store: &str,
    env: &[(String, String)],
) -> (Server, Postgres, tempfile::TempDir) {
    let pg = Postgres::start();
    let url = pg.database("whet");
    let work = tempfile::tempdir().unwrap();
    let args = ["--database", url.as_str(), "--store", store];
    let a = Server::start_with_env(&work.path().join("a"), &args, env);
    let cfg = example(&a, &work.path().join("m"), "shared");
    cli_ok(&a, &["create", cfg.to_str().unwrap()]);
    let (s, on_a) = predict(&a, "shared");
    assert_eq!(s, 200, "{on_a}");

    let b_data = work.path().join("b");
    std::fs::create_dir_all(&b_data).unwrap();
    // B's CLI finds the admin token where A wrote it.
    std::fs::copy(
        work.path().join("a/admin-token"),
        b_data.join("admin-token"),
    )
    .unwrap();
    let b = Server::start_with_env(&b_data, &args, env);
    let (s, on_b) = predict(&b, "shared");
    assert_eq!((s, &on_b), (200, &on_a));
    let fetched: Vec<_> = std::fs::read_dir(b_data.join("artifacts"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert!(!fetched[0].starts_with(".tmp-"), "{fetched:?}");
    drop(a);
    (b, pg, work)
}

#[test]
fn nodes_share_artifacts_through_s3() {
    let moto = whetstone_e2e::moto::Moto::start();
    moto.create_bucket("whet");
    let nodes = second_node_serves_from_the_shared_store("s3://whet/cluster-1", &moto.env());
    drop(nodes);
    let keys = moto.keys("whet", "cluster-1/artifacts/");
    assert!(
        keys.iter().any(|k| k.ends_with("/checksums.json"))
            && keys.iter().any(|k| k.ends_with("/artifact.json")),
        "{keys:?}"
    );
}

#[test]
fn nodes_share_artifacts_through_a_folder() {
    let shared = tempfile::tempdir().unwrap();
    let _b = second_node_serves_from_the_shared_store(shared.path().to_str().unwrap(), &[]);
    let published = std::fs::read_dir(shared.path().join("artifacts"))
        .unwrap()
        .count();
    assert_eq!(published, 1);
}

/// The S3 endpoint down during a deploy: a clear error that names the
/// store, no artifact recorded; once it is back, a retry deploys.
#[test]
fn a_store_that_is_down_fails_the_deploy_cleanly_and_a_retry_works() {
    let mut moto = whetstone_e2e::moto::Moto::start();
    moto.create_bucket("whet");
    let pg = Postgres::start();
    let url = pg.database("whet");
    let work = tempfile::tempdir().unwrap();
    let args = ["--database", url.as_str(), "--store", "s3://whet/p"];
    let a = Server::start_with_env(&work.path().join("a"), &args, &moto.env());
    let cfg = example(&a, &work.path().join("m"), "flaky");
    moto.stop_server();
    let out = a.cli(&["create", cfg.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let (_, v) = a.admin("GET", "/api/v2/services/flaky", b"");
    assert_eq!(v["status"], "Failed", "{v}");
    let msg = v["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("s3://whet/p"), "{msg}");
    assert!(v["artifact"].is_null(), "{v}");

    moto.start_server();
    moto.create_bucket("whet");
    cli_ok(&a, &["modify", "flaky", "-s", cfg.to_str().unwrap()]);
    let (s, body) = predict(&a, "flaky");
    assert_eq!(s, 200, "{body}");
    assert!(!moto.keys("whet", "p/artifacts/").is_empty());
}
