//! Streaming accumulation of `H = XᵀX / N` from calibration activations.

use faer::{Accum, Mat};
use faer_ext::IntoNdarray;
use ndarray::ArrayView2;

use crate::backend::{
    Parallelism,
    cpu::{gram_lower, mirror_lower},
};
use crate::error::{OptimaError, Result};
use crate::problem::Hessian;

#[cfg(feature = "cuda")]
mod cuda;
mod target;

#[cfg(feature = "cuda")]
pub use cuda::CudaHessianAccumulator;
pub use target::{CrossAccumulator, dense_target};

/// Arithmetic of a Hessian accumulation's products `XᵀX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum HessianPrecision {
    /// f64 products and sums (the default): the CPU's and a device's agree to rounding.
    #[default]
    F64,
    /// f32 products (exact f32, no TF32), at about twice a CPU's f64 rate: relative error about
    /// `1e-6` of `max |H|`, far below the damping's `1e-2` of its mean diagonal. The CPU adds
    /// each batch's f32 product into its f64 sum and keeps the diagonal exact (so diagonal masks
    /// are the same bits as at f64); a device keeps the whole sum in f32.
    F32,
}

impl std::str::FromStr for HessianPrecision {
    type Err = OptimaError;

    /// `f64` or `f32`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f64" => Ok(Self::F64),
            "f32" => Ok(Self::F32),
            other => {
                Err(OptimaError::InvalidSetting(format!("unknown Hessian precision {other:?}; choose f64 or f32")))
            }
        }
    }
}

/// Builds a layer Hessian from batches of inputs (tokens × n), batch after batch.
pub trait HessianAccumulator {
    /// Adds a batch of `tokens × n` activations.
    fn add_batch(&mut self, x: ArrayView2<'_, f32>) -> Result<()>;

    /// Tokens seen so far.
    fn tokens(&self) -> usize;

    /// The mean `XᵀX / N`, damped with relative damping `percdamp`.
    fn finish(self, percdamp: f64) -> Result<Hessian>;
}

/// What every accumulator checks and counts, whatever computes its sums: the batch's width and
/// values, the tokens so far, and the weights of the running mean `H ← β H + α XᵀX` with
/// `β = N / (N + B)`, `α = 1 / (N + B)` (so any batch sizes give the same `H` to rounding).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunningMean {
    n: usize,
    tokens: usize,
}

impl RunningMean {
    pub(crate) fn new(n: usize) -> Self {
        Self { n, tokens: 0 }
    }

    /// Checks a `tokens × n` batch: `Ok(None)` for an empty one, else the `(β, α)` to add it with.
    /// Call [`RunningMean::added`] once the sum holds it.
    pub(crate) fn weights_for(&self, x: ArrayView2<'_, f32>) -> Result<Option<(f64, f64)>> {
        let (batch, n) = x.dim();
        if n != self.n {
            return Err(OptimaError::shape("activation batch", format!("tokens × {}", self.n), format!("{batch}×{n}")));
        }
        if batch == 0 {
            return Ok(None);
        }
        if let Some(((row, col), &v)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(OptimaError::NonFinite { what: "activations".into(), row, col, value: f64::from(v) });
        }
        let total = (self.tokens + batch) as f64;
        Ok(Some((self.tokens as f64 / total, 1.0 / total)))
    }

    /// Counts a batch of `batch` tokens the sum now holds.
    pub(crate) fn added(&mut self, batch: usize) {
        self.tokens += batch;
    }

    pub(crate) fn tokens(&self) -> usize {
        self.tokens
    }

    /// The mean as a damped [`Hessian`], once at least one token was added.
    pub(crate) fn finish(&self, mean: impl FnOnce() -> Result<ndarray::Array2<f64>>, percdamp: f64) -> Result<Hessian> {
        if self.tokens == 0 {
            return Err(OptimaError::Empty("no calibration tokens were added to the Hessian".into()));
        }
        Hessian::new(mean()?, percdamp)
    }
}

/// The diagonal of `H` alone, `H_jj = ‖X_j‖₂²/N`: what Wanda's and the magnitude masks need
/// ([`crate::mask::DiagonalMasker`]), at `n` flops a token where the whole `H` costs `n²/2`.
///
/// Each `x_tj²` is exact in f64 (an f32 squared), and the sums run token by token in the order
/// the batches came. [`CpuHessianAccumulator`] takes its diagonal from this same sum, so the
/// diagonal of its `H` ([`Hessian::raw_diag`]) is bit-identical to [`DiagonalAccumulator::finish`]
/// on the same batches, and a Wanda mask chosen from either is the same mask.
#[derive(Clone, Debug)]
pub struct DiagonalAccumulator {
    sums: Vec<f64>,
    mean: RunningMean,
}

impl DiagonalAccumulator {
    /// An empty accumulator for `n` inputs.
    pub fn new(n: usize) -> Self {
        Self { sums: vec![0.0; n], mean: RunningMean::new(n) }
    }

    /// Adds a batch of `tokens × n` activations (checked as every accumulator checks them).
    pub fn add_batch(&mut self, x: ArrayView2<'_, f32>) -> Result<()> {
        let Some(_) = self.mean.weights_for(x)? else { return Ok(()) };
        self.add_checked(x);
        Ok(())
    }

    /// Adds a batch that [`RunningMean::weights_for`] accepted.
    fn add_checked(&mut self, x: ArrayView2<'_, f32>) {
        for row in x.rows() {
            self.sums.iter_mut().zip(row).for_each(|(s, &v)| *s += f64::from(v) * f64::from(v));
        }
        self.mean.added(x.nrows());
    }

    /// Tokens seen so far.
    pub fn tokens(&self) -> usize {
        self.mean.tokens()
    }

    /// `diag(XᵀX)/N`, undamped (the [`Hessian::raw_diag`] of the whole `H`).
    pub fn finish(self) -> Result<Vec<f64>> {
        if self.mean.tokens() == 0 {
            return Err(OptimaError::Empty("no calibration tokens were added to the Hessian".into()));
        }
        let tokens = self.mean.tokens() as f64;
        Ok(self.sums.into_iter().map(|s| s / tokens).collect())
    }
}

/// CPU accumulator: the sum of `XᵀX` in f64 (its lower triangle, one SYRK-shaped product per
/// batch, in f64 or, at [`HessianPrecision::F32`], in f32 and then added), divided by the token
/// count at the end, so any batch sizes give the same `H` to rounding. Its diagonal is a
/// [`DiagonalAccumulator`]'s (the SYRK's own diagonal, summed in another order, is replaced), so a
/// diagonal-only run's masks match a full one's bit for bit, at either precision.
#[derive(Clone, Debug)]
pub struct CpuHessianAccumulator {
    sum: Mat<f64>,
    /// The diagonal, and the batch checks and token count.
    diagonal: DiagonalAccumulator,
    parallelism: Parallelism,
    /// At f32: the batch's product, reused batch after batch.
    batch: Option<Mat<f32>>,
}

impl CpuHessianAccumulator {
    /// An empty accumulator for `n` inputs, with f64 products.
    pub fn new(n: usize, parallelism: Parallelism) -> Self {
        Self::with_precision(n, parallelism, HessianPrecision::F64)
    }

    /// An empty accumulator for `n` inputs whose products run at `precision`.
    pub fn with_precision(n: usize, parallelism: Parallelism, precision: HessianPrecision) -> Self {
        let batch = (precision == HessianPrecision::F32).then(|| Mat::zeros(n, n));
        Self { sum: Mat::zeros(n, n), diagonal: DiagonalAccumulator::new(n), parallelism, batch }
    }

    /// The precision of its products.
    pub fn precision(&self) -> HessianPrecision {
        if self.batch.is_some() { HessianPrecision::F32 } else { HessianPrecision::F64 }
    }
}

/// `xᵀ` (n × tokens), one token per column, read row by row from `x`.
fn transposed<T: faer::traits::ComplexField + Copy>(x: ArrayView2<'_, f32>, convert: impl Fn(f32) -> T) -> Mat<T> {
    let (batch, n) = x.dim();
    let mut xt = Mat::<T>::zeros(n, batch);
    for (t, row) in x.outer_iter().enumerate() {
        xt.col_mut(t).iter_mut().zip(row.iter()).for_each(|(d, &v)| *d = convert(v));
    }
    xt
}

/// `xᵀ` in f64 (n × tokens), one token per column, read row by row from `x`.
pub(crate) fn transposed_f64(x: ArrayView2<'_, f32>) -> Mat<f64> {
    transposed(x, f64::from)
}

impl HessianAccumulator for CpuHessianAccumulator {
    fn add_batch(&mut self, x: ArrayView2<'_, f32>) -> Result<()> {
        let Some(_) = self.diagonal.mean.weights_for(x)? else { return Ok(()) };
        let par = self.parallelism;
        match self.batch.as_mut() {
            None => gram_lower(self.sum.as_mut(), Accum::Add, transposed_f64(x).as_ref(), 1.0, par),
            Some(batch) => {
                gram_lower(batch.as_mut(), Accum::Replace, transposed(x, |v| v).as_ref(), 1.0, par);
                let n = batch.ncols();
                for j in 0..n {
                    let (dst, src) = (self.sum.as_mut().col_mut(j), batch.as_ref().col(j));
                    dst.subrows_mut(j, n - j).iter_mut().zip(src.subrows(j, n - j).iter()).for_each(|(d, &v)| {
                        *d += f64::from(v);
                    });
                }
            }
        }
        self.diagonal.add_checked(x);
        Ok(())
    }

    fn tokens(&self) -> usize {
        self.diagonal.tokens()
    }

    fn finish(self, percdamp: f64) -> Result<Hessian> {
        let mean = self.diagonal.mean;
        let tokens = mean.tokens() as f64;
        let mut sum = self.sum;
        let diagonal = self.diagonal;
        mean.finish(
            || {
                mirror_lower(sum.as_mut());
                let mut h = sum.as_ref().into_ndarray().mapv(|v| v / tokens);
                h.diag_mut().assign(&ndarray::Array1::from(diagonal.finish()?));
                Ok(h)
            },
            percdamp,
        )
    }
}

/// The accumulator of a device: the CPU's, or (feature `cuda`) a CUDA device's in f64, which
/// agrees with the CPU's to rounding. What a pipeline holds when its device is a run-time choice.
#[non_exhaustive]
pub enum DeviceHessianAccumulator {
    /// On the CPU.
    Cpu(CpuHessianAccumulator),
    /// On a CUDA device.
    #[cfg(feature = "cuda")]
    Cuda(CudaHessianAccumulator),
}

impl DeviceHessianAccumulator {
    /// An empty accumulator for `n` inputs on the CPU, its products at `precision`.
    pub fn cpu(n: usize, parallelism: Parallelism, precision: HessianPrecision) -> Self {
        Self::Cpu(CpuHessianAccumulator::with_precision(n, parallelism, precision))
    }

    /// An empty accumulator for `n` inputs on an opened CUDA device, at `precision`.
    #[cfg(feature = "cuda")]
    pub fn cuda(
        backend: std::sync::Arc<crate::backend::cuda::CudaBackend>,
        n: usize,
        precision: HessianPrecision,
    ) -> Result<Self> {
        Ok(Self::Cuda(CudaHessianAccumulator::new(backend, n, precision)?))
    }
}

impl HessianAccumulator for DeviceHessianAccumulator {
    fn add_batch(&mut self, x: ArrayView2<'_, f32>) -> Result<()> {
        match self {
            Self::Cpu(a) => a.add_batch(x),
            #[cfg(feature = "cuda")]
            Self::Cuda(a) => a.add_batch(x),
        }
    }

    fn tokens(&self) -> usize {
        match self {
            Self::Cpu(a) => a.tokens(),
            #[cfg(feature = "cuda")]
            Self::Cuda(a) => a.tokens(),
        }
    }

    fn finish(self, percdamp: f64) -> Result<Hessian> {
        match self {
            Self::Cpu(a) => a.finish(percdamp),
            #[cfg(feature = "cuda")]
            Self::Cuda(a) => a.finish(percdamp),
        }
    }
}
