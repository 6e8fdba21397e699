//! The `QpSolver` family: every solver takes a [`LayerProblem`] and returns a [`Solution`] whose
//! report certifies it (objective, KKT residual, iterations, status, time).

mod admm;
mod auto;
mod batched;
mod cg;
mod chunked;
#[cfg(feature = "cuda")]
pub mod cuda;
mod direct;
mod dual_pcg;
mod evaluate;
mod pcg;
mod pdhg;
mod sparsegpt;
mod spec;

use ndarray::ArrayView2;

pub use crate::mask::{SparseGptMasker, SparseGptSettings};
pub use admm::{AdmmSettings, AdmmSolver};
pub use auto::{AutoPlan, AutoSettings, AutoSolver};
pub use batched::{DEFAULT_TOLERANCE, IterativeSettings};
pub use chunked::{RowChunked, problem_memory};
pub use direct::{DirectForm, DirectSettings, DirectSolver, direct_flops};
pub use dual_pcg::{DualPcgSettings, DualPcgSolver};
pub use evaluate::{enforce_mask, evaluate};
pub use pcg::{PcgSettings, PcgSolver, Precision, Preconditioner};
pub use pdhg::{PdhgSettings, PdhgSolver};
pub use sparsegpt::SparseGptSolver;
pub use spec::SolverSpec;

use crate::error::Result;
use crate::memory::{Bytes, MemoryEstimate};
use crate::problem::{LayerProblem, Solution};

/// Reconstructs the kept weights of every row of a layer.
pub trait QpSolver {
    /// Short name used in reports and on the command line.
    fn name(&self) -> &str;

    /// Solves every row of `problem`. `warm_start` (m×n), where given, is a starting point that
    /// iterative solvers may use; exact solvers ignore it.
    fn solve(&self, problem: &LayerProblem, warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution>;

    /// Working memory of a solve over `cols` inputs, beyond the problem itself: what a memory
    /// budget plans row chunks with ([`RowChunked`]). The default is a conservative guess.
    fn memory_estimate(&self, cols: usize) -> MemoryEstimate {
        MemoryEstimate { fixed: Bytes::f64s(2 * cols * cols), per_row: Bytes::f64s(16 * cols) }
    }
}
