//! The accuracy gate: a candidate's outputs against the original model's.

use crate::tensor::Tensor;

/// Thresholds a candidate must meet on every output of every sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    pub max_rel_error: f64,
    pub min_cosine: f64,
}

impl Gate {
    /// o1 promises no accuracy loss.
    pub const O1: Gate = Gate {
        max_rel_error: 1e-3,
        min_cosine: 0.9999,
    };
}

/// Worst-case agreement over everything compared so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    pub max_rel_error: f64,
    pub min_cosine: f64,
}

impl Default for Agreement {
    fn default() -> Self {
        Agreement {
            max_rel_error: 0.0,
            min_cosine: 1.0,
        }
    }
}

impl Agreement {
    pub fn passes(&self, gate: &Gate) -> bool {
        self.max_rel_error <= gate.max_rel_error && self.min_cosine >= gate.min_cosine
    }

    /// Folds one sample's outputs into the running worst case. Errors on a
    /// missing output, a shape change, or any NaN/Inf in the candidate.
    pub fn update(
        &mut self,
        reference: &[(String, Tensor)],
        candidate: &[(String, Tensor)],
    ) -> Result<(), String> {
        for (name, want) in reference {
            let Some((_, got)) = candidate.iter().find(|(n, _)| n == name) else {
                return Err(format!("output '{name}' is missing"));
            };
            if got.shape != want.shape {
                return Err(format!(
                    "output '{name}' has shape {:?}, the original {:?}",
                    got.shape, want.shape
                ));
            }
            let (a, b) = (got.data.to_f64(), want.data.to_f64());
            if a.iter().any(|x| !x.is_finite()) {
                return Err(format!("output '{name}' holds NaN or Inf"));
            }
            let (rel, cos) = metrics(&a, &b);
            self.max_rel_error = self.max_rel_error.max(rel);
            self.min_cosine = self.min_cosine.min(cos);
        }
        Ok(())
    }
}

/// (max |a-b| / max |b|, cosine(a, b)). Two all-zero vectors agree perfectly.
pub fn metrics(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mut max_diff = 0.0f64;
    let mut max_ref = 0.0f64;
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        max_diff = max_diff.max((x - y).abs());
        max_ref = max_ref.max(y.abs());
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    let rel = if max_ref > 0.0 {
        max_diff / max_ref
    } else if max_diff > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    let cos = if na == 0.0 && nb == 0.0 {
        1.0
    } else if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na.sqrt() * nb.sqrt())).clamp(-1.0, 1.0)
    };
    (rel, cos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn t(v: Vec<f32>) -> Vec<(String, Tensor)> {
        vec![(
            "y".into(),
            Tensor::new(vec![v.len()], TensorData::F32(v)).unwrap(),
        )]
    }

    #[test]
    fn identical_outputs_pass_o1() {
        let mut a = Agreement::default();
        a.update(&t(vec![1.0, -2.0, 3.0]), &t(vec![1.0, -2.0, 3.0]))
            .unwrap();
        assert!(a.passes(&Gate::O1));
        assert_eq!(a.max_rel_error, 0.0);
    }

    #[test]
    fn a_perturbed_candidate_fails_o1() {
        let mut a = Agreement::default();
        a.update(&t(vec![1.0, -2.0, 3.0]), &t(vec![1.0, -2.0, 3.1]))
            .unwrap();
        assert!(a.max_rel_error > 1e-3);
        assert!(!a.passes(&Gate::O1));
    }

    #[test]
    fn nan_fails_and_missing_output_fails() {
        let mut a = Agreement::default();
        assert!(a
            .update(&t(vec![1.0, 2.0]), &t(vec![1.0, f32::NAN]))
            .unwrap_err()
            .contains("NaN"));
        let other = vec![(
            "z".into(),
            Tensor::new(vec![1], TensorData::F32(vec![1.0])).unwrap(),
        )];
        assert!(a
            .update(&t(vec![1.0]), &other)
            .unwrap_err()
            .contains("missing"));
    }

    #[test]
    fn zero_vectors_agree() {
        assert_eq!(metrics(&[0.0, 0.0], &[0.0, 0.0]), (0.0, 1.0));
        assert_eq!(metrics(&[1.0, 0.0], &[0.0, 0.0]).1, 0.0);
    }
}
