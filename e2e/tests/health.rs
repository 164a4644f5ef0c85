//! The config's health checks, end to end on a real server and real runner
//! processes: a runner stopped with SIGSTOP (alive, but answering nothing)
//! fails its liveness check and is killed and started again; with a
//! readiness check instead it is taken out of rotation — `/ready` says so —
//! and comes back when it answers again, without a restart.

use std::time::{Duration, Instant};

use whetstone_e2e::Server;

fn create(
    server: &Server,
    work: &std::path::Path,
    name: &str,
    checks: serde_json::Value,
) -> String {
    whetstone_e2e::create_mlp(
        server,
        work,
        name,
        serde_json::json!({ "metadata": checks }),
    )
}

fn runner(server: &Server, name: &str) -> serde_json::Value {
    let (s, d) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
    assert_eq!(s, 200, "{d}");
    d["runners"][0].clone()
}

/// Sends `sig` (STOP, CONT) to a runner process of this test's server.
fn signal(pid: u64, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{sig} {pid}");
}

fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed()
}

fn predict(server: &Server, name: &str, token: &str) -> u16 {
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]});
    server
        .http(
            "POST",
            &format!("/api/predict/{name}"),
            Some(token),
            body.to_string().as_bytes(),
        )
        .0
}

#[test]
fn a_runner_that_fails_its_liveness_check_is_killed_and_started_again() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let token = create(
        &server,
        work.path(),
        "live",
        serde_json::json!({ "liveness_check": { "period_seconds": 1, "timeout_seconds": 1, "failure_threshold": 2 } }),
    );
    let first = runner(&server, "live");
    let pid = first["pid"].as_u64().expect("a runner pid");
    // Alive and answering: the probes leave it alone.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(runner(&server, "live")["pid"].as_u64(), Some(pid));
    assert_eq!(predict(&server, "live", &token), 200);

    signal(pid, "STOP");
    let took = until("a new runner", Duration::from_secs(20), || {
        let r = runner(&server, "live");
        r["pid"].as_u64().is_some_and(|p| p != pid) && r["up"] == true
    });
    let after = runner(&server, "live");
    eprintln!("stopped runner replaced after {took:?}: {after}");
    assert_eq!(after["restarts"].as_u64(), Some(1), "{after}");
    let why = after["last_exit"].as_str().unwrap_or_default();
    assert!(why.contains("failed 2 liveness checks"), "{after}");
    assert_eq!(predict(&server, "live", &token), 200);
}

#[test]
fn a_runner_that_fails_its_readiness_check_gets_no_requests_until_it_passes() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let token = create(
        &server,
        work.path(),
        "ready",
        serde_json::json!({ "readiness_check": { "period_seconds": 1, "timeout_seconds": 1, "failure_threshold": 1, "success_threshold": 2 } }),
    );
    let ready = |server: &Server| {
        server
            .http("GET", "/v2/models/ready/ready", Some(&token), b"")
            .0
    };
    assert_eq!(ready(&server), 200);
    let pid = runner(&server, "ready")["pid"]
        .as_u64()
        .expect("a runner pid");

    signal(pid, "STOP");
    let took = until("not ready", Duration::from_secs(10), || {
        ready(&server) == 400
    });
    eprintln!("a stopped runner is not ready after {took:?}");
    let r = runner(&server, "ready");
    assert_eq!(r["ready"], false, "{r}");
    assert_eq!(r["up"], true, "{r}");

    // A request meanwhile waits for it (it is the only instance).
    let (waiting, resumed) = std::thread::scope(|s| {
        let call = s.spawn(|| predict(&server, "ready", &token));
        std::thread::sleep(Duration::from_millis(500));
        signal(pid, "CONT");
        let resumed = Instant::now();
        (call.join().unwrap(), resumed)
    });
    assert_eq!(waiting, 200);
    until("ready again", Duration::from_secs(10), || {
        ready(&server) == 200
    });
    eprintln!(
        "ready again {:?} after SIGCONT (two passed probes); the waiting request was answered then",
        resumed.elapsed()
    );
    let r = runner(&server, "ready");
    assert_eq!(
        (r["pid"].as_u64(), r["restarts"].as_u64()),
        (Some(pid), Some(0)),
        "{r}"
    );
    assert_eq!(r["ready"], true, "{r}");
}
