//! Regularisation chosen from held-out calibration tokens (docs/math.md, "Damping from held-out
//! tokens"): one calibration sequence in `every` stays out of the Hessians the layers are fitted
//! to; each layer's update is solved at every damping of a small grid, the one with the lowest
//! error on the held-out tokens is kept, and only when it beats the mask's own weights there.

use faer_ext::IntoFaer;
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use optima::backend::Parallelism;
use optima::error::{OptimaError, Result};
use optima::hessian::{CpuHessianAccumulator, CrossAccumulator, HessianAccumulator, HessianPrecision};

/// How a run chooses each layer's damping from held-out calibration sequences.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct HeldOutSelection {
    /// One calibration sequence in this many is held out (sequences `every − 1`, `2·every − 1`, …).
    pub every: usize,
    /// The relative dampings tried for every layer.
    pub grid: Vec<f64>,
    /// With mask refinement: its ADMM search runs at the damping the grid chose for the starting
    /// mask (else at the run's damping), and the refined support is then judged at that damping.
    pub damps_refinement: bool,
}

impl Default for HeldOutSelection {
    /// One sequence in 8 held out; dampings 1%, 3%, 10% and 30% of the mean diagonal (on
    /// SmolLM2's held-out calibration tokens a wider grid chose 0.3% for 2 layers of 210,
    /// docs/results.md); the refinement searches at the chosen damping.
    fn default() -> Self {
        Self { every: 8, grid: vec![0.01, 0.03, 0.1, 0.3], damps_refinement: true }
    }
}

impl HeldOutSelection {
    /// With another held-out share.
    pub fn every(mut self, every: usize) -> Self {
        self.every = every;
        self
    }

    /// With another damping grid.
    pub fn grid(mut self, grid: Vec<f64>) -> Self {
        self.grid = grid;
        self
    }

    /// Whether mask refinement searches at the held-out choice's damping (else the run's).
    pub fn damps_refinement(mut self, damps_refinement: bool) -> Self {
        self.damps_refinement = damps_refinement;
        self
    }

    /// Checks the selection against a run of `sequences` calibration sequences: at least one is
    /// held out and one fitted, and the grid is a non-empty list of finite dampings ≥ 0.
    pub fn validate(&self, sequences: usize) -> Result<()> {
        if self.every < 2 {
            return Err(OptimaError::InvalidSetting(format!(
                "holding out one sequence in {} leaves none to fit; use 2 or more",
                self.every
            )));
        }
        if sequences < self.every {
            return Err(OptimaError::InvalidSetting(format!(
                "holding out one calibration sequence in {} needs at least {} sequences, got {sequences}",
                self.every, self.every
            )));
        }
        if self.grid.is_empty() || self.grid.iter().any(|d| !(d.is_finite() && *d >= 0.0)) {
            return Err(OptimaError::InvalidSetting(format!(
                "the damping grid must be a non-empty list of finite numbers ≥ 0, got {:?}",
                self.grid
            )));
        }
        Ok(())
    }

    /// Whether calibration sequence `s` is held out.
    pub fn holds_out(&self, s: usize) -> bool {
        self.every >= 2 && s % self.every == self.every - 1
    }
}

/// What one layer's held-out choice found; errors are relative to the layer's held-out output
/// energy (dense outputs), like `E`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldOutRecord {
    /// The damping whose update had the lowest held-out error.
    pub damping: f64,
    /// That update's held-out error.
    pub error_update: f64,
    /// The held-out error of the mask's own weights (masked, or SparseGPT's when it chose the mask).
    pub error_baseline: f64,
}

/// A stage's held-out statistics: `H = X_pᵀX_p/N` and, with the dense objective,
/// `C = X_pᵀX_d/N` and `D = X_dᵀX_d/N`, all undamped.
pub(crate) struct HeldOut {
    hessian: Array2<f64>,
    dense: Option<(Array2<f64>, Array2<f64>)>,
}

impl HeldOut {
    /// Held-out statistics of the layer objective: the undamped held-out Hessian alone.
    #[cfg(test)]
    pub(crate) fn of_layer(hessian: Array2<f64>) -> Self {
        Self { hessian, dense: None }
    }

    /// Scores candidates for the dense layer `weight` (m×n) on `parallelism` threads.
    pub(crate) fn scorer<'a>(&'a self, weight: ArrayView2<'a, f64>, parallelism: Parallelism) -> Result<Scorer<'a>> {
        if weight.ncols() != self.hessian.nrows() {
            return Err(OptimaError::shape(
                "held-out weight",
                format!("m×{}", self.hessian.nrows()),
                format!("{}×{}", weight.nrows(), weight.ncols()),
            ));
        }
        let (energy, cross_term) = match &self.dense {
            None => ((&product(weight, self.hessian.view(), parallelism) * &weight).sum(), None),
            Some((cross, dense)) => {
                // ŵᵢᵀ C wᵢ = ŵᵢ · (C wᵢ): the rows of W Cᵀ, once per layer.
                let cw = product(weight, cross.t(), parallelism);
                ((&product(weight, dense.view(), parallelism) * &weight).sum(), Some(cw))
            }
        };
        Ok(Scorer { held_out: self, weight, energy, cross_term, parallelism })
    }
}

/// A layer's held-out scorer ([`HeldOut::scorer`]): one GEMM per candidate.
pub(crate) struct Scorer<'a> {
    held_out: &'a HeldOut,
    weight: ArrayView2<'a, f64>,
    energy: f64,
    cross_term: Option<Array2<f64>>,
    parallelism: Parallelism,
}

impl Scorer<'_> {
    /// The held-out output error of `candidate` (m×n), relative to the dense output energy:
    /// `Σᵢ ‖X_d wᵢ − X_p ŵᵢ‖² / Σᵢ ‖X_d wᵢ‖²`.
    pub(crate) fn error(&self, candidate: ArrayView2<'_, f64>) -> Result<f64> {
        if candidate.dim() != self.weight.dim() {
            return Err(OptimaError::shape(
                "held-out candidate",
                format!("{}×{}", self.weight.nrows(), self.weight.ncols()),
                format!("{}×{}", candidate.nrows(), candidate.ncols()),
            ));
        }
        let h = self.held_out.hessian.view();
        let error = match &self.cross_term {
            // The same inputs in both models: Σ (ŵ − w)ᵀ H (ŵ − w), without cancellation.
            None => {
                let delta = &candidate - &self.weight;
                (&product(delta.view(), h, self.parallelism) * &delta).sum()
            }
            Some(cw) => {
                let quadratic = (&product(candidate, h, self.parallelism) * &candidate).sum();
                (quadratic - 2.0 * (&candidate * cw).sum() + self.energy).max(0.0)
            }
        };
        Ok(if self.energy > 0.0 { error / self.energy } else { 0.0 })
    }
}

/// `a · b` on `parallelism` threads.
fn product(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>, parallelism: Parallelism) -> Array2<f64> {
    let mut out = Array2::<f64>::zeros((a.nrows(), b.ncols()));
    faer::linalg::matmul::matmul(
        out.view_mut().into_faer(),
        faer::Accum::Replace,
        a.into_faer(),
        b.into_faer(),
        1.0,
        parallelism.faer(),
    );
    out
}

/// Accumulates a stage's [`HeldOut`] statistics from the held-out sequences.
pub(crate) enum HeldOutAccumulator {
    /// Layer objective: `H` alone.
    Layer(CpuHessianAccumulator),
    /// Dense objective: `H` and `C`, and `D`.
    Dense(Box<CrossAccumulator>, CpuHessianAccumulator),
}

impl HeldOutAccumulator {
    /// An empty accumulator for `n` inputs, with (`dense`, always in f64) or without the dense
    /// statistics; the layer objective's `H` at `precision`, like the fitted tokens' own.
    pub(crate) fn new(n: usize, dense: bool, parallelism: Parallelism, precision: HessianPrecision) -> Self {
        if dense {
            Self::Dense(Box::new(CrossAccumulator::new(n, parallelism)), CpuHessianAccumulator::new(n, parallelism))
        } else {
            Self::Layer(CpuHessianAccumulator::with_precision(n, parallelism, precision))
        }
    }

    /// Adds one held-out sequence's layer inputs in the pruned (and the dense) model.
    pub(crate) fn add(&mut self, pruned: ArrayView2<'_, f32>, dense: Option<ArrayView2<'_, f32>>) -> Result<()> {
        match (self, dense) {
            (Self::Layer(h), _) => h.add_batch(pruned),
            (Self::Dense(cross, d), Some(dense)) => {
                cross.add_batch(pruned, dense)?;
                d.add_batch(dense)
            }
            (Self::Dense(..), None) => Err(OptimaError::Internal("the dense objective needs the dense stream".into())),
        }
    }

    /// The undamped statistics.
    pub(crate) fn finish(self) -> Result<HeldOut> {
        match self {
            Self::Layer(h) => Ok(HeldOut { hessian: h.finish(0.0)?.undamped(), dense: None }),
            Self::Dense(cross, d) => {
                let (h, c) = (*cross).finish(0.0)?;
                Ok(HeldOut { hessian: h.undamped(), dense: Some((c, d.finish(0.0)?.undamped())) })
            }
        }
    }
}
