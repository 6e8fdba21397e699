//! # optima — optimal one-shot pruning of large language models
//!
//! After a pruning mask is chosen for a linear layer, the kept weights are re-fitted so the
//! layer's output changes as little as possible on calibration data. That is one small quadratic
//! program per output row, all sharing the layer's Hessian `H = XᵀX / N`:
//!
//! ```text
//! minimize (ŵ − w_i)ᵀ H (ŵ − w_i)   subject to   ŵ_j = 0 for every pruned j
//! ```
//!
//! optima solves these exactly (or to a tolerance the caller picks) behind three traits:
//! [`HessianAccumulator`] builds `H` from activations, [`Masker`] picks the mask, and
//! [`QpSolver`] reconstructs the weights and returns a [`SolveReport`] that certifies the answer
//! (objective, KKT residual, status per row). Solvers are built from [`SolverSpec`], one variant
//! per solver with its settings, validated once for a [`Device`] (the CPU, or a CUDA GPU with the
//! `cuda` feature).
//!
//! The math is in the repository's `docs/math.md`, the solvers and their costs in
//! `docs/solvers.md`, the layers of this crate in `docs/architecture.md`.
//!
//! ```
//! use optima::prelude::*;
//! use ndarray::Array2;
//!
//! # fn main() -> optima::Result<()> {
//! // Activations you already have: 64 tokens × 16 inputs.
//! let x = Array2::from_shape_fn((64, 16), |(t, j)| ((t * 7 + j * 3) % 11) as f32 - 5.0);
//! let mut acc = CpuHessianAccumulator::new(16, Parallelism::AllCores);
//! acc.add_batch(x.view())?;
//! let hessian = acc.finish(DEFAULT_PERCDAMP)?;
//!
//! let weight = Array2::from_shape_fn((4, 16), |(i, j)| ((i + 2 * j) % 5) as f64 - 2.0);
//! let mask = WandaMasker.select(weight.view(), &hessian, &"2:4".parse()?)?;
//! let problem = LayerProblem::new(weight, hessian, mask)?;
//! let solution = DirectSolver::default().solve(&problem, None)?;
//! assert!(solution.report.error_after <= solution.report.error_before);
//! # Ok(()) }
//! ```

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]
#![warn(missing_docs)]

pub mod allocation;
pub mod backend;
pub mod bytes;
pub mod error;
pub mod hessian;
pub mod io;
pub mod mask;
pub mod memory;
pub mod problem;
pub mod solve;
pub mod synthetic;

pub use backend::Device;
pub use backend::Parallelism;
pub use error::{OptimaError, Result};
pub use hessian::{CpuHessianAccumulator, DiagonalAccumulator, HessianAccumulator, HessianPrecision};
pub use mask::{DiagonalMasker, MagnitudeMasker, Masker, WandaMasker};
pub use problem::{
    DEFAULT_PERCDAMP, Hessian, LayerProblem, Mask, RatioScope, RowReport, RowStatus, Solution, SolveReport,
    SparsityPattern,
};
pub use solve::{AutoSettings, AutoSolver, DirectForm, DirectSettings, DirectSolver, QpSolver, SolverSpec};

/// Everything a caller usually needs, in one import.
pub mod prelude {
    pub use crate::{
        AutoSettings, AutoSolver, CpuHessianAccumulator, DEFAULT_PERCDAMP, Device, DiagonalAccumulator, DiagonalMasker,
        DirectSettings, DirectSolver, Hessian, HessianAccumulator, HessianPrecision, LayerProblem, MagnitudeMasker,
        Mask, Masker, Parallelism, QpSolver, Solution, SolveReport, SolverSpec, SparsityPattern, WandaMasker,
    };
}
