//! Small TorchScript modules built in code (as `onnx_build` does for ONNX),
//! so tests and examples need no Python: scripted from TorchScript source
//! with real parameters and state, and saved as `torch.jit.save` would
//! (through the C++ shim, `cpp/torch_freeze.cpp`).

use std::ffi::{c_char, c_int, CString};
use std::path::Path;

use super::freeze::{c_path, take_message};
use crate::error::{OptimizerError, Result};

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn whet_torch_script_module(
        out_path: *const c_char,
        source: *const c_char,
        names: *const *const c_char,
        kinds: *const c_int,
        values: *const *const f32,
        shapes: *const *const i64,
        ranks: *const usize,
        n: usize,
    ) -> *mut c_char;
}

/// How a tensor is held by a scripted module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A parameter (what freezing inlines as a constant).
    Parameter,
    /// A tensor attribute a method may reassign (state, as silero's).
    State,
}

/// One fp32 tensor of a scripted module.
pub struct Named<'a> {
    pub name: &'a str,
    pub slot: Slot,
    pub shape: &'a [i64],
    pub values: &'a [f32],
}

/// Scripts a module with `tensors` and the methods of TorchScript `source`
/// (`def forward(self, …)` and others), and saves it to `path`.
pub fn script_module(path: &Path, source: &str, tensors: &[Named<'_>]) -> Result<()> {
    let bad = |m: String| {
        OptimizerError::Engine(format!(
            "scripting a TorchScript module for {}: {m}",
            path.display()
        ))
    };
    for t in tensors {
        let numel: i64 = t.shape.iter().product();
        if numel != t.values.len() as i64 || t.shape.iter().any(|&d| d < 0) {
            return Err(bad(format!(
                "{} has {} values for shape {:?}",
                t.name,
                t.values.len(),
                t.shape
            )));
        }
    }
    let out = c_path(path)?;
    let src = CString::new(source).map_err(|_| bad("source holds a NUL byte".into()))?;
    let names = tensors
        .iter()
        .map(|t| CString::new(t.name).map_err(|_| bad(format!("name {:?}", t.name))))
        .collect::<Result<Vec<_>>>()?;
    let name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let kinds: Vec<c_int> = tensors
        .iter()
        .map(|t| c_int::from(t.slot == Slot::State))
        .collect();
    let values: Vec<*const f32> = tensors.iter().map(|t| t.values.as_ptr()).collect();
    let shapes: Vec<*const i64> = tensors.iter().map(|t| t.shape.as_ptr()).collect();
    let ranks: Vec<usize> = tensors.iter().map(|t| t.shape.len()).collect();
    // SAFETY: every array has `tensors.len()` entries whose pointers outlive
    // the call (values hold the product of their shape's dims, checked
    // above); the shim copies what it keeps and catches every C++ exception.
    let message = unsafe {
        whet_torch_script_module(
            out.as_ptr(),
            src.as_ptr(),
            name_ptrs.as_ptr(),
            kinds.as_ptr(),
            values.as_ptr(),
            shapes.as_ptr(),
            ranks.as_ptr(),
            tensors.len(),
        )
    };
    // SAFETY: the shim's return value, taken once.
    match unsafe { take_message(message) } {
        None => Ok(()),
        Some(m) => Err(bad(m)),
    }
}

/// `relu(x @ W + b)` for `x: f32 [N, 2]`, with `W = [[1, -1], [2, 0.5]]` and
/// `b = [0.5, -1]` as parameters, saved to `path`.
pub fn linear_relu(path: &Path) -> Result<()> {
    script_module(
        path,
        "def forward(self, x):\n    return torch.relu(torch.matmul(x, self.w) + self.b)\n",
        &[
            Named {
                name: "w",
                slot: Slot::Parameter,
                shape: &[2, 2],
                values: &LINEAR_RELU_W,
            },
            Named {
                name: "b",
                slot: Slot::Parameter,
                shape: &[2],
                values: &LINEAR_RELU_B,
            },
        ],
    )
}

/// A stateful module, as silero VAD is: `forward(x)` adds the column sums of
/// `x: f32 [N, 2]` to a running total `[1, 2]` (state) and returns
/// `total * scale` (`scale = [2, -1]`, a parameter); `reset_states()` zeroes
/// the total.
pub fn running_sum(path: &Path) -> Result<()> {
    script_module(
        path,
        "def forward(self, x):\n    self.total = self.total + torch.sum(x, 0, keepdim=True)\n    return self.total * self.scale\n\n\
         def reset_states(self):\n    self.total = torch.zeros_like(self.total)\n",
        &[
            Named {
                name: "total",
                slot: Slot::State,
                shape: &[1, 2],
                values: &[0.0, 0.0],
            },
            Named {
                name: "scale",
                slot: Slot::Parameter,
                shape: &[2],
                values: &RUNNING_SUM_SCALE,
            },
        ],
    )
}

/// A small CNN of the usual inference shape, for measuring what freezing
/// buys: `blocks` × (3×3 convolution, `channels` wide → batch norm on
/// running statistics → relu), global average pooling and a 10-way linear
/// layer; input `f32 [N, 3, H, W]`. Weights are seeded random (He-scaled),
/// batch-norm statistics non-trivial, so folding them changes the arithmetic.
pub fn conv_bn_net(path: &Path, channels: usize, blocks: usize) -> Result<()> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut uniform = |n: usize, lo: f32, hi: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    let c = channels as i64;
    let mut source = String::from("def forward(self, x):\n    y = x\n");
    // (name, shape, values) of every parameter, in order.
    let mut tensors: Vec<(String, Vec<i64>, Vec<f32>)> = Vec::new();
    for b in 0..blocks {
        let c_in = if b == 0 { 3 } else { c };
        let fan_in = (c_in * 9) as f32;
        let bound = (6.0 / fan_in).sqrt();
        let n = (c * c_in * 9) as usize;
        tensors.push((
            format!("w{b}"),
            vec![c, c_in, 3, 3],
            uniform(n, -bound, bound),
        ));
        tensors.push((format!("g{b}"), vec![c], uniform(channels, 0.5, 1.5)));
        tensors.push((format!("beta{b}"), vec![c], uniform(channels, -0.2, 0.2)));
        tensors.push((format!("mean{b}"), vec![c], uniform(channels, -0.1, 0.1)));
        tensors.push((format!("var{b}"), vec![c], uniform(channels, 0.5, 2.0)));
        source.push_str(&format!(
            "    y = torch.conv2d(y, self.w{b}, None, [1, 1], [1, 1])\n    \
             y = torch.batch_norm(y, self.g{b}, self.beta{b}, self.mean{b}, self.var{b}, False, 0.1, 1e-5, False)\n    \
             y = torch.relu(y)\n"
        ));
    }
    tensors.push(("fc".into(), vec![c, 10], uniform(channels * 10, -0.1, 0.1)));
    source.push_str("    y = torch.mean(y, [2, 3])\n    return torch.matmul(y, self.fc)\n");
    let named: Vec<Named<'_>> = tensors
        .iter()
        .map(|(name, shape, values)| Named {
            name,
            slot: Slot::Parameter,
            shape,
            values,
        })
        .collect();
    script_module(path, &source, &named)
}

/// A two-layer perceptron of `torch.linear` layers (what `nn.Linear`
/// scripts to): `linear(relu(linear(x, W1, b1)), W2, b2)` for `x: f32 [N,
/// inputs]`, with deterministic weights, saved to `path`.
pub fn mlp(path: &Path, inputs: usize, hidden: usize, outputs: usize) -> Result<()> {
    let values = |n: usize, seed: f32| -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.37 + seed).sin() * 0.3)
            .collect()
    };
    let (w1, b1) = (values(hidden * inputs, 0.1), values(hidden, 0.7));
    let (w2, b2) = (values(outputs * hidden, 1.3), values(outputs, 2.1));
    let (i, h, o) = (inputs as i64, hidden as i64, outputs as i64);
    script_module(
        path,
        "def forward(self, x):\n    return torch.linear(torch.relu(torch.linear(x, self.w1, self.b1)), self.w2, self.b2)\n",
        &[
            Named { name: "w1", slot: Slot::Parameter, shape: &[h, i], values: &w1 },
            Named { name: "b1", slot: Slot::Parameter, shape: &[h], values: &b1 },
            Named { name: "w2", slot: Slot::Parameter, shape: &[o, h], values: &w2 },
            Named { name: "b2", slot: Slot::Parameter, shape: &[o], values: &b2 },
        ],
    )
}

/// A one-layer LSTM (`gru` false) or GRU (`gru` true), `batch_first`, from
/// zero state, as `nn.LSTM`/`nn.GRU` script to (`aten::lstm`/`aten::gru`):
/// `x: f32 [N, T, inputs]` → the hidden states `[N, T, hidden]`,
/// deterministic weights, saved to `path`.
pub fn recurrent(path: &Path, gru: bool, inputs: usize, hidden: usize) -> Result<()> {
    let values = |n: usize, seed: f32| -> Vec<f32> {
        (0..n)
            .map(|i| (i as f32 * 0.29 + seed).sin() * 0.25)
            .collect()
    };
    let g = if gru { 3 * hidden } else { 4 * hidden };
    let (w_ih, w_hh) = (values(g * inputs, 0.3), values(g * hidden, 1.1));
    let (b_ih, b_hh) = (values(g, 0.5), values(g, 1.9));
    let (i, h, g) = (inputs as i64, hidden as i64, g as i64);
    let call = if gru {
        "torch.gru(x, h0"
    } else {
        "torch.lstm(x, [h0, c0]"
    };
    let source = format!(
        "def forward(self, x):\n    \
         h0 = torch.zeros([1, x.size(0), {hidden}])\n    \
         c0 = torch.zeros([1, x.size(0), {hidden}])\n    \
         out = {call}, [self.w_ih, self.w_hh, self.b_ih, self.b_hh], True, 1, 0.0, False, False, True)\n    \
         return out[0]\n"
    );
    script_module(
        path,
        &source,
        &[
            Named {
                name: "w_ih",
                slot: Slot::Parameter,
                shape: &[g, i],
                values: &w_ih,
            },
            Named {
                name: "w_hh",
                slot: Slot::Parameter,
                shape: &[g, h],
                values: &w_hh,
            },
            Named {
                name: "b_ih",
                slot: Slot::Parameter,
                shape: &[g],
                values: &b_ih,
            },
            Named {
                name: "b_hh",
                slot: Slot::Parameter,
                shape: &[g],
                values: &b_hh,
            },
        ],
    )
}

/// The signature [`linear_relu`] and [`running_sum`] are served with: one
/// positional fp32 input of rows of 2, any number of rows.
pub fn rows_of_two() -> shared::api::ModelSignature {
    shared::api::ModelSignature {
        format: "torchscript".into(),
        inputs: vec![shared::api::TensorSpec {
            name: "input0".into(),
            datatype: "FP32".into(),
            shape: vec![-1, 2],
        }],
        outputs: vec![],
    }
}

/// The parameter of [`running_sum`].
pub const RUNNING_SUM_SCALE: [f32; 2] = [2.0, -1.0];

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
