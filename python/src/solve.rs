//! `select_mask` and `reconstruct`: the core's maskers and solvers on numpy arrays, the GIL
//! released for the work.

use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2};
use optima::mask::masker_by_name;
use optima::solve::{Precision, SolverSpec};
use optima::{Device, Hessian, LayerProblem, Parallelism, RowStatus, Solution, SparsityPattern};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::arrays::{FloatMatrix, mask_from, mask_to_py};
use crate::errors::IntoPy;

/// A mask for `weight` under `pattern`, chosen by `masker` (True = pruned).
#[pyfunction]
pub fn select_mask<'py>(
    py: Python<'py>,
    weight: FloatMatrix<'py>,
    hessian: FloatMatrix<'py>,
    pattern: &str,
    masker: &str,
    damping: f64,
) -> PyResult<Bound<'py, PyArray2<bool>>> {
    let (weight, hessian) = (weight.view(), hessian.view());
    let pattern: SparsityPattern = pattern.parse().py_err()?;
    let masker = masker_by_name(masker).py_err()?;
    let mask = py
        .detach(|| {
            let hessian = Hessian::new(hessian.to_f64(), damping)?;
            masker.select(weight.to_f64().view(), &hessian, &pattern)
        })
        .py_err()?;
    Ok(mask_to_py(py, &mask))
}

/// What `reconstruct` is asked to run, besides its arrays.
pub struct SolveOptions<'a> {
    solver: &'a str,
    tol: f64,
    damping: f64,
    device: &'a str,
    threads: usize,
}

/// The reconstructed weights (in the weight's own float type) and the report as a dict.
#[pyfunction]
#[allow(clippy::too_many_arguments)] // The Python signature: keyword arguments with defaults.
pub fn reconstruct<'py>(
    py: Python<'py>,
    weight: FloatMatrix<'py>,
    hessian: FloatMatrix<'py>,
    mask: PyReadonlyArray2<'py, bool>,
    solver: &str,
    tol: f64,
    damping: f64,
    device: &str,
    threads: usize,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyDict>)> {
    let options = SolveOptions { solver, tol, damping, device, threads };
    let (weight, hessian, mask) = (weight.view(), hessian.view(), mask.as_array());
    let as_f32 = weight.is_f32();
    let device: Device = options.device.parse().py_err()?;
    if device.is_cuda() && !Device::cuda_compiled() {
        return Err(crate::errors::DeviceError::new_err(
            "this optima package was built without CUDA support; reinstall it with \
             MATURIN_PEP517_ARGS='--features cuda' pip install ./python",
        ));
    }
    let parallelism = Parallelism::from_threads(options.threads);
    let spec = solver_spec(options.solver, options.tol, parallelism, device).py_err()?;
    let (solution, sparsity, absolute_damping) = py
        .detach(|| {
            let solver = spec.build(device)?;
            let hessian = Hessian::new(hessian.to_f64(), options.damping)?;
            let absolute_damping = hessian.damping();
            let problem = LayerProblem::new(weight.to_f64(), hessian, mask_from(mask))?;
            let sparsity = problem.mask().sparsity();
            Ok((solver.solve(&problem, None)?, sparsity, absolute_damping))
        })
        .py_err()?;
    let report = report_dict(py, &solution, &options, parallelism, sparsity, absolute_damping)?;
    let weight = if as_f32 {
        solution.weight.mapv(|v| v as f32).into_pyarray(py).into_any()
    } else {
        solution.weight.into_pyarray(py).into_any()
    };
    Ok((weight, report))
}

/// The solver `name` with the tolerance and threads given, as the command line builds it.
fn solver_spec(name: &str, tol: f64, parallelism: Parallelism, device: Device) -> optima::Result<SolverSpec> {
    let mut spec = name.parse::<SolverSpec>()?.parallelism(parallelism).tolerance(tol);
    // A GPU runs `pcg` in mixed precision only (as `optima solve --device cuda` does).
    if let (SolverSpec::Pcg(settings), true) = (&mut spec, device.is_cuda()) {
        settings.precision = Precision::Mixed;
    }
    Ok(spec)
}

fn report_dict<'py>(
    py: Python<'py>,
    solution: &Solution,
    options: &SolveOptions<'_>,
    parallelism: Parallelism,
    sparsity: f64,
    absolute_damping: f64,
) -> PyResult<Bound<'py, PyDict>> {
    let r = &solution.report;
    let d = PyDict::new(py);
    d.set_item("solver", &r.solver)?;
    d.set_item("device", options.device)?;
    d.set_item("m", r.m)?;
    d.set_item("n", r.n)?;
    d.set_item("threads", parallelism.threads())?;
    d.set_item("damping", options.damping)?;
    d.set_item("damping_absolute", absolute_damping)?;
    d.set_item("sparsity", sparsity)?;
    d.set_item("objective", r.objective)?;
    d.set_item("objective_mask_only", r.objective_mask_only)?;
    d.set_item("output_energy", r.output_energy)?;
    d.set_item("relative_error", r.error_after)?;
    d.set_item("relative_error_mask_only", r.error_before)?;
    d.set_item("kkt_residual", r.kkt_residual)?;
    d.set_item("max_abs_pruned", r.max_abs_pruned)?;
    d.set_item("iterations", r.iterations)?;
    d.set_item("failed_rows", r.failed_rows)?;
    d.set_item("regularized_rows", r.regularized_rows)?;
    d.set_item("seconds", r.seconds)?;
    d.set_item("evaluation_seconds", r.evaluation_seconds)?;
    let status = PyDict::new(py);
    let mut counts = [0usize; STATUS_NAMES.len()];
    for row in &r.rows {
        if let Some(c) = counts.get_mut(status_index(&row.status)) {
            *c += 1;
        }
    }
    for (name, count) in STATUS_NAMES.iter().zip(counts) {
        status.set_item(name, count)?;
    }
    d.set_item("status", status)?;
    Ok(d)
}

/// The per-row statuses, as the report's `status` dict names them.
const STATUS_NAMES: [&str; 5] = ["solved", "regularized", "reached_tolerance", "max_iterations", "numerical_error"];

fn status_index(status: &RowStatus) -> usize {
    match status {
        RowStatus::Solved => 0,
        RowStatus::Regularized { .. } => 1,
        RowStatus::ReachedTolerance => 2,
        RowStatus::MaxIterations => 3,
        RowStatus::NumericalError => 4,
    }
}
