//! `whet serve`: opens the data folder, the store, recovers interrupted
//! deploys, starts the workers, and serves the API.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::sync::Notify;

use crate::control::logbus::LogBus;
use crate::control::objects::Objects;
use crate::control::resources::{parse_groups, ResourceGroup, Resources};
use crate::control::tokens::{hash_token, new_token};
use crate::control::{Settings, Store};
use crate::http::error::AppError;
use crate::http::state::AppState;
use crate::serving::instances::Instances;
use shared::api::ADMIN_TOKEN_FILE;

/// `whet serve`: where it listens, where its data lives, and the limits of
/// what it runs.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (API, console and predictions); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Also answer KServe v2 over gRPC (`inference.GRPCInferenceService`,
    /// as Triton's gRPC client and perf_analyzer call it) on this address,
    /// for services whose config sets `metadata.enable_grpc`. Default: off.
    #[arg(long, env = "WHET_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Data folder: database, uploads, artifacts, admin token.
    #[arg(long, env = "WHET_DATA")]
    pub data: Option<std::path::PathBuf>,
    /// The database: `sqlite://PATH` or `postgres://USER[:PASSWORD]@HOST:PORT/DB`
    /// (default: SQLite in the data folder). Nodes that share one PostgreSQL
    /// share services, jobs, accounts and logs.
    #[arg(long, env = "WHET_DATABASE")]
    pub database: Option<String>,
    /// Where sealed artifacts are published for the other nodes:
    /// `s3://BUCKET/PREFIX` (an S3-compatible store, configured from
    /// `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ALLOW_HTTP`) or a shared folder. Default: none; the
    /// data folder alone holds them.
    #[arg(long, env = "WHET_STORE")]
    pub store: Option<String>,
    /// Deploy jobs run at once.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// A folder that `file://` model paths may point into (repeatable).
    #[arg(long = "model-root")]
    pub model_roots: Vec<std::path::PathBuf>,
    /// Largest model upload or unpacked archive, in MiB.
    #[arg(long, default_value_t = 8192)]
    pub max_model_mib: u64,
    /// The web console bundle folder (default: `<exe_dir>/../console`, i.e.
    /// `target/console` next to `target/release/whet`).
    #[arg(long)]
    pub console: Option<std::path::PathBuf>,
    /// A resource group service configs may name in `resource`:
    /// `NAME=cpu` or `NAME=gpu:MODEL[:COUNT]`, e.g. `T4_8CORE=gpu:T4:1`
    /// (repeatable; default: one CPU group `default`).
    #[arg(
        long = "resource-group",
        env = "WHET_RESOURCE_GROUPS",
        value_delimiter = ','
    )]
    pub resource_groups: Vec<String>,
    /// Memory ceiling of an optimizer or inspection child process when
    /// the service config sets no `metadata.memory` (MB), 0 for none.
    #[arg(long, default_value_t = 16384)]
    pub child_memory_mb: u64,
    /// Wall-clock limit of one optimizer run, e.g. `1h`, `90m`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub optimize_timeout: std::time::Duration,
    /// How long this node's claim on a deploy job lasts unless renewed; when
    /// the node dies, another node sharing the database resumes the deploy
    /// this long after its last renewal.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub job_lease: std::time::Duration,
    /// The first admin token, used when the store has none yet (at least 16
    /// characters, no whitespace): nodes started from one secret share it.
    /// Without it the first start makes a random one. Either way it is
    /// written to DATA/admin-token.
    #[arg(long, env = "WHET_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// HOST:PORT at which the other nodes reach this one (predictions for a
    /// service this node does not serve are forwarded there). Default: the
    /// bound address, or this host's name when bound to every interface.
    #[arg(long, env = "WHET_ADVERTISE")]
    pub advertise: Option<String>,
    /// How a batching service waits for a batch to fill: `adaptive` (only
    /// while requests arrive faster than the engine answers them; a request
    /// alone runs at once) or `window` (the whole `max_batch_timeout`, as a
    /// fixed batch window does).
    #[arg(long, env = "WHET_BATCH_WAIT", default_value = "adaptive", value_parser = ["adaptive", "window"])]
    pub batch_wait: String,
    /// How often the autoscaler (the config's `autoscaler`) measures the
    /// load and decides.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub autoscale_period: std::time::Duration,
    /// How long the load must ask for fewer instances before the autoscaler
    /// scales in (scaling out is at once).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub scale_in_delay: std::time::Duration,
    /// The share of predictions kept in each service's request log (0 to
    /// 1; failed ones are always kept), the last 100 per service.
    #[arg(long, default_value_t = 0.01)]
    pub request_log_rate: f64,
    /// How often unused uploads, models, artifacts, abandoned temporary
    /// folders and old log lines are collected (`whet gc` does it now).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub gc_period: std::time::Duration,
    /// An unused file is collected once it is this old (an upload waits
    /// this long for the create that names it).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub gc_grace: std::time::Duration,
    /// Deploy log lines older than this are deleted.
    #[arg(long, default_value = "30days", value_parser = humantime::parse_duration)]
    pub log_retention: std::time::Duration,
    /// Of each service's deploy log, the last this many lines are kept.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(i64).range(1..))]
    pub log_max_lines: i64,
    /// MiB of models and artifacts each team's services may keep (every
    /// version counted); a create or modify past it is refused (413).
    /// Default: no quota.
    #[arg(long)]
    pub team_quota_mib: Option<u64>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key). Nodes
    /// that share a database forward to each other over HTTPS too, trusting
    /// the system's roots and this chain.
    #[arg(long, env = "WHET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "WHET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The key (64 hex digits) prediction tokens are sealed with at rest.
    /// Nodes that share a database need the same one; default:
    /// DATA/secret-key, made at the first start.
    #[arg(long, env = "WHET_SECRET_KEY_FILE", conflicts_with = "secret_key")]
    pub secret_key_file: Option<std::path::PathBuf>,
    /// The same key given as its 64 hex digits (`whet export k8s` puts one
    /// in the nodes' Secret).
    #[arg(long, env = "WHET_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Export traces of predictions (queue, batch, engine spans) with
    /// OTLP/HTTP to this URL, e.g. `http://collector:4318/v1/traces`.
    /// Default: no tracing.
    #[arg(long, env = "WHET_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The share of traces kept when the caller did not decide (a
    /// `traceparent`'s sampled flag is followed), 0 to 1.
    #[arg(long, default_value_t = 1.0)]
    pub otlp_sample_ratio: f64,
}

/// `whet serve` with its command-line arguments: runs until the process is
/// stopped. Returns the exit code: 2 for a usage error (as the client
/// commands), 1 when the server fails.
pub async fn run(args: ServeArgs) -> i32 {
    let usage = |e: String| {
        eprintln!("error: {e}");
        2
    };
    let groups = match parse_groups(&args.resource_groups) {
        Ok(g) => g,
        Err(e) => return usage(e),
    };
    if let Some(url) = &args.database {
        if let Err(e) = crate::control::store::Dialect::of_url(url) {
            return usage(e);
        }
    }
    if let Some(t) = &args.admin_token {
        if t.len() < 16 || t.chars().any(char::is_whitespace) {
            return usage(
                "--admin-token (WHET_ADMIN_TOKEN): expected at least 16 characters and no whitespace"
                    .into(),
            );
        }
    }
    if !(0.0..=1.0).contains(&args.request_log_rate) {
        return usage(format!(
            "--request-log-rate: expected a share from 0 to 1, got {}",
            args.request_log_rate
        ));
    }
    crate::control::requests::set_rate(args.request_log_rate);
    let whet_exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return usage(format!("cannot find the whet executable: {e}")),
    };
    let data = args.data.unwrap_or_else(|| {
        shared::api::default_data_dir(
            std::env::var_os("XDG_DATA_HOME").map(Into::into),
            std::env::var_os("HOME").map(Into::into),
        )
    });
    let settings = Settings {
        cpu_workers: args.workers,
        model_roots: args.model_roots,
        max_model_bytes: args.max_model_mib << 20,
        runner_account: crate::sandbox::runner_account(),
        child_memory_mib: args.child_memory_mb,
        optimize_timeout: args.optimize_timeout,
        database: args.database,
        store: args.store,
        job_lease: args.job_lease.max(std::time::Duration::from_secs(1)),
        admin_token: args.admin_token,
        advertise: args.advertise,
        adaptive_batching: args.batch_wait == "adaptive",
        autoscale_period: args
            .autoscale_period
            .max(std::time::Duration::from_millis(100)),
        scale_in_delay: args.scale_in_delay,
        gc: crate::control::settings::GcPolicy {
            grace: args.gc_grace,
            log_retention: args.log_retention,
            log_max_lines: args.log_max_lines,
        },
        gc_period: args.gc_period.max(std::time::Duration::from_secs(1)),
        team_quota_bytes: args.team_quota_mib.map(|m| m << 20),
        secret_key_file: args.secret_key_file,
        secret_key: args.secret_key,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(crate::http::tls::TlsFiles { cert, key }),
            _ => None,
        },
        ..Settings::new(data, whet_exe)
    };
    // A certificate or key that cannot be used is the operator's mistake:
    // said before anything starts.
    let tls = match settings
        .tls
        .as_ref()
        .map(crate::http::tls::acceptor)
        .transpose()
    {
        Ok(tls) => tls,
        Err(e) => return usage(e),
    };
    if let Some(endpoint) = &args.otlp_endpoint {
        if !(0.0..=1.0).contains(&args.otlp_sample_ratio) {
            return usage(format!(
                "--otlp-sample-ratio: expected a share from 0 to 1, got {}",
                args.otlp_sample_ratio
            ));
        }
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return usage(format!(
                "--otlp-endpoint: expected the http(s) URL of an OTLP/HTTP traces receiver, like http://collector:4318/v1/traces, got {endpoint:?}"
            ));
        }
        if let Err(e) =
            crate::serving::telemetry::init(endpoint, args.otlp_sample_ratio, &settings.node_id)
        {
            return usage(e);
        }
        tracing::info!("exporting traces of predictions to {endpoint}");
    }
    let console = args
        .console
        .or_else(crate::http::console::default_dir)
        .unwrap_or_else(|| std::path::PathBuf::from("console"));
    let grpc = match (&args.grpc_addr, &settings.tls) {
        (None, _) => None,
        (Some(addr), None) => Some((*addr, None)),
        (Some(addr), Some(files)) => match crate::http::grpc::tls_config(files) {
            Ok(tls) => Some((*addr, Some(tls))),
            Err(e) => return usage(e),
        },
    };
    match serve(settings, groups, args.addr, console, tls, grpc).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Opens (or initializes) the data folder and builds the state. On first
/// start an admin token is created; only its hash is stored, the token itself
/// goes to `DATA/admin-token` with mode 0600.
pub async fn open(settings: Settings) -> Result<AppState, AppError> {
    open_with(settings, Resources::cpu_default()).await
}

/// [`open`] with the server's resource groups (and the GPUs found for them).
pub async fn open_with(settings: Settings, resources: Resources) -> Result<AppState, AppError> {
    for dir in [
        settings.data_dir.clone(),
        settings.uploads_dir(),
        settings.models_dir(),
        settings.artifacts_dir(),
    ] {
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| AppError::Internal(format!("{}: {e}", dir.display())))?;
    }
    let objects = settings
        .store
        .as_deref()
        .map(Objects::open)
        .transpose()
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    let sealer = match (&settings.secret_key, &settings.secret_key_file) {
        (Some(hex), _) => crate::control::sealing::Sealer::from_hex(hex),
        (None, Some(path)) => crate::control::sealing::Sealer::from_file(path, false),
        (None, None) => crate::control::sealing::Sealer::from_file(
            &settings.data_dir.join(crate::control::sealing::KEY_FILE),
            true,
        ),
    }
    .map_err(AppError::BadRequest)?;
    let store = Store::connect(&settings.database_url())
        .await?
        .with_sealer(Arc::new(sealer))
        .await?;
    if store.token_count().await? == 0 {
        let token = settings
            .admin_token
            .clone()
            .unwrap_or_else(|| new_token("whet_"));
        write_secret(&settings.data_dir.join(ADMIN_TOKEN_FILE), &token)?;
        // The first admin: the site admin `admin` created by the migrations.
        let admin = store
            .user("admin")
            .await?
            .ok_or_else(|| AppError::Internal("the store has no user 'admin'".into()))?;
        match store
            .insert_token(admin.id, "admin", &hash_token(&token))
            .await
        {
            Ok(_) => {}
            // Another node started with the same token got there first.
            Err(crate::control::store::StoreError::Conflict(_))
                if settings.admin_token.is_some() => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(
            "created the admin API token in {}",
            settings.data_dir.join(ADMIN_TOKEN_FILE).display()
        );
    }
    let logs = LogBus::new(store.clone(), settings.node_id.clone());
    Ok(AppState {
        settings: Arc::new(settings),
        store,
        logs,
        instances: Instances::default(),
        jobs_ready: Arc::new(Notify::new()),
        resources: Arc::new(resources),
        cancels: Default::default(),
        builds: Default::default(),
        hosting: Default::default(),
        objects,
        body_budget: Arc::new(tokio::sync::Semaphore::new(
            crate::http::state::BODY_BUDGET_BYTES / crate::http::state::BUDGET_UNIT,
        )),
        revoked: tokio::sync::watch::Sender::new(0),
        stopping: Default::default(),
    })
}

fn write_secret(path: &std::path::Path, secret: &str) -> Result<(), AppError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| AppError::Internal(format!("{}: {e}", path.display())))?;
    f.write_all(secret.as_bytes())?;
    Ok(())
}

pub fn router(state: AppState) -> Router {
    router_with_console(state, None)
}

/// The API, and the web console from `console` (a bundle folder) for every
/// path the API does not match; without one, unmatched paths are JSON 404s.
pub fn router_with_console(state: AppState, console: Option<std::path::PathBuf>) -> Router {
    let app = Router::new()
        .merge(crate::http::api::routes())
        .merge(crate::http::accounts::routes())
        .merge(crate::http::shares::routes())
        .merge(crate::http::resources::routes())
        .merge(
            crate::http::predict::routes().route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::http::forward::forward_remote,
            )),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    let app = match console {
        Some(dir) => app.fallback_service(crate::http::console::router(dir)),
        None => app.fallback(|| async { crate::http::api::not_found() }),
    };
    app.layer(axum::middleware::from_fn(crate::http::body::drain_unread))
        .layer(axum::middleware::from_fn(crate::http::error::json_rejections))
        .layer(axum::middleware::from_fn(crate::http::security::headers))
        // Spans name the path, never the query: a WebSocket's `?token=`
        // must not reach the server's log.
        .layer(
        tower_http::trace::TraceLayer::new_for_http().make_span_with(
            |req: &axum::http::Request<axum::body::Body>| {
                tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
            },
        ),
    )
    .with_state(state)
}

/// Runs the server until the process is stopped.
/// `tls`: the acceptor of `settings.tls` (built by the caller, which checks
/// the files before anything starts); `grpc`: the gRPC listener's address
/// and its TLS, if one is wanted.
pub async fn serve(
    settings: Settings,
    groups: Vec<ResourceGroup>,
    addr: SocketAddr,
    console: std::path::PathBuf,
    tls: Option<tokio_rustls::TlsAcceptor>,
    grpc: Option<(SocketAddr, Option<tonic::transport::ServerTlsConfig>)>,
) -> Result<(), AppError> {
    // Fail early and clearly when the engine library is missing.
    if let Err(e) = optimizer::runtime::environment() {
        return Err(AppError::Unavailable(e.to_string()));
    }
    // On SQLite, one server per data folder (a second would re-queue the
    // first one's running jobs as its own), held until this returns or the
    // process ends. Nodes sharing a PostgreSQL may share a folder: their
    // jobs are leased in the database. The folder is closed to other
    // accounts either way.
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|e| AppError::Internal(format!("{}: {e}", settings.data_dir.display())))?;
    let sqlite = crate::control::store::Dialect::of_url(&settings.database_url())
        .is_ok_and(|d| d == crate::control::store::Dialect::Sqlite);
    let _data_lock = if sqlite {
        Some(crate::control::datadir::lock(&settings.data_dir).map_err(AppError::Conflict)?)
    } else {
        None
    };
    let resources = Resources::new(groups, crate::control::gpu::discover_and_log());
    resources.log_groups();
    let data_dir = settings.data_dir.clone();
    let state = open_with(settings, resources).await?;
    crate::control::datadir::restrict(&data_dir)
        .map_err(|e| AppError::Internal(format!("{}: {e}", data_dir.display())))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| AppError::Internal(format!("binding {addr}: {e}")))?;
    let local = listener.local_addr()?;
    let grpc = match grpc {
        Some((grpc_addr, grpc_tls)) => {
            let l = tokio::net::TcpListener::bind(grpc_addr)
                .await
                .map_err(|e| AppError::Internal(format!("binding --grpc-addr {grpc_addr}: {e}")))?;
            Some((l.local_addr()?, l, grpc_tls))
        }
        None => None,
    };
    let deployer = state.deployer();
    let advertised = match &state.settings.advertise {
        Some(a) => a.clone(),
        None if local.ip().is_unspecified() => {
            let host = hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}:{}", local.port())
        }
        None => local.to_string(),
    };
    crate::deploy::nodes::heartbeat(&deployer, &advertised).await?;
    crate::deploy::recover(&deployer, &advertised).await?;
    crate::deploy::spawn_workers(&deployer);
    crate::deploy::nodes::spawn_lease_sweeper(&deployer);
    crate::deploy::placement::spawn_reconciler(&deployer);
    crate::deploy::autoscale::spawn(&deployer);
    crate::deploy::gc::spawn_collector(&deployer);
    if state.store.dialect() == crate::control::store::Dialect::Postgres {
        crate::control::notify::spawn_listener(
            state.settings.database_url(),
            state.logs.clone(),
            state.jobs_ready.clone(),
            state.hosting.waker(),
        );
    }
    // Printed on stdout so scripts (and tests) can find a port-0 server; a
    // closed stdout must not take the server down, so the result is ignored.
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let grpc_at = grpc
            .as_ref()
            .map(|(at, _, _)| format!("gRPC on {at}; "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "whet serving on {}://{local} ({grpc_at}data: {})",
            state.settings.scheme(),
            state.settings.data_dir.display()
        );
        let _ = out.flush();
    }
    if !console.join("index.html").is_file() {
        tracing::warn!(
            "web console not built in {} (cargo run --release -p xtask -- build-console --release)",
            console.display()
        );
    }
    let stopping = state.stopping.clone();
    spawn_signal_handler(stopping.clone());
    let grpc = grpc.map(|(_, listener, tls)| {
        tokio::spawn(crate::http::grpc::serve(
            state.clone(),
            listener,
            tls,
            DRAIN_TIMEOUT,
        ))
    });
    serve_http1(
        listener,
        tls,
        router_with_console(state, Some(console)),
        stopping,
        DRAIN_TIMEOUT,
    )
    .await?;
    if let Some(grpc) = grpc {
        match grpc.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{e}"),
            Err(e) => tracing::error!("the gRPC server failed: {e}"),
        }
    }
    // Every connection answered (or the drain timed out): the deploys
    // under way stay at their recorded stage for the next server.
    crate::deploy::leave_running(&deployer).await;
    tracing::info!("stopped");
    Ok(())
}

/// How long a stopping server waits for the requests in flight.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One connection, HTTP/1.1 with upgrades, until it ends or the server
/// stops (then after the request it is answering).
async fn serve_connection<IO>(
    io: IO,
    service: hyper_util::service::TowerToHyperService<Router>,
    stopping: tokio_util::sync::CancellationToken,
) where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let done = tokio::select! {
        r = conn.as_mut() => r,
        () = stopping.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = done {
        tracing::debug!("connection: {e}");
    }
}

/// SIGTERM or Ctrl-C (SIGINT) starts the drain.
fn spawn_signal_handler(stopping: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        let (Ok(mut term), Ok(mut int)) = (term, int) else {
            tracing::warn!("cannot listen for SIGTERM: stopping will not drain");
            return;
        };
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            "{which}: stopping; no new connections or deploys, the requests in flight are answered (up to {} s)",
            DRAIN_TIMEOUT.as_secs()
        );
        stopping.cancel();
    });
}

/// How long a client may take to send a request's headers. A connection
/// that trickles them (or idles between keep-alive requests) is closed;
/// bodies have their own limit where they are read (`predict.rs`).
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// HTTP/1.1 with upgrades (WebSockets), as `axum::serve` does, plus the
/// header read timeout that `axum::serve` does not set. Once `stopping` is
/// cancelled it accepts no more connections, lets each one finish the
/// request it is answering (idle keep-alive ones close), and returns when
/// they are all done or `drain` has passed.
async fn serve_http1(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    stopping: tokio_util::sync::CancellationToken,
    drain: std::time::Duration,
) -> Result<(), AppError> {
    use hyper_util::rt::TokioIo;
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stopping.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stopping = stopping.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            match tls {
                // The handshake is bounded like the headers after it.
                Some(tls) => match tokio::time::timeout(HEADER_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        serve_connection(TokioIo::new(stream), service, stopping).await
                    }
                    Ok(Err(e)) => tracing::debug!("TLS handshake: {e}"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
                None => serve_connection(TokioIo::new(stream), service, stopping).await,
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connection(s) still busy after {} s; stopping anyway",
            connections.len(),
            drain.as_secs()
        );
    }
    Ok(())
}
