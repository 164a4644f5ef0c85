//! The accuracy gate: a candidate's outputs against the original model's.

use crate::tensor::Tensor;

/// Thresholds a candidate must meet on every output of every sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    /// Largest allowed max|a-b| / max|b|; `INFINITY` = not checked.
    pub max_rel_error: f64,
    pub min_cosine: f64,
    /// Share of rows whose argmax agrees, for classifier-shaped outputs
    /// (2-D `[N, C]`, C > 1); 0 = not checked.
    pub min_top1: f64,
}

impl Gate {
    /// o1 promises no accuracy loss.
    pub const O1: Gate = Gate {
        max_rel_error: 1e-3,
        min_cosine: 0.9999,
        min_top1: 0.0,
    };
    /// o2 (INT8) trades a bounded loss for speed.
    pub const O2: Gate = Gate {
        max_rel_error: f64::INFINITY,
        min_cosine: 0.99,
        min_top1: 0.99,
    };

    /// This gate with the thresholds a user set in `model_info.accuracy`.
    pub fn with_overrides(self, acc: Option<&shared::config::Accuracy>) -> Gate {
        let Some(a) = acc else { return self };
        Gate {
            max_rel_error: a.max_rel_error.unwrap_or(self.max_rel_error),
            min_cosine: a.min_cosine.unwrap_or(self.min_cosine),
            min_top1: a.min_top1.unwrap_or(self.min_top1),
        }
    }
}

/// Worst-case agreement over everything compared so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    pub max_rel_error: f64,
    pub min_cosine: f64,
    /// Rows of classifier-shaped outputs compared, and how many agreed on the argmax.
    pub top1_rows: usize,
    pub top1_agree: usize,
}

impl Default for Agreement {
    fn default() -> Self {
        Agreement {
            max_rel_error: 0.0,
            min_cosine: 1.0,
            top1_rows: 0,
            top1_agree: 0,
        }
    }
}

impl Agreement {
    pub fn passes(&self, gate: &Gate) -> bool {
        self.max_rel_error <= gate.max_rel_error
            && self.min_cosine >= gate.min_cosine
            && self.top1().is_none_or(|t| t >= gate.min_top1)
    }

    /// Top-1 agreement, when any classifier-shaped output was compared.
    pub fn top1(&self) -> Option<f64> {
        (self.top1_rows > 0).then(|| self.top1_agree as f64 / self.top1_rows as f64)
    }

    /// Why a candidate failed `gate`, in words.
    pub fn failure(&self, gate: &Gate) -> String {
        let mut parts = Vec::new();
        if self.max_rel_error > gate.max_rel_error {
            parts.push(format!(
                "max relative error {:.3e} > {:.0e}",
                self.max_rel_error, gate.max_rel_error
            ));
        }
        if self.min_cosine < gate.min_cosine {
            parts.push(format!(
                "min cosine {:.6} < {}",
                self.min_cosine, gate.min_cosine
            ));
        }
        if let Some(t) = self.top1().filter(|t| *t < gate.min_top1) {
            parts.push(format!(
                "top-1 agreement {:.1}% < {:.1}%",
                t * 100.0,
                gate.min_top1 * 100.0
            ));
        }
        format!("accuracy gate failed: {}", parts.join(", "))
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
            if want.shape.len() == 2 && want.shape[1] > 1 {
                let c = want.shape[1];
                for (ra, rb) in a.chunks(c).zip(b.chunks(c)) {
                    self.top1_rows += 1;
                    self.top1_agree += (argmax(ra) == argmax(rb)) as usize;
                }
            }
            let (rel, cos) = metrics(&a, &b);
            self.max_rel_error = self.max_rel_error.max(rel);
            self.min_cosine = self.min_cosine.min(cos);
        }
        Ok(())
    }
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|x, y| x.1.total_cmp(y.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
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
    fn o2_gate_checks_cosine_and_top1() {
        let logits = |v: Vec<f32>| {
            vec![(
                "y".to_string(),
                Tensor::new(vec![2, 3], TensorData::F32(v)).unwrap(),
            )]
        };
        let mut a = Agreement::default();
        a.update(
            &logits(vec![1.0, 5.0, 2.0, 3.0, 0.0, 1.0]),
            &logits(vec![1.1, 4.9, 2.0, 3.0, 0.1, 1.0]),
        )
        .unwrap();
        assert_eq!(a.top1(), Some(1.0));
        assert!(a.passes(&Gate::O2));
        // The argmax of the second row flips: 50% top-1 agreement fails o2.
        a.update(
            &logits(vec![1.0, 5.0, 2.0, 3.0, 0.0, 2.9]),
            &logits(vec![1.0, 5.0, 2.0, 2.9, 0.0, 3.0]),
        )
        .unwrap();
        assert_eq!(a.top1(), Some(0.75));
        assert!(!a.passes(&Gate::O2));
        assert!(a.failure(&Gate::O2).contains("top-1 agreement 75.0%"));
    }

    #[test]
    fn zero_vectors_agree() {
        assert_eq!(metrics(&[0.0, 0.0], &[0.0, 0.0]), (0.0, 1.0));
        assert_eq!(metrics(&[1.0, 0.0], &[0.0, 0.0]).1, 0.0);
    }
}
