use clap::Parser;

fn main() {
    let cli = backend::cli::Cli::parse();
    // A runner serves one instance with one thread per engine call: no
    // async runtime (its threads would only cost memory in every runner).
    if let backend::cli::Command::Runner(args) = &cli.command {
        init_logging();
        std::process::exit(runner::serve::main(args));
    }
    // Inspection confines itself with Landlock, which covers the calling
    // thread and those it starts later: it must run before any runtime
    // starts threads.
    if let backend::cli::Command::Inspect = &cli.command {
        init_logging();
        std::process::exit(backend::deploy::inspect::child_main());
    }
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(backend::cli::run(cli));
    std::process::exit(code);
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
