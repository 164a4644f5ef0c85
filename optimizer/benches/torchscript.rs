//! What the TorchScript o1 search buys, measured in one run on this machine:
//! each candidate (as saved, inference mode, frozen, frozen +
//! optimize_for_inference) timed on the same inputs by the search itself,
//! with its speedup over the module as saved. Models: a conv + batch-norm
//! CNN scripted in code (what freezing's conv/bn folding is for) and, when
//! the zoo is there, silero VAD (`silero_vad.jit`, stateful, LSTM).
//!
//! At o2 also: a two-layer perceptron and an LSTM scripted in code, with
//! their linear and recurrent layers in dynamic INT8, and the CNNs with a
//! calibration set (static INT8 of the convolutions).
//!
//! Run: `cargo bench -p whetstone-optimizer --features torch --bench torchscript`
//! (with LIBTORCH and its lib/ on LD_LIBRARY_PATH, as scripts/test.sh sets).

use std::path::{Path, PathBuf};
use std::time::Duration;

use optimizer::bench::Budget;
use optimizer::optimize::{optimize, OptimizeOptions};
use optimizer::tensor::{Tensor, TensorData};
use shared::api::OptimizationReport;

fn options(
    model: PathBuf,
    out: &Path,
    test_data: Option<PathBuf>,
    shapes: Vec<Vec<Vec<usize>>>,
) -> OptimizeOptions {
    OptimizeOptions {
        test_data,
        input_shapes: shapes,
        budget: Budget {
            warmup: 5,
            min_runs: 30,
            max_runs: 400,
            time: Duration::from_secs(3),
        },
        ..OptimizeOptions::new(model, out.to_path_buf())
    }
}

fn print(model: &str, r: &OptimizationReport) {
    println!(
        "\n{model} (p50 per shape group: {})",
        r.diagnosis.shape_groups.join(" | ")
    );
    println!(
        "| candidate | status | p50 ms | speedup vs as saved | max rel. error | why rejected |"
    );
    println!("|---|---|---|---|---|---|");
    for c in &r.candidates {
        let p50 = c
            .latency
            .iter()
            .map(|l| format!("{:.3}", l.p50_ms))
            .collect::<Vec<_>>()
            .join(" / ");
        let why: String = match c.status {
            shared::api::CandidateStatus::Rejected => c
                .message
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect(),
            _ => String::new(),
        };
        println!(
            "| {} | {:?} | {} | {} | {} | {} |",
            c.name,
            c.status,
            if p50.is_empty() { "-".into() } else { p50 },
            c.speedup
                .map(|s| format!("{s:.2}x"))
                .unwrap_or_else(|| "-".into()),
            c.max_rel_error
                .map(|e| format!("{e:.1e}"))
                .unwrap_or_else(|| "-".into()),
            why,
        );
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    println!("cpu flags: {}", optimizer::bench::cpu_flags());

    // o2: dynamic INT8 of linear and recurrent layers.
    let mlp = dir.path().join("mlp.pt");
    optimizer::torch::build::mlp(&mlp, 512, 2048, 512).expect("scripted MLP");
    let opts = OptimizeOptions {
        level: shared::config::OptimizationLevel::O2,
        ..options(mlp, &dir.path().join("mlp"), None, vec![vec![vec![8, 512]]])
    };
    let (report, _) = optimize(&opts, &mut |_| {}).expect("search");
    print("o2, MLP 512→2048→512 (torch.linear), input 8*512", &report);
    let lstm = dir.path().join("lstm.pt");
    optimizer::torch::build::recurrent(&lstm, false, 128, 512).expect("scripted LSTM");
    let opts = OptimizeOptions {
        level: shared::config::OptimizationLevel::O2,
        ..options(
            lstm,
            &dir.path().join("lstm"),
            None,
            vec![vec![vec![4, 32, 128]]],
        )
    };
    let (report, _) = optimize(&opts, &mut |_| {}).expect("search");
    print("o2, LSTM 128→512 (aten::lstm), input 4*32*128", &report);

    for (channels, blocks, side) in [(32, 4, 56), (64, 6, 56)] {
        let model = dir.path().join(format!("cnn_{channels}x{blocks}.pt"));
        optimizer::torch::build::conv_bn_net(&model, channels, blocks).expect("scripted CNN");
        let out = dir.path().join(format!("cnn_{channels}x{blocks}"));
        // Eight calibration images, each its own call (batch 1).
        let n = 8 * 3 * side * side;
        let images: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        let images = Tensor::new(vec![8, 3, side, side], TensorData::F32(images)).expect("images");
        let calibration = dir.path().join(format!("calib_{side}.npz"));
        optimizer::data::write_npz(&calibration, &[("input0", &images)]).expect("npz");
        let opts = OptimizeOptions {
            level: shared::config::OptimizationLevel::O2,
            calibration: Some(calibration),
            ..options(model, &out, None, vec![vec![vec![1, 3, side, side]]])
        };
        let (report, _) = optimize(&opts, &mut |_| {}).expect("search");
        print(
            &format!(
                "o2, conv+bn CNN, {blocks} blocks of {channels} channels, input 1*3*{side}*{side}"
            ),
            &report,
        );
    }

    let zoo = std::env::var_os("WHETSTONE_ZOO")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/zoo"));
    let npz = zoo.join("test_silero_vad.npz");
    if !npz.is_file() {
        println!(
            "\nsilero VAD skipped: no {} (set WHETSTONE_ZOO)",
            npz.display()
        );
        return;
    }
    let sig = shared::api::ModelSignature {
        format: "npz".into(),
        inputs: vec![shared::api::TensorSpec {
            name: "chunks".into(),
            datatype: "FP32".into(),
            shape: vec![-1, 512],
        }],
        outputs: vec![],
    };
    let chunks = optimizer::data::load(&npz, &sig).expect("silero chunks");
    let rows: Vec<f32> = chunks
        .samples
        .iter()
        .take(64)
        .flat_map(|s| match &s[0].1.data {
            TensorData::F32(v) => v.clone(),
            _ => vec![],
        })
        .collect();
    let n = rows.len() / 512;
    let stacked = Tensor::new(vec![n, 512], TensorData::F32(rows)).expect("stack");
    let sr = Tensor::new(vec![], TensorData::I64(vec![16000])).expect("sr");
    let data = dir.path().join("silero.npz");
    optimizer::data::write_npz(&data, &[("input0", &stacked), ("input1", &sr)]).expect("npz");
    let out = dir.path().join("silero");
    let opts = options(zoo.join("silero_vad.jit"), &out, Some(data), vec![]);
    let (report, _) = optimize(&opts, &mut |_| {}).expect("search");
    print("silero_vad.jit, 64 chunks of 512 samples in order", &report);
}
