//! Solvers on a CUDA device (feature `cuda`): `pcg` (mixed precision with f64 refinement),
//! `direct` (batched gathers and cuSOLVER Cholesky) and `auto` (the device's cost model). Their
//! answers get the same certificate as the CPU's: [`crate::solve::evaluate`] on the returned
//! weights, pruned entries exactly 0.

mod auto;
mod direct;
mod pcg;

pub use auto::{CudaAutoSolver, DeviceCostModel};
pub use direct::{CudaDirectSolver, DEFAULT_BLOCK_BUDGET};
pub use pcg::{CudaPcgSettings, CudaPcgSolver};
