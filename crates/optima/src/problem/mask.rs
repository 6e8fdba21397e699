//! Pruning masks: per row, the set of pruned input columns, stored as a bitset.

use ndarray::{Array2, ArrayView2};

use super::pattern::{RatioScope, SparsityPattern};
use crate::error::{OptimaError, Result};

/// Which weights of an m×n layer are pruned: bit `j` of row `i` set means `W[i, j]` becomes 0.
///
/// Compact (one bit per weight) and cheap to compare row against row, so rows with identical
/// masks can share work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    rows: usize,
    cols: usize,
    words: usize,
    bits: Vec<u64>,
}

impl Mask {
    /// A mask that prunes nothing.
    pub fn empty(rows: usize, cols: usize) -> Self {
        let words = cols.div_ceil(64);
        Self { rows, cols, words, bits: vec![0; rows * words] }
    }

    /// Builds a mask from a predicate `pruned(i, j)`.
    pub fn from_fn(rows: usize, cols: usize, mut pruned: impl FnMut(usize, usize) -> bool) -> Self {
        let mut mask = Self::empty(rows, cols);
        for i in 0..rows {
            for j in 0..cols {
                if pruned(i, j) {
                    mask.set(i, j, true);
                }
            }
        }
        mask
    }

    /// Builds a mask from a dense u8 matrix, 1 = pruned, 0 = kept; any other value is an error.
    pub fn from_dense(dense: ArrayView2<'_, u8>) -> Result<Self> {
        let (rows, cols) = dense.dim();
        let mut mask = Self::empty(rows, cols);
        for ((i, j), &v) in dense.indexed_iter() {
            match v {
                0 => {}
                1 => mask.set(i, j, true),
                other => {
                    return Err(OptimaError::MaskViolation {
                        row: i,
                        detail: format!("entry [{i}, {j}] is {other}; a mask holds 1 (pruned) or 0 (kept)"),
                    });
                }
            }
        }
        Ok(mask)
    }

    /// The mask as a dense u8 matrix, 1 = pruned.
    pub fn to_dense(&self) -> Array2<u8> {
        Array2::from_shape_fn((self.rows, self.cols), |(i, j)| u8::from(self.is_pruned(i, j)))
    }

    /// Number of rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Marks `W[i, j]` pruned or kept. Panics only on out-of-range indices (a caller bug).
    #[allow(clippy::indexing_slicing)] // Documented panic on a caller bug, as ndarray's indexing.
    pub fn set(&mut self, i: usize, j: usize, pruned: bool) {
        let word = &mut self.bits[i * self.words + j / 64];
        let bit = 1u64 << (j % 64);
        if pruned {
            *word |= bit;
        } else {
            *word &= !bit;
        }
    }

    /// Whether `W[i, j]` is pruned (`false` outside the mask).
    pub fn is_pruned(&self, i: usize, j: usize) -> bool {
        i < self.rows
            && j < self.cols
            && self.bits.get(i * self.words + j / 64).is_some_and(|word| word >> (j % 64) & 1 == 1)
    }

    /// The bit words of row `i` (for grouping rows with identical masks; empty outside the mask).
    fn row_words(&self, i: usize) -> &[u64] {
        self.bits.get(i * self.words..(i + 1) * self.words).unwrap_or_default()
    }

    /// The rows grouped by identical masks, each group in row order, the groups in order of their
    /// first row: rows of one group share one factorization in the exact solvers.
    pub fn row_groups(&self) -> Vec<Vec<usize>> {
        let mut index: std::collections::HashMap<&[u64], usize> = std::collections::HashMap::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for i in 0..self.rows {
            match index.get(self.row_words(i)).and_then(|&g| groups.get_mut(g)) {
                Some(group) => group.push(i),
                None => {
                    index.insert(self.row_words(i), groups.len());
                    groups.push(vec![i]);
                }
            }
        }
        groups
    }

    /// Whether each entry of row `i` is pruned, in column order (nothing outside the mask).
    pub fn row_pruned(&self, i: usize) -> impl Iterator<Item = bool> + '_ {
        let cols = if i < self.rows { self.cols } else { 0 };
        self.row_words(i).iter().flat_map(|word| (0..64).map(move |b| word >> b & 1 == 1)).take(cols)
    }

    /// Number of pruned entries in row `i`.
    pub fn pruned_in_row(&self, i: usize) -> usize {
        self.row_words(i).iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Total number of pruned entries.
    pub fn total_pruned(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Fraction of entries pruned.
    pub fn sparsity(&self) -> f64 {
        let total = self.rows * self.cols;
        if total == 0 { 0.0 } else { self.total_pruned() as f64 / total as f64 }
    }

    /// Pruned column indices of row `i`, ascending.
    pub fn pruned_indices(&self, i: usize) -> Vec<usize> {
        (0..self.cols).filter(|&j| self.is_pruned(i, j)).collect()
    }

    /// Kept column indices of row `i`, ascending.
    pub fn kept_indices(&self, i: usize) -> Vec<usize> {
        (0..self.cols).filter(|&j| !self.is_pruned(i, j)).collect()
    }

    /// Checks that the mask follows `pattern` exactly.
    pub fn validate(&self, pattern: &SparsityPattern) -> Result<()> {
        pattern.validate(self.cols)?;
        match *pattern {
            SparsityPattern::Unstructured { ratio, scope: RatioScope::PerRow } => {
                let want = pruned_count(ratio, self.cols);
                for i in 0..self.rows {
                    let got = self.pruned_in_row(i);
                    if got != want {
                        return Err(OptimaError::MaskViolation {
                            row: i,
                            detail: format!("prunes {got} of {} entries, pattern {pattern} needs {want}", self.cols),
                        });
                    }
                }
            }
            SparsityPattern::Unstructured { ratio, scope: RatioScope::PerLayer } => {
                let want = pruned_count(ratio, self.rows * self.cols);
                let got = self.total_pruned();
                if got != want {
                    return Err(OptimaError::MaskViolation {
                        row: 0,
                        detail: format!("layer prunes {got} entries, pattern {pattern} needs {want}"),
                    });
                }
            }
            SparsityPattern::NM { keep, group } => {
                for i in 0..self.rows {
                    for g in 0..self.cols / group {
                        let kept = (g * group..(g + 1) * group).filter(|&j| !self.is_pruned(i, j)).count();
                        if kept != keep {
                            return Err(OptimaError::MaskViolation {
                                row: i,
                                detail: format!(
                                    "group {g} (columns {}..{}) keeps {kept}, pattern {pattern} needs {keep}",
                                    g * group,
                                    (g + 1) * group
                                ),
                            });
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Entries pruned for `ratio` of `total`: `⌊ratio · total⌋`.
pub fn pruned_count(ratio: f64, total: usize) -> usize {
    ((ratio * total as f64).floor() as usize).min(total)
}

#[cfg(test)]
mod tests {
    use super::Mask;

    #[test]
    fn row_groups_gather_identical_rows_in_order_of_first_appearance() {
        // 130 columns: three bit words per row, rows differing only in the last word.
        let pattern = |i: usize| {
            move |j: usize| match i % 3 {
                0 => j % 2 == 0,
                1 => j == 129,
                _ => false,
            }
        };
        let mask = Mask::from_fn(7, 130, |i, j| pattern(i)(j));
        assert_eq!(mask.row_groups(), vec![vec![0, 3, 6], vec![1, 4], vec![2, 5]]);
        let brute: Vec<Vec<usize>> = {
            let mut groups: Vec<Vec<usize>> = Vec::new();
            for i in 0..7 {
                let same = |g: &&mut Vec<usize>| (0..130).all(|j| mask.is_pruned(g[0], j) == mask.is_pruned(i, j));
                match groups.iter_mut().find(|g| same(g)) {
                    Some(g) => g.push(i),
                    None => groups.push(vec![i]),
                }
            }
            groups
        };
        assert_eq!(mask.row_groups(), brute);
        assert!(Mask::empty(0, 4).row_groups().is_empty());
    }

    #[test]
    fn row_pruned_reads_each_row_across_word_boundaries() {
        // 70 columns: two words per row, the second partly used.
        let mask = Mask::from_fn(3, 70, |i, j| (i * 7 + j * 3) % 5 == 0);
        for i in 0..3 {
            let bits: Vec<bool> = mask.row_pruned(i).collect();
            assert_eq!(bits, (0..70).map(|j| mask.is_pruned(i, j)).collect::<Vec<_>>(), "row {i}");
        }
        assert_eq!(mask.row_pruned(3).count(), 0);
    }
}
