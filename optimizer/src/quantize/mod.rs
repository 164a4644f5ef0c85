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

/// The largest int8 weight magnitude worth using on this CPU: 127, or 63
/// on x86 without VNNI. There ONNX Runtime's uint8×int8 kernels multiply
/// with `vpmaddubsw`, which adds pairs of u8·s8 products into a saturating
/// int16: 2·255·127 overflows it, 2·255·63 does not. This is ONNX Runtime's
/// own `reduce_range` advice for such CPUs; measured here (AVX2, no VNNI) a
/// full-range dynamic INT8 MLP fell to cosine 0.977. Part of the artifact's
/// target string through the VNNI flags, so artifacts never cross over.
pub fn weight_limit() -> f32 {
    // The feature test is cached by std: nothing to keep here.
    if saturating_u8s8() {
        63.0
    } else {
        127.0
    }
}

/// Whether this CPU's uint8×int8 integer kernels saturate (x86 without
/// VNNI).
pub fn saturating_u8s8() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !(std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Symmetric int8 quantization of `w` per channel along `axis`, within
/// [`weight_limit`]. Returns (quantized values, one scale per channel).
pub fn quantize_weight_per_channel(w: &Tensor, axis: usize) -> Option<(Vec<i8>, Vec<f32>)> {
    quantize_weight_per_channel_within(w, axis, weight_limit())
}

/// [`quantize_weight_per_channel`] with values in [-limit, limit].
pub fn quantize_weight_per_channel_within(
    w: &Tensor,
    axis: usize,
    limit: f32,
) -> Option<(Vec<i8>, Vec<f32>)> {
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
        *s = if *s > 0.0 { *s / limit } else { 1.0 };
    }
    let q = v
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let c = (i / inner) % channels;
            (x / scales[c]).round().clamp(-limit, limit) as i8
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
        let (q, s) = quantize_weight_per_channel_within(&w, 0, 127.0).unwrap();
        assert_eq!(s, vec![1.0 / 127.0, 10.0 / 127.0]);
        assert_eq!(q, vec![127, -64, 32, 127, 64, -127]);
        let (_, s1) = quantize_weight_per_channel_within(&w, 1, 127.0).unwrap();
        assert_eq!(s1.len(), 3);
        // The reduced range of CPUs without VNNI: 7 bits.
        let (q, s) = quantize_weight_per_channel_within(&w, 0, 63.0).unwrap();
        assert_eq!(s, vec![1.0 / 63.0, 10.0 / 63.0]);
        // ±0.5 and 5.0 sit at x.5 steps, where f32 rounding may go either way.
        assert_eq!((q[0], q[2], q[3], q[5]), (63, 16, 63, -63));
        assert!(q.iter().all(|v| v.abs() <= 63));
        assert_eq!(weight_limit(), if saturating_u8s8() { 63.0 } else { 127.0 });
    }
}
