//! KServe v2 over gRPC against a real `whet serve --grpc-addr`, with the
//! client tonic generates from the server's own proto: typed `contents`
//! answer as the HTTP route does; the switch `metadata.enable_grpc` (off by
//! default, taken by a modify); the status codes of a stranger, an unknown
//! version, a message over the service's size limit and a stopped service;
//! and, over raw HTTP/2, that what a caller must not send is refused from a
//! message's first bytes, without waiting for the rest.
//! (Triton's own gRPC client and perf_analyzer are in tests/clients.rs.)

use backend::serving::kserve::grpc::proto::{
    self, grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::InferInputTensor, InferTensorContents, ModelInferRequest,
};
use tonic::transport::Channel;
use whetstone_e2e::Server;

const ROW: [f32; 4] = [0.5, -1.0, 0.25, 2.0];

fn deploy(server: &Server, dir: &std::path::Path, name: &str, grpc: Option<bool>) {
    let mut metadata = serde_json::json!({ "instance": 1 });
    if let Some(on) = grpc {
        metadata["enable_grpc"] = on.into();
    }
    let cfg = dir.join(format!("{name}.json"));
    std::fs::write(
        &cfg,
        serde_json::json!({
            "name": name, "model_path": "mlp.onnx", "processor": "onnx_cpu", "metadata": metadata,
        })
        .to_string(),
    )
    .unwrap();
    let verb: &[&str] = if grpc.is_some() && name == "grpc_off" {
        &["modify", name, "-s"]
    } else {
        &["create"]
    };
    let out = server
        .cli(&[verb, &[cfg.to_str().unwrap()]].concat())
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{verb:?} {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn token(server: &Server, name: &str) -> String {
    let (s, d) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
    assert_eq!(s, 200, "{d}");
    d["token"].as_str().unwrap().to_string()
}

fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn typed_request(model: &str) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        id: "typed-1".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            contents: Some(InferTensorContents {
                fp32_contents: ROW.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A server with a gRPC listener, and the MLP in its work folder for
/// [`deploy`]: the folder, the server and the listener's address.
fn grpc_server() -> (tempfile::TempDir, Server, String) {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("mlp.onnx"),
        optimizer::onnx_build::mlp(4, 32, 3),
    )
    .unwrap();
    let server = Server::start(&work.path().join("data"), &["--grpc-addr", "127.0.0.1:0"]);
    let addr = server.grpc_addr.clone().expect("a gRPC address");
    (work, server, addr)
}

#[test]
fn grpc_answers_like_http_and_refuses_with_the_right_codes() {
    let (work, server, addr) = grpc_server();
    let addr = format!("http://{addr}");
    deploy(&server, work.path(), "grpc_on", Some(true));
    deploy(&server, work.path(), "grpc_off", None);
    let (on, off) = (token(&server, "grpc_on"), token(&server, "grpc_off"));

    // The HTTP answer, for comparison.
    let body = serde_json::json!({
        "inputs": [{ "name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROW }]
    });
    let (s, text) = server.http(
        "POST",
        "/v2/models/grpc_on/infer",
        Some(&format!("Bearer {on}")),
        body.to_string().as_bytes(),
    );
    assert_eq!(s, 200, "{text}");
    let http: serde_json::Value = serde_json::from_str(&text).unwrap();
    let want: Vec<f32> = http["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c: GrpcInferenceServiceClient<Channel> = rt
        .block_on(GrpcInferenceServiceClient::connect(addr.clone()))
        .unwrap()
        .max_encoding_message_size(usize::MAX);

    // Typed contents in, raw outputs back: the HTTP route's numbers.
    let answer = rt
        .block_on(c.model_infer(authed(typed_request("grpc_on"), &on)))
        .unwrap()
        .into_inner();
    assert_eq!(
        (answer.model_name.as_str(), answer.id.as_str()),
        ("grpc_on", "typed-1")
    );
    assert_eq!(answer.outputs[0].name, "y");
    assert_eq!(answer.outputs[0].shape, vec![1, 3]);
    let got: Vec<f32> = answer.raw_output_contents[0]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(got, want);

    let code = |r: Result<tonic::Response<_>, tonic::Status>| -> (tonic::Code, String) {
        let e = r
            .map(|_: tonic::Response<proto::ModelInferResponse>| ())
            .unwrap_err();
        (e.code(), e.message().to_string())
    };
    // A stranger learns nothing, whether the service exists or not.
    let (c1, m1) = code(rt.block_on(c.model_infer(authed(typed_request("grpc_on"), "wrong"))));
    let (c2, m2) = code(rt.block_on(c.model_infer(authed(typed_request("grpc_nope"), "wrong"))));
    assert_eq!(
        (c1, c2),
        (tonic::Code::Unauthenticated, tonic::Code::Unauthenticated)
    );
    assert!(m1.contains("missing or wrong token") && m2.contains("missing or wrong token"));
    // The switch is off by default, and says so to the token's holder.
    let (c3, m3) = code(rt.block_on(c.model_infer(authed(typed_request("grpc_off"), &off))));
    assert_eq!(c3, tonic::Code::FailedPrecondition, "{m3}");
    assert!(m3.contains("metadata.enable_grpc"), "{m3}");
    // An unknown version.
    let mut versioned = typed_request("grpc_on");
    versioned.model_version = "7".into();
    let (c4, m4) = code(rt.block_on(c.model_infer(authed(versioned, &on))));
    assert_eq!(c4, tonic::Code::NotFound, "{m4}");
    // Over the service's size limit (1 MiB for this model: its floor),
    // refused from the message's first bytes.
    let mut big = typed_request("grpc_on");
    big.inputs[0].shape = vec![1 << 16, 4];
    big.inputs[0].contents = None;
    big.raw_input_contents = vec![vec![0u8; 1 << 20].into()];
    let (c5, m5) = code(rt.block_on(c.model_infer(authed(big, &on))));
    assert_eq!(c5, tonic::Code::ResourceExhausted, "{m5}");
    assert!(m5.contains("at most 1048576 bytes"), "{m5}");
    // A stranger's large message is refused as a stranger's, unread: the
    // service's limit is not told to someone without its token.
    let mut big = typed_request("grpc_on");
    big.inputs[0].shape = vec![1 << 16, 4];
    big.inputs[0].contents = None;
    big.raw_input_contents = vec![vec![0u8; 1 << 20].into()];
    let (c5b, m5b) = code(rt.block_on(c.model_infer(authed(big, "wrong"))));
    assert_eq!(c5b, tonic::Code::Unauthenticated, "{m5b}");
    // A stream opens only with some service's token.
    let opened = rt.block_on(c.model_stream_infer(authed(
        tonic::codegen::tokio_stream::iter([typed_request("grpc_on")]),
        "wrong",
    )));
    let e = opened.map(|_| ()).unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    // The service still answers afterwards.
    rt.block_on(c.model_infer(authed(typed_request("grpc_on"), &on)))
        .unwrap();

    // A modify turns the switch on: the same pool (same artifact) answers.
    deploy(&server, work.path(), "grpc_off", Some(true));
    rt.block_on(c.model_infer(authed(typed_request("grpc_off"), &off)))
        .unwrap();

    // A stopped service: UNAVAILABLE for inference, not ready.
    let out = server.cli(&["stop", "grpc_on"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (c6, m6) = code(rt.block_on(c.model_infer(authed(typed_request("grpc_on"), &on))));
    assert_eq!(c6, tonic::Code::Unavailable, "{m6}");
    let ready = rt
        .block_on(c.model_ready(authed(
            proto::ModelReadyRequest {
                name: "grpc_on".into(),
                version: String::new(),
            },
            &on,
        )))
        .unwrap()
        .into_inner();
    assert!(!ready.ready);
    let live = rt
        .block_on(c.server_live(proto::ServerLiveRequest {}))
        .unwrap()
        .into_inner();
    assert!(live.live);

    // Counted per protocol, under the HTTP status of each outcome.
    let (s, metrics) = server.http("GET", "/metrics", Some(&server.admin_token()), b"");
    assert_eq!(s, 200);
    for want in [
        r#"whet_requests_total{code="200",protocol="grpc",service="grpc_on"}"#,
        r#"whet_requests_total{code="413",protocol="grpc",service="grpc_on"}"#,
        r#"whet_requests_total{code="503",protocol="grpc",service="grpc_on"}"#,
        r#"whet_requests_total{code="409",protocol="grpc",service="grpc_off"}"#,
    ] {
        assert!(metrics.contains(want), "{want} missing from /metrics");
    }
}

/// Over raw HTTP/2: a call whose message starts with `first` (frame header
/// included) and never goes on. The gRPC status and message it gets, which
/// must come while the rest is still awaited.
async fn first_bytes_only(
    addr: &str,
    path: &str,
    token: Option<&str>,
    first: &[u8],
) -> (String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (answer, mut sending) = client
        .send_request(grpc_call(addr, path, token), false)
        .unwrap();
    sending
        .send_data(bytes::Bytes::copy_from_slice(first), false)
        .unwrap();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(15), answer)
        .await
        .expect("refused before the rest of the message came")
        .unwrap();
    let header = |n: &str| {
        answer
            .headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let out = (header("grpc-status"), header("grpc-message"));
    drop(sending);
    out
}

/// The head of a gRPC call of `path`, as raw HTTP/2 sends it.
fn grpc_call(addr: &str, path: &str, token: Option<&str>) -> http::Request<()> {
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.body(()).unwrap()
}

/// A gRPC frame header declaring `len` bytes, then `start`.
fn framed(len: u32, start: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(start);
    out
}

#[test]
fn what_a_caller_must_not_send_is_refused_from_its_first_bytes() {
    let (work, server, addr) = grpc_server();
    deploy(&server, work.path(), "grpc_on", Some(true));
    let on = token(&server, "grpc_on");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Codes: 16 UNAUTHENTICATED, 8 RESOURCE_EXHAUSTED.
    let unauthenticated = "16";
    let exhausted = "8";

    // A stranger's inference message whose first field is not the model's
    // name (field 3, `id`): it may not hold the server's body budget while
    // the rest of its 200 MiB is awaited.
    let nameless = framed(200 << 20, &[0x1a, 0x01, b'x']);
    for token in [None, Some("wrong")] {
        let (code, message) = rt.block_on(first_bytes_only(
            &addr,
            "/inference.GRPCInferenceService/ModelInfer",
            token,
            &nameless,
        ));
        assert_eq!(code, unauthenticated, "{message}");
    }
    // A method other than inference takes a few bytes, whoever asks:
    // a large message is refused unread.
    for (path, token) in [
        ("/inference.GRPCInferenceService/ServerLive", None),
        (
            "/inference.GRPCInferenceService/ModelMetadata",
            Some(on.as_str()),
        ),
        ("/inference.GRPCInferenceService/NoSuchMethod", None),
    ] {
        let (code, message) = rt.block_on(first_bytes_only(
            &addr,
            path,
            token,
            &framed(100 << 20, &[0x0a]),
        ));
        assert_eq!(code, exhausted, "{path}: {message}");
        assert!(message.contains("65536"), "{path}: {message}");
    }
    // Stream messages hold the budget while they arrive: four streams, each
    // a message of 256 MiB begun and not finished, hold all of the 1 GiB; a
    // call then finds none left, and gets it back once they are gone.
    let held = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        let conn = tokio::spawn(conn);
        let mut streams = Vec::new();
        for _ in 0..4 {
            let mut client = client.clone().ready().await.unwrap();
            let req = grpc_call(
                &addr,
                "/inference.GRPCInferenceService/ModelStreamInfer",
                Some(&on),
            );
            let (answer, mut sending) = client.send_request(req, false).unwrap();
            sending
                .send_data(framed(256 << 20, &[0x0a, 0x01, b'x']).into(), false)
                .unwrap();
            // The stream is open once its answer's headers come.
            let answer = tokio::time::timeout(std::time::Duration::from_secs(10), answer)
                .await
                .expect("the stream opens")
                .unwrap();
            assert_eq!(answer.status(), 200);
            streams.push((answer, sending));
        }
        (client, conn, streams)
    });
    let mut c: GrpcInferenceServiceClient<Channel> = rt
        .block_on(GrpcInferenceServiceClient::connect(format!(
            "http://{addr}"
        )))
        .unwrap();
    let mut infer_until = |refused: bool| {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let got = rt
                .block_on(c.model_infer(authed(typed_request("grpc_on"), &on)))
                .map(|_| ())
                .map_err(|e| (e.code(), e.message().to_string()));
            if got.is_err() == refused || std::time::Instant::now() > until {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let (code, message) = infer_until(true).expect_err("the budget is held");
    assert_eq!(code, tonic::Code::Unavailable, "{message}");
    assert!(message.contains("prediction bodies"), "{message}");
    let (client, conn, streams) = held;
    drop((client, streams));
    conn.abort();
    infer_until(false).expect("the budget is back");

    // Small messages still go through.
    let meta = rt
        .block_on(c.model_metadata(authed(
            proto::ModelMetadataRequest {
                name: "grpc_on".into(),
                version: String::new(),
            },
            &on,
        )))
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "grpc_on");
    rt.block_on(c.model_infer(authed(typed_request("grpc_on"), &on)))
        .unwrap();
}
