//! Batched masked PCG on the device, in mixed precision with f64 refinement.
//!
//! Outer loop (f64, the certificate): the true residual `r = −(H(x − w))_S` of every row by a
//! DGEMM, its relative KKT residual against the tolerance; rows at tolerance are done. Inner
//! loop (f32, the work): PCG on the correction `H_SS e_S = r_S` for the remaining rows, one
//! SGEMM `P · H` per iteration (two with the inverse-Hessian preconditioner), per-row step
//! lengths, until each row's recurrence residual is below `max(tol·scale/2, 1e-4·‖r‖∞)`; then
//! `x += e` in f64 and back to the outer loop. So the stopping test is the CPU's, on a residual
//! computed in f64: the tolerance contract is the CPU's, while the iterations run at f32 (or, when
//! asked, TF32) speed. f32 limits each inner solve to a few decades; the refinement recovers the
//! rest.

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::CudaSlice;
use ndarray::{Array2, ArrayView2};

use crate::backend::cpu::spd_inverse;
use crate::backend::cuda::CudaBackend;
use crate::error::{OptimaError, Result};
use crate::problem::{LayerProblem, RowStatus, Solution};
use crate::solve::batched::{Outcome, TINY, starting_point};
use crate::solve::{PcgSettings, Preconditioner, QpSolver, evaluate};

/// Each inner solve aims to reduce a row's residual by this factor at least (f32 reaches it).
const INNER_REDUCTION: f64 = 1e-4;
/// Most f32 iterations of one inner solve.
const INNER_MAX: usize = 200;
/// Most refinement (outer) steps.
const OUTER_MAX: usize = 30;

/// Settings of [`CudaPcgSolver`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CudaPcgSettings {
    /// Tolerance, cap (counted in inner iterations per row), preconditioner; `parallelism`
    /// serves the CPU report.
    pub pcg: PcgSettings,
    /// Run the f32 GEMMs on TF32 tensor cores (faster, ~1e-3 relative; more refinement steps).
    pub tf32: bool,
}

/// Batched PCG on a CUDA device (see the module docs).
#[derive(Debug)]
pub struct CudaPcgSolver {
    backend: Arc<CudaBackend>,
    settings: CudaPcgSettings,
}

impl CudaPcgSolver {
    /// A solver on `backend` with these settings.
    pub fn new(backend: Arc<CudaBackend>, settings: CudaPcgSettings) -> Self {
        Self { backend, settings }
    }
}

impl QpSolver for CudaPcgSolver {
    fn name(&self) -> &str {
        "pcg"
    }

    fn solve(&self, problem: &LayerProblem, warm_start: Option<ArrayView2<'_, f64>>) -> Result<Solution> {
        let s = self.settings.pcg.iterative;
        s.check()?;
        let start = Instant::now();
        let x0 = starting_point(problem, warm_start)?;
        let outcome = run_device_pcg(&self.backend, problem, x0, &self.settings)?;
        let seconds = start.elapsed().as_secs_f64();
        let par = s.parallelism;
        let report = par.install(|| {
            evaluate(self.name(), problem, outcome.weight.view(), &outcome.iterations, &outcome.status, seconds, par)
        })?;
        Ok(Solution { weight: outcome.weight, report })
    }
}

/// The preconditioner on the device.
enum DevicePreconditioner {
    Identity,
    Jacobi(CudaSlice<f32>),
    Inverse(CudaSlice<f32>),
}

impl DevicePreconditioner {
    fn build(
        backend: &CudaBackend,
        kind: Preconditioner,
        problem: &LayerProblem,
        h64: &CudaSlice<f64>,
        par: crate::Parallelism,
    ) -> Result<Self> {
        let n = problem.cols();
        let h = problem.hessian().matrix();
        Ok(match kind {
            Preconditioner::Identity => Self::Identity,
            Preconditioner::Jacobi => {
                let dinv: Vec<f32> = h.diag().iter().map(|&d| (1.0 / d) as f32).collect();
                Self::Jacobi(backend.upload(&dinv)?)
            }
            Preconditioner::InverseHessian => {
                let mut g32 = backend.zeros::<f32>(n * n)?;
                match backend.spd_inverse_f64(h64, n)? {
                    Some(g64) => backend.convert_f64_to_f32(&mut g32, &g64, 1.0)?,
                    None => {
                        // H did not factor cleanly on the device: the CPU's regularizing retries.
                        let g = spd_inverse(h, 0.0, par.faer())?;
                        let host: Vec<f32> = g.iter().map(|&v| v as f32).collect();
                        backend.upload_into(&host, &mut g32)?;
                    }
                }
                Self::Inverse(g32)
            }
        })
    }

    /// `z = M r` restricted to the kept set (`r` is zero off it already).
    fn apply(
        &self,
        backend: &CudaBackend,
        r: &CudaSlice<f32>,
        kept: &CudaSlice<f32>,
        z: &mut CudaSlice<f32>,
        n: usize,
    ) -> Result<()> {
        match self {
            Self::Identity => backend.copy(r, z),
            Self::Jacobi(dinv) => backend.scale_cols_f32(z, r, dinv, kept),
            Self::Inverse(g) => {
                backend.times_symmetric_f32(r, g, z, n)?;
                backend.mask_mul_f32(z, kept)
            }
        }
    }
}

/// Row-major host copy of a matrix view.
pub(crate) fn row_major(a: ArrayView2<'_, f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

/// 1.0 where kept, 0.0 where pruned, row-major.
pub(crate) fn kept_f32(problem: &LayerProblem) -> Vec<f32> {
    let (m, n) = (problem.rows(), problem.cols());
    let mask = problem.mask();
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            out.push(if mask.is_pruned(i, j) { 0.0 } else { 1.0 });
        }
    }
    out
}

/// Runs mixed-precision PCG on every row of `problem` from `x0` (masked), on the device.
pub(crate) fn run_device_pcg(
    backend: &CudaBackend,
    problem: &LayerProblem,
    x0: Array2<f64>,
    settings: &CudaPcgSettings,
) -> Result<Outcome> {
    let _session = backend.session()?;
    backend.set_tf32(settings.tf32)?;
    let result = pcg_on_device(backend, problem, x0, &settings.pcg);
    let reset = backend.set_tf32(false);
    let outcome = result?;
    reset?;
    Ok(outcome)
}

#[allow(clippy::indexing_slicing)] // i < m: every per-row vector here has the problem's m entries.
fn pcg_on_device(
    backend: &CudaBackend,
    problem: &LayerProblem,
    x0: Array2<f64>,
    settings: &PcgSettings,
) -> Result<Outcome> {
    let s = settings.iterative;
    let (m, n) = (problem.rows(), problem.cols());
    let len = m * n;
    let h64 = backend.upload(&row_major(problem.hessian().matrix()))?;
    let mut h32 = backend.zeros::<f32>(n * n)?;
    backend.convert_f64_to_f32(&mut h32, &h64, 1.0)?;
    let kept = backend.upload(&kept_f32(problem))?;
    let w64 = backend.upload(&row_major(problem.weight()))?;
    let mut x64 = backend.upload(&row_major(x0.view()))?;
    let precond = DevicePreconditioner::build(backend, settings.preconditioner, problem, &h64, s.parallelism)?;

    // Scales ‖(H w)_S‖∞ per row, as the CPU's relative KKT residual.
    let mut t64 = backend.zeros::<f64>(len)?;
    let mut d64 = backend.zeros::<f64>(len)?;
    let mut rmax = backend.zeros::<f64>(m)?;
    backend.times_symmetric_f64(&w64, &h64, &mut t64, n)?;
    backend.mask_mul_f64(&mut t64, &kept)?;
    backend.row_max_f64(&t64, &mut rmax, n)?;
    let scale: Vec<f64> = backend.download(&rmax)?.into_iter().map(|v| v.max(TINY)).collect();

    let mut r32 = backend.zeros::<f32>(len)?;
    let mut z32 = backend.zeros::<f32>(len)?;
    let mut p32 = backend.zeros::<f32>(len)?;
    let mut q32 = backend.zeros::<f32>(len)?;
    let mut e32 = backend.zeros::<f32>(len)?;
    let (mut rz, mut rz_new, mut pq, mut pmax) =
        (backend.zeros::<f64>(m)?, backend.zeros::<f64>(m)?, backend.zeros::<f64>(m)?, backend.zeros::<f64>(m)?);
    let (mut alpha, mut beta, mut target) =
        (backend.zeros::<f64>(m)?, backend.zeros::<f64>(m)?, backend.zeros::<f64>(m)?);
    let mut active = backend.zeros::<i32>(m)?;
    backend.note_memory();

    let mut iterations = vec![0usize; m];
    let mut finished: Vec<Option<RowStatus>> = vec![None; m];
    for outer in 0..=OUTER_MAX {
        // The certificate, in f64: r = (H(x − w))_S (sign flipped below).
        backend.sub_f64(&mut d64, &x64, &w64)?;
        backend.times_symmetric_f64(&d64, &h64, &mut t64, n)?;
        backend.mask_mul_f64(&mut t64, &kept)?;
        backend.row_max_f64(&t64, &mut rmax, n)?;
        let residual = backend.download(&rmax)?;
        if let Some(i) = residual.iter().position(|v| !v.is_finite()) {
            return Err(OptimaError::Numerical(format!("device PCG: the residual of row {i} became non-finite")));
        }
        let mut active_host = vec![0i32; m];
        let mut target_host = vec![0.0f64; m];
        for i in 0..m {
            if finished[i].is_some() {
                continue;
            }
            if residual[i] <= s.tolerance * scale[i] {
                finished[i] = Some(RowStatus::ReachedTolerance);
            } else if iterations[i] >= s.max_iterations || outer == OUTER_MAX {
                finished[i] = Some(RowStatus::MaxIterations);
            } else {
                active_host[i] = 1;
                target_host[i] = (0.5 * s.tolerance * scale[i]).max(INNER_REDUCTION * residual[i]);
            }
        }
        let Some(fewest) = (0..m).filter(|&i| active_host[i] == 1).map(|i| iterations[i]).min() else {
            break;
        };
        backend.upload_into(&active_host, &mut active)?;
        backend.upload_into(&target_host, &mut target)?;

        // Inner f32 PCG on H_SS e = r from e = 0.
        backend.convert_f64_to_f32(&mut r32, &t64, -1.0)?;
        backend.fill_zero(&mut e32)?;
        precond.apply(backend, &r32, &kept, &mut z32, n)?;
        backend.copy(&z32, &mut p32)?;
        backend.row_dot_max_f32(&r32, &z32, &mut rz, &mut pmax, n)?;
        let budget = INNER_MAX.min(s.max_iterations.saturating_sub(fewest)).max(1);
        for _ in 0..budget {
            backend.times_symmetric_f32(&p32, &h32, &mut q32, n)?;
            backend.mask_mul_f32(&mut q32, &kept)?;
            backend.row_dot_max_f32(&p32, &q32, &mut pq, &mut pmax, n)?;
            backend.pcg_alpha(&rz, &pq, &active, &mut alpha)?;
            backend.pcg_step(&mut e32, &mut r32, &p32, &q32, &alpha, n)?;
            precond.apply(backend, &r32, &kept, &mut z32, n)?;
            backend.row_dot_max_f32(&r32, &z32, &mut rz_new, &mut pmax, n)?;
            backend.pcg_beta(&mut rz, &rz_new, &active, &mut beta)?;
            backend.pcg_direction(&mut p32, &z32, &beta, n)?;
            for (count, &a) in iterations.iter_mut().zip(&active_host) {
                *count += usize::from(a == 1);
            }
            backend.pcg_update_active(&mut active, &pmax, &target)?;
            active_host = backend.download(&active)?;
            if active_host.iter().all(|&a| a == 0) {
                break;
            }
        }
        backend.add_f32_to_f64(&mut x64, &e32)?;
    }

    let values = backend.download(&x64)?;
    let mut weight = Array2::from_shape_vec((m, n), values)
        .map_err(|e| OptimaError::Internal(format!("device result shape: {e}")))?;
    crate::solve::enforce_mask(&mut weight, problem);
    let status = finished.into_iter().map(|s| s.unwrap_or(RowStatus::MaxIterations)).collect();
    Ok(Outcome { weight, iterations, status })
}
