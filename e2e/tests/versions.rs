//! Versions and rollback end to end: a real `whet serve` and the real CLI.
//! Create makes version 1, modify version 2 (optimized again: its config
//! differs); `whet rollback` serves version 1 again from its own artifact
//! without running the optimizer, and forward again works the same way.

use std::path::Path;
use std::process::Output;

use whetstone_e2e::Server;

fn config(shapes: serde_json::Value) -> String {
    serde_json::json!({
        "name": "ver",
        "model_path": "mlp.onnx",
        "processor": "onnx_cpu",
        "metadata": { "instance": 1 },
        "plugins": [{
            "command": "blade --mode eas_plugin --optimize_for cpu",
            "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
            "config": { "model_info": { "mlp.onnx": {
                "optimization_level": "o1",
                "input_shapes": shapes
            } } }
        }]
    })
    .to_string()
}

fn run(server: &Server, args: &[&str]) -> Output {
    server.cli(args).output().expect("whet runs")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The part of `log` from the last line holding `marker` on.
fn since<'a>(log: &'a str, marker: &str) -> &'a str {
    let at = log
        .rfind(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in the log:\n{log}"));
    &log[at..]
}

fn detail(server: &Server) -> serde_json::Value {
    let (s, d) = server.admin("GET", "/api/v2/services/ver", b"");
    assert_eq!(s, 200, "{d}");
    d
}

fn predict(server: &Server, token: &str) -> u16 {
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]});
    server
        .http(
            "POST",
            "/api/predict/ver",
            Some(token),
            body.to_string().as_bytes(),
        )
        .0
}

#[test]
fn modify_makes_a_version_and_rollback_serves_the_earlier_one_without_optimizing() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("mlp.onnx"),
        optimizer::onnx_build::mlp(4, 16, 3),
    )
    .unwrap();
    let write = |name: &str, shapes: serde_json::Value| {
        let p = work.path().join(name);
        std::fs::write(&p, config(shapes)).unwrap();
        p.to_str().unwrap().to_string()
    };
    let v1 = write("v1.json", serde_json::json!([["1*4"]]));
    let v2 = write("v2.json", serde_json::json!([["1*4"], ["8*4"]]));
    let server = Server::start(&work.path().join("data"), &[]);
    let in_work = |args: &[&str]| {
        let mut c = server.cli(args);
        c.current_dir(work.path());
        c.output().expect("whet runs")
    };

    let log = ok(&in_work(&["create", &v1]));
    assert!(log.contains("Running plugin eas-plugin-"), "{log}");
    let first = detail(&server);
    let a1 = first["artifact"].as_str().unwrap().to_string();
    assert_eq!(
        (
            first["current_version"].as_u64(),
            first["latest_version"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let token = first["token"].as_str().unwrap().to_string();

    // Modify: version 2, optimized for its own shapes.
    let log = ok(&in_work(&["modify", "ver", "-s", &v2]));
    assert!(log.contains("Running plugin eas-plugin-"), "{log}");
    let second = detail(&server);
    let a2 = second["artifact"].as_str().unwrap().to_string();
    assert_ne!(a1, a2, "another config, another artifact");
    assert_eq!(
        (
            second["current_version"].as_u64(),
            second["latest_version"].as_u64()
        ),
        (Some(2), Some(2))
    );

    let table = ok(&run(&server, &["versions", "ver"]));
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows[0].starts_with('1') && rows[0].contains(&a1[..12]),
        "{table}"
    );
    assert!(rows[1].starts_with('2') && rows[1].contains('*'), "{table}");
    assert!(
        rows[0].contains("admin") && rows[1].contains("admin"),
        "{table}"
    );

    // Rollback (no version: the one before): version 1's artifact, reused.
    let log = ok(&run(&server, &["rollback", "ver"]));
    // `whet` follows the whole log; the rollback's deploy is its end.
    let deploy = since(&log, "Rolling back to version 1 of 2");
    assert!(deploy.contains("Reusing optimized artifact"), "{log}");
    assert!(!deploy.contains("Running plugin"), "optimized again: {log}");
    let back = detail(&server);
    assert_eq!(back["artifact"].as_str(), Some(a1.as_str()));
    assert_eq!(
        (
            back["current_version"].as_u64(),
            back["latest_version"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(
        back["config"]["plugins"][0]["config"]["model_info"]["mlp.onnx"]["input_shapes"],
        serde_json::json!([["1*4"]])
    );
    assert_eq!(predict(&server, &token), 200);

    // Nothing to roll back to, a version that does not exist, the one served.
    let out = run(&server, &["rollback", "ver"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no earlier version"),
        "{out:?}"
    );
    let out = run(&server, &["rollback", "ver", "5"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("versions 1 to 2"),
        "{out:?}"
    );
    let out = run(&server, &["rollback", "ver", "1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already serves version 1"),
        "{out:?}"
    );

    // Forward again to version 2: its artifact, not optimized again.
    let log = ok(&run(&server, &["rollback", "ver", "2"]));
    let deploy = since(&log, "Rolling back to version 2 of 2");
    assert!(deploy.contains("Reusing optimized artifact"), "{log}");
    assert!(!deploy.contains("Running plugin"), "optimized again: {log}");
    let forward = detail(&server);
    assert_eq!(forward["artifact"].as_str(), Some(a2.as_str()));
    assert_eq!(forward["current_version"].as_u64(), Some(2));
    assert_eq!(predict(&server, &token), 200);
    assert!(Path::new(&work.path().join("data")).is_dir());
}

/// Requests sent back to back by `clients` threads until `stop`: (answered
/// 200, anything else) — a refused connection or a non-200 status is a
/// failure.
fn load_until(
    server: &Server,
    token: &str,
    clients: usize,
    stop: &std::sync::atomic::AtomicBool,
) -> (usize, Vec<String>) {
    use std::sync::atomic::Ordering;
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}).to_string();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let body = body.as_bytes();
                s.spawn(move || {
                    let (mut ok, mut failed) = (0usize, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let (status, text) =
                            server.http("POST", "/api/predict/ver", Some(token), body);
                        if status == 200 {
                            ok += 1;
                        } else {
                            failed.push(format!("{status}: {text}"));
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).fold(
            (0, Vec::new()),
            |(ok, mut failed), (o, f)| {
                failed.extend(f);
                (ok + o, failed)
            },
        )
    })
}

/// A work folder with the MLP and two configs of it (`v1.json`: one shape
/// group; `v2.json`: two, so another artifact), and a server.
fn two_versions() -> (
    tempfile::TempDir,
    Server,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("mlp.onnx"),
        optimizer::onnx_build::mlp(4, 16, 3),
    )
    .unwrap();
    let v1 = work.path().join("v1.json");
    let v2 = work.path().join("v2.json");
    std::fs::write(&v1, config(serde_json::json!([["1*4"]]))).unwrap();
    std::fs::write(&v2, config(serde_json::json!([["1*4"], ["8*4"]]))).unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    (work, server, v1, v2)
}

#[test]
fn a_rolling_update_and_a_rollback_under_load_fail_no_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (work, server, v1, v2) = two_versions();
    let cli = |args: &[&str]| {
        let mut c = server.cli(args);
        c.current_dir(work.path());
        c.output().expect("whet runs")
    };
    ok(&cli(&["create", v1.to_str().unwrap()]));
    let token = detail(&server)["token"].as_str().unwrap().to_string();

    let stop = AtomicBool::new(false);
    let (answered, failed) = std::thread::scope(|s| {
        let load = s.spawn(|| load_until(&server, &token, 4, &stop));
        // Each change waits for its deploy; the load runs throughout.
        ok(&cli(&["modify", "ver", "-s", v2.to_str().unwrap()]));
        assert_eq!(detail(&server)["current_version"].as_u64(), Some(2));
        ok(&cli(&["rollback", "ver"]));
        assert_eq!(detail(&server)["current_version"].as_u64(), Some(1));
        ok(&cli(&["scale", "ver", "2"]));
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap()
    });
    eprintln!(
        "under load through a modify, a rollback and a scale: {answered} answered, {} failed",
        failed.len()
    );
    assert!(answered > 100, "the load hardly ran: {answered}");
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
}

/// One prediction: its status and the version that answered it.
fn predict_version(server: &Server, token: &str, pin: Option<&str>) -> (u16, Option<u32>, String) {
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}).to_string();
    let mut headers = vec![("Authorization", token)];
    if let Some(v) = pin {
        headers.push(("X-Whet-Version", v));
    }
    let addr = server.url().trim_start_matches("http://").to_string();
    let (status, head, text) =
        whetstone_e2e::http_head(&addr, "POST", "/api/predict/ver", &headers, body.as_bytes());
    let version = head
        .iter()
        .find_map(|l| l.strip_prefix("x-whet-version: "))
        .and_then(|v| v.parse().ok());
    (status, version, text)
}

fn split(server: &Server) -> serde_json::Value {
    let (s, d) = server.admin("GET", "/api/v2/services/ver/traffic", b"");
    assert_eq!(s, 200, "{d}");
    d
}

#[test]
fn a_traffic_split_serves_two_versions_by_weight_and_promote_ends_it_with_no_failed_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (work, server, v1, v2) = two_versions();
    let cli = |args: &[&str]| {
        let mut c = server.cli(args);
        c.current_dir(work.path());
        c.output().expect("whet runs")
    };
    ok(&cli(&["create", v1.to_str().unwrap()]));
    ok(&cli(&["modify", "ver", "-s", v2.to_str().unwrap()]));
    let token = detail(&server)["token"].as_str().unwrap().to_string();
    assert_eq!(predict_version(&server, &token, None).1, Some(2));

    // Refused: shares that do not sum to 100, a version that does not exist.
    let out = cli(&["traffic", "ver", "1=50", "2=40"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sum to 100, got 90"),
        "{out:?}"
    );
    let out = cli(&["traffic", "ver", "3=10", "2=90"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("weights.3"),
        "{out:?}"
    );

    // 30 % to version 1 beside version 2: the CLI returns once version 1's
    // instances run.
    let table = ok(&cli(&["traffic", "ver", "1=30", "2=70"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with('1') && l.contains("30 %") && l.contains("1/1")),
        "{table}"
    );
    let mut by_version = std::collections::BTreeMap::<u32, usize>::new();
    for _ in 0..300 {
        let (status, v, text) = predict_version(&server, &token, None);
        assert_eq!(status, 200, "{text}");
        *by_version
            .entry(v.expect("the answer names its version"))
            .or_default() += 1;
    }
    eprintln!("300 requests split 1=30 2=70: {by_version:?}");
    // Binomial(300, 0.3): mean 90, sd 7.9; 55..125 is beyond 4 sd.
    assert!((55..125).contains(&by_version[&1]), "{by_version:?}");
    assert_eq!(by_version[&1] + by_version[&2], 300);

    // Per-version numbers: the split's table and the metrics.
    let s = split(&server);
    let versions = s["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{s}");
    for v in versions {
        assert!(v["requests"].as_u64().unwrap() >= 55, "{s}");
        assert_eq!(v["errors"].as_u64(), Some(0), "{s}");
        assert!(v["p50_ms"].as_f64().is_some(), "{s}");
    }
    let (_, metrics) = server.http("GET", "/metrics", Some(&server.admin_token()), b"");
    for v in ["1", "2"] {
        assert!(
            metrics.contains(&format!(
                r#"whet_version_requests_total{{code="200",service="ver",version="{v}"}}"#
            )),
            "{metrics}"
        );
    }

    // A client may pin a version; one outside the split is refused.
    assert_eq!(predict_version(&server, &token, Some("1")).1, Some(1));
    assert_eq!(predict_version(&server, &token, Some("2")).1, Some(2));
    assert_eq!(predict_version(&server, &token, Some("7")).0, 503);
    assert_eq!(predict_version(&server, &token, Some("x")).0, 400);

    // Promote version 1 under load: it takes every request at once, becomes
    // current once redeployed, and the split ends; nothing fails.
    let stop = AtomicBool::new(false);
    let (answered, failed) = std::thread::scope(|s| {
        let load = s.spawn(|| load_until(&server, &token, 4, &stop));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let log = ok(&cli(&["promote", "ver"]));
        assert!(log.contains("Promoting version 1 of 2"), "{log}");
        assert!(log.contains("Reusing optimized artifact"), "{log}");
        std::thread::sleep(std::time::Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap()
    });
    eprintln!(
        "under load through a promote: {answered} answered, {} failed",
        failed.len()
    );
    assert!(answered > 50, "the load hardly ran: {answered}");
    assert!(failed.is_empty(), "{:?}", &failed[..failed.len().min(3)]);
    let d = detail(&server);
    assert_eq!(d["current_version"].as_u64(), Some(1), "{d}");
    let s = split(&server);
    assert_eq!(s["versions"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["versions"][0]["weight"].as_u64(), Some(100), "{s}");
    for _ in 0..20 {
        assert_eq!(predict_version(&server, &token, None).1, Some(1));
    }
    // Version 2's instances beside it are gone; pinning it is refused.
    assert_eq!(predict_version(&server, &token, Some("2")).0, 503);
    let (_, log) = server.admin("GET", "/api/v2/services/ver/logs", b"");
    let log = log.to_string();
    assert!(
        log.contains("Traffic split: version 1 30 %, version 2 70 %"),
        "{log}"
    );
    assert!(log.contains("version 1 serves every request"), "{log}");

    // A modify during a split ends it: the new version serves everything.
    ok(&cli(&["traffic", "ver", "1=50", "2=50"]));
    ok(&cli(&["modify", "ver", "-s", v1.to_str().unwrap()]));
    assert_eq!(detail(&server)["current_version"].as_u64(), Some(3));
    assert_eq!(split(&server)["versions"].as_array().unwrap().len(), 1);
    for _ in 0..10 {
        assert_eq!(predict_version(&server, &token, None).1, Some(3));
    }
}

/// Runner processes of `server` alive now (zombies not counted).
fn runner_processes(server: &Server) -> usize {
    let parent = server.child.id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.ok()?.path().join("stat")).ok()?;
            // pid (comm) state ppid …: the comm may hold spaces.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut f = rest.split_whitespace();
            let state = f.next()?;
            let ppid = f.next()?;
            (ppid == parent && state != "Z" && stat.contains("runner")).then_some(())
        })
        .count()
}

#[test]
fn a_rolling_update_replaces_instances_one_by_one_as_its_strategy_says() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("a.onnx"),
        optimizer::onnx_build::mlp(4, 16, 3),
    )
    .unwrap();
    std::fs::write(
        work.path().join("b.onnx"),
        optimizer::onnx_build::mlp(4, 32, 3),
    )
    .unwrap();
    let cfg = |model: &str| {
        serde_json::json!({
            "name": "ver",
            "model_path": model,
            "processor": "onnx_cpu",
            "metadata": {
                "instance": 4,
                "rolling_strategy": { "max_surge": 1, "max_unavailable": 0 }
            },
        })
        .to_string()
    };
    std::fs::write(work.path().join("a.json"), cfg("a.onnx")).unwrap();
    std::fs::write(work.path().join("b.json"), cfg("b.onnx")).unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let cli = |args: &[&str]| {
        let mut c = server.cli(args);
        c.current_dir(work.path());
        c.output().expect("whet runs")
    };
    ok(&cli(&["create", "a.json"]));
    let token = detail(&server)["token"].as_str().unwrap().to_string();
    assert_eq!(runner_processes(&server), 4);

    let stop = AtomicBool::new(false);
    let peak = AtomicUsize::new(0);
    let (answered, failed) = std::thread::scope(|s| {
        let load = s.spawn(|| load_until(&server, &token, 4, &stop));
        let watch = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(runner_processes(&server), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        ok(&cli(&["modify", "ver", "-s", "b.json"]));
        stop.store(true, Ordering::Relaxed);
        watch.join().unwrap();
        load.join().unwrap()
    });
    let peak = peak.into_inner();
    eprintln!(
        "rolling update of 4 instances, max_surge 1: {answered} answered, {} failed, at most {peak} runner processes",
        failed.len()
    );
    assert!(failed.is_empty(), "{:?}", &failed[..failed.len().min(3)]);
    assert!(answered > 50, "the load hardly ran: {answered}");
    assert!(
        (5..=5).contains(&peak),
        "max_surge 1 over 4 instances: {peak} at once"
    );
    let (_, log) = server.admin("GET", "/api/v2/services/ver/logs", b"");
    let log = log.to_string();
    for step in 1..=4 {
        assert!(
            log.contains(&format!("Rolling update: {step} of 4 new instance(s) up")),
            "{log}"
        );
    }
    assert_eq!(runner_processes(&server), 4);
    let d = detail(&server);
    assert_eq!(d["runners"].as_array().map(Vec::len), Some(4), "{d}");
}
