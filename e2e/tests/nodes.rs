//! Several `whet serve` nodes sharing one real PostgreSQL: a node killed in
//! the middle of a deploy, and another node finishing it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use whetstone_e2e::postgres::Postgres;
use whetstone_e2e::{example, minilm_config, minilm_folder, zoo, Server};

/// Node A claims MiniLM's o1 deploy and is SIGKILLed while it works; node B,
/// on the same database and data folder, takes the deploy over once A's
/// lease runs out, resumes it at its recorded stage, and serves it. The log
/// says what happened, and there is one artifact.
#[test]
fn a_deploy_survives_the_node_running_it() {
    let pg = Postgres::start();
    let url = pg.database("whet");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let args = ["--database", url.as_str(), "--job-lease", "3s"];
    let mut a = Server::start(&data, &args);
    // `whet create` follows the log from node A; it ends when A dies. A is
    // killed once the deploy is past fetching the model.
    let mut create = minilm_deploy_in_plugin_stage(&a, work.path(), "failover");
    let stage = |s: &Server| {
        let (code, v) = s.admin("GET", "/api/v2/services/failover", b"");
        assert_eq!(code, 200, "{v}");
        (
            v["status"].as_str().unwrap_or_default().to_string(),
            v["stage"].as_str().unwrap_or_default().to_string(),
        )
    };
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

    let (code, answer) = minilm_predict(&b, "failover");
    assert_eq!(code, 200, "{answer}");
}

/// Starts MiniLM's o1 deploy as `name` through `server` (`whet create`,
/// following the log in the background) and returns once the deploy is in
/// its plugin stage: the optimizer, tens of seconds.
fn minilm_deploy_in_plugin_stage(
    server: &Server,
    work: &std::path::Path,
    name: &str,
) -> std::process::Child {
    let folder = work.join(format!("{name}-model"));
    minilm_folder(&zoo(), &folder);
    let cfg = work.join(format!("{name}.json"));
    std::fs::write(&cfg, minilm_config(name, &format!("{name}-model"))).unwrap();
    let mut create = server
        .cli(&["create", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if let Err(e) = plugin_stage_reached(server, name) {
        let _ = create.kill();
        let _ = create.wait();
        panic!("{e}");
    }
    create
}

fn plugin_stage_reached(server: &Server, name: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, v) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
        // 404 until `whet create` has uploaded the model and created it.
        if code != 200 && code != 404 {
            return Err(format!("{code} {v}"));
        }
        if v["status"] == "Running" || v["status"] == "Failed" {
            return Err(format!(
                "the deploy ended before its plugin stage was seen: {v}"
            ));
        }
        if v["stage"] == "plugin" {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("no plugin stage: {v}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn minilm_predict(server: &Server, name: &str) -> (u16, String) {
    let (_, v) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
    let token = v["token"].as_str().unwrap().to_string();
    let body = serde_json::json!({"inputs": [
        {"name": "input_ids", "shape": [1, 128], "datatype": "INT64", "data": vec![101i64; 128]},
        {"name": "attention_mask", "shape": [1, 128], "datatype": "INT64", "data": vec![1i64; 128]},
        {"name": "token_type_ids", "shape": [1, 128], "datatype": "INT64", "data": vec![0i64; 128]}
    ]})
    .to_string();
    server.http(
        "POST",
        &format!("/api/predict/{name}"),
        Some(&token),
        body.as_bytes(),
    )
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

/// The node that answered `name`'s prediction through `server` (its
/// `x-whet-node` header), and the status and body of the answer.
fn served_by(server: &Server, name: &str) -> (u16, String, String) {
    let (s, v) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
    assert_eq!(s, 200, "{v}");
    let auth = v["token"].as_str().unwrap().to_string();
    let (status, head, body) = whetstone_e2e::http_head(
        &server.addr,
        "POST",
        &format!("/api/predict/{name}"),
        &[("Authorization", &auth)],
        REQUEST.as_bytes(),
    );
    let node = head
        .iter()
        .find_map(|l| l.strip_prefix("x-whet-node: "))
        .unwrap_or_default()
        .to_string();
    (status, node, body)
}

/// Two nodes on one PostgreSQL sharing a data folder (PostgreSQL first, so
/// that it is dropped after them).
fn two_nodes() -> (Postgres, tempfile::TempDir, Server, Server) {
    let pg = Postgres::start();
    let url = pg.database("whet");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let args = ["--database", url.as_str()];
    let a = Server::start(&data, &args);
    let b = Server::start(&data, &args);
    (pg, work, a, b)
}

/// Polls `what` (at most `secs` seconds) until it holds; how long it took.
fn until(secs: u64, what: &str, mut holds: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !holds() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what} within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t.elapsed()
}

/// Node A deploys a one-instance service, placed on A; node B, with a data
/// folder of its own, forwards its predictions to A. A is SIGKILLed: within
/// the lease, B places the instance on itself, fetches the artifact from
/// the shared store (checking its seal) and serves it with the same answer.
/// Returns node B with what it runs on (dropped in this order: the node,
/// then PostgreSQL, then the folders).
fn second_node_serves_from_the_shared_store(
    store: &str,
    env: &[(String, String)],
) -> (Server, Postgres, tempfile::TempDir) {
    let pg = Postgres::start();
    let url = pg.database("whet");
    let work = tempfile::tempdir().unwrap();
    let args = [
        "--database",
        url.as_str(),
        "--store",
        store,
        "--job-lease",
        "3s",
    ];
    let mut a = Server::start_with_env(&work.path().join("a"), &args, env);
    let cfg = example(&a, &work.path().join("m"), "shared");
    cli_ok(&a, &["create", cfg.to_str().unwrap()]);
    let (s, node_a, on_a) = served_by(&a, "shared");
    assert_eq!(s, 200, "{on_a}");
    assert!(!node_a.is_empty(), "A answers itself");

    let b_data = work.path().join("b");
    whetstone_e2e::second_data_dir(&work.path().join("a"), &b_data);
    let b = Server::start_with_env(&b_data, &args, env);
    let (s, by, on_b) = served_by(&b, "shared");
    assert_eq!((s, &by, &on_b), (200, &node_a, &on_a), "B forwards to A");
    let held = std::fs::read_dir(b_data.join("artifacts")).map_or(0, |d| d.count());
    assert_eq!(held, 0, "B fetched nothing yet");

    a.kill();
    let replaced = until(30, "node B serving the instance itself", || {
        let (s, by, body) = served_by(&b, "shared");
        s == 200 && by != node_a && body == on_a
    });
    eprintln!("node A killed -> its instance serving on node B: {replaced:.1?} (lease 3 s)");
    let log = log_text(&b, "shared");
    assert!(
        log.contains(&format!(
            "[WARN] Node {node_a} stopped heartbeating; instance 0 is placed again on node"
        )),
        "{log}"
    );
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

/// Two nodes: a two-instance service is placed one instance on each; scaled
/// to one through node B, one node's instance goes and both nodes answer
/// from the other; stopped through node B, the last instance goes too —
/// all without a restart, by NOTIFY.
#[test]
fn scale_and_stop_through_one_node_reach_the_other() {
    let (_pg, work, a, b) = two_nodes();
    let cfg = example(&a, &work.path().join("m"), "spread");
    whetstone_e2e::set_instances(&cfg, 2);
    cli_ok(&a, &["create", cfg.to_str().unwrap()]);
    let (s, node_a, answer) = served_by(&a, "spread");
    assert_eq!(s, 200, "{answer}");
    let (s, node_b, on_b) = served_by(&b, "spread");
    assert_eq!((s, &on_b), (200, &answer));
    assert!(
        !node_b.is_empty() && node_b != node_a,
        "each node runs an instance: {node_a} {node_b}"
    );
    let log = log_text(&a, "spread");
    assert!(log.contains("[OK] Instances placed on node "), "{log}");
    let (_, d) = b.admin("GET", "/api/v2/services/spread", b"");
    assert_eq!(d["running_instances"], 2, "{d}");
    let placed: Vec<(String, String)> = d["placements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["node"].as_str().unwrap().to_string(),
                p["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut nodes: Vec<&str> = placed.iter().map(|(n, _)| n.as_str()).collect();
    nodes.sort();
    let mut expected = vec![node_a.as_str(), node_b.as_str()];
    expected.sort();
    assert_eq!(nodes, expected, "{d}");
    assert!(placed.iter().all(|(_, s)| s == "running"), "{d}");

    let (s, d) = b.admin(
        "POST",
        "/api/v2/services/spread/scale",
        br#"{"instances": 1}"#,
    );
    assert_eq!(s, 200, "{d}");
    until(60, "the scale-down reaching both nodes", || {
        let (s, by_a, body) = served_by(&a, "spread");
        let (s2, by_b, _) = served_by(&b, "spread");
        let (_, d) = a.admin("GET", "/api/v2/services/spread", b"");
        (s, s2) == (200, 200)
            && body == answer
            && by_a == by_b
            && d["status"] == "Running"
            && d["running_instances"] == 1
    });

    let (s, d) = b.admin("POST", "/api/v2/services/spread/stop", b"");
    assert_eq!(s, 200, "{d}");
    until(30, "the stop reaching both nodes", || {
        served_by(&a, "spread").0 != 200 && served_by(&b, "spread").0 != 200
    });
    let (_, d) = a.admin("GET", "/api/v2/services/spread", b"");
    assert_eq!(
        (d["status"].as_str(), d["running_instances"].as_i64()),
        (Some("Stopped"), Some(0)),
        "{d}"
    );
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

/// The S3 endpoint down: an upload is refused with an error that names the
/// store, and a deploy (of a model the node reads itself) fails with one, no
/// artifact recorded; once it is back, a retry deploys.
#[test]
fn a_store_that_is_down_fails_the_deploy_cleanly_and_a_retry_works() {
    let mut moto = whetstone_e2e::moto::Moto::start();
    moto.create_bucket("whet");
    let pg = Postgres::start();
    let url = pg.database("whet");
    let work = tempfile::tempdir().unwrap();
    let models = work.path().join("m");
    let args = [
        "--database",
        url.as_str(),
        "--store",
        "s3://whet/p",
        "--model-root",
        models.to_str().unwrap(),
    ];
    let a = Server::start_with_env(&work.path().join("a"), &args, &moto.env());
    let uploaded = example(&a, &models, "flaky");
    moto.stop_server();
    let out = a
        .cli(&["create", uploaded.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("s3://whet/p"),
        "{err}"
    );
    let (s, _) = a.admin("GET", "/api/v2/services/flaky", b"");
    assert_eq!(s, 404, "a refused upload stores no service");

    let local = format!("file://{}", models.join("model").display());
    let cfg = remote_config(&uploaded, work.path(), "flaky", &local, None);
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

/// Writes `cfg` with `name` and `model_path` (and `oss_endpoint`, when
/// given) into `dir`, and returns the file.
fn remote_config(
    cfg: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    model_path: &str,
    oss_endpoint: Option<&str>,
) -> std::path::PathBuf {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg).unwrap()).unwrap();
    v["name"] = serde_json::json!(name);
    v["model_path"] = serde_json::json!(model_path);
    if let Some(e) = oss_endpoint {
        v["oss_endpoint"] = serde_json::json!(e);
    }
    let out = dir.join(format!("{name}.json"));
    std::fs::write(&out, v.to_string()).unwrap();
    out
}

fn log_text(server: &Server, name: &str) -> String {
    let (s, v) = server.admin("GET", &format!("/api/v2/services/{name}/logs"), b"");
    assert_eq!(s, 200, "{v}");
    v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `model_path: s3://…` and the seed's `oss://…` with `oss_endpoint`, read
/// from an S3 server we did not write (moto); a path with nothing there and
/// an endpoint the server would send its credentials to are refused, naming
/// the field.
#[test]
fn model_paths_in_s3_and_oss_are_downloaded_and_served() {
    let moto = whetstone_e2e::moto::Moto::start();
    moto.create_bucket("models");
    let work = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(&work.path().join("data"), &[], &moto.env());
    let cfg = example(&server, &work.path().join("m"), "unused");
    moto.put_dir("models", "team-a/mlp/", &work.path().join("m/model"));

    let s3 = remote_config(
        &cfg,
        work.path(),
        "from_s3",
        "s3://models/team-a/mlp/",
        None,
    );
    cli_ok(&server, &["create", s3.to_str().unwrap()]);
    let (s, body) = predict(&server, "from_s3");
    assert_eq!(s, 200, "{body}");
    let log = log_text(&server, "from_s3");
    assert!(
        log.contains("[OK] Downloading s3 file: s3://models/team-a/mlp/"),
        "{log}"
    );

    let endpoint = moto.endpoint();
    let oss = remote_config(
        &cfg,
        work.path(),
        "from_oss",
        "oss://models/team-a/mlp/",
        Some(&endpoint),
    );
    cli_ok(&server, &["create", oss.to_str().unwrap()]);
    let (s, from_oss) = predict(&server, "from_oss");
    assert_eq!(s, 200, "{from_oss}");
    let outputs =
        |b: &str| serde_json::from_str::<serde_json::Value>(b).unwrap()["outputs"].clone();
    assert_eq!(outputs(&from_oss), outputs(&body));
    let log = log_text(&server, "from_oss");
    assert!(
        log.contains("[OK] Downloading oss file: oss://models/team-a/mlp/"),
        "{log}"
    );

    let refused = |name: &str, path: &str, endpoint: Option<&str>, field: &str, says: &str| {
        let c = remote_config(&cfg, work.path(), name, path, endpoint);
        let out = server
            .cli(&["create", c.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(field) && err.contains(says), "{err}");
        let (s, _) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
        assert_eq!(s, 404, "a refused create stores nothing");
    };
    refused(
        "nothing_there",
        "s3://models/team-b/",
        None,
        "model_path",
        "nothing at",
    );
    refused(
        "elsewhere",
        "oss://models/team-a/mlp/",
        Some("https://attacker.example.com"),
        "oss_endpoint",
        "AWS_ENDPOINT_URL",
    );
}

/// An upload received by node A lands in the shared store: node B, with a
/// data folder of its own, deploys a service of that upload.
#[test]
fn an_upload_to_one_node_deploys_on_another() {
    let moto = whetstone_e2e::moto::Moto::start();
    moto.create_bucket("whet");
    let pg = Postgres::start();
    let url = pg.database("whet");
    let work = tempfile::tempdir().unwrap();
    let args = ["--database", url.as_str(), "--store", "s3://whet/c"];
    let a = Server::start_with_env(&work.path().join("a"), &args, &moto.env());
    let cfg = example(&a, &work.path().join("m"), "on_a");
    cli_ok(&a, &["create", cfg.to_str().unwrap()]);
    let (_, v) = a.admin("GET", "/api/v2/services/on_a", b"");
    let upload = v["config"]["model_path"].as_str().unwrap().to_string();
    assert!(upload.starts_with("upload://"), "{v}");
    let keys = moto.keys("whet", "c/uploads/");
    assert_eq!(keys.len(), 1, "{keys:?}");

    let b_data = work.path().join("b");
    whetstone_e2e::second_data_dir(&work.path().join("a"), &b_data);
    drop(a);
    let b = Server::start_with_env(&b_data, &args, &moto.env());
    let on_b = remote_config(&cfg, work.path(), "on_b", &upload, None);
    cli_ok(&b, &["create", on_b.to_str().unwrap()]);
    let (s, body) = predict(&b, "on_b");
    assert_eq!(s, 200, "{body}");
    // B fetched the upload from the store into its own data folder.
    let rel = upload.strip_prefix("upload://").unwrap();
    assert!(b_data.join("uploads").join(rel).is_file(), "{rel}");
}

/// `whet logs -f` connected to node B follows, live, a deploy that node A
/// runs: A's lines and the end of its deploy reach B through PostgreSQL's
/// LISTEN/NOTIFY (without them B's follower would wait forever).
#[test]
fn a_follower_on_one_node_sees_the_deploy_another_runs() {
    let pg = Postgres::start();
    let url = pg.database("whet");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let args = ["--database", url.as_str()];
    let a = Server::start(&data, &args);
    // Node B joins once A has claimed the deploy and is optimizing.
    let mut create = minilm_deploy_in_plugin_stage(&a, work.path(), "followed");
    let b = Server::start(&data, &args);
    let follower = b
        .cli(&["logs", "-f", "followed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let followed = Instant::now();
    assert!(create.wait().unwrap().success(), "the deploy failed on A");
    let (_, v) = a.admin("GET", "/api/v2/services/followed", b"");
    assert_eq!(v["status"], "Running", "{v}");
    // The follower ends by itself once B relays the end of A's deploy.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(follower.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("node B's follower never saw the deploy end")
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = log_text(&a, "followed");
    assert!(text.contains("[OK] Service is running"), "{text}");
    // Every stored line, in order, once.
    let got: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
    let want: Vec<&str> = stored.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(got, want);
    eprintln!("followed on node B for {:?}", followed.elapsed());
}

/// PostgreSQL stopped and started again while a node optimizes MiniLM: the
/// node reconnects, the deploy finishes, and the service answers.
#[test]
fn a_deploy_finishes_across_a_database_restart() {
    let pg = Postgres::start();
    let url = pg.database("whet");
    let work = tempfile::tempdir().unwrap();
    let a = Server::start(&work.path().join("data"), &["--database", url.as_str()]);
    // Its log stream breaks with the database: the status says how it ends.
    let mut create = minilm_deploy_in_plugin_stage(&a, work.path(), "restarted");
    pg.stop_server();
    std::thread::sleep(Duration::from_secs(3));
    pg.start_server();
    let restarted = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(300);
    let v = loop {
        // Management calls answer again once the pool has reconnected.
        let (code, v) = a.admin("GET", "/api/v2/services/restarted", b"");
        if code == 200 && (v["status"] == "Running" || v["status"] == "Failed") {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the deploy did not end: {code} {v}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(v["status"], "Running", "{v}");
    let _ = create.wait();
    let log = log_text(&a, "restarted");
    assert!(log.contains("[OK] Service is running"), "{log}");
    let (code, answer) = minilm_predict(&a, "restarted");
    assert_eq!(code, 200, "{answer}");
    eprintln!(
        "deploy finished {:?} after the database came back",
        restarted.elapsed()
    );
}

/// Every node answers every service's endpoint: the node that does not run
/// the service's instances forwards the request to the one that does (the
/// same answer through either address); a request that was already
/// forwarded once is not forwarded again.
#[test]
fn every_node_answers_every_service_by_forwarding() {
    let (_pg, work, a, b) = two_nodes();
    let cfg = example(&a, &work.path().join("m"), "everywhere");
    cli_ok(&a, &["create", cfg.to_str().unwrap()]);
    let (s, via_a) = predict(&a, "everywhere");
    assert_eq!(s, 200, "{via_a}");
    let (s, via_b) = predict(&b, "everywhere");
    assert_eq!((s, &via_b), (200, &via_a));

    // Exactly one node serves it itself: asked as if forwarded, the other
    // has nothing to answer with.
    let (_, v) = a.admin("GET", "/api/v2/services/everywhere", b"");
    let auth = v["token"].as_str().unwrap().to_string();
    let direct = |s: &Server| {
        whetstone_e2e::http_with(
            &s.addr,
            "POST",
            "/api/predict/everywhere",
            &[("Authorization", &auth), ("x-whet-forwarded", "test")],
            REQUEST.as_bytes(),
        )
        .0
    };
    let mut codes = [direct(&a), direct(&b)];
    codes.sort();
    assert_eq!(codes, [200, 503], "one node serves, the other forwards");

    // Through the node that forwards, the token is still checked (by the
    // node that serves).
    let (s, _) = b.http(
        "POST",
        "/api/predict/everywhere",
        Some("Bearer wrong"),
        REQUEST.as_bytes(),
    );
    let (s2, _) = a.http(
        "POST",
        "/api/predict/everywhere",
        Some("Bearer wrong"),
        REQUEST.as_bytes(),
    );
    assert_eq!((s, s2), (401, 401));
}

/// A gRPC call (`--grpc-addr`) reaches the service through either node: the
/// node without its instances sends it on to the one with them, which
/// checks the token; both answer alike.
#[test]
fn grpc_calls_are_forwarded_to_the_node_that_serves() {
    use backend::serving::kserve::grpc::proto::{
        grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::InferInputTensor, InferTensorContents, ModelInferRequest,
    };
    let pg = Postgres::start();
    let url = pg.database("whet");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let args = ["--database", url.as_str(), "--grpc-addr", "127.0.0.1:0"];
    let (a, b) = (Server::start(&data, &args), Server::start(&data, &args));
    let cfg = example(&a, &work.path().join("m"), "grpc_everywhere");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["metadata"]["instance"] = 1.into();
    v["metadata"]["enable_grpc"] = true.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    cli_ok(&a, &["create", cfg.to_str().unwrap()]);
    let (_, d) = a.admin("GET", "/api/v2/services/grpc_everywhere", b"");
    let token = d["token"].as_str().unwrap().to_string();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let call = |node: &Server, token: &str| {
        let addr = format!("http://{}", node.grpc_addr.clone().unwrap());
        let mut req = tonic::Request::new(ModelInferRequest {
            model_name: "grpc_everywhere".into(),
            id: "n".into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1, 4],
                contents: Some(InferTensorContents {
                    fp32_contents: vec![0.1, 0.2, 0.3, 0.4],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        rt.block_on(async {
            let mut c = GrpcInferenceServiceClient::connect(addr).await.unwrap();
            c.model_infer(req).await.map(|r| r.into_inner())
        })
    };
    // Metadata, config and readiness through either node too (perf_analyzer
    // reads the config first).
    for node in [&a, &b] {
        let addr = format!("http://{}", node.grpc_addr.clone().unwrap());
        fn authed<T>(m: T, token: &str) -> tonic::Request<T> {
            let mut r = tonic::Request::new(m);
            r.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            r
        }
        let (config, ready) = rt.block_on(async {
            let mut c = GrpcInferenceServiceClient::connect(addr).await.unwrap();
            let config = c
                .model_config(authed(
                    backend::serving::kserve::grpc::proto::ModelConfigRequest {
                        name: "grpc_everywhere".into(),
                        version: String::new(),
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner();
            let ready = c
                .model_ready(authed(
                    backend::serving::kserve::grpc::proto::ModelReadyRequest {
                        name: "grpc_everywhere".into(),
                        version: String::new(),
                    },
                    &token,
                ))
                .await
                .unwrap()
                .into_inner();
            (config, ready)
        });
        assert_eq!(config.config.unwrap().input[0].name, "x");
        assert!(ready.ready);
    }
    let via_a = call(&a, &token).expect("through node A");
    let via_b = call(&b, &token).expect("through node B");
    assert_eq!(via_a.id, "n");
    assert_eq!(
        (&via_a.outputs, &via_a.raw_output_contents),
        (&via_b.outputs, &via_b.raw_output_contents),
        "the same answer through either node"
    );
    for node in [&a, &b] {
        let e = call(node, "wrong").unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    }
    // The serving node counted both as gRPC calls.
    let grpc_200 = |node: &Server| {
        let (_, m) = node.http("GET", "/metrics", Some(&node.admin_token()), b"");
        let key = r#"whet_requests_total{code="200",protocol="grpc",service="grpc_everywhere"} "#;
        m.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(grpc_200(&a) + grpc_200(&b), 2.0);
}
