//! TorchScript freezing, as `torch.jit.freeze` (and optionally
//! `torch.jit.optimize_for_inference`) do it: parameters and attributes
//! that `forward` never changes become constants, so libtorch can fold and
//! fuse around them (conv + batch norm, linear + add, …). tch does not expose
//! these, so they go through a small C++ shim (`cpp/torch_freeze.cpp`)
//! compiled against the same libtorch: a file in, a frozen file out.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::Path;

use crate::error::{OptimizerError, Result};

extern "C" {
    fn whet_torch_freeze(
        in_path: *const c_char,
        out_path: *const c_char,
        preserved: *const *const c_char,
        n_preserved: usize,
        optimize: c_int,
    ) -> *mut c_char;
    fn whet_torch_free_message(message: *mut c_char);
    fn whet_torch_dynamic_int8(
        in_path: *const c_char,
        out_path: *const c_char,
        preserved: *const *const c_char,
        n_preserved: usize,
        reduce_range: c_int,
        quantized: *mut usize,
    ) -> *mut c_char;
    fn whet_torch_static_int8_prepare(
        in_path: *const c_char,
        out_path: *const c_char,
        reduce_range: c_int,
    ) -> *mut c_char;
    fn whet_torch_static_int8_convert(
        in_path: *const c_char,
        out_path: *const c_char,
        preserved: *const *const c_char,
        n_preserved: usize,
        quantized: *mut usize,
    ) -> *mut c_char;
}

/// What a shim call returned: `None` for success, else its message, which
/// is freed here.
///
/// # Safety
/// `message` is NULL or a message the shim allocated, not yet freed.
pub(super) unsafe fn take_message(message: *mut c_char) -> Option<String> {
    if message.is_null() {
        return None;
    }
    // SAFETY: non-NULL means a NUL-terminated message from the shim.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: allocated by the shim, freed once.
    unsafe { whet_torch_free_message(message) };
    Some(text.trim().to_string())
}

/// The method names of `preserved` as C strings, and pointers to them for
/// a shim call (the pointers live as long as the first vector: keep it).
fn c_preserved(preserved: &[&str]) -> Result<(Vec<CString>, Vec<*const c_char>)> {
    let names = preserved
        .iter()
        .map(|s| CString::new(*s).map_err(|_| OptimizerError::Config(format!("method name {s:?}"))))
        .collect::<Result<Vec<_>>>()?;
    let ptrs = names.iter().map(|c| c.as_ptr()).collect();
    Ok((names, ptrs))
}

pub(super) fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| OptimizerError::Config(format!("path {} holds a NUL byte", p.display())))
}

/// How far to go beyond freezing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freeze {
    /// `torch.jit.freeze`: constants inlined and folded.
    Frozen,
    /// Then `torch.jit.optimize_for_inference`: fusions and MKL-DNN
    /// conversions for CPU inference. Its result for convolutions cannot be
    /// loaded back by libtorch; that is an error here, never a file.
    ForInference,
    /// Frozen, then dynamic INT8 of the linear, LSTM and GRU layers
    /// ([`dynamic_int8`]).
    DynamicInt8,
    /// Static INT8 of the convolutions and linear layers from a
    /// calibration set ([`static_int8`]); built by the search, which holds
    /// the set, not by [`freeze`].
    StaticInt8,
}

/// Freezes the TorchScript module at `input` into `output`. `forward` and
/// every method of `preserved` that the module has (such as
/// `reset_states`) stay callable; mutable state that `forward` updates stays
/// an attribute (libtorch's freezing keeps what a method mutates).
pub fn freeze(input: &Path, output: &Path, mode: Freeze, preserved: &[&str]) -> Result<()> {
    match mode {
        Freeze::DynamicInt8 => {
            let saturating = crate::quantize::saturating_u8s8();
            return dynamic_int8(input, output, preserved, saturating).map(drop);
        }
        Freeze::StaticInt8 => {
            return Err(OptimizerError::Config(
                "static INT8 needs a calibration set: use static_int8".into(),
            ))
        }
        Freeze::Frozen | Freeze::ForInference => {}
    }
    let (i, o) = (c_path(input)?, c_path(output)?);
    let (_names, ptrs) = c_preserved(preserved)?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the
    // call; the shim catches every C++ exception and returns either NULL or
    // a malloc'd message that we free with its own function.
    let message = unsafe {
        whet_torch_freeze(
            i.as_ptr(),
            o.as_ptr(),
            ptrs.as_ptr(),
            ptrs.len(),
            c_int::from(mode == Freeze::ForInference),
        )
    };
    // SAFETY: the shim's return value, taken once.
    match unsafe { take_message(message) } {
        None => Ok(()),
        Some(text) => Err(OptimizerError::Engine(format!(
            "freezing {} failed: {text}",
            input.display()
        ))),
    }
}

/// Dynamic INT8 of the module at `input` into `output` (see the shim's
/// `whet_torch_dynamic_int8`): frozen, every linear layer with a constant
/// float weight quantized per output channel and run by fbgemm's dynamic
/// kernel, every LSTM/GRU with constant weights run as its dynamic
/// quantized form. `reduce_range` keeps activations to 7 bits (CPUs without VNNI
/// saturate otherwise). Returns the number of layers quantized.
pub fn dynamic_int8(
    input: &Path,
    output: &Path,
    preserved: &[&str],
    reduce_range: bool,
) -> Result<usize> {
    let (i, o) = (c_path(input)?, c_path(output)?);
    let (_names, ptrs) = c_preserved(preserved)?;
    let mut quantized = 0usize;
    // SAFETY: as in `freeze`; `quantized` is a valid place for the count.
    let message = unsafe {
        whet_torch_dynamic_int8(
            i.as_ptr(),
            o.as_ptr(),
            ptrs.as_ptr(),
            ptrs.len(),
            c_int::from(reduce_range),
            &mut quantized,
        )
    };
    // SAFETY: the shim's return value, taken once.
    match unsafe { take_message(message) } {
        None => Ok(quantized),
        Some(text) => Err(OptimizerError::Engine(format!(
            "dynamic INT8 of {} failed: {text}",
            input.display()
        ))),
    }
}

/// Static INT8 of the module at `input` into `output`, through libtorch's
/// graph-mode quantization (the passes torch.ao's `quantize_jit` drives
/// from Python, driven here from the C++ shim): convolutions folded with
/// their batch norms, observers inserted around every convolution and
/// linear layer, `calibration` run through the observed module (positional
/// inputs of `sig`), then quantize/dequantize inserted from the observed
/// ranges and fused into fbgemm's INT8 kernels (`quantized::conv2d`,
/// `conv2d_relu`, `linear`, …), the module frozen keeping `preserved`.
/// Activations are per tensor (7 bits with `reduce_range`), weights per
/// output channel. Returns the number of INT8 kernels.
pub fn static_int8(
    input: &Path,
    output: &Path,
    preserved: &[&str],
    reduce_range: bool,
    sig: &shared::api::ModelSignature,
    calibration: &[crate::data::Sample],
) -> Result<usize> {
    use crate::engine::InferenceEngine;
    if calibration.is_empty() {
        return Err(OptimizerError::Config(
            "static INT8 needs at least one calibration sample".into(),
        ));
    }
    let fail = |step: &str, text: String| {
        OptimizerError::Engine(format!(
            "static INT8 of {} failed {step}: {text}",
            input.display()
        ))
    };
    // The intermediate modules live beside `output` and go whatever happens.
    let observed = output.with_extension("observed.pt");
    let calibrated = output.with_extension("calibrated.pt");
    let _cleanup = RemoveOnDrop(vec![observed.clone(), calibrated.clone()]);
    let (i, o) = (c_path(input)?, c_path(&observed)?);
    // SAFETY: as in `freeze`.
    let message = unsafe {
        whet_torch_static_int8_prepare(i.as_ptr(), o.as_ptr(), c_int::from(reduce_range))
    };
    // SAFETY: the shim's return value, taken once.
    if let Some(text) = unsafe { take_message(message) } {
        return Err(fail("inserting observers", text));
    }
    let mut engine = super::TorchEngine::load(
        &observed,
        sig.clone(),
        crate::artifact::TorchSettings::INFERENCE,
    )?;
    for sample in calibration {
        engine
            .run(sample)
            .map_err(|e| fail("running the calibration set", e.to_string()))?;
    }
    engine.save(&calibrated)?;
    drop(engine);
    let (c, o) = (c_path(&calibrated)?, c_path(output)?);
    let (_names, ptrs) = c_preserved(preserved)?;
    let mut quantized = 0usize;
    // SAFETY: as in `dynamic_int8`.
    let message = unsafe {
        whet_torch_static_int8_convert(
            c.as_ptr(),
            o.as_ptr(),
            ptrs.as_ptr(),
            ptrs.len(),
            &mut quantized,
        )
    };
    // SAFETY: the shim's return value, taken once.
    match unsafe { take_message(message) } {
        None => Ok(quantized),
        Some(text) => Err(fail("converting to INT8 kernels", text)),
    }
}

/// Files removed when dropped (best effort: they are scratch).
struct RemoveOnDrop(Vec<std::path::PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::TorchSettings;
    use crate::engine::InferenceEngine;
    use crate::tensor::{Tensor, TensorData};
    use crate::torch::build::{linear_relu, linear_relu_reference};
    use crate::torch::TorchEngine;
    use shared::api::{ModelSignature, TensorSpec};

    use crate::torch::build::rows_of_two as sig;

    /// A module's signature of one positional fp32 input of `shape`.
    fn one_input(shape: &[i64]) -> ModelSignature {
        ModelSignature {
            format: "torchscript".into(),
            inputs: vec![TensorSpec {
                name: "input0".into(),
                datatype: "FP32".into(),
                shape: shape.to_vec(),
            }],
            outputs: vec![],
        }
    }

    /// The outputs of the module at `path` on `input`, on a fresh engine.
    fn run_once(
        path: &Path,
        sig: &ModelSignature,
        input: &[(String, Tensor)],
    ) -> Vec<(String, Tensor)> {
        let mut e = TorchEngine::load(path, sig.clone(), TorchSettings::INFERENCE).expect("loads");
        e.run(input).expect("runs")
    }

    #[test]
    fn a_frozen_module_has_no_parameters_and_computes_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let original = dir.path().join("m.pt");
        linear_relu(&original).expect("scripted");
        let params = |p: &Path| {
            tch::CModule::load(p)
                .expect("loads")
                .named_parameters()
                .expect("parameters")
                .len()
        };
        assert_eq!(params(&original), 2, "W and b are parameters before");
        let x = [[1.0f32, 2.0], [-3.0, 0.25], [0.5, -0.5]];
        for mode in [Freeze::Frozen, Freeze::ForInference] {
            let frozen = dir.path().join(format!("{mode:?}.pt"));
            freeze(&original, &frozen, mode, &["reset_states"]).expect("freezes");
            // Freezing inlined W and b as constants: nothing is left to train.
            assert_eq!(params(&frozen), 0, "{mode:?}");
            let mut e = TorchEngine::load(&frozen, sig(), TorchSettings::INFERENCE).expect("loads");
            let input = Tensor::new(vec![3, 2], TensorData::F32(x.concat())).expect("tensor");
            let out = e.run(&[("input0".into(), input)]).expect("runs");
            let want: Vec<f32> = x.iter().flat_map(|r| linear_relu_reference(*r)).collect();
            match &out[0].1.data {
                TensorData::F32(got) => {
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() <= 1e-6, "{mode:?}: {got:?} vs {want:?}");
                    }
                }
                other => panic!("expected f32, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_frozen_stateful_module_keeps_its_state_and_reset_states() {
        use crate::torch::build::{running_sum, RUNNING_SUM_SCALE};
        let dir = tempfile::tempdir().expect("tempdir");
        let original = dir.path().join("s.pt");
        running_sum(&original).expect("scripted");
        let frozen = dir.path().join("s_frozen.pt");
        freeze(&original, &frozen, Freeze::Frozen, &["reset_states"]).expect("freezes");
        let mut e = TorchEngine::load(&frozen, sig(), TorchSettings::INFERENCE).expect("loads");
        let row = |a: f32, b: f32| {
            vec![(
                "input0".to_string(),
                Tensor::new(vec![1, 2], TensorData::F32(vec![a, b])).expect("tensor"),
            )]
        };
        let run =
            |e: &mut TorchEngine, a, b| match e.run(&row(a, b)).expect("runs").remove(0).1.data {
                TensorData::F32(v) => v,
                other => panic!("expected f32, got {other:?}"),
            };
        let [s0, s1] = RUNNING_SUM_SCALE;
        // The total carries across calls: the state was not frozen away.
        assert_eq!(run(&mut e, 1.0, 2.0), vec![s0, 2.0 * s1]);
        assert_eq!(run(&mut e, 3.0, 1.0), vec![4.0 * s0, 3.0 * s1]);
        // reset_states survived freezing and still zeroes the total.
        e.reset().expect("reset_states is callable");
        assert_eq!(run(&mut e, 1.0, 1.0), vec![s0, s1]);
    }

    #[test]
    fn a_frozen_conv_bn_net_agrees_with_the_original() {
        let dir = tempfile::tempdir().expect("tempdir");
        let original = dir.path().join("cnn.pt");
        crate::torch::build::conv_bn_net(&original, 8, 2).expect("scripted");
        let sig = one_input(&[1, 3, 12, 12]);
        let x: Vec<f32> = (0..3 * 12 * 12)
            .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        let input = || {
            vec![(
                "input0".to_string(),
                Tensor::new(vec![1, 3, 12, 12], TensorData::F32(x.clone())).expect("tensor"),
            )]
        };
        let run = |path: &Path| {
            let mut e =
                TorchEngine::load(path, sig.clone(), TorchSettings::INFERENCE).expect("loads");
            match e.run(&input()).expect("runs").remove(0).1.data {
                TensorData::F32(v) => v,
                other => panic!("expected f32, got {other:?}"),
            }
        };
        let want = run(&original);
        assert_eq!(want.len(), 10);
        let agrees = |got: &[f32]| {
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            got.iter()
                .zip(&want)
                .all(|(g, w)| (g - w).abs() <= 1e-4 * scale)
        };
        // Frozen: batch norm folded into the convolutions, same answers.
        let frozen = dir.path().join("cnn_frozen.pt");
        freeze(&original, &frozen, Freeze::Frozen, &[]).expect("freezes");
        assert!(agrees(&run(&frozen)), "{:?} vs {want:?}", run(&frozen));
        // optimize_for_inference turns convolutions into prepacked custom
        // objects that libtorch saves but cannot load back: that is an error
        // the search reports, and no file is left behind. Where it can be
        // loaded, it must agree.
        let optimized = dir.path().join("cnn_optimized.pt");
        match freeze(&original, &optimized, Freeze::ForInference, &[]) {
            Ok(()) => assert!(agrees(&run(&optimized))),
            Err(e) => {
                assert!(e.to_string().contains("cannot save and load back"), "{e}");
                assert!(!optimized.exists(), "an unloadable module was left behind");
            }
        }
    }

    #[test]
    fn a_file_that_is_not_torchscript_is_an_error_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("bad.pt");
        std::fs::write(&bad, b"not a zip archive").expect("write");
        let e = freeze(&bad, &dir.path().join("out.pt"), Freeze::Frozen, &[])
            .expect_err("nothing to freeze");
        let msg = e.to_string();
        assert!(msg.contains("bad.pt") && msg.contains("freezing"), "{msg}");
        assert!(!dir.path().join("out.pt").exists());
    }

    #[test]
    fn dynamic_int8_quantizes_every_linear_layer_and_stays_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (original, int8) = (dir.path().join("mlp.pt"), dir.path().join("int8.pt"));
        crate::torch::build::mlp(&original, 64, 128, 8).expect("scripted");
        let n = dynamic_int8(&original, &int8, &[], crate::quantize::saturating_u8s8())
            .expect("quantized");
        assert_eq!(n, 2);
        let sig = one_input(&[-1, 64]);
        let x: Vec<f32> = (0..4 * 64).map(|i| ((i as f32) * 0.13).sin()).collect();
        let input = vec![(
            "input0".to_string(),
            Tensor::new(vec![4, 64], TensorData::F32(x)).expect("tensor"),
        )];
        let run = |p: &Path| run_once(p, &sig, &input);
        let (want, got) = (run(&original), run(&int8));
        let mut a = crate::verify::Agreement::default();
        a.update(&want, &got).expect("same outputs");
        assert!(a.min_cosine > 0.99, "cosine {}", a.min_cosine);
        assert!(
            a.max_rel_error > 0.0,
            "the INT8 module computes differently"
        );
        // With 7-bit activations (what CPUs without VNNI get) too.
        let reduced = dir.path().join("int8-7bit.pt");
        dynamic_int8(&original, &reduced, &[], true).expect("quantized");
        let mut b = crate::verify::Agreement::default();
        b.update(&want, &run(&reduced)).expect("same outputs");
        assert!(b.min_cosine > 0.99, "7-bit cosine {}", b.min_cosine);
        // A module with no linear or recurrent layer has nothing to quantize.
        let none = dir.path().join("none.pt");
        let e = dynamic_int8(
            &dir.path().join("mlp.pt").with_file_name("lr.pt"),
            &none,
            &[],
            false,
        );
        assert!(e.is_err());
        linear_relu(&dir.path().join("lr.pt")).expect("scripted");
        let e = dynamic_int8(&dir.path().join("lr.pt"), &none, &[], false).unwrap_err();
        assert!(
            e.to_string().contains("no linear, LSTM or GRU layer"),
            "{e}"
        );
    }

    #[test]
    fn dynamic_int8_quantizes_an_lstm_and_a_gru() {
        for gru in [false, true] {
            recurrent_int8(gru);
        }
    }

    fn recurrent_int8(gru: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (original, int8) = (dir.path().join("rnn.pt"), dir.path().join("int8.pt"));
        crate::torch::build::recurrent(&original, gru, 32, 64).expect("scripted");
        let n = dynamic_int8(&original, &int8, &[], crate::quantize::saturating_u8s8())
            .expect("quantized");
        assert_eq!(n, 1);
        let sig = one_input(&[-1, -1, 32]);
        let x: Vec<f32> = (0..2 * 10 * 32)
            .map(|i| ((i as f32) * 0.07).sin())
            .collect();
        let input = vec![(
            "input0".to_string(),
            Tensor::new(vec![2, 10, 32], TensorData::F32(x)).expect("tensor"),
        )];
        let run = |p: &Path| run_once(p, &sig, &input);
        let (want, got) = (run(&original), run(&int8));
        assert_eq!(want[0].1.shape, vec![2, 10, 64]);
        let mut a = crate::verify::Agreement::default();
        a.update(&want, &got).expect("same outputs");
        assert!(a.min_cosine > 0.99, "cosine {}", a.min_cosine);
        assert!(
            a.max_rel_error > 0.0,
            "the INT8 module computes differently"
        );
    }

    /// Deterministic inputs of `shape` in [-1, 1), varied by `seed`.
    fn image(shape: &[usize], seed: usize) -> crate::data::Sample {
        let n: usize = shape.iter().product();
        let x: Vec<f32> = (0..n)
            .map(|i| (((i + seed * 7919) * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        vec![(
            "input0".to_string(),
            Tensor::new(shape.to_vec(), TensorData::F32(x)).expect("tensor"),
        )]
    }

    #[test]
    fn static_int8_runs_the_convolutions_as_int8_kernels_and_stays_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (original, int8) = (dir.path().join("cnn.pt"), dir.path().join("int8.pt"));
        crate::torch::build::conv_bn_net(&original, 16, 3).expect("scripted");
        let sig = one_input(&[-1, 3, 16, 16]);
        let calibration: Vec<_> = (0..8).map(|s| image(&[2, 3, 16, 16], s)).collect();
        let n = static_int8(
            &original,
            &int8,
            &[],
            crate::quantize::saturating_u8s8(),
            &sig,
            &calibration,
        )
        .expect("quantized");
        assert!(n >= 3, "every convolution is an INT8 kernel: {n}");
        // Only the artifact is left beside it: no observed or calibrated module.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        let input = image(&[1, 3, 16, 16], 99);
        let (want, got) = (
            run_once(&original, &sig, &input),
            run_once(&int8, &sig, &input),
        );
        let mut a = crate::verify::Agreement::default();
        a.update(&want, &got).expect("same outputs");
        assert!(a.min_cosine > 0.99, "cosine {}", a.min_cosine);
        assert!(
            a.max_rel_error > 0.0,
            "the INT8 module computes differently"
        );
        // No calibration sample: an error, not an uncalibrated module.
        let e = static_int8(&original, &int8, &[], false, &sig, &[]).unwrap_err();
        assert!(e.to_string().contains("calibration"), "{e}");
    }
}
