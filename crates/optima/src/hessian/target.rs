//! Dense targets: fit the dense model's output, not the layer's own (docs/math.md, "Dense
//! targets"). With the layer's inputs `X_p` in the pruned model and `X_d` in the dense one,
//! `‖X_d w − X_p ŵ‖²/N + δ‖ŵ − w‖²` is, up to a constant, `(ŵ − w̃)ᵀ H_δ (ŵ − w̃)` with
//! `H_δ = X_pᵀX_p/N + δI`, `C = X_pᵀX_d/N` and `w̃ = H_δ⁻¹ (C + δI) w`: the same per-row QP as
//! the layer objective with a corrected target, so every solver and certificate applies as is.
//! (`δ` is the Hessian's absolute damping; it pulls `ŵ` towards the dense `w`.)

#![allow(clippy::indexing_slicing)] // Indices run over the m × n weight and the n × n matrices, shapes checked first.

use faer::{Accum, Mat};
use faer_ext::{IntoFaer, IntoNdarray};
use ndarray::{Array2, ArrayView2};

use super::{CpuHessianAccumulator, HessianAccumulator, RunningMean, transposed_f64};
use crate::backend::Parallelism;
use crate::backend::cpu::{cholesky_of, cholesky_solve};
use crate::error::{OptimaError, Result, check_finite};
use crate::problem::Hessian;

/// Accumulates `H = X_pᵀX_p/N` and the cross term `C = X_pᵀX_d/N` in one pass over paired
/// batches (the same tokens through the pruned and the dense model), as running means in f64.
#[derive(Clone, Debug)]
pub struct CrossAccumulator {
    hessian: CpuHessianAccumulator,
    cross: Mat<f64>,
    mean: RunningMean,
    parallelism: Parallelism,
}

impl CrossAccumulator {
    /// An empty accumulator for `n` inputs.
    pub fn new(n: usize, parallelism: Parallelism) -> Self {
        Self {
            hessian: CpuHessianAccumulator::new(n, parallelism),
            cross: Mat::zeros(n, n),
            mean: RunningMean::new(n),
            parallelism,
        }
    }

    /// Adds one batch: `pruned` and `dense` are the same `tokens × n` inputs in the pruned and
    /// the dense model. Nothing is added when either is rejected.
    #[allow(clippy::indexing_slicing)] // both batches are tokens × n, checked above.
    pub fn add_batch(&mut self, pruned: ArrayView2<'_, f32>, dense: ArrayView2<'_, f32>) -> Result<()> {
        if pruned.dim() != dense.dim() {
            return Err(OptimaError::shape(
                "dense batch vs pruned batch",
                format!("{}×{}", pruned.nrows(), pruned.ncols()),
                format!("{}×{}", dense.nrows(), dense.ncols()),
            ));
        }
        self.mean.weights_for(dense)?;
        let Some((beta, alpha)) = self.mean.weights_for(pruned)? else { return Ok(()) };
        self.hessian.add_batch(pruned)?;
        let (batch, n) = pruned.dim();
        let (xpt, xdt) = (transposed_f64(pruned), transposed_f64(dense));
        let par = self.parallelism.faer();
        for j in 0..n {
            self.cross.col_mut(j).iter_mut().for_each(|v| *v *= beta);
        }
        faer::linalg::matmul::matmul(self.cross.as_mut(), Accum::Add, xpt.as_ref(), xdt.transpose(), alpha, par);
        self.mean.added(batch);
        Ok(())
    }

    /// Tokens seen so far.
    pub fn tokens(&self) -> usize {
        self.mean.tokens()
    }

    /// The damped Hessian of the pruned inputs and the cross term `C = X_pᵀX_d/N`.
    pub fn finish(self, percdamp: f64) -> Result<(Hessian, Array2<f64>)> {
        let cross = self.cross.as_ref().into_ndarray().to_owned();
        Ok((self.hessian.finish(percdamp)?, cross))
    }
}

/// The dense target `W̃` (m×n): row `i` is `w̃_i = H_δ⁻¹ (C + δI) w_i`, with `δ` the absolute
/// damping of `hessian` (see the module docs). Solving the layer's QP for `W̃` under a mask fits
/// the dense model's output. With `C = H` (no earlier pruning), `W̃ = W`. One Cholesky of `H_δ`
/// and two GEMMs, on `parallelism` threads.
pub fn dense_target(
    weight: ArrayView2<'_, f64>,
    hessian: &Hessian,
    cross: ArrayView2<'_, f64>,
    parallelism: Parallelism,
) -> Result<Array2<f64>> {
    let n = hessian.dim();
    if weight.ncols() != n {
        return Err(OptimaError::shape(
            "weight vs hessian",
            format!("m×{n}"),
            format!("{}×{}", weight.nrows(), weight.ncols()),
        ));
    }
    if cross.dim() != (n, n) {
        return Err(OptimaError::shape(
            "cross term",
            format!("{n}×{n}"),
            format!("{}×{}", cross.nrows(), cross.ncols()),
        ));
    }
    check_finite("weight", weight)?;
    check_finite("cross term", cross)?;
    let par = parallelism.faer();
    let (l, _) = cholesky_of(hessian.matrix(), 0.0, par)?;
    // rhs = (C + δI) Wᵀ, n × m; then H_δ Y = rhs and W̃ = Yᵀ.
    let delta = hessian.damping();
    let mut rhs = Mat::<f64>::zeros(n, weight.nrows());
    let w = weight.into_faer();
    faer::linalg::matmul::matmul(rhs.as_mut(), Accum::Replace, cross.into_faer(), w.transpose(), 1.0, par);
    for i in 0..weight.nrows() {
        for j in 0..n {
            rhs[(j, i)] += delta * w[(i, j)];
        }
    }
    cholesky_solve(l.as_ref(), rhs.as_mut(), par);
    Ok(rhs.as_ref().transpose().into_ndarray().to_owned())
}
