//! `auto` on the device: the CPU's choice between `direct` and inverse-preconditioned PCG, with
//! the device's rates in place of flop parity. A batched Cholesky of many k×k blocks runs far
//! below GEMM speed on a GPU, so the break-even moves towards PCG.

use std::sync::Arc;
use std::time::Instant;

use ndarray::ArrayView2;

use super::direct::CudaDirectSolver;
use super::pcg::{CudaPcgSettings, run_device_pcg};
use crate::backend::cuda::CudaBackend;
use crate::error::Result;
use crate::problem::{LayerProblem, Mask, Solution};
use crate::solve::auto::{PlanCosts, decades, rows_left, solve_exactly};
use crate::solve::batched::{IterativeSettings, starting_point};
use crate::solve::{
    AutoPlan, AutoSettings, DirectSettings, PcgSettings, Precision, Preconditioner, QpSolver, direct_flops, evaluate,
};

/// Primal PCG iterations per decade of tolerance with the inverse-Hessian preconditioner on
/// generated LLM-like layers: the optimistic count this cost model plans with.
const ITERATIONS_PER_DECADE: f64 = 2.25;

/// The device's throughput per kernel kind, flop/s, for the cost model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeviceCostModel {
    /// f32 GEMM (the PCG iterations).
    pub gemm_f32: f64,
    /// f64 GEMM (the residual certificate, once per refinement step).
    pub gemm_f64: f64,
    /// Batched f64 Cholesky of the gathered `H_SS` blocks (`direct`).
    pub cholesky_f64: f64,
}

impl Default for DeviceCostModel {
    /// Figures for an H100/H200 class device: SGEMM and DGEMM about 45 TFLOP/s, batched
    /// Cholesky of large blocks assumed 5 TFLOP/s. `optima bench --device cuda` measures the GEMM
    /// rates; replace these with its figures for another device.
    fn default() -> Self {
        Self { gemm_f32: 45e12, gemm_f64: 45e12, cholesky_f64: 5e12 }
    }
}

impl DeviceCostModel {
    /// The plan for a layer with this mask at tolerance `tol`: seconds of `direct` against
    /// seconds of PCG (setup `n³` in f64, `4mn²` per f32 iteration, a `2mn²` f64 certificate per
    /// refinement step), and PCG's break-even iteration cap.
    pub fn plan(&self, mask: &Mask, tol: f64) -> AutoPlan {
        self.costs(mask, tol).plan()
    }

    fn costs(&self, mask: &Mask, tol: f64) -> PlanCosts {
        let (m, n) = (mask.rows() as f64, mask.cols() as f64);
        let refinements = (decades(tol) / 4.0).ceil() + 2.0;
        PlanCosts {
            direct: direct_flops(mask) / self.cholesky_f64 + 2.0 * m * n * n / self.gemm_f64,
            setup: n.powi(3) / self.gemm_f64 + refinements * 2.0 * m * n * n / self.gemm_f64,
            per_iteration: 4.0 * m * n * n / self.gemm_f32,
            predicted_iterations: ITERATIONS_PER_DECADE * decades(tol),
        }
    }
}

/// `auto` on a CUDA device.
#[derive(Debug)]
pub struct CudaAutoSolver {
    backend: Arc<CudaBackend>,
    settings: AutoSettings,
    model: DeviceCostModel,
}

impl CudaAutoSolver {
    /// A solver on `backend` with these settings and the default cost model.
    pub fn new(backend: Arc<CudaBackend>, settings: AutoSettings) -> Self {
        Self { backend, settings, model: DeviceCostModel::default() }
    }

    /// Replaces the cost model (e.g. with measured rates).
    pub fn cost_model(mut self, model: DeviceCostModel) -> Self {
        self.model = model;
        self
    }

    /// The plan for a layer with this mask.
    pub fn plan(&self, mask: &Mask) -> AutoPlan {
        self.settings.plan_or(|| self.model.costs(mask, self.settings.tolerance))
    }
}

impl QpSolver for CudaAutoSolver {
    fn name(&self) -> &str {
        "auto"
    }

    fn solve(&self, problem: &LayerProblem, warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution> {
        let par = self.settings.parallelism;
        let direct = CudaDirectSolver::new(self.backend.clone(), DirectSettings::default().parallelism(par));
        let AutoPlan::Pcg { max_iterations } = self.plan(problem.mask()) else {
            let mut solution = direct.solve(problem, None)?;
            solution.report.solver = self.name().to_string();
            return Ok(solution);
        };
        let start = Instant::now();
        let settings = CudaPcgSettings {
            pcg: PcgSettings {
                iterative: IterativeSettings { tolerance: self.settings.tolerance, max_iterations, parallelism: par },
                preconditioner: Preconditioner::InverseHessian,
                precision: Precision::Mixed,
            },
            tf32: false,
        };
        let x0 = starting_point(problem, warm_start)?;
        let mut outcome = run_device_pcg(&self.backend, problem, x0, &settings)?;
        let left = rows_left(&outcome, 0..problem.rows());
        solve_exactly(problem, &left, &mut outcome, |p| direct.solve_rows(p))?;
        let seconds = start.elapsed().as_secs_f64();
        let report = par.install(|| {
            evaluate(self.name(), problem, outcome.weight.view(), &outcome.iterations, &outcome.status, seconds, par)
        })?;
        Ok(Solution { weight: outcome.weight, report })
    }
}
