//! `whet optimize`: the Blade plugin outside a deploy (and the child process
//! a deploy runs).

use std::io::Read;
use std::path::PathBuf;

use optimizer::engine::ExecutionProvider;
use optimizer::optimize::{optimize, OptimizeOptions, TargetDevice};
use shared::api::{CandidateStatus, OptimizationReport};
use shared::config::{ModelInfo, OptimizationLevel};

#[derive(clap::Args, Debug)]
pub struct OptimizeArgs {
    /// The model file (ONNX, or TorchScript `.pt`/`.jit` with the `torch` feature).
    pub model: PathBuf,
    /// Output folder for the artifact (model.onnx, or model.pt for TorchScript;
    /// artifact.json, report.json).
    #[arg(long)]
    pub out: PathBuf,
    /// o1 (no accuracy loss) or o2 (INT8).
    #[arg(long, value_parser = ["o1", "o2"])]
    pub level: Option<String>,
    /// Test data file (.npz: one array per input, samples on axis 0).
    #[arg(long)]
    pub test_data: Option<PathBuf>,
    /// Calibration data for o2 static INT8 (.npz, .npy feed dicts, .pth tuples, safetensors).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// One input_shapes group: shapes of all inputs, comma separated, e.g. `1*128,1*128` (repeatable).
    #[arg(long = "input-shapes")]
    pub input_shapes: Vec<String>,
    /// A model_info object (JSON) as in a service config; flags override it.
    #[arg(long)]
    pub model_info: Option<PathBuf>,
    /// Folder that relative test_data paths of --model-info are inside.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Intra-op threads to time with (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the model will be served: `cpu`, or `cuda:N` (CUDA device N;
    /// needs an NVIDIA driver and ONNX Runtime's GPU build, or for
    /// TorchScript libtorch's CUDA libraries). Candidates are built and
    /// timed there, and GPU targets add fp16 candidates.
    #[arg(long, default_value = "cpu")]
    pub device: optimizer::engine::ExecutionProvider,
    /// Print progress as plain lines only (no final table).
    #[arg(long)]
    pub plain: bool,
    /// Exit when standard input closes (used by the server's workers, so the
    /// optimizer dies with the server).
    #[arg(long, hide = true)]
    pub exit_with_stdin: bool,
}

fn options(args: &OptimizeArgs) -> Result<OptimizeOptions, String> {
    let info: ModelInfo = match &args.model_info {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| format!("{}: not a model_info object: {e}", p.display()))?
        }
        None => serde_json::from_str("{}").map_err(|e| e.to_string())?,
    };
    let base = args.data_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    let mut opts =
        OptimizeOptions::from_model_info(args.model.clone(), args.out.clone(), &info, &base)?;
    // Flags override what the model_info says.
    match args.level.as_deref() {
        Some("o2") => opts.level = OptimizationLevel::O2,
        Some(_) => opts.level = OptimizationLevel::O1,
        None => {}
    }
    if !args.input_shapes.is_empty() {
        opts.input_shapes = args
            .input_shapes
            .iter()
            .map(|g| {
                g.split(',')
                    .map(shared::config::parse_shape)
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--input-shapes: {e}"))?;
    }
    if let Some(t) = &args.test_data {
        opts.test_data = Some(t.clone());
    }
    if let Some(c) = &args.calibration {
        opts.calibration = Some(c.clone());
    }
    if let Some(n) = args.threads {
        opts.threads = n;
    }
    opts.device = target_device(args.device)?;
    Ok(opts)
}

/// The device `--device` names, with the driver's name for it (part of the
/// artifact target). A CUDA device that discovery does not find is an error
/// here, before any candidate is built.
fn target_device(provider: ExecutionProvider) -> Result<TargetDevice, String> {
    let ExecutionProvider::Cuda { device_id } = provider else {
        return Ok(TargetDevice::Cpu);
    };
    let gpus = crate::control::gpu::discover();
    if gpus.is_empty() {
        return Err(format!(
            "--device cuda:{device_id}: no GPU was discovered on this machine ({})",
            gpus.reason()
        ));
    }
    let dev = gpus
        .devices
        .iter()
        .find(|d| i64::from(d.ordinal) == i64::from(device_id))
        .ok_or_else(|| {
            format!(
                "--device cuda:{device_id}: no such CUDA device; found {}",
                gpus.devices
                    .iter()
                    .map(|d| format!("cuda:{} ({})", d.ordinal, d.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    Ok(TargetDevice::Cuda {
        device_id,
        name: dev.name.clone(),
    })
}

pub fn run(args: OptimizeArgs) -> i32 {
    if args.exit_with_stdin {
        std::thread::spawn(|| {
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            std::process::exit(130);
        });
    }
    let opts = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    // Interactive runs get a spinner with the current step and the elapsed
    // time; plain runs (the server's child process) print lines only.
    let bar = (!args.plain).then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb.set_message(format!("optimizing {}", args.model.display()));
        pb
    });
    let mut progress = |line: &str| {
        use std::io::Write;
        match &bar {
            Some(pb) => {
                pb.println(line);
                pb.set_message(line.trim_start_matches("[OK] ").to_string());
            }
            None => {
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
        }
    };
    let result = optimize(&opts, &mut progress);
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    match result {
        Ok((report, _)) => {
            if !args.plain {
                print!("{}", report_table(&report));
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The report as a text table (also used by `whet desc`).
pub fn report_table(r: &OptimizationReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "Optimization report ({}, {}, {} threads on {}, level {})\n",
        r.optimizer_version, r.context.engine, r.context.threads, r.context.target, r.context.level
    ));
    s.push_str(&format!(
        "Test data: {}; shapes: {}\n",
        r.diagnosis.test_data_source,
        r.diagnosis.shape_groups.join(" | ")
    ));
    for n in &r.diagnosis.notes {
        s.push_str(&format!("Note: {n}\n"));
    }
    // The name column fits the longest candidate name.
    let w = r
        .candidates
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max(16);
    s.push_str(&format!(
        "{:<w$} {:<9} {:>10} {:>10} {:>12} {:>9} {:>10} {:>7}\n",
        "CANDIDATE", "STATUS", "REL.ERR", "COSINE", "P50 MS", "SPEEDUP", "SIZE MB", "SECS"
    ));
    for c in &r.candidates {
        let status = match c.status {
            CandidateStatus::Selected => "selected",
            CandidateStatus::Passed => "passed",
            CandidateStatus::Rejected => "rejected",
        };
        let p50 = c
            .latency
            .iter()
            .map(|l| format!("{:.3}", l.p50_ms))
            .collect::<Vec<_>>()
            .join("/");
        s.push_str(&format!(
            "{:<w$} {:<9} {:>10} {:>10} {:>12} {:>9} {:>10.1} {:>7.1}\n",
            c.name,
            status,
            c.max_rel_error
                .map(|x| format!("{x:.2e}"))
                .unwrap_or_else(|| "-".into()),
            c.min_cosine
                .map(|x| format!("{x:.6}"))
                .unwrap_or_else(|| "-".into()),
            if p50.is_empty() { "-".into() } else { p50 },
            c.speedup
                .map(|x| format!("{x:.2}x"))
                .unwrap_or_else(|| "-".into()),
            c.size_bytes as f64 / 1e6,
            c.seconds
        ));
        let agree = c.agreements();
        if !agree.is_empty() {
            s.push_str(&format!("    agreement: {}\n", agree.join(", ")));
        }
        if let Some(m) = c
            .message
            .as_ref()
            .filter(|_| c.status == CandidateStatus::Rejected)
        {
            s.push_str(&format!("    {m}\n"));
        }
    }
    let h = r.headline();
    s.push_str(&format!(
        "Selected {}: {:.3} ms ({}) -> {:.3} ms ({:.2}x) in {:.1} s; serves {}\n",
        r.selected,
        h.baseline_ms,
        r.baseline,
        h.optimized_ms,
        h.speedup,
        r.total_seconds,
        r.served_precision()
    ));
    s
}
