//! The deploy spine end to end: a real `whet serve`, the real CLI, the zoo's
//! MiniLM with the seed's CPU plugin config.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use whetstone_e2e::{npz_f32, zoo, Server};

fn logs(server: &Server, name: &str) -> Vec<String> {
    let out = server.cli(&["logs", name]).output().expect("whet logs");
    assert!(
        out.status.success(),
        "whet logs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

fn services(server: &Server) -> serde_json::Value {
    let (s, v) = server.admin("GET", "/api/v2/services", b"");
    assert_eq!(s, 200, "{v}");
    v
}

#[test]
fn minilm_deploys_survives_a_kill_predicts_scales_and_rejects_bad_input() {
    let zoo = zoo();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    whetstone_e2e::minilm_folder(&zoo, &work.path().join("minilm"));
    let cfg_path = work.path().join("service.json");
    std::fs::write(
        &cfg_path,
        whetstone_e2e::minilm_config("minilm_e2e", "minilm"),
    )
    .unwrap();

    // 1. Create, and kill the server (SIGKILL) while the plugin runs.
    let mut server = Server::start(&data, &[]);
    let mut create = server
        .cli(&["create", cfg_path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut printed = Vec::new();
    for line in BufReader::new(create.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        printed.push(line.clone());
        if line.contains("Running plugin eas-plugin-") {
            server.kill();
            break;
        }
    }
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("| Internet Endpoint | http://")),
        "no endpoint table: {printed:?}"
    );
    assert!(
        printed
            .iter()
            .any(|l| l.starts_with("|             Token | ")),
        "no token row: {printed:?}"
    );
    assert!(
        !create.wait().unwrap().success(),
        "create cannot succeed when its server dies"
    );

    // 2. Restart on the same data folder: the deploy resumes and finishes.
    let server = Server::start(&data, &[]);
    let follow = server.cli(&["logs", "minilm_e2e", "-f"]).output().unwrap();
    assert!(
        follow.status.success(),
        "deploy did not finish after restart:\n{}\n{}",
        String::from_utf8_lossy(&follow.stdout),
        String::from_utf8_lossy(&follow.stderr)
    );
    let log = logs(&server, "minilm_e2e");
    whetstone_e2e::assert_in_order(&log, whetstone_e2e::SEED_LINES_IN_ORDER);
    assert_eq!(
        count(
            &log,
            "[OK] Server restarted: resuming the deploy at stage plugin"
        ),
        1,
        "{log:#?}"
    );
    assert_eq!(
        count(&log, "[OK] Running plugin eas-plugin-"),
        2,
        "one interrupted run, one complete: {log:#?}"
    );
    assert_eq!(
        count(&log, "[OK] Selected "),
        1,
        "the optimization completed exactly once: {log:#?}"
    );
    assert_eq!(count(&log, "[OK] Service is running"), 1);
    assert_eq!(count(&log, "[ERROR]"), 0, "{log:#?}");
    assert!(!log
        .iter()
        .any(|l| l.contains("Running plugin") && !l.ends_with("pai-blade-deploy:cpu_latest")));

    // 3. Predict the 10 test sentences through the CLI; match the fp32 reference.
    let out = server
        .cli(&[
            "predict",
            "minilm_e2e",
            "--data",
            zoo.join("test_minilm.npz").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 10);
    let (shape, reference) = npz_f32(&zoo.join("ref_minilm.npz"), "last_hidden_state");
    assert_eq!(shape, vec![10, 128, 384]);
    let per = 128 * 384;
    let mut worst = 0f32;
    for (i, a) in answers.iter().enumerate() {
        let out = &a["outputs"][0];
        assert_eq!(out["name"], "last_hidden_state");
        assert_eq!(out["shape"], serde_json::json!([1, 128, 384]));
        let got: Vec<f32> = out["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        for (g, r) in got.iter().zip(&reference[i * per..(i + 1) * per]) {
            worst = worst.max((g - r).abs());
        }
    }
    assert!(
        worst <= 1e-4,
        "max abs error against ref_minilm.npz is {worst}"
    );

    // 4. Scale to 3 and redeploy the same config: the artifact is reused.
    let out = server.cli(&["scale", "minilm_e2e", "3"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server
        .cli(&["modify", "minilm_e2e", "-s", cfg_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = logs(&server, "minilm_e2e");
    assert_eq!(
        count(&log, "[OK] Running plugin eas-plugin-"),
        2,
        "scale/modify must not optimize again: {log:#?}"
    );
    assert_eq!(
        count(&log, "[OK] Reusing optimized artifact"),
        2,
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l == "[OK] Running [Total: 3, Pending: 0, Running: 3]"),
        "{log:#?}"
    );
    let (s, detail) = server.admin("GET", "/api/v2/services/minilm_e2e", b"");
    assert_eq!(s, 200);
    assert_eq!(detail["status"], "Running");
    assert_eq!(
        detail["running_instances"], 1,
        "modify went back to the config's 1 instance"
    );
    assert!(detail["report"]["selected"].as_str().is_some());
    let token = detail["token"].as_str().unwrap().to_string();

    // 5. Rejections leave stored state untouched.
    let before = services(&server);
    let log_before = logs(&server, "minilm_e2e").len();

    // 5a. Five seed-rule violations, all reported with their paths.
    let bad = serde_json::json!({
        "name": "Bad-Name!",
        "model_path": "minilm",
        "processor": "onnx_cpu",
        "metadata": { "instance": 0 },
        "plugins": [{
            "command": "blade --mode serve",
            "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
            "config": { "model_info": { "minilm.onnx": {
                "input_shapes": [["1x128"]],
                "quantization": { "weight_adjustment": "yes" }
            } } }
        }]
    });
    let (s, body) = server.admin("POST", "/api/v2/services", bad.to_string().as_bytes());
    assert_eq!(s, 422, "{body}");
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 5, "{body}");
    for p in [
        "name",
        "metadata.instance",
        "plugins[0].command",
        "input_shapes[0][0]",
        "quantization.weight_adjustment",
    ] {
        assert!(
            paths.iter().any(|x| x.ends_with(p)),
            "no error at {p}: {paths:?}"
        );
    }
    let bad_path = work.path().join("bad.json");
    std::fs::write(&bad_path, bad.to_string()).unwrap();
    let out = server
        .cli(&["create", bad_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("5 problem(s)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 5b. A model file that is not ONNX.
    let junk = work.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("model.onnx"), b"this is not a protobuf").unwrap();
    let junk_cfg = work.path().join("junk.json");
    std::fs::write(
        &junk_cfg,
        serde_json::json!({"name": "junk_model", "model_path": "junk", "processor": "onnx_cpu"})
            .to_string(),
    )
    .unwrap();
    let out = server
        .cli(&["create", junk_cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("model_path") && err.contains("not a valid ONNX model"),
        "{err}"
    );

    // 5c. A zip with '../' entries.
    let zip_path = work.path().join("evil.zip");
    {
        use std::io::Write;
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        z.start_file("model.onnx", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(b"x").unwrap();
        z.start_file("../../evil.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(b"owned").unwrap();
        z.finish().unwrap();
    }
    let models_before = std::fs::read_dir(data.join("models")).unwrap().count();
    let uploads_before = std::fs::read_dir(data.join("uploads")).unwrap().count();
    let zip_cfg = work.path().join("zip.json");
    std::fs::write(
        &zip_cfg,
        serde_json::json!({"name": "zip_model", "model_path": "evil.zip", "processor": "onnx_cpu"})
            .to_string(),
    )
    .unwrap();
    let out = server
        .cli(&["create", zip_cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("../../evil.txt") && err.contains("escapes"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(data.join("models")).unwrap().count(),
        models_before
    );
    assert_eq!(
        std::fs::read_dir(data.join("uploads")).unwrap().count(),
        uploads_before
    );
    assert!(!data.join("evil.txt").exists() && !work.path().join("evil.txt").exists());

    // 5d. Predict with a wrong token, and with a wrong shape.
    // The declared shape (1*128): an artifact specialized for it must serve it.
    let ids: Vec<i64> = [101, 7592, 2088, 102]
        .into_iter()
        .chain(std::iter::repeat_n(0, 124))
        .collect();
    let mask: Vec<i64> = (0..128).map(|i| (i < 4) as i64).collect();
    let ok_body = serde_json::json!({"inputs": [
        {"name": "input_ids", "shape": [1, 128], "datatype": "INT64", "data": ids},
        {"name": "attention_mask", "shape": [1, 128], "datatype": "INT64", "data": mask},
        {"name": "token_type_ids", "shape": [1, 128], "datatype": "INT64", "data": vec![0i64; 128]}
    ]});
    let (s, body) = server.http(
        "POST",
        "/api/predict/minilm_e2e",
        Some("not-the-token"),
        ok_body.to_string().as_bytes(),
    );
    assert_eq!(s, 401, "{body}");
    let mut wrong = ok_body.clone();
    wrong["inputs"][0]["shape"] = serde_json::json!([128]);
    let (s, body) = server.http(
        "POST",
        "/api/predict/minilm_e2e",
        Some(&token),
        wrong.to_string().as_bytes(),
    );
    assert_eq!(s, 400, "{body}");
    assert!(
        body.contains("input_ids") && body.contains("expected shape"),
        "{body}"
    );
    let (s, body) = server.http(
        "POST",
        "/api/predict/minilm_e2e",
        Some(&token),
        ok_body.to_string().as_bytes(),
    );
    assert_eq!(s, 200, "{body}");

    // 5e. The same model over KServe v2 / Open Inference Protocol.
    let bearer = format!("Bearer {token}");
    assert_eq!(server.http("GET", "/v2/health/live", None, b"").0, 200);
    assert_eq!(server.http("GET", "/v2/health/ready", None, b"").0, 200);
    let (s, meta) = server.http("GET", "/v2/models/minilm_e2e", Some(&bearer), b"");
    assert_eq!(s, 200, "{meta}");
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["inputs"][0]["name"], "input_ids");
    assert_eq!(meta["inputs"][0]["datatype"], "INT64");
    assert_eq!(meta["outputs"][0]["name"], "last_hidden_state");
    assert_eq!(
        server
            .http("GET", "/v2/models/minilm_e2e/ready", Some(&bearer), b"")
            .0,
        200
    );
    let (s, body) = server.http(
        "POST",
        "/v2/models/minilm_e2e/infer",
        Some(&bearer),
        ok_body.to_string().as_bytes(),
    );
    assert_eq!(s, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["model_version"], "1");
    assert_eq!(
        answer["outputs"][0]["shape"],
        serde_json::json!([1, 128, 384])
    );
    let (s, _) = server.http(
        "POST",
        "/v2/models/minilm_e2e/versions/1/infer",
        Some(&bearer),
        ok_body.to_string().as_bytes(),
    );
    assert_eq!(s, 200);
    let (s, body) = server.http(
        "POST",
        "/v2/models/minilm_e2e/versions/2/infer",
        Some(&bearer),
        ok_body.to_string().as_bytes(),
    );
    assert_eq!(s, 404, "{body}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("version")
    );
    assert_eq!(
        server
            .http("GET", "/v2/models/minilm_e2e", Some("Bearer wrong"), b"")
            .0,
        401
    );

    // 5f. Prometheus metrics saw all of it.
    let (s, metrics) = server.http("GET", "/metrics", Some(&server.admin_token()), b"");
    assert_eq!(s, 200);
    for want in [
        r#"whet_requests_total{code="200",protocol="eas",service="minilm_e2e"}"#,
        r#"whet_requests_total{code="401",protocol="eas",service="minilm_e2e"}"#,
        r#"whet_requests_total{code="200",protocol="kserve",service="minilm_e2e"}"#,
        r#"whet_engine_duration_seconds_count{protocol="eas",service="minilm_e2e"}"#,
        r#"whet_queue_duration_seconds_count{protocol="kserve",service="minilm_e2e"}"#,
        r#"whet_batch_size_count{service="minilm_e2e"}"#,
        "process_resident_memory_bytes ",
        r#"whet_instances{service="minilm_e2e"} 1"#,
        r#"whet_deploy_duration_seconds_count{outcome="ok"} 3"#,
        r#"whet_optimization_duration_seconds_count{outcome="ok"} 1"#,
    ] {
        assert!(
            metrics.contains(want),
            "{want} missing from /metrics:\n{metrics}"
        );
    }

    assert_eq!(
        services(&server),
        before,
        "a rejected request changed stored services"
    );
    assert_eq!(
        logs(&server, "minilm_e2e").len(),
        log_before,
        "a rejected request wrote to the log"
    );
    assert!(!Path::new(&data.join("models")).join("evil.txt").exists());
}
