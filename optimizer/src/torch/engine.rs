//! A TorchScript module behind [`InferenceEngine`].
//!
//! TorchScript declares no input or output names: inputs are positional and
//! named `input0`, `input1`, … (the signature comes from the test data, see
//! [`crate::data::load_positional`]); outputs are `output0`, `output1`, ….

use std::path::Path;
use std::sync::Once;

use shared::api::{ModelSignature, TensorSpec};
use tch::jit::{CModule, IValue};
use tch::Kind;

use crate::artifact::TorchSettings;
use crate::engine::{check_inputs, ExecutionProvider, InferenceEngine};
use crate::error::{OptimizerError, Result};
use crate::tensor::{Tensor, TensorData};

/// What reports name as the engine.
pub const DESCRIPTION: &str = "libtorch 2.13 (tch 0.26), TorchScript";

/// The method a stateful module (silero VAD) offers to forget its state.
pub(crate) const RESET_METHOD: &str = "reset_states";

pub struct TorchEngine {
    module: CModule,
    signature: ModelSignature,
    settings: TorchSettings,
    /// Where the module and its inputs live.
    device: tch::Device,
    /// Per input, whether it goes in as a plain `int` (a TorchScript `int`
    /// argument, such as a sample rate) instead of a tensor. TorchScript
    /// exposes no argument types through tch, so this is decided by the
    /// first call that succeeds and kept.
    as_int: Option<Vec<bool>>,
    /// The module has `reset_states()`.
    stateful: bool,
}

fn tch_err(e: tch::TchError) -> OptimizerError {
    OptimizerError::Engine(e.to_string())
}

/// One intra-op thread per engine, for the whole process: libtorch's
/// OpenMP threads spin while idle, and two of them on two busy cores were
/// measured 4–42× slower than one. (Instances give the parallelism.)
fn one_thread() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tch::set_num_threads(1);
    });
}

impl TorchEngine {
    /// Loads the module at `path` to run with `settings` on the CPU.
    /// `signature` gives the inputs (positional, in order) and, when known,
    /// the outputs; with no outputs given they are named on each call.
    pub fn load(
        path: &Path,
        signature: ModelSignature,
        settings: TorchSettings,
    ) -> Result<TorchEngine> {
        TorchEngine::load_on(path, signature, settings, ExecutionProvider::Cpu)
    }

    /// [`TorchEngine::load`] on `provider`: a CUDA device needs libtorch's
    /// CUDA backend ([`super::cuda`]); without it this is an
    /// [`OptimizerError::Provider`], never a CPU engine.
    pub fn load_on(
        path: &Path,
        signature: ModelSignature,
        settings: TorchSettings,
        provider: ExecutionProvider,
    ) -> Result<TorchEngine> {
        one_thread();
        let device = match provider {
            ExecutionProvider::Cpu => tch::Device::Cpu,
            ExecutionProvider::Cuda { device_id } => super::cuda::device(device_id)?,
        };
        if settings.half && device == tch::Device::Cpu {
            return Err(OptimizerError::Config(
                "fp16 TorchScript runs on a CUDA device only (libtorch's CPU fp16 kernels are slower than fp32)".into(),
            ));
        }
        let mut module =
            CModule::load_on_device(path, device).map_err(|e| OptimizerError::BadModel {
                path: path.to_path_buf(),
                reason: format!("not a TorchScript module libtorch can load: {e}"),
            })?;
        if settings.inference {
            module.f_set_eval().map_err(tch_err)?;
        }
        if settings.half {
            // tch's `to` panics on a libtorch error; keep it an error.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                module.to(device, Kind::Half, false)
            }))
            .map_err(|_| {
                OptimizerError::Engine(format!(
                    "{}: converting the module to fp16 failed",
                    path.display()
                ))
            })?;
        }
        // Calling it on a fresh module changes nothing and tells whether it
        // exists (tch has no method lookup).
        let stateful = module.method_is::<IValue>(RESET_METHOD, &[]).is_ok();
        Ok(TorchEngine {
            module,
            signature,
            settings,
            device,
            as_int: None,
            stateful,
        })
    }

    /// Saves the module as it is now (its attributes as the calls so far
    /// left them: a calibrated module's observed ranges) to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.module.save(path).map_err(|e| {
            OptimizerError::Engine(format!("saving the module to {}: {e}", path.display()))
        })
    }

    /// Sets the output specs once they are known (from a reference run).
    pub fn set_outputs(&mut self, outputs: Vec<TensorSpec>) {
        self.signature.outputs = outputs;
    }

    fn call(&self, ordered: &[&Tensor], as_int: &[bool]) -> Result<IValue> {
        let mut args = Vec::with_capacity(ordered.len());
        for (t, &int) in ordered.iter().zip(as_int) {
            args.push(if int {
                IValue::Int(scalar_int(t).unwrap_or_default())
            } else {
                IValue::Tensor(self.place(to_tch(t)?)?)
            });
        }
        let run = || self.module.forward_is(&args).map_err(tch_err);
        if self.settings.inference {
            tch::no_grad(run)
        } else {
            run()
        }
    }

    /// Calls the module with `ordered`: tensors everywhere the first time;
    /// if it refuses and some inputs are integer scalars, those as `int`
    /// arguments. The form that worked is kept for the next calls.
    fn call_adapting(&mut self, ordered: &[&Tensor]) -> Result<IValue> {
        Ok(match &self.as_int {
            Some(as_int) => self.call(ordered, as_int)?,
            None => {
                let tensors = vec![false; ordered.len()];
                match self.call(ordered, &tensors) {
                    Ok(v) => {
                        self.as_int = Some(tensors);
                        v
                    }
                    Err(first) => {
                        let ints: Vec<bool> =
                            ordered.iter().map(|t| scalar_int(t).is_some()).collect();
                        if !ints.contains(&true) {
                            return Err(first);
                        }
                        let v = self.call(ordered, &ints).map_err(|_| first)?;
                        self.as_int = Some(ints);
                        v
                    }
                }
            }
        })
    }

    /// An input on the engine's device, float inputs in fp16 for a half
    /// module.
    fn place(&self, t: tch::Tensor) -> Result<tch::Tensor> {
        let t = if self.device == tch::Device::Cpu {
            t
        } else {
            t.f_to_device(self.device).map_err(tch_err)?
        };
        if self.settings.half && t.kind() == Kind::Float {
            t.f_to_kind(Kind::Half).map_err(tch_err)
        } else {
            Ok(t)
        }
    }
}

/// The value of a 0-d integer tensor (a candidate for an `int` argument).
fn scalar_int(t: &Tensor) -> Option<i64> {
    if !t.shape.is_empty() {
        return None;
    }
    match &t.data {
        TensorData::I64(v) => v.first().copied(),
        TensorData::I32(v) => v.first().map(|&x| i64::from(x)),
        _ => None,
    }
}

fn to_tch(t: &Tensor) -> Result<tch::Tensor> {
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    let flat = match &t.data {
        TensorData::F32(v) => tch::Tensor::f_from_slice(v),
        TensorData::F64(v) => tch::Tensor::f_from_slice(v),
        TensorData::I64(v) => tch::Tensor::f_from_slice(v),
        TensorData::I32(v) => tch::Tensor::f_from_slice(v),
        TensorData::I8(v) => tch::Tensor::f_from_slice(v),
        TensorData::U8(v) => tch::Tensor::f_from_slice(v),
        TensorData::Bool(v) => tch::Tensor::f_from_slice(v),
    }
    .map_err(tch_err)?;
    flat.f_reshape(shape.as_slice()).map_err(tch_err)
}

fn from_tch(t: &tch::Tensor) -> Result<Tensor> {
    let shape: Vec<usize> = t.size().iter().map(|&d| d.max(0) as usize).collect();
    let t = t
        .f_to_device(tch::Device::Cpu)
        .and_then(|t| t.f_contiguous())
        .and_then(|t| t.f_reshape([-1]))
        .map_err(tch_err)?;
    let data = match t.kind() {
        Kind::Float => TensorData::F32(Vec::<f32>::try_from(&t).map_err(tch_err)?),
        Kind::Double => TensorData::F64(Vec::<f64>::try_from(&t).map_err(tch_err)?),
        Kind::Int64 => TensorData::I64(Vec::<i64>::try_from(&t).map_err(tch_err)?),
        Kind::Int => TensorData::I32(Vec::<i32>::try_from(&t).map_err(tch_err)?),
        Kind::Int8 => TensorData::I8(Vec::<i8>::try_from(&t).map_err(tch_err)?),
        Kind::Uint8 => TensorData::U8(Vec::<u8>::try_from(&t).map_err(tch_err)?),
        Kind::Bool => TensorData::Bool(Vec::<bool>::try_from(&t).map_err(tch_err)?),
        // Half and bfloat16 outputs are answered as fp32 (KServe clients
        // and the accuracy gate work in fp32).
        Kind::Half | Kind::BFloat16 => {
            let f = t.f_to_kind(Kind::Float).map_err(tch_err)?;
            TensorData::F32(Vec::<f32>::try_from(&f).map_err(tch_err)?)
        }
        other => {
            return Err(OptimizerError::Engine(format!(
                "output of element type {other:?}, which has no KServe datatype"
            )))
        }
    };
    Tensor::new(shape, data).map_err(OptimizerError::Engine)
}

/// The tensors a `forward` returned: one tensor, or a tuple/list of them.
fn output_tensors(v: IValue) -> Result<Vec<tch::Tensor>> {
    match v {
        IValue::Tensor(t) => Ok(vec![t]),
        IValue::TensorList(ts) => Ok(ts),
        IValue::Tuple(vs) | IValue::GenericList(vs) => vs
            .into_iter()
            .map(|v| match v {
                IValue::Tensor(t) => Ok(t),
                other => Err(OptimizerError::Engine(format!(
                    "forward returned a tuple holding a non-tensor value ({other:?}); only tensors can be answered"
                ))),
            })
            .collect(),
        other => Err(OptimizerError::Engine(format!(
            "forward returned {other:?}; expected a tensor or a tuple of tensors"
        ))),
    }
}

/// The name of the `i`-th output.
pub fn output_name(i: usize) -> String {
    format!("output{i}")
}

/// The specs of outputs seen in runs: datatype and rank from the first,
/// a dimension that differs between runs as -1.
pub fn output_specs(runs: &[Vec<(String, Tensor)>]) -> Vec<TensorSpec> {
    let Some(first) = runs.first() else {
        return vec![];
    };
    let mut specs: Vec<TensorSpec> = first
        .iter()
        .map(|(name, t)| TensorSpec {
            name: name.clone(),
            datatype: t.dtype().kserve_name().to_string(),
            shape: t.shape.iter().map(|&d| d as i64).collect(),
        })
        .collect();
    for run in runs {
        for (spec, (_, t)) in specs.iter_mut().zip(run) {
            if spec.shape.len() != t.shape.len() {
                continue;
            }
            for (want, &got) in spec.shape.iter_mut().zip(&t.shape) {
                if *want != got as i64 {
                    *want = -1;
                }
            }
        }
    }
    specs
}

impl InferenceEngine for TorchEngine {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn run(&mut self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let ordered = check_inputs(&self.signature, inputs)?;
        let open = self.signature.open_inputs();
        if open
            && self
                .as_int
                .as_ref()
                .is_some_and(|a| a.len() != ordered.len())
        {
            // Undeclared inputs: a call may pass another number of them.
            self.as_int = None;
        }
        let value = self.call_adapting(&ordered);
        let value = match value {
            Ok(v) => v,
            // With undeclared inputs, a call the module refuses is the
            // request's fault, in libtorch's words.
            Err(OptimizerError::Engine(m)) if open => {
                return Err(OptimizerError::BadInput {
                    name: "inputs".into(),
                    reason: format!("the module refused them: {m}"),
                })
            }
            Err(e) => return Err(e),
        };
        let outputs = output_tensors(value)?;
        let mut out = Vec::with_capacity(outputs.len());
        for (i, t) in outputs.iter().enumerate() {
            let name = self
                .signature
                .outputs
                .get(i)
                .map(|s| s.name.clone())
                .unwrap_or_else(|| output_name(i));
            let t =
                from_tch(t).map_err(|e| OptimizerError::Engine(format!("output '{name}': {e}")))?;
            out.push((name, t));
        }
        Ok(out)
    }

    fn reset(&mut self) -> Result<()> {
        if self.stateful {
            self.module
                .method_is::<IValue>(RESET_METHOD, &[])
                .map_err(tch_err)?;
        }
        Ok(())
    }
}

/// Marks as dynamic (-1) every input dimension that some `input_shapes`
/// group gives differently, so a service accepts every declared shape (a
/// batch dimension declared as `1*…` and `8*…` serves any batch). A scalar
/// input may be declared as `1`. A group whose rank differs from the
/// input's is an error naming the input.
pub fn widen(specs: &mut [TensorSpec], groups: &[Vec<Vec<usize>>]) -> Result<()> {
    for (g, group) in groups.iter().enumerate() {
        if group.len() != specs.len() {
            return Err(OptimizerError::Config(format!(
                "input_shapes group {g} has {} shapes but the module takes {} inputs",
                group.len(),
                specs.len()
            )));
        }
        for (spec, dims) in specs.iter_mut().zip(group) {
            if spec.shape.is_empty() && dims.as_slice() == [1] {
                continue;
            }
            if spec.shape.len() != dims.len() {
                return Err(OptimizerError::Config(format!(
                    "input_shapes group {g} gives {} a rank-{} shape, but it is rank {} ({:?}, from the test data or the first group)",
                    spec.name,
                    dims.len(),
                    spec.shape.len(),
                    spec.shape
                )));
            }
            for (d, &want) in spec.shape.iter_mut().zip(dims) {
                if *d != want as i64 {
                    *d = -1;
                }
            }
        }
    }
    Ok(())
}

/// The inputs of a TorchScript module and samples to run it on: from the
/// test data (datatypes and shapes, see [`crate::data::load_positional`]),
/// or without it fp32 inputs shaped by the first `input_shapes` group and
/// valued within `input_ranges` (`count` samples); widened by every
/// `input_shapes` group ([`widen`]). The `String` says where they came from.
pub fn positional_inputs(
    test_data: Option<&Path>,
    input_shapes: &[Vec<Vec<usize>>],
    input_ranges: &[Vec<shared::config::ValueRange>],
    count: usize,
) -> Result<(Vec<crate::data::Sample>, Vec<TensorSpec>, String)> {
    use crate::data;
    let (samples, mut specs, source) = match test_data {
        Some(p) => {
            let (ds, specs) = data::load_positional(p)?;
            (ds.samples, specs, format!("test_data: {}", ds.source))
        }
        None => {
            let Some(group) = input_shapes.first() else {
                return Err(OptimizerError::Config(
                    "a TorchScript module declares no inputs: give test_data (a .pth of tuples of \
                     tensors, one tuple per call) or input_shapes (fp32 inputs, one shape per input)"
                        .into(),
                ));
            };
            let specs: Vec<TensorSpec> = group
                .iter()
                .enumerate()
                .map(|(i, dims)| TensorSpec {
                    name: data::positional_name(i),
                    datatype: "FP32".into(),
                    shape: dims.iter().map(|&d| d as i64).collect(),
                })
                .collect();
            let sig = signature(specs.clone());
            let samples = (0..count.max(1))
                .map(|i| synthesize_group(&sig, input_shapes, input_ranges, 0, 7 + i as u64))
                .collect::<Result<Vec<_>>>()?;
            (samples, specs, "synthesized from input_shapes".into())
        }
    };
    if samples.is_empty() {
        return Err(OptimizerError::Config(
            "the test data holds no sample".into(),
        ));
    }
    widen(&mut specs, input_shapes)?;
    Ok((samples, specs, source))
}

/// Reads a TorchScript module's signature: inputs as [`positional_inputs`]
/// gives them, outputs from running the first sample (on a fresh module).
pub fn inspect(
    model: &Path,
    test_data: Option<&Path>,
    input_shapes: &[Vec<Vec<usize>>],
    input_ranges: &[Vec<shared::config::ValueRange>],
) -> Result<ModelSignature> {
    let (samples, inputs, _) = positional_inputs(test_data, input_shapes, input_ranges, 1)?;
    let sig = signature(inputs);
    let mut runs = vec![samples[0].clone()];
    runs.extend(group_samples(&sig, input_shapes, input_ranges)?);
    let outputs = observed_outputs(model, &sig, &runs)?;
    Ok(ModelSignature { outputs, ..sig })
}

/// One synthesized sample per `input_shapes` group, of the signature's
/// datatypes, valued within that group's `input_ranges`.
pub fn group_samples(
    sig: &ModelSignature,
    input_shapes: &[Vec<Vec<usize>>],
    input_ranges: &[Vec<shared::config::ValueRange>],
) -> Result<Vec<crate::data::Sample>> {
    (0..input_shapes.len())
        .map(|g| synthesize_group(sig, input_shapes, input_ranges, g, 100 + g as u64))
        .collect()
}

/// A sample of `sig`'s datatypes shaped by `input_shapes` group `g` and
/// valued within that group's `input_ranges`.
fn synthesize_group(
    sig: &ModelSignature,
    input_shapes: &[Vec<Vec<usize>>],
    input_ranges: &[Vec<shared::config::ValueRange>],
    g: usize,
    seed: u64,
) -> Result<crate::data::Sample> {
    let shapes = crate::data::concrete_shapes(sig, input_shapes.get(g).map(Vec::as_slice), 16)?;
    let ranges = input_ranges.get(g).map(Vec::as_slice);
    crate::data::synthesize(sig, &shapes, ranges, seed)
}

/// A TorchScript signature with these inputs; outputs are learnt by
/// running the module ([`observed_outputs`]).
pub(crate) fn signature(inputs: Vec<TensorSpec>) -> ModelSignature {
    ModelSignature {
        format: "torchscript".into(),
        inputs,
        outputs: vec![],
    }
}

/// The output specs a module shows over `samples` (run on a fresh engine,
/// on the CPU): a dimension that differs between them is -1, so outputs
/// of a dynamic batch are dynamic too.
pub fn observed_outputs(
    model: &Path,
    sig: &ModelSignature,
    samples: &[crate::data::Sample],
) -> Result<Vec<TensorSpec>> {
    let mut engine = TorchEngine::load(model, sig.clone(), TorchSettings::INFERENCE)?;
    let mut runs = Vec::with_capacity(samples.len());
    for s in samples {
        engine.reset()?;
        runs.push(engine.run(s)?);
    }
    Ok(output_specs(&runs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    /// y = relu(x·W + b) with W = [[1, -1], [2, 0.5]], b = [0.5, -1], scripted
    /// into a TorchScript module and saved, as torch.jit.save would.
    fn linear_relu(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("linear_relu.pt");
        crate::torch::build::linear_relu(&path).expect("tracing works");
        path
    }

    use crate::torch::build::rows_of_two as sig;

    fn x(rows: &[[f32; 2]]) -> Vec<(String, Tensor)> {
        let data = rows.iter().flatten().copied().collect();
        vec![(
            "input0".into(),
            Tensor::new(vec![rows.len(), 2], TensorData::F32(data)).expect("tensor"),
        )]
    }

    #[test]
    fn scripted_module_runs_and_matches_hand_computed_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = linear_relu(dir.path());
        for inference in [false, true] {
            let mut e = TorchEngine::load(
                &path,
                sig(),
                TorchSettings {
                    inference,
                    half: false,
                },
            )
            .expect("module loads");
            e.reset().expect("no reset_states: nothing to do");
            // [1, 2]·W + b = [1+4+0.5, -1+1-1] = [5.5, -1] → relu [5.5, 0];
            // [-1, 0]·W + b = [-0.5, 1-1] → [0, 0].
            let out = e.run(&x(&[[1.0, 2.0], [-1.0, 0.0]])).expect("runs");
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].0, "output0");
            assert_eq!(out[0].1.shape, vec![2, 2]);
            assert_eq!(out[0].1.data, TensorData::F32(vec![5.5, 0.0, 0.0, 0.0]));
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_crashes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = linear_relu(dir.path());
        let mut e = TorchEngine::load(&path, sig(), TorchSettings::INFERENCE).expect("loads");
        let wrong_width = vec![(
            "input0".to_string(),
            Tensor::new(vec![1, 3], TensorData::F32(vec![0.0; 3])).expect("tensor"),
        )];
        assert!(matches!(
            e.run(&wrong_width),
            Err(OptimizerError::BadInput { .. })
        ));
        let not_a_module = dir.path().join("x.pt");
        std::fs::write(&not_a_module, b"not torchscript").expect("write");
        assert!(matches!(
            TorchEngine::load(&not_a_module, sig(), TorchSettings::INFERENCE),
            Err(OptimizerError::BadModel { .. })
        ));
    }

    #[test]
    fn input_shapes_groups_widen_the_signature_and_stand_in_for_test_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = linear_relu(dir.path());
        // No test data: fp32 inputs from input_shapes; two batch sizes
        // declared, so the batch dimension is dynamic.
        let sig = inspect(&path, None, &[vec![vec![1, 2]], vec![vec![8, 2]]], &[])
            .expect("inspects from input_shapes");
        assert_eq!(sig.inputs[0].shape, vec![-1, 2]);
        assert_eq!(sig.inputs[0].datatype, "FP32");
        assert_eq!(sig.outputs[0].shape, vec![-1, 2]);
        // One group: the shape is fixed as declared.
        let sig = inspect(&path, None, &[vec![vec![3, 2]]], &[]).expect("inspects");
        assert_eq!(sig.inputs[0].shape, vec![3, 2]);
        assert_eq!(sig.outputs[0].shape, vec![3, 2]);
        // Neither: an error that says what to give.
        let e = inspect(&path, None, &[], &[]).expect_err("nothing to go on");
        assert!(e.to_string().contains("input_shapes"), "{e}");
        // A declared shape too large to synthesize is an error, not an abort.
        let e =
            inspect(&path, None, &[vec![vec![100_000, 100_000]]], &[]).expect_err("10^10 elements");
        assert!(e.to_string().contains("too large"), "{e}");
        // A rank that contradicts the data names the input.
        let mut specs = sig.inputs.clone();
        let e = widen(&mut specs, &[vec![vec![3, 2, 1]]]).expect_err("rank 3 vs 2");
        assert!(e.to_string().contains("input0"), "{e}");
    }

    #[test]
    fn output_specs_mark_varying_dimensions() {
        let run = |n: usize| {
            vec![(
                "output0".to_string(),
                Tensor::new(vec![n, 2], TensorData::F32(vec![0.0; n * 2])).expect("tensor"),
            )]
        };
        let specs = output_specs(&[run(1), run(3)]);
        assert_eq!(specs[0].shape, vec![-1, 2]);
        assert_eq!(specs[0].datatype, DType::F32.kserve_name());
    }
}
