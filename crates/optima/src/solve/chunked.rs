//! Solving a layer in row chunks, so that a solve fits a memory budget: rows are independent
//! QPs sharing `H`, so chunks are solved one after another and their reports concatenated.

use std::sync::Arc;

use ndarray::{Array2, ArrayView2, s};

use super::QpSolver;
use crate::error::{OptimaError, Result};
use crate::memory::{Bytes, MemoryEstimate};
use crate::problem::{LayerProblem, Solution, SolveReport};

/// Memory of the problem itself per row, beyond `H`: the weights, the chunk's copy, the answer,
/// and the report's three GEMMs and differences (`evaluate`).
pub fn problem_memory(cols: usize) -> MemoryEstimate {
    MemoryEstimate { fixed: Bytes::f64s(cols * cols), per_row: Bytes::f64s(9 * cols) + Bytes(cols as u64 / 8 + 8) }
}

/// Any solver, run on at most `rows_per_chunk` rows at a time (shared, so that one solver and its
/// set-up, a GPU context say, serves every layer of a run).
pub struct RowChunked {
    inner: Arc<dyn QpSolver + Send + Sync>,
    rows_per_chunk: usize,
}

impl RowChunked {
    /// `inner` on chunks of `rows_per_chunk ≥ 1` rows.
    pub fn new(inner: Arc<dyn QpSolver + Send + Sync>, rows_per_chunk: usize) -> Result<Self> {
        if rows_per_chunk == 0 {
            return Err(OptimaError::InvalidSetting("rows per chunk must be at least 1".into()));
        }
        Ok(Self { inner, rows_per_chunk })
    }

    /// `inner` on the largest chunks of a `rows × cols` layer that fit in `budget` (problem and
    /// solver working memory together); a [`OptimaError::MemoryBudget`] error when one row does
    /// not fit, before any work.
    pub fn for_budget(
        inner: Arc<dyn QpSolver + Send + Sync>,
        rows: usize,
        cols: usize,
        budget: Bytes,
        what: &str,
    ) -> Result<Self> {
        let estimate = problem_memory(cols).plus(inner.memory_estimate(cols));
        let rows_per_chunk = estimate.rows_that_fit(budget, rows, what)?;
        Self::new(inner, rows_per_chunk)
    }

    /// Rows solved at once.
    pub fn rows_per_chunk(&self) -> usize {
        self.rows_per_chunk
    }
}

impl QpSolver for RowChunked {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn memory_estimate(&self, cols: usize) -> MemoryEstimate {
        self.inner.memory_estimate(cols)
    }

    fn solve(&self, problem: &LayerProblem, warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution> {
        let m = problem.rows();
        if m <= self.rows_per_chunk {
            return self.inner.solve(problem, warm_start);
        }
        if let Some(w) = warm_start {
            if w.dim() != problem.weight().dim() {
                return Err(OptimaError::shape(
                    "warm start",
                    format!("{:?}", problem.weight().dim()),
                    format!("{:?}", w.dim()),
                ));
            }
        }
        let mut weight = Array2::zeros((m, problem.cols()));
        let mut reports = Vec::with_capacity(m.div_ceil(self.rows_per_chunk));
        let mut start = 0;
        while start < m {
            let end = (start + self.rows_per_chunk).min(m);
            let chunk = problem.row_chunk(start..end)?;
            let warm = warm_start.map(|w| w.slice_move(s![start..end, ..]));
            let solution = self.inner.solve(&chunk, warm)?;
            weight.slice_mut(s![start..end, ..]).assign(&solution.weight);
            reports.push(solution.report);
            start = end;
        }
        let report = SolveReport::concat(reports).ok_or_else(|| OptimaError::Empty("a layer with no rows".into()))?;
        Ok(Solution { weight, report })
    }
}
