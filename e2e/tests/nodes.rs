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
