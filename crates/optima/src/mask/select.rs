//! Turning scores into a mask that satisfies a pattern exactly: prune the lowest scores.

use ndarray::ArrayView2;

use crate::error::{Result, check_finite};
use crate::problem::{Mask, RatioScope, SparsityPattern, pruned_count};

/// Prunes the lowest-scoring entries as `pattern` dictates: per row, per layer, or per N:M group.
/// Ties go to the lower column (then row) index, so the result is deterministic.
#[allow(clippy::indexing_slicing)] // groups tile the validated row width (n divisible by M).
pub fn select_lowest(scores: ArrayView2<'_, f64>, pattern: &SparsityPattern) -> Result<Mask> {
    let (m, n) = scores.dim();
    pattern.validate(n)?;
    check_finite("scores", scores)?;
    let mut mask = Mask::empty(m, n);
    let order = |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
    match *pattern {
        SparsityPattern::Unstructured { ratio, scope: RatioScope::PerRow } => {
            let count = pruned_count(ratio, n);
            let mut row: Vec<(f64, usize)> = Vec::with_capacity(n);
            for i in 0..m {
                row.clear();
                row.extend(scores.row(i).iter().copied().zip(0..n));
                if count > 0 && count < n {
                    row.select_nth_unstable_by(count - 1, order);
                }
                for &(_, j) in row.iter().take(count) {
                    mask.set(i, j, true);
                }
            }
        }
        SparsityPattern::Unstructured { ratio, scope: RatioScope::PerLayer } => {
            let count = pruned_count(ratio, m * n);
            let mut all: Vec<(f64, usize)> = scores.iter().copied().zip(0..m * n).collect();
            if count > 0 && count < all.len() {
                all.select_nth_unstable_by(count - 1, order);
            }
            for &(_, flat) in all.iter().take(count) {
                mask.set(flat / n, flat % n, true);
            }
        }
        SparsityPattern::NM { keep, group } => {
            let prune = group - keep;
            let mut block: Vec<(f64, usize)> = Vec::with_capacity(group);
            for i in 0..m {
                for start in (0..n).step_by(group) {
                    block.clear();
                    block.extend((start..start + group).map(|j| (scores[[i, j]], j)));
                    block.sort_unstable_by(order);
                    for &(_, j) in block.iter().take(prune) {
                        mask.set(i, j, true);
                    }
                }
            }
        }
    }
    Ok(mask)
}
