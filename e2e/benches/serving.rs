//! Serving benchmark: the time of a clean deploy of the zoo's MiniLM with the
//! seed's CPU plugin config (o1); p50 latency at batch 1, one connection, of
//! `POST /api/predict` and `POST /v2/models/{name}/infer` (keep-alive HTTP,
//! JSON) and of gRPC `ModelInfer` (`--grpc-addr`, raw tensors as Triton's
//! clients send them) against the bare engine session on the same artifact
//! with the same settings, interleaved in one run; throughput at 16
//! concurrent callers over KServe HTTP and gRPC; the bare engine at batch
//! 1, 8 and 16; and, at o1 and o2, with dynamic batching off and on: p50 at
//! one connection (seq 128) and throughput at 16 connections (seq 16).
//! Where the clients venv is installed (`scripts/install-clients.sh`), also
//! gRPC p50 as Triton's own `perf_analyzer` measures it (its C++ client),
//! in rounds beside the bare engine.
//! `WHET_BENCH_QUICK=1` stops after the protocol figures.
//!
//! The service's instance is a runner process (`whet-runner` beside `whet`),
//! so the HTTP figures include the Unix-socket hop to it.
//!
//! Run: `cargo build --release -p whetstone-backend --bin whet && cargo build
//! --release -p whetstone-runner --bin whet-runner && cargo bench -p
//! whetstone-e2e --bench serving`. Needs the zoo.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use backend::serving::kserve::grpc::proto::{
    grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::InferInputTensor, ModelInferRequest,
};
use optimizer::artifact::ArtifactMeta;
use optimizer::engine::{Engine, InferenceEngine, SessionSettings};
use optimizer::tensor::{Tensor, TensorData};
use whetstone_e2e::{zoo, Server};

struct KeepAlive {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    addr: String,
}

impl KeepAlive {
    fn new(addr: &str) -> KeepAlive {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        KeepAlive {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
            addr: addr.to_string(),
        }
    }

    fn post(&mut self, path: &str, auth: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        self.writer.write_all(head.as_bytes()).unwrap();
        self.writer.write_all(body).unwrap();
        let mut status = 0;
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if l.starts_with("HTTP/1.1") {
                status = l.split_whitespace().nth(1).unwrap().parse().unwrap();
            } else if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut buf = vec![0; len];
        self.reader.read_exact(&mut buf).unwrap();
        (status, buf)
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn p50(v: &mut [f64]) -> f64 {
    pct(v, 0.5)
}

/// `conns` keep-alive connections sending `body` back to back for `secs`:
/// (requests per second, p50 ms, p99 ms, non-200 answers).
fn load(
    addr: &str,
    path: &str,
    auth: &str,
    body: &[u8],
    conns: usize,
    secs: f64,
) -> (f64, f64, f64, usize) {
    let start = Instant::now();
    let deadline = start + std::time::Duration::from_secs_f64(secs);
    let results: Vec<(Vec<f64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|_| {
                s.spawn(|| {
                    let mut c = KeepAlive::new(addr);
                    let (mut lat, mut errors) = (Vec::new(), 0);
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let (status, _) = c.post(path, auth, body);
                        if status == 200 {
                            lat.push(t.elapsed().as_secs_f64() * 1e3);
                        } else {
                            errors += 1;
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    load_figures(start, &results)
}

/// Each caller's latencies (ms) and errors since `start`, as
/// (requests per second, p50, p99, errors).
fn load_figures(start: Instant, results: &[(Vec<f64>, usize)]) -> Load {
    let elapsed = start.elapsed().as_secs_f64();
    let mut all: Vec<f64> = results
        .iter()
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    let errors = results.iter().map(|(_, e)| e).sum();
    let rps = all.len() as f64 / elapsed;
    (rps, pct(&mut all, 0.5), pct(&mut all, 0.99), errors)
}

/// A gRPC client on its own connection, with flow-control windows as
/// large as the server's: gRPC's C++ core (Triton's clients, perf_analyzer)
/// grows its windows to the bandwidth-delay product by itself; h2's default
/// 64 KiB would make the [1,128,384] answer wait for window updates.
async fn grpc_client(addr: &str) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
    let window = backend::http::grpc::WINDOW_BYTES;
    let channel = tonic::transport::Endpoint::from_shared(addr.to_string())
        .unwrap()
        .initial_stream_window_size(window)
        .initial_connection_window_size(4 * window)
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap();
    GrpcInferenceServiceClient::new(channel)
}

/// A gRPC `ModelInfer` call with the service token, as Triton's clients
/// send it.
fn grpc_request(req: &ModelInferRequest, token: &str) -> tonic::Request<ModelInferRequest> {
    let mut r = tonic::Request::new(req.clone());
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// `callers` concurrent gRPC callers (each its own HTTP/2 connection, as
/// perf_analyzer's) sending `req` back to back for `secs`: as [`load`].
fn grpc_load(
    addr: &str,
    req: &ModelInferRequest,
    token: &str,
    callers: usize,
    secs: f64,
) -> (f64, f64, f64, usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let deadline = start + std::time::Duration::from_secs_f64(secs);
    let results: Vec<(Vec<f64>, usize)> = rt.block_on(async {
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let (addr, req, token) = (addr.to_string(), req.clone(), token.to_string());
                tokio::spawn(async move {
                    let mut c = grpc_client(&addr).await;
                    let (mut lat, mut errors) = (Vec::new(), 0);
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match c.model_infer(grpc_request(&req, &token)).await {
                            Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e3),
                            Err(_) => errors += 1,
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    load_figures(start, &results)
}

/// Mean milliseconds a request of `service` spent in the server outside the
/// engine call (parsing, queueing, serializing), and in the engine call
/// (the runner hop included), per protocol, from the sums and counts of
/// `/metrics`.
fn server_side_ms(server: &Server, service: &str) -> Vec<(String, f64, f64)> {
    let (_, text) = server.http("GET", "/metrics", Some(&server.admin_token()), b"");
    let read = |metric: &str, protocol: &str| -> f64 {
        let prefix = format!("{metric}{{protocol=\"{protocol}\",service=\"{service}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    ["eas", "kserve", "grpc"]
        .iter()
        .map(|p| {
            let n = read("whet_request_duration_seconds_count", p).max(1.0);
            let total = read("whet_request_duration_seconds_sum", p);
            let engine = read("whet_engine_duration_seconds_sum", p);
            (p.to_string(), (total - engine) / n * 1e3, engine / n * 1e3)
        })
        .collect()
}

/// Triton's `perf_analyzer` (from the clients venv), `-i grpc` at
/// concurrency 1 on `service` with `sample` as its input data, three count
/// windows of `requests`: its p50 latency in ms, measured as it measures it
/// (its C++ gRPC client, raw tensors). `None`, said why, when the venv is
/// missing or the run fails.
fn perf_analyzer_p50(
    grpc: &str,
    service: &str,
    token: &str,
    sample: &[(String, Tensor)],
    requests: usize,
    work: &std::path::Path,
) -> Option<f64> {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.clients-venv");
    let exe = venv.join("bin/perf_analyzer");
    let Some(lib) = std::fs::read_dir(venv.join("lib"))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path().join("site-packages/nvidia/cuda_runtime/lib"))
        .filter(|_| exe.is_file())
    else {
        eprintln!("perf_analyzer: no .clients-venv (scripts/install-clients.sh installs it)");
        return None;
    };
    let data = work.join("perf_analyzer_input.json");
    let row: serde_json::Map<String, serde_json::Value> = sample
        .iter()
        .map(|(name, t)| {
            let TensorData::I64(v) = &t.data else {
                unreachable!("MiniLM's inputs are int64")
            };
            (
                name.clone(),
                serde_json::json!({ "content": v, "shape": t.shape }),
            )
        })
        .collect();
    std::fs::write(&data, serde_json::json!({ "data": [row] }).to_string()).ok()?;
    let report = work.join("perf_analyzer.csv");
    let out = std::process::Command::new(&exe)
        .env("LD_LIBRARY_PATH", lib)
        .args(["-m", service, "-u", grpc, "-i", "grpc"])
        .args(["-H", &format!("authorization: Bearer {token}")])
        .arg("--input-data")
        .arg(&data)
        .args(["--concurrency-range", "1:1"])
        .args(["--measurement-mode", "count_windows"])
        .args(["--measurement-request-count", &requests.to_string()])
        // Three windows are the fewest it judges; any three pass.
        .args(["--stability-percentage", "999", "--max-trials", "3"])
        .arg("-f")
        .arg(&report)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "perf_analyzer failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let csv = std::fs::read_to_string(&report).unwrap_or_default();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let p50_us = header
        .iter()
        .position(|h| *h == "p50 latency")
        .and_then(|col| lines.next()?.split(',').nth(col)?.parse::<f64>().ok());
    if p50_us.is_none() {
        eprintln!("perf_analyzer: no p50 latency in its report:\n{csv}");
    }
    Some(p50_us? / 1e3)
}

/// Seconds a `whet create` of `cfg` takes (run from `work`), asserting it
/// succeeds.
fn deploy(server: &Server, work: &std::path::Path, cfg: &serde_json::Value) -> f64 {
    let t0 = Instant::now();
    let (ok, said) = whetstone_e2e::create(server, work, cfg);
    assert!(ok, "{said}");
    t0.elapsed().as_secs_f64()
}

fn main() {
    let zoo = zoo();
    let work = tempfile::tempdir().unwrap();
    whetstone_e2e::minilm_folder(&zoo, &work.path().join("minilm"));
    let mut cfg: serde_json::Value =
        serde_json::from_str(&whetstone_e2e::minilm_config("minilm_bench", "minilm")).unwrap();
    cfg["metadata"]["enable_grpc"] = true.into();
    let server = Server::start(&work.path().join("data"), &["--grpc-addr", "127.0.0.1:0"]);
    let grpc_addr = format!("http://{}", server.grpc_addr.as_deref().unwrap());
    let deploy_s = deploy(&server, work.path(), &cfg);

    let (_, detail) = server.admin("GET", "/api/v2/services/minilm_bench", b"");
    let token = detail["token"].as_str().unwrap().to_string();
    let key = detail["artifact"].as_str().unwrap();
    let art = work.path().join("data/artifacts").join(key);
    let meta = ArtifactMeta::read(&art).unwrap();
    // The same settings serving uses for one instance.
    let cores = std::thread::available_parallelism().unwrap().get();
    let settings = SessionSettings {
        // Exactly what serving one instance uses.
        intra_threads: cores.min(meta.session.intra_threads.max(1)),
        ..meta.session.clone()
    };
    let mut bare = Engine::load(&art.join(&meta.model_file), &settings).unwrap();
    // The same artifact in a runner process of its own, called over its
    // socket as the server's instance calls it (confined the same way, but
    // for the account switch): what the isolation hop costs by itself.
    let (exe, args) =
        backend::serving::supervisor::runner_program(&whetstone_e2e::whet_bin(), meta.engine);
    let mut hop =
        backend::serving::supervisor::Runner::start(backend::serving::supervisor::Launch {
            exe,
            args,
            artifact: art.clone(),
            spec: runner::serve::RunnerSpec {
                settings: settings.clone(),
                confinement: backend::sandbox::Confinement {
                    account: None,
                    read: vec![std::path::PathBuf::from(".")],
                    read_write: vec![],
                },
            },
            limits: backend::sandbox::Limits {
                memory_bytes: None,
                oom_score_adj: 500,
            },
            label: "bench/0".into(),
            checks: Default::default(),
        })
        .unwrap();

    // Sample 0 of the test data, as engine tensors and as a KServe v2 body.
    let mut npz = npyz::npz::NpzArchive::open(zoo.join("test_minilm.npz")).unwrap();
    let mut inputs = Vec::new();
    let mut json_inputs = Vec::new();
    for name in ["input_ids", "attention_mask", "token_type_ids"] {
        let all: Vec<i64> = npz.by_name(name).unwrap().unwrap().into_vec().unwrap();
        let first = all[..128].to_vec();
        json_inputs.push(serde_json::json!({"name": name, "shape": [1, 128], "datatype": "INT64", "data": first}));
        inputs.push((
            name.to_string(),
            Tensor::new(vec![1, 128], TensorData::I64(first)).unwrap(),
        ));
    }
    let body = serde_json::to_vec(&serde_json::json!({ "inputs": json_inputs })).unwrap();
    // The same sample as a gRPC request with raw tensors.
    let grpc_req = ModelInferRequest {
        model_name: "minilm_bench".into(),
        inputs: inputs
            .iter()
            .map(|(name, t)| InferInputTensor {
                name: name.clone(),
                datatype: "INT64".into(),
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: inputs
            .iter()
            .map(|(_, t)| {
                let mut raw = Vec::new();
                t.data.write_le(&mut raw);
                raw.into()
            })
            .collect(),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut grpc = rt.block_on(grpc_client(&grpc_addr));
    let eas = "/api/predict/minilm_bench";
    let kserve = "/v2/models/minilm_bench/infer";
    let bearer = format!("Bearer {token}");
    let mut http = KeepAlive::new(&server.addr);

    for _ in 0..5 {
        bare.run(&inputs).unwrap();
        hop.run(&inputs).unwrap();
        assert_eq!(http.post(eas, &token, &body).0, 200);
        assert_eq!(http.post(kserve, &bearer, &body).0, 200);
        rt.block_on(grpc.model_infer(grpc_request(&grpc_req, &token)))
            .unwrap();
    }
    // Interleaved in blocks so drift (other load, clocks) hits all four alike.
    let (mut t_bare, mut t_eas, mut t_kserve) = (Vec::new(), Vec::new(), Vec::new());
    let (mut t_grpc, mut t_hop) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        for _ in 0..10 {
            let t = Instant::now();
            hop.run(&inputs).unwrap();
            t_hop.push(t.elapsed().as_secs_f64() * 1e3);
        }
        for _ in 0..10 {
            let t = Instant::now();
            rt.block_on(grpc.model_infer(grpc_request(&grpc_req, &token)))
                .unwrap();
            t_grpc.push(t.elapsed().as_secs_f64() * 1e3);
        }
        for _ in 0..10 {
            let t = Instant::now();
            bare.run(&inputs).unwrap();
            t_bare.push(t.elapsed().as_secs_f64() * 1e3);
        }
        for (path, auth, out) in [(eas, &token, &mut t_eas), (kserve, &bearer, &mut t_kserve)] {
            for _ in 0..10 {
                let t = Instant::now();
                let (s, _) = http.post(path, auth, &body);
                out.push(t.elapsed().as_secs_f64() * 1e3);
                assert_eq!(s, 200);
            }
        }
    }
    let (b, e, k) = (p50(&mut t_bare), p50(&mut t_eas), p50(&mut t_kserve));
    let g = p50(&mut t_grpc);
    // A gRPC round trip that runs nothing: the transport's own cost.
    let mut t_live = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        rt.block_on(grpc.server_live(backend::serving::kserve::grpc::proto::ServerLiveRequest {}))
            .unwrap();
        t_live.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let live = p50(&mut t_live);
    // Triton's perf_analyzer on the same service, alternating with the bare
    // engine: each round's p50 against the bare p50 of the block beside it.
    let grpc_host = server.grpc_addr.clone().unwrap_or_default();
    let mut pa = Vec::new();
    for _ in 0..rounds() {
        let mut t = Vec::new();
        for _ in 0..3 * PA_REQUESTS {
            let t0 = Instant::now();
            bare.run(&inputs).unwrap();
            t.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        let base = p50(&mut t);
        match perf_analyzer_p50(
            &grpc_host,
            "minilm_bench",
            &token,
            &inputs,
            PA_REQUESTS,
            work.path(),
        ) {
            Some(ms) => pa.push((ms, base)),
            None => break,
        }
    }
    let r = p50(&mut t_hop);
    drop(hop);
    let outside = server_side_ms(&server, "minilm_bench");

    drop(bare);

    // 16 callers at once, KServe over HTTP (JSON) and over gRPC (raw),
    // alternating in rounds; each figure the median of its rounds.
    let mut at16: [Vec<Load>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds() {
        at16[0].push(load(&server.addr, kserve, &bearer, &body, 16, SECS));
        at16[1].push(grpc_load(&grpc_addr, &grpc_req, &token, 16, SECS));
    }
    let at16 = at16.map(|runs| summary(&runs));

    let print_protocols = || {
        println!();
        println!("cpu flags: {}", whetstone_e2e::cpu_flags());
        println!(
            "minilm.onnx, batch 1, seq 128, {} thread(s), artifact candidate '{}'",
            settings.intra_threads, meta.candidate
        );
        println!("| what                                   | value      |");
        println!("|----------------------------------------|------------|");
        println!("| clean deploy (whet create)             | {deploy_s:>8.2} s |");
        println!("| bare engine session, p50               | {b:>7.3} ms |");
        println!("| runner process over its socket, p50    | {r:>7.3} ms |");
        println!("| POST /api/predict (JSON), p50          | {e:>7.3} ms |");
        println!("| POST /v2/models/…/infer (JSON), p50    | {k:>7.3} ms |");
        println!("| gRPC ModelInfer (raw tensors), p50     | {g:>7.3} ms |");
        for (what, ms, base) in [
            ("overhead /api/predict", e, b),
            ("overhead /v2/models/…/infer", k, b),
            ("overhead gRPC ModelInfer", g, b),
            ("overhead of the runner hop alone", r, b),
            ("overhead gRPC ModelInfer over the hop", g, r),
        ] {
            println!("| {what:<38} | {:>+8.1} % |", (ms / base - 1.0) * 100.0);
        }
        for (protocol, ms, _) in &outside {
            println!("| server time outside the engine, {protocol:<6} | {ms:>7.3} ms |");
        }
        for (protocol, _, ms) in &outside {
            println!("| engine call seen by the server, {protocol:<6} | {ms:>7.3} ms |");
        }
        println!("| gRPC ServerLive round trip, p50        | {live:>7.3} ms |");
        println!("({} runs each, interleaved in blocks of 10)", t_bare.len());
        if !pa.is_empty() {
            println!();
            println!(
                "Triton's perf_analyzer -i grpc, concurrency 1, {} requests a round, beside {} bare engine runs:",
                3 * PA_REQUESTS,
                3 * PA_REQUESTS
            );
            println!("| round  | perf_analyzer p50 | bare engine p50 | overhead |");
            println!("|--------|-------------------|-----------------|----------|");
            for (i, (ms, base)) in pa.iter().enumerate() {
                println!(
                    "| {i:>6} | {ms:>14.3} ms | {base:>12.3} ms | {:>+6.1} % |",
                    (ms / base - 1.0) * 100.0
                );
            }
            let over = median(pa.iter().map(|(ms, base)| ms / base - 1.0).collect());
            println!(
                "| median |                   |                 | {:>+6.1} % |",
                over * 100.0
            );
        }
        println!();
        println!(
            "16 concurrent callers, batch 1, seq 128, median of {} alternating rounds of {SECS} s:",
            rounds()
        );
        println!("| protocol                 | req/s  | p50        | p99        | errors |");
        println!("|--------------------------|--------|------------|------------|--------|");
        for (what, (rps, p50, p99, errors)) in [
            ("KServe HTTP (JSON)", at16[0]),
            ("KServe gRPC (raw)", at16[1]),
        ] {
            println!("| {what:<24} | {rps:>6.1} | {p50:>7.2} ms | {p99:>7.2} ms | {errors:>6} |");
        }
    };
    if std::env::var_os("WHET_BENCH_QUICK").is_some() {
        print_protocols();
        return;
    }

    // Dynamic batching needs dimension 0 left dynamic: a config declaring
    // both batch sizes it serves (one group would specialize the graph to
    // batch 1). Two services on that one artifact, batching off and on.
    let mut dyn_cfg = cfg.clone();
    dyn_cfg["name"] = "minilm_dyn".into();
    dyn_cfg["plugins"][0]["config"]["model_info"]["minilm.onnx"]["input_shapes"] =
        serde_json::json!([["1*128", "1*128", "1*128"], ["16*128", "16*128", "16*128"]]);
    deploy(&server, work.path(), &dyn_cfg);
    let mut batched_cfg = dyn_cfg.clone();
    batched_cfg["name"] = "minilm_batched".into();
    batched_cfg["metadata"]["rpc"] =
        serde_json::json!({ "batching": true, "max_batch_size": 16, "max_batch_timeout": 10 });
    deploy(&server, work.path(), &batched_cfg);
    let token_of = |name: &str| {
        let (_, d) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
        (
            d["token"].as_str().unwrap().to_string(),
            d["artifact"].as_str().unwrap().to_string(),
        )
    };
    let (_, dyn_key) = token_of("minilm_dyn");
    let (_, batched_key) = token_of("minilm_batched");
    assert_eq!(dyn_key, batched_key, "one artifact for both");
    let dyn_art = work.path().join("data/artifacts").join(&dyn_key);
    let dyn_meta = ArtifactMeta::read(&dyn_art).unwrap();

    // The bare engine at larger batches: what dynamic batching can gain.
    let mut bare = Engine::load(
        &dyn_art.join(&dyn_meta.model_file),
        &SessionSettings {
            intra_threads: cores.min(dyn_meta.session.intra_threads.max(1)),
            ..dyn_meta.session.clone()
        },
    )
    .unwrap();
    // The first `seq` tokens of sample 0 (a short sentence: 4 tokens, then
    // padding), `n` times over.
    let rows = |n: usize, seq: usize| -> Vec<(String, Tensor)> {
        inputs
            .iter()
            .map(|(name, t)| {
                let TensorData::I64(v) = &t.data else {
                    unreachable!()
                };
                let data: Vec<i64> = (0..n).flat_map(|_| v[..seq].iter().copied()).collect();
                (
                    name.clone(),
                    Tensor::new(vec![n, seq], TensorData::I64(data)).unwrap(),
                )
            })
            .collect()
    };
    let mut per_batch = Vec::new();
    for seq in [128usize, 16] {
        for n in [1usize, 4, 8, 16] {
            let batch = rows(n, seq);
            bare.run(&batch).unwrap();
            let mut t = Vec::new();
            for _ in 0..(640 / (n * seq / 16)).clamp(8, 200) {
                let t0 = Instant::now();
                bare.run(&batch).unwrap();
                t.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            let ms = p50(&mut t);
            per_batch.push((seq, n, ms, n as f64 * 1e3 / ms));
        }
    }
    drop(bare);

    // Batching off and on, at o1 and o2, on services of their own (two
    // input_shapes groups, so dimension 0 stays dynamic): one connection at
    // seq 128 (p50: what a lone client pays for batching) and 16 at seq 16
    // (req/s: what batching gains at load). Off and on alternate in rounds
    // so drift hits both alike; each figure is the median of its rounds.
    let body_of = |seq: usize| -> Vec<u8> {
        let json_inputs: Vec<serde_json::Value> = rows(1, seq)
            .iter()
            .map(|(name, t)| {
                let TensorData::I64(v) = &t.data else {
                    unreachable!()
                };
                serde_json::json!({"name": name, "shape": [1, seq], "datatype": "INT64", "data": v})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "inputs": json_inputs })).unwrap()
    };
    // The o2 pair, deployed beside the o1 pair.
    let mut o2_off = dyn_cfg.clone();
    o2_off["name"] = "minilm_o2".into();
    o2_off["plugins"][0]["config"]["model_info"]["minilm.onnx"]["optimization_level"] = "o2".into();
    deploy(&server, work.path(), &o2_off);
    let mut o2_on = o2_off.clone();
    o2_on["name"] = "minilm_o2_batched".into();
    o2_on["metadata"]["rpc"] = batched_cfg["metadata"]["rpc"].clone();
    deploy(&server, work.path(), &o2_on);
    let pairs = [
        ("o1", "minilm_dyn", "minilm_batched"),
        ("o2", "minilm_o2", "minilm_o2_batched"),
    ];
    let shapes = [(1usize, 128usize), (16, 16)];
    let bodies: Vec<Vec<u8>> = shapes.iter().map(|&(_, seq)| body_of(seq)).collect();
    let adaptive = batching_loads(&server, &pairs, &shapes, &bodies);
    // The same services with a fixed batch window (what batching did
    // before it adapted): the server restarted with --batch-wait window;
    // the services come back from their artifacts.
    let data = server.data.clone();
    drop(server);
    let server = Server::start(&data, &["--batch-wait", "window"]);
    for (_, off, on) in pairs {
        for name in [off, on] {
            wait_running(&server, name);
        }
    }
    let window = batching_loads(&server, &pairs, &shapes, &bodies);

    print_protocols();
    println!();
    println!(
        "artifact of the two-group config: candidate '{}'",
        dyn_meta.candidate
    );
    println!("| bare engine | batch | p50        | rows/s  |");
    println!("|-------------|-------|------------|---------|");
    for (seq, n, ms, rps) in &per_batch {
        println!("| seq {seq:>7} | {n:>5} | {ms:>7.2} ms | {rps:>7.1} |");
    }
    println!();
    println!(
        "POST /api/predict, one row per request, batching (16 rows, 10 ms) off and on, median of {} alternating rounds of {SECS} s:",
        rounds()
    );
    println!("| level | connections | seq | batch wait | batching | req/s  | p50        | p99        | errors |");
    println!("|-------|-------------|-----|------------|----------|--------|------------|------------|--------|");
    for (wait, loads) in [("adaptive", &adaptive), ("window", &window)] {
        for (level, conns, seq, off, on) in loads {
            for (what, (rps, p50, p99, errors)) in [("off", off), ("on", on)] {
                println!(
                    "| {level:<5} | {conns:>11} | {seq:>3} | {wait:<10} | {what:<8} | {rps:>6.1} | {p50:>7.2} ms | {p99:>7.2} ms | {errors:>6} |"
                );
            }
            println!(
                "| {level:<5} | {conns:>11} | {seq:>3} | {wait:<10} | on / off | {:>5.2}x | {:>+8.1} % |            |        |",
                on.0 / off.0,
                (on.1 / off.1 - 1.0) * 100.0
            );
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median of each figure over rounds, errors summed.
fn summary(runs: &[Load]) -> Load {
    (
        median(runs.iter().map(|r| r.0).collect()),
        median(runs.iter().map(|r| r.1).collect()),
        median(runs.iter().map(|r| r.2).collect()),
        runs.iter().map(|r| r.3).sum::<usize>(),
    )
}

/// Alternating rounds of each batching figure: `WHET_BENCH_ROUNDS` (odd
/// counts give a true median; more rounds, less noise on a shared machine).
fn rounds() -> usize {
    std::env::var("WHET_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(3)
}
const SECS: f64 = 4.0;
/// Requests in each of perf_analyzer's three windows a round (the bare
/// engine runs three times as many beside it).
const PA_REQUESTS: usize = 30;

type Load = (f64, f64, f64, usize);

/// Each (level, off, on) pair of services at each (connections, seq) shape
/// (with its body): off and on alternate in rounds so drift hits both
/// alike; each figure is the median of its rounds, errors their sum.
fn batching_loads(
    server: &Server,
    pairs: &[(&'static str, &str, &str)],
    shapes: &[(usize, usize)],
    bodies: &[Vec<u8>],
) -> Vec<(&'static str, usize, usize, Load, Load)> {
    let token_of = |name: &str| {
        let (_, d) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
        d["token"].as_str().unwrap().to_string()
    };
    let mut out = Vec::new();
    for &(level, off_name, on_name) in pairs {
        let (off_token, on_token) = (token_of(off_name), token_of(on_name));
        for (&(conns, seq), body) in shapes.iter().zip(bodies) {
            let (mut off, mut on) = (Vec::new(), Vec::new());
            for _ in 0..rounds() {
                for (name, token, runs) in [
                    (off_name, &off_token, &mut off),
                    (on_name, &on_token, &mut on),
                ] {
                    let path = format!("/api/predict/{name}");
                    runs.push(load(&server.addr, &path, token, body, conns, SECS));
                }
            }
            out.push((level, conns, seq, summary(&off), summary(&on)));
        }
    }
    out
}

/// Waits until `name` is Running again (a restarted server restores it).
fn wait_running(server: &Server, name: &str) {
    for _ in 0..600 {
        let (s, d) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
        if s == 200 && d["status"] == "Running" {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{name} did not come back after the restart");
}
