//! Mask selection: the `Masker` trait, the score-based maskers `magnitude` and `wanda`, SparseGPT's
//! masker, and refinement of any of them with the solver in the loop.

pub mod refine;
mod select;
pub mod sparsegpt;

use ndarray::{Array2, ArrayView2};

pub use refine::{MaskRefiner, Proposal, RefineSettings, RefinedMasker, Refinement, RefinementSummary, WarmStart};
pub use select::select_lowest;

pub use sparsegpt::{DEFAULT_BLOCK_SIZE, SparseGptMasker, SparseGptSettings};

use crate::error::{OptimaError, Result, check_finite};
use crate::problem::{Hessian, Mask, SparsityPattern};

/// Chooses which weights of a layer to prune.
pub trait Masker {
    /// Short name used in reports and on the command line.
    fn name(&self) -> &str;

    /// A mask for `weight` (m×n) that satisfies `pattern` exactly.
    fn select(&self, weight: ArrayView2<'_, f64>, hessian: &Hessian, pattern: &SparsityPattern) -> Result<Mask>;
}

/// A masker that reads only the Hessian's diagonal before damping, `H_jj = ‖X_j‖₂²/N`
/// ([`Hessian::raw_diag`]): it chooses its mask from a
/// [`DiagonalAccumulator`](crate::hessian::DiagonalAccumulator)'s diagonal as well, without the
/// n×n matrix. Its [`Masker::select`] is this on `hessian.raw_diag()`, so both give the same mask
/// for the same diagonal.
pub trait DiagonalMasker: Masker {
    /// A mask for `weight` (m×n) from `diagonal` (n entries, finite, ≥ 0) that satisfies
    /// `pattern` exactly.
    fn select_from_diagonal(
        &self,
        weight: ArrayView2<'_, f64>,
        diagonal: &[f64],
        pattern: &SparsityPattern,
    ) -> Result<Mask>;
}

/// Prunes the smallest `|W_ij|`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MagnitudeMasker;

/// Prunes the smallest Wanda scores `|W_ij| · ‖X_j‖₂` within each row (Sun et al., 2023).
#[derive(Clone, Copy, Debug, Default)]
pub struct WandaMasker;

impl Masker for MagnitudeMasker {
    fn name(&self) -> &str {
        "magnitude"
    }

    fn select(&self, weight: ArrayView2<'_, f64>, hessian: &Hessian, pattern: &SparsityPattern) -> Result<Mask> {
        self.select_from_diagonal(weight, hessian.raw_diag(), pattern)
    }
}

impl DiagonalMasker for MagnitudeMasker {
    fn select_from_diagonal(
        &self,
        weight: ArrayView2<'_, f64>,
        diagonal: &[f64],
        pattern: &SparsityPattern,
    ) -> Result<Mask> {
        check_inputs(weight, diagonal)?;
        select_lowest(weight.mapv(f64::abs).view(), pattern)
    }
}

impl Masker for WandaMasker {
    fn name(&self) -> &str {
        "wanda"
    }

    fn select(&self, weight: ArrayView2<'_, f64>, hessian: &Hessian, pattern: &SparsityPattern) -> Result<Mask> {
        self.select_from_diagonal(weight, hessian.raw_diag(), pattern)
    }
}

impl DiagonalMasker for WandaMasker {
    #[allow(clippy::indexing_slicing)] // norms has one entry per column of weight (checked against the diagonal).
    fn select_from_diagonal(
        &self,
        weight: ArrayView2<'_, f64>,
        diagonal: &[f64],
        pattern: &SparsityPattern,
    ) -> Result<Mask> {
        check_inputs(weight, diagonal)?;
        let norms: Vec<f64> = diagonal.iter().map(|d| d.sqrt()).collect();
        let scores = Array2::from_shape_fn(weight.dim(), |(i, j)| weight[[i, j]].abs() * norms[j]);
        select_lowest(scores.view(), pattern)
    }
}

/// A masker by name: `magnitude`, `wanda` or `sparsegpt`.
pub fn masker_by_name(name: &str) -> Result<Box<dyn Masker + Send + Sync>> {
    match name {
        "magnitude" => Ok(Box::new(MagnitudeMasker)),
        "wanda" => Ok(Box::new(WandaMasker)),
        "sparsegpt" => Ok(Box::new(SparseGptMasker::default())),
        other => {
            Err(OptimaError::InvalidSetting(format!("unknown masker {other:?}; choose magnitude, wanda or sparsegpt")))
        }
    }
}

/// The checks of a diagonal masker: one diagonal entry per column of `weight`, each finite and
/// ≥ 0 (a [`Hessian`]'s is, by construction), and a finite weight.
fn check_inputs(weight: ArrayView2<'_, f64>, diagonal: &[f64]) -> Result<()> {
    if weight.ncols() != diagonal.len() {
        return Err(OptimaError::shape(
            "hessian vs weight",
            format!("{0}×{0}", weight.ncols()),
            format!("{0}×{0}", diagonal.len()),
        ));
    }
    if let Some((index, &value)) = diagonal.iter().enumerate().find(|(_, d)| !d.is_finite()) {
        return Err(OptimaError::NonFinite { what: "hessian diagonal".into(), row: index, col: index, value });
    }
    if let Some((index, &value)) = diagonal.iter().enumerate().find(|(_, d)| **d < 0.0) {
        return Err(OptimaError::NegativeDiagonal { index, value });
    }
    check_finite("weight", weight)
}
