//! Iterative solvers reach `direct`'s answer at tight tolerance, and report iterations truthfully.

mod common;

use common::{llm_like, random_mask};
use optima::RowStatus;
use optima::prelude::*;
use optima::solve::{
    DualPcgSettings, DualPcgSolver, IterativeSettings, PcgSettings, PcgSolver, Precision, Preconditioner,
};

fn problem(m: usize, n: usize, p: f64, seed: u64) -> LayerProblem {
    let (w, h) = llm_like(m, n, seed);
    let hessian = Hessian::new(h, 0.01).unwrap();
    LayerProblem::new(w, hessian, random_mask(m, n, p, seed + 1)).unwrap()
}

fn pcg(tol: f64, cap: usize, preconditioner: Preconditioner) -> PcgSolver {
    pcg_in(tol, cap, preconditioner, Precision::Double)
}

fn pcg_in(tol: f64, cap: usize, preconditioner: Preconditioner, precision: Precision) -> PcgSolver {
    PcgSolver::new(
        PcgSettings::default()
            .iterative(IterativeSettings::new(tol, cap))
            .preconditioner(preconditioner)
            .precision(precision),
    )
}

#[test]
fn pcg_reaches_the_exact_optimum_with_every_preconditioner() {
    for (seed, sparsity) in [(1, 0.5), (2, 0.3), (3, 0.8)] {
        let problem = problem(20, 48, sparsity, seed);
        let exact = DirectSolver::default().solve(&problem, None).unwrap();
        let preconditioners = [Preconditioner::Identity, Preconditioner::Jacobi, Preconditioner::InverseHessian];
        for (pc, precision) in
            preconditioners.into_iter().flat_map(|pc| [(pc, Precision::Double), (pc, Precision::Mixed)])
        {
            // Mixed precision reaches 1e-11 too: f32 products, f64 residuals and restarts.
            let sol = pcg_in(1e-11, 500, pc, precision).solve(&problem, None).unwrap();
            let r = &sol.report;
            assert_eq!(r.failed_rows, 0, "{pc:?} {precision:?}");
            assert!(r.kkt_residual <= 1e-11, "{pc:?}: {}", r.kkt_residual);
            assert_eq!(r.max_abs_pruned, 0.0);
            let gap = (r.objective - exact.report.objective) / exact.report.objective;
            assert!(gap.abs() < 1e-12, "{pc:?} seed {seed}: gap {gap}");
            let diff = (&sol.weight - &exact.weight).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
            assert!(diff < 1e-6, "{pc:?}: max weight difference {diff}");
        }
    }
}

fn dual_pcg(tol: f64, cap: usize, precision: Precision) -> DualPcgSolver {
    DualPcgSolver::new(DualPcgSettings::default().iterative(IterativeSettings::new(tol, cap)).precision(precision))
}

#[test]
fn dual_pcg_reaches_the_exact_optimum_in_both_precisions() {
    for (seed, sparsity) in [(1, 0.5), (2, 0.3), (3, 0.8), (5, 0.02)] {
        let problem = problem(20, 48, sparsity, seed);
        let exact = DirectSolver::default().solve(&problem, None).unwrap();
        for precision in [Precision::Double, Precision::Mixed] {
            let sol = dual_pcg(1e-11, 500, precision).solve(&problem, None).unwrap();
            let r = &sol.report;
            assert_eq!(r.failed_rows, 0, "{precision:?} seed {seed}");
            assert!(r.kkt_residual <= 1e-11, "{precision:?}: {}", r.kkt_residual);
            assert_eq!(r.max_abs_pruned, 0.0);
            let gap = (r.objective - exact.report.objective) / exact.report.objective;
            assert!(gap.abs() < 1e-12, "{precision:?} seed {seed}: gap {gap}");
            let diff = (&sol.weight - &exact.weight).mapv(f64::abs).fold(0.0f64, |a, &b| a.max(b));
            assert!(diff < 1e-6, "{precision:?}: max weight difference {diff}");
            // Rows with nothing pruned are their own optimum, found without iterating.
            for (i, row) in r.rows.iter().enumerate() {
                if problem.mask().pruned_in_row(i) == 0 {
                    assert_eq!(row.iterations, 0, "row {i}");
                } else {
                    assert!(row.iterations >= 1, "row {i}");
                }
            }
        }
    }
}

#[test]
fn dual_pcg_starts_from_the_multipliers_of_a_warm_start_and_stops_at_its_cap() {
    let problem = problem(10, 40, 0.5, 6);
    let exact = DirectSolver::default().solve(&problem, None).unwrap();
    for precision in [Precision::Double, Precision::Mixed] {
        // The optimum's multipliers solve the dual system: nothing left to iterate.
        let warm = dual_pcg(1e-9, 100, precision).solve(&problem, Some(exact.weight.view())).unwrap();
        assert!(warm.report.rows.iter().all(|r| r.iterations == 0 && r.status == RowStatus::ReachedTolerance));
        let cold = dual_pcg(1e-9, 100, precision).solve(&problem, None).unwrap();
        let most = cold.report.iterations;
        assert!(most >= 2);
        // Under a cap every row stops at it or before, and its status agrees with the report's
        // independently computed residual.
        for cap in [1, most - 1] {
            let capped = dual_pcg(1e-9, cap, precision).solve(&problem, None).unwrap();
            for row in &capped.report.rows {
                assert!(row.iterations <= cap);
                match row.status {
                    RowStatus::ReachedTolerance => assert!(row.kkt_residual <= 1e-9),
                    _ => assert!(row.iterations == cap && row.kkt_residual > 1e-9),
                }
            }
            if cap == 1 {
                assert!(capped.report.rows.iter().all(|r| r.status == RowStatus::MaxIterations));
            }
        }
    }
    let wrong = ndarray::Array2::<f64>::zeros((3, 3));
    assert!(matches!(
        dual_pcg(1e-9, 100, Precision::Mixed).solve(&problem, Some(wrong.view())),
        Err(optima::OptimaError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        dual_pcg(1e-9, 0, Precision::Mixed).solve(&problem, None),
        Err(optima::OptimaError::InvalidSetting(_))
    ));
}

#[test]
fn pcg_iteration_counts_are_truthful() {
    let problem = problem(12, 40, 0.5, 9);
    let first = pcg(1e-9, 1000, Preconditioner::Jacobi).solve(&problem, None).unwrap();
    for (i, row) in first.report.rows.iter().enumerate() {
        assert_eq!(row.status, RowStatus::ReachedTolerance, "row {i}");
        assert!(row.iterations >= 1, "row {i}");
    }
    // Capped one iteration short, every row that needed k ≥ 1 iterations stops unconverged at the cap.
    let most = first.report.iterations;
    let capped = pcg(1e-9, most - 1, Preconditioner::Jacobi).solve(&problem, None).unwrap();
    let at_max: Vec<_> =
        first.report.rows.iter().enumerate().filter(|(_, r)| r.iterations == most).map(|(i, _)| i).collect();
    assert!(!at_max.is_empty());
    for &i in &at_max {
        assert_eq!(capped.report.rows[i].status, RowStatus::MaxIterations);
        assert_eq!(capped.report.rows[i].iterations, most - 1);
        assert!(capped.report.rows[i].kkt_residual > 1e-9);
    }
    // A cap of one iteration is one iteration.
    let one = pcg(1e-14, 1, Preconditioner::Identity).solve(&problem, None).unwrap();
    assert!(one.report.rows.iter().all(|r| r.iterations == 1 && r.status == RowStatus::MaxIterations));
}

#[test]
fn pcg_uses_a_warm_start_and_rejects_a_bad_one() {
    let problem = problem(8, 32, 0.5, 4);
    let exact = DirectSolver::default().solve(&problem, None).unwrap();
    let warm = pcg(1e-9, 100, Preconditioner::Jacobi).solve(&problem, Some(exact.weight.view())).unwrap();
    assert!(warm.report.rows.iter().all(|r| r.iterations == 0 && r.status == RowStatus::ReachedTolerance));
    let wrong = ndarray::Array2::<f64>::zeros((3, 3));
    assert!(matches!(
        pcg(1e-9, 100, Preconditioner::Jacobi).solve(&problem, Some(wrong.view())),
        Err(optima::OptimaError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        pcg(0.0, 100, Preconditioner::Jacobi).solve(&problem, None),
        Err(optima::OptimaError::InvalidSetting(_))
    ));
}

#[test]
fn admm_reaches_the_exact_optimum() {
    use optima::solve::{AdmmSettings, AdmmSolver};
    for (seed, sparsity) in [(11, 0.5), (12, 0.7)] {
        let problem = problem(16, 40, sparsity, seed);
        let exact = DirectSolver::default().solve(&problem, None).unwrap();
        for adaptive_rho in [true, false] {
            let settings =
                AdmmSettings::default().iterative(IterativeSettings::new(1e-10, 20_000)).adaptive_rho(adaptive_rho);
            let sol = AdmmSolver::new(settings).solve(&problem, None).unwrap();
            assert_eq!(sol.report.failed_rows, 0, "adaptive {adaptive_rho}");
            assert!(sol.report.kkt_residual <= 1e-10);
            assert_eq!(sol.report.max_abs_pruned, 0.0);
            let gap = (sol.report.objective - exact.report.objective) / exact.report.objective;
            assert!(gap.abs() < 1e-12, "gap {gap}");
            assert!(sol.report.rows.iter().all(|r| r.iterations % 5 == 0 && r.status == RowStatus::ReachedTolerance));
        }
    }
}

#[test]
fn pdhg_converges_when_asked_to_and_stops_early_at_the_papers_tolerance() {
    use optima::solve::{PdhgSettings, PdhgSolver};
    let problem = problem(8, 24, 0.5, 21);
    let exact = DirectSolver::default().solve(&problem, None).unwrap();
    let tight = PdhgSettings::default().iterative(IterativeSettings::new(1e-2, 200_000)).eps_abs(1e-10).eps_rel(1e-10);
    let sol = PdhgSolver::new(tight).solve(&problem, None).unwrap();
    assert_eq!(sol.report.failed_rows, 0);
    let gap = (sol.report.objective - exact.report.objective) / exact.report.objective;
    assert!(gap.abs() < 1e-6, "gap {gap}");
    assert_eq!(sol.report.max_abs_pruned, 0.0);
    let loose = PdhgSolver::default().solve(&problem, None).unwrap();
    assert!(loose.report.rows.iter().all(|r| r.status == RowStatus::ReachedTolerance && r.iterations % 64 == 0));
    assert!(loose.report.iterations < sol.report.iterations);
    assert!(loose.report.objective >= exact.report.objective * (1.0 - 1e-12));
    let capped = PdhgSettings::default().iterative(IterativeSettings::new(1e-2, 10)).eps_abs(1e-12).eps_rel(1e-12);
    let sol = PdhgSolver::new(capped).solve(&problem, None).unwrap();
    assert!(sol.report.rows.iter().all(|r| r.status == RowStatus::MaxIterations && r.iterations == 10));
}

#[test]
fn auto_meets_its_tolerance_whichever_way_it_goes() {
    use optima::solve::{AutoPlan, AutoSettings, AutoSolver};
    // A few rows that cannot pay for H⁻¹: direct. Many: dual PCG (after a probe).
    let auto = AutoSolver::new(AutoSettings::default().tolerance(1e-6));
    assert_eq!(auto.plan(&optima::Mask::from_fn(4, 576, |_, j| j % 2 == 0)), AutoPlan::Direct);
    assert_eq!(auto.plan(&optima::Mask::from_fn(2, 4096, |_, j| j % 2 == 0)), AutoPlan::Direct);
    assert!(matches!(auto.plan(&optima::Mask::from_fn(300, 200, |_, j| j % 2 == 0)), AutoPlan::Pcg { .. }));
    assert!(matches!(auto.plan(&optima::Mask::from_fn(576, 576, |_, j| j % 2 == 0)), AutoPlan::Pcg { .. }));
    assert!(matches!(auto.plan(&optima::Mask::from_fn(64, 4096, |_, j| j % 2 == 0)), AutoPlan::Pcg { .. }));
    // (96, 512): the probe path, 32 rows by PCG first, then the rest by whichever it predicts.
    for (m, n) in [(12, 40), (300, 200), (96, 512)] {
        let problem = problem(m, n, 0.5, 31);
        let exact = DirectSolver::default().solve(&problem, None).unwrap();
        let auto = AutoSolver::new(AutoSettings::default().tolerance(1e-9));
        let sol = auto.solve(&problem, None).unwrap();
        assert_eq!(sol.report.solver, "auto");
        assert_eq!(sol.report.failed_rows, 0);
        assert!(sol.report.kkt_residual <= 1e-9);
        let gap = (sol.report.objective - exact.report.objective) / exact.report.objective;
        assert!(gap.abs() < 1e-10, "{m}x{n}: gap {gap}");
    }
    // The PCG path, converging within its cap, and cut short so that direct finishes the rest.
    let problem = problem(40, 64, 0.5, 32);
    let exact = DirectSolver::default().solve(&problem, None).unwrap();
    for cap in [500, 2] {
        let plan_override = Some(AutoPlan::Pcg { max_iterations: cap });
        let auto = AutoSolver::new(AutoSettings::default().tolerance(1e-9).plan_override(plan_override));
        let sol = auto.solve(&problem, None).unwrap();
        assert_eq!(sol.report.failed_rows, 0);
        assert!(sol.report.kkt_residual <= 1e-9, "cap {cap}: {}", sol.report.kkt_residual);
        let gap = (sol.report.objective - exact.report.objective) / exact.report.objective;
        assert!(gap.abs() < 1e-10, "cap {cap}: gap {gap}");
        let finished_exactly = sol.report.rows.iter().filter(|r| r.status == RowStatus::Solved).count();
        if cap == 2 {
            assert!(finished_exactly > 0 && sol.report.iterations == 3);
        } else {
            assert_eq!(finished_exactly, 0);
        }
    }
}

#[test]
fn dual_pcg_certifies_rows_on_ill_conditioned_hessians() {
    // H = D^½ S D^½ with a well-conditioned S and a diagonal spanning up to 16 decades: the
    // inverse's error grows with the condition number, so the screening's margin widens until
    // rows need the f64 check of the recovered weights. Either way, a row reported converged
    // meets the tolerance by the report's own residual, and lands on `direct`'s optimum.
    let (m, n) = (12, 40);
    let s = common::random_spd(n, 2 * n, 11);
    for decades in [2.0, 8.0, 16.0] {
        let d: Vec<f64> = (0..n).map(|j| 10f64.powf(decades * (j as f64 / (n - 1) as f64 - 0.5))).collect();
        let h = ndarray::Array2::from_shape_fn((n, n), |(i, j)| s[[i, j]] * (d[i] * d[j]).sqrt());
        let weight = common::random_weight(m, n, 12);
        let problem = LayerProblem::new(weight, Hessian::new(h, 0.0).unwrap(), random_mask(m, n, 0.5, 13)).unwrap();
        let exact = DirectSolver::default().solve(&problem, None).unwrap();
        for precision in [Precision::Double, Precision::Mixed] {
            let tol = 1e-9;
            let solution = dual_pcg(tol, 500, precision).solve(&problem, None).unwrap();
            for (i, row) in solution.report.rows.iter().enumerate() {
                assert_eq!(row.status, RowStatus::ReachedTolerance, "{decades} decades, {precision:?}, row {i}");
                assert!(row.kkt_residual <= tol, "{decades} decades, {precision:?}, row {i}: {}", row.kkt_residual);
            }
            let gap = (solution.report.objective - exact.report.objective) / exact.report.objective;
            assert!(gap.abs() <= 1e-9, "{decades} decades, {precision:?}: gap {gap}");
        }
    }
}
