//! Masked, batched preconditioned conjugate gradient on `H_SS` for all rows at once.
//!
//! Every row solves `H_SS δ_S = −(H d0)_S` by CG. All active rows advance together: one GEMM
//! `P · H` per iteration (and one `R · M` for the dense preconditioner `M = H⁻¹`); everything else
//! is two fused passes over each row, rows in parallel. A row stops when its residual recurrence
//! reaches the tolerance and its residual recomputed in f64 confirms it (otherwise it restarts
//! from that residual); finished rows leave the batch. In [`Precision::Mixed`] the GEMMs run in
//! f32 and the f64 checks and restarts correct their rounding (docs/solvers.md).

#![allow(clippy::indexing_slicing)] // Dense kernels: every index runs over the dimensions LayerProblem::new validated (m rows, n
// inputs) or over the live batch built from them.

use faer::{MatRef, Par};
use faer_ext::IntoFaer;
use ndarray::{Array2, ArrayView1, ArrayView2};
use rayon::prelude::*;

use super::QpSolver;
use super::batched::{IterativeSettings, Outcome, TINY, solve_batched};
use super::cg::{Apply, Batch, Operator, ProductScalar, RowState, lane_max, product};
use crate::backend::Parallelism;
use crate::error::{OptimaError, Result};
use crate::memory::{Bytes, MemoryEstimate};
use crate::problem::{LayerProblem, RowStatus, Solution};

/// A preconditioner shared by every row (restricted to each row's kept set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
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

/// Precision of the products with `H` and the preconditioner inside PCG's iterations.
///
/// Either way every row's stop is decided on its residual recomputed in f64, so both meet the
/// same tolerance; `Mixed` runs the two GEMMs per iteration in f32 (about 1.8× the f64 rate on
/// AVX-512 cores, docs/benchmarks.md) and corrects the f32 drift of the recurrence by restarting
/// from the f64 residual.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Precision {
    /// f64 throughout.
    #[default]
    Double,
    /// f32 products, f64 iterates, residual checks and restarts.
    Mixed,
}

impl std::str::FromStr for Precision {
    type Err = OptimaError;

    /// `double` or `mixed`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "double" => Ok(Self::Double),
            "mixed" => Ok(Self::Mixed),
            other => Err(OptimaError::InvalidSetting(format!("unknown precision {other:?}; choose double or mixed"))),
        }
    }
}

/// Settings of [`PcgSolver`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PcgSettings {
    /// Tolerance, cap and threads.
    pub iterative: IterativeSettings,
    /// The shared preconditioner.
    pub preconditioner: Preconditioner,
    /// Precision of the products inside the iterations.
    pub precision: Precision,
}

impl Default for PcgSettings {
    fn default() -> Self {
        Self {
            iterative: IterativeSettings::new(super::DEFAULT_TOLERANCE, 1000),
            preconditioner: Preconditioner::Jacobi,
            precision: Precision::Double,
        }
    }
}

impl PcgSettings {
    /// Sets the tolerance, cap and threads (default: 1e-6, 1000 iterations, all cores).
    pub fn iterative(mut self, iterative: IterativeSettings) -> Self {
        self.iterative = iterative;
        self
    }

    /// Sets the preconditioner (default: Jacobi).
    pub fn preconditioner(mut self, preconditioner: Preconditioner) -> Self {
        self.preconditioner = preconditioner;
        self
    }

    /// Sets the products' precision (default: double).
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
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

    /// H⁻¹ and its Cholesky factor while it is built (inverse preconditioner), f32 copies of the
    /// operators (mixed precision); a dozen n-vectors per row.
    fn memory_estimate(&self, cols: usize) -> MemoryEstimate {
        pcg_memory(cols, self.settings.preconditioner, self.settings.precision)
    }

    fn solve(&self, problem: &LayerProblem, warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution> {
        let s = self.settings.iterative;
        s.check()?;
        let rows: Vec<usize> = (0..problem.rows()).collect();
        solve_batched(self.name(), problem, warm_start, s.parallelism, |x0| run_pcg(problem, &rows, x0, &self.settings))
    }
}

/// Working memory of [`run_pcg`] over `cols` inputs (see [`PcgSolver::memory_estimate`]).
fn pcg_memory(cols: usize, preconditioner: Preconditioner, precision: Precision) -> MemoryEstimate {
    let square = cols * cols;
    let inverse = if preconditioner == Preconditioner::InverseHessian { Bytes::f64s(2 * square) } else { Bytes(0) };
    let lowered = if precision == Precision::Mixed { Bytes::f32s(2 * square) } else { Bytes(0) };
    MemoryEstimate { fixed: inverse + lowered, per_row: Bytes::f64s(12 * cols) }
}

impl<T: ProductScalar> Apply<T> {
    fn build(kind: Preconditioner, h: ArrayView2<'_, f64>, par: Par) -> Result<Self> {
        Ok(match kind {
            Preconditioner::Identity => Self::Diagonal(vec![1.0; h.nrows()]),
            Preconditioner::Jacobi => Self::Diagonal(h.diag().iter().map(|d| 1.0 / d).collect()),
            Preconditioner::InverseHessian => Self::Dense(T::inverse(h, par)?),
        })
    }
}

impl<T: ProductScalar> Batch<T> {
    /// The rows `rows` (global) at their starting weights `x0`, iterating on their kept inputs.
    fn primal(problem: &LayerProblem, rows: &[usize], x0: &Array2<f64>) -> Self {
        let n = problem.cols();
        let mask = problem.mask();
        let mut x = vec![0.0; rows.len() * n];
        let mut kept = vec![T::narrow(0.0); rows.len() * n];
        x.par_chunks_mut(n).zip(kept.par_chunks_mut(n)).zip(rows.par_iter()).for_each(|((x, kept), &i)| {
            for j in 0..n {
                x[j] = x0[[i, j]];
                kept[j] = T::narrow(if mask.is_pruned(i, j) { 0.0 } else { 1.0 });
            }
        });
        Self::new(n, rows.iter().map(|&i| RowState::new(i)).collect(), x, kept)
    }

    /// Sets every row's scale `‖(H w)_S‖∞` (one f64 GEMM).
    fn set_scales(&mut self, problem: &LayerProblem, h: MatRef<'_, f64>, par: Par) {
        let n = self.n;
        let all: Vec<usize> = (0..self.len()).collect();
        let weight = problem.weight();
        let mut hw = Vec::new();
        let fill = |_, i: usize, dst: &mut [f64]| {
            dst.iter_mut().zip(weight.row(self.states[i].global)).for_each(|(d, w)| *d = *w);
        };
        self.product_f64(&all, h, par, fill, &mut Vec::new(), &mut hw);
        self.states.par_iter_mut().zip(self.active.par_chunks(n)).zip(hw.par_chunks(n)).for_each(
            |((state, kept), hw)| {
                let scale = hw.iter().zip(kept).fold(0.0f64, |m, (v, k)| m.max((v * k.widen()).abs()));
                state.scale = scale.max(TINY);
            },
        );
    }

    /// Starts every row: residual `−(H(x − w))_S` in the products' precision (the f64 checks
    /// confirm or correct it later), first direction, and the recurrence residual norm.
    fn start(&mut self, problem: &LayerProblem, h: MatRef<'_, T>, precond: &Apply<T>, par: Par) {
        let n = self.n;
        let weight = problem.weight();
        let mut d = vec![T::narrow(0.0); self.len() * n];
        d.par_chunks_mut(n).zip(self.x.par_chunks(n)).zip(self.states.par_iter()).for_each(|((d, x), state)| {
            for ((d, x), w) in d.iter_mut().zip(x).zip(weight.row(state.global)) {
                *d = T::narrow(x - w);
            }
        });
        product(&d, self.len(), h, &mut self.out, par);
        self.r
            .par_chunks_mut(n)
            .zip(self.out.par_chunks(n).zip(self.active.par_chunks(n)))
            .zip(self.states.par_iter_mut())
            .for_each(|((r, (q, kept)), state)| {
                state.residual = lane_max(r.iter_mut().zip(q).zip(kept).map(|((r, q), k)| {
                    let v = -q.widen() * k.widen();
                    *r = T::narrow(v);
                    v.abs()
                }));
            });
        self.directions(None, precond, true, par);
    }

    /// True residuals `−(H(x − w))_S` of the local rows `rows`, in f64, row-major.
    fn true_residuals(&self, problem: &LayerProblem, rows: &[usize], h: MatRef<'_, f64>, par: Par) -> Vec<f64> {
        let n = self.n;
        let weight = problem.weight();
        let mut out = Vec::new();
        let fill = |_, i: usize, dst: &mut [f64]| {
            let x = &self.x[i * n..(i + 1) * n];
            for ((d, x), w) in dst.iter_mut().zip(x).zip(weight.row(self.states[i].global)) {
                *d = x - w;
            }
        };
        self.product_f64(rows, h, par, fill, &mut Vec::new(), &mut out);
        out.par_chunks_mut(n).zip(rows.par_iter()).for_each(|(res, &i)| {
            for (v, k) in res.iter_mut().zip(&self.active[i * n..(i + 1) * n]) {
                *v *= -k.widen();
            }
        });
        out
    }
}

/// Runs PCG on `rows` (global indices) from `x` (every row's starting weights, masked), up to the
/// cap.
fn run_pcg(problem: &LayerProblem, rows: &[usize], x: Array2<f64>, settings: &PcgSettings) -> Result<Outcome> {
    let (kind, s) = (settings.preconditioner, &settings.iterative);
    match settings.precision {
        Precision::Double => PcgOperators::<f64>::new(problem, kind, s.parallelism)?.run(rows, &x, s),
        Precision::Mixed => PcgOperators::<f32>::new(problem, kind, s.parallelism)?.run(rows, &x, s),
    }
}

/// PCG's operators for one problem, in the products' precision `T`: built once (the inverse
/// preconditioner costs `n³`), then run on any set of rows.
struct PcgOperators<'a, T: 'static> {
    problem: &'a LayerProblem,
    h_low: Operator<'a, T>,
    precond: Apply<T>,
}

impl<'a, T: ProductScalar> PcgOperators<'a, T> {
    /// `H` in `T` and the shared preconditioner.
    fn new(problem: &'a LayerProblem, preconditioner: Preconditioner, par: Parallelism) -> Result<Self> {
        let h = problem.hessian().matrix();
        Ok(Self { problem, h_low: T::operator(h), precond: Apply::<T>::build(preconditioner, h, par.faer())? })
    }

    /// Runs PCG on `rows` (global indices) from `x0` (every row's starting weights, masked), up
    /// to the cap of `s`; the outcome holds those rows.
    fn run(&self, rows: &[usize], x0: &Array2<f64>, s: &IterativeSettings) -> Result<Outcome> {
        let (problem, precond) = (self.problem, &self.precond);
        let par = s.parallelism.faer();
        let h64 = problem.hessian().matrix().into_faer();
        let h_low = &self.h_low;
        let mut outcome = Outcome::new(problem);
        let mut batch = Batch::<T>::primal(problem, rows, x0);
        batch.set_scales(problem, h64, par);
        batch.start(problem, h_low.view(), precond, par);
        // Rows already at the tolerance (nothing pruned, an exact warm start) finish once the
        // f64 check confirms it.
        let mut candidates: Vec<usize> =
            (0..batch.len()).filter(|&i| batch.states[i].residual / batch.states[i].scale <= s.tolerance).collect();
        let n = batch.n;
        loop {
            if !candidates.is_empty() {
                let true_r = batch.true_residuals(problem, &candidates, h64, par);
                let mut finished = vec![false; batch.len()];
                let mut restarted = Vec::new();
                for (c, &i) in candidates.iter().enumerate() {
                    let residual = &true_r[c * n..(c + 1) * n];
                    let relative = residual.iter().fold(0.0f64, |m, v| m.max(v.abs())) / batch.states[i].scale;
                    let state = batch.states[i];
                    if !relative.is_finite() {
                        return Err(OptimaError::Numerical(format!(
                            "PCG residual of row {} became non-finite after {} iterations",
                            state.global, state.iterations
                        )));
                    }
                    let converged = relative <= s.tolerance;
                    if converged || state.iterations >= s.max_iterations {
                        let x = ArrayView1::from(&batch.x[i * n..(i + 1) * n]);
                        let status = if converged { RowStatus::ReachedTolerance } else { RowStatus::MaxIterations };
                        outcome.finish(state.global, x, state.iterations, status);
                        finished[i] = true;
                    } else {
                        for (r, v) in batch.r[i * n..(i + 1) * n].iter_mut().zip(residual) {
                            *r = T::narrow(*v);
                        }
                        restarted.push(i);
                    }
                }
                if !restarted.is_empty() {
                    batch.directions(Some(&restarted), precond, true, par);
                }
                let keep: Vec<usize> = (0..batch.len()).filter(|&i| !finished[i]).collect();
                if keep.len() < batch.len() {
                    batch.retain(&keep);
                }
            }
            if batch.len() == 0 {
                break;
            }
            batch.iterate(h_low.view(), precond, par);
            if let Some(state) = batch.states.iter().find(|state| state.broken) {
                return Err(OptimaError::Numerical(format!(
                    "PCG step of row {} became non-finite at iteration {}",
                    state.global, state.iterations
                )));
            }
            candidates = (0..batch.len())
                .filter(|&i| {
                    let state = &batch.states[i];
                    state.stalled || state.residual / state.scale <= s.tolerance || state.iterations >= s.max_iterations
                })
                .collect();
        }
        Ok(outcome)
    }
}
