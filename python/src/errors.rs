//! optima's errors as Python exceptions: bad input is a `ValueError`, a numerical failure the
//! package's `NumericalError`, a device that cannot be had or failed its `DeviceError`.

use optima::OptimaError as CoreError;
use pyo3::PyErr;
use pyo3::exceptions::{PyException, PyMemoryError, PyOSError, PyValueError};

pyo3::create_exception!(
    optima,
    OptimaError,
    PyException,
    "Base of the errors optima raises that are not bad input (which raises ValueError)."
);
pyo3::create_exception!(
    optima,
    NumericalError,
    OptimaError,
    "A numerical failure that damping could not repair (a non-finite iterate, a factorization that failed at every retry)."
);
pyo3::create_exception!(
    optima,
    DeviceError,
    OptimaError,
    "A compute device that is not available in this build or on this machine, or that failed while working."
);

/// The Python exception for an optima error.
pub fn to_py(error: CoreError) -> PyErr {
    let message = error.to_string();
    match error {
        CoreError::ShapeMismatch { .. }
        | CoreError::NonFinite { .. }
        | CoreError::NotSymmetric { .. }
        | CoreError::NegativeDiagonal { .. }
        | CoreError::InvalidPattern(_)
        | CoreError::MaskViolation { .. }
        | CoreError::InvalidSetting(_)
        | CoreError::Empty(_)
        | CoreError::Format { .. } => PyValueError::new_err(message),
        CoreError::Io { .. } => PyOSError::new_err(message),
        CoreError::Numerical(_) => NumericalError::new_err(message),
        CoreError::Device(_) | CoreError::BackendUnavailable(_) => DeviceError::new_err(message),
        CoreError::MemoryBudget { .. } => PyMemoryError::new_err(message),
        CoreError::Internal(_) => OptimaError::new_err(message),
    }
}

/// `Result` with the error already a Python exception.
pub trait IntoPy<T> {
    /// Converts the error.
    fn py_err(self) -> pyo3::PyResult<T>;
}

impl<T> IntoPy<T> for optima::Result<T> {
    fn py_err(self) -> pyo3::PyResult<T> {
        self.map_err(to_py)
    }
}
