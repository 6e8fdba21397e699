//! Compute backends: the kernels solvers are written against.
//!
//! [`cpu`] uses faer for GEMM and Cholesky with rayon across rows.

pub mod cpu;

pub use cpu::Parallelism;
