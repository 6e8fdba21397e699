//! The published method's solver, reproduced as the baseline: restarted averaged PDHG (as MPAX's
//! raPDHG) on each row's QP
//!
//! ```text
//! minimize ½ xᵀHx + cᵀx  (c = −H w)   subject to   x_P = 0
//! ```
//!
//! batched over rows, after diagonal (Ruiz-like) scaling `Ĥ = D^{-1/2} H D^{-1/2}`:
//!
//! ```text
//! x⁺ = x − τ (Ĥx + ĉ − Aᵀy),   y⁺ = y − σ A(2x⁺ − x)      (A selects the pruned entries)
//! ```
//!
//! with `τ = η/ω`, `σ = ηω`, `η` from a power-iteration estimate of `‖Ĥ‖` so that
//! `τ‖Ĥ‖ + τσ ≤ 1`. Every 64 iterations each row compares its current and averaged iterates by
//! KKT error, restarts adaptively (sufficient 0.2, necessary 0.8, artificial 0.36 of the total),
//! updates its primal weight ω, and checks termination on the unscaled problem with MPAX's relative
//! criteria: `‖x_P‖ ≤ ε_abs`, `‖H(x−w) − Aᵀy‖ ≤ ε_abs + ε_rel·max(‖Hx‖, ‖c‖, ‖Aᵀy‖)`, and
//! `|xᵀH(x−w)| ≤ ε_abs + ε_rel(|primal| + |dual|)`. Defaults are the paper's: `ε = 1e-2`, at most
//! 100 000 iterations. The returned weights have pruned entries set to exactly 0.

#![allow(clippy::indexing_slicing)] // Dense kernels: every index runs over the dimensions LayerProblem::new validated (m rows, n
// inputs) or over the live batch built from them.

use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};

use super::QpSolver;
use super::batched::{
    IterativeSettings, Outcome, kept_indicator, retain_array, retain_entries, retain_rows, solve_batched,
};
use crate::backend::cpu::times_hessian;
use crate::error::{OptimaError, Result};
use crate::memory::{Bytes, MemoryEstimate};
use crate::problem::{LayerProblem, RowStatus, Solution};

/// Iterations between restart and termination checks.
const CHECK_EVERY: usize = 64;

/// Settings of [`PdhgSolver`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PdhgSettings {
    /// Threads and the iteration cap (its `tolerance` is unused: see `eps_abs`, `eps_rel`).
    pub iterative: IterativeSettings,
    /// Absolute termination tolerance (paper: 1e-2).
    pub eps_abs: f64,
    /// Relative termination tolerance (paper: 1e-2).
    pub eps_rel: f64,
}

impl Default for PdhgSettings {
    fn default() -> Self {
        Self { iterative: IterativeSettings::new(1e-2, 100_000), eps_abs: 1e-2, eps_rel: 1e-2 }
    }
}

impl PdhgSettings {
    pub(crate) fn check(&self) -> Result<()> {
        self.iterative.check()?;
        if !(self.eps_abs >= 0.0 && self.eps_rel >= 0.0 && (self.eps_abs + self.eps_rel) > 0.0) {
            return Err(OptimaError::InvalidSetting("PDHG tolerances must be ≥ 0, not both 0".into()));
        }
        Ok(())
    }

    /// Sets the cap and threads (default: 100,000 iterations, all cores).
    pub fn iterative(mut self, iterative: IterativeSettings) -> Self {
        self.iterative = iterative;
        self
    }

    /// Sets the absolute tolerance (default: 1e-2).
    pub fn eps_abs(mut self, eps_abs: f64) -> Self {
        self.eps_abs = eps_abs;
        self
    }

    /// Sets the relative tolerance (default: 1e-2).
    pub fn eps_rel(mut self, eps_rel: f64) -> Self {
        self.eps_rel = eps_rel;
        self
    }
}

/// Restarted averaged PDHG (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct PdhgSolver {
    settings: PdhgSettings,
}

impl PdhgSolver {
    /// A solver with these settings.
    pub fn new(settings: PdhgSettings) -> Self {
        Self { settings }
    }
}

impl QpSolver for PdhgSolver {
    fn name(&self) -> &str {
        "pdhg"
    }

    /// Step-size estimation; primal, dual and averaged iterates per row.
    fn memory_estimate(&self, cols: usize) -> MemoryEstimate {
        MemoryEstimate { fixed: Bytes::f64s(cols * cols), per_row: Bytes::f64s(16 * cols) }
    }

    fn solve(&self, problem: &LayerProblem, warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution> {
        let s = &self.settings;
        s.check()?;
        solve_batched(self.name(), problem, warm_start, s.iterative.parallelism, |x0| run_pdhg(problem, x0, s))
    }
}

fn power_norm(h: &Array2<f64>) -> f64 {
    let n = h.nrows();
    let mut v = Array1::from_shape_fn(n, |i| 1.0 + (i % 7) as f64 * 0.1);
    let mut norm = 0.0;
    for _ in 0..50 {
        let hv = h.dot(&v);
        norm = hv.dot(&hv).sqrt();
        if norm == 0.0 {
            return 1.0;
        }
        v = hv / norm;
    }
    norm * 1.01
}

fn row_norms(a: &Array2<f64>) -> Array1<f64> {
    a.map_axis(Axis(1), |r| r.dot(&r).sqrt())
}

fn step_sizes(norm: f64, omega: &Array1<f64>) -> (Array1<f64>, Array1<f64>) {
    let eta = omega.mapv(|w| 0.99 * (-norm / w + ((norm / w).powi(2) + 4.0).sqrt()) / 2.0);
    (&eta / omega, &eta * omega)
}

/// Per-row KKT error in the scaled space of iterate (x, y) with `hx = Ĥx`.
fn kkt_error(x: &Array2<f64>, y: &Array2<f64>, hx: &Array2<f64>, b: &Array2<f64>, pruned: &Array2<f64>) -> Array1<f64> {
    let primal = row_norms(&(x * pruned));
    let dual = row_norms(&(hx - b - y));
    let gap = Zip::from(x.rows()).and(hx.rows()).and(b.rows()).map_collect(|x, hx, b| x.dot(&(&hx - &b)).abs());
    Zip::from(&primal).and(&dual).and(&gap).map_collect(|p, d, g| (p * p + d * d + g * g).sqrt())
}

fn run_pdhg(problem: &LayerProblem, x0: Array2<f64>, s: &PdhgSettings) -> Result<Outcome> {
    let par = s.iterative.parallelism;
    let h = problem.hessian().matrix();
    let n = problem.cols();
    let all: Vec<usize> = (0..problem.rows()).collect();
    let sqrt_d: Array1<f64> = h.diag().mapv(f64::sqrt);
    let inv_sqrt_d = sqrt_d.mapv(|v| 1.0 / v);
    let h_hat = Array2::from_shape_fn((n, n), |(i, j)| h[[i, j]] * inv_sqrt_d[i] * inv_sqrt_d[j]);
    let norm = power_norm(&h_hat);

    let mut outcome = Outcome::new(problem);
    let mut global = all.clone();
    let w = problem.weight().to_owned();
    let w_hat = &w * &sqrt_d;
    let mut pruned = kept_indicator(problem, &all).mapv(|k| 1.0 - k);
    let mut b = times_hessian(w_hat.view(), h_hat.view(), par); // −ĉ = Ĥŵ
    let mut x = &x0 * &sqrt_d;
    let mut hx = times_hessian(x.view(), h_hat.view(), par);
    let mut y = Array2::<f64>::zeros(x.dim());
    let mut omega = Array1::<f64>::ones(global.len());
    let (mut tau, mut sigma) = step_sizes(norm, &omega);
    let (mut x_sum, mut y_sum) = (Array2::<f64>::zeros(x.dim()), Array2::<f64>::zeros(x.dim()));
    let mut since_restart = vec![0usize; global.len()];
    let mut last_restart_err = kkt_error(&x, &y, &hx, &b, &pruned);
    let mut prev_candidate_err = last_restart_err.clone();
    let (mut x_restart, mut y_restart) = (x.clone(), y.clone());
    let mut iters = 0usize;

    while !global.is_empty() {
        iters += 1;
        let col = |v: &Array1<f64>| v.clone().insert_axis(Axis(1));
        let grad = &hx - &b - &y;
        let x_new = &x - &(&grad * &col(&tau));
        let extrapolated = (&x_new * 2.0 - &x) * &pruned;
        y = &y - &(&extrapolated * &col(&sigma));
        x = x_new;
        hx = times_hessian(x.view(), h_hat.view(), par);
        x_sum += &x;
        y_sum += &y;
        since_restart.iter_mut().for_each(|k| *k += 1);
        if x.iter().any(|v| !v.is_finite()) {
            return Err(OptimaError::Numerical(format!("PDHG iterate became non-finite at iteration {iters}")));
        }
        if iters % CHECK_EVERY != 0 && iters < s.iterative.max_iterations {
            continue;
        }
        // Restart candidates: the average since the last restart, or the current iterate.
        let counts = Array1::from_iter(since_restart.iter().map(|&k| k.max(1) as f64));
        let x_avg = &x_sum / &col(&counts);
        let y_avg = &y_sum / &col(&counts);
        let hx_avg = times_hessian(x_avg.view(), h_hat.view(), par);
        let err_cur = kkt_error(&x, &y, &hx, &b, &pruned);
        let err_avg = kkt_error(&x_avg, &y_avg, &hx_avg, &b, &pruned);
        let mut done = vec![false; global.len()];
        for i in 0..global.len() {
            let use_avg = err_avg[i] < err_cur[i];
            let err = err_avg[i].min(err_cur[i]);
            let (cx, cy, chx) =
                if use_avg { (x_avg.row(i), y_avg.row(i), hx_avg.row(i)) } else { (x.row(i), y.row(i), hx.row(i)) };
            // Termination on the unscaled problem: x = x̂/√d, Hx = √d ∘ Ĥx̂, y = √d ∘ ŷ.
            let xo = &cx * &inv_sqrt_d;
            let hxo = &chx * &sqrt_d;
            let yo = &cy * &sqrt_d;
            let c = &b.row(i) * &sqrt_d; // −c = H w
            let primal_res = (&xo * &pruned.row(i)).mapv(|v| v * v).sum().sqrt();
            let dual_vec = &hxo - &c - &yo;
            let dual_res = dual_vec.dot(&dual_vec).sqrt();
            let norm2 = |v: &Array1<f64>| v.dot(v).sqrt();
            let dual_scale = norm2(&hxo).max(norm2(&c)).max(norm2(&yo));
            let pobj = 0.5 * xo.dot(&hxo) - c.dot(&xo);
            let dobj = -0.5 * xo.dot(&hxo);
            let gap = (pobj - dobj).abs();
            let converged = primal_res <= s.eps_abs
                && dual_res <= s.eps_abs + s.eps_rel * dual_scale
                && gap <= s.eps_abs + s.eps_rel * (pobj.abs() + dobj.abs());
            if converged || iters >= s.iterative.max_iterations {
                let mut xo = xo.insert_axis(Axis(0)).to_owned();
                xo *= &pruned.row(i).mapv(|p| 1.0 - p);
                let status = if converged { RowStatus::ReachedTolerance } else { RowStatus::MaxIterations };
                outcome.finish_row(global[i], &xo, 0, iters, status);
                done[i] = true;
                continue;
            }
            let restart = err <= 0.2 * last_restart_err[i]
                || (err <= 0.8 * last_restart_err[i] && err > prev_candidate_err[i])
                || since_restart[i] as f64 >= 0.36 * iters as f64;
            prev_candidate_err[i] = err;
            if restart {
                let dx = (&cx - &x_restart.row(i)).mapv(|v| v * v).sum().sqrt();
                let dy = (&cy - &y_restart.row(i)).mapv(|v| v * v).sum().sqrt();
                if dx > 1e-10 && dy > 1e-10 {
                    omega[i] = (0.5 * (dy / dx).ln() + 0.5 * omega[i].ln()).exp();
                }
                let (cx, cy, chx) = (cx.to_owned(), cy.to_owned(), chx.to_owned());
                x.row_mut(i).assign(&cx);
                y.row_mut(i).assign(&cy);
                hx.row_mut(i).assign(&chx);
                x_restart.row_mut(i).assign(&cx);
                y_restart.row_mut(i).assign(&cy);
                x_sum.row_mut(i).fill(0.0);
                y_sum.row_mut(i).fill(0.0);
                since_restart[i] = 0;
                last_restart_err[i] = err;
            }
        }
        let (t, sg) = step_sizes(norm, &omega);
        tau = t;
        sigma = sg;
        let keep: Vec<usize> = (0..global.len()).filter(|&i| !done[i]).collect();
        if keep.len() < global.len() {
            for a in
                [&mut x, &mut y, &mut hx, &mut b, &mut pruned, &mut x_sum, &mut y_sum, &mut x_restart, &mut y_restart]
            {
                retain_rows(a, &keep);
            }
            for v in [&mut omega, &mut tau, &mut sigma, &mut last_restart_err, &mut prev_candidate_err] {
                retain_array(v, &keep);
            }
            retain_entries(&mut since_restart, &keep);
            retain_entries(&mut global, &keep);
        }
    }
    Ok(outcome)
}
