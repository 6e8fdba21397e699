//! Hessian accumulation on a CUDA device: `H ← β H + α XᵀX` by cuBLAS SYRK, the same running
//! mean as [`super::CpuHessianAccumulator`], in f64 or f32 ([`HessianPrecision`]).

use std::sync::Arc;

use cudarc::driver::CudaSlice;
use ndarray::{Array2, ArrayView2};

use super::{HessianAccumulator, HessianPrecision, RunningMean};
use crate::backend::cuda::CudaBackend;
use crate::error::{OptimaError, Result};
use crate::problem::Hessian;

enum Sum {
    F32(CudaSlice<f32>),
    F64(CudaSlice<f64>),
}

/// Accumulates `XᵀX / N` on the device; [`HessianAccumulator::finish`] returns the same
/// [`Hessian`] type as the CPU accumulator (copied back and converted to f64).
pub struct CudaHessianAccumulator {
    backend: Arc<CudaBackend>,
    n: usize,
    mean: RunningMean,
    sum: Sum,
}

impl CudaHessianAccumulator {
    /// An empty accumulator for `n` inputs on `backend`.
    pub fn new(backend: Arc<CudaBackend>, n: usize, precision: HessianPrecision) -> Result<Self> {
        if n == 0 {
            return Err(OptimaError::Empty("a Hessian needs at least one input".into()));
        }
        let sum = {
            let _session = backend.session()?;
            match precision {
                HessianPrecision::F32 => Sum::F32(backend.zeros(n * n)?),
                HessianPrecision::F64 => Sum::F64(backend.zeros(n * n)?),
            }
        };
        Ok(Self { backend, n, mean: RunningMean::new(n), sum })
    }
}

impl HessianAccumulator for CudaHessianAccumulator {
    fn add_batch(&mut self, x: ArrayView2<'_, f32>) -> Result<()> {
        let Some((beta, alpha)) = self.mean.weights_for(x)? else { return Ok(()) };
        let (batch, n) = x.dim();
        let _session = self.backend.session()?;
        // Row-major tokens × n is the column-major n × tokens matrix Xᵀ: SYRK of it gives XᵀX.
        match &mut self.sum {
            Sum::F32(sum) => {
                let host: Vec<f32> = x.iter().copied().collect();
                let dev = self.backend.upload(&host)?;
                self.backend.syrk_f32(&dev, sum, n, alpha as f32, beta as f32)?;
            }
            Sum::F64(sum) => {
                let host: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
                let dev = self.backend.upload(&host)?;
                self.backend.syrk_f64(&dev, sum, n, alpha, beta)?;
            }
        }
        self.backend.note_memory();
        self.backend.synchronize()?;
        self.mean.added(batch);
        Ok(())
    }

    fn tokens(&self) -> usize {
        self.mean.tokens()
    }

    #[allow(clippy::indexing_slicing)] // the downloaded sum is the n × n device buffer, so r + c·n < n².
    fn finish(self, percdamp: f64) -> Result<Hessian> {
        let n = self.n;
        let download = || -> Result<Array2<f64>> {
            let values: Vec<f64> = {
                let _session = self.backend.session()?;
                match &self.sum {
                    Sum::F32(sum) => self.backend.download(sum)?.into_iter().map(f64::from).collect(),
                    Sum::F64(sum) => self.backend.download(sum)?,
                }
            };
            // The lower triangle of the column-major sum: element (i, j), i ≥ j, at i + j·n.
            Ok(Array2::from_shape_fn((n, n), |(i, j)| {
                let (r, c) = if i >= j { (i, j) } else { (j, i) };
                values[r + c * n]
            }))
        };
        self.mean.finish(download, percdamp)
    }
}
