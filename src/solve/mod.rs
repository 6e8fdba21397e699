//! The `QpSolver` family: every solver takes a [`LayerProblem`] and returns a [`Solution`] whose
//! report certifies it (objective, KKT residual, iterations, status, time).

mod direct;
mod evaluate;

use ndarray::ArrayView2;

pub use direct::{DirectForm, DirectSettings, DirectSolver, direct_flops};
pub use evaluate::{enforce_mask, evaluate};

use crate::error::Result;
use crate::problem::{LayerProblem, Solution};

/// Reconstructs the kept weights of every row of a layer.
pub trait QpSolver {
    /// Short name used in reports and on the command line.
    fn name(&self) -> &str;

    /// Solves every row of `problem`. `warm_start` (m×n), where given, is a starting point that
    /// iterative solvers may use; exact solvers ignore it.
    fn solve(&self, problem: &LayerProblem, warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution>;
}
