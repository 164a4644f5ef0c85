//! Third-party clients, unchanged, against a real `whet serve` with the
//! zoo's MiniLM deployed: the EAS Python SDK (signed auth; StringRequest,
//! TFRequest and TorchRequest bodies), Triton's HTTP client (KServe v2 JSON
//! and binary tensors), Triton's gRPC client (`--grpc-addr`) and
//! perf_analyzer over HTTP and gRPC (concurrency 1 to 16). The scripts
//! are in `e2e/clients/`; they run on the venv of `scripts/install-clients.sh`
//! and compare every answer with `ref_minilm.npz`.

use std::process::Command;
use std::time::Instant;

use whetstone_e2e::{clients_dir, clients_python, deploy_minilm_with, zoo, Server};

const NAME: &str = "minilm_clients";

#[test]
fn eas_sdk_triton_client_and_perf_analyzer_work_unchanged() {
    // Before anything slow: the venv must be there.
    let python = clients_python();
    let zoo = zoo();
    let work = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&work.path().join("data"), &["--grpc-addr", "127.0.0.1:0"]);
    let grpc = server
        .grpc_addr
        .clone()
        .expect("the start line names the gRPC address");
    let t0 = Instant::now();
    let token = deploy_minilm_with(&server, work.path(), NAME, |cfg| {
        cfg["metadata"]["enable_grpc"] = true.into();
    });
    eprintln!("deployed {NAME} in {:.1} s", t0.elapsed().as_secs_f64());

    let mut failed = Vec::new();
    for script in [
        "eas_sdk.py",
        "triton_http.py",
        "triton_grpc.py",
        "perf_analyzer.py",
    ] {
        let t0 = Instant::now();
        let out = Command::new(&python)
            // No __pycache__ left in the source tree.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .arg(clients_dir().join(script))
            .args(["--url", &server.url(), "--service", NAME, "--token", &token])
            .args(["--grpc", &grpc])
            .arg("--zoo")
            .arg(&zoo)
            .output()
            .unwrap_or_else(|e| panic!("run {} {script}: {e}", python.display()));
        eprintln!(
            "==== {script} ({:.1} s, {}) ====\n{}{}",
            t0.elapsed().as_secs_f64(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            failed.push(script);
        }
    }
    assert!(
        failed.is_empty(),
        "client scripts failed: {failed:?} (output above)"
    );

    // The server saw each protocol, and labelled the refusals.
    let (s, metrics) = server.http("GET", "/metrics", Some(&server.admin_token()), b"");
    assert_eq!(s, 200);
    for want in [
        format!(r#"whet_requests_total{{code="200",protocol="eas",service="{NAME}"}}"#),
        format!(r#"whet_requests_total{{code="401",protocol="eas",service="{NAME}"}}"#),
        format!(r#"whet_requests_total{{code="400",protocol="eas",service="{NAME}"}}"#),
        format!(r#"whet_requests_total{{code="200",protocol="kserve",service="{NAME}"}}"#),
        // gRPC answers and refusals, counted under the HTTP status of
        // the same outcome.
        format!(r#"whet_requests_total{{code="200",protocol="grpc",service="{NAME}"}}"#),
        format!(r#"whet_requests_total{{code="401",protocol="grpc",service="{NAME}"}}"#),
        format!(r#"whet_requests_total{{code="400",protocol="grpc",service="{NAME}"}}"#),
    ] {
        assert!(
            metrics.contains(&want),
            "{want} missing from /metrics:\n{metrics}"
        );
    }
}
