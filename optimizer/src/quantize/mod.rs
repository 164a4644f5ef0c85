//! INT8 quantization of ONNX graphs, in the forms ONNX Runtime turns into
//! integer kernels on x86:
//! - static QDQ (`qdq`): uint8 activations from calibrated ranges, int8
//!   per-channel weights, int32 biases — ORT fuses the Q/DQ pairs into
//!   QLinearConv / QGemm / QLinearAdd;
//! - dynamic (`dynamic`): int8 per-channel MatMul weights, activations
//!   quantized at run time — ORT fuses into DynamicQuantizeMatMul.

pub mod bias_correction;
pub mod calibrate;
pub mod dynamic;
pub mod qdq;

use crate::tensor::{Tensor, TensorData};

/// uint8 asymmetric parameters covering [min, max] (and 0).
pub fn u8_params(min: f32, max: f32) -> (f32, u8) {
    let (lo, hi) = (min.min(0.0), max.max(0.0));
    let scale = (hi - lo) / 255.0;
    if scale <= 0.0 || !scale.is_finite() {
        return (1.0, 0);
    }
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

/// Symmetric int8 quantization of `w` per channel along `axis`.
/// Returns (quantized values, one scale per channel).
pub fn quantize_weight_per_channel(w: &Tensor, axis: usize) -> Option<(Vec<i8>, Vec<f32>)> {
    let TensorData::F32(v) = &w.data else {
        return None;
    };
    let channels = *w.shape.get(axis)?;
    let inner: usize = w.shape[axis + 1..].iter().product();
    let mut scales = vec![0f32; channels];
    for (i, x) in v.iter().enumerate() {
        let c = (i / inner) % channels;
        scales[c] = scales[c].max(x.abs());
    }
    for s in scales.iter_mut() {
        *s = if *s > 0.0 { *s / 127.0 } else { 1.0 };
    }
    let q = v
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let c = (i / inner) % channels;
            (x / scales[c]).round().clamp(-127.0, 127.0) as i8
        })
        .collect();
    Some((q, scales))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u8_params_cover_zero_and_the_range() {
        let (s, zp) = u8_params(-1.0, 3.0);
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(zp, 64);
        assert_eq!(u8_params(0.0, 0.0), (1.0, 0));
        let (_, zp) = u8_params(0.5, 2.0);
        assert_eq!(zp, 0, "a positive range still includes zero");
    }

    #[test]
    fn per_channel_weights_use_each_channels_own_scale() {
        let w = Tensor::new(
            vec![2, 3],
            TensorData::F32(vec![1.0, -0.5, 0.25, 10.0, 5.0, -10.0]),
        )
        .unwrap();
        let (q, s) = quantize_weight_per_channel(&w, 0).unwrap();
        assert_eq!(s, vec![1.0 / 127.0, 10.0 / 127.0]);
        assert_eq!(q, vec![127, -64, 32, 127, 64, -127]);
        let (_, s1) = quantize_weight_per_channel(&w, 1).unwrap();
        assert_eq!(s1.len(), 3);
    }
}
