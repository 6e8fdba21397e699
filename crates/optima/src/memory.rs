//! Memory budgets: how much a piece of work may allocate, and how to split work to fit.
//!
//! Estimates are in bytes and deliberately conservative; docs/robustness.md compares them with
//! measured peaks. Work that splits by rows (the per-row QPs of a layer) is planned as a fixed
//! part plus a per-row part; the largest number of rows that fits is one chunk.

pub use crate::bytes::Bytes;
use crate::error::{OptimaError, Result};

/// Memory a piece of work needs: `fixed + per_row · rows`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Needed whatever the number of rows (shared matrices such as `H⁻¹`).
    pub fixed: Bytes,
    /// Needed per row solved at once.
    pub per_row: Bytes,
}

impl MemoryEstimate {
    /// Memory for `rows` rows at once.
    pub fn for_rows(&self, rows: usize) -> Bytes {
        self.fixed + self.per_row * rows
    }

    /// The sum of two estimates (work that is alive at the same time).
    pub fn plus(self, other: MemoryEstimate) -> MemoryEstimate {
        MemoryEstimate { fixed: self.fixed + other.fixed, per_row: self.per_row + other.per_row }
    }

    /// The most rows (at most `rows`) whose work fits in `budget`; a [`OptimaError::MemoryBudget`]
    /// error naming `what` when not even one row fits.
    pub fn rows_that_fit(&self, budget: Bytes, rows: usize, what: &str) -> Result<usize> {
        let one = self.for_rows(1);
        if one > budget {
            return Err(OptimaError::MemoryBudget { what: what.to_string(), needed: one, budget });
        }
        let per_row = self.per_row.0.max(1);
        let fit = (budget.0 - self.fixed.0) / per_row;
        Ok(usize::try_from(fit).unwrap_or(usize::MAX).clamp(1, rows.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_and_print_back() {
        assert_eq!("4096".parse::<Bytes>().unwrap(), Bytes(4096));
        assert_eq!("512M".parse::<Bytes>().unwrap(), Bytes(512 << 20));
        assert_eq!("8G".parse::<Bytes>().unwrap(), Bytes(8 << 30));
        assert_eq!("8GiB".parse::<Bytes>().unwrap(), Bytes(8 << 30));
        assert_eq!("1.5gb".parse::<Bytes>().unwrap(), Bytes(3 << 29));
        assert_eq!("2k".parse::<Bytes>().unwrap(), Bytes(2048));
        for bad in ["", "G", "-1G", "8X", "NaN", "1e30T", "0"] {
            assert!(bad.parse::<Bytes>().is_err(), "{bad:?}");
        }
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(3 << 29).to_string(), "1.5 GiB");
    }

    #[test]
    fn rows_that_fit_is_the_largest_count_within_the_budget() {
        let e = MemoryEstimate { fixed: Bytes(1000), per_row: Bytes(100) };
        assert_eq!(e.rows_that_fit(Bytes(1100), 50, "x").unwrap(), 1);
        assert_eq!(e.rows_that_fit(Bytes(1399), 50, "x").unwrap(), 3);
        assert_eq!(e.rows_that_fit(Bytes(1 << 40), 50, "x").unwrap(), 50);
        let err = e.rows_that_fit(Bytes(1099), 50, "layer q").unwrap_err();
        assert!(matches!(err, OptimaError::MemoryBudget { needed: Bytes(1100), .. }), "{err}");
        assert!(err.to_string().contains("layer q"));
    }
}
