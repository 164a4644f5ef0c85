//! Autoscaling end to end: a real `whet serve` (autoscaler period 500 ms,
//! scale-in delay 3 s), a service with `autoscaler {min 1, max 3, qps 20}`,
//! and a load step: under load it scales out to max within a bounded time,
//! and once the load stops it scales back in to min after the cool-down —
//! never below min. The timeline is printed (`--nocapture`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use whetstone_e2e::Server;

fn instances(server: &Server) -> (u64, u64, String) {
    let (s, d) = server.admin("GET", "/api/v2/services/auto", b"");
    assert_eq!(s, 200, "{d}");
    (
        d["instances"].as_u64().unwrap(),
        d["running_instances"].as_u64().unwrap_or(0),
        d["status"].as_str().unwrap_or("").to_string(),
    )
}

/// A server started with `args` and the service `auto` (a small MLP, one
/// instance) deployed with `scaling` added to its config, through the CLI.
fn deploy(scaling: serde_json::Value, args: &[&str]) -> (tempfile::TempDir, Server) {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), args);
    whetstone_e2e::create_mlp(&server, work.path(), "auto", scaling);
    (work, server)
}

#[test]
fn a_load_step_scales_out_to_max_and_back_in_to_min_after_the_cool_down() {
    let (_work, server) = deploy(
        serde_json::json!({ "autoscaler": {
            "min": 1, "max": 3,
            "scale_strategies": [{ "metric_name": "qps", "threshold": 20 }]
        } }),
        &["--autoscale-period", "500ms", "--scale-in-delay", "3s"],
    );
    let (_, d) = server.admin("GET", "/api/v2/services/auto", b"");
    let token = d["token"].as_str().unwrap().to_string();
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}).to_string();

    let t0 = Instant::now();
    let mut timeline: Vec<(f64, u64, u64)> = Vec::new();
    let note = |timeline: &mut Vec<(f64, u64, u64)>, (n, r, _): (u64, u64, String)| {
        if timeline
            .last()
            .is_none_or(|&(_, ln, lr)| (ln, lr) != (n, r))
        {
            timeline.push((t0.elapsed().as_secs_f64(), n, r));
        }
        n
    };
    let stop = AtomicBool::new(false);
    let (scaled_out, failed) = std::thread::scope(|s| {
        // The load: four clients back to back, far above 20 requests/s.
        let clients: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut failed = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let (status, _) =
                            server.http("POST", "/api/predict/auto", Some(&token), body.as_bytes());
                        if status != 200 {
                            failed += 1;
                        }
                    }
                    failed
                })
            })
            .collect();
        let mut scaled_out = None;
        while t0.elapsed() < Duration::from_secs(60) {
            let now = instances(&server);
            let running = now.1;
            let n = note(&mut timeline, now);
            assert!(n >= 1, "below min: {timeline:?}");
            if n == 3 && running == 3 {
                scaled_out = Some(t0.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        let failed: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
        (scaled_out, failed)
    });
    let scaled_out = scaled_out
        .unwrap_or_else(|| panic!("never scaled out to 3 running instances: {timeline:?}"));
    let idle_from = t0.elapsed();
    let mut scaled_in = None;
    while t0.elapsed() < idle_from + Duration::from_secs(60) {
        let n = note(&mut timeline, instances(&server));
        assert!(n >= 1, "below min: {timeline:?}");
        if n == 1 {
            scaled_in = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let scaled_in = scaled_in.unwrap_or_else(|| panic!("never scaled back in to 1: {timeline:?}"));
    eprintln!(
        "load from 0 s: running 3 instances at {:.1} s; load stopped at {:.1} s, back to 1 at {:.1} s ({:.1} s later; {failed} requests failed under load)",
        scaled_out.as_secs_f64(),
        idle_from.as_secs_f64(),
        scaled_in.as_secs_f64(),
        (scaled_in - idle_from).as_secs_f64()
    );
    eprintln!("timeline (s, instances, running): {timeline:?}");
    // Out within a bounded time: a few periods plus the deploys.
    assert!(scaled_out < Duration::from_secs(30), "{timeline:?}");
    // In only after the cool-down (3 s of asking for fewer), not at once.
    assert!(
        scaled_in - idle_from >= Duration::from_secs(3),
        "{timeline:?}"
    );
    assert_eq!(failed, 0, "requests failed while scaling: {timeline:?}");
    let out = server.cli(&["logs", "auto"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("[OK] Autoscaler: "), "{log}");
    assert!(log.contains("to 1 instance(s)"), "{log}");
}

#[test]
fn a_cron_job_sets_the_instance_count_when_it_falls_due() {
    // Every other second (six fields: seconds first), two instances.
    let (_work, server) = deploy(
        serde_json::json!({ "cronscaler": { "scale_jobs": [
            { "name": "up", "schedule": "*/2 * * * * *", "target_size": 2 }
        ] } }),
        &["--autoscale-period", "500ms"],
    );
    // (The job may have run already: it is due every other second, and a
    // scale takes a moment; the log line below says it went from 1 to 2.)
    let t0 = Instant::now();
    while instances(&server).0 != 2 {
        assert!(t0.elapsed() < Duration::from_secs(20), "the job never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "cron job applied {:.1} s after the deploy",
        t0.elapsed().as_secs_f64()
    );
    let out = server.cli(&["logs", "auto"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("[OK] Cron scaler: job \"up\" is due: scaling from 1 to 2 instance(s)"),
        "{log}"
    );
}
