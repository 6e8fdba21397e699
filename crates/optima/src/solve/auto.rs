//! `auto`: the fastest way to the optimum at the caller's tolerance, chosen by a cost model and
//! a measurement.
//!
//! Two candidates, in units of one large-block f64 Cholesky flop (docs/solvers.md):
//!
//! * `direct`: per row `c³/3 · (c + DIRECT_HALF_EFFICIENCY)/c` with `c = min(k, p)`: exact, and
//!   slower per flop on small blocks.
//! * mixed-precision `dual-pcg`: `n³` once for `H⁻¹`; per row about `DUAL_ROW_OVERHEAD · n²` for
//!   its scale, residual estimates and the f64 check; per row and iteration one f32 product,
//!   `2n² / MIXED_PCG_SPEEDUP`.
//!
//! How many iterations a row needs depends on the layer's Hessian more than on its shape (about
//! 8 at 1e-6 on generated layers, 25–40 on SmolLM2's), so `auto` measures it: it runs `dual-pcg`
//! on a sample of [`PROBE_ROWS`] rows first, then sends the rest to whichever method the measured
//! mean predicts cheaper. The iterations run under a cap near the break-even point; a row that
//! reaches it is solved by `direct`, so `auto` always meets the tolerance.

use std::time::Instant;

use ndarray::{Array2, ArrayView2, Axis};

use super::batched::{IterativeSettings, Outcome};
use super::dual_pcg::{DualOperators, HessianInverse, RunEnd, Start};
use super::{DirectSettings, DirectSolver, QpSolver, evaluate};
use crate::backend::Parallelism;
use crate::error::{OptimaError, Result};
use crate::memory::{Bytes, MemoryEstimate};
use crate::problem::{LayerProblem, Mask, RowStatus, Solution};

/// `dual-pcg` iterations per decade of tolerance on generated LLM-like layers: the optimistic
/// count that decides whether a probe is worth running.
pub const DUAL_ITERATIONS_PER_DECADE: f64 = 1.25;
/// `dual-pcg`'s per-row work besides its iterations, in units of `n²` large-block flops: an f32
/// product for the scale, and usually one screening per row (an f64 product for the weights and
/// an f32 one for the residual estimate).
pub const DUAL_ROW_OVERHEAD: f64 = 5.0;
/// Rows the probe solves by PCG before `auto` commits the rest (all rows of smaller layers).
pub const PROBE_ROWS: usize = 32;
/// Block size at which `direct`'s Cholesky runs at half its large-block rate (measured on the
/// development machine: 48 GFLOP/s at 288, 71 at 768, 75 at 2048 on two cores).
pub const DIRECT_HALF_EFFICIENCY: f64 = 200.0;
/// Flop rate of f32 GEMMs over `direct`'s large-block f64 Cholesky.
pub const MIXED_PCG_SPEEDUP: f64 = 1.5;

/// Settings of [`AutoSolver`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct AutoSettings {
    /// Relative KKT tolerance every row must meet.
    pub tolerance: f64,
    /// Threads.
    pub parallelism: Parallelism,
    /// A plan to follow instead of the cost model's (for experiments and tests).
    pub plan_override: Option<AutoPlan>,
}

impl Default for AutoSettings {
    fn default() -> Self {
        Self { tolerance: super::DEFAULT_TOLERANCE, parallelism: Parallelism::AllCores, plan_override: None }
    }
}

/// What a backend's cost model weighs for `auto`, in any one unit (flops on the CPU, seconds on a
/// device): the whole layer by `direct`, the iterative solver's setup and one iteration over all
/// rows, and the iterations the tolerance is predicted to need.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PlanCosts {
    pub direct: f64,
    pub setup: f64,
    pub per_iteration: f64,
    pub predicted_iterations: f64,
}

impl PlanCosts {
    /// `Direct` when even the predicted iteration count would not pay for the iterative solver;
    /// otherwise the iterative solver, capped where it stops paying (never below the prediction).
    pub(crate) fn plan(self) -> AutoPlan {
        let Self { direct, setup, per_iteration, predicted_iterations } = self;
        if setup + predicted_iterations * per_iteration >= direct {
            return AutoPlan::Direct;
        }
        let break_even = ((direct - setup) / per_iteration).floor().max(predicted_iterations);
        AutoPlan::Pcg { max_iterations: break_even as usize }
    }
}

/// Decades of tolerance below 1 (`1e-6` → 6), what iteration counts are predicted from.
pub(crate) fn decades(tolerance: f64) -> f64 {
    (1.0 / tolerance).log10().max(0.0)
}

/// Solves `rows` of `problem` exactly with `solve_rows` (the CPU's or a device's `direct`) and
/// writes them into `outcome`, one more iteration each: `auto`'s fallback for the rows its
/// iterative solver left, on every backend.
#[allow(clippy::indexing_slicing)] // rows index the problem's rows; the sub-problem has one row per entry.
pub(crate) fn solve_exactly(
    problem: &LayerProblem,
    rows: &[usize],
    outcome: &mut Outcome,
    solve_rows: impl FnOnce(&LayerProblem) -> Result<(Array2<f64>, Vec<RowStatus>)>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (w, h, mask) = (problem.weight().select(Axis(0), rows), problem.hessian().clone(), problem.mask());
    let sub_mask = Mask::from_fn(rows.len(), problem.cols(), |r, j| mask.is_pruned(rows[r], j));
    let (weight, status) = solve_rows(&LayerProblem::new(w, h, sub_mask)?)?;
    for (r, &i) in rows.iter().enumerate() {
        outcome.finish(i, weight.row(r), outcome.iterations[i] + 1, status[r]);
    }
    Ok(())
}

/// The rows of `outcome` that did not reach the tolerance.
pub(crate) fn rows_left(outcome: &Outcome, rows: impl IntoIterator<Item = usize>) -> Vec<usize> {
    rows.into_iter().filter(|&i| outcome.status.get(i).is_some_and(|s| *s != RowStatus::ReachedTolerance)).collect()
}

impl AutoSettings {
    /// The override when one is set, else the cost model's plan.
    pub(crate) fn plan_or(&self, model: impl FnOnce() -> PlanCosts) -> AutoPlan {
        self.plan_override.unwrap_or_else(|| model().plan())
    }

    pub(crate) fn check(&self) -> Result<()> {
        if !(self.tolerance.is_finite() && self.tolerance > 0.0) {
            return Err(OptimaError::InvalidSetting(format!("tolerance must be > 0, got {}", self.tolerance)));
        }
        Ok(())
    }

    /// Sets the relative KKT tolerance every row must meet (default: 1e-6).
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Sets the threads (default: all cores).
    pub fn parallelism(mut self, parallelism: Parallelism) -> Self {
        self.parallelism = parallelism;
        self
    }

    /// Sets a plan to follow instead of the cost model's (default: none).
    pub fn plan_override(mut self, plan_override: Option<AutoPlan>) -> Self {
        self.plan_override = plan_override;
        self
    }
}

/// The plan `auto` makes for a problem before measuring anything.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum AutoPlan {
    /// Solve every row exactly.
    Direct,
    /// PCG up to `max_iterations`, the rest exactly (with the cost model's plan: after a probe
    /// that may still send the rest to `direct`).
    Pcg {
        /// The break-even iteration cap.
        max_iterations: usize,
    },
}

/// Cost-model solver selection (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct AutoSolver {
    settings: AutoSettings,
}

/// `direct`'s cost of one row, in large-block Cholesky flops.
fn direct_row_cost(mask: &Mask, row: usize) -> f64 {
    let p = mask.pruned_in_row(row) as f64;
    let c = (mask.cols() as f64 - p).min(p);
    if c == 0.0 { 0.0 } else { c.powi(3) / 3.0 * (c + DIRECT_HALF_EFFICIENCY) / c }
}

/// `dual-pcg`'s cost of one row and iteration, in the same units.
fn iteration_cost(n: usize) -> f64 {
    2.0 * (n as f64).powi(2) / MIXED_PCG_SPEEDUP
}

/// `dual-pcg`'s cost of one row besides its iterations, in the same units.
fn row_overhead(n: usize) -> f64 {
    DUAL_ROW_OVERHEAD * (n as f64).powi(2)
}

impl AutoSolver {
    /// A solver with these settings.
    pub fn new(settings: AutoSettings) -> Self {
        Self { settings }
    }

    /// What `auto` will do for a layer with this mask at its tolerance, before measuring:
    /// `Direct` when even the optimistic iteration count would not pay for `dual-pcg`.
    pub fn plan(&self, mask: &Mask) -> AutoPlan {
        self.settings.plan_or(|| {
            let (m, n) = (mask.rows() as f64, mask.cols());
            PlanCosts {
                direct: (0..mask.rows()).map(|i| direct_row_cost(mask, i)).sum(),
                setup: (n as f64).powi(3) + m * row_overhead(n),
                per_iteration: m * iteration_cost(n),
                predicted_iterations: DUAL_ITERATIONS_PER_DECADE * decades(self.settings.tolerance),
            }
        })
    }
}

impl QpSolver for AutoSolver {
    fn name(&self) -> &str {
        "auto"
    }

    /// `dual-pcg`'s `H⁻¹` (f64, and its factor while it is built) and f32 copies of `H` and
    /// `H⁻¹`, then `direct`'s per-thread blocks for the rows it finishes.
    fn memory_estimate(&self, cols: usize) -> MemoryEstimate {
        let threads = self.settings.parallelism.threads();
        let square = cols * cols;
        MemoryEstimate {
            fixed: Bytes::f64s(square * (2 + threads)) + Bytes::f32s(2 * square),
            per_row: Bytes::f64s(12 * cols),
        }
    }

    fn solve(&self, problem: &LayerProblem, warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution> {
        let par = self.settings.parallelism;
        let direct = DirectSolver::new(DirectSettings::default().parallelism(par));
        let AutoPlan::Pcg { max_iterations } = self.plan(problem.mask()) else {
            let mut solution = direct.solve(problem, None)?;
            solution.report.solver = self.name().to_string();
            return Ok(solution);
        };
        let start = Instant::now();
        let outcome = match self.solve_by_probe(problem, warm_start, max_iterations, &direct)? {
            Probed::Solved(outcome) => outcome,
            // The f32 products overflowed or broke down (an H outside f32's range), or H has no
            // inverse even regularized: every row exactly, in f64, each with its own retries.
            Probed::BrokeDown | Probed::NoInverse => {
                let mut outcome = Outcome::new(problem);
                let all: Vec<usize> = (0..problem.rows()).collect();
                par.install(|| solve_exactly(problem, &all, &mut outcome, |p| direct.solve_rows(p)))??;
                outcome
            }
        };
        let seconds = start.elapsed().as_secs_f64();
        let weight: Array2<f64> = outcome.weight;
        let report = par.install(|| {
            evaluate(self.name(), problem, weight.view(), &outcome.iterations, &outcome.status, seconds, par)
        })?;
        Ok(Solution { weight, report })
    }
}

/// How `auto`'s iterative part ended.
enum Probed {
    /// Every row solved (rows the iterations left were finished by `direct`).
    Solved(Outcome),
    /// The f32 iterations broke down.
    BrokeDown,
    /// H could not be inverted for the iterations.
    NoInverse,
}

impl AutoSolver {
    /// The probe, then PCG or `direct` for the rest, `direct` for rows left at a cap.
    #[allow(clippy::indexing_slicing)] // row indices come from 0..m.
    fn solve_by_probe(
        &self,
        problem: &LayerProblem,
        warm_start: Option<ArrayView2<'_, f64>>,
        max_iterations: usize,
        direct: &DirectSolver,
    ) -> Result<Probed> {
        let par = self.settings.parallelism;
        let m = problem.rows();
        let x0 = warm_start.map(|w| super::batched::starting_point(problem, Some(w))).transpose()?;
        let start = x0.as_ref().map_or(Start::Zero, Start::Warm);
        let Some(inverse) = par.install(|| HessianInverse::try_new(problem, par))?? else {
            return Ok(Probed::NoInverse);
        };
        let pcg = DualOperators::<f32>::new(problem, &inverse);
        let capped = |cap: usize| IterativeSettings {
            tolerance: self.settings.tolerance,
            max_iterations: cap,
            parallelism: par,
        };
        let mut outcome = Outcome::new(problem);
        let (probe, rest) = if self.settings.plan_override.is_some() || m <= 2 * PROBE_ROWS {
            ((0..m).collect::<Vec<_>>(), Vec::new())
        } else {
            let probe: Vec<usize> = (0..PROBE_ROWS).map(|s| s * m / PROBE_ROWS).collect();
            let rest = (0..m).filter(|i| !probe.contains(i)).collect();
            (probe, rest)
        };
        if par.install(|| pcg.run(&probe, start, &capped(max_iterations), &mut outcome))?? != RunEnd::Finished {
            return Ok(Probed::BrokeDown);
        }
        let mut exact = rows_left(&outcome, probe.iter().copied());
        if !rest.is_empty() {
            let (mean, most) = iteration_stats(&outcome, &probe);
            let mask = problem.mask();
            let direct_rest: f64 = rest.iter().map(|&i| direct_row_cost(mask, i)).sum();
            let n = problem.cols();
            let pcg_rest = rest.len() as f64 * (mean * iteration_cost(n) + row_overhead(n));
            if pcg_rest < direct_rest {
                let cap = max_iterations.max((1.25 * most as f64).ceil() as usize);
                if par.install(|| pcg.run(&rest, start, &capped(cap), &mut outcome))?? != RunEnd::Finished {
                    return Ok(Probed::BrokeDown);
                }
                exact.extend(rows_left(&outcome, rest.iter().copied()));
            } else {
                exact.extend(rest);
            }
        }
        exact.sort_unstable();
        if !exact.is_empty() {
            par.install(|| solve_exactly(problem, &exact, &mut outcome, |p| direct.solve_rows(p)))??;
        }
        Ok(Probed::Solved(outcome))
    }
}

/// Mean and largest PCG iterations of `rows`, counting a row that did not converge at its cap
/// as twice the cap (it will cost a `direct` solve on top).
#[allow(clippy::indexing_slicing)] // row indices come from 0..m.
fn iteration_stats(outcome: &Outcome, rows: &[usize]) -> (f64, usize) {
    let cost = |i: usize| match outcome.status[i] {
        RowStatus::ReachedTolerance => outcome.iterations[i],
        _ => 2 * outcome.iterations[i],
    };
    let total: usize = rows.iter().map(|&i| cost(i)).sum();
    let most = rows.iter().map(|&i| outcome.iterations[i]).max().unwrap_or(0);
    (total as f64 / rows.len().max(1) as f64, most)
}
