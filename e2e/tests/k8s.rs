//! `whet export k8s` against the Kubernetes schemas, offline: the manifests
//! are checked by `kubernetes-validate` (from PyPI, in the client venv), a
//! validator we did not write, in strict mode (no unknown fields).

use std::process::Command;

use whetstone_e2e::{clients_python, whet_bin};

fn export(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(whet_bin())
        .args(["export", "k8s"])
        .args(args)
        .env_remove("WHET_DATABASE")
        .env_remove("WHET_STORE")
        .envs(env.iter().copied())
        .output()
        .expect("run whet export k8s")
}

fn validate(manifests: &std::path::Path) -> (bool, String) {
    let out = Command::new(clients_python())
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(manifests)
        .output()
        .expect("run kubernetes-validate");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn exported_manifests_pass_the_kubernetes_schemas() {
    let out = export(
        &[
            "--image",
            "registry.example.com/whetstone:1.0",
            "--nodes",
            "3",
            "--namespace",
            "ml",
            "--cpu",
            "8",
            "--memory-mib",
            "32768",
            "--database",
            "postgres://whet:secret@db.ml.svc:5432/whet",
            "--store",
            "s3://whet-artifacts/prod",
        ],
        &[
            ("AWS_ENDPOINT_URL", "http://minio.ml.svc:9000"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "key"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("WHET_ADMIN_TOKEN"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("whet.yaml");
    std::fs::write(&file, &out.stdout).unwrap();
    let (ok, report) = validate(&file);
    assert!(ok, "{report}");
    for kind in [
        "secret/whet",
        "configmap/whet",
        "deployment/whet",
        "service/whet",
    ] {
        assert!(report.contains(kind), "{kind} not validated: {report}");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "\"replicas\": 3",
        "/v2/health/ready",
        "/v2/health/live",
        "\"32768Mi\"",
        "http://minio.ml.svc:9000",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }

    // The validator is not a rubber stamp: a manifest with a field of the
    // wrong type fails it.
    let broken = text.replacen("\"replicas\": 3", "\"replicas\": \"three\"", 1);
    std::fs::write(&file, broken).unwrap();
    let (ok, report) = validate(&file);
    assert!(!ok && report.contains("replicas"), "{report}");
}

#[test]
fn bad_settings_are_refused_naming_the_flag() {
    let out = export(
        &[
            "--image",
            "i",
            "--database",
            "sqlite:///tmp/x.db",
            "--store",
            "s3://b/p",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--database"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// Nodes started from one Secret share its admin token: the first start
/// records it; a token too short to be one is refused at start.
#[test]
fn a_node_started_with_an_admin_token_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = "whet-k8s-0123456789abcdef";
    let server = whetstone_e2e::Server::start_with_env(
        &dir.path().join("data"),
        &[],
        &[("WHET_ADMIN_TOKEN".to_string(), token.to_string())],
    );
    let (s, me) = server.http("GET", "/api/v2/me", Some(token), b"");
    assert_eq!(s, 200, "{me}");
    assert!(me.contains("admin"), "{me}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap(),
        token
    );

    let out = Command::new(whet_bin())
        .args(["serve", "--addr", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("other"))
        .env("WHET_ADMIN_TOKEN", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WHET_ADMIN_TOKEN"), "{stderr}");
    assert!(
        !stderr.contains("short"),
        "the token is not echoed: {stderr}"
    );
}
