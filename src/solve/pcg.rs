//! Masked, batched preconditioned conjugate gradient on `H_SS` for all rows at once.
//!
//! Every row solves `H_SS δ_S = −(H d0)_S` by CG; all active rows advance together with one GEMM
//! `P · H` per iteration. A row stops when its residual recurrence reaches the tolerance and a
//! freshly computed true residual confirms it (otherwise it restarts from the true residual).

#![allow(clippy::indexing_slicing)] // Dense kernels: every index runs over the dimensions LayerProblem::new validated (m rows, n
// inputs) or over the live batch built from them.

use ndarray::{Array1, Array2, ArrayView2, Zip};

use super::QpSolver;
use super::batched::{
    IterativeSettings, Outcome, kept_indicator, masked_gradient, residual_scales, retain_array, retain_entries,
    retain_rows, row_dots, row_inf_norms, solve_batched,
};
use crate::backend::cpu::{spd_inverse, times_hessian};
use crate::error::{OptimaError, Result};
use crate::memory::{Bytes, MemoryEstimate};
use crate::problem::{LayerProblem, RowStatus, Solution};

/// A preconditioner shared by every row (restricted to each row's kept set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Preconditioner {
    /// None: plain CG.
    Identity,
    /// `diag(H)_S⁻¹` (default): undoes the outlier channels' scale.
    #[default]
    Jacobi,
    /// `(H⁻¹)_SS`: one extra GEMM per iteration and `n³` once for `H⁻¹`.
    InverseHessian,
}

impl std::str::FromStr for Preconditioner {
    type Err = OptimaError;

    /// `identity`, `jacobi` or `inverse`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "identity" => Ok(Self::Identity),
            "jacobi" => Ok(Self::Jacobi),
            "inverse" => Ok(Self::InverseHessian),
            other => Err(OptimaError::InvalidSetting(format!(
                "unknown preconditioner {other:?}; choose jacobi, identity or inverse"
            ))),
        }
    }
}

/// Settings of [`PcgSolver`].
#[derive(Clone, Copy, Debug)]
pub struct PcgSettings {
    /// Tolerance, cap and threads.
    pub iterative: IterativeSettings,
    /// The shared preconditioner.
    pub preconditioner: Preconditioner,
}

impl Default for PcgSettings {
    fn default() -> Self {
        Self {
            iterative: IterativeSettings::new(super::DEFAULT_TOLERANCE, 1000),
            preconditioner: Preconditioner::Jacobi,
        }
    }
}

/// Batched PCG (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct PcgSolver {
    settings: PcgSettings,
}

impl PcgSolver {
    /// A solver with these settings.
    pub fn new(settings: PcgSettings) -> Self {
        Self { settings }
    }
}

impl QpSolver for PcgSolver {
    fn name(&self) -> &str {
        "pcg"
    }

    /// H⁻¹ for the inverse preconditioner; a dozen n-vectors per row.
    fn memory_estimate(&self, cols: usize) -> MemoryEstimate {
        MemoryEstimate {
            fixed: if self.settings.preconditioner == Preconditioner::InverseHessian {
                Bytes::f64s(cols * cols)
            } else {
                Bytes(0)
            },
            per_row: Bytes::f64s(12 * cols),
        }
    }

    fn solve(&self, problem: &LayerProblem, warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution> {
        let s = self.settings.iterative;
        s.check()?;
        let rows: Vec<usize> = (0..problem.rows()).collect();
        solve_batched(self.name(), problem, warm_start, s.parallelism, |x0| run_pcg(problem, &rows, x0, &self.settings))
    }
}

/// The preconditioner applied to a batch of residuals (rows), masked to each row's kept set.
enum Apply {
    Identity,
    Diagonal(Array1<f64>),
    Dense(Array2<f64>),
}

impl Apply {
    fn build(kind: Preconditioner, h: ArrayView2<'_, f64>, par: crate::Parallelism) -> Result<Self> {
        Ok(match kind {
            Preconditioner::Identity => Self::Identity,
            Preconditioner::Jacobi => Self::Diagonal(h.diag().mapv(|d| 1.0 / d)),
            Preconditioner::InverseHessian => Self::Dense(spd_inverse(h, 0.0, par.faer())?),
        })
    }

    fn apply(&self, r: &Array2<f64>, kept: &Array2<f64>, par: crate::Parallelism) -> Array2<f64> {
        match self {
            Self::Identity => r.clone(),
            Self::Diagonal(d) => r * d,
            Self::Dense(g) => times_hessian(r.view(), g.view(), par) * kept,
        }
    }
}

/// Runs PCG on `rows` (global indices) from `x` (their starting weights, masked), up to the cap.
pub(crate) fn run_pcg(
    problem: &LayerProblem,
    rows: &[usize],
    x: Array2<f64>,
    settings: &PcgSettings,
) -> Result<Outcome> {
    let s = settings.iterative;
    let par = s.parallelism;
    let h = problem.hessian().matrix();
    let precond = Apply::build(settings.preconditioner, h, par)?;
    let mut outcome = Outcome::new(problem);
    let mut global: Vec<usize> = rows.to_vec();
    let mut w = problem.weight().select(ndarray::Axis(0), rows);
    let mut x = x.select(ndarray::Axis(0), rows);
    let mut kept = kept_indicator(problem, rows);
    let mut scale = residual_scales(problem, &kept_indicator(problem, &(0..problem.rows()).collect::<Vec<_>>()), par)
        .select(ndarray::Axis(0), rows);
    let mut r = -masked_gradient(&x, &w, &kept, h, par);
    let mut z = precond.apply(&r, &kept, par);
    let mut p = z.clone();
    let mut rz = row_dots(&r, &z);
    let mut iters: Vec<usize> = vec![0; rows.len()];

    let mut iteration = 0;
    while !global.is_empty() {
        // Rows whose recurrence says converged (or that hit the cap) get a true-residual check.
        let res = row_inf_norms(&r) / &scale;
        let candidates: Vec<usize> =
            (0..global.len()).filter(|&i| res[i] <= s.tolerance || iters[i] >= s.max_iterations).collect();
        if !candidates.is_empty() {
            let pick = |a: &Array2<f64>| a.select(ndarray::Axis(0), &candidates);
            let true_r = -masked_gradient(&pick(&x), &pick(&w), &pick(&kept), h, par);
            let true_res = row_inf_norms(&true_r);
            let mut done = vec![false; global.len()];
            for (c, &i) in candidates.iter().enumerate() {
                let converged = true_res[c] / scale[i] <= s.tolerance;
                if converged || iters[i] >= s.max_iterations {
                    let status = if converged { RowStatus::ReachedTolerance } else { RowStatus::MaxIterations };
                    outcome.finish_row(global[i], &x, i, iters[i], status);
                    done[i] = true;
                } else {
                    // Drifted recurrence: restart this row from its true residual.
                    r.row_mut(i).assign(&true_r.row(c));
                }
            }
            let restarted: Vec<usize> = candidates.iter().copied().filter(|&i| !done[i]).collect();
            if !restarted.is_empty() {
                let zr = precond.apply(&r, &kept, par);
                for &i in &restarted {
                    z.row_mut(i).assign(&zr.row(i));
                    p.row_mut(i).assign(&zr.row(i));
                    rz[i] = r.row(i).dot(&z.row(i));
                }
            }
            let keep: Vec<usize> = (0..global.len()).filter(|&i| !done[i]).collect();
            if keep.len() < global.len() {
                for a in [&mut w, &mut x, &mut kept, &mut r, &mut z, &mut p] {
                    retain_rows(a, &keep);
                }
                retain_array(&mut scale, &keep);
                retain_array(&mut rz, &keep);
                retain_entries(&mut global, &keep);
                retain_entries(&mut iters, &keep);
            }
            if global.is_empty() {
                break;
            }
        }
        iteration += 1;
        let q = times_hessian(p.view(), h, par) * &kept;
        let pq = row_dots(&p, &q);
        let alpha = Zip::from(&rz).and(&pq).map_collect(|&a, &b| if b > 0.0 { a / b } else { 0.0 });
        if alpha.iter().any(|a| !a.is_finite()) {
            return Err(OptimaError::Numerical(format!("PCG step became non-finite at iteration {iteration}")));
        }
        let alpha_col = alpha.view().insert_axis(ndarray::Axis(1));
        x.scaled_add(1.0, &(&p * &alpha_col));
        r.scaled_add(-1.0, &(&q * &alpha_col));
        z = precond.apply(&r, &kept, par);
        let rz_new = row_dots(&r, &z);
        let beta = Zip::from(&rz_new).and(&rz).map_collect(|&a, &b| if b > 0.0 { a / b } else { 0.0 });
        p = &z + &(&p * &beta.view().insert_axis(ndarray::Axis(1)));
        rz = rz_new;
        iters.iter_mut().for_each(|i| *i += 1);
    }
    Ok(outcome)
}
