//! One layer's reconstruction problem: weights, the shared Hessian and a mask.

use ndarray::{Array2, ArrayView2};

use super::{Hessian, Mask};
use crate::error::{OptimaError, Result, check_finite};

/// The per-row QPs of one linear layer: minimize `(ŵ−w_i)ᵀH(ŵ−w_i)` s.t. `ŵ_P = 0`, for every row.
#[derive(Clone, Debug)]
pub struct LayerProblem {
    weight: Array2<f64>,
    hessian: Hessian,
    mask: Mask,
}

impl LayerProblem {
    /// Validates shapes (`weight` m×n, `hessian` n×n, `mask` m×n) and finiteness of the weights.
    pub fn new(weight: Array2<f64>, hessian: Hessian, mask: Mask) -> Result<Self> {
        let (m, n) = weight.dim();
        if m == 0 || n == 0 {
            return Err(OptimaError::Empty(format!("weight is {m}×{n}")));
        }
        if hessian.dim() != n {
            return Err(OptimaError::shape(
                "hessian vs weight",
                format!("{n}×{n} (weight has {n} inputs)"),
                format!("{0}×{0}", hessian.dim()),
            ));
        }
        if (mask.rows(), mask.cols()) != (m, n) {
            return Err(OptimaError::shape(
                "mask vs weight",
                format!("{m}×{n}"),
                format!("{}×{}", mask.rows(), mask.cols()),
            ));
        }
        check_finite("weight", weight.view())?;
        Ok(Self { weight, hessian, mask })
    }

    /// The original weights `W` (m×n).
    pub fn weight(&self) -> ArrayView2<'_, f64> {
        self.weight.view()
    }

    /// The shared damped Hessian.
    pub fn hessian(&self) -> &Hessian {
        &self.hessian
    }

    /// The mask.
    pub fn mask(&self) -> &Mask {
        &self.mask
    }

    /// Rows `m` (outputs).
    pub fn rows(&self) -> usize {
        self.weight.nrows()
    }

    /// Columns `n` (inputs).
    pub fn cols(&self) -> usize {
        self.weight.ncols()
    }

    /// The mask-only answer: `W` with pruned entries set to 0.
    pub fn masked_weight(&self) -> Array2<f64> {
        let mut w = self.weight.clone();
        for ((i, j), v) in w.indexed_iter_mut() {
            if self.mask.is_pruned(i, j) {
                *v = 0.0;
            }
        }
        w
    }

    /// The sub-problem of rows `range` (the Hessian is shared, not copied).
    pub fn row_chunk(&self, range: std::ops::Range<usize>) -> Result<Self> {
        if range.start >= range.end || range.end > self.rows() {
            return Err(OptimaError::InvalidSetting(format!(
                "row range {range:?} is empty or outside the layer's {} rows",
                self.rows()
            )));
        }
        let weight = self.weight.slice(ndarray::s![range.clone(), ..]).to_owned();
        let mask = Mask::from_fn(range.len(), self.cols(), |i, j| self.mask.is_pruned(range.start + i, j));
        Ok(Self { weight, hessian: self.hessian.clone(), mask })
    }

    /// Takes the problem apart into weights, Hessian and mask.
    pub fn into_parts(self) -> (Array2<f64>, Hessian, Mask) {
        (self.weight, self.hessian, self.mask)
    }
}
