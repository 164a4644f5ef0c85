//! Serving benchmark: the time of a clean deploy of the zoo's MiniLM with the
//! seed's CPU plugin config (o1), then p50 latency at batch 1 of
//! `POST /api/predict` (keep-alive HTTP, JSON) against the bare engine session
//! on the same artifact with the same settings, interleaved in one run.
//!
//! Run: `cargo build --release -p whetstone-backend --bin whet && cargo bench
//! -p whetstone-e2e --bench serving`. Needs the zoo.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use optimizer::artifact::ArtifactMeta;
use optimizer::engine::{Engine, SessionSettings};
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

fn p50(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let zoo = zoo();
    let work = tempfile::tempdir().unwrap();
    whetstone_e2e::minilm_folder(&zoo, &work.path().join("minilm"));
    let cfg = serde_json::json!({
        "name": "minilm_bench", "model_path": "minilm", "processor": "onnx_cpu",
        "metadata": { "instance": 1 },
        "plugins": [{ "command": "blade --mode eas_plugin --optimize_for cpu",
            "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
            "config": { "model_info": { "minilm.onnx": { "optimization_level": "o1", "test_data": "test_minilm.npz",
                "input_shapes": [["1*128", "1*128", "1*128"]] } } } }]
    });
    let cfg_path = work.path().join("service.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();

    let server = Server::start(&work.path().join("data"), &[]);
    let t0 = Instant::now();
    let out = server
        .cli(&["create", cfg_path.to_str().unwrap()])
        .output()
        .unwrap();
    let deploy_s = t0.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

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
    let mut http = KeepAlive::new(&server.addr);

    for _ in 0..5 {
        bare.run(&inputs).unwrap();
        assert_eq!(http.post("/api/predict/minilm_bench", &token, &body).0, 200);
    }
    let (mut t_bare, mut t_http) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        for _ in 0..10 {
            let t = Instant::now();
            bare.run(&inputs).unwrap();
            t_bare.push(t.elapsed().as_secs_f64() * 1e3);
        }
        for _ in 0..10 {
            let t = Instant::now();
            let (s, _) = http.post("/api/predict/minilm_bench", &token, &body);
            t_http.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(s, 200);
        }
    }
    let (b, h) = (p50(&mut t_bare), p50(&mut t_http));
    println!();
    println!(
        "minilm.onnx, batch 1, seq 128, {} thread(s), artifact candidate '{}'",
        settings.intra_threads, meta.candidate
    );
    println!("| what                          | value     |");
    println!("|-------------------------------|-----------|");
    println!("| clean deploy (whet create)    | {deploy_s:>7.2} s |");
    println!("| bare engine session, p50      | {b:>7.3} ms |");
    println!("| POST /api/predict (JSON), p50 | {h:>7.3} ms |");
    println!(
        "| overhead                      | {:>+7.1} % |",
        (h / b - 1.0) * 100.0
    );
    println!("({} runs each, interleaved in blocks of 10)", t_bare.len());
}
