//! What a forwarded prediction costs, and how long a deploy takes: two nodes
//! on one PostgreSQL (started here) and one shared artifact folder, one
//! service of `whet example-model` whose instance runs on one of them. The same requests go to the node that serves the service and to the
//! node that forwards them there; prints p50/p99 of each, alternating
//! request by request so both see the same machine, and their ratio.
//!
//! Run: `cargo build --release -p whetstone-backend --features torch --bin
//! whet && cargo build --release -p whetstone-runner --bin whet-runner &&
//! WHET_BIN=target/release/whet cargo bench -p whetstone-e2e --bench forward`
//! (`FORWARD_REQUESTS` sets the requests per node, default 2000). Needs
//! Debian's `postgresql` (initdb, pg_ctl).

use std::time::{Duration, Instant};

use whetstone_e2e::postgres::Postgres;
use whetstone_e2e::{http_with, Server};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let n: usize = std::env::var("FORWARD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let pg = Postgres::start();
    let url = pg.database("whet");
    let work = tempfile::tempdir().unwrap();
    // Two nodes with data folders of their own and one shared artifact
    // store, as on two machines.
    let shared = work.path().join("store");
    let args = [
        "--database",
        url.as_str(),
        "--store",
        shared.to_str().unwrap(),
    ];
    let a = Server::start(&work.path().join("a"), &args);
    let b_data = work.path().join("b");
    whetstone_e2e::second_data_dir(&work.path().join("a"), &b_data);
    let b = Server::start(&b_data, &args);
    // Deploy time on two nodes: `whet create` until Running, one instance
    // (placed on the deploying node), then two (one on each node; the other
    // fetches the artifact from the shared store and checks its seal).
    let t = Instant::now();
    let (token, req) = whetstone_e2e::deploy_example(&a, &work.path().join("demo"), 1);
    let one = t.elapsed();
    let cfg = whetstone_e2e::example(&a, &work.path().join("spread"), "spread");
    whetstone_e2e::set_instances(&cfg, 2);
    let t = Instant::now();
    let out = a.cli(&["create", cfg.to_str().unwrap()]).output().unwrap();
    let two = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = "/api/predict/example_mlp";
    let ask = |s: &Server, extra: &[(&str, &str)]| {
        let mut headers = vec![("Authorization", token.as_str())];
        headers.extend_from_slice(extra);
        http_with(&s.addr, "POST", path, &headers, &req)
    };
    // The node that serves it answers a request marked as forwarded.
    let (serving, forwarding) = if ask(&a, &[("x-whet-forwarded", "bench")]).0 == 200 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    for _ in 0..50 {
        assert_eq!(ask(serving, &[]).0, 200);
        assert_eq!(ask(forwarding, &[]).0, 200);
    }
    let (mut direct, mut forwarded) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        for (node, times) in [(serving, &mut direct), (forwarding, &mut forwarded)] {
            let t = Instant::now();
            let (s, body) = ask(node, &[]);
            times.push(t.elapsed());
            assert_eq!(s, 200, "{body}");
        }
    }
    direct.sort();
    forwarded.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("deploy on two nodes (`whet create` until Running, `whet example-model`): 1 instance {:.2} s; 2 instances, one per node {:.2} s", one.as_secs_f64(), two.as_secs_f64());
    println!("forwarding: `whet example-model` (MLP 4→64→3), {n} requests per node, one connection each (Connection: close), alternating");
    println!("cpu flags: {}", whetstone_e2e::cpu_flags());
    println!("| path | p50 | p99 |");
    println!("|---|---|---|");
    for (label, t) in [
        ("node that serves it", &direct),
        ("node that forwards", &forwarded),
    ] {
        println!(
            "| {label} | {:.2} ms | {:.2} ms |",
            ms(percentile(t, 0.5)),
            ms(percentile(t, 0.99))
        );
    }
    println!(
        "forwarded / direct, p50: {:.2}× (+{:.2} ms)",
        ms(percentile(&forwarded, 0.5)) / ms(percentile(&direct, 0.5)),
        ms(percentile(&forwarded, 0.5)) - ms(percentile(&direct, 0.5))
    );
}
