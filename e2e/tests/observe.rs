//! Seeing what a service does, end to end on a real server: the request
//! log keeps sampled predictions and every failed one with their bodies.

use whetstone_e2e::Server;

fn create(server: &Server, work: &std::path::Path, name: &str) -> String {
    whetstone_e2e::create_mlp(server, work, name, serde_json::json!({}))
}

fn body(values: &[f32]) -> String {
    serde_json::json!({"inputs": [{"name": "x", "shape": [1, values.len()], "datatype": "FP32", "data": values}]})
        .to_string()
}

#[test]
fn the_request_log_keeps_sampled_and_failed_predictions_with_their_bodies() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &["--request-log-rate", "1"]);
    let token = create(&server, work.path(), "logged");
    for i in 0..3 {
        let (s, text) = server.http(
            "POST",
            "/api/predict/logged",
            Some(&token),
            body(&[i as f32, 0.5, 0.25, 1.0]).as_bytes(),
        );
        assert_eq!(s, 200, "{text}");
    }
    // Three values for an input of four: refused, and kept with why.
    let (s, _) = server.http(
        "POST",
        "/v2/models/logged/infer",
        Some(&token),
        body(&[1.0, 2.0, 3.0]).as_bytes(),
    );
    assert_eq!(s, 400);
    let (s, log) = server.admin("GET", "/api/v2/services/logged/requests", b"");
    assert_eq!(s, 200, "{log}");
    let log = log.as_array().unwrap().clone();
    assert_eq!(log.len(), 4, "{log:?}");
    let failed = &log[0];
    assert_eq!(failed["status"], 400, "{failed}");
    assert_eq!(failed["protocol"], "kserve", "{failed}");
    assert!(
        failed["request"]
            .as_str()
            .unwrap()
            .contains("[1.0,2.0,3.0]"),
        "{failed}"
    );
    assert!(
        failed["response"].as_str().unwrap().contains("x"),
        "{failed}"
    );
    let ok = &log[1];
    assert_eq!(
        (ok["status"].as_u64(), ok["version"].as_u64()),
        (Some(200), Some(1)),
        "{ok}"
    );
    assert!(
        ok["request"]
            .as_str()
            .unwrap()
            .contains("[2.0,0.5,0.25,1.0]"),
        "{ok}"
    );
    assert!(
        ok["response"].as_str().unwrap().contains("\"outputs\""),
        "{ok}"
    );
    assert!(ok["latency_ms"].as_f64().unwrap() > 0.0, "{ok}");

    // The CLI prints the same, and the minute's numbers.
    let out = server
        .cli(&["requests", "logged", "--bodies"])
        .output()
        .expect("whet requests");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(" eas ") || l.contains(" kserve "))
            .count(),
        4,
        "{text}"
    );
    assert!(text.contains("[1.0,2.0,3.0]"), "{text}");
    let out = server
        .cli(&["metrics", "logged"])
        .output()
        .expect("whet metrics");
    let text = String::from_utf8_lossy(&out.stdout);
    // (The four may straddle a minute.)
    let sums = text.lines().skip(1).fold((0, 0), |(r, e), l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .skip(1)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        (
            r + f.first().copied().unwrap_or(0),
            e + f.get(1).copied().unwrap_or(0),
        )
    });
    assert_eq!(sums, (4, 1), "{text}");

    // An unknown service is a 404.
    let (s, _) = server.admin("GET", "/api/v2/services/nope/requests", b"");
    assert_eq!(s, 404);
}

#[test]
fn a_bad_request_log_rate_is_refused_at_start() {
    let out = std::process::Command::new(whetstone_e2e::whet_bin())
        .args(["serve", "--request-log-rate", "2"])
        .output()
        .expect("whet serve");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--request-log-rate"),
        "{out:?}"
    );
}

/// One span as the test's OTLP receiver decoded it.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    start: u64,
    end: u64,
    attributes: Vec<(String, String)>,
}

/// An OTLP/HTTP traces receiver: decodes every POST body as an
/// `ExportTraceServiceRequest` (protobuf) and keeps its spans.
fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Received>>>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = spans.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if first {
                            assert!(line.starts_with("POST /v1/traces "), "{line}");
                            first = false;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).unwrap();
                    let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
                    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
                    let mut out = kept.lock().unwrap();
                    for rs in &req.resource_spans {
                        for ss in &rs.scope_spans {
                            for sp in &ss.spans {
                                out.push(Received {
                                    name: sp.name.clone(),
                                    trace_id: hex(&sp.trace_id),
                                    span_id: hex(&sp.span_id),
                                    parent: hex(&sp.parent_span_id),
                                    start: sp.start_time_unix_nano,
                                    end: sp.end_time_unix_nano,
                                    attributes: sp
                                        .attributes
                                        .iter()
                                        .map(|kv| (kv.key.clone(), format!("{:?}", kv.value)))
                                        .collect(),
                                });
                            }
                        }
                    }
                    drop(out);
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
    (url, spans)
}

#[test]
fn predictions_are_traced_over_otlp_with_queue_batch_and_engine_spans() {
    let (url, spans) = receiver();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(
        &work.path().join("data"),
        &["--otlp-endpoint", &url, "--request-log-rate", "1"],
    );
    let token = create(&server, work.path(), "traced");
    let addr = server.url().trim_start_matches("http://").to_string();
    // A caller's trace is continued: its id, and its span as the parent.
    let caller = "0af7651916cd43dd8448eb211c80319c";
    let parent = "b7ad6b7169203331";
    let traceparent = format!("00-{caller}-{parent}-01");
    let (status, head, text) = whetstone_e2e::http_head(
        &addr,
        "POST",
        "/api/predict/traced",
        &[
            ("Authorization", token.as_str()),
            ("traceparent", traceparent.as_str()),
        ],
        body(&[0.1, 0.2, 0.3, 0.4]).as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    assert!(head.contains(&format!("x-trace-id: {caller}")), "{head:?}");
    // Without one, a new trace, named in the answer; a failure too.
    let (status, head, _) = whetstone_e2e::http_head(
        &addr,
        "POST",
        "/v2/models/traced/infer",
        &[("Authorization", token.as_str())],
        body(&[1.0, 2.0]).as_bytes(),
    );
    assert_eq!(status, 400);
    let failed_trace = head
        .iter()
        .find_map(|l| l.strip_prefix("x-trace-id: "))
        .expect("a failed prediction names its trace")
        .to_string();
    assert_eq!(failed_trace.len(), 32);
    assert_ne!(failed_trace, caller);

    let t0 = std::time::Instant::now();
    let ours = loop {
        let got: Vec<Received> = spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == caller)
            .cloned()
            .collect();
        if got.len() >= 4 || t0.elapsed() > std::time::Duration::from_secs(20) {
            break got;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    eprintln!("{ours:#?}");
    let by = |n: &str| {
        ours.iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no {n} span in {ours:#?}"))
    };
    let root = by("predict traced");
    assert_eq!(root.parent, parent, "the caller's span is the parent");
    assert!(
        root.attributes
            .iter()
            .any(|(k, v)| k == "whet.version" && v.contains("IntValue(1)")),
        "{root:?}"
    );
    assert!(
        root.attributes
            .iter()
            .any(|(k, v)| k == "http.response.status_code" && v.contains("IntValue(200)")),
        "{root:?}"
    );
    let (queue, batch, engine) = (by("queue"), by("batch"), by("engine"));
    for part in [queue, batch, engine] {
        assert_eq!(part.parent, root.span_id, "{part:?}");
        assert!(
            part.start >= root.start && part.end <= root.end,
            "{part:?} inside {root:?}"
        );
        assert!(
            part.attributes.iter().any(|(k, _)| k == "whet.batch_rows"),
            "{part:?}"
        );
    }
    assert!(
        queue.end <= batch.start + 1 && batch.end <= engine.start + 1,
        "in order: {ours:#?}"
    );
    // The failed prediction's trace was exported too, and the request log
    // names both traces.
    let (_, log) = server.admin("GET", "/api/v2/services/traced/requests", b"");
    let ids: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["trace_id"].as_str())
        .collect();
    assert_eq!(ids, vec![failed_trace.as_str(), caller], "{log}");
}
