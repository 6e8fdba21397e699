//! The CUDA backend against the CPU on the same problems.
//!
//! The device-independent checks (device names, a typed error instead of a panic, options a
//! device cannot honour) run everywhere. The GPU tests exist only with the `cuda` feature and are
//! `#[ignore]`d, so that a machine without a GPU never counts them as passed: on a GPU machine run
//! them with `cargo test -p optima --features cuda --test cuda -- --include-ignored` (what
//! `scripts/device-check.sh` does). Without a usable GPU an ignored test that is run anyway fails.

use optima::OptimaError;
use optima::backend::Device;
use optima::solve::SolverSpec;

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
    let direct: SolverSpec = "direct".parse().unwrap();
    // An ordinal no machine has: BackendUnavailable with or without the feature, GPU or not.
    match direct.build(Device::Cuda { ordinal: 4096 }) {
        Err(OptimaError::BackendUnavailable(msg)) => {
            assert!(!msg.is_empty());
            if !cfg!(feature = "cuda") {
                assert!(msg.contains("--features cuda"), "{msg}");
            }
        }
        Err(e) => panic!("expected BackendUnavailable, got {e}"),
        Ok(_) => panic!("device 4096 cannot exist"),
    }
}

#[test]
fn solvers_and_options_a_device_lacks_are_refused_before_it_is_opened() {
    use optima::solve::{PcgSettings, Precision};
    // Refused as settings whatever the machine: these never reach the driver.
    for spec in [
        "admm".parse().unwrap(),
        "pdhg".parse().unwrap(),
        "sparsegpt".parse().unwrap(),
        "dual-pcg".parse().unwrap(),
        SolverSpec::Pcg(PcgSettings::default().precision(Precision::Double)),
    ] {
        match spec.build(Device::Cuda { ordinal: 0 }) {
            Err(OptimaError::InvalidSetting(msg)) => assert!(msg.contains("CUDA"), "{msg}"),
            Err(e) => panic!("{spec:?}: expected InvalidSetting, got {e}"),
            Ok(_) => panic!("{spec:?} must not build on a CUDA device"),
        }
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use std::sync::Arc;

    use ndarray::Array2;
    use optima::backend::cuda::CudaBackend;
    use optima::hessian::{CudaHessianAccumulator, HessianPrecision};
    use optima::mask::{Masker, WandaMasker};
    use optima::solve::cuda::{CudaAutoSolver, CudaDirectSolver, CudaPcgSettings, CudaPcgSolver};
    use optima::solve::{
        AutoPlan, AutoSettings, IterativeSettings, PcgSettings, Precision, Preconditioner, SolverSpec,
    };
    use optima::synthetic::LlmLikeLayer;
    use optima::{
        CpuHessianAccumulator, DirectSettings, DirectSolver, Hessian, HessianAccumulator, LayerProblem, Mask,
        OptimaError, Parallelism, QpSolver, RowStatus, Solution, SparsityPattern,
    };

    /// The device; a test that needs one fails without it (they are ignored unless asked for).
    fn device() -> Arc<CudaBackend> {
        match CudaBackend::new(0) {
            Ok(b) => b,
            Err(e) => panic!("this test needs a CUDA GPU and found none: {e}"),
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
    #[ignore = "needs a CUDA GPU: run with --include-ignored on one"]
    fn hessian_on_device_matches_cpu() {
        let backend = device();
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
    #[ignore = "needs a CUDA GPU: run with --include-ignored on one"]
    fn device_pcg_matches_cpu_direct() {
        let backend = device();
        for (pattern, seed) in [("0.5", 1), ("2:4", 2)] {
            let p = problem(64, 256, pattern, seed);
            let cpu = cpu_direct(&p);
            for preconditioner in [Preconditioner::Jacobi, Preconditioner::InverseHessian, Preconditioner::Identity] {
                for tf32 in [false, true] {
                    let pcg = PcgSettings::default()
                        .iterative(IterativeSettings::new(1e-9, 5000))
                        .preconditioner(preconditioner)
                        .precision(Precision::Mixed);
                    let settings = CudaPcgSettings { pcg, tf32 };
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
            let spec = SolverSpec::Pcg(PcgSettings::default().precision(Precision::Mixed));
            let gpu = spec.build_on(backend.clone()).unwrap().solve(&p, None).unwrap();
            assert!(gpu.report.kkt_residual <= 1e-6);
            assert_eq!(gpu.report.failed_rows, 0);
        }
    }

    #[test]
    #[ignore = "needs a CUDA GPU: run with --include-ignored on one"]
    fn device_direct_matches_cpu_direct() {
        let backend = device();
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
    #[ignore = "needs a CUDA GPU: run with --include-ignored on one"]
    fn device_auto_matches_cpu_in_both_plans() {
        let backend = device();
        let p = problem(64, 192, "0.5", 6);
        let cpu = cpu_direct(&p);
        for plan in [AutoPlan::Direct, AutoPlan::Pcg { max_iterations: 100 }, AutoPlan::Pcg { max_iterations: 2 }] {
            let settings = AutoSettings::default().tolerance(1e-8).plan_override(Some(plan));
            let gpu = CudaAutoSolver::new(backend.clone(), settings).solve(&p, None).unwrap();
            assert!(gpu.report.kkt_residual <= 1e-8, "{plan:?}: KKT {}", gpu.report.kkt_residual);
            assert_matches(&gpu, &cpu, &p, 1e-6, 1e-4);
        }
    }

    #[test]
    #[ignore = "needs a CUDA GPU: run with --include-ignored on one"]
    fn device_rejects_solvers_it_does_not_have() {
        let backend = device();
        for name in ["admm", "pdhg", "sparsegpt", "dual-pcg"] {
            let spec: SolverSpec = name.parse().unwrap();
            assert!(matches!(spec.build_on(backend.clone()), Err(OptimaError::InvalidSetting(_))));
        }
    }
}
