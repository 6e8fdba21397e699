//! Shared machinery of the batched iterative solvers: all rows of a layer iterate together, one
//! GEMM against the shared Hessian per iteration, and converged rows leave the batch.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::backend::{Parallelism, cpu::times_hessian};
use crate::error::{OptimaError, Result, check_finite};
use crate::problem::{LayerProblem, RowStatus};

/// Default tolerance on the relative KKT residual.
pub const DEFAULT_TOLERANCE: f64 = 1e-6;
/// Smallest denominator of the relative KKT residual (as in the report).
pub(crate) const TINY: f64 = 1e-300;

/// Settings every iterative solver shares.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct IterativeSettings {
    /// Stop a row when its relative KKT residual `‖(H(ŵ−w))_S‖∞ / ‖(H w)_S‖∞` is at most this.
    pub tolerance: f64,
    /// Iteration cap per row.
    pub max_iterations: usize,
    /// Threads.
    pub parallelism: Parallelism,
}

impl IterativeSettings {
    /// Sets the relative KKT tolerance.
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Sets the iteration cap per row.
    pub fn max_iterations(mut self, max_iterations: usize) -> Self {
        self.max_iterations = max_iterations;
        self
    }

    /// Sets the threads.
    pub fn parallelism(mut self, parallelism: Parallelism) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Tolerance `tol` and cap `max_iterations`, all cores.
    pub fn new(tolerance: f64, max_iterations: usize) -> Self {
        Self { tolerance, max_iterations, parallelism: Parallelism::AllCores }
    }

    pub(crate) fn check(&self) -> Result<()> {
        if !(self.tolerance.is_finite() && self.tolerance > 0.0) {
            return Err(OptimaError::InvalidSetting(format!("tolerance must be > 0, got {}", self.tolerance)));
        }
        if self.max_iterations == 0 {
            return Err(OptimaError::InvalidSetting("max iterations must be ≥ 1".into()));
        }
        Ok(())
    }
}

/// 1.0 where the row keeps input j, 0.0 where it is pruned, for the given global rows.
#[allow(clippy::indexing_slicing)] // row indices come from 0..m and from the live batch.
pub(crate) fn kept_indicator(problem: &LayerProblem, rows: &[usize]) -> Array2<f64> {
    let mask = problem.mask();
    Array2::from_shape_fn((rows.len(), problem.cols()), |(r, j)| if mask.is_pruned(rows[r], j) { 0.0 } else { 1.0 })
}

/// The starting point: `warm` projected onto the mask, or the mask-only weights.
pub(crate) fn starting_point(problem: &LayerProblem, warm: Option<ArrayView2<'_, f64>>) -> Result<Array2<f64>> {
    let mut x = match warm {
        Some(w) => {
            if w.dim() != problem.weight().dim() {
                return Err(OptimaError::shape(
                    "warm start vs weight",
                    format!("{}×{}", problem.rows(), problem.cols()),
                    format!("{}×{}", w.nrows(), w.ncols()),
                ));
            }
            check_finite("warm start", w)?;
            w.to_owned()
        }
        None => problem.weight().to_owned(),
    };
    super::enforce_mask(&mut x, problem);
    Ok(x)
}

/// Per-row `‖(H w)_S‖∞`, the scale of the relative KKT residual.
pub(crate) fn residual_scales(problem: &LayerProblem, kept: &Array2<f64>, par: Parallelism) -> Array1<f64> {
    let hw = times_hessian(problem.weight(), problem.hessian().matrix(), par);
    row_inf_norms(&(&hw * kept)).mapv(|v| v.max(TINY))
}

/// `‖a_i‖∞` per row.
pub(crate) fn row_inf_norms(a: &Array2<f64>) -> Array1<f64> {
    a.map_axis(Axis(1), |r| r.iter().fold(0.0f64, |m, v| m.max(v.abs())))
}

/// True residual `(H(x − w))_S` for the given rows (a GEMM on those rows only).
pub(crate) fn masked_gradient(
    x: &Array2<f64>,
    w: &Array2<f64>,
    kept: &Array2<f64>,
    h: ArrayView2<'_, f64>,
    par: Parallelism,
) -> Array2<f64> {
    let d = x - w;
    times_hessian(d.view(), h, par) * kept
}

/// Rows that converge leave; the record of where each global row ended.
pub(crate) struct Outcome {
    pub weight: Array2<f64>,
    pub iterations: Vec<usize>,
    pub status: Vec<RowStatus>,
}

impl Outcome {
    pub(crate) fn new(problem: &LayerProblem) -> Self {
        Self {
            weight: Array2::zeros((problem.rows(), problem.cols())),
            iterations: vec![0; problem.rows()],
            status: vec![RowStatus::MaxIterations; problem.rows()],
        }
    }

    /// Records local row `local` of `x` as global row `global`.
    pub(crate) fn finish_row(
        &mut self,
        global: usize,
        x: &Array2<f64>,
        local: usize,
        iterations: usize,
        status: RowStatus,
    ) {
        self.finish(global, x.row(local), iterations, status);
    }

    /// Records `x` as global row `global`.
    #[allow(clippy::indexing_slicing)] // global indices come from 0..m.
    pub(crate) fn finish(
        &mut self,
        global: usize,
        x: ndarray::ArrayView1<'_, f64>,
        iterations: usize,
        status: RowStatus,
    ) {
        self.weight.row_mut(global).assign(&x);
        self.iterations[global] = iterations;
        self.status[global] = status;
    }
}

/// Keeps only rows `keep` (local indices) of every matrix and vector in the batch.
pub(crate) fn retain_rows(a: &mut Array2<f64>, keep: &[usize]) {
    *a = a.select(Axis(0), keep);
}

/// Keeps only entries `keep` of a per-row vector.
#[allow(clippy::indexing_slicing)] // row indices come from 0..m and from the live batch.
pub(crate) fn retain_entries<T: Clone>(v: &mut Vec<T>, keep: &[usize]) {
    *v = keep.iter().map(|&i| v[i].clone()).collect();
}

/// Keeps only entries `keep` of a per-row array.
pub(crate) fn retain_array(v: &mut Array1<f64>, keep: &[usize]) {
    *v = v.select(Axis(0), keep);
}

/// The `solve` every batched solver shares: the starting point, `run` on the thread pool, timing,
/// and the report.
pub(crate) fn solve_batched(
    name: &str,
    problem: &LayerProblem,
    warm_start: Option<ArrayView2<'_, f64>>,
    par: Parallelism,
    run: impl FnOnce(Array2<f64>) -> Result<Outcome> + Send,
) -> Result<crate::problem::Solution> {
    let start = std::time::Instant::now();
    let x0 = starting_point(problem, warm_start)?;
    let mut outcome = par.install(|| run(x0))??;
    // A row with nothing pruned is its own optimum; keep it bit-exact rather than as an iterate
    // that went through rescaling.
    for i in (0..problem.rows()).filter(|&i| problem.mask().pruned_in_row(i) == 0) {
        outcome.weight.row_mut(i).assign(&problem.weight().row(i));
    }
    let seconds = start.elapsed().as_secs_f64();
    let report = par.install(|| {
        super::evaluate(name, problem, outcome.weight.view(), &outcome.iterations, &outcome.status, seconds, par)
    })?;
    Ok(crate::problem::Solution { weight: outcome.weight, report })
}
