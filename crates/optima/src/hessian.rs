//! Streaming accumulation of `H = XᵀX / N` from calibration activations.

use faer::Mat;
use faer_ext::IntoNdarray;
use ndarray::ArrayView2;

use crate::backend::{Parallelism, cpu::add_gram};
use crate::error::{OptimaError, Result};
use crate::problem::Hessian;

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
pub use cuda::{CudaHessianAccumulator, HessianPrecision};

/// Builds a layer Hessian from batches of inputs (tokens × n), batch after batch.
pub trait HessianAccumulator {
    /// Adds a batch of `tokens × n` activations.
    fn add_batch(&mut self, x: ArrayView2<'_, f32>) -> Result<()>;

    /// Tokens seen so far.
    fn tokens(&self) -> usize;

    /// The mean `XᵀX / N`, damped with relative damping `percdamp`.
    fn finish(self, percdamp: f64) -> Result<Hessian>;
}

/// CPU accumulator: a running mean in f64, so any batch sizes give the same `H` to rounding.
#[derive(Clone, Debug)]
pub struct CpuHessianAccumulator {
    sum: Mat<f64>,
    tokens: usize,
    parallelism: Parallelism,
}

impl CpuHessianAccumulator {
    /// An empty accumulator for `n` inputs.
    pub fn new(n: usize, parallelism: Parallelism) -> Self {
        Self { sum: Mat::zeros(n, n), tokens: 0, parallelism }
    }
}

impl HessianAccumulator for CpuHessianAccumulator {
    #[allow(clippy::indexing_slicing)] // x is batch × n, checked against the accumulator width above.
    fn add_batch(&mut self, x: ArrayView2<'_, f32>) -> Result<()> {
        let (batch, n) = x.dim();
        if n != self.sum.nrows() {
            return Err(OptimaError::shape(
                "activation batch",
                format!("tokens × {}", self.sum.nrows()),
                format!("{batch}×{n}"),
            ));
        }
        if batch == 0 {
            return Ok(());
        }
        if let Some(((row, col), &v)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(OptimaError::NonFinite { what: "activations".into(), row, col, value: f64::from(v) });
        }
        let x64 = Mat::<f64>::from_fn(batch, n, |t, j| f64::from(x[[t, j]]));
        let total = self.tokens + batch;
        let beta = self.tokens as f64 / total as f64;
        add_gram(self.sum.as_mut(), beta, x64.as_ref(), 1.0 / total as f64, self.parallelism);
        self.tokens = total;
        Ok(())
    }

    fn tokens(&self) -> usize {
        self.tokens
    }

    fn finish(self, percdamp: f64) -> Result<Hessian> {
        if self.tokens == 0 {
            return Err(OptimaError::Empty("no calibration tokens were added to the Hessian".into()));
        }
        let mean = self.sum.as_ref().into_ndarray().to_owned();
        Hessian::new(mean, percdamp)
    }
}
