use clap::{Parser, Subcommand};

/// The `whet` command line: the server, the client commands, and the child
/// processes the server starts.
#[derive(Parser, Debug)]
#[command(
    name = "whet",
    version,
    about = "Whetstone: optimize a model once, then serve it"
)]
struct Whet {
    /// Server URL for client commands.
    #[arg(
        long,
        global = true,
        env = "WHET_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// Management API token (default: the admin token of the local server's data folder).
    #[arg(long, global = true, env = "WHET_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A PEM file of certificates to trust, beside the system's roots, for
    /// an https:// server (one with a private or self-signed certificate).
    #[arg(long, global = true, env = "WHET_CA_CERT")]
    ca_cert: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (API, deploy workers, prediction endpoints).
    // Boxed: its many flags make it much larger than the other commands.
    Serve(Box<backend::http::server::ServeArgs>),
    /// Serve one instance of an artifact (started by the server; not for
    /// direct use).
    #[command(hide = true)]
    Runner(runner::serve::RunnerArgs),
    /// Inspect a model for the server (started by the server; not for
    /// direct use): reads a request on stdin, prints the signature.
    #[command(hide = true)]
    Inspect,
    #[command(flatten)]
    Client(backend::cli::Command),
}

fn main() {
    let whet = Whet::parse();
    init_logging();
    match whet.command {
        // A runner serves one instance with one thread per engine call: no
        // async runtime (its threads would only cost memory in every runner).
        Command::Runner(args) => std::process::exit(runner::serve::main(&args)),
        // Inspection confines itself with Landlock, which covers the calling
        // thread and those it starts later: it must run before any runtime
        // starts threads.
        Command::Inspect => std::process::exit(backend::deploy::inspect::child_main()),
        Command::Serve(args) => std::process::exit(block_on(backend::http::server::run(*args))),
        Command::Client(command) => {
            backend::cli::client::set_ca_cert(whet.ca_cert.clone());
            let code = block_on(backend::cli::run(&whet.server, whet.token, command));
            std::process::exit(code)
        }
    }
}

fn block_on(f: impl std::future::Future<Output = i32>) -> i32 {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            1
        }
    }
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WHET_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}
