//! SparseGPT (Frantar & Alistarh, 2023): an OBS sweep over the columns in lazy blocks of 128 with
//! `U = chol_upper(H⁻¹)`. The sweep has two roles: this [`Masker`] (its own mask selection, scores
//! `w²/U_jj²`) and, for a given mask, the approximate updater `solve::SparseGptSolver` — the
//! baseline the exact solvers are measured against.

#![allow(clippy::indexing_slicing)] // Dense kernels: every index runs over the validated weight and Hessian dimensions and the
// 128-column blocks that tile them.

use faer::{Accum, Mat, MatRef, Par};
use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::Masker;
use crate::backend::Parallelism;
use crate::backend::cpu::{cholesky_of, spd_inverse};
use crate::error::{OptimaError, Result, check_finite};
use crate::problem::{Hessian, Mask, RatioScope, SparsityPattern, pruned_count};

/// Columns per lazy block, as in the reference implementation.
pub const DEFAULT_BLOCK_SIZE: usize = 128;

/// Settings shared by the SparseGPT masker and updater.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SparseGptSettings {
    /// Columns per lazy block.
    pub block_size: usize,
    /// Threads.
    pub parallelism: Parallelism,
}

impl Default for SparseGptSettings {
    fn default() -> Self {
        Self { block_size: DEFAULT_BLOCK_SIZE, parallelism: Parallelism::AllCores }
    }
}

impl SparseGptSettings {
    pub(crate) fn check(&self) -> Result<()> {
        if self.block_size == 0 {
            return Err(OptimaError::InvalidSetting("SparseGPT block size must be ≥ 1".into()));
        }
        Ok(())
    }

    /// Sets the columns per lazy block (default: 128).
    pub fn block_size(mut self, block_size: usize) -> Self {
        self.block_size = block_size;
        self
    }

    /// Sets the threads (default: all cores).
    pub fn parallelism(mut self, parallelism: Parallelism) -> Self {
        self.parallelism = parallelism;
        self
    }
}

/// SparseGPT's own mask selection (masker name `sparsegpt`); its updated weights come with it
/// through [`SparseGptMasker::select_and_update`].
#[derive(Clone, Debug, Default)]
pub struct SparseGptMasker {
    settings: SparseGptSettings,
}

impl SparseGptMasker {
    /// A masker with these settings.
    pub fn new(settings: SparseGptSettings) -> Self {
        Self { settings }
    }

    /// Selects the mask and returns SparseGPT's updated weights with it (pruned entries 0).
    pub fn select_and_update(
        &self,
        weight: ArrayView2<'_, f64>,
        hessian: &Hessian,
        pattern: &SparsityPattern,
    ) -> Result<(Mask, Array2<f64>)> {
        if weight.ncols() != hessian.dim() {
            return Err(OptimaError::shape(
                "hessian vs weight",
                format!("{0}×{0}", weight.ncols()),
                format!("{0}×{0}", hessian.dim()),
            ));
        }
        check_finite("weight", weight)?;
        pattern.validate(weight.ncols())?;
        sweep(weight, hessian, Selection::Choose(*pattern), &self.settings)
    }
}

impl Masker for SparseGptMasker {
    fn name(&self) -> &str {
        "sparsegpt"
    }

    fn select(&self, weight: ArrayView2<'_, f64>, hessian: &Hessian, pattern: &SparsityPattern) -> Result<Mask> {
        Ok(self.select_and_update(weight, hessian, pattern)?.0)
    }
}

/// Where the pruned set comes from.
#[derive(Clone, Copy)]
pub(crate) enum Selection<'a> {
    Given(&'a Mask),
    Choose(SparsityPattern),
}

/// `U` with `H⁻¹ = UᵀU`, upper triangular (stored as a full matrix, lower part zero).
fn inverse_cholesky_upper(hessian: &Hessian, par: Par) -> Result<Mat<f64>> {
    let inv = spd_inverse(hessian.matrix(), 0.0, par)?;
    let (lg, _) = cholesky_of(inv.view(), 0.0, par)?;
    // H⁻¹ = L Lᵀ, so U = Lᵀ.
    let n = inv.nrows();
    Ok(Mat::from_fn(n, n, |i, j| if i <= j { lg[(j, i)] } else { 0.0 }))
}

pub(crate) fn sweep(
    weight: ArrayView2<'_, f64>,
    hessian: &Hessian,
    selection: Selection<'_>,
    settings: &SparseGptSettings,
) -> Result<(Mask, Array2<f64>)> {
    settings.check()?;
    let par = settings.parallelism;
    let (m, n) = weight.dim();
    let block = match selection {
        // N:M groups must not straddle blocks.
        Selection::Choose(SparsityPattern::NM { group, .. }) => (settings.block_size / group).max(1) * group,
        _ => settings.block_size,
    };
    let u = par.install(|| inverse_cholesky_upper(hessian, par.faer()))??;
    let per_layer =
        matches!(selection, Selection::Choose(SparsityPattern::Unstructured { scope: RatioScope::PerLayer, .. }));
    // Rows are independent except under per-layer selection: split them across threads.
    let chunk = if per_layer { m.max(1) } else { m.div_ceil(par.threads()).max(1) };
    let inner = if per_layer { par.faer() } else { Par::Seq };
    let chunks: Vec<(usize, usize)> = (0..m).step_by(chunk).map(|r| (r, (r + chunk).min(m))).collect();
    let results: Vec<(Vec<bool>, Mat<f64>)> = par.install(|| {
        chunks.par_iter().map(|&(r0, r1)| sweep_rows(weight, r0, r1, u.as_ref(), selection, block, inner)).collect()
    })?;
    let mut mask = Mask::empty(m, n);
    let mut out = Array2::<f64>::zeros((m, n));
    for (&(r0, r1), (pruned, w)) in chunks.iter().zip(&results) {
        for (local, i) in (r0..r1).enumerate() {
            for j in 0..n {
                let is_pruned = pruned[j * (r1 - r0) + local];
                mask.set(i, j, is_pruned);
                out[[i, j]] = if is_pruned { 0.0 } else { w[(local, j)] };
            }
        }
    }
    Ok((mask, out))
}

/// The OBS sweep over rows `r0..r1`. Returns the pruned flags (column-major, rows fastest) and
/// the updated weights of those rows.
fn sweep_rows(
    weight: ArrayView2<'_, f64>,
    r0: usize,
    r1: usize,
    u: MatRef<'_, f64>,
    selection: Selection<'_>,
    block: usize,
    par: Par,
) -> (Vec<bool>, Mat<f64>) {
    let rows = r1 - r0;
    let n = weight.ncols();
    let mut w = Mat::<f64>::from_fn(rows, n, |i, j| weight[[r0 + i, j]]);
    let mut pruned = vec![false; rows * n];
    if let Selection::Given(mask) = selection {
        for i in 0..rows {
            for j in 0..n {
                pruned[j * rows + i] = mask.is_pruned(r0 + i, j);
            }
        }
    }
    let score = |w: &Mat<f64>, i: usize, j: usize| {
        let d = u[(j, j)];
        w[(i, j)] * w[(i, j)] / (d * d)
    };
    let order = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    let mut err = Mat::<f64>::zeros(rows, block);
    for i1 in (0..n).step_by(block) {
        let i2 = (i1 + block).min(n);
        // Unstructured selection for this block, on the weights as updated so far.
        if let Selection::Choose(SparsityPattern::Unstructured { ratio, scope }) = selection {
            match scope {
                RatioScope::PerRow => {
                    let count = pruned_count(ratio, i2) - pruned_count(ratio, i1);
                    for i in 0..rows {
                        let mut s: Vec<(f64, usize)> = (i1..i2).map(|j| (score(&w, i, j), j)).collect();
                        s.sort_unstable_by(order);
                        for &(_, j) in s.iter().take(count) {
                            pruned[j * rows + i] = true;
                        }
                    }
                }
                RatioScope::PerLayer => {
                    let count = pruned_count(ratio, rows * i2) - pruned_count(ratio, rows * i1);
                    let mut s: Vec<(f64, usize)> = (i1..i2)
                        .flat_map(|j| (0..rows).map(move |i| (j, i)))
                        .map(|(j, i)| (score(&w, i, j), j * rows + i))
                        .collect();
                    s.sort_unstable_by(order);
                    for &(_, flat) in s.iter().take(count) {
                        pruned[flat] = true;
                    }
                }
            }
        }
        for j in i1..i2 {
            if let Selection::Choose(SparsityPattern::NM { keep, group }) = selection {
                if j % group == 0 {
                    for i in 0..rows {
                        let mut s: Vec<(f64, usize)> = (j..j + group).map(|c| (score(&w, i, c), c)).collect();
                        s.sort_unstable_by(order);
                        for &(_, c) in s.iter().take(group - keep) {
                            pruned[c * rows + i] = true;
                        }
                    }
                }
            }
            let d = u[(j, j)];
            for i in 0..rows {
                let e = if pruned[j * rows + i] { w[(i, j)] / d } else { 0.0 };
                err[(i, j - i1)] = e;
            }
            // Propagate within the block: W[:, j+1..i2] −= err ⊗ U[j, j+1..i2].
            for c in (j + 1)..i2 {
                let ujc = u[(j, c)];
                if ujc != 0.0 {
                    for i in 0..rows {
                        w[(i, c)] -= err[(i, j - i1)] * ujc;
                    }
                }
            }
            for i in 0..rows {
                if pruned[j * rows + i] {
                    w[(i, j)] = 0.0;
                }
            }
        }
        // Lazy update of the columns after the block: W[:, i2..] −= Err · U[i1..i2, i2..].
        if i2 < n {
            let e = err.as_ref().subcols(0, i2 - i1);
            let tail = u.submatrix(i1, i2, i2 - i1, n - i2);
            faer::linalg::matmul::matmul(w.as_mut().subcols_mut(i2, n - i2), Accum::Add, e, tail, -1.0, par);
        }
    }
    (pruned, w)
}
