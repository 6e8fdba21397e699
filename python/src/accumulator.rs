//! `optima.HessianAccumulator`: `H = XᵀX / N` from activation batches, summed in f64 on the CPU.

use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2};
use optima::{CpuHessianAccumulator, HessianAccumulator, HessianPrecision, Parallelism};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::IntoPy;

/// The Rust side of `optima.HessianAccumulator` (the Python class shapes and casts batches).
#[pyclass(name = "_HessianAccumulator", module = "optima._optima")]
pub struct PyHessianAccumulator {
    inner: CpuHessianAccumulator,
    n: usize,
}

#[pymethods]
impl PyHessianAccumulator {
    /// An empty accumulator for `n` inputs, summing on `threads` threads (0 = all cores), its
    /// batch products in `products` precision (`"f64"` or `"f32"`; the sums are f64 either way).
    #[new]
    fn new(n: usize, threads: usize, products: &str) -> PyResult<Self> {
        if n == 0 {
            return Err(PyValueError::new_err("a Hessian needs at least one input (n ≥ 1)"));
        }
        let precision: HessianPrecision = products.parse().map_err(|e| PyValueError::new_err(format!("{e}")))?;
        let inner = CpuHessianAccumulator::with_precision(n, Parallelism::from_threads(threads), precision);
        Ok(Self { inner, n })
    }

    /// Adds a `tokens × n` float32 batch; the GIL is released while it is summed.
    fn add_batch(&mut self, py: Python<'_>, x: PyReadonlyArray2<'_, f32>) -> PyResult<()> {
        let view = x.as_array();
        let inner = &mut self.inner;
        py.detach(|| inner.add_batch(view)).py_err()
    }

    /// Tokens added so far.
    #[getter]
    fn tokens(&self) -> usize {
        self.inner.tokens()
    }

    /// Inputs `n`.
    #[getter]
    fn n(&self) -> usize {
        self.n
    }

    /// The mean `XᵀX / N` plus `λ I`, `λ = damping · mean(diag)`; the sums are kept, so more
    /// batches may follow.
    fn finish<'py>(&self, py: Python<'py>, damping: f64) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let inner = self.inner.clone();
        let matrix = py
            .detach(|| {
                let hessian = inner.finish(damping)?;
                let mut matrix = hessian.undamped();
                matrix.diag_mut().mapv_inplace(|d| d + hessian.damping());
                Ok(matrix)
            })
            .py_err()?;
        Ok(matrix.into_pyarray(py))
    }
}
