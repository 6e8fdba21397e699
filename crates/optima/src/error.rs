//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in optima, each variant naming the problem and, where there is
/// one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum OptimaError {
    /// Two inputs disagree on a dimension.
    #[error("shape mismatch in {what}: expected {expected}, found {found}")]
    ShapeMismatch {
        /// Which input was checked.
        what: String,
        /// The shape that was required.
        expected: String,
        /// The shape that was given.
        found: String,
    },
    /// An input holds NaN or ±Inf.
    #[error("{what} holds a non-finite value ({value}) at [{row}, {col}]")]
    NonFinite {
        /// Which input was checked.
        what: String,
        /// Row of the first bad value.
        row: usize,
        /// Column of the first bad value.
        col: usize,
        /// The bad value.
        value: f64,
    },
    /// The Hessian is not symmetric beyond rounding.
    #[error(
        "hessian is not symmetric: H[{i},{j}] = {a} but H[{j},{i}] = {b} (a Hessian XᵀX is symmetric; check the file's layout)"
    )]
    NotSymmetric {
        /// Row of the first asymmetric pair.
        i: usize,
        /// Column of the first asymmetric pair.
        j: usize,
        /// H[i, j].
        a: f64,
        /// H[j, i].
        b: f64,
    },
    /// The Hessian has a negative diagonal entry, so it cannot be XᵀX.
    #[error("hessian is not positive semi-definite: H[{index},{index}] = {value} < 0")]
    NegativeDiagonal {
        /// Index of the bad diagonal entry.
        index: usize,
        /// Its value.
        value: f64,
    },
    /// A sparsity pattern that cannot be applied.
    #[error("invalid sparsity pattern: {0}")]
    InvalidPattern(String),
    /// A mask that does not satisfy the pattern it claims to follow.
    #[error("mask violates its pattern in row {row}: {detail}")]
    MaskViolation {
        /// The first offending row.
        row: usize,
        /// What is wrong.
        detail: String,
    },
    /// A setting outside its domain.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// An input that is empty where data is required.
    #[error("empty input: {0}")]
    Empty(String),
    /// A file that could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file whose content is not what it should be.
    #[error("{path}: {detail}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A numerical failure that damping could not repair (an iterate that became non-finite, a
    /// factorization that failed at every retry).
    #[error("numerical failure: {0}")]
    Numerical(String),
    /// A compute device that failed while working (a CUDA error from a launch, a copy or a
    /// library call).
    #[error("device failure: {0}")]
    Device(String),
    /// An invariant of optima's own code was broken: a bug, never the input's fault.
    #[error("internal error (a bug in optima, please report it): {0}")]
    Internal(String),
    /// Work that cannot fit in the memory budget, found before the work starts.
    #[error("{what} needs at least {needed} but the memory budget is {budget}; raise --max-memory or shrink the work")]
    MemoryBudget {
        /// What was being planned.
        what: String,
        /// The smallest amount that would do.
        needed: crate::bytes::Bytes,
        /// The budget.
        budget: crate::bytes::Bytes,
    },
    /// A compute backend that is not available on this machine.
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
}

impl From<crate::bytes::ParseBytesError> for OptimaError {
    fn from(e: crate::bytes::ParseBytesError) -> Self {
        Self::InvalidSetting(e.to_string())
    }
}

/// Result with [`OptimaError`].
pub type Result<T> = std::result::Result<T, OptimaError>;

impl OptimaError {
    /// A [`OptimaError::ShapeMismatch`] for `what`.
    pub fn shape(what: impl Into<String>, expected: impl Into<String>, found: impl Into<String>) -> Self {
        Self::ShapeMismatch { what: what.into(), expected: expected.into(), found: found.into() }
    }
}

/// The first non-finite entry of a matrix, as an error naming `what`.
pub(crate) fn check_finite(what: &str, a: ndarray::ArrayView2<'_, f64>) -> Result<()> {
    for ((row, col), &value) in a.indexed_iter() {
        if !value.is_finite() {
            return Err(OptimaError::NonFinite { what: what.to_string(), row, col, value });
        }
    }
    Ok(())
}
