//! The `whet` client: the commands of the EAS CLI, which talk to a server
//! over HTTP only (`client.rs`), and local tools (`optimize`, `bench`,
//! `example-model`, `schema`). `whet serve` and the child processes are
//! dispatched in `main.rs`.

mod accounts;
mod bench;
pub mod client;
mod k8s;
mod optimize;

use std::path::{Path, PathBuf};

use clap::Subcommand;
use reqwest::Method;
use shared::api::{ScaleRequest, ServiceDetail, ServiceStatus, ServiceSummary};

use crate::cli::client::{default_data_dir, Client, ClientError};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Deploy a service from a service config (EAS format).
    Create {
        config: PathBuf,
        /// The team the service belongs to (default: your first team where you may deploy).
        #[arg(long)]
        team: Option<String>,
    },
    /// List services (of one team with --team).
    List {
        #[arg(long)]
        team: Option<String>,
    },
    /// Describe a service: status, endpoint, token, optimization report.
    Desc {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Redeploy a service with a new config.
    Modify {
        name: String,
        #[arg(short = 's', long = "service-config")]
        config: PathBuf,
    },
    /// Change the number of instances (reuses the optimized artifact).
    Scale { name: String, instances: u32 },
    /// Stop serving (keeps the service and its artifact).
    Stop { name: String },
    /// Start a stopped service.
    Start { name: String },
    /// Delete a service.
    Delete { name: String },
    /// List a service's versions (every create and modify makes one).
    Versions { name: String },
    /// Serve an earlier version again (its config and optimized artifact;
    /// nothing is optimized again while the artifact is kept).
    Rollback {
        name: String,
        /// The version to serve (default: the one before the current).
        version: Option<u32>,
    },
    /// Show or set how requests are split between versions (canary,
    /// blue-green): `whet traffic NAME 1=90 2=10`. Each version but the
    /// current one runs instances of its own and gets requests once they
    /// run; this waits for that. `NAME <current>=100` ends the split.
    Traffic {
        name: String,
        /// VERSION=PERCENT shares summing to 100 (none: show the split).
        shares: Vec<String>,
        /// Return without waiting for the versions' instances to run.
        #[arg(long)]
        no_wait: bool,
    },
    /// Give a version of the traffic split all requests and make it the
    /// current version (default: the other version with the largest share).
    Promote { name: String, version: Option<u32> },
    /// The predictions the server kept of a service (a sample, and every
    /// failed one), newest first.
    Requests {
        name: String,
        /// Also print each request's and answer's body.
        #[arg(long)]
        bodies: bool,
    },
    /// A service's last hour, minute by minute: requests, errors, p50/p99,
    /// the longest queue (minutes with requests only).
    Metrics { name: String },
    /// Print a service's deploy log.
    Logs {
        name: String,
        /// Follow the log until the current deploy ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Send predictions: a KServe v2 JSON request, or an .npz of inputs (one request per sample).
    Predict {
        name: String,
        #[arg(long)]
        data: PathBuf,
    },
    /// Who the API token belongs to: user, site admin, teams and roles.
    Whoami,
    /// Teams and their members' roles (admin, deployer, viewer).
    #[command(subcommand)]
    Team(accounts::TeamCmd),
    /// Users and their API tokens.
    #[command(subcommand)]
    User(accounts::UserCmd),
    /// Read-only share links to a deployment.
    #[command(subcommand)]
    Share(accounts::ShareCmd),
    /// A service's prediction token.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Collect what nothing uses now: uploads, models and artifacts no
    /// service or version names, abandoned temporary folders, old log lines
    /// (site admins).
    Gc {
        /// Keep files younger than this (default: the server's --gc-grace).
        #[arg(long)]
        grace: Option<String>,
    },
    /// Print the JSON Schema of the service config.
    Schema,
    /// Optimize a model outside a deploy and print the report.
    Optimize(optimize::OptimizeArgs),
    /// Load a deployed service: N keep-alive connections for a duration; prints throughput, latency percentiles, errors by status and the server's memory.
    Bench(bench::BenchArgs),
    /// Write what running Whetstone elsewhere needs.
    #[command(subcommand)]
    Export(ExportCmd),
    /// Write a small example: an ONNX model, its test data, a service config and a request.
    ExampleModel {
        /// Folder to create.
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Give the service a new prediction token and print it; the old one
    /// is refused at once.
    Rotate { name: String },
}

#[derive(Subcommand, Debug)]
pub enum ExportCmd {
    /// Kubernetes manifests for N nodes sharing an external PostgreSQL and S3
    /// store (Secret, ConfigMap, Deployment, Service), printed for `kubectl apply -f -`.
    K8s(k8s::K8sArgs),
}

/// Runs a client command against `server`; returns the exit code.
pub async fn run(server: &str, token: Option<String>, command: Command) -> i32 {
    let result = match command {
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&shared::config::json_schema()).unwrap_or_default()
            );
            return 0;
        }
        Command::Optimize(args) => return optimize::run(args),
        Command::Bench(args) => return bench::run(server, token, args).await,
        Command::Export(ExportCmd::K8s(args)) => return k8s::run(&args),
        Command::ExampleModel { dir } => {
            return match example_model(&dir) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
        other => client_command(server, token, other).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(e: &ClientError) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}

fn resolve_token(token: Option<String>) -> Result<String, ClientError> {
    if let Some(t) = token {
        return Ok(t);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("WHET_DATA")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    dirs.push(default_data_dir());
    for d in &dirs {
        if let Ok(t) = std::fs::read_to_string(d.join(shared::api::ADMIN_TOKEN_FILE)) {
            return Ok(t.trim().to_string());
        }
    }
    Err(ClientError::Usage("no API token: pass --token or set WHET_TOKEN (a local server writes its admin token to DATA/admin-token)".into()))
}

async fn client_command(
    server: &str,
    token: Option<String>,
    cmd: Command,
) -> Result<i32, ClientError> {
    let client = Client::new(server, resolve_token(token)?)?;
    match cmd {
        Command::Create { config, team } => {
            let body = prepare_config(&client, &config).await?;
            let path = match team {
                Some(t) => format!("/api/v2/services?team={t}"),
                None => "/api/v2/services".to_string(),
            };
            let detail: ServiceDetail = client.send(Method::POST, &path, Some(body.into())).await?;
            print_endpoint_table(&client, &detail);
            follow(&client, &detail.summary.name).await
        }
        Command::Modify { name, config } => {
            let body = prepare_config(&client, &config).await?;
            let detail: ServiceDetail = client
                .send(
                    Method::PUT,
                    &format!("/api/v2/services/{name}"),
                    Some(body.into()),
                )
                .await?;
            print_endpoint_table(&client, &detail);
            follow(&client, &name).await
        }
        Command::Scale { name, instances } => {
            let body = serde_json::to_vec(&ScaleRequest { instances })
                .map_err(|e| ClientError::Usage(e.to_string()))?;
            let _: ServiceDetail = client
                .send(
                    Method::POST,
                    &format!("/api/v2/services/{name}/scale"),
                    Some(body.into()),
                )
                .await?;
            follow(&client, &name).await
        }
        Command::Start { name } => {
            let _: ServiceDetail = client
                .send(
                    Method::POST,
                    &format!("/api/v2/services/{name}/start"),
                    None,
                )
                .await?;
            follow(&client, &name).await
        }
        Command::Stop { name } => {
            let d: ServiceDetail = client
                .send(Method::POST, &format!("/api/v2/services/{name}/stop"), None)
                .await?;
            println!("{} is {}", d.summary.name, d.summary.status.as_str());
            Ok(0)
        }
        Command::Versions { name } => {
            let versions: Vec<shared::api::ServiceVersion> = client
                .get(&format!("/api/v2/services/{name}/versions"))
                .await?;
            println!(
                "{:<8} {:<8} {:<20} {:<26} {:<14} {:<6} {:>9}",
                "VERSION", "SERVED", "AUTHOR", "CREATED", "ARTIFACT", "LEVEL", "INSTANCES"
            );
            for v in versions {
                let level = v
                    .config
                    .plugins
                    .first()
                    .and_then(|p| p.config.as_ref())
                    .and_then(|c| c.model_info.values().next())
                    .and_then(|m| m.optimization_level)
                    .map_or("-", |l| match l {
                        shared::config::OptimizationLevel::O1 => "o1",
                        shared::config::OptimizationLevel::O2 => "o2",
                    });
                println!(
                    "{:<8} {:<8} {:<20} {:<26} {:<14} {:<6} {:>9}",
                    v.version,
                    if v.current { "*" } else { "" },
                    v.author,
                    v.created_at,
                    v.artifact
                        .as_deref()
                        .map_or("-".to_string(), |a| a.chars().take(12).collect()),
                    level,
                    v.config.metadata.instance
                );
            }
            Ok(0)
        }
        Command::Rollback { name, version } => {
            let body = serde_json::to_vec(&shared::api::RollbackRequest { version })
                .map_err(|e| ClientError::Usage(e.to_string()))?;
            let d: ServiceDetail = client
                .send(
                    Method::POST,
                    &format!("/api/v2/services/{name}/rollback"),
                    Some(body.into()),
                )
                .await?;
            println!(
                "{name}: serving version {} of {} once deployed",
                d.current_version, d.latest_version
            );
            follow(&client, &name).await
        }
        Command::Traffic {
            name,
            shares,
            no_wait,
        } => traffic(&client, &name, &shares, no_wait).await,
        Command::Gc { grace } => {
            let path = match grace {
                Some(g) => format!("/api/v2/gc?grace={}", crate::cli::client::urlencode(&g)),
                None => "/api/v2/gc".to_string(),
            };
            let r: shared::api::GcReport = client.send(Method::POST, &path, None).await?;
            for p in &r.removed {
                println!("removed {p}");
            }
            let freed = match r.bytes_freed {
                b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
                b => format!("{:.1} KiB", b as f64 / 1024.0),
            };
            println!(
                "{} files or folders, {freed} freed; {} log lines removed",
                r.removed.len(),
                r.log_lines_removed
            );
            Ok(0)
        }
        Command::Token(TokenCmd::Rotate { name }) => {
            let t: shared::api::RotatedToken = client
                .send(
                    Method::POST,
                    &format!("/api/v2/services/{name}/token"),
                    None,
                )
                .await?;
            eprintln!("{name}: a new token; the old one is refused from now on");
            println!("{}", t.token);
            Ok(0)
        }
        Command::Requests { name, bodies } => {
            let kept: Vec<shared::api::RequestSample> = client
                .get(&format!("/api/v2/services/{name}/requests"))
                .await?;
            println!(
                "{:<26} {:<7} {:>7} {:>6} {:>10}  TRACE",
                "TIME", "PROTO", "VERSION", "STATUS", "LATENCY"
            );
            for r in kept {
                println!(
                    "{:<26} {:<7} {:>7} {:>6} {:>10.2}  {}",
                    r.at,
                    r.protocol,
                    r.version.map_or("-".into(), |v| format!("v{v}")),
                    r.status,
                    r.latency_ms,
                    r.trace_id.as_deref().unwrap_or("-")
                );
                if bodies {
                    println!("  request:  {}", r.request);
                    println!("  response: {}", r.response);
                }
            }
            Ok(0)
        }
        Command::Metrics { name } => {
            let minutes: Vec<shared::api::MinuteStats> = client
                .get(&format!("/api/v2/services/{name}/metrics"))
                .await?;
            println!(
                "{:<22} {:>8} {:>6} {:>10} {:>10} {:>6}",
                "MINUTE (UTC)", "REQUESTS", "ERRORS", "P50 MS", "P99 MS", "QUEUE"
            );
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
            for m in minutes.iter().filter(|m| m.requests > 0) {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(m.at);
                println!(
                    "{:<22} {:>8} {:>6} {:>10} {:>10} {:>6}",
                    humantime::format_rfc3339_seconds(at).to_string(),
                    m.requests,
                    m.errors,
                    ms(m.p50_ms),
                    ms(m.p99_ms),
                    m.max_queue
                );
            }
            Ok(0)
        }
        Command::Promote { name, version } => {
            let body = serde_json::to_vec(&shared::api::PromoteRequest { version })
                .map_err(|e| ClientError::Usage(e.to_string()))?;
            let d: ServiceDetail = client
                .send(
                    Method::POST,
                    &format!("/api/v2/services/{name}/promote"),
                    Some(body.into()),
                )
                .await?;
            if !client_has_job(&d) {
                println!("{name}: version {} serves every request", d.current_version);
                return Ok(0);
            }
            println!(
                "{name}: version {} takes every request now and is current once deployed",
                d.current_version
            );
            follow(&client, &name).await
        }
        Command::Delete { name } => {
            let _: serde_json::Value = client
                .send(Method::DELETE, &format!("/api/v2/services/{name}"), None)
                .await?;
            println!("deleted {name}");
            Ok(0)
        }
        Command::Whoami => accounts::whoami(&client).await,
        Command::Team(cmd) => accounts::team(&client, cmd).await,
        Command::User(cmd) => accounts::user(&client, cmd).await,
        Command::Share(cmd) => accounts::share(&client, cmd).await,
        Command::List { team } => {
            let path = match team {
                Some(t) => format!("/api/v2/services?team={t}"),
                None => "/api/v2/services".to_string(),
            };
            let list: Vec<ServiceSummary> = client.get(&path).await?;
            println!(
                "{:<28} {:<12} {:<9} {:<20} {:>9} {:>5} {:>8}",
                "NAME", "TEAM", "STATUS", "PROCESSOR", "INSTANCES", "LEVEL", "SPEEDUP"
            );
            for s in list {
                println!(
                    "{:<28} {:<12} {:<9} {:<20} {:>9} {:>5} {:>8}",
                    s.name,
                    s.team,
                    s.status.as_str(),
                    s.processor,
                    format!("{}/{}", s.running_instances, s.instances),
                    s.optimization_level.unwrap_or_else(|| "-".into()),
                    s.speedup
                        .map(|x| format!("{x:.2}x"))
                        .unwrap_or_else(|| "-".into())
                );
            }
            Ok(0)
        }
        Command::Desc { name, json } => {
            if json {
                let v: serde_json::Value = client.get(&format!("/api/v2/services/{name}")).await?;
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                let d: ServiceDetail = client.get(&format!("/api/v2/services/{name}")).await?;
                print_detail(&client, &d);
            }
            Ok(0)
        }
        Command::Logs { name, follow: true } => follow(&client, &name).await,
        Command::Logs {
            name,
            follow: false,
        } => {
            let mut after = 0;
            loop {
                let page: shared::api::LogPage = client
                    .get(&format!("/api/v2/services/{name}/logs?after={after}"))
                    .await?;
                for l in &page.lines {
                    println!("{}", l.line);
                }
                match page.next {
                    Some(n) => after = n,
                    None => break,
                }
            }
            Ok(0)
        }
        Command::Predict { name, data } => predict(&client, &name, &data).await,
        Command::Schema
        | Command::Optimize(_)
        | Command::Bench(_)
        | Command::Export(_)
        | Command::ExampleModel { .. } => {
            unreachable!("handled by run()")
        }
    }
}

/// Reads a service config, checks it with the same validation the server
/// uses, and uploads a local `model_path` (file or folder), replacing it with
/// the server's `upload://` path. The rest of the JSON is sent as written.
async fn prepare_config(client: &Client, path: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    if let Err(errors) = shared::parse_and_validate(&text) {
        let mut msg = format!(
            "{}: the service config has {} problem(s):",
            path.display(),
            errors.len()
        );
        for e in errors {
            msg.push_str(&format!("\n  {}: {}", e.path, e.message));
        }
        return Err(ClientError::Usage(msg));
    }
    let mut value: serde_json::Value = serde_json::from_str(text.trim_start_matches('\u{feff}'))
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    let model_path = value
        .get("model_path")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    if !model_path.contains("://") {
        let base = path.parent().unwrap_or(Path::new("."));
        let local = [PathBuf::from(&model_path), base.join(&model_path)]
            .into_iter()
            .find(|p| p.exists());
        let Some(local) = local else {
            return Err(ClientError::Usage(format!("model_path: '{model_path}' does not exist here (looked relative to the current folder and to {})", base.display())));
        };
        let up = client.upload(&local).await?;
        eprintln!(
            "[OK] Uploaded {} ({} bytes) as {}",
            local.display(),
            up.bytes,
            up.model_path
        );
        value["model_path"] = serde_json::Value::String(up.model_path);
    }
    serde_json::to_string(&value).map_err(|e| ClientError::Usage(e.to_string()))
}

fn endpoint_url(client: &Client, d: &ServiceDetail) -> String {
    format!("{}{}", client.server, d.endpoint)
}

fn print_endpoint_table(client: &Client, d: &ServiceDetail) {
    let url = endpoint_url(client, d);
    let w = url.len().max(d.token.len());
    println!("| Internet Endpoint | {url:<w$} |");
    println!("|             Token | {:<w$} |", d.token);
}

/// Whether the service answered has a deploy queued or running.
fn client_has_job(d: &ServiceDetail) -> bool {
    matches!(
        d.summary.status,
        shared::api::ServiceStatus::Creating | shared::api::ServiceStatus::Updating
    )
}

/// `VERSION=PERCENT` arguments as the API's weights.
fn parse_shares(shares: &[String]) -> Result<std::collections::BTreeMap<u32, u32>, ClientError> {
    let mut out = std::collections::BTreeMap::new();
    for s in shares {
        let parsed = s.split_once('=').and_then(|(v, w)| {
            Some((
                v.trim().parse().ok()?,
                w.trim().trim_end_matches('%').parse().ok()?,
            ))
        });
        let Some((v, w)) = parsed else {
            return Err(ClientError::Usage(format!(
                "expected VERSION=PERCENT (like 2=10), got '{s}'"
            )));
        };
        if out.insert(v, w).is_some() {
            return Err(ClientError::Usage(format!("version {v} is named twice")));
        }
    }
    Ok(out)
}

fn print_split(split: &shared::api::TrafficSplit) {
    println!(
        "{:<8} {:>6} {:<8} {:>9} {:>9} {:>7} {:>10} {:>10}",
        "VERSION", "SHARE", "SERVED", "INSTANCES", "REQUESTS", "ERRORS", "P50", "P99"
    );
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
    for v in &split.versions {
        println!(
            "{:<8} {:>6} {:<8} {:>9} {:>9} {:>7} {:>10} {:>10}",
            v.version,
            format!("{} %", v.weight),
            if v.current { "current" } else { "beside" },
            format!("{}/{}", v.running, v.instances),
            v.requests,
            v.errors,
            ms(v.p50_ms),
            ms(v.p99_ms)
        );
    }
}

/// `whet traffic`: shows the split, or sets it and waits until every
/// version with a share runs its instances.
async fn traffic(
    client: &Client,
    name: &str,
    shares: &[String],
    no_wait: bool,
) -> Result<i32, ClientError> {
    let path = format!("/api/v2/services/{name}/traffic");
    if shares.is_empty() {
        let split: shared::api::TrafficSplit = client.get(&path).await?;
        print_split(&split);
        return Ok(0);
    }
    let body = serde_json::to_vec(&shared::api::TrafficRequest {
        weights: parse_shares(shares)?,
    })
    .map_err(|e| ClientError::Usage(e.to_string()))?;
    let mut split: shared::api::TrafficSplit =
        client.send(Method::PUT, &path, Some(body.into())).await?;
    let started = std::time::Instant::now();
    let waiting = |s: &shared::api::TrafficSplit| {
        s.versions
            .iter()
            .any(|v| !v.current && v.weight > 0 && v.running < v.instances)
    };
    while !no_wait && waiting(&split) {
        if let Some(v) = split.versions.iter().find(|v| v.error.is_some()) {
            print_split(&split);
            eprintln!(
                "error: version {}: {}",
                v.version,
                v.error.as_deref().unwrap_or_default()
            );
            return Ok(1);
        }
        if started.elapsed() > std::time::Duration::from_secs(600) {
            print_split(&split);
            eprintln!("error: the versions' instances did not all start within 600 s (see whet logs {name})");
            return Ok(1);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        split = client.get(&path).await?;
    }
    print_split(&split);
    Ok(0)
}

async fn follow(client: &Client, name: &str) -> Result<i32, ClientError> {
    let (status, message) = client.follow_logs(name, |l| println!("{l}")).await?;
    match status {
        ServiceStatus::Running | ServiceStatus::Stopped => Ok(0),
        _ => {
            eprintln!(
                "error: deploy of {name} ended {}: {}",
                status.as_str(),
                message.unwrap_or_default()
            );
            Ok(1)
        }
    }
}

fn print_detail(client: &Client, d: &ServiceDetail) {
    let s = &d.summary;
    println!("Name:        {}", s.name);
    println!(
        "Status:      {}{}",
        s.status.as_str(),
        d.message
            .as_ref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    println!("Processor:   {}", s.processor);
    if d.latest_version > 0 {
        println!(
            "Version:     {} (latest {})",
            d.current_version, d.latest_version
        );
    }
    println!(
        "Instances:   {}/{} running",
        s.running_instances, s.instances
    );
    for p in &d.placements {
        println!(
            "Placed {}:    on node {} ({}{})",
            p.instance,
            p.node,
            p.state,
            p.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    for r in &d.runners {
        println!(
            "Instance {}:  {}, pid {}, restarts: {}{}; {}",
            r.instance,
            match (r.up, r.ready) {
                (true, true) => "up",
                (true, false) => "up, not ready (failing its readiness check)",
                (false, _) => "restarting",
            },
            r.pid.map_or("-".to_string(), |p| p.to_string()),
            r.restarts,
            r.last_exit
                .as_ref()
                .map(|e| format!(", last exit: {e}"))
                .unwrap_or_default(),
            r.sandbox
        );
    }
    println!("Endpoint:    {}", endpoint_url(client, d));
    println!("Token:       {}", d.token);
    if let Some(a) = &d.artifact {
        println!("Artifact:    {a}");
    }
    if let Some(sig) = &d.signature {
        println!(
            "Model:       {}",
            optimizer::optimize::describe_signature(sig)
        );
    }
    if let Some(r) = &d.report {
        println!();
        print!("{}", optimize::report_table(r));
    }
}

async fn predict(client: &Client, name: &str, data: &Path) -> Result<i32, ClientError> {
    let ext = data
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let bodies: Vec<Vec<u8>> = if ext == "json" {
        vec![std::fs::read(data)
            .map_err(|e| ClientError::Usage(format!("{}: {e}", data.display())))?]
    } else {
        let d: ServiceDetail = client.get(&format!("/api/v2/services/{name}")).await?;
        let sig = d
            .signature
            .ok_or_else(|| ClientError::Api(format!("{name} has no inspected model yet")))?;
        let ds =
            optimizer::data::load(data, &sig).map_err(|e| ClientError::Usage(e.to_string()))?;
        ds.samples
            .iter()
            .map(|s| {
                let inputs: Vec<_> = s
                    .iter()
                    .map(|(n, t)| t.to_infer_tensor(n.clone()))
                    .collect();
                serde_json::to_vec(&serde_json::json!({ "inputs": inputs })).unwrap_or_default()
            })
            .collect()
    };
    let d: ServiceDetail = client.get(&format!("/api/v2/services/{name}")).await?;
    let http = crate::cli::client::http_builder()?
        .build()
        .map_err(|e| ClientError::Usage(e.to_string()))?;
    for body in bodies {
        let resp = http
            .post(endpoint_url(client, &d))
            .header("Authorization", &d.token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ClientError::Connect {
                server: client.server.clone(),
                reason: e.to_string(),
            })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Api(e.to_string()))?;
        if !status.is_success() {
            return Err(ClientError::Api(crate::cli::client::describe_error(
                status, &bytes,
            )));
        }
        println!("{}", String::from_utf8_lossy(&bytes));
    }
    Ok(0)
}

/// Writes `DIR/model/{mlp.onnx,test_data.npz}`, `DIR/service.json` (the seed's
/// CPU plugin config) and `DIR/request.json`, so a reader without models of
/// their own can follow the README.
fn example_model(dir: &Path) -> Result<(), String> {
    use crate::control::example;
    let model_dir = dir.join("model");
    std::fs::create_dir_all(&model_dir).map_err(|e| format!("{}: {e}", model_dir.display()))?;
    let write = |p: PathBuf, bytes: Vec<u8>| {
        std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))
    };
    for (name, bytes) in example::files()? {
        write(model_dir.join(name), bytes)?;
    }
    let pretty = |v: &serde_json::Value| serde_json::to_vec_pretty(v).map_err(|e| e.to_string());
    write(dir.join("service.json"), pretty(&example::config("model"))?)?;
    write(dir.join("request.json"), pretty(&example::request())?)?;
    println!(
        "wrote {0}/model/mlp.onnx, {0}/model/test_data.npz, {0}/service.json, {0}/request.json",
        dir.display()
    );
    Ok(())
}
