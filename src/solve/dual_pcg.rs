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
use super::pcg::{Operator, Precision, ProductScalar, compact, inverse_f64, lane_max, lane_sum, product};
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
pub(crate) fn dual_pcg_memory(cols: usize, precision: Precision) -> MemoryEstimate {
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

/// The scalars of one live row.
#[derive(Clone, Copy, Debug)]
struct RowState {
    global: usize,
    iterations: usize,
    /// `‖(H w)_S‖∞`, the scale of the relative residual.
    scale: f64,
    /// Estimated `‖(H E_P r)_S‖∞ / ‖r‖∞`: how the dual residual `r` shows in the primal residual.
    gain: f64,
    /// `rᵀz` of the current residual.
    rz: f64,
    /// `‖r‖∞` of the recurrence.
    residual: f64,
    /// The last step went nowhere (`pᵀGp ≤ 0` in the product's precision): check and restart.
    stalled: bool,
    /// A step or product was not finite.
    broken: bool,
}

/// The operators of one problem in the iterations' precision `T`: built once, then run on any
/// set of rows.
pub(crate) struct DualOperators<'a, T: 'static> {
    problem: &'a LayerProblem,
    g64: MatRef<'a, f64>,
    g_low: Operator<'a, T>,
    h_low: Operator<'a, T>,
    /// `1 / G_jj`.
    jacobi: Vec<f64>,
}

/// The live rows: multipliers in f64 (zero on kept inputs), everything the GEMM reads or writes
/// in `T`, all row-major `n` wide.
struct Batch<T> {
    n: usize,
    states: Vec<RowState>,
    lambda: Vec<f64>,
    /// 1 where the row prunes input j, 0 where it keeps it.
    pruned: Vec<T>,
    /// Dual residuals `w_P − G_PP λ` (zero on kept inputs).
    r: Vec<T>,
    /// Directions (the GEMM's input; zero on kept inputs).
    p: Vec<T>,
    /// GEMM output.
    out: Vec<T>,
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
        let jacobi = (0..g64.nrows()).map(|j| 1.0 / g64[(j, j)]).collect();
        Self { problem, g64, g_low: T::lowered(g64), h_low: T::operator(problem.hessian().matrix()), jacobi }
    }

    /// Runs PCG on the multipliers of `rows` (global indices) up to the cap of `s`; the outcome
    /// holds those rows.
    pub(crate) fn run(&self, rows: &[usize], start: Start<'_>, s: &IterativeSettings) -> Result<Outcome> {
        let par = s.parallelism.faer();
        let n = self.problem.cols();
        let mut outcome = Outcome::new(self.problem);
        let mut batch = self.start(rows, start, par);
        // Rows with nothing pruned (or an exact warm start) are candidates at once.
        let mut candidates = self.candidates(&mut batch, s, par);
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
                        let state = &mut batch.states[i];
                        state.residual = norm;
                        if norm > 0.0 {
                            state.gain = state.gain.max(checked.primal[c] / norm);
                        }
                        restarted.push(i);
                    }
                }
                if !restarted.is_empty() {
                    batch.directions(Some(&restarted), &self.jacobi, true);
                }
                let keep: Vec<usize> = (0..batch.len()).filter(|&i| !finished[i]).collect();
                if keep.len() < batch.len() {
                    batch.retain(&keep);
                }
            }
            if batch.len() == 0 {
                break;
            }
            batch.step(self.g_low.view(), par);
            batch.directions(None, &self.jacobi, false);
            if let Some(state) = batch.states.iter().find(|state| state.broken) {
                return Err(OptimaError::Numerical(format!(
                    "dual PCG step of row {} became non-finite at iteration {}",
                    state.global, state.iterations
                )));
            }
            candidates = self.candidates(&mut batch, s, par);
        }
        Ok(outcome)
    }

    /// The local rows to check in f64: those that stalled or reached the cap, and those whose
    /// primal residual, estimated from the recurrence as `‖(H E_P r)_S‖∞` (one GEMM in `T` on the
    /// rows whose gain says they may be done), meets the tolerance. The estimate also corrects
    /// those rows' gains: the primal residual falls more slowly than the dual one.
    fn candidates(&self, batch: &mut Batch<T>, s: &IterativeSettings, par: Par) -> Vec<usize> {
        let n = batch.n;
        let forced = |state: &RowState| state.stalled || state.iterations >= s.max_iterations;
        let due: Vec<usize> = (0..batch.len())
            .filter(|&i| {
                let state = &batch.states[i];
                !forced(state) && state.gain * state.residual <= s.tolerance * state.scale
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
                let pruned = &batch.pruned[i * n..(i + 1) * n];
                let primal = lane_max(
                    out[c * n..(c + 1) * n].iter().zip(pruned).map(|(v, k)| (v.widen() * (1.0 - k.widen())).abs()),
                );
                let state = &mut batch.states[i];
                if state.residual > 0.0 {
                    state.gain = primal / state.residual;
                }
                estimated[i] = primal <= s.tolerance * state.scale;
            }
        }
        (0..batch.len()).filter(|&i| estimated[i] || forced(&batch.states[i])).collect()
    }

    /// The batch at its starting multipliers: scales from one GEMM in `T`, first residuals and
    /// directions. The first gain assumes the mask-only weights' relative residual is 1.
    fn start(&self, rows: &[usize], start: Start<'_>, par: Par) -> Batch<T> {
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
        let mut r = vec![zero; live * n];
        input.par_chunks_mut(n).zip(r.par_chunks_mut(n)).zip(rows.par_iter().zip(pruned.par_chunks(n))).for_each(
            |((input, r), (&i, pruned))| {
                for (((a, b), w), k) in input.iter_mut().zip(r.iter_mut()).zip(weight.row(i)).zip(pruned) {
                    *a = T::narrow(*w);
                    *b = T::narrow(w * k.widen());
                }
            },
        );
        let mut hw = vec![zero; live * n];
        product(&input, live, self.h_low.view(), &mut hw, par);
        let h = problem.hessian().matrix();
        let states: Vec<RowState> = rows
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
                RowState {
                    global: i,
                    iterations: 0,
                    scale,
                    gain: if pruned_norm > 0.0 { scale / pruned_norm } else { 0.0 },
                    rz: 0.0,
                    residual: pruned_norm,
                    stalled: false,
                    broken: false,
                }
            })
            .collect();
        let mut batch = Batch {
            n,
            states,
            lambda: vec![0.0; live * n],
            pruned,
            r,
            p: vec![zero; live * n],
            out: vec![zero; live * n],
        };
        if let Start::Warm(x0) = start {
            self.warm(&mut batch, x0, par);
        }
        batch.directions(None, &self.jacobi, true);
        batch
    }

    /// Multipliers `λ = −(H(x₀ − w))_P` and their dual residuals, in f64.
    fn warm(&self, batch: &mut Batch<T>, x0: &Array2<f64>, par: Par) {
        let n = batch.n;
        let weight = self.problem.weight();
        let mut d = vec![0.0; batch.len() * n];
        d.par_chunks_mut(n).zip(batch.states.par_iter()).for_each(|(d, state)| {
            for ((d, x), w) in d.iter_mut().zip(x0.row(state.global)).zip(weight.row(state.global)) {
                *d = x - w;
            }
        });
        let mut hd = vec![0.0; batch.len() * n];
        product(&d, batch.len(), self.problem.hessian().matrix().into_faer(), &mut hd, par);
        batch.lambda.par_chunks_mut(n).zip(hd.par_chunks(n)).zip(batch.pruned.par_chunks(n)).for_each(
            |((lambda, hd), pruned)| {
                for ((l, v), k) in lambda.iter_mut().zip(hd).zip(pruned) {
                    *l = -v * k.widen();
                }
            },
        );
        let all: Vec<usize> = (0..batch.len()).collect();
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
        let mut input = vec![0.0; rows.len() * n];
        input.par_chunks_mut(n).zip(rows.par_iter()).for_each(|(dst, &i)| {
            dst.copy_from_slice(&batch.lambda[i * n..(i + 1) * n]);
        });
        let mut u = vec![0.0; rows.len() * n];
        product(&input, rows.len(), self.g64, &mut u, par);
        let mut dual = input;
        u.par_chunks_mut(n).zip(dual.par_chunks_mut(n)).zip(rows.par_iter()).for_each(|((u, dual), &i)| {
            let pruned = &batch.pruned[i * n..(i + 1) * n];
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
                let pruned = &batch.pruned[i * n..(i + 1) * n];
                lane_max(hd.iter().zip(pruned).map(|(v, k)| if k.widen() == 0.0 { v.abs() } else { 0.0 }))
            })
            .collect();
        Checked { x, dual, primal }
    }
}

impl<T: ProductScalar> Batch<T> {
    fn len(&self) -> usize {
        self.states.len()
    }

    /// One CG step of every live row: `q = G p`, then `λ += α p`, `r −= α q_P`.
    fn step(&mut self, g: MatRef<'_, T>, par: Par) {
        let n = self.n;
        product(&self.p, self.len(), g, &mut self.out, par);
        self.lambda
            .par_chunks_mut(n)
            .zip(self.r.par_chunks_mut(n))
            .zip(self.p.par_chunks(n).zip(self.pruned.par_chunks(n)).zip(self.out.par_chunks(n)))
            .zip(self.states.par_iter_mut())
            .for_each(|(((lambda, r), ((p, pruned), q)), state)| {
                // p is zero on kept inputs, so pᵀq is pᵀ G_PP p.
                let pq = lane_sum(p.iter().zip(q).map(|(p, q)| p.widen() * q.widen()));
                state.broken |= !(pq.is_finite() && state.rz.is_finite());
                let descends = pq > 0.0;
                state.stalled = !descends;
                let alpha = if descends { state.rz / pq } else { 0.0 };
                let updated = lambda.iter_mut().zip(r.iter_mut()).zip(p.iter().zip(q).zip(pruned)).map(
                    |((l, r), ((p, q), k))| {
                        *l += alpha * p.widen();
                        let rj = r.widen() - alpha * q.widen() * k.widen();
                        *r = T::narrow(rj);
                        rj.abs()
                    },
                );
                state.residual = lane_max(updated);
                state.iterations += 1;
            });
    }

    /// New directions `p = D r + β p` (`β = 0` when `restart`) of the local rows `rows` (all when
    /// `None`), with `D` the Jacobi preconditioner.
    fn directions(&mut self, rows: Option<&[usize]>, jacobi: &[f64], restart: bool) {
        let n = self.n;
        let mut chosen = vec![rows.is_none(); self.len()];
        if let Some(rows) = rows {
            rows.iter().for_each(|&i| chosen[i] = true);
        }
        self.p
            .par_chunks_mut(n)
            .zip(self.r.par_chunks(n))
            .zip(self.states.par_iter_mut())
            .zip(chosen.par_iter())
            .for_each(|(((p, r), state), &chosen)| {
                if !chosen {
                    return;
                }
                let rz = lane_sum(r.iter().zip(jacobi).map(|(r, d)| r.widen() * r.widen() * d));
                let beta = if !restart && state.rz > 0.0 { rz / state.rz } else { 0.0 };
                for ((p, r), d) in p.iter_mut().zip(r).zip(jacobi) {
                    *p = T::narrow(r.widen() * d + beta * p.widen());
                }
                state.broken |= !rz.is_finite();
                state.rz = rz;
                if restart {
                    state.stalled = false;
                }
            });
    }

    /// Moves the local rows `keep` (ascending) to the front and drops the rest.
    fn retain(&mut self, keep: &[usize]) {
        let n = self.n;
        compact(&mut self.lambda, n, keep);
        compact(&mut self.pruned, n, keep);
        compact(&mut self.r, n, keep);
        compact(&mut self.p, n, keep);
        compact(&mut self.states, 1, keep);
        self.out.truncate(keep.len() * n);
    }
}
