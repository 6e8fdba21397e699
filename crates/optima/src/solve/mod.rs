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

use crate::backend::Device;
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

/// What `solver_by_name` needs to configure any solver from the command line or a bench.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SolverOptions {
    /// Relative KKT tolerance of iterative solvers.
    pub tolerance: f64,
    /// Iteration cap of iterative solvers (`None`: each solver's default).
    pub max_iterations: Option<usize>,
    /// Threads.
    pub parallelism: crate::Parallelism,
    /// Closed form of `direct`.
    pub form: DirectForm,
    /// Preconditioner of `pcg`.
    pub preconditioner: Preconditioner,
    /// Precision of `pcg`'s and `dual-pcg`'s products (`None`: each solver's default, double for
    /// `pcg` and mixed for `dual-pcg`; `auto` always runs mixed).
    pub precision: Option<Precision>,
    /// `eps_abs = eps_rel` of `pdhg` (`None`: the paper's 1e-2).
    pub pdhg_tolerance: Option<f64>,
}

impl Default for SolverOptions {
    fn default() -> Self {
        Self {
            tolerance: DEFAULT_TOLERANCE,
            max_iterations: None,
            parallelism: crate::Parallelism::AllCores,
            form: DirectForm::Auto,
            preconditioner: Preconditioner::Jacobi,
            precision: None,
            pdhg_tolerance: None,
        }
    }
}

/// Names accepted by [`solver_by_name`].
pub const SOLVER_NAMES: &[&str] = &["auto", "direct", "dual-pcg", "pcg", "admm", "pdhg", "sparsegpt"];

/// A solver by name, configured from `options`.
pub fn solver_by_name(name: &str, options: &SolverOptions) -> Result<Box<dyn QpSolver + Send + Sync>> {
    let iterative = |default_cap: usize| IterativeSettings {
        tolerance: options.tolerance,
        max_iterations: options.max_iterations.unwrap_or(default_cap),
        parallelism: options.parallelism,
    };
    match name {
        "direct" => Ok(Box::new(DirectSolver::new(
            DirectSettings::default().parallelism(options.parallelism).form(options.form),
        ))),
        "pcg" => Ok(Box::new(PcgSolver::new(PcgSettings {
            iterative: iterative(PcgSettings::default().iterative.max_iterations),
            preconditioner: options.preconditioner,
            precision: options.precision.unwrap_or(PcgSettings::default().precision),
        }))),
        "dual-pcg" => Ok(Box::new(DualPcgSolver::new(DualPcgSettings {
            iterative: iterative(DualPcgSettings::default().iterative.max_iterations),
            precision: options.precision.unwrap_or(DualPcgSettings::default().precision),
        }))),
        "admm" => Ok(Box::new(AdmmSolver::new(AdmmSettings {
            iterative: iterative(AdmmSettings::default().iterative.max_iterations),
            ..AdmmSettings::default()
        }))),
        "auto" => Ok(Box::new(AutoSolver::new(AutoSettings {
            tolerance: options.tolerance,
            parallelism: options.parallelism,
            plan_override: None,
        }))),
        "pdhg" => {
            let mut settings = PdhgSettings::default();
            settings.iterative.parallelism = options.parallelism;
            if let Some(cap) = options.max_iterations {
                settings.iterative.max_iterations = cap;
            }
            if let Some(eps) = options.pdhg_tolerance {
                settings.eps_abs = eps;
                settings.eps_rel = eps;
            }
            Ok(Box::new(PdhgSolver::new(settings)))
        }
        "sparsegpt" => Ok(Box::new(SparseGptSolver::new(SparseGptSettings {
            parallelism: options.parallelism,
            ..SparseGptSettings::default()
        }))),
        other => Err(crate::OptimaError::InvalidSetting(format!(
            "unknown solver {other:?}; available: {}",
            SOLVER_NAMES.join(", ")
        ))),
    }
}

/// A solver by name on `device`: the CPU's [`solver_by_name`], or on a CUDA device one of
/// `auto`, `direct`, `pcg`. `BackendUnavailable` when the build lacks the `cuda` feature or the
/// machine has no usable GPU; never a panic.
pub fn solver_on(device: Device, name: &str, options: &SolverOptions) -> Result<Box<dyn QpSolver + Send + Sync>> {
    let Device::Cuda { ordinal } = device else {
        return solver_by_name(name, options);
    };
    if !SOLVER_NAMES.contains(&name) {
        return solver_by_name(name, options);
    }
    cuda_solver(ordinal, name, options)
}

#[cfg(feature = "cuda")]
fn cuda_solver(ordinal: usize, name: &str, options: &SolverOptions) -> Result<Box<dyn QpSolver + Send + Sync>> {
    cuda::cuda_solver_by_name(crate::backend::cuda::CudaBackend::new(ordinal)?, name, options)
}

#[cfg(not(feature = "cuda"))]
fn cuda_solver(_ordinal: usize, _name: &str, _options: &SolverOptions) -> Result<Box<dyn QpSolver + Send + Sync>> {
    Err(crate::backend::cuda_not_compiled())
}
