//! Dynamic batching end to end: concurrent predictions to a service with
//! `metadata.rpc.batching` on are merged into shared engine calls, and each
//! caller still gets exactly its own answer.

use whetstone_e2e::Server;

const ROWS: [usize; 12] = [1, 2, 1, 1, 2, 1, 1, 1, 2, 1, 1, 2];

fn deploy(server: &Server, dir: &std::path::Path, name: &str, rpc: Option<serde_json::Value>) {
    let mut metadata = serde_json::json!({ "instance": 1 });
    if let Some(rpc) = rpc {
        metadata["rpc"] = rpc;
    }
    let cfg = serde_json::json!({
        "name": name,
        "model_path": "mlp.onnx",
        "processor": "onnx_cpu",
        "metadata": metadata,
    });
    let (ok, log) = whetstone_e2e::create(server, dir, &cfg);
    assert!(ok, "deploy of {name} failed: {log}");
    assert_eq!(
        log.contains("[OK] Dynamic batching: up to 4 rows per engine call"),
        metadata.get("rpc").is_some(),
        "{log}"
    );
}

fn token(server: &Server, name: &str) -> String {
    let (s, detail) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
    assert_eq!(s, 200, "{detail}");
    detail["token"].as_str().unwrap().to_string()
}

/// Request `i`: `rows` rows of 4 values, different for every request.
fn body(i: usize, rows: usize) -> Vec<u8> {
    let data: Vec<f32> = (0..rows * 4)
        .map(|k| ((i * 13 + k * 7) % 23) as f32 / 11.0 - 1.0)
        .collect();
    serde_json::json!({
        "id": format!("req-{i}"),
        "inputs": [{ "name": "x", "shape": [rows, 4], "datatype": "FP32", "data": data }]
    })
    .to_string()
    .into_bytes()
}

/// Sends request `i` on the EAS path (even `i`) or the KServe path (odd),
/// and returns the answer's `y` as shape and values.
fn predict(server: &Server, name: &str, token: &str, i: usize) -> (Vec<u64>, Vec<f64>) {
    let (path, auth) = if i.is_multiple_of(2) {
        (format!("/api/predict/{name}"), token.to_string())
    } else {
        (
            format!("/v2/models/{name}/infer"),
            format!("Bearer {token}"),
        )
    };
    let (status, text) = server.http("POST", &path, Some(&auth), &body(i, ROWS[i]));
    assert_eq!(status, 200, "request {i} to {name}: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["id"],
        format!("req-{i}"),
        "answer to the wrong request: {v}"
    );
    let y = &v["outputs"][0];
    let shape = y["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap())
        .collect();
    let data = y["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap())
        .collect();
    (shape, data)
}

/// `whet_batch_size_{sum,count}` of one service, from /metrics.
fn batch_sum_and_count(server: &Server, name: &str) -> (f64, f64) {
    let (s, metrics) = server.http("GET", "/metrics", Some(&server.admin_token()), b"");
    assert_eq!(s, 200);
    let read = |series: &str| {
        let prefix = format!("whet_batch_size_{series}{{service=\"{name}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{prefix} missing from /metrics:\n{metrics}"))
    };
    (read("sum"), read("count"))
}

#[test]
fn concurrent_requests_share_engine_calls_and_get_their_own_answers() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("mlp.onnx"),
        optimizer::onnx_build::mlp(4, 32, 3),
    )
    .unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    deploy(&server, work.path(), "mlp_alone", None);
    // Batches fill at 4 rows. Twelve requests sent at once arrive while the
    // one instance is busy with the first: the next call takes what queued
    // meanwhile (the adaptive wait never holds a request for the window).
    deploy(
        &server,
        work.path(),
        "mlp_batched",
        Some(serde_json::json!({
            "batching": true, "max_batch_size": 4, "max_batch_timeout": 2000, "max_queue_size": 32
        })),
    );
    let (alone_token, batched_token) = (token(&server, "mlp_alone"), token(&server, "mlp_batched"));

    // Every request on its own, one at a time, without batching.
    let singles: Vec<_> = (0..ROWS.len())
        .map(|i| predict(&server, "mlp_alone", &alone_token, i))
        .collect();

    // All at once to the batched service, released together by a barrier.
    // Whether two requests overlap depends on the machine's timing (a tiny
    // model answers in well under a millisecond), so bursts repeat until
    // one merged (a batcher that never merges fails after the last).
    const BURSTS: usize = 10;
    let rows: usize = ROWS.iter().sum();
    let mut sent = 0;
    for burst in 1..=BURSTS {
        let start = std::sync::Barrier::new(ROWS.len());
        let batched: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..ROWS.len())
                .map(|i| {
                    let (server, token, start) = (&server, &batched_token, &start);
                    s.spawn(move || {
                        start.wait();
                        predict(server, "mlp_batched", token, i)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        sent += ROWS.len();

        for (i, (alone, merged)) in singles.iter().zip(&batched).enumerate() {
            assert_eq!(alone.0, vec![ROWS[i] as u64, 3], "request {i}: shape");
            assert_eq!(merged.0, alone.0, "request {i}: shape");
            for (a, b) in alone.1.iter().zip(&merged.1) {
                // A merged call may take another kernel path: equal up to
                // float rounding.
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "request {i}: batched {:?} != alone {:?}",
                    merged.1,
                    alone.1
                );
            }
        }

        // The batched service ran fewer engine calls than requests (some
        // held more than one request's rows); the other ran one per request.
        let (sum, count) = batch_sum_and_count(&server, "mlp_batched");
        eprintln!("burst {burst}: mlp_batched: {sum} rows in {count} engine calls");
        assert_eq!(sum as usize, rows * burst, "every row ran exactly once");
        if count < sent as f64 {
            break;
        }
        assert!(
            burst < BURSTS,
            "no requests were merged: {count} engine calls for {sent} requests"
        );
    }
    let (sum, count) = batch_sum_and_count(&server, "mlp_alone");
    assert_eq!((sum as usize, count as usize), (rows, ROWS.len()));
}
