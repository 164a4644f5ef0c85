//! `whet-runner`: serves one instance of an ONNX artifact for the server.
//! Built without libtorch; TorchScript artifacts use `whet runner`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "whet-runner", version)]
struct Cli {
    #[command(flatten)]
    args: runner::serve::RunnerArgs,
}

fn main() {
    let cli = Cli::parse();
    std::process::exit(runner::serve::main(&cli.args));
}
