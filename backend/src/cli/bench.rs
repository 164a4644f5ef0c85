//! `whet bench`: a load generator for a deployed service. N keep-alive
//! connections send the same request back to back for a duration (or a
//! request count); the table reports throughput, latency percentiles, errors
//! by HTTP status and the server's resident memory before and after (from
//! `process_resident_memory_bytes` at `/metrics`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::api::{ModelSignature, ServiceDetail};

use crate::cli::client::{Client, ClientError};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The service to load.
    pub name: String,
    /// Concurrent keep-alive connections, each sending its next request as
    /// soon as the last is answered.
    #[arg(short = 'c', long, default_value_t = 8)]
    pub concurrency: usize,
    /// How long to send requests, e.g. `30s`, `2m`.
    #[arg(short = 'd', long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many requests instead (whichever comes first).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// The request: a KServe v2 JSON body sent as written, or a test data
    /// file (.npz, .npy, .pth, .safetensors) whose first sample is sent.
    /// Without it, zeros shaped by the model's signature (dynamic dimensions 1).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// `eas` (POST /api/predict/NAME) or `kserve` (POST /v2/models/NAME/infer).
    #[arg(long, default_value = "eas", value_parser = ["eas", "kserve"])]
    pub protocol: String,
    /// A request not answered in this time counts as an error.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(server: &str, token: Option<String>, args: BenchArgs) -> i32 {
    match bench(server, token, args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    /// HTTP status (or a transport failure) → count, for non-2xx answers.
    errors: BTreeMap<String, u64>,
}

async fn bench(server: &str, token: Option<String>, args: BenchArgs) -> Result<i32, ClientError> {
    if args.concurrency == 0 {
        return Err(ClientError::Usage(
            "--concurrency must be at least 1".into(),
        ));
    }
    let client = Client::new(server, super::resolve_token(token)?)?;
    let detail: ServiceDetail = client
        .get(&format!("/api/v2/services/{}", args.name))
        .await?;
    let body = request_body(&args, detail.signature.as_ref())?;
    let url = match args.protocol.as_str() {
        "kserve" => format!("{}/v2/models/{}/infer", client.server, args.name),
        _ => format!("{}/api/predict/{}", client.server, args.name),
    };
    let auth = match args.protocol.as_str() {
        "kserve" => format!("Bearer {}", detail.token),
        _ => detail.token.clone(),
    };
    let http = crate::cli::client::http_builder()?
        .pool_max_idle_per_host(args.concurrency)
        .timeout(args.timeout)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    let send = {
        let (http, url, auth, body) = (http.clone(), url.clone(), auth.clone(), body.clone());
        move || {
            http.post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
        }
    };

    // One request first: a wrong body or token should say so, not fill the
    // table with errors.
    let first = send().await.map_err(|e| ClientError::Connect {
        server: client.server.clone(),
        reason: e.to_string(),
    })?;
    let status = first.status();
    let bytes = first
        .bytes()
        .await
        .map_err(|e| ClientError::Api(e.to_string()))?;
    if !status.is_success() {
        return Err(ClientError::Api(format!(
            "the first request failed: {}",
            crate::cli::client::describe_error(status, &bytes)
        )));
    }

    let metrics_start = server_metrics(&http, &client.server).await;
    let rss_start = metrics_start.as_deref().and_then(parse_rss);
    let rss_peak = Arc::new(AtomicU64::new(rss_start.unwrap_or(0)));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (http, server, peak, done) = (
            http.clone(),
            client.server.clone(),
            rss_peak.clone(),
            done.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = server_rss(&http, &server).await {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    let started = Instant::now();
    let deadline = started + args.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let limit = args.requests.unwrap_or(u64::MAX);
    let mut tasks = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let (send, issued) = (send.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < limit {
                let t = Instant::now();
                let outcome = match send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        // The whole answer is part of the latency.
                        match resp.bytes().await {
                            Ok(_) if status.is_success() => None,
                            Ok(_) => Some(status.as_u16().to_string()),
                            Err(e) => Some(transport_error(&e)),
                        }
                    }
                    Err(e) => Some(transport_error(&e)),
                };
                match outcome {
                    None => tally.latencies.push(t.elapsed()),
                    Some(kind) => *tally.errors.entry(kind).or_default() += 1,
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for t in tasks {
        let tally = t
            .await
            .map_err(|e| ClientError::Api(format!("a connection's task failed: {e}")))?;
        all.latencies.extend(tally.latencies);
        for (k, n) in tally.errors {
            *all.errors.entry(k).or_default() += n;
        }
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let metrics_end = server_metrics(&http, &client.server).await;
    let rss_end = metrics_end.as_deref().and_then(parse_rss);
    let batching = metrics_start
        .as_deref()
        .zip(metrics_end.as_deref())
        .map(|(a, b)| Batching::between(a, b, &args.name));
    if let Some(end) = rss_end {
        rss_peak.fetch_max(end, Ordering::Relaxed);
    }

    print_table(
        &args,
        &url,
        body.len(),
        elapsed,
        &mut all,
        [
            rss_start,
            rss_end,
            rss_start.map(|_| rss_peak.load(Ordering::Relaxed)),
        ],
        batching,
    );
    Ok(if all.errors.is_empty() { 0 } else { 1 })
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// The request body: the given JSON, the first sample of a data file, or
/// zeros of the signature's shapes.
fn request_body(args: &BenchArgs, sig: Option<&ModelSignature>) -> Result<Vec<u8>, ClientError> {
    let need_sig = || {
        sig.ok_or_else(|| {
            ClientError::Api(format!(
                "{} has no inspected model yet: pass --data",
                args.name
            ))
        })
    };
    if let Some(path) = &args.data {
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json {
            return std::fs::read(path)
                .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())));
        }
        let ds = optimizer::data::load(path, need_sig()?)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let Some(sample) = ds.samples.first() else {
            return Err(ClientError::Usage(format!(
                "{}: no samples",
                path.display()
            )));
        };
        let inputs: Vec<_> = sample
            .iter()
            .map(|(n, t)| t.to_infer_tensor(n.clone()))
            .collect();
        return serde_json::to_vec(&serde_json::json!({ "inputs": inputs }))
            .map_err(|e| ClientError::Usage(e.to_string()));
    }
    let inputs: Vec<serde_json::Value> = need_sig()?
        .inputs
        .iter()
        .map(|spec| {
            let shape: Vec<i64> = spec.shape.iter().map(|&d| d.max(1)).collect();
            let n: i64 = shape.iter().product();
            let zero = match spec.datatype.as_str() {
                "BOOL" => serde_json::json!(false),
                "FP32" | "FP64" => serde_json::json!(0.0),
                _ => serde_json::json!(0),
            };
            serde_json::json!({
                "name": spec.name,
                "shape": shape,
                "datatype": spec.datatype,
                "data": vec![zero; n.max(0) as usize],
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "inputs": inputs }))
        .map_err(|e| ClientError::Usage(e.to_string()))
}

/// The server's `/metrics` text, when it answers.
async fn server_metrics(http: &reqwest::Client, server: &str) -> Option<String> {
    http.get(format!("{server}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The server's resident memory from its `/metrics`, when it exports it.
async fn server_rss(http: &reqwest::Client, server: &str) -> Option<u64> {
    parse_rss(&server_metrics(http, server).await?)
}

/// What the service's queue did during the run, from the differences of
/// its `/metrics` series: engine calls, rows per call (how much dynamic
/// batching merged) and the mean time a request waited in the queue.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Batching {
    calls: f64,
    rows_per_call: Option<f64>,
    queue_ms: Option<f64>,
}

impl Batching {
    fn between(before: &str, after: &str, service: &str) -> Batching {
        let delta =
            |metric: &str| series_sum(after, metric, service) - series_sum(before, metric, service);
        let calls = delta("whet_batch_size_count");
        let queued = delta("whet_queue_duration_seconds_count");
        Batching {
            calls,
            rows_per_call: (calls > 0.0).then(|| delta("whet_batch_size_sum") / calls),
            queue_ms: (queued > 0.0)
                .then(|| delta("whet_queue_duration_seconds_sum") / queued * 1e3),
        }
    }
}

/// The sum of `metric` over the series labelled with `service` (every
/// protocol) in Prometheus exposition text.
fn series_sum(text: &str, metric: &str, service: &str) -> f64 {
    let label = format!("service=\"{service}\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(metric)?.strip_prefix('{')?;
            let (labels, value) = rest.split_once('}')?;
            labels
                .split(',')
                .any(|kv| kv == label)
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

fn parse_rss(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        let v = l.strip_prefix("process_resident_memory_bytes ")?;
        v.trim().parse::<f64>().ok().map(|b| b as u64)
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

fn print_table(
    args: &BenchArgs,
    url: &str,
    body_bytes: usize,
    elapsed: Duration,
    all: &mut Tally,
    [rss_start, rss_end, rss_peak]: [Option<u64>; 3],
    batching: Option<Batching>,
) {
    all.latencies.sort();
    let ok = all.latencies.len() as u64;
    let failed: u64 = all.errors.values().sum();
    let ms = |d: Option<Duration>| {
        d.map(|d| format!("{:.2} ms", d.as_secs_f64() * 1e3))
            .unwrap_or_else(|| "-".into())
    };
    let mib = |b: Option<u64>| {
        b.map(|b| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64))
            .unwrap_or_else(|| "- (not exported)".into())
    };
    let errors = if all.errors.is_empty() {
        "none".to_string()
    } else {
        all.errors
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{url} ({}), {} connection(s), {:.1} s, request body {body_bytes} bytes",
        args.protocol,
        args.concurrency,
        elapsed.as_secs_f64()
    );
    let rows = [
        (
            "requests",
            format!("{} ({ok} ok, {failed} failed)", ok + failed),
        ),
        (
            "throughput",
            format!("{:.1} req/s", ok as f64 / elapsed.as_secs_f64().max(1e-9)),
        ),
        ("latency p50", ms(percentile(&all.latencies, 0.50))),
        ("latency p90", ms(percentile(&all.latencies, 0.90))),
        ("latency p99", ms(percentile(&all.latencies, 0.99))),
        ("latency max", ms(all.latencies.last().copied())),
        ("errors", errors),
        (
            "engine calls",
            batching.map_or("- (no metrics)".into(), |b| {
                format!(
                    "{:.0}, {} rows per call",
                    b.calls,
                    b.rows_per_call.map_or("-".into(), |r| format!("{r:.2}"))
                )
            }),
        ),
        (
            "queue wait mean",
            batching
                .and_then(|b| b.queue_ms)
                .map_or("-".into(), |q| format!("{q:.2} ms")),
        ),
        ("server RSS start", mib(rss_start)),
        ("server RSS end", mib(rss_end)),
        ("server RSS peak", mib(rss_peak)),
    ];
    let w = rows.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    println!("| {:<16} | {:<w$} |", "what", "value");
    println!("|{}|{}|", "-".repeat(18), "-".repeat(w + 2));
    for (k, v) in rows {
        println!("| {k:<16} | {v:<w$} |");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn batching_is_read_from_the_differences_of_the_service_series() {
        let at = |calls: u32, rows: u32, queued: u32, wait: f64| {
            format!(
                "whet_batch_size_sum{{service=\"svc\"}} {rows}\n\
                 whet_batch_size_count{{service=\"svc\"}} {calls}\n\
                 whet_batch_size_count{{service=\"svc2\"}} 999\n\
                 whet_queue_duration_seconds_sum{{protocol=\"eas\",service=\"svc\"}} {wait}\n\
                 whet_queue_duration_seconds_count{{protocol=\"eas\",service=\"svc\"}} {queued}\n\
                 whet_queue_duration_seconds_count{{protocol=\"kserve\",service=\"svc\"}} 0\n"
            )
        };
        let b = super::Batching::between(&at(10, 12, 12, 0.5), &at(20, 52, 52, 0.54), "svc");
        assert_eq!(b.calls, 10.0);
        assert_eq!(b.rows_per_call, Some(4.0));
        assert!((b.queue_ms.unwrap() - 1.0).abs() < 1e-9, "{b:?}");
        // Nothing ran: no figures, not a division by zero.
        let idle = super::Batching::between(&at(5, 5, 5, 0.1), &at(5, 5, 5, 0.1), "svc");
        assert_eq!((idle.rows_per_call, idle.queue_ms), (None, None));
        assert_eq!(
            super::series_sum(&at(1, 1, 1, 0.0), "whet_batch_size_count", "sv"),
            0.0
        );
    }

    use super::*;

    #[test]
    fn rss_is_read_from_the_exposition_text() {
        let text = "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 1.2345e+08\nprocess_virtual_memory_bytes 9e9\n";
        assert_eq!(parse_rss(text), Some(123_450_000));
        assert_eq!(parse_rss("whet_instances{service=\"a\"} 1\n"), None);
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v[..1], 0.99), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
