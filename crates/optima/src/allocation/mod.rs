//! Sparsity allotted across layers at a fixed global ratio (docs/math.md, "Sparsity allocation").
//!
//! Given each layer's [`LayerStats`] and an unstructured pattern at ratio `s`, [`allocate`]
//! returns one ratio per layer such that the layers together prune *exactly* the weights the
//! uniform pattern prunes, counted as the masker counts them: per row, a layer of `m × n` prunes
//! `m·⌊r·n⌋` weights at ratio `r`; per layer, `⌊r·m·n⌋` (`problem::pruned_count`). So
//! `Σ_l m_l·⌊r_l·n_l⌋ = Σ_l m_l·⌊s·n_l⌋` (per row) or `Σ_l ⌊r_l·m_l·n_l⌋ = Σ_l ⌊s·m_l·n_l⌋`
//! (per layer), as integers. Every ratio lies within `[s − d, s + d] ∩ [0, 1)` for the settings'
//! `max_deviation = d` (the uniform ratio itself is always allowed).
//!
//! - [`AllocationMethod::Uniform`]: every layer at `s`.
//! - [`AllocationMethod::Owl`] (Yin et al. 2024, "Outlier Weighed Layerwise sparsity"): layers
//!   with more outliers (scores above `M` times their block's mean score) are pruned less, linearly
//!   over `[s − λ, s + λ]` from the most to the fewest outliers, then shifted to the exact count.
//! - [`AllocationMethod::Equalized`]: the counts that minimise the summed normalized diagonal
//!   error of all layers, i.e. a common threshold on the marginal error per pruned weight.
//!
//! The module knows nothing of models: the caller builds the statistics (optima-llm from the
//! dense model's calibration inputs).

mod repair;
mod stats;

use std::fmt;
use std::str::FromStr;

use crate::error::{OptimaError, Result};
use crate::problem::{SparsityPattern, pruned_count};
use repair::{Frame, exact_counts};
pub use stats::{LayerStats, outlier_ratio};

/// How sparsity is allotted across layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum AllocationMethod {
    /// Every layer at the pattern's ratio.
    #[default]
    Uniform,
    /// By outlier ratio: more outliers, less pruning.
    Owl,
    /// By the diagonal error estimate: equal marginal error per pruned weight.
    Equalized,
}

impl FromStr for AllocationMethod {
    type Err = OptimaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" => Ok(Self::Uniform),
            "owl" => Ok(Self::Owl),
            "equalized" => Ok(Self::Equalized),
            other => Err(OptimaError::InvalidSetting(format!(
                "unknown allocation {other:?}; choose uniform, owl or equalized"
            ))),
        }
    }
}

impl fmt::Display for AllocationMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Uniform => "uniform",
            Self::Owl => "owl",
            Self::Equalized => "equalized",
        })
    }
}

/// Settings of [`allocate`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct AllocationSettings {
    /// The method.
    pub method: AllocationMethod,
    /// OWL's λ: ratios spread over `[s − λ, s + λ]` before the shift to the exact count.
    pub owl_lambda: f64,
    /// OWL's M: a score is an outlier above M times its group's mean score.
    pub owl_outlier_threshold: f64,
    /// No layer's ratio strays further than this from the pattern's.
    pub max_deviation: f64,
}

impl Default for AllocationSettings {
    fn default() -> Self {
        Self { method: AllocationMethod::Uniform, owl_lambda: 0.08, owl_outlier_threshold: 5.0, max_deviation: 0.1 }
    }
}

impl AllocationSettings {
    /// Checks the settings once, before any work.
    pub fn check(&self) -> Result<()> {
        if !(self.owl_lambda.is_finite() && self.owl_lambda >= 0.0) {
            return Err(OptimaError::InvalidSetting(format!("OWL's lambda must be ≥ 0, got {}", self.owl_lambda)));
        }
        if !(self.owl_outlier_threshold.is_finite() && self.owl_outlier_threshold > 0.0) {
            return Err(OptimaError::InvalidSetting(format!(
                "OWL's outlier threshold must be > 0, got {}",
                self.owl_outlier_threshold
            )));
        }
        if !(self.max_deviation.is_finite() && (0.0..1.0).contains(&self.max_deviation)) {
            return Err(OptimaError::InvalidSetting(format!(
                "the allocation's max deviation must lie in [0, 1), got {}",
                self.max_deviation
            )));
        }
        Ok(())
    }

    /// Sets the method (default uniform).
    pub fn method(mut self, method: AllocationMethod) -> Self {
        self.method = method;
        self
    }

    /// Sets OWL's λ (default 0.08).
    pub fn owl_lambda(mut self, lambda: f64) -> Self {
        self.owl_lambda = lambda;
        self
    }

    /// Sets OWL's outlier threshold M (default 5).
    pub fn owl_outlier_threshold(mut self, threshold: f64) -> Self {
        self.owl_outlier_threshold = threshold;
        self
    }

    /// Sets the largest deviation of a layer's ratio from the pattern's (default 0.1).
    pub fn max_deviation(mut self, deviation: f64) -> Self {
        self.max_deviation = deviation;
        self
    }

    /// Whether every layer keeps the pattern's ratio.
    pub fn is_uniform(&self) -> bool {
        self.method == AllocationMethod::Uniform
    }
}

/// The ratios [`allocate`] chose, and the counts behind them.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocated {
    /// Per layer, the ratio to prune it at: the pattern's scope at this ratio prunes exactly
    /// `pruned[l]` weights.
    pub ratios: Vec<f64>,
    /// Per layer, the weights pruned.
    pub pruned: Vec<u64>,
    /// Per layer, the method's real-valued ratio before rounding to whole units.
    pub targets: Vec<f64>,
    /// The weights the uniform pattern prunes over all layers, which `pruned` sums to.
    pub uniform_pruned: u64,
    /// All weights of all layers.
    pub weights: u64,
}

impl Allocated {
    /// The fraction of all weights pruned.
    pub fn global_ratio(&self) -> f64 {
        self.pruned.iter().sum::<u64>() as f64 / self.weights.max(1) as f64
    }
}

/// Allots `pattern`'s ratio across `layers` by `settings` (see the module's documentation for the
/// exact count and the bounds). An N:M pattern stays uniform (hardware needs the same N:M in every
/// layer) and is refused here, as are empty layers, statistics without the error curve that the
/// equalized allocation needs, layers whose statistics were built for another scope, and bad
/// settings.
pub fn allocate(pattern: &SparsityPattern, layers: &[LayerStats], settings: &AllocationSettings) -> Result<Allocated> {
    settings.check()?;
    let SparsityPattern::Unstructured { ratio, scope } = *pattern else {
        return Err(OptimaError::InvalidSetting(format!(
            "sparsity allocation applies to unstructured patterns; {pattern} stays the same in every layer"
        )));
    };
    pattern.validate(1)?;
    if layers.is_empty() {
        return Err(OptimaError::Empty("no layers to allocate sparsity across".into()));
    }
    if let Some(layer) = layers.iter().find(|l| l.scope != scope) {
        return Err(OptimaError::InvalidSetting(format!(
            "a layer's statistics were built for {:?}, the pattern prunes {scope:?}",
            layer.scope
        )));
    }
    let d = settings.max_deviation;
    let frames: Vec<Frame> = layers
        .iter()
        .map(|l| {
            let steps = l.steps();
            let uniform = pruned_count(ratio, steps);
            let lo = (((ratio - d).max(0.0) * steps as f64).ceil() as usize).min(uniform);
            let hi = (((ratio + d) * steps as f64).floor() as usize).min(steps.saturating_sub(1)).max(uniform);
            Frame {
                group: l.group() as u64,
                steps: steps as u64,
                uniform: uniform as u64,
                lo: lo as u64,
                hi: hi as u64,
            }
        })
        .collect();
    let uniform: Vec<u64> = frames.iter().map(|f| f.uniform).collect();
    let counts = match settings.method {
        AllocationMethod::Uniform => (uniform.iter().map(|&k| k as f64).collect(), uniform.clone()),
        AllocationMethod::Owl => owl(layers, &frames, ratio, settings.owl_lambda),
        AllocationMethod::Equalized => equalized(layers, &frames)?,
    };
    let (targets, counts) = counts;
    finish(ratio, &frames, &targets, counts)
}

/// The allocation's record from its unit counts.
fn finish(ratio: f64, frames: &[Frame], targets: &[f64], counts: Vec<u64>) -> Result<Allocated> {
    let uniform_pruned: u64 = frames.iter().map(|f| f.group * f.uniform).sum();
    let pruned: Vec<u64> = frames.iter().zip(&counts).map(|(f, &k)| f.group * k).collect();
    if pruned.iter().sum::<u64>() != uniform_pruned || frames.iter().zip(&counts).any(|(f, &k)| k < f.lo || k > f.hi) {
        return Err(OptimaError::Internal("the allocation missed its exact count or its bounds".into()));
    }
    let ratios = frames.iter().zip(&counts).map(|(f, &k)| ratio_for(ratio, f, k)).collect::<Result<Vec<f64>>>()?;
    Ok(Allocated {
        ratios,
        pruned,
        targets: frames.iter().zip(targets).map(|(f, t)| t / f.steps as f64).collect(),
        uniform_pruned,
        weights: frames.iter().map(|f| f.group * f.steps).sum(),
    })
}

/// A ratio that prunes exactly `k` units of `frame` (the pattern's own for its uniform count).
fn ratio_for(ratio: f64, frame: &Frame, k: u64) -> Result<f64> {
    if k == frame.uniform {
        return Ok(ratio);
    }
    let steps = frame.steps as usize;
    // `k / steps`, or the next float above it where the product rounds below `k`.
    std::iter::successors(Some(k as f64 / frame.steps as f64), |r| Some(f64::from_bits(r.to_bits() + 1)))
        .take(8)
        .find(|&r| r < 1.0 && pruned_count(r, steps) == k as usize)
        .ok_or_else(|| OptimaError::Internal(format!("no ratio prunes {k} of {steps} units")))
}

/// OWL: ratio `s + λ − 2λ·(D_l − D_min)/(D_max − D_min)`, shifted by one constant (bisection) so
/// the clamped targets meet the exact count; rounded by the DP at the least squared deviation;
/// counts of identically framed layers then ordered like their targets, so that more outliers
/// never mean a higher ratio.
fn owl(layers: &[LayerStats], frames: &[Frame], ratio: f64, lambda: f64) -> (Vec<f64>, Vec<u64>) {
    let uniform: Vec<u64> = frames.iter().map(|f| f.uniform).collect();
    let (dmin, dmax) =
        layers.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), l| (a.min(l.outliers), b.max(l.outliers)));
    if dmax - dmin <= 1e-12 || lambda == 0.0 {
        return (uniform.iter().map(|&k| k as f64).collect(), uniform);
    }
    let base: Vec<f64> =
        layers.iter().map(|l| ratio + lambda - 2.0 * lambda * (l.outliers - dmin) / (dmax - dmin)).collect();
    let want: f64 = frames.iter().map(|f| (f.group * f.uniform) as f64).sum();
    let at = |c: f64| -> Vec<f64> {
        frames.iter().zip(&base).map(|(f, b)| ((b + c) * f.steps as f64).clamp(f.lo as f64, f.hi as f64)).collect()
    };
    let total = |t: &[f64]| -> f64 { frames.iter().zip(t).map(|(f, t)| f.group as f64 * t).sum() };
    let (mut lo, mut hi) = (-(2.0 + 2.0 * lambda), 2.0 + 2.0 * lambda);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if total(&at(mid)) < want {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let targets = at(0.5 * (lo + hi));
    let cost = |l: usize, k: u64| -> f64 {
        match (frames.get(l), targets.get(l)) {
            (Some(f), Some(t)) => f.group as f64 * ((k as f64 - t) / f.steps as f64).powi(2),
            _ => f64::INFINITY,
        }
    };
    let mut counts = exact_counts(frames, &targets, &cost);
    let outliers: Vec<f64> = layers.iter().map(|l| l.outliers).collect();
    order_like_targets(frames, &targets, &outliers, &mut counts);
    (targets, counts)
}

/// Within every set of identically framed layers, gives the lowest counts to the lowest targets,
/// among equal targets (clamped at a bound) to the most outliers (the sum and the bounds stay; a
/// convex rounding cost does not rise).
fn order_like_targets(frames: &[Frame], targets: &[f64], outliers: &[f64], counts: &mut [u64]) {
    let mut classes: std::collections::HashMap<Frame, Vec<usize>> = std::collections::HashMap::new();
    for (l, f) in frames.iter().enumerate() {
        classes.entry(*f).or_default().push(l);
    }
    for members in classes.values() {
        let mut by_target = members.clone();
        by_target.sort_by(|&a, &b| {
            let key = |l: usize| (targets.get(l).copied().unwrap_or(0.0), outliers.get(l).copied().unwrap_or(0.0));
            let ((ta, da), (tb, db)) = (key(a), key(b));
            ta.total_cmp(&tb).then(db.total_cmp(&da)).then(a.cmp(&b))
        });
        let mut sorted: Vec<u64> = members.iter().filter_map(|&l| counts.get(l).copied()).collect();
        sorted.sort_unstable();
        for (&l, k) in by_target.iter().zip(sorted) {
            if let Some(slot) = counts.get_mut(l) {
                *slot = k;
            }
        }
    }
}

/// Equalized: the continuous water-filling on the error curves' slopes (error per pruned weight),
/// a common threshold τ with the layers at τ filled in proportion to meet the exact count; rounded
/// by the DP at the least summed error; never worse than uniform by that error.
fn equalized(layers: &[LayerStats], frames: &[Frame]) -> Result<(Vec<f64>, Vec<u64>)> {
    let curves = layers
        .iter()
        .map(|l| {
            l.curve.as_ref().ok_or_else(|| {
                OptimaError::InvalidSetting("the equalized allocation needs layer statistics from scores".into())
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let want: f64 = frames.iter().map(|f| (f.group * f.uniform) as f64).sum();
    // Units of each layer whose slope per weight is ≤ τ (< τ when strict), within its bounds.
    let units_at = |tau: f64, strict: bool| -> Vec<f64> {
        frames
            .iter()
            .zip(&curves)
            .map(|(f, c)| {
                let per_weight = |s: f64| s / f.group as f64;
                let segments =
                    c.slopes().partition_point(|&s| if strict { per_weight(s) < tau } else { per_weight(s) <= tau });
                (c.units(segments) as u64).clamp(f.lo, f.hi) as f64
            })
            .collect()
    };
    let total = |t: &[f64]| -> f64 { frames.iter().zip(t).map(|(f, t)| f.group as f64 * t).sum() };
    let mut taus: Vec<f64> =
        frames.iter().zip(&curves).flat_map(|(f, c)| c.slopes().iter().map(move |s| s / f.group as f64)).collect();
    taus.sort_unstable_by(f64::total_cmp);
    taus.dedup();
    let first = taus.partition_point(|&tau| total(&units_at(tau, false)) < want);
    let targets = match taus.get(first) {
        Some(&tau) => {
            let below = units_at(tau, true);
            let at = units_at(tau, false);
            let gap = total(&at) - total(&below);
            let theta = if gap > 0.0 { ((want - total(&below)) / gap).clamp(0.0, 1.0) } else { 0.0 };
            below.iter().zip(&at).map(|(b, a)| b + theta * (a - b)).collect()
        }
        None => frames.iter().map(|f| f.hi as f64).collect::<Vec<_>>(),
    };
    let cost = |l: usize, k: u64| -> f64 { curves.get(l).map_or(f64::INFINITY, |c| c.at(k as f64)) };
    let counts = exact_counts(frames, &targets, &cost);
    let uniform: Vec<u64> = frames.iter().map(|f| f.uniform).collect();
    let summed = |k: &[u64]| -> f64 { k.iter().enumerate().map(|(l, &k)| cost(l, k)).sum() };
    let counts = if summed(&counts) <= summed(&uniform) { counts } else { uniform };
    Ok((targets, counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::RatioScope;

    #[test]
    fn ratios_reproduce_their_counts() {
        let frame = Frame { group: 3, steps: 100, uniform: 50, lo: 40, hi: 60 };
        for k in 40..=60 {
            let r = ratio_for(0.5, &frame, k).unwrap();
            assert_eq!(pruned_count(r, 100), k as usize);
        }
        assert_eq!(ratio_for(0.5, &frame, 50).unwrap(), 0.5);
    }

    #[test]
    fn n_m_stays_uniform() {
        let layer = LayerStats::new(4, 8, RatioScope::PerRow, 0.1).unwrap();
        let owl = AllocationSettings::default().method(AllocationMethod::Owl);
        let err = allocate(&"2:4".parse().unwrap(), &[layer], &owl).unwrap_err();
        assert!(matches!(err, OptimaError::InvalidSetting(_)), "{err}");
    }

    #[test]
    fn the_exact_count_per_layer_scope_is_the_uniform_floor_sum() {
        let layers: Vec<LayerStats> =
            (1..6).map(|i| LayerStats::new(i, 7, RatioScope::PerLayer, i as f64 / 10.0).unwrap()).collect();
        let owl = AllocationSettings::default().method(AllocationMethod::Owl).owl_lambda(0.2).max_deviation(0.3);
        let a = allocate(&"0.37/layer".parse().unwrap(), &layers, &owl).unwrap();
        let uniform: usize = (1..6).map(|i| pruned_count(0.37, i * 7)).sum();
        assert_eq!(a.uniform_pruned, uniform as u64);
        assert_eq!(a.pruned.iter().sum::<u64>(), uniform as u64);
        assert_ne!(a.pruned, (1..6).map(|i| pruned_count(0.37, i * 7) as u64).collect::<Vec<_>>());
    }
}
