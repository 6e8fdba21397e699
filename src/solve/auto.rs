//! `auto`: the fastest way to the optimum at the caller's tolerance, chosen by a cost model.
//!
//! Two candidates, in flops (both kernels run at similar GFLOP/s on the CPU, see
//! docs/benchmarks.md):
//!
//! * `direct`: `Σ_i min(k_i, p_i)³ / 3` — exact.
//! * `pcg` with the `(H⁻¹)_SS` preconditioner: `n³` once for `H⁻¹`, then per iteration two GEMMs
//!   of the active rows, `4 m n²`, for about `ITERATIONS_PER_DECADE · log10(1/tol) + ITERATIONS_BASE`
//!   iterations (measured on LLM-like layers; docs/solvers.md).
//!
//! When PCG is predicted cheaper it runs with an iteration cap at the break-even point; the rows
//! it has not finished by then (there should be none) are solved by `direct`, so `auto` always
//! meets the tolerance and never costs much more than the better of the two.

use std::time::Instant;

use ndarray::{Array2, ArrayView2, Axis};

use super::batched::{IterativeSettings, starting_point};
use super::pcg::run_pcg;
use super::{DirectSettings, DirectSolver, PcgSettings, Precision, Preconditioner, QpSolver, direct_flops, evaluate};
use crate::backend::Parallelism;
use crate::error::Result;
use crate::memory::{Bytes, MemoryEstimate};
use crate::problem::{LayerProblem, Mask, RowStatus, Solution};

/// PCG iterations per decade of tolerance with the inverse-Hessian preconditioner.
pub const ITERATIONS_PER_DECADE: f64 = 2.25;
/// PCG iterations independent of the tolerance.
pub const ITERATIONS_BASE: f64 = 0.0;

/// Settings of [`AutoSolver`].
#[derive(Clone, Copy, Debug)]
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

/// The plan `auto` makes for a problem.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AutoPlan {
    /// Solve every row exactly.
    Direct,
    /// PCG up to `max_iterations`, the rest exactly.
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

impl AutoSolver {
    /// A solver with these settings.
    pub fn new(settings: AutoSettings) -> Self {
        Self { settings }
    }

    /// What `auto` will do for a layer with this mask, at its tolerance.
    pub fn plan(&self, mask: &Mask) -> AutoPlan {
        if let Some(plan) = self.settings.plan_override {
            return plan;
        }
        let (m, n) = (mask.rows() as f64, mask.cols() as f64);
        let direct = direct_flops(mask);
        let setup = n.powi(3);
        let per_iteration = 4.0 * m * n * n;
        let predicted = ITERATIONS_PER_DECADE * (1.0 / self.settings.tolerance).log10().max(0.0) + ITERATIONS_BASE;
        if setup + predicted * per_iteration >= direct {
            return AutoPlan::Direct;
        }
        let break_even = ((direct - setup) / per_iteration).floor().max(predicted);
        AutoPlan::Pcg { max_iterations: break_even as usize }
    }
}

impl QpSolver for AutoSolver {
    fn name(&self) -> &str {
        "auto"
    }

    /// The larger of `direct`'s and inverse-preconditioned `pcg`'s, either of which it may run.
    fn memory_estimate(&self, cols: usize) -> MemoryEstimate {
        let threads = self.settings.parallelism.threads();
        MemoryEstimate { fixed: Bytes::f64s(cols * cols) * (1 + threads), per_row: Bytes::f64s(12 * cols) }
    }

    #[allow(clippy::indexing_slicing)] // row indices come from 0..m and from the sub-problem built over them.
    fn solve(&self, problem: &LayerProblem, warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution> {
        let par = self.settings.parallelism;
        let direct = DirectSolver::new(DirectSettings::default().parallelism(par));
        let AutoPlan::Pcg { max_iterations } = self.plan(problem.mask()) else {
            let mut solution = direct.solve(problem, None)?;
            solution.report.solver = self.name().to_string();
            return Ok(solution);
        };
        let start = Instant::now();
        let pcg = PcgSettings {
            iterative: IterativeSettings { tolerance: self.settings.tolerance, max_iterations, parallelism: par },
            preconditioner: Preconditioner::InverseHessian,
            precision: Precision::Mixed,
        };
        let rows: Vec<usize> = (0..problem.rows()).collect();
        let x0 = starting_point(problem, warm_start)?;
        let mut outcome = par.install(|| run_pcg(problem, &rows, x0, &pcg))??;
        let left: Vec<usize> =
            rows.iter().copied().filter(|&i| outcome.status[i] != RowStatus::ReachedTolerance).collect();
        if !left.is_empty() {
            let (w, h, mask) = (problem.weight().select(Axis(0), &left), problem.hessian().clone(), problem.mask());
            let sub_mask = Mask::from_fn(left.len(), problem.cols(), |r, j| mask.is_pruned(left[r], j));
            let sub = direct.solve(&LayerProblem::new(w, h, sub_mask)?, None)?;
            for (r, &i) in left.iter().enumerate() {
                outcome.weight.row_mut(i).assign(&sub.weight.row(r));
                outcome.status[i] = sub.report.rows[r].status;
                outcome.iterations[i] += 1;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let weight: Array2<f64> = outcome.weight;
        let report = par.install(|| {
            evaluate(self.name(), problem, weight.view(), &outcome.iterations, &outcome.status, seconds, par)
        })?;
        Ok(Solution { weight, report })
    }
}
