//! Batched PCG on the pruning multipliers: the OBS form of every row's QP.
//!
//! The optimum of `min ½(x−w)ᵀH(x−w)` subject to `x_P = 0` is `x = w − G E_P λ` with `G = H⁻¹`
//! and `λ` solving `G_PP λ = w_P` (the multipliers of the pruning constraints). CG on that system
//! with the shared Jacobi preconditioner `diag(G)_P` needs about as many iterations as primal PCG
//! with `(H⁻¹)_SS`, and each iteration is one GEMM `P · G` instead of two (docs/solvers.md).
//!
//! Every row's stop is decided on the primal relative KKT residual, recomputed in f64 from the
//! recovered weights (two f64 GEMMs on the candidate rows); a row that fails the check restarts
//! from its dual residual recomputed in f64. So both precisions meet the same tolerance, and
//! [`Precision::Mixed`] runs the iterations' GEMM in f32.

#![allow(clippy::indexing_slicing)] // Dense kernels: every index runs over the dimensions LayerProblem::new validated (m rows, n
// inputs) or over the live batch built from them.

use faer::{Mat, MatRef, Par};
use faer_ext::IntoFaer;
use ndarray::{Array2, ArrayView1, ArrayView2};
use rayon::prelude::*;

use super::QpSolver;
use super::batched::{IterativeSettings, Outcome, TINY, solve_batched};
use super::cg::{Apply, Batch, Operator, ProductScalar, RowState, compact, inverse_f64, lane_max, product};
use super::pcg::Precision;
use crate::backend::Parallelism;
use crate::error::{OptimaError, Result};
use crate::memory::{Bytes, MemoryEstimate};
use crate::problem::{LayerProblem, RowStatus, Solution};

/// Settings of [`DualPcgSolver`].
#[derive(Clone, Copy, Debug)]
pub struct DualPcgSettings {
    /// Tolerance, cap and threads.
    pub iterative: IterativeSettings,
    /// Precision of the product inside the iterations.
    pub precision: Precision,
}

impl Default for DualPcgSettings {
    fn default() -> Self {
        Self { iterative: IterativeSettings::new(super::DEFAULT_TOLERANCE, 1000), precision: Precision::Mixed }
    }
}

/// Batched PCG on the multipliers (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct DualPcgSolver {
    settings: DualPcgSettings,
}

impl DualPcgSolver {
    /// A solver with these settings.
    pub fn new(settings: DualPcgSettings) -> Self {
        Self { settings }
    }
}

impl QpSolver for DualPcgSolver {
    fn name(&self) -> &str {
        "dual-pcg"
    }

    /// `H⁻¹` in f64 and its Cholesky factor while it is built, f32 copies of `H` and `H⁻¹` (mixed
    /// precision); a dozen n-vectors per row.
    fn memory_estimate(&self, cols: usize) -> MemoryEstimate {
        dual_pcg_memory(cols, self.settings.precision)
    }

    /// A warm start sets the starting multipliers `λ = −(H(x₀ − w))_P`; without one they start at 0.
    fn solve(&self, problem: &LayerProblem, warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution> {
        let s = self.settings.iterative;
        s.check()?;
        let rows: Vec<usize> = (0..problem.rows()).collect();
        let warm = warm_start.is_some();
        solve_batched(self.name(), problem, warm_start, s.parallelism, |x0| {
            let inverse = HessianInverse::new(problem, s.parallelism)?;
            let start = if warm { Start::Warm(&x0) } else { Start::Zero };
            match self.settings.precision {
                Precision::Double => DualOperators::<f64>::new(problem, &inverse).run(&rows, start, &s),
                Precision::Mixed => DualOperators::<f32>::new(problem, &inverse).run(&rows, start, &s),
            }
        })
    }
}

/// Working memory of [`DualPcgSolver`] over `cols` inputs.
fn dual_pcg_memory(cols: usize, precision: Precision) -> MemoryEstimate {
    let square = cols * cols;
    let lowered = if precision == Precision::Mixed { Bytes::f32s(2 * square) } else { Bytes(0) };
    MemoryEstimate { fixed: Bytes::f64s(2 * square) + lowered, per_row: Bytes::f64s(12 * cols) }
}

/// `G = H⁻¹` in f64: the operator the weights are recovered with, and (rounded) iterated with.
pub(crate) struct HessianInverse {
    g: Mat<f64>,
}

impl HessianInverse {
    /// Cholesky (with bounded regularization retries) and the inverse of the factor: `n³` flops.
    pub(crate) fn new(problem: &LayerProblem, par: Parallelism) -> Result<Self> {
        Ok(Self { g: inverse_f64(problem.hessian().matrix(), par.faer())? })
    }
}

/// Where the multipliers start.
#[derive(Clone, Copy)]
pub(crate) enum Start<'x> {
    /// `λ = 0`: the weights start mask-only, and the first residual is `w_P` exactly.
    Zero,
    /// `λ = −(H(x₀ − w))_P` from these starting weights (every row, masked): the optimum's
    /// multipliers when `x₀` is the optimum.
    Warm(&'x Array2<f64>),
}

/// The operators of one problem in the iterations' precision `T`: built once, then run on any
/// set of rows.
pub(crate) struct DualOperators<'a, T: 'static> {
    problem: &'a LayerProblem,
    g64: MatRef<'a, f64>,
    g_low: Operator<'a, T>,
    h_low: Operator<'a, T>,
    /// Jacobi: `1 / G_jj`.
    precond: Apply<T>,
}

/// A check of some rows: their recovered weights and dual residuals (f64, row-major), and their
/// primal residuals `‖(H(x − w))_S‖∞`.
struct Checked {
    x: Vec<f64>,
    dual: Vec<f64>,
    primal: Vec<f64>,
}

impl<'a, T: ProductScalar> DualOperators<'a, T> {
    /// `G` and `H` in `T`, and the Jacobi preconditioner.
    pub(crate) fn new(problem: &'a LayerProblem, inverse: &'a HessianInverse) -> Self {
        let g64 = inverse.g.as_ref();
        let precond = Apply::Diagonal((0..g64.nrows()).map(|j| 1.0 / g64[(j, j)]).collect());
        Self { problem, g64, g_low: T::lowered(g64), h_low: T::operator(problem.hessian().matrix()), precond }
    }

    /// Runs PCG on the multipliers of `rows` (global indices) up to the cap of `s`; the outcome
    /// holds those rows.
    pub(crate) fn run(&self, rows: &[usize], start: Start<'_>, s: &IterativeSettings) -> Result<Outcome> {
        let par = s.parallelism.faer();
        let n = self.problem.cols();
        let mut outcome = Outcome::new(self.problem);
        let (mut batch, mut gains) = self.start(rows, start, par);
        // Rows with nothing pruned (or an exact warm start) are candidates at once.
        let mut candidates = self.candidates(&batch, &mut gains, s, par);
        loop {
            if !candidates.is_empty() {
                let checked = self.check(&batch, &candidates, par);
                let mut finished = vec![false; batch.len()];
                let mut restarted = Vec::new();
                for (c, &i) in candidates.iter().enumerate() {
                    let state = batch.states[i];
                    let relative = checked.primal[c] / state.scale;
                    if !relative.is_finite() {
                        return Err(OptimaError::Numerical(format!(
                            "dual PCG residual of row {} became non-finite after {} iterations",
                            state.global, state.iterations
                        )));
                    }
                    let converged = relative <= s.tolerance;
                    if converged || state.iterations >= s.max_iterations {
                        let x = ArrayView1::from(&checked.x[c * n..(c + 1) * n]);
                        let status = if converged { RowStatus::ReachedTolerance } else { RowStatus::MaxIterations };
                        outcome.finish(state.global, x, state.iterations, status);
                        finished[i] = true;
                    } else {
                        let dual = &checked.dual[c * n..(c + 1) * n];
                        let norm = dual.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                        for (r, v) in batch.r[i * n..(i + 1) * n].iter_mut().zip(dual) {
                            *r = T::narrow(*v);
                        }
                        batch.states[i].residual = norm;
                        if norm > 0.0 {
                            gains[i] = gains[i].max(checked.primal[c] / norm);
                        }
                        restarted.push(i);
                    }
                }
                if !restarted.is_empty() {
                    batch.directions(Some(&restarted), &self.precond, true, par);
                }
                let keep: Vec<usize> = (0..batch.len()).filter(|&i| !finished[i]).collect();
                if keep.len() < batch.len() {
                    batch.retain(&keep);
                    compact(&mut gains, 1, &keep);
                }
            }
            if batch.len() == 0 {
                break;
            }
            batch.iterate(self.g_low.view(), &self.precond, par);
            if let Some(state) = batch.states.iter().find(|state| state.broken) {
                return Err(OptimaError::Numerical(format!(
                    "dual PCG step of row {} became non-finite at iteration {}",
                    state.global, state.iterations
                )));
            }
            candidates = self.candidates(&batch, &mut gains, s, par);
        }
        Ok(outcome)
    }

    /// The local rows to check in f64: those that stalled or reached the cap, and those whose
    /// primal residual, estimated from the recurrence as `‖(H E_P r)_S‖∞` (one GEMM in `T` on the
    /// rows whose gain says they may be done), meets the tolerance. The estimate also corrects
    /// those rows' gains (`gains[i]` estimates `‖(H E_P r)_S‖∞ / ‖r‖∞` of local row `i`): the
    /// primal residual falls more slowly than the dual one.
    fn candidates(&self, batch: &Batch<T>, gains: &mut [f64], s: &IterativeSettings, par: Par) -> Vec<usize> {
        let n = batch.n;
        let forced = |state: &RowState| state.stalled || state.iterations >= s.max_iterations;
        let due: Vec<usize> = (0..batch.len())
            .filter(|&i| {
                let state = &batch.states[i];
                !forced(state) && gains[i] * state.residual <= s.tolerance * state.scale
            })
            .collect();
        let mut estimated = vec![false; batch.len()];
        if !due.is_empty() {
            let mut input = Vec::with_capacity(due.len() * n);
            for &i in &due {
                input.extend_from_slice(&batch.r[i * n..(i + 1) * n]);
            }
            let mut out = vec![T::narrow(0.0); due.len() * n];
            product(&input, due.len(), self.h_low.view(), &mut out, par);
            for (c, &i) in due.iter().enumerate() {
                let pruned = &batch.active[i * n..(i + 1) * n];
                let primal = lane_max(
                    out[c * n..(c + 1) * n].iter().zip(pruned).map(|(v, k)| (v.widen() * (1.0 - k.widen())).abs()),
                );
                let state = &batch.states[i];
                if state.residual > 0.0 {
                    gains[i] = primal / state.residual;
                }
                estimated[i] = primal <= s.tolerance * state.scale;
            }
        }
        (0..batch.len()).filter(|&i| estimated[i] || forced(&batch.states[i])).collect()
    }

    /// The batch at its starting multipliers (iterates `λ`, entries the pruned inputs) and the
    /// rows' gains: scales from one GEMM in `T`, first residuals and directions. The first gain
    /// assumes the mask-only weights' relative residual is 1.
    fn start(&self, rows: &[usize], start: Start<'_>, par: Par) -> (Batch<T>, Vec<f64>) {
        let (problem, n) = (self.problem, self.problem.cols());
        let (weight, mask) = (problem.weight(), problem.mask());
        let live = rows.len();
        let zero = T::narrow(0.0);
        let mut pruned = vec![zero; live * n];
        pruned.par_chunks_mut(n).zip(rows.par_iter()).for_each(|(pruned, &i)| {
            for (j, v) in pruned.iter_mut().enumerate() {
                *v = T::narrow(if mask.is_pruned(i, j) { 1.0 } else { 0.0 });
            }
        });
        let mut input = vec![zero; live * n];
        input.par_chunks_mut(n).zip(rows.par_iter()).for_each(|(input, &i)| {
            for (a, w) in input.iter_mut().zip(weight.row(i)) {
                *a = T::narrow(*w);
            }
        });
        let mut hw = vec![zero; live * n];
        product(&input, live, self.h_low.view(), &mut hw, par);
        let h = problem.hessian().matrix();
        let (states, gains): (Vec<RowState>, Vec<f64>) = rows
            .par_iter()
            .zip(hw.par_chunks(n))
            .zip(pruned.par_chunks(n))
            .map(|((&i, hw), pruned)| {
                let w = weight.row(i);
                // The largest kept entry of Hw in T, recomputed in f64 there: a lower bound of
                // ‖(Hw)_S‖∞ within rounding, so the relative residual is never understated.
                let (mut best, mut at) = (-1.0f64, None);
                let mut pruned_norm = 0.0f64;
                for j in 0..n {
                    if pruned[j].widen() == 0.0 {
                        let v = hw[j].widen().abs();
                        if v > best {
                            (best, at) = (v, Some(j));
                        }
                    } else {
                        pruned_norm = pruned_norm.max(w[j].abs());
                    }
                }
                let scale = at.map_or(0.0, |j| h.row(j).dot(&w).abs()).max(TINY);
                let state = RowState { scale, residual: pruned_norm, ..RowState::new(i) };
                (state, if pruned_norm > 0.0 { scale / pruned_norm } else { 0.0 })
            })
            .unzip();
        let mut batch = Batch::new(n, states, vec![0.0; live * n], pruned);
        // λ = 0: the first residual is w_P, exactly.
        batch.r.par_chunks_mut(n).zip(input.par_chunks(n)).zip(batch.active.par_chunks(n)).for_each(
            |((r, w), pruned)| {
                for ((r, w), k) in r.iter_mut().zip(w).zip(pruned) {
                    *r = T::narrow(w.widen() * k.widen());
                }
            },
        );
        if let Start::Warm(x0) = start {
            self.warm(&mut batch, x0, par);
        }
        batch.directions(None, &self.precond, true, par);
        (batch, gains)
    }

    /// Multipliers `λ = −(H(x₀ − w))_P` and their dual residuals, in f64.
    fn warm(&self, batch: &mut Batch<T>, x0: &Array2<f64>, par: Par) {
        let n = batch.n;
        let weight = self.problem.weight();
        let all: Vec<usize> = (0..batch.len()).collect();
        let hd = batch.product_f64(&all, self.problem.hessian().matrix().into_faer(), par, |state, _, d| {
            for ((d, x), w) in d.iter_mut().zip(x0.row(state.global)).zip(weight.row(state.global)) {
                *d = x - w;
            }
        });
        batch.x.par_chunks_mut(n).zip(hd.par_chunks(n)).zip(batch.active.par_chunks(n)).for_each(
            |((lambda, hd), pruned)| {
                for ((l, v), k) in lambda.iter_mut().zip(hd).zip(pruned) {
                    *l = -v * k.widen();
                }
            },
        );
        let (_, dual) = self.recover(batch, &all, par);
        for ((r, v), state) in batch.r.chunks_mut(n).zip(dual.chunks(n)).zip(batch.states.iter_mut()) {
            for (r, v) in r.iter_mut().zip(v) {
                *r = T::narrow(*v);
            }
            state.residual = v.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        }
    }

    /// Weights `x = w − G E_P λ` with `x_P = 0`, and dual residuals `w_P − (G E_P λ)_P`, of the
    /// local rows `rows`, in f64.
    fn recover(&self, batch: &Batch<T>, rows: &[usize], par: Par) -> (Vec<f64>, Vec<f64>) {
        let n = batch.n;
        let weight = self.problem.weight();
        let mut u = batch.product_f64(rows, self.g64, par, |_, i, dst| {
            dst.copy_from_slice(&batch.x[i * n..(i + 1) * n]);
        });
        let mut dual = vec![0.0; rows.len() * n];
        u.par_chunks_mut(n).zip(dual.par_chunks_mut(n)).zip(rows.par_iter()).for_each(|((u, dual), &i)| {
            let pruned = &batch.active[i * n..(i + 1) * n];
            for (((u, d), w), k) in
                u.iter_mut().zip(dual.iter_mut()).zip(weight.row(batch.states[i].global)).zip(pruned)
            {
                let kept = k.widen() == 0.0;
                *d = if kept { 0.0 } else { w - *u };
                *u = if kept { w - *u } else { 0.0 };
            }
        });
        (u, dual)
    }

    /// Recovered weights, dual residuals and primal residuals of the local rows `rows`: two f64
    /// GEMMs.
    fn check(&self, batch: &Batch<T>, rows: &[usize], par: Par) -> Checked {
        let n = batch.n;
        let weight = self.problem.weight();
        let (x, dual) = self.recover(batch, rows, par);
        let mut d = vec![0.0; rows.len() * n];
        d.par_chunks_mut(n).zip(x.par_chunks(n)).zip(rows.par_iter()).for_each(|((d, x), &i)| {
            for ((d, x), w) in d.iter_mut().zip(x).zip(weight.row(batch.states[i].global)) {
                *d = x - w;
            }
        });
        let mut hd = vec![0.0; rows.len() * n];
        product(&d, rows.len(), self.problem.hessian().matrix().into_faer(), &mut hd, par);
        let primal = hd
            .par_chunks(n)
            .zip(rows.par_iter())
            .map(|(hd, &i)| {
                let pruned = &batch.active[i * n..(i + 1) * n];
                lane_max(hd.iter().zip(pruned).map(|(v, k)| if k.widen() == 0.0 { v.abs() } else { 0.0 }))
            })
            .collect();
        Checked { x, dual, primal }
    }
}
