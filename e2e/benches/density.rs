//! Density benchmark: N services of `whet example-model` (one instance
//! each) on one server. Prints the resident memory of the server and of the
//! idle runners (RSS, and PSS: shared library pages split between the
//! processes that map them), then kills the server (SIGKILL: its runners die
//! with it), starts it again and times until every service is Running and
//! answers a prediction.
//!
//! Run: `cargo build --release -p whetstone-backend --features torch --bin
//! whet && cargo build --release -p whetstone-runner --bin whet-runner &&
//! WHET_BIN=target/release/whet cargo bench -p whetstone-e2e --bench
//! density` (`DENSITY_SERVICES` sets N, default 60).

use std::path::Path;
use std::time::{Duration, Instant};

use whetstone_e2e::Server;

fn kb(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn runner_pids(server: &Server) -> Vec<u32> {
    let (s, v) = server.admin("GET", "/api/v2/services", b"");
    assert_eq!(s, 200, "{v}");
    let mut pids = Vec::new();
    for svc in v.as_array().unwrap() {
        let name = svc["name"].as_str().unwrap();
        let (_, d) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
        for r in d["runners"].as_array().cloned().unwrap_or_default() {
            if let Some(p) = r["pid"].as_u64() {
                pids.push(p as u32);
            }
        }
    }
    pids
}

fn all_running(server: &Server, n: usize) -> bool {
    let (s, v) = server.admin("GET", "/api/v2/services", b"");
    s == 200
        && v.as_array()
            .is_some_and(|a| a.len() == n && a.iter().all(|x| x["status"] == "Running"))
}

fn main() {
    let n: usize = std::env::var("DENSITY_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mut server = Server::start(&data, &[]);
    let demo = work.path().join("demo");
    let out = server
        .cli(&["example-model", demo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo.join("service.json")).unwrap()).unwrap();
    let deploy_started = Instant::now();
    for i in 0..n {
        let mut cfg = base.clone();
        cfg["name"] = serde_json::json!(format!("svc_{i:03}"));
        let p = demo.join(format!("svc_{i:03}.json"));
        std::fs::write(&p, cfg.to_string()).unwrap();
        let out = server
            .cli(&["create", p.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deployed = deploy_started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let pids = runner_pids(&server);
    assert_eq!(pids.len(), n, "one runner per service");
    let rss: Vec<u64> = pids.iter().map(|&p| kb(p, "status", "VmRSS:")).collect();
    let pss: Vec<u64> = pids
        .iter()
        .map(|&p| kb(p, "smaps_rollup", "Pss:"))
        .collect();
    let anon: Vec<u64> = pids.iter().map(|&p| kb(p, "status", "RssAnon:")).collect();
    let server_rss = kb(server.child.id(), "status", "VmRSS:");
    let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0;
    let max = |v: &[u64]| *v.iter().max().unwrap_or(&0) as f64 / 1024.0;

    // Restart: SIGKILL the server; its runners die with it.
    server.kill();
    let restart = Instant::now();
    let server = Server::start(&data, &[]);
    while !all_running(&server, n) {
        assert!(
            restart.elapsed() < Duration::from_secs(120),
            "services not Running 120 s after the restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let running_after = restart.elapsed();
    let (_, d) = server.admin("GET", "/api/v2/services/svc_000", b"");
    let token = d["token"].as_str().unwrap().to_string();
    let req = std::fs::read(Path::new(&demo).join("request.json")).unwrap();
    let (s, body) = server.http("POST", "/api/predict/svc_000", Some(&token), &req);
    assert_eq!(s, 200, "{body}");
    let answering_after = restart.elapsed();

    println!("density: {n} services of `whet example-model`, one instance each");
    println!("cpu flags: {}", whetstone_e2e::cpu_flags());
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| deploy of all {n} (first is optimized, the rest reuse) | {:.1} s |",
        deployed.as_secs_f64()
    );
    println!(
        "| idle runner RSS, mean / max | {:.1} / {:.1} MB |",
        mean(&rss),
        max(&rss)
    );
    println!(
        "| idle runner RSS, anonymous (private) part, mean | {:.1} MB |",
        mean(&anon)
    );
    println!(
        "| idle runner PSS (shared pages split), mean | {:.1} MB |",
        mean(&pss)
    );
    println!(
        "| all runners, sum of PSS | {:.0} MB |",
        pss.iter().sum::<u64>() as f64 / 1024.0
    );
    println!("| server RSS | {:.1} MB |", server_rss as f64 / 1024.0);
    println!(
        "| restart → all {n} Running | {:.2} s |",
        running_after.as_secs_f64()
    );
    println!(
        "| restart → first prediction answered | {:.2} s |",
        answering_after.as_secs_f64()
    );
}
