//! Solvers on a CUDA device (feature `cuda`): `pcg` (mixed precision with f64 refinement),
//! `direct` (batched gathers and cuSOLVER Cholesky) and `auto` (the device's cost model). Their
//! answers get the same certificate as the CPU's: [`crate::solve::evaluate`] on the returned
//! weights, pruned entries exactly 0.

mod auto;
mod direct;
mod pcg;

use std::sync::Arc;

pub use auto::{CudaAutoSolver, DeviceCostModel};
pub use direct::{CudaDirectSolver, DEFAULT_BLOCK_BUDGET};
pub use pcg::{CudaPcgSettings, CudaPcgSolver};

use super::{AutoSettings, DirectSettings, IterativeSettings, PcgSettings, Precision, QpSolver, SolverOptions};
use crate::backend::cuda::CudaBackend;
use crate::error::{OptimaError, Result};

/// Names of the solvers that run on the device.
pub const CUDA_SOLVER_NAMES: &[&str] = &["auto", "direct", "pcg"];

/// A device solver by name on `backend`, configured from `options`.
pub fn cuda_solver_by_name(
    backend: Arc<CudaBackend>,
    name: &str,
    options: &SolverOptions,
) -> Result<Box<dyn QpSolver + Send + Sync>> {
    match name {
        "direct" => {
            Ok(Box::new(CudaDirectSolver::new(backend, DirectSettings::default().parallelism(options.parallelism))))
        }
        "pcg" => Ok(Box::new(CudaPcgSolver::new(
            backend,
            CudaPcgSettings {
                pcg: PcgSettings {
                    iterative: IterativeSettings {
                        tolerance: options.tolerance,
                        max_iterations: options
                            .max_iterations
                            .unwrap_or(PcgSettings::default().iterative.max_iterations),
                        parallelism: options.parallelism,
                    },
                    preconditioner: options.preconditioner,
                    precision: Precision::Mixed,
                },
                tf32: false,
            },
        ))),
        "auto" => Ok(Box::new(CudaAutoSolver::new(
            backend,
            AutoSettings { tolerance: options.tolerance, parallelism: options.parallelism, plan_override: None },
        ))),
        other => Err(OptimaError::InvalidSetting(format!(
            "solver {other:?} does not run on a CUDA device; there: {}",
            CUDA_SOLVER_NAMES.join(", ")
        ))),
    }
}
