//! Sparsity patterns: unstructured at a ratio (per row or per layer), and N:M.

use std::fmt;
use std::str::FromStr;

use crate::error::{OptimaError, Result};

/// Where an unstructured ratio is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RatioScope {
    /// Every row prunes `⌊ratio · n⌋` entries (Wanda's and SparseGPT's default).
    PerRow,
    /// The whole layer prunes `⌊ratio · m · n⌋` entries; rows may differ.
    PerLayer,
}

/// Which entries a mask may prune.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum SparsityPattern {
    /// Prune a fraction `ratio ∈ [0, 1)` of the weights.
    Unstructured {
        /// Fraction of weights pruned.
        ratio: f64,
        /// Per row or per layer.
        scope: RatioScope,
    },
    /// In every group of `group` consecutive inputs of a row, keep exactly `keep`.
    NM {
        /// Entries kept per group (the N of N:M).
        keep: usize,
        /// Group length (the M of N:M).
        group: usize,
    },
}

impl SparsityPattern {
    /// Unstructured, per row.
    pub fn per_row(ratio: f64) -> Result<Self> {
        let p = Self::Unstructured { ratio, scope: RatioScope::PerRow };
        p.check_self()?;
        Ok(p)
    }

    /// N:M (keep `keep` of every `group`).
    pub fn n_m(keep: usize, group: usize) -> Result<Self> {
        let p = Self::NM { keep, group };
        p.check_self()?;
        Ok(p)
    }

    fn check_self(&self) -> Result<()> {
        match *self {
            Self::Unstructured { ratio, .. } => {
                if !(ratio.is_finite() && (0.0..1.0).contains(&ratio)) {
                    return Err(OptimaError::InvalidPattern(format!("ratio must lie in [0, 1), got {ratio}")));
                }
            }
            Self::NM { keep, group } => {
                if group == 0 || keep == 0 || keep >= group {
                    return Err(OptimaError::InvalidPattern(format!("N:M needs 0 < N < M, got {keep}:{group}")));
                }
            }
        }
        Ok(())
    }

    /// Checks the pattern itself and that it applies to a layer with `n` inputs.
    pub fn validate(&self, n: usize) -> Result<()> {
        self.check_self()?;
        if let Self::NM { keep, group } = *self {
            if n % group != 0 {
                return Err(OptimaError::InvalidPattern(format!(
                    "{keep}:{group} needs the input count to be a multiple of {group}, but n = {n}"
                )));
            }
        }
        Ok(())
    }

    /// The fraction of weights this pattern prunes (exactly, before flooring).
    pub fn sparsity(&self) -> f64 {
        match *self {
            Self::Unstructured { ratio, .. } => ratio,
            Self::NM { keep, group } => 1.0 - keep as f64 / group as f64,
        }
    }
}

impl FromStr for SparsityPattern {
    type Err = OptimaError;

    /// Parses `0.5` (per row), `0.5/layer` (per layer) or `2:4` (N:M).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = || {
            OptimaError::InvalidPattern(format!(
                "cannot parse {s:?}: expected a ratio like 0.5, 0.5/layer, or N:M like 2:4"
            ))
        };
        let pattern = if let Some((n, m)) = s.split_once(':') {
            let keep = n.trim().parse().map_err(|_| bad())?;
            let group = m.trim().parse().map_err(|_| bad())?;
            Self::NM { keep, group }
        } else {
            let (ratio, scope) = match s.split_once('/') {
                Some((r, "layer")) => (r, RatioScope::PerLayer),
                Some((r, "row")) => (r, RatioScope::PerRow),
                Some(_) => return Err(bad()),
                None => (s, RatioScope::PerRow),
            };
            Self::Unstructured { ratio: ratio.trim().parse().map_err(|_| bad())?, scope }
        };
        pattern.check_self()?;
        Ok(pattern)
    }
}

impl fmt::Display for SparsityPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Unstructured { ratio, scope: RatioScope::PerRow } => write!(f, "{ratio}"),
            Self::Unstructured { ratio, scope: RatioScope::PerLayer } => write!(f, "{ratio}/layer"),
            Self::NM { keep, group } => write!(f, "{keep}:{group}"),
        }
    }
}
