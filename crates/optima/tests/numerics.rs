//! Degenerate numerics, through every solver and masker: the correct answer or a typed error,
//! never a panic and never a non-finite weight.

mod common;

use common::{kkt_oracle, objective, random_weight};
use ndarray::{Array1, Array2};
use optima::OptimaError;
use optima::mask::{SparseGptMasker, masker_by_name};
use optima::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// An error a solver may answer a degenerate layer with: a numerical failure, and only from the
/// solvers that can break down. `direct` (and `auto`, which ends in it) regularize and report
/// `Regularized` or `Failed` rows instead; an error from them is a bug.
fn assert_may_fail(what: &str, e: &OptimaError) {
    let exact = what.split_whitespace().any(|w| w == "direct" || w == "auto");
    assert!(!exact, "{what}: the exact solvers must regularize, not fail: {e}");
    assert!(matches!(e, OptimaError::Numerical(_)), "{what}: {e}");
}

/// Every solver at a tight tolerance, single-threaded so failures reproduce.
fn solvers() -> Vec<(String, Box<dyn QpSolver + Send + Sync>)> {
    SolverSpec::NAMES
        .iter()
        .map(|&name| {
            let mut spec = name
                .parse::<SolverSpec>()
                .unwrap()
                .tolerance(1e-10)
                .max_iterations(20_000)
                .parallelism(Parallelism::Threads(1));
            if let SolverSpec::Pdhg(s) = &mut spec {
                (s.eps_abs, s.eps_rel) = (1e-7, 1e-7);
            }
            (name.to_string(), spec.build(Device::Cpu).unwrap())
        })
        .collect()
}

/// `H` from `tokens` random activations over `n` inputs, via the public accumulator.
fn hessian_from_tokens(tokens: usize, n: usize, zero_columns: &[usize], percdamp: f64, seed: u64) -> Hessian {
    let mut rng = StdRng::seed_from_u64(seed);
    let x = Array2::from_shape_fn((tokens, n), |(_, j)| {
        if zero_columns.contains(&j) { 0.0 } else { rng.random_range(-1.0f32..1.0) }
    });
    let mut acc = CpuHessianAccumulator::new(n, Parallelism::Threads(1));
    acc.add_batch(x.view()).unwrap();
    acc.finish(percdamp).unwrap()
}

/// The exact optimum of every row, by an independent LAPACK solve of the KKT system.
fn oracle(problem: &LayerProblem) -> Array2<f64> {
    let h = problem.hessian().matrix().to_owned();
    let mut out = Array2::zeros((problem.rows(), problem.cols()));
    for i in 0..problem.rows() {
        let pruned: Vec<usize> = (0..problem.cols()).filter(|&j| problem.mask().is_pruned(i, j)).collect();
        let w: Array1<f64> = problem.weight().row(i).to_owned();
        out.row_mut(i).assign(&kkt_oracle(&h, &w, &pruned));
    }
    out
}

fn total_objective(problem: &LayerProblem, weight: &Array2<f64>) -> f64 {
    let h = problem.hessian().matrix().to_owned();
    (0..problem.rows()).map(|i| objective(&h, &weight.row(i).to_owned(), &problem.weight().row(i).to_owned())).sum()
}

fn assert_sane(name: &str, problem: &LayerProblem, solution: &Solution) {
    assert!(solution.weight.iter().all(|v| v.is_finite()), "{name}: non-finite weight");
    for i in 0..problem.rows() {
        for j in 0..problem.cols() {
            if problem.mask().is_pruned(i, j) {
                assert_eq!(solution.weight[[i, j]], 0.0, "{name}: pruned ({i}, {j}) is not 0");
            }
        }
    }
    let r = &solution.report;
    for v in [r.objective, r.objective_mask_only, r.kkt_residual, r.error_before, r.error_after] {
        assert!(v.is_finite(), "{name}: non-finite report figure {v}");
    }
}

/// A solver either claims every row converged and is at the optimum, or reports the rows it did
/// not converge; the exact solvers always converge. SparseGPT's update promises nothing on a mask
/// it did not choose (on a rank-deficient H it can even end above the mask alone), so it is held
/// only to finite output.
fn assert_optimal_or_reported(name: &str, problem: &LayerProblem, solution: &Solution, best: f64) {
    if name.ends_with("sparsegpt") {
        return;
    }
    let got = total_objective(problem, &solution.weight);
    if solution.report.failed_rows > 0 {
        assert!(!matches!(name.rsplit('+').next(), Some("direct" | "auto")), "{name}: exact solver failed rows");
        assert!(got <= solution.report.objective_mask_only * (1.0 + 1e-9), "{name}");
        return;
    }
    assert!(got <= best * (1.0 + 1e-5) + 1e-12, "{name}: {got} vs optimum {best}");
}

#[test]
fn rank_deficient_hessian_from_fewer_tokens_than_inputs() {
    // 10 tokens over 40 inputs: rank 10. Damped as in practice, every solver reaches the optimum.
    let hessian = hessian_from_tokens(10, 40, &[], 0.01, 1);
    let mask = common::random_mask(6, 40, 0.5, 2);
    let problem = LayerProblem::new(random_weight(6, 40, 3), hessian, mask).unwrap();
    let best = total_objective(&problem, &oracle(&problem));
    for (name, solver) in solvers() {
        let solution = solver.solve(&problem, None).unwrap();
        assert_sane(&name, &problem, &solution);
        assert_optimal_or_reported(&name, &problem, &solution, best);
    }
    // Undamped, H_SS is singular: solvers regularize or give up on rows, and say so; no NaN.
    let singular = hessian_from_tokens(10, 40, &[], 0.0, 1);
    let problem = LayerProblem::new(random_weight(6, 40, 3), singular, common::random_mask(6, 40, 0.5, 2)).unwrap();
    for (name, solver) in solvers() {
        match solver.solve(&problem, None) {
            Ok(solution) => {
                assert_sane(&name, &problem, &solution);
                let r = &solution.report;
                if name != "sparsegpt" {
                    assert!(r.error_after <= r.error_before * (1.0 + 1e-9), "{name}: {r:?}");
                }
            }
            Err(e) => assert_may_fail(&name, &e),
        }
    }
}

#[test]
fn all_zero_input_columns_are_dead_and_every_solver_handles_them() {
    let hessian = hessian_from_tokens(200, 24, &[0, 5, 17], 0.01, 4);
    assert_eq!(hessian.dead_inputs(), &[0, 5, 17]);
    let weight = random_weight(5, 24, 5);
    for masker in ["magnitude", "wanda", "sparsegpt"] {
        let mask = masker_by_name(masker).unwrap().select(weight.view(), &hessian, &"2:4".parse().unwrap()).unwrap();
        let problem = LayerProblem::new(weight.clone(), hessian.clone(), mask).unwrap();
        let best = total_objective(&problem, &oracle(&problem));
        for (name, solver) in solvers() {
            let solution = solver.solve(&problem, None).unwrap();
            assert_sane(&name, &problem, &solution);
            assert_optimal_or_reported(&format!("{masker}+{name}"), &problem, &solution, best);
        }
    }
}

#[test]
fn a_diagonal_spanning_1e_minus_12_to_1e12_is_solved_or_reported() {
    let n = 16;
    // Diagonal entries 1e-12 … 1e12, plus a weak coupling that keeps H positive definite.
    let d: Vec<f64> = (0..n).map(|j| 10f64.powf(-12.0 + 24.0 * j as f64 / (n - 1) as f64)).collect();
    let h = Array2::from_shape_fn((n, n), |(i, j)| if i == j { d[i] } else { 0.1 * (d[i] * d[j]).sqrt() / n as f64 });
    for percdamp in [0.0, 0.01] {
        let hessian = Hessian::new(h.clone(), percdamp).unwrap();
        let weight = random_weight(4, n, 6);
        let problem = LayerProblem::new(weight, hessian, common::random_mask(4, n, 0.5, 7)).unwrap();
        for (name, solver) in solvers() {
            match solver.solve(&problem, None) {
                Ok(solution) => {
                    assert_sane(&name, &problem, &solution);
                    // Never worse than the mask alone, beyond rounding at this scale.
                    let r = &solution.report;
                    assert!(r.objective <= r.objective_mask_only * (1.0 + 1e-6) + 1e-9, "{name}: {r:?}");
                }
                Err(e) => assert_may_fail(&format!("{name} (damping {percdamp})"), &e),
            }
        }
    }
}

#[test]
fn non_finite_weights_hessians_and_activations_are_typed_errors() {
    let hessian = hessian_from_tokens(64, 8, &[], 0.01, 8);
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut w = random_weight(3, 8, 9);
        w[[2, 6]] = bad;
        let err = LayerProblem::new(w.clone(), hessian.clone(), Mask::empty(3, 8)).unwrap_err();
        assert!(matches!(err, OptimaError::NonFinite { row: 2, col: 6, .. }), "{err}");
        for masker in ["magnitude", "wanda", "sparsegpt"] {
            let err = masker_by_name(masker).unwrap().select(w.view(), &hessian, &"0.5".parse().unwrap()).unwrap_err();
            assert!(matches!(err, OptimaError::NonFinite { .. }), "{masker}: {err}");
        }
        let mut h = hessian.matrix().to_owned();
        h[[1, 1]] = bad;
        assert!(matches!(Hessian::new(h, 0.01).unwrap_err(), OptimaError::NonFinite { row: 1, col: 1, .. }));

        let mut x = Array2::<f32>::ones((5, 8));
        x[[4, 3]] = bad as f32;
        let mut acc = CpuHessianAccumulator::new(8, Parallelism::Threads(1));
        let err = acc.add_batch(x.view()).unwrap_err();
        assert!(matches!(err, OptimaError::NonFinite { row: 4, col: 3, .. }), "{err}");
        // The failed batch was not half-added: the accumulator still finishes on what it had.
        acc.add_batch(Array2::<f32>::ones((2, 8)).view()).unwrap();
        assert_eq!(acc.tokens(), 2);
        assert!(acc.finish(0.01).unwrap().matrix().iter().all(|v| v.is_finite()));
    }
    // Finite activations whose square overflows f64 are caught, not turned into Inf.
    let mut acc = CpuHessianAccumulator::new(2, Parallelism::Threads(1));
    let huge = Array2::from_elem((3, 2), f32::MAX);
    match acc.add_batch(huge.view()) {
        Ok(()) => assert!(acc.finish(0.01).unwrap().matrix().iter().all(|v| v.is_finite())),
        Err(e) => assert!(matches!(e, OptimaError::NonFinite { .. } | OptimaError::Numerical(_)), "{e}"),
    }
}

#[test]
fn masks_that_prune_whole_rows_or_nothing_through_every_solver() {
    let hessian = hessian_from_tokens(100, 12, &[], 0.01, 10);
    let weight = random_weight(4, 12, 11);
    // Row 0 all pruned, row 1 nothing pruned, rows 2–3 half.
    let mask = Mask::from_fn(4, 12, |i, j| i == 0 || (i >= 2 && j % 2 == 1));
    let problem = LayerProblem::new(weight.clone(), hessian.clone(), mask).unwrap();
    let everything = LayerProblem::new(weight.clone(), hessian.clone(), Mask::from_fn(4, 12, |_, _| true)).unwrap();
    let nothing = LayerProblem::new(weight.clone(), hessian, Mask::empty(4, 12)).unwrap();
    for (name, solver) in solvers() {
        let s = solver.solve(&problem, None).unwrap();
        assert_sane(&name, &problem, &s);
        assert!(s.weight.row(0).iter().all(|&v| v == 0.0), "{name}");
        assert_eq!(s.weight.row(1), weight.row(1), "{name}: an unpruned row must keep its weights");

        let s = solver.solve(&everything, None).unwrap();
        assert_sane(&name, &everything, &s);
        assert!(s.weight.iter().all(|&v| v == 0.0), "{name}");

        let s = solver.solve(&nothing, None).unwrap();
        assert_sane(&name, &nothing, &s);
        assert_eq!(s.weight, weight, "{name}: nothing pruned must return the weights");
        assert_eq!(s.report.objective, 0.0, "{name}");
    }
}

#[test]
fn n_m_patterns_on_widths_m_does_not_divide_are_typed_errors() {
    let hessian = hessian_from_tokens(50, 10, &[], 0.01, 12);
    let weight = random_weight(3, 10, 13);
    let pattern: SparsityPattern = "2:4".parse().unwrap();
    for masker in ["magnitude", "wanda", "sparsegpt"] {
        let err = masker_by_name(masker).unwrap().select(weight.view(), &hessian, &pattern).unwrap_err();
        assert!(matches!(err, OptimaError::InvalidPattern(_)), "{masker}: {err}");
        assert!(err.to_string().contains("multiple of 4"), "{masker}: {err}");
    }
    let err = SparseGptMasker::default().select_and_update(weight.view(), &hessian, &pattern).unwrap_err();
    assert!(matches!(err, OptimaError::InvalidPattern(_)), "{err}");
    let mask = Mask::from_fn(3, 10, |_, j| j % 2 == 0);
    let err = mask.validate(&pattern).unwrap_err();
    assert!(matches!(err, OptimaError::InvalidPattern(_) | OptimaError::MaskViolation { .. }), "{err}");
}

#[test]
fn random_degenerate_layers_never_yield_nan() {
    // A sweep over ranks, dead columns and scales: every solver returns finite weights or a
    // typed numerical error.
    let mut rng = StdRng::seed_from_u64(99);
    for case in 0..12 {
        let n = 8 * rng.random_range(1..4);
        let tokens = rng.random_range(1..2 * n);
        let dead: Vec<usize> = (0..n).filter(|_| rng.random_bool(0.2)).collect();
        let scale = 10f32.powi(rng.random_range(-6..7));
        let mut x = Array2::from_shape_fn((tokens, n), |_| rng.random_range(-1.0f32..1.0) * scale);
        for &j in &dead {
            x.column_mut(j).fill(0.0);
        }
        let mut acc = CpuHessianAccumulator::new(n, Parallelism::Threads(1));
        acc.add_batch(x.view()).unwrap();
        let hessian = acc.finish(if case % 3 == 0 { 0.0 } else { 0.01 }).unwrap();
        let weight = random_weight(3, n, case);
        let mask = common::random_mask(3, n, rng.random_range(0.0..1.0), case + 100);
        let problem = LayerProblem::new(weight, hessian, mask).unwrap();
        for (name, solver) in solvers() {
            match solver.solve(&problem, None) {
                Ok(s) => assert_sane(&format!("case {case} {name}"), &problem, &s),
                Err(e) => assert_may_fail(&format!("case {case} {name}"), &e),
            }
        }
    }
}

#[test]
fn a_hessian_beyond_f32_range_sends_auto_to_direct() {
    use optima::solve::{AutoPlan, AutoSettings, AutoSolver};
    // Entries near 1e40 do not fit f32: the mixed-precision PCG cannot run, `direct` can.
    let h = hessian_from_tokens(64, 24, &[], 0.01, 3).matrix().mapv(|v| v * 1e40);
    let problem =
        LayerProblem::new(random_weight(6, 24, 2), Hessian::new(h, 0.0).unwrap(), common::random_mask(6, 24, 0.5, 4))
            .unwrap();
    let plan_override = Some(AutoPlan::Pcg { max_iterations: 100 });
    let solution = AutoSolver::new(AutoSettings::default().tolerance(1e-9).plan_override(plan_override))
        .solve(&problem, None)
        .unwrap();
    assert_sane("auto", &problem, &solution);
    assert_eq!(solution.report.failed_rows, 0);
    assert!(solution.report.kkt_residual <= 1e-9, "{}", solution.report.kkt_residual);
    assert_optimal_or_reported("auto", &problem, &solution, total_objective(&problem, &oracle(&problem)));
}
