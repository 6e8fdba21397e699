//! The `optima._optima` extension module: the core's Hessian accumulator, maskers and solvers on
//! numpy arrays. The `optima` Python package (`python/optima/`) wraps it: it turns any
//! array-like into the arrays this module takes and documents the API (`__init__.pyi`).

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod accumulator;
mod arrays;
mod errors;
mod solve;

use pyo3::prelude::*;

/// The module's functions, class and exceptions.
#[pymodule]
fn _optima(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<accumulator::PyHessianAccumulator>()?;
    m.add_function(wrap_pyfunction!(solve::select_mask, m)?)?;
    m.add_function(wrap_pyfunction!(solve::reconstruct, m)?)?;
    m.add("OptimaError", py.get_type::<errors::OptimaError>())?;
    m.add("NumericalError", py.get_type::<errors::NumericalError>())?;
    m.add("DeviceError", py.get_type::<errors::DeviceError>())?;
    m.add("DEFAULT_DAMPING", optima::DEFAULT_PERCDAMP)?;
    m.add("SOLVERS", optima::SolverSpec::NAMES.to_vec())?;
    m.add("CUDA_COMPILED", optima::Device::cuda_compiled())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
