//! Small TorchScript modules built in code (as `onnx_build` does for ONNX),
//! so tests and examples need no Python: the model is traced with libtorch
//! and saved as `torch.jit.save` would.

use std::path::Path;

use tch::{CModule, Kind, Tensor as TchTensor};

use crate::error::{OptimizerError, Result};

/// `relu(x @ W + b)` for `x: f32 [N, 2]`, with `W = [[1, -1], [2, 0.5]]` and
/// `b = [0.5, -1]`, saved to `path`.
pub fn linear_relu(path: &Path) -> Result<()> {
    let bad = |e: tch::TchError| {
        OptimizerError::Engine(format!(
            "tracing a TorchScript module for {}: {e}",
            path.display()
        ))
    };
    let w = TchTensor::from_slice(&LINEAR_RELU_W).reshape([2, 2]);
    let b = TchTensor::from_slice(&LINEAR_RELU_B);
    let x = TchTensor::zeros([1, 2], (Kind::Float, tch::Device::Cpu));
    let module = CModule::create_by_tracing("LinearRelu", "forward", &[x], &mut |xs| {
        vec![(xs[0].matmul(&w) + &b).relu()]
    })
    .map_err(bad)?;
    module.save(path).map_err(bad)
}

/// The weights of [`linear_relu`], row-major.
pub const LINEAR_RELU_W: [f32; 4] = [1.0, -1.0, 2.0, 0.5];
pub const LINEAR_RELU_B: [f32; 2] = [0.5, -1.0];

/// What [`linear_relu`] computes, for checking answers by hand.
pub fn linear_relu_reference(x: [f32; 2]) -> [f32; 2] {
    let w = LINEAR_RELU_W;
    let y0 = x[0] * w[0] + x[1] * w[2] + LINEAR_RELU_B[0];
    let y1 = x[0] * w[1] + x[1] * w[3] + LINEAR_RELU_B[1];
    [y0.max(0.0), y1.max(0.0)]
}
