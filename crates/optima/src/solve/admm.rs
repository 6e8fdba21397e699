//! ADMM with one shared factorization (Boža, 2024): in the diagonally normalized space
//! `Ĥ = D^{-1/2} H D^{-1/2}`, split `x = z` with `z` carrying the mask, and iterate
//!
//! ```text
//! x ← (Ĥ + ρI)⁻¹ (Ĥŵ + ρ(z − u)),   z ← mask(x + u),   u ← u + x − z
//! ```
//!
//! for all rows at once: one GEMM per iteration with the precomputed `(Ĥ + ρI)⁻¹`, shared by every
//! row. `z` is always feasible; a row stops when the KKT residual of its `z` meets the tolerance.
//! With adaptive ρ, residual balancing rescales ρ (one `n³` refactorization each time).

use ndarray::{Array1, Array2, ArrayView2};

use super::QpSolver;
use super::batched::{
    IterativeSettings, Outcome, kept_indicator, masked_gradient, residual_scales, retain_array, retain_entries,
    retain_rows, row_inf_norms, solve_batched,
};
use crate::backend::cpu::{spd_inverse, times_hessian};
use crate::error::{OptimaError, Result};
use crate::memory::{Bytes, MemoryEstimate};
use crate::problem::{LayerProblem, RowStatus, Solution};

/// Settings of [`AdmmSolver`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct AdmmSettings {
    /// Tolerance, cap and threads.
    pub iterative: IterativeSettings,
    /// Penalty ρ (the normalized Hessian has unit diagonal, so 1 is a natural scale).
    pub rho: f64,
    /// Rebalance ρ from the primal and dual residuals.
    pub adaptive_rho: bool,
    /// Iterations between KKT checks (each costs one GEMM on the active rows).
    pub check_every: usize,
}

impl Default for AdmmSettings {
    fn default() -> Self {
        Self {
            iterative: IterativeSettings::new(super::DEFAULT_TOLERANCE, 3000),
            rho: 1.0,
            adaptive_rho: true,
            check_every: 5,
        }
    }
}

impl AdmmSettings {
    pub(crate) fn check(&self) -> Result<()> {
        self.iterative.check()?;
        if !(self.rho.is_finite() && self.rho > 0.0) || self.check_every == 0 {
            return Err(OptimaError::InvalidSetting(format!(
                "ADMM needs rho > 0 and check_every ≥ 1 (got {}, {})",
                self.rho, self.check_every
            )));
        }
        Ok(())
    }

    /// Sets the tolerance, cap and threads (default: 1e-6, 3000 iterations, all cores).
    pub fn iterative(mut self, iterative: IterativeSettings) -> Self {
        self.iterative = iterative;
        self
    }

    /// Sets the penalty ρ (default: 1).
    pub fn rho(mut self, rho: f64) -> Self {
        self.rho = rho;
        self
    }

    /// Sets whether ρ is rebalanced (default: true).
    pub fn adaptive_rho(mut self, adaptive_rho: bool) -> Self {
        self.adaptive_rho = adaptive_rho;
        self
    }

    /// Sets the iterations between KKT checks (default: 5).
    pub fn check_every(mut self, check_every: usize) -> Self {
        self.check_every = check_every;
        self
    }
}

/// Shared-factorization ADMM (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct AdmmSolver {
    settings: AdmmSettings,
}

impl AdmmSolver {
    /// A solver with these settings.
    pub fn new(settings: AdmmSettings) -> Self {
        Self { settings }
    }
}

impl QpSolver for AdmmSolver {
    fn name(&self) -> &str {
        "admm"
    }

    /// Ĥ, (Ĥ+ρI)⁻¹ and its factorization workspace.
    fn memory_estimate(&self, cols: usize) -> MemoryEstimate {
        MemoryEstimate { fixed: Bytes::f64s(3 * cols * cols), per_row: Bytes::f64s(12 * cols) }
    }

    fn solve(&self, problem: &LayerProblem, warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution> {
        let s = &self.settings;
        s.check()?;
        solve_batched(self.name(), problem, warm_start, s.iterative.parallelism, |x0| run_admm(problem, x0, s))
    }
}

#[allow(clippy::indexing_slicing)] // indices run over the validated problem dimensions and the live batch.
fn run_admm(problem: &LayerProblem, x0: Array2<f64>, s: &AdmmSettings) -> Result<Outcome> {
    let it = s.iterative;
    let par = it.parallelism;
    let h = problem.hessian().matrix();
    let n = problem.cols();
    let all: Vec<usize> = (0..problem.rows()).collect();
    let sqrt_d: Array1<f64> = h.diag().mapv(f64::sqrt);
    let inv_sqrt_d = sqrt_d.mapv(|v| 1.0 / v);
    let h_hat = Array2::from_shape_fn((n, n), |(i, j)| h[[i, j]] * inv_sqrt_d[i] * inv_sqrt_d[j]);
    let mut rho = s.rho;
    let mut q = spd_inverse(h_hat.view(), rho, par.faer())?;

    let mut outcome = Outcome::new(problem);
    let mut global = all.clone();
    let mut w = problem.weight().to_owned();
    let mut kept = kept_indicator(problem, &all);
    let mut scale = residual_scales(problem, &kept, par);
    let w_hat = &w * &sqrt_d;
    let mut b = times_hessian(w_hat.view(), h_hat.view(), par); // Ĥŵ per row
    let mut z = &x0 * &sqrt_d;
    let mut u = Array2::<f64>::zeros(z.dim());
    let mut iters = 0usize;
    let mut refactorizations = 0;
    loop {
        // KKT check on the feasible iterate z (in the original space).
        if iters % s.check_every == 0 || iters >= it.max_iterations {
            let z_orig = &z * &inv_sqrt_d;
            let res = row_inf_norms(&masked_gradient(&z_orig, &w, &kept, h, par)) / &scale;
            let mut keep = Vec::with_capacity(global.len());
            for (i, &g) in global.iter().enumerate() {
                if res[i] <= it.tolerance {
                    outcome.finish_row(g, &z_orig, i, iters, RowStatus::ReachedTolerance);
                } else if iters >= it.max_iterations {
                    outcome.finish_row(g, &z_orig, i, iters, RowStatus::MaxIterations);
                } else {
                    keep.push(i);
                }
            }
            if keep.is_empty() {
                break;
            }
            if keep.len() < global.len() {
                for a in [&mut w, &mut kept, &mut b, &mut z, &mut u] {
                    retain_rows(a, &keep);
                }
                retain_array(&mut scale, &keep);
                retain_entries(&mut global, &keep);
            }
        }
        iters += 1;
        let rhs = &b + &((&z - &u) * rho);
        let x = times_hessian(rhs.view(), q.view(), par);
        let z_prev = std::mem::replace(&mut z, (&x + &u) * &kept);
        u = &u + &x - &z;
        if z.iter().any(|v| !v.is_finite()) {
            return Err(OptimaError::Numerical(format!("ADMM iterate became non-finite at iteration {iters}")));
        }
        // Residual balancing (Boyd et al. §3.4.1), at most 20 refactorizations.
        if s.adaptive_rho && iters % 25 == 0 && refactorizations < 20 {
            let primal = (&x - &z).mapv(|v| v * v).sum().sqrt();
            let dual = rho * (&z - &z_prev).mapv(|v| v * v).sum().sqrt();
            let factor = if primal > 10.0 * dual {
                4.0
            } else if dual > 10.0 * primal {
                0.25
            } else {
                1.0
            };
            if factor != 1.0 {
                rho *= factor;
                u /= factor;
                q = spd_inverse(h_hat.view(), rho, par.faer())?;
                refactorizations += 1;
            }
        }
    }
    Ok(outcome)
}
