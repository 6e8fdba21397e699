//! The certificate every solver's answer gets: per-row objective, mask-only objective, KKT
//! residual and feasibility, computed from the returned weights alone (docs/math.md, "The certificate").

use std::time::Instant;

use ndarray::{Array2, ArrayView2, Zip};

use crate::backend::{Parallelism, cpu::times_hessian};
use crate::problem::{LayerProblem, RowReport, RowStatus, SolveReport};

/// Smallest denominator of the relative KKT residual.
const TINY: f64 = 1e-300;

/// Measures `weight` against `problem` and assembles the report. `iterations` and `status` are
/// the solver's own per-row account; `seconds` its solve time.
#[allow(clippy::indexing_slicing)] // i < m and j < n by the loop bounds; every matrix here is m × n.
pub fn evaluate(
    solver: &str,
    problem: &LayerProblem,
    weight: ArrayView2<'_, f64>,
    iterations: &[usize],
    status: &[RowStatus],
    seconds: f64,
    par: Parallelism,
) -> SolveReport {
    let start = Instant::now();
    let (m, n) = (problem.rows(), problem.cols());
    let w = problem.weight();
    let h = problem.hessian().matrix();
    let mask = problem.mask();
    let delta = &weight - &w;
    let delta_mask_only = &problem.masked_weight() - &w;
    let h_w = times_hessian(w, h, par);
    let h_delta = times_hessian(delta.view(), h, par);
    // A mask-only answer (every report of a run without an update) needs no third product.
    let h_delta0 =
        if delta == delta_mask_only { h_delta.clone() } else { times_hessian(delta_mask_only.view(), h, par) };

    let row_dot = |a: &Array2<f64>, b: &Array2<f64>, i: usize| a.row(i).dot(&b.row(i));
    let mut rows = Vec::with_capacity(m);
    let mut energy = 0.0;
    for i in 0..m {
        let (mut grad, mut scale, mut pruned) = (0.0f64, 0.0f64, 0.0f64);
        for j in 0..n {
            if mask.is_pruned(i, j) {
                pruned = pruned.max(weight[[i, j]].abs());
            } else {
                grad = grad.max(h_delta[[i, j]].abs());
                scale = scale.max(h_w[[i, j]].abs());
            }
        }
        energy += w.row(i).dot(&h_w.row(i));
        rows.push(RowReport {
            objective: row_dot(&delta, &h_delta, i).max(0.0),
            objective_mask_only: row_dot(&delta_mask_only, &h_delta0, i).max(0.0),
            kkt_residual: grad / scale.max(TINY),
            max_abs_pruned: pruned,
            iterations: iterations.get(i).copied().unwrap_or(0),
            status: status.get(i).copied().unwrap_or(RowStatus::NumericalError),
        });
    }
    let mut report = SolveReport::from_rows(solver, n, rows, energy, seconds, 0.0);
    report.evaluation_seconds = start.elapsed().as_secs_f64();
    report
}

/// Sets every pruned entry of `weight` to exactly 0.
pub fn enforce_mask(weight: &mut Array2<f64>, problem: &LayerProblem) {
    let mask = problem.mask();
    Zip::indexed(weight).for_each(|(i, j), v| {
        if mask.is_pruned(i, j) {
            *v = 0.0;
        }
    });
}
