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
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
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

impl DualPcgSettings {
    /// Sets the tolerance, cap and threads (default: 1e-6, 1000 iterations, all cores).
    pub fn iterative(mut self, iterative: IterativeSettings) -> Self {
        self.iterative = iterative;
        self
    }

    /// Sets the products' precision (default: mixed).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
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
            let mut outcome = Outcome::new(problem);
            match self.settings.precision {
                Precision::Double => DualOperators::<f64>::new(problem, &inverse).run(&rows, start, &s, &mut outcome),
                Precision::Mixed => DualOperators::<f32>::new(problem, &inverse).run(&rows, start, &s, &mut outcome),
            }?
            .or_failure()?;
            Ok(outcome)
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

    /// As [`HessianInverse::new`], with `None` when H cannot be factored even with the bounded
    /// regularization (the per-row solvers may still manage: their blocks are smaller).
    pub(crate) fn try_new(problem: &LayerProblem, par: Parallelism) -> Result<Option<Self>> {
        match Self::new(problem, par) {
            Ok(inverse) => Ok(Some(inverse)),
            Err(OptimaError::Numerical(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// How a batched run on the multipliers ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum RunEnd {
    /// Every row finished: at the tolerance, or at its cap (its status says which).
    Finished,
    /// A row's step became non-finite: the products overflowed their precision (an H beyond
    /// f32's range) or the recurrence broke down. The rows are not all recorded.
    BrokeDown {
        /// The row (global index).
        row: usize,
        /// Its iteration.
        iteration: usize,
    },
}

impl RunEnd {
    /// `BrokeDown` as the numerical failure it is for a caller with no fallback.
    pub(crate) fn or_failure(self) -> Result<()> {
        match self {
            Self::Finished => Ok(()),
            Self::BrokeDown { row, iteration } => Err(OptimaError::Numerical(format!(
                "dual PCG step of row {row} became non-finite at iteration {iteration}"
            ))),
        }
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
    /// `‖H‖∞` (largest absolute row sum).
    h_norm: f64,
    /// Bound of the primal residual's error per unit of `‖λ‖∞` from the inverse and the f64
    /// product with it (see [`DualOperators::screen`]).
    inverse_margin: f64,
}

/// What screening found for one row.
struct Screened {
    /// `‖(H E_P r_d)_S‖∞` from the f64 dual residual `r_d`, in the iterations' precision.
    primal: f64,
    /// Bound of how far the true primal residual can be from `primal`.
    margin: f64,
}

/// The decision on one row: its primal residual and whether it meets the tolerance.
struct Verdict {
    primal: f64,
    converged: bool,
}

/// Random probes of `‖HG − I‖` per layer.
const INVERSE_PROBES: usize = 4;

/// Buffers one run reuses from check to check: checks come in waves of hundreds of rows, and
/// fresh buffers would fault in fresh pages every time.
struct Scratch<T> {
    /// Input of an f64 product.
    input: Vec<f64>,
    /// `G E_P λ` of the rows last checked.
    multiplied: Vec<f64>,
    /// `H(x − w)` of the rows last checked.
    gradient: Vec<f64>,
    /// Input and output of the estimates' product in `T`.
    low_input: Vec<T>,
    low_output: Vec<T>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Self {
            input: Vec::new(),
            multiplied: Vec::new(),
            gradient: Vec::new(),
            low_input: Vec::new(),
            low_output: Vec::new(),
        }
    }
}

impl<'a, T: ProductScalar> DualOperators<'a, T> {
    /// `G` and `H` in `T`, and the Jacobi preconditioner.
    pub(crate) fn new(problem: &'a LayerProblem, inverse: &'a HessianInverse) -> Self {
        let g64 = inverse.g.as_ref();
        let precond = Apply::Diagonal((0..g64.nrows()).map(|j| 1.0 / g64[(j, j)]).collect());
        let h = problem.hessian().matrix();
        let n = h.nrows();
        let h_norm = h.rows().into_iter().map(|row| row.iter().map(|v| v.abs()).sum::<f64>()).fold(0.0, f64::max);
        let g_norm = (0..n).map(|j| g64.col(j).iter().map(|v| v.abs()).sum::<f64>()).fold(0.0, f64::max);
        // ‖(HG − I) E_P λ‖∞ ≤ ‖HG − I‖∞ ‖λ‖∞ ≤ n · rms(HG − I) ‖λ‖∞, the rms singular value
        // estimated from random probes; plus the rounding of the f64 product G E_P λ, amplified by H.
        let roundoff = (n as f64 + 2.0) * f64::ROUNDOFF;
        let inverse_margin = n as f64 * inverse_error(h.into_faer(), g64) + roundoff * h_norm * g_norm;
        Self {
            problem,
            g64,
            g_low: T::lowered(g64),
            h_low: T::operator(h),
            precond,
            h_norm,
            inverse_margin: if inverse_margin.is_finite() { inverse_margin } else { f64::INFINITY },
        }
    }

    /// Runs PCG on the multipliers of `rows` (global indices) up to the cap of `s`, and records
    /// those rows in `outcome`; a breakdown is an outcome ([`RunEnd::BrokeDown`]), not an error.
    pub(crate) fn run(
        &self,
        rows: &[usize],
        start: Start<'_>,
        s: &IterativeSettings,
        outcome: &mut Outcome,
    ) -> Result<RunEnd> {
        let par = s.parallelism.faer();
        let n = self.problem.cols();
        let mut scratch = Scratch::default();
        let (mut batch, mut gains) = self.start(rows, start, &mut scratch, par);
        let mut x = vec![0.0; n];
        // Rows with nothing pruned (or an exact warm start) are due at once.
        loop {
            let due = self.due(&batch, &gains, s);
            let mut finished = vec![false; batch.len()];
            let mut restarted = Vec::new();
            if !due.is_empty() {
                let screened = self.screen(&batch, &due, &mut scratch, par);
                let mut unsure = Vec::new();
                for ((&i, screened), u) in due.iter().zip(screened).zip(scratch.multiplied.chunks(n)) {
                    let bound = s.tolerance * batch.states[i].scale;
                    // A NaN margin is not certain either.
                    let certain = screened.margin <= 0.5 * bound;
                    if !certain {
                        unsure.push(i);
                        continue;
                    }
                    let converged = screened.primal + screened.margin <= bound;
                    let verdict = Verdict { primal: screened.primal, converged };
                    finished[i] = self.conclude(&mut batch, &mut gains, i, u, verdict, s, outcome, &mut x)?;
                    if batch.states[i].stalled {
                        restarted.push(i);
                    }
                }
                // Where the margin is too wide (an ill-conditioned H), the residual of the
                // recovered weights themselves, in f64.
                if !unsure.is_empty() {
                    let primal = self.check(&batch, &unsure, &mut scratch, par);
                    for ((&i, primal), u) in unsure.iter().zip(primal).zip(scratch.multiplied.chunks(n)) {
                        let verdict = Verdict { primal, converged: primal <= s.tolerance * batch.states[i].scale };
                        finished[i] = self.conclude(&mut batch, &mut gains, i, u, verdict, s, outcome, &mut x)?;
                        if batch.states[i].stalled {
                            restarted.push(i);
                        }
                    }
                }
            }
            let restarted: Vec<usize> = restarted.into_iter().filter(|&i| !finished[i]).collect();
            if !restarted.is_empty() {
                batch.directions(Some(&restarted), &self.precond, true, par);
            }
            let keep: Vec<usize> = (0..batch.len()).filter(|&i| !finished[i]).collect();
            if keep.len() < batch.len() {
                batch.retain(&keep);
                compact(&mut gains, 1, &keep);
            }
            if batch.len() == 0 {
                break;
            }
            batch.iterate(self.g_low.view(), &self.precond, par);
            if let Some(state) = batch.states.iter().find(|state| state.broken) {
                return Ok(RunEnd::BrokeDown { row: state.global, iteration: state.iterations });
            }
        }
        Ok(RunEnd::Finished)
    }

    /// The local rows to screen: those that stalled or reached the cap, and those whose gain
    /// (`gains[i]` estimates `‖(H E_P r)_S‖∞ / ‖r‖∞` of local row `i`) says they may be done.
    fn due(&self, batch: &Batch<T>, gains: &[f64], s: &IterativeSettings) -> Vec<usize> {
        (0..batch.len())
            .filter(|&i| {
                let state = &batch.states[i];
                state.stalled
                    || state.iterations >= s.max_iterations
                    || gains[i] * state.residual <= s.tolerance * state.scale
            })
            .collect()
    }

    /// Acts on the screened or checked local row `i` with `u = G E_P λ`: finishes it when it
    /// converged or reached its cap (returns `true`); otherwise sets its gain from the f64 dual
    /// residual and, when the row stalled or its recurrence drifted from that residual, resets
    /// its residual to it and marks it `stalled` for a restart.
    #[allow(clippy::too_many_arguments)]
    fn conclude(
        &self,
        batch: &mut Batch<T>,
        gains: &mut [f64],
        i: usize,
        u: &[f64],
        verdict: Verdict,
        s: &IterativeSettings,
        outcome: &mut Outcome,
        x: &mut [f64],
    ) -> Result<bool> {
        let n = batch.n;
        let state = batch.states[i];
        if !(verdict.primal / state.scale).is_finite() {
            return Err(OptimaError::Numerical(format!(
                "dual PCG residual of row {} became non-finite after {} iterations",
                state.global, state.iterations
            )));
        }
        let weight = self.problem.weight();
        let w = weight.row(state.global);
        let pruned = &batch.active[i * n..(i + 1) * n];
        if verdict.converged || state.iterations >= s.max_iterations {
            for (((x, u), w), k) in x.iter_mut().zip(u).zip(w).zip(pruned) {
                *x = if k.widen() == 0.0 { w - u } else { 0.0 };
            }
            let status = if verdict.converged { RowStatus::ReachedTolerance } else { RowStatus::MaxIterations };
            outcome.finish(state.global, ArrayView1::from(&*x), state.iterations, status);
            return Ok(true);
        }
        let dual = lane_max(u.iter().zip(w).zip(pruned).map(|((u, w), k)| ((w - u) * k.widen()).abs()));
        if dual > 0.0 {
            gains[i] = verdict.primal / dual;
        }
        if state.stalled || dual > 2.0 * state.residual {
            // Restart from the dual residual `w_P − (G E_P λ)_P` in f64.
            let (r, pruned) = (&mut batch.r[i * n..(i + 1) * n], &batch.active[i * n..(i + 1) * n]);
            batch.states[i].residual = dual_residual(r, u, w, pruned);
            batch.states[i].stalled = true;
        }
        Ok(false)
    }

    /// Screens the local rows `rows`: `G E_P λ` in f64 into `scratch.multiplied` (see
    /// [`multiply`](Self::multiply)), then the primal residual of the weights it gives,
    /// `−(H(x − w))_S = (H E_P r_d)_S + ((HG − I) E_P λ)_S + rounding`, estimated by its first
    /// term from the f64 dual residual `r_d` in one product in `T`, with a margin bounding the
    /// rest: the product's rounding in `T`, the inverse's error (measured once per layer) and
    /// the rounding of `x`. One f64 and one `T` GEMM, against two f64 GEMMs for
    /// [`check`](Self::check).
    fn screen(&self, batch: &Batch<T>, rows: &[usize], scratch: &mut Scratch<T>, par: Par) -> Vec<Screened> {
        let n = batch.n;
        let weight = self.problem.weight();
        self.multiply(batch, rows, scratch, par);
        let (input, out) = (&mut scratch.low_input, &mut scratch.low_output);
        input.resize(rows.len() * n, T::narrow(0.0));
        input.truncate(rows.len() * n);
        let multiplied = &scratch.multiplied;
        let norms: Vec<(f64, f64, f64)> = input
            .par_chunks_mut(n)
            .zip(multiplied.par_chunks(n))
            .zip(rows.par_iter())
            .map(|((r, u), &i)| {
                let (lambda, pruned) = (&batch.x[i * n..(i + 1) * n], &batch.active[i * n..(i + 1) * n]);
                let w = weight.row(batch.states[i].global);
                let dual = dual_residual(r, u, w, pruned);
                let lambda = lane_max(lambda.iter().map(|l| l.abs()));
                let w = lane_max(w.iter().map(|w| w.abs()));
                (dual, lambda, w)
            })
            .collect();
        out.resize(rows.len() * n, T::narrow(0.0));
        out.truncate(rows.len() * n);
        product(input, rows.len(), self.h_low.view(), out, par);
        let low_roundoff = (n as f64 + 2.0) * T::ROUNDOFF;
        out.par_chunks(n)
            .zip(rows.par_iter())
            .zip(norms.par_iter())
            .map(|((hr, &i), &(dual, lambda, w))| {
                let pruned = &batch.active[i * n..(i + 1) * n];
                let primal = lane_max(hr.iter().zip(pruned).map(|(v, k)| (v.widen() * (1.0 - k.widen())).abs()));
                let margin = low_roundoff * self.h_norm * dual
                    + self.inverse_margin * lambda
                    + 2.0 * f64::ROUNDOFF * self.h_norm * w;
                Screened { primal, margin }
            })
            .collect()
    }

    /// The batch at its starting multipliers (iterates `λ`, entries the pruned inputs) and the
    /// rows' gains: scales from one GEMM in `T`, first residuals and directions. The first gain
    /// assumes the mask-only weights' relative residual is 1.
    fn start(&self, rows: &[usize], start: Start<'_>, scratch: &mut Scratch<T>, par: Par) -> (Batch<T>, Vec<f64>) {
        let (problem, n) = (self.problem, self.problem.cols());
        let (weight, mask) = (problem.weight(), problem.mask());
        let live = rows.len();
        let mut pruned = vec![T::narrow(0.0); live * n];
        pruned.par_chunks_mut(n).zip(rows.par_iter()).for_each(|(pruned, &i)| {
            for (v, is_pruned) in pruned.iter_mut().zip(mask.row_pruned(i)) {
                *v = T::narrow(if is_pruned { 1.0 } else { 0.0 });
            }
        });
        let states = rows.iter().map(|&i| RowState::new(i)).collect();
        let mut batch = Batch::new(n, states, vec![0.0; live * n], pruned);
        // The weights pass through the direction buffer into the scale's product `Hw` in T. With
        // λ = 0 the first residual is w_P, exactly.
        batch
            .p
            .par_chunks_mut(n)
            .zip(batch.r.par_chunks_mut(n))
            .zip(batch.active.par_chunks(n))
            .zip(rows.par_iter())
            .for_each(|(((p, r), pruned), &i)| {
                for (((p, r), k), w) in p.iter_mut().zip(r.iter_mut()).zip(pruned).zip(weight.row(i)) {
                    *p = T::narrow(*w);
                    *r = T::narrow(w * k.widen());
                }
            });
        product(&batch.p, live, self.h_low.view(), &mut batch.out, par);
        let h = problem.hessian().matrix();
        let gains = batch
            .states
            .par_iter_mut()
            .zip(batch.out.par_chunks(n))
            .zip(batch.active.par_chunks(n))
            .map(|((state, hw), pruned)| {
                let w = weight.row(state.global);
                // The largest kept entry of Hw in T, recomputed in f64 there: a lower bound of
                // ‖(Hw)_S‖∞ within rounding, so the relative residual is never understated.
                let (mut best, mut at) = (-1.0f64, None);
                let mut pruned_norm = 0.0f64;
                for (j, ((hw, k), w)) in hw.iter().zip(pruned).zip(w).enumerate() {
                    if k.widen() == 0.0 {
                        let v = hw.widen().abs();
                        if v > best {
                            (best, at) = (v, Some(j));
                        }
                    } else {
                        pruned_norm = pruned_norm.max(w.abs());
                    }
                }
                state.scale = at.map_or(0.0, |j| h.row(j).dot(&w).abs()).max(TINY);
                state.residual = pruned_norm;
                if pruned_norm > 0.0 { state.scale / pruned_norm } else { 0.0 }
            })
            .collect();
        if let Start::Warm(x0) = start {
            self.warm(&mut batch, x0, scratch, par);
        }
        batch.directions(None, &self.precond, true, par);
        (batch, gains)
    }

    /// Multipliers `λ = −(H(x₀ − w))_P` and their dual residuals, in f64.
    fn warm(&self, batch: &mut Batch<T>, x0: &Array2<f64>, scratch: &mut Scratch<T>, par: Par) {
        let n = batch.n;
        let weight = self.problem.weight();
        let all: Vec<usize> = (0..batch.len()).collect();
        let fill = |_, i: usize, d: &mut [f64]| {
            let global = batch.states[i].global;
            for ((d, x), w) in d.iter_mut().zip(x0.row(global)).zip(weight.row(global)) {
                *d = x - w;
            }
        };
        batch.product_f64(
            &all,
            self.problem.hessian().matrix().into_faer(),
            par,
            fill,
            &mut scratch.input,
            &mut scratch.gradient,
        );
        batch.x.par_chunks_mut(n).zip(scratch.gradient.par_chunks(n)).zip(batch.active.par_chunks(n)).for_each(
            |((lambda, hd), pruned)| {
                for ((l, v), k) in lambda.iter_mut().zip(hd).zip(pruned) {
                    *l = -v * k.widen();
                }
            },
        );
        self.multiply(batch, &all, scratch, par);
        batch
            .r
            .par_chunks_mut(n)
            .zip(scratch.multiplied.par_chunks(n))
            .zip(batch.active.par_chunks(n))
            .zip(batch.states.par_iter_mut())
            .for_each(|(((r, u), pruned), state)| {
                state.residual = dual_residual(r, u, weight.row(state.global), pruned);
            });
    }

    /// `G E_P λ` of the local rows `rows` into `scratch.multiplied`, in f64: the weights are
    /// `x = w − G E_P λ` on the kept entries, and the dual residuals `w_P − (G E_P λ)_P`.
    fn multiply(&self, batch: &Batch<T>, rows: &[usize], scratch: &mut Scratch<T>, par: Par) {
        let n = batch.n;
        let fill = |_, i: usize, dst: &mut [f64]| dst.copy_from_slice(&batch.x[i * n..(i + 1) * n]);
        batch.product_f64(rows, self.g64, par, fill, &mut scratch.input, &mut scratch.multiplied);
    }

    /// The f64 check of the local rows `rows`: `G E_P λ` into `scratch.multiplied` (see
    /// [`multiply`](Self::multiply)) and the primal residuals `‖(H(x − w))_S‖∞` of the weights it
    /// gives, returned. Two f64 GEMMs.
    fn check(&self, batch: &Batch<T>, rows: &[usize], scratch: &mut Scratch<T>, par: Par) -> Vec<f64> {
        let n = batch.n;
        let weight = self.problem.weight();
        self.multiply(batch, rows, scratch, par);
        let multiplied = &scratch.multiplied;
        let fill = |c: usize, i: usize, d: &mut [f64]| {
            let (u, pruned) = (&multiplied[c * n..(c + 1) * n], &batch.active[i * n..(i + 1) * n]);
            for (((d, u), w), k) in d.iter_mut().zip(u).zip(weight.row(batch.states[i].global)).zip(pruned) {
                // x − w as the weights will be returned: x = w − u kept, 0 pruned.
                *d = if k.widen() == 0.0 { (w - u) - w } else { -w };
            }
        };
        let h = self.problem.hessian().matrix().into_faer();
        batch.product_f64(rows, h, par, fill, &mut scratch.input, &mut scratch.gradient);
        scratch
            .gradient
            .par_chunks(n)
            .zip(rows.par_iter())
            .map(|(hd, &i)| {
                let pruned = &batch.active[i * n..(i + 1) * n];
                lane_max(hd.iter().zip(pruned).map(|(v, k)| if k.widen() == 0.0 { v.abs() } else { 0.0 }))
            })
            .collect()
    }
}

/// Writes one row's dual residual `w_P − u_P` with `u = G E_P λ` (zero off `P`) into `r`, rounded
/// to `T`, and returns its f64 `‖·‖∞`.
fn dual_residual<T: ProductScalar>(r: &mut [T], u: &[f64], w: ArrayView1<'_, f64>, pruned: &[T]) -> f64 {
    lane_max(r.iter_mut().zip(u).zip(w).zip(pruned).map(|(((r, u), w), k)| {
        let v = (w - u) * k.widen();
        *r = T::narrow(v);
        v.abs()
    }))
}

/// The root-mean-square singular value of `HG − I`, estimated from [`INVERSE_PROBES`] random
/// sign vectors (four products with each of `H` and `G`, `n²` flops apiece).
fn inverse_error(h: MatRef<'_, f64>, g: MatRef<'_, f64>) -> f64 {
    let n = h.nrows();
    // A fixed pseudo-random sign pattern (Weyl sequence): the estimate is reproducible.
    let probes: Vec<f64> = (0..INVERSE_PROBES * n)
        .map(|k| if (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 63 == 0 { 1.0 } else { -1.0 })
        .collect();
    let (mut gv, mut hgv) = (vec![0.0; probes.len()], vec![0.0; probes.len()]);
    product(&probes, INVERSE_PROBES, g, &mut gv, Par::Seq);
    product(&gv, INVERSE_PROBES, h, &mut hgv, Par::Seq);
    let squares: f64 = hgv.iter().zip(&probes).map(|(a, v)| (a - v).powi(2)).sum();
    (squares / probes.len() as f64).sqrt()
}
