//! Compute backends: the kernels solvers are written against.
//!
//! [`cpu`] uses faer for GEMM and Cholesky with rayon across rows. `cuda` (feature `cuda`) holds
//! the GPU context, cuBLAS/cuSOLVER handles and the NVRTC kernels. [`Device`] names one of them
//! as a value.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
mod device;

pub use cpu::Parallelism;
pub use device::{Device, cuda_not_compiled};
