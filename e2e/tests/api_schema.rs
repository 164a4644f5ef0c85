//! schemathesis (unchanged, from the client venv) against a real `whet
//! serve` and its `/api/openapi.json`: every route with generated requests,
//! valid and not, signed in as the admin, with a deployed service to find.
//! It must find no 5xx, and every answer must match what the document says
//! of it (status codes, content types, headers, body schemas).
//!
//! Left out: schemathesis's `positive_data_acceptance` and
//! `negative_data_rejection`. The document gives each body's types; the
//! rules beyond them (name patterns, token lengths, cross-field limits) are
//! `shared::validate`'s, which answers 422 naming the field — a
//! schema-valid config can still be refused, by design.

use std::process::Command;

use whetstone_e2e::{clients_python, deploy_example, Server};

#[test]
fn schemathesis_finds_no_server_error_and_every_answer_matches_the_document() {
    let python = clients_python();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    deploy_example(&server, work.path(), 1);
    let name = "example_mlp";
    // Path parameters that exist, so that routes get past their 404.
    let config = work.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!("[parameters]\n\"path.name\" = \"{name}\"\n\"path.team\" = \"default\"\n\"path.user\" = \"admin\"\n"),
    )
    .unwrap();
    let st = python.with_file_name("st");
    let out = Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/api/openapi.json", server.url())])
        .args(["-H", &format!("Authorization: Bearer {}", server.admin_token())])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
            "--max-examples",
            "25",
            "--seed",
            "20261204",
            "--no-color",
            "--warnings",
            "off",
        ])
        .current_dir(work.path())
        .output()
        .expect("schemathesis runs");
    let said = String::from_utf8_lossy(&out.stdout);
    let summary = said
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("{summary}");
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary.contains("Tested: "), "{said}");
}
