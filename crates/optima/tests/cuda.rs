//! The CUDA backend against the CPU on the same problems. Always compiled: without the `cuda`
//! feature, or without a usable GPU, every GPU test prints `skipped:` with the reason, and
//! `gpu_tests_summary` prints how many were skipped (run with `-- --nocapture` to see them).
//! The CPU-only checks (device names, a typed error instead of a panic) run everywhere.

use optima::OptimaError;
use optima::backend::Device;
use optima::solve::{SolverOptions, solver_on};

/// The GPU tests of this file (for the summary line).
const GPU_TESTS: &[&str] = &[
    "hessian_on_device_matches_cpu",
    "device_pcg_matches_cpu_direct",
    "device_direct_matches_cpu_direct",
    "device_auto_matches_cpu_in_both_plans",
    "device_rejects_solvers_it_does_not_have",
];

#[test]
fn device_names_parse() {
    assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
    assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda { ordinal: 0 });
    assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda { ordinal: 1 });
    assert_eq!(Device::Cuda { ordinal: 1 }.to_string(), "cuda:1");
    assert!(matches!("tpu".parse::<Device>(), Err(OptimaError::InvalidSetting(_))));
}

#[test]
fn cuda_without_a_gpu_is_a_typed_error_not_a_panic() {
    // An ordinal no machine has: BackendUnavailable with or without the feature, GPU or not.
    match solver_on(Device::Cuda { ordinal: 4096 }, "direct", &SolverOptions::default()) {
        Err(OptimaError::BackendUnavailable(msg)) => assert!(!msg.is_empty()),
        Err(e) => panic!("expected BackendUnavailable, got {e}"),
        Ok(_) => panic!("device 4096 cannot exist"),
    }
    match solver_on(Device::Cuda { ordinal: 0 }, "pcg", &SolverOptions::default()) {
        Ok(solver) => println!("a CUDA device is present ({})", solver.name()),
        Err(OptimaError::BackendUnavailable(msg)) => {
            if !cfg!(feature = "cuda") {
                assert!(msg.contains("--features cuda"), "{msg}");
            }
            println!("cuda unavailable, as expected here: {msg}");
        }
        Err(e) => panic!("expected BackendUnavailable or a solver, got {e}"),
    }
    // Unknown names stay InvalidSetting on either device.
    assert!(matches!(
        solver_on(Device::Cuda { ordinal: 0 }, "nope", &SolverOptions::default()),
        Err(OptimaError::InvalidSetting(_))
    ));
}

#[cfg(not(feature = "cuda"))]
fn unavailable_reason() -> Option<String> {
    Some("built without the `cuda` feature (cargo test --features cuda --test cuda)".into())
}

#[cfg(feature = "cuda")]
fn unavailable_reason() -> Option<String> {
    gpu::backend().err()
}

#[test]
fn gpu_tests_summary() {
    match unavailable_reason() {
        Some(reason) => println!("skipped {} of {} GPU tests: {reason}", GPU_TESTS.len(), GPU_TESTS.len()),
        None => println!("GPU present: {} GPU tests ran", GPU_TESTS.len()),
    }
}

#[cfg(not(feature = "cuda"))]
mod gpu_skipped {
    fn skip(test: &str) {
        println!("skipped: {test}: {}", super::unavailable_reason().unwrap_or_default());
    }

    #[test]
    fn hessian_on_device_matches_cpu() {
        skip("hessian_on_device_matches_cpu");
    }
    #[test]
    fn device_pcg_matches_cpu_direct() {
        skip("device_pcg_matches_cpu_direct");
    }
    #[test]
    fn device_direct_matches_cpu_direct() {
        skip("device_direct_matches_cpu_direct");
    }
    #[test]
    fn device_auto_matches_cpu_in_both_plans() {
        skip("device_auto_matches_cpu_in_both_plans");
    }
    #[test]
    fn device_rejects_solvers_it_does_not_have() {
        skip("device_rejects_solvers_it_does_not_have");
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use std::sync::Arc;

    use ndarray::Array2;
    use optima::backend::cuda::CudaBackend;
    use optima::hessian::{CudaHessianAccumulator, HessianPrecision};
    use optima::mask::{Masker, WandaMasker};
    use optima::problem::synthetic::LlmLikeLayer;
    use optima::solve::cuda::{CudaAutoSolver, CudaDirectSolver, CudaPcgSettings, CudaPcgSolver, cuda_solver_by_name};
    use optima::solve::{AutoPlan, AutoSettings, IterativeSettings, PcgSettings, Preconditioner, SolverOptions};
    use optima::{
        CpuHessianAccumulator, DirectSettings, DirectSolver, Hessian, HessianAccumulator, LayerProblem, Mask,
        OptimaError, Parallelism, QpSolver, RowStatus, Solution, SparsityPattern,
    };

    /// The backend, or why there is none.
    pub fn backend() -> Result<Arc<CudaBackend>, String> {
        match CudaBackend::new(0) {
            Ok(b) => Ok(b),
            Err(OptimaError::BackendUnavailable(reason)) => Err(format!("no CUDA device ({reason})")),
            Err(e) => panic!("CudaBackend::new must fail only with BackendUnavailable, got {e}"),
        }
    }

    fn device_or_skip(test: &str) -> Option<Arc<CudaBackend>> {
        match backend() {
            Ok(b) => Some(b),
            Err(reason) => {
                println!("skipped: {test}: {reason}");
                None
            }
        }
    }

    fn problem(m: usize, n: usize, pattern: &str, seed: u64) -> LayerProblem {
        let (w, h) = LlmLikeLayer::new(m, n, seed).generate(Parallelism::AllCores);
        let hessian = Hessian::new(h, 0.01).unwrap();
        let pattern: SparsityPattern = pattern.parse().unwrap();
        let mask = WandaMasker.select(w.view(), &hessian, &pattern).unwrap();
        LayerProblem::new(w, hessian, mask).unwrap()
    }

    fn cpu_direct(p: &LayerProblem) -> Solution {
        DirectSolver::new(DirectSettings::default()).solve(p, None).unwrap()
    }

    /// Same certificate: pruned entries exactly 0, objective within `rel` of the CPU's.
    fn assert_matches(gpu: &Solution, cpu: &Solution, p: &LayerProblem, rel: f64, weight_tol: f64) {
        let mask = p.mask();
        for ((i, j), &v) in gpu.weight.indexed_iter() {
            if mask.is_pruned(i, j) {
                assert_eq!(v, 0.0, "pruned entry [{i},{j}] is {v}");
            }
        }
        assert_eq!(gpu.report.max_abs_pruned, 0.0);
        assert_eq!(gpu.report.failed_rows, 0, "{:?}", gpu.report.rows.iter().find(|r| !r.status.is_success()));
        let (a, b) = (gpu.report.objective, cpu.report.objective);
        assert!((a - b).abs() <= rel * b.abs().max(1e-300), "objective gpu {a} vs cpu {b}");
        let scale = cpu.weight.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = (&gpu.weight - &cpu.weight).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(diff <= weight_tol * scale, "weights differ by {diff} (scale {scale})");
    }

    #[test]
    fn hessian_on_device_matches_cpu() {
        let Some(backend) = device_or_skip("hessian_on_device_matches_cpu") else { return };
        let n = 96;
        let x =
            Array2::from_shape_fn((300, n), |(t, j)| (((t * 31 + j * 17) % 23) as f32 - 11.0) * (1.0 + (j % 5) as f32));
        let mut cpu = CpuHessianAccumulator::new(n, Parallelism::AllCores);
        let mut f32_acc = CudaHessianAccumulator::new(backend.clone(), n, HessianPrecision::F32).unwrap();
        let mut f64_acc = CudaHessianAccumulator::new(backend, n, HessianPrecision::F64).unwrap();
        for (lo, hi) in [(0, 100), (100, 250), (250, 300)] {
            let batch = x.slice(ndarray::s![lo..hi, ..]);
            cpu.add_batch(batch).unwrap();
            f32_acc.add_batch(batch).unwrap();
            f64_acc.add_batch(batch).unwrap();
        }
        assert_eq!(f32_acc.tokens(), 300);
        let (c, g32, g64) = (cpu.finish(0.01).unwrap(), f32_acc.finish(0.01).unwrap(), f64_acc.finish(0.01).unwrap());
        let max = c.matrix().iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = |g: &Hessian| (&g.matrix() - &c.matrix()).iter().fold(0.0f64, |m, v| m.max(v.abs())) / max;
        assert!(err(&g64) <= 1e-12, "f64 device Hessian off by {}", err(&g64));
        assert!(err(&g32) <= 1e-5, "f32 device Hessian off by {}", err(&g32));
    }

    #[test]
    fn device_pcg_matches_cpu_direct() {
        let Some(backend) = device_or_skip("device_pcg_matches_cpu_direct") else { return };
        for (pattern, seed) in [("0.5", 1), ("2:4", 2)] {
            let p = problem(64, 256, pattern, seed);
            let cpu = cpu_direct(&p);
            for preconditioner in [Preconditioner::Jacobi, Preconditioner::InverseHessian, Preconditioner::Identity] {
                for tf32 in [false, true] {
                    let settings = CudaPcgSettings {
                        pcg: PcgSettings {
                            iterative: IterativeSettings::new(1e-9, 5000),
                            preconditioner,
                            ..Default::default()
                        },
                        tf32,
                    };
                    let gpu = CudaPcgSolver::new(backend.clone(), settings).solve(&p, None).unwrap();
                    if tf32 {
                        // TF32 is only as good as cond(H_SS)·1e-3 < 1 allows: the statuses must be
                        // honest, whatever they are.
                        for row in &gpu.report.rows {
                            if row.status == RowStatus::ReachedTolerance {
                                assert!(row.kkt_residual <= 1e-9, "{preconditioner:?} tf32: {row:?}");
                            }
                            assert_eq!(row.max_abs_pruned, 0.0);
                        }
                        continue;
                    }
                    assert!(gpu.report.kkt_residual <= 1e-9, "{preconditioner:?}: KKT {}", gpu.report.kkt_residual);
                    assert_matches(&gpu, &cpu, &p, 1e-6, 1e-4);
                }
            }
            // The default tolerance meets the CPU's contract too.
            let gpu = cuda_solver_by_name(backend.clone(), "pcg", &SolverOptions::default())
                .unwrap()
                .solve(&p, None)
                .unwrap();
            assert!(gpu.report.kkt_residual <= 1e-6);
            assert_eq!(gpu.report.failed_rows, 0);
        }
    }

    #[test]
    fn device_direct_matches_cpu_direct() {
        let Some(backend) = device_or_skip("device_direct_matches_cpu_direct") else { return };
        for (pattern, seed) in [("0.5", 3), ("2:4", 4)] {
            let p = problem(48, 128, pattern, seed);
            let cpu = cpu_direct(&p);
            // A small block budget forces several batches.
            let gpu = CudaDirectSolver::new(backend.clone(), DirectSettings::default())
                .block_budget(5 * 64 * 64 * 8)
                .solve(&p, None)
                .unwrap();
            assert!(gpu.report.kkt_residual <= 1e-10, "KKT {}", gpu.report.kkt_residual);
            assert_matches(&gpu, &cpu, &p, 1e-9, 1e-8);
        }
        // Identical masks share a factorization; rows that prune nothing or everything.
        let base = problem(12, 64, "0.5", 5);
        let (w, h, _) = base.into_parts();
        let mask = Mask::from_fn(12, 64, |i, j| match i % 4 {
            0 => j % 2 == 0,
            1 => j % 3 == 0,
            2 => false,
            _ => i == 11,
        });
        let p = LayerProblem::new(w, h, mask).unwrap();
        let cpu = cpu_direct(&p);
        let gpu = CudaDirectSolver::new(backend, DirectSettings::default()).solve(&p, None).unwrap();
        assert_matches(&gpu, &cpu, &p, 1e-9, 1e-8);
    }

    #[test]
    fn device_auto_matches_cpu_in_both_plans() {
        let Some(backend) = device_or_skip("device_auto_matches_cpu_in_both_plans") else { return };
        let p = problem(64, 192, "0.5", 6);
        let cpu = cpu_direct(&p);
        for plan in [AutoPlan::Direct, AutoPlan::Pcg { max_iterations: 100 }, AutoPlan::Pcg { max_iterations: 2 }] {
            let settings =
                AutoSettings { tolerance: 1e-8, parallelism: Parallelism::AllCores, plan_override: Some(plan) };
            let gpu = CudaAutoSolver::new(backend.clone(), settings).solve(&p, None).unwrap();
            assert!(gpu.report.kkt_residual <= 1e-8, "{plan:?}: KKT {}", gpu.report.kkt_residual);
            assert_matches(&gpu, &cpu, &p, 1e-6, 1e-4);
        }
    }

    #[test]
    fn device_rejects_solvers_it_does_not_have() {
        let Some(backend) = device_or_skip("device_rejects_solvers_it_does_not_have") else { return };
        for name in ["admm", "pdhg", "sparsegpt"] {
            assert!(matches!(
                cuda_solver_by_name(backend.clone(), name, &SolverOptions::default()),
                Err(OptimaError::InvalidSetting(_))
            ));
        }
    }
}
