//! What an allocation knows of each layer: its shape, its outlier ratio (OWL) and the curve of its
//! normalized diagonal error against the number of weights pruned (equalized).

use ndarray::ArrayView2;

use crate::error::{OptimaError, Result, check_finite};
use crate::problem::RatioScope;

/// Most segments an error curve keeps; longer curves are sampled every few steps and are linear
/// between samples (still convex).
const CURVE_SEGMENTS: usize = 4096;

/// One layer, as an allocation sees it.
#[derive(Clone, Debug)]
pub struct LayerStats {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) scope: RatioScope,
    pub(crate) outliers: f64,
    pub(crate) curve: Option<ErrorCurve>,
}

impl LayerStats {
    /// A `rows × cols` layer pruned at `scope` whose outlier ratio (or its block's) is `outliers`,
    /// without an error curve: enough for the uniform and OWL allocations.
    pub fn new(rows: usize, cols: usize, scope: RatioScope, outliers: f64) -> Result<Self> {
        if rows == 0 || cols == 0 {
            return Err(OptimaError::Empty(format!("a {rows}×{cols} layer has no weights to allocate")));
        }
        if !(outliers.is_finite() && (0.0..=1.0).contains(&outliers)) {
            return Err(OptimaError::InvalidSetting(format!("an outlier ratio must lie in [0, 1], got {outliers}")));
        }
        Ok(Self { rows, cols, scope, outliers, curve: None })
    }

    /// A layer from its Wanda scores `s_ij = |W_ij|·‖X_j‖₂` (docs/math.md, "Sparsity
    /// allocation"), with the error curve the equalized allocation needs: the diagonal estimate
    /// `Σ s_ij²` over the `k` lowest scores (per row, or over the layer, as `scope` prunes them),
    /// divided by the layer's output energy `Σ_ij s_ij²`.
    pub fn from_scores(scores: ArrayView2<'_, f64>, scope: RatioScope, outliers: f64) -> Result<Self> {
        let (rows, cols) = scores.dim();
        let mut stats = Self::new(rows, cols, scope, outliers)?;
        check_finite("allocation scores", scores)?;
        let increments = match scope {
            RatioScope::PerRow => {
                let mut inc = vec![0.0; cols];
                let mut row: Vec<f64> = Vec::with_capacity(cols);
                for r in scores.rows() {
                    row.clear();
                    row.extend(r.iter().map(|s| s * s));
                    row.sort_unstable_by(f64::total_cmp);
                    inc.iter_mut().zip(&row).for_each(|(acc, v)| *acc += v);
                }
                inc
            }
            RatioScope::PerLayer => {
                let mut all: Vec<f64> = scores.iter().map(|s| s * s).collect();
                all.sort_unstable_by(f64::total_cmp);
                all
            }
        };
        stats.curve = Some(ErrorCurve::from_increments(&increments));
        Ok(stats)
    }

    /// The same layer with outlier ratio `outliers` (a block's, known once all its layers are
    /// scored).
    pub fn with_outliers(mut self, outliers: f64) -> Result<Self> {
        if !(outliers.is_finite() && (0.0..=1.0).contains(&outliers)) {
            return Err(OptimaError::InvalidSetting(format!("an outlier ratio must lie in [0, 1], got {outliers}")));
        }
        self.outliers = outliers;
        Ok(self)
    }

    /// Outputs.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inputs.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The outlier ratio OWL allots by.
    pub fn outliers(&self) -> f64 {
        self.outliers
    }

    /// The pruning unit's count: the pattern prunes `rows` weights per unit per row, one per unit
    /// over the layer.
    pub(crate) fn steps(&self) -> usize {
        match self.scope {
            RatioScope::PerRow => self.cols,
            RatioScope::PerLayer => self.rows * self.cols,
        }
    }

    /// Weights one unit prunes.
    pub(crate) fn group(&self) -> usize {
        match self.scope {
            RatioScope::PerRow => self.rows,
            RatioScope::PerLayer => 1,
        }
    }

    /// The normalized diagonal error of pruning `k` units (linear between the curve's samples),
    /// `None` without a curve.
    pub fn error_at(&self, k: usize) -> Option<f64> {
        self.curve.as_ref().map(|c| c.at(k as f64))
    }
}

/// The normalized cumulative error `f(k)` of pruning `k` units, sampled every `stride` units, and
/// its slopes (nondecreasing: the units are pruned lowest score first).
#[derive(Clone, Debug)]
pub(crate) struct ErrorCurve {
    stride: usize,
    steps: usize,
    /// `f` at 0, stride, 2·stride, …, and at `steps`.
    values: Vec<f64>,
    /// The error per unit of each segment between samples, made nondecreasing against rounding.
    slopes: Vec<f64>,
}

impl ErrorCurve {
    /// From the error each unit adds, in pruning order.
    fn from_increments(increments: &[f64]) -> Self {
        let steps = increments.len();
        let stride = steps.div_ceil(CURVE_SEGMENTS).max(1);
        let total: f64 = increments.iter().sum();
        let scale = if total > 0.0 { 1.0 / total } else { 0.0 };
        let mut values = vec![0.0];
        let mut acc = 0.0;
        for chunk in increments.chunks(stride) {
            acc += chunk.iter().sum::<f64>();
            values.push(acc * scale);
        }
        let mut slopes = Vec::with_capacity(values.len().saturating_sub(1));
        let mut floor = 0.0f64;
        for (p, pair) in values.windows(2).enumerate() {
            if let [a, b] = pair {
                let len = (((p + 1) * stride).min(steps) - p * stride).max(1) as f64;
                floor = floor.max((b - a) / len);
                slopes.push(floor);
            }
        }
        Self { stride, steps, values, slopes }
    }

    /// `f(k)`, linear between samples; `k` clamped to `[0, steps]`.
    pub(crate) fn at(&self, k: f64) -> f64 {
        let k = k.clamp(0.0, self.steps as f64);
        let p = ((k / self.stride as f64).floor() as usize).min(self.slopes.len().saturating_sub(1));
        let start = (p * self.stride) as f64;
        let (Some(&a), Some(&b)) = (self.values.get(p), self.values.get(p + 1)) else {
            return self.values.last().copied().unwrap_or(0.0);
        };
        let end = (((p + 1) * self.stride).min(self.steps) as f64).max(start + 1.0);
        a + (b - a) * ((k - start) / (end - start)).clamp(0.0, 1.0)
    }

    /// The slopes of the segments, in order.
    pub(crate) fn slopes(&self) -> &[f64] {
        &self.slopes
    }

    /// Units covered by the first `segments` segments.
    pub(crate) fn units(&self, segments: usize) -> usize {
        (segments * self.stride).min(self.steps)
    }
}

/// OWL's outlier ratio of a group of layers (one block, in the OWL paper): the fraction of their
/// scores above `threshold` times the group's mean score.
pub fn outlier_ratio(scores: &[ArrayView2<'_, f64>], threshold: f64) -> Result<f64> {
    if !(threshold.is_finite() && threshold > 0.0) {
        return Err(OptimaError::InvalidSetting(format!("the outlier threshold must be > 0, got {threshold}")));
    }
    let mut count = 0usize;
    let mut sum = 0.0;
    for s in scores {
        check_finite("outlier scores", *s)?;
        count += s.len();
        sum += s.sum();
    }
    if count == 0 {
        return Err(OptimaError::Empty("no scores to count outliers in".into()));
    }
    let cut = threshold * sum / count as f64;
    let above: usize = scores.iter().map(|s| s.iter().filter(|&&v| v > cut).count()).sum();
    Ok(above as f64 / count as f64)
}
