//! The accuracy gate: a candidate's outputs against the original model's.

use crate::tensor::Tensor;

/// Thresholds a candidate must meet on every output of every sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// Largest allowed max|a-b| / max|b|; `INFINITY` = not checked.
    pub max_rel_error: f64,
    pub min_cosine: f64,
    /// Share of rows whose argmax agrees, for classifier-shaped outputs
    /// (2-D `[N, C]`, C > 1); 0 = not checked.
    pub min_top1: f64,
    /// `(k, share)`: rows whose original top-1 is among the candidate's k best.
    pub top_k: Option<(usize, f64)>,
    /// Regions of thresholded maps matched by box IoU.
    pub regions: Option<RegionGate>,
    /// Greedy CTC readings of sequence outputs.
    pub sequences: Option<SequenceGate>,
    /// The outputs the three metrics above look at; `None` = every output
    /// of a suitable shape.
    pub outputs: Option<Vec<String>>,
}

/// See `shared::config::Accuracy::min_region_agreement`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionGate {
    pub threshold: f64,
    pub iou: f64,
    pub min: f64,
}

/// See `shared::config::Accuracy::min_sequence_agreement`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequenceGate {
    pub blank: usize,
    pub min: f64,
}

impl Gate {
    /// o1 promises no accuracy loss.
    pub const O1: Gate = Gate {
        max_rel_error: 1e-3,
        min_cosine: 0.9999,
        min_top1: 0.0,
        top_k: None,
        regions: None,
        sequences: None,
        outputs: None,
    };
    /// o2 (INT8) trades a bounded loss for speed.
    pub const O2: Gate = Gate {
        max_rel_error: f64::INFINITY,
        min_cosine: 0.99,
        min_top1: 0.99,
        top_k: None,
        regions: None,
        sequences: None,
        outputs: None,
    };

    /// This gate with the thresholds a user set in `model_info.accuracy`.
    pub fn with_overrides(self, acc: Option<&shared::config::Accuracy>) -> Gate {
        let Some(a) = acc else { return self };
        Gate {
            max_rel_error: a.max_rel_error.unwrap_or(self.max_rel_error),
            min_cosine: a.min_cosine.unwrap_or(self.min_cosine),
            min_top1: a.min_top1.unwrap_or(self.min_top1),
            top_k: a
                .min_top_k
                .map(|m| (a.top_k.unwrap_or(5).max(1) as usize, m))
                .or(self.top_k),
            regions: a
                .min_region_agreement
                .map(|min| RegionGate {
                    threshold: a.region_threshold.unwrap_or(0.5),
                    iou: a.region_iou.unwrap_or(0.5),
                    min,
                })
                .or(self.regions),
            sequences: a
                .min_sequence_agreement
                .map(|min| SequenceGate {
                    blank: a.ctc_blank.unwrap_or(0) as usize,
                    min,
                })
                .or(self.sequences),
            outputs: a.outputs.clone().or(self.outputs),
        }
    }

    /// Whether the top-k/region/sequence metrics look at output `name` of
    /// rank `rank` (`default_rank`: the smallest rank they take unasked).
    fn looks_at(&self, name: &str, rank: usize, named_rank: usize, default_rank: usize) -> bool {
        match &self.outputs {
            Some(names) => names.iter().any(|n| n == name) && rank >= named_rank,
            None => rank == default_rank,
        }
    }
}

/// Agreed and compared counts of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Count {
    pub agree: usize,
    pub total: usize,
    /// Things looked at (rows, planes, sequences); 0 = the metric found no
    /// output to judge.
    pub seen: usize,
}

impl Count {
    /// The share agreed; 1 when there was nothing to disagree on.
    pub fn share(&self) -> Option<f64> {
        (self.seen > 0).then(|| {
            if self.total == 0 {
                1.0
            } else {
                self.agree as f64 / self.total as f64
            }
        })
    }
}

/// Worst-case agreement over everything compared so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Agreement {
    pub max_rel_error: f64,
    pub min_cosine: f64,
    /// Rows of classifier-shaped outputs compared, and how many agreed on the argmax.
    pub top1_rows: usize,
    pub top1_agree: usize,
    /// What the gate's optional metrics measure (`None` unless it has them).
    pub metrics: Option<Gate>,
    pub top_k: Count,
    pub regions: Count,
    pub sequences: Count,
}

impl Default for Agreement {
    fn default() -> Self {
        Agreement {
            max_rel_error: 0.0,
            min_cosine: 1.0,
            top1_rows: 0,
            top1_agree: 0,
            metrics: None,
            top_k: Count::default(),
            regions: Count::default(),
            sequences: Count::default(),
        }
    }
}

impl Agreement {
    /// An agreement that also measures the optional metrics of `gate`.
    pub fn for_gate(gate: &Gate) -> Agreement {
        let any = gate.top_k.is_some() || gate.regions.is_some() || gate.sequences.is_some();
        Agreement {
            metrics: any.then(|| gate.clone()),
            ..Agreement::default()
        }
    }

    pub fn passes(&self, gate: &Gate) -> bool {
        self.max_rel_error <= gate.max_rel_error
            && self.min_cosine >= gate.min_cosine
            && self.top1().is_none_or(|t| t >= gate.min_top1)
            && gate
                .top_k
                .is_none_or(|(_, m)| self.top_k.share().is_some_and(|s| s >= m))
            && gate
                .regions
                .is_none_or(|r| self.regions.share().is_some_and(|s| s >= r.min))
            && gate
                .sequences
                .is_none_or(|q| self.sequences.share().is_some_and(|s| s >= q.min))
    }

    /// Top-1 agreement, when any classifier-shaped output was compared.
    pub fn top1(&self) -> Option<f64> {
        (self.top1_rows > 0).then(|| self.top1_agree as f64 / self.top1_rows as f64)
    }

    /// The loss of each metric the gate has (1 − agreement), summed: how
    /// much a candidate is off, for the fallback's ranking of nodes.
    pub fn loss(&self) -> f64 {
        let off = |s: Option<f64>| s.map(|s| 1.0 - s).unwrap_or(0.0);
        (1.0 - self.min_cosine)
            + off(self.top1())
            + off(self.top_k.share())
            + off(self.regions.share())
            + off(self.sequences.share())
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
        let mut optional =
            |what: &str, count: &Count, min: f64, no_output: &str| match count.share() {
                None => parts.push(format!("{what}: {no_output}")),
                Some(s) if s < min => parts.push(format!(
                    "{what} {:.1}% < {:.1}% ({} of {})",
                    s * 100.0,
                    min * 100.0,
                    count.agree,
                    count.total
                )),
                Some(_) => {}
            };
        if let Some((k, m)) = gate.top_k {
            optional(
                &format!("top-{k} agreement"),
                &self.top_k,
                m,
                "no [N, C] output to judge (accuracy.outputs)",
            );
        }
        if let Some(r) = gate.regions {
            optional(
                "region agreement",
                &self.regions,
                r.min,
                "no map output to judge (accuracy.outputs)",
            );
        }
        if let Some(q) = gate.sequences {
            optional(
                "sequence agreement",
                &self.sequences,
                q.min,
                "no sequence output to judge (accuracy.outputs)",
            );
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
            if let Some(g) = &self.metrics {
                let shape = &want.shape;
                let rank = shape.len();
                if let Some((k, _)) = g.top_k {
                    if g.looks_at(name, rank, 2, 2) && shape[rank - 1] > 1 {
                        let c = shape[rank - 1];
                        for (ra, rb) in a.chunks(c).zip(b.chunks(c)) {
                            self.top_k.seen += 1;
                            self.top_k.total += 1;
                            self.top_k.agree += top_k_has(ra, argmax(rb), k) as usize;
                        }
                    }
                }
                if let Some(r) = g.regions {
                    if g.looks_at(name, rank, 2, 4) && rank >= 2 {
                        let (h, w) = (shape[rank - 2], shape[rank - 1]);
                        if h > 0 && w > 0 {
                            for (pa, pb) in a.chunks(h * w).zip(b.chunks(h * w)) {
                                let (want, got) = (
                                    regions(pb, h, w, r.threshold),
                                    regions(pa, h, w, r.threshold),
                                );
                                self.regions.seen += 1;
                                self.regions.total += want.boxes.len().max(got.boxes.len());
                                self.regions.agree += matched(&want, &got, r.iou);
                            }
                        }
                    }
                }
                if let Some(q) = g.sequences {
                    if g.looks_at(name, rank, 2, 3) && rank >= 2 && shape[rank - 1] > 0 {
                        let (t, c) = (shape[rank - 2], shape[rank - 1]);
                        if t > 0 {
                            for (sa, sb) in a.chunks(t * c).zip(b.chunks(t * c)) {
                                self.sequences.seen += 1;
                                self.sequences.total += 1;
                                self.sequences.agree +=
                                    (ctc_read(sa, c, q.blank) == ctc_read(sb, c, q.blank)) as usize;
                            }
                        }
                    }
                }
            }
            let (rel, cos) = metrics(&a, &b);
            self.max_rel_error = self.max_rel_error.max(rel);
            self.min_cosine = self.min_cosine.min(cos);
        }
        Ok(())
    }
}

/// Whether class `class` is among the `k` largest of `row`.
fn top_k_has(row: &[f64], class: usize, k: usize) -> bool {
    let Some(&v) = row.get(class) else {
        return false;
    };
    // Classes strictly better than `class`; ties count in its favour.
    row.iter().filter(|&&x| x > v).count() < k
}

/// A region's bounding box: rows and columns, inclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Box2 {
    r0: usize,
    c0: usize,
    r1: usize,
    c1: usize,
}

impl Box2 {
    fn area(&self) -> usize {
        (self.r1 - self.r0 + 1) * (self.c1 - self.c0 + 1)
    }

    fn iou(&self, o: &Box2) -> f64 {
        let (r0, c0) = (self.r0.max(o.r0), self.c0.max(o.c0));
        let (r1, c1) = (self.r1.min(o.r1), self.c1.min(o.c1));
        if r0 > r1 || c0 > c1 {
            return 0.0;
        }
        let inter = (r1 - r0 + 1) * (c1 - c0 + 1);
        inter as f64 / (self.area() + o.area() - inter) as f64
    }
}

/// The 8-connected regions of a plane: their bounding boxes, and the
/// region of each pixel (`u32::MAX` for background).
struct Regions {
    boxes: Vec<Box2>,
    label: Vec<u32>,
}

/// The regions of `plane` (`h`×`w`, row major) above `threshold`. Time and
/// memory are linear in the plane's size.
fn regions(plane: &[f64], h: usize, w: usize, threshold: f64) -> Regions {
    let mut label = vec![u32::MAX; h * w];
    let mut boxes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..h * w {
        if label[start] != u32::MAX || plane[start] <= threshold {
            continue;
        }
        let id = boxes.len() as u32;
        label[start] = id;
        stack.push(start);
        let mut b = Box2 {
            r0: start / w,
            c0: start % w,
            r1: start / w,
            c1: start % w,
        };
        while let Some(i) = stack.pop() {
            let (r, c) = (i / w, i % w);
            b.r0 = b.r0.min(r);
            b.r1 = b.r1.max(r);
            b.c0 = b.c0.min(c);
            b.c1 = b.c1.max(c);
            for dr in [-1i64, 0, 1] {
                for dc in [-1i64, 0, 1] {
                    let (nr, nc) = (r as i64 + dr, c as i64 + dc);
                    if nr < 0 || nc < 0 || nr >= h as i64 || nc >= w as i64 {
                        continue;
                    }
                    let j = nr as usize * w + nc as usize;
                    if label[j] == u32::MAX && plane[j] > threshold {
                        label[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        boxes.push(b);
    }
    Regions { boxes, label }
}

/// Regions of `want` matched one to one with regions of `got` at box IoU
/// ≥ `iou`, best pairs first. Only regions that share a pixel are compared,
/// which bounds the work by the plane's size however many regions a noisy
/// map has (two boxes that overlap by half without a common pixel — thin
/// diagonal shapes — count as unmatched: the gate errs on the strict side).
fn matched(want: &Regions, got: &Regions, iou: f64) -> usize {
    let mut touching: std::collections::HashSet<(u32, u32)> = std::collections::HashSet::new();
    for (&a, &b) in want.label.iter().zip(&got.label) {
        if a != u32::MAX && b != u32::MAX {
            touching.insert((a, b));
        }
    }
    let mut pairs: Vec<(f64, usize, usize)> = touching
        .into_iter()
        .map(|(i, j)| (i as usize, j as usize))
        .map(|(i, j)| (want.boxes[i].iou(&got.boxes[j]), i, j))
        .filter(|(x, _, _)| *x >= iou)
        .collect();
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let (mut used_a, mut used_b) = (vec![false; want.boxes.len()], vec![false; got.boxes.len()]);
    let mut n = 0;
    for (_, i, j) in pairs {
        if !used_a[i] && !used_b[j] {
            used_a[i] = true;
            used_b[j] = true;
            n += 1;
        }
    }
    n
}

/// What a greedy CTC decoder reads from `seq` (`T`×`c`, row major): the
/// argmax at each step, repeats collapsed, `blank` dropped.
fn ctc_read(seq: &[f64], c: usize, blank: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut prev = None;
    for step in seq.chunks(c) {
        let k = argmax(step);
        if prev != Some(k) && k != blank {
            out.push(k);
        }
        prev = Some(k);
    }
    out
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

    fn out(name: &str, shape: Vec<usize>, v: Vec<f32>) -> Vec<(String, Tensor)> {
        vec![(
            name.to_string(),
            Tensor::new(shape, TensorData::F32(v)).unwrap(),
        )]
    }

    fn gate_with(acc: serde_json::Value) -> Gate {
        let acc: shared::config::Accuracy = serde_json::from_value(acc).unwrap();
        Gate::O2.with_overrides(Some(&acc))
    }

    /// A [1, 1, 6, 8] map with two blobs; `shift` moves the second blob's
    /// border by one pixel, `drop` removes the first blob.
    fn map(shift: bool, drop: bool) -> Vec<f32> {
        let mut m = vec![0.0f32; 48];
        if !drop {
            for (r, c) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
                m[r * 8 + c] = 0.9;
            }
        }
        let cols = if shift { 4..8 } else { 5..8 };
        for r in 2..5 {
            for c in cols.clone() {
                m[r * 8 + c] = 0.8;
            }
        }
        m
    }

    #[test]
    fn regions_forgive_a_border_flip_and_reject_a_lost_region() {
        let g = gate_with(
            serde_json::json!({"min_region_agreement": 1.0, "region_threshold": 0.5, "region_iou": 0.5}),
        );
        let want = out("mask", vec![1, 1, 6, 8], map(false, false));
        let mut a = Agreement::for_gate(&g);
        a.update(&want, &out("mask", vec![1, 1, 6, 8], map(true, false)))
            .unwrap();
        assert_eq!((a.regions.agree, a.regions.total), (2, 2));
        // The shifted border moves a box a column (IoU 0.75): still matched.
        let mut lost = Agreement::for_gate(&g);
        lost.update(&want, &out("mask", vec![1, 1, 6, 8], map(false, true)))
            .unwrap();
        assert_eq!((lost.regions.agree, lost.regions.total), (1, 2));
        assert!(
            lost.failure(&g).contains("region agreement 50.0% < 100.0%"),
            "{}",
            lost.failure(&g)
        );
        assert!(lost.regions.share().unwrap() < a.regions.share().unwrap());
        assert!(!lost.passes(&g));
        // Named outputs only: a gate on another output finds nothing to judge.
        let other =
            gate_with(serde_json::json!({"min_region_agreement": 1.0, "outputs": ["boxes"]}));
        let mut none = Agreement::for_gate(&other);
        none.update(&want, &want).unwrap();
        assert!(!none.passes(&other));
        assert!(
            none.failure(&other).contains("no map output"),
            "{}",
            none.failure(&other)
        );
    }

    #[test]
    fn a_map_of_thousands_of_specks_is_matched_speck_by_speck() {
        // 16,384 one-pixel regions: comparing every box with every other
        // would be 2.7e8 pairs; only regions sharing a pixel are compared.
        let (h, w) = (256, 256);
        let plane: Vec<f32> = (0..h * w)
            .map(|i| {
                if (i / w) % 2 == 0 && (i % w) % 2 == 0 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let g = gate_with(serde_json::json!({"min_region_agreement": 1.0}));
        let want = out("m", vec![1, 1, h, w], plane.clone());
        let mut a = Agreement::for_gate(&g);
        a.update(&want, &want).unwrap();
        assert_eq!((a.regions.agree, a.regions.total), (16_384, 16_384));
        // Every other speck gone: half matched.
        let mut thinned = plane;
        for (i, v) in thinned.iter_mut().enumerate() {
            if (i / w) % 4 == 0 {
                *v = 0.0;
            }
        }
        let mut b = Agreement::for_gate(&g);
        b.update(&want, &out("m", vec![1, 1, h, w], thinned))
            .unwrap();
        assert_eq!((b.regions.agree, b.regions.total), (8_192, 16_384));
    }

    /// [1, T=6, C=3] frames: argmax per step `labels`, with 0 the blank.
    fn frames(labels: &[usize]) -> Vec<f32> {
        labels
            .iter()
            .flat_map(|&l| (0..3).map(move |c| if c == l { 0.9 } else { 0.05 }))
            .collect()
    }

    #[test]
    fn sequences_are_compared_as_a_ctc_decoder_reads_them() {
        let g = gate_with(serde_json::json!({"min_sequence_agreement": 1.0}));
        let want = out("logits", vec![1, 6, 3], frames(&[1, 1, 0, 2, 2, 0]));
        // Repeats and blanks placed differently read the same "1 2".
        let mut same = Agreement::for_gate(&g);
        same.update(
            &want,
            &out("logits", vec![1, 6, 3], frames(&[0, 1, 0, 0, 2, 0])),
        )
        .unwrap();
        assert_eq!(same.sequences.share(), Some(1.0));
        assert!(same.passes(&Gate {
            min_cosine: -1.0,
            ..g.clone()
        }));
        // A blank lost between two equal labels reads "1 2 2" → "1 2": a
        // different reading ("1 1" vs "1") is rejected.
        let want2 = out("logits", vec![1, 6, 3], frames(&[1, 0, 1, 0, 0, 0]));
        let mut merged = Agreement::for_gate(&g);
        merged
            .update(
                &want2,
                &out("logits", vec![1, 6, 3], frames(&[1, 1, 1, 0, 0, 0])),
            )
            .unwrap();
        assert_eq!(merged.sequences.share(), Some(0.0));
        assert!(!merged.passes(&g));
        assert!(merged.failure(&g).contains("sequence agreement 0.0%"));
    }

    #[test]
    fn top_k_accepts_the_class_in_the_k_best_and_rejects_it_outside() {
        let g = gate_with(serde_json::json!({"min_top_k": 1.0, "top_k": 2, "min_top1": 0.0}));
        let want = out("y", vec![1, 4], vec![0.1, 0.9, 0.5, 0.0]);
        let mut second = Agreement::for_gate(&g);
        // Class 1 is second best in the candidate: in its top 2.
        second
            .update(&want, &out("y", vec![1, 4], vec![0.1, 0.6, 0.7, 0.0]))
            .unwrap();
        assert_eq!(second.top_k.share(), Some(1.0));
        assert_eq!(second.top1(), Some(0.0));
        let mut third = Agreement::for_gate(&g);
        third
            .update(&want, &out("y", vec![1, 4], vec![0.8, 0.6, 0.7, 0.0]))
            .unwrap();
        assert_eq!(third.top_k.share(), Some(0.0));
        assert!(!third.passes(&g));
        assert!(third.loss() > second.loss());
    }

    #[test]
    fn zero_vectors_agree() {
        assert_eq!(metrics(&[0.0, 0.0], &[0.0, 0.0]), (0.0, 1.0));
        assert_eq!(metrics(&[1.0, 0.0], &[0.0, 0.0]).1, 0.0);
    }
}
