//! SparseGPT's weight update for a given mask (solver name `sparsegpt`): the OBS sweep of
//! [`crate::mask::sparsegpt`] with the pruned set given instead of chosen.

use std::time::Instant;

use ndarray::ArrayView2;

use super::{QpSolver, evaluate};
use crate::error::Result;
use crate::mask::sparsegpt::{Selection, SparseGptSettings, sweep};
use crate::memory::{Bytes, MemoryEstimate};
use crate::problem::{LayerProblem, RowStatus, Solution};

/// SparseGPT's weight update for a given mask (solver name `sparsegpt`).
#[derive(Clone, Debug, Default)]
pub struct SparseGptSolver {
    settings: SparseGptSettings,
}

impl SparseGptSolver {
    /// An updater with these settings.
    pub fn new(settings: SparseGptSettings) -> Self {
        Self { settings }
    }
}

impl QpSolver for SparseGptSolver {
    fn name(&self) -> &str {
        "sparsegpt"
    }

    /// H, its inverse and Cholesky factor.
    fn memory_estimate(&self, cols: usize) -> MemoryEstimate {
        MemoryEstimate { fixed: Bytes::f64s(4 * cols * cols), per_row: Bytes::f64s(4 * cols) }
    }

    fn solve(&self, problem: &LayerProblem, _warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution> {
        let par = self.settings.parallelism;
        let start = Instant::now();
        let (_, weight) = sweep(problem.weight(), problem.hessian(), Selection::Given(problem.mask()), &self.settings)?;
        let seconds = start.elapsed().as_secs_f64();
        let m = problem.rows();
        let report = par.install(|| {
            evaluate(self.name(), problem, weight.view(), &vec![1; m], &vec![RowStatus::Solved; m], seconds, par)
        })?;
        Ok(Solution { weight, report })
    }
}
