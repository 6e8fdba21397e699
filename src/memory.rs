//! Memory budgets: how much a piece of work may allocate, and how to split work to fit.
//!
//! Estimates are in bytes and deliberately conservative; docs/robustness.md compares them with
//! measured peaks. Work that splits by rows (the per-row QPs of a layer) is planned as a fixed
//! part plus a per-row part; the largest number of rows that fits is one chunk.

use std::fmt;
use std::str::FromStr;

use crate::error::{OptimaError, Result};

/// A byte count that prints and parses with binary units (`512M`, `8G`, `1.5GiB`, `4096`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl Bytes {
    /// `f64` elements.
    pub fn f64s(count: usize) -> Self {
        Self((count as u64).saturating_mul(8))
    }

    /// `f32` elements.
    pub fn f32s(count: usize) -> Self {
        Self((count as u64).saturating_mul(4))
    }
}

impl serde::Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl std::ops::Add for Bytes {
    type Output = Bytes;
    fn add(self, rhs: Bytes) -> Bytes {
        Bytes(self.0.saturating_add(rhs.0))
    }
}

impl std::ops::Mul<usize> for Bytes {
    type Output = Bytes;
    fn mul(self, rhs: usize) -> Bytes {
        Bytes(self.0.saturating_mul(rhs as u64))
    }
}

impl std::iter::Sum for Bytes {
    fn sum<I: Iterator<Item = Bytes>>(iter: I) -> Bytes {
        iter.fold(Bytes(0), |a, b| a + b)
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        match UNITS.get(unit) {
            Some(&"B") | None => write!(f, "{} B", self.0),
            Some(u) => write!(f, "{value:.1} {u}"),
        }
    }
}

impl FromStr for Bytes {
    type Err = OptimaError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || OptimaError::InvalidSetting(format!("memory size {s:?}: expected a number with K, M, G or T"));
        let t = s.trim();
        let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let value: f64 = number.trim().parse().map_err(|_| bad())?;
        let shift = match unit.trim().to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
            "" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            "T" => 40,
            _ => return Err(bad()),
        };
        let bytes = value * (1u64 << shift) as f64;
        if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
            return Err(bad());
        }
        Ok(Self(bytes as u64))
    }
}

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
