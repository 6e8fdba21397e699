//! Bad input gets a typed error, and degenerate masks get the right answer.

mod common;

use common::{random_spd, random_weight};
use ndarray::Array2;
use optima::prelude::*;
use optima::{OptimaError, RowStatus};

fn hessian(n: usize) -> Hessian {
    Hessian::new(random_spd(n, n + 2, 1), 0.01).unwrap()
}

#[test]
fn shape_mismatches_are_typed() {
    let w = random_weight(4, 8, 1);
    let err = LayerProblem::new(w.clone(), hessian(6), Mask::empty(4, 8)).unwrap_err();
    assert!(matches!(err, OptimaError::ShapeMismatch { .. }), "{err}");
    let err = LayerProblem::new(w.clone(), hessian(8), Mask::empty(4, 7)).unwrap_err();
    assert!(matches!(err, OptimaError::ShapeMismatch { .. }), "{err}");
    let err = Hessian::new(Array2::zeros((3, 4)), 0.01).unwrap_err();
    assert!(matches!(err, OptimaError::ShapeMismatch { .. }), "{err}");
    let err = WandaMasker.select(w.view(), &hessian(5), &"0.5".parse().unwrap()).unwrap_err();
    assert!(matches!(err, OptimaError::ShapeMismatch { .. }), "{err}");
    let err = LayerProblem::new(Array2::zeros((0, 8)), hessian(8), Mask::empty(0, 8)).unwrap_err();
    assert!(matches!(err, OptimaError::Empty(_)), "{err}");
}

#[test]
fn non_finite_values_are_typed_and_located() {
    let mut w = random_weight(3, 5, 1);
    w[[2, 4]] = f64::NAN;
    let err = LayerProblem::new(w.clone(), hessian(5), Mask::empty(3, 5)).unwrap_err();
    assert!(matches!(err, OptimaError::NonFinite { row: 2, col: 4, .. }), "{err}");
    let err = MagnitudeMasker.select(w.view(), &hessian(5), &"0.4".parse().unwrap()).unwrap_err();
    assert!(matches!(err, OptimaError::NonFinite { .. }), "{err}");
    let mut h = random_spd(5, 6, 2);
    h[[1, 3]] = f64::INFINITY;
    let err = Hessian::new(h, 0.01).unwrap_err();
    assert!(matches!(err, OptimaError::NonFinite { row: 1, col: 3, .. }), "{err}");
    let mut acc = CpuHessianAccumulator::new(3, Parallelism::Sequential);
    let mut x = Array2::<f32>::ones((4, 3));
    x[[2, 1]] = f32::NAN;
    let err = acc.add_batch(x.view()).unwrap_err();
    assert!(matches!(err, OptimaError::NonFinite { row: 2, col: 1, .. }), "{err}");
}

#[test]
fn bad_patterns_are_typed() {
    for bad in ["1.0", "-0.1", "1.5", "NaN", "4:4", "0:4", "5:4", "2:0", "half", "0.5/column", "2:4:8"] {
        let err = bad.parse::<SparsityPattern>().unwrap_err();
        assert!(matches!(err, OptimaError::InvalidPattern(_)), "{bad}: {err}");
    }
    let w = random_weight(2, 6, 1);
    let err = WandaMasker.select(w.view(), &hessian(6), &"2:4".parse().unwrap()).unwrap_err();
    assert!(matches!(err, OptimaError::InvalidPattern(_)), "{err}");
    assert!(err.to_string().contains("multiple of 4"), "{err}");
}

#[test]
fn non_symmetric_and_indefinite_hessians_are_typed() {
    let mut h = random_spd(4, 6, 3);
    h[[0, 2]] += 1.0;
    assert!(matches!(Hessian::new(h, 0.01).unwrap_err(), OptimaError::NotSymmetric { i: 0, j: 2, .. }));
    let mut h = random_spd(4, 6, 3);
    h[[3, 3]] = -1.0;
    assert!(matches!(Hessian::new(h, 0.01).unwrap_err(), OptimaError::NegativeDiagonal { index: 3, .. }));
    let err = Hessian::new(random_spd(4, 6, 3), -0.5).unwrap_err();
    assert!(matches!(err, OptimaError::InvalidSetting(_)), "{err}");
}

#[test]
fn a_whole_row_pruned_gives_a_zero_row_and_nothing_pruned_gives_the_weights() {
    let w = random_weight(3, 6, 4);
    let mask = Mask::from_fn(3, 6, |i, j| i == 0 || (i == 2 && j % 2 == 0));
    let problem = LayerProblem::new(w.clone(), hessian(6), mask).unwrap();
    let solution = DirectSolver::default().solve(&problem, None).unwrap();
    assert!(solution.weight.row(0).iter().all(|&v| v == 0.0));
    assert_eq!(solution.weight.row(1), w.row(1));
    assert_eq!(solution.report.rows[1].objective, 0.0);
    assert_eq!(solution.report.failed_rows, 0);
    let r0 = &solution.report.rows[0];
    assert!((r0.objective - r0.objective_mask_only).abs() <= 1e-12 * r0.objective_mask_only);

    let nothing = LayerProblem::new(w.clone(), hessian(6), Mask::empty(3, 6)).unwrap();
    let solution = DirectSolver::default().solve(&nothing, None).unwrap();
    assert_eq!(solution.weight, w);
    assert_eq!(solution.report.objective, 0.0);
    assert_eq!(solution.report.error_before, 0.0);
}

#[test]
fn a_singular_hessian_is_regularized_and_reported_not_a_panic() {
    // Rank 2 with no damping: H_SS is singular for any |S| > 2.
    let x = Array2::from_shape_fn((2, 8), |(t, j)| (t + 1) as f64 * (j as f64 - 3.5));
    let h = x.t().dot(&x);
    let hessian = Hessian::new(h, 0.0).unwrap();
    let w = random_weight(4, 8, 5);
    let mask = Mask::from_fn(4, 8, |i, j| (i + j) % 4 == 0);
    let problem = LayerProblem::new(w, hessian, mask).unwrap();
    let solution = DirectSolver::default().solve(&problem, None).unwrap();
    assert!(solution.weight.iter().all(|v| v.is_finite()));
    assert!(solution.report.rows.iter().all(|r| matches!(r.status, RowStatus::Regularized { extra_damping, attempts } if extra_damping > 0.0 && attempts >= 2)));
    assert_eq!(solution.report.regularized_rows, 4);
    // Rank-2 H: the optimum removes the output error entirely (or very nearly).
    assert!(solution.report.objective <= 1e-6 * solution.report.objective_mask_only);
}

#[test]
fn dead_inputs_are_marked_and_solvable() {
    let mut h = random_spd(6, 8, 6);
    for k in 0..6 {
        h[[2, k]] = 0.0;
        h[[k, 2]] = 0.0;
    }
    let hessian = Hessian::new(h, 0.0).unwrap();
    assert_eq!(hessian.dead_inputs(), &[2]);
    assert_eq!(hessian.matrix()[[2, 2]], 1.0);
    assert_eq!(hessian.raw_diag()[2], 0.0);
    // Wanda scores a dead input 0, so it is pruned first.
    let w = Array2::from_elem((2, 6), 1.0);
    let mask = WandaMasker.select(w.view(), &hessian, &"0.2".parse().unwrap()).unwrap();
    assert!(mask.is_pruned(0, 2) && mask.is_pruned(1, 2));
    let solution = DirectSolver::default().solve(&LayerProblem::new(w, hessian, mask).unwrap(), None).unwrap();
    assert_eq!(solution.report.failed_rows, 0);
}

#[test]
fn damping_is_relative_to_the_mean_diagonal() {
    let h = Array2::from_diag(&ndarray::arr1(&[1.0, 2.0, 3.0, 6.0]));
    let hessian = Hessian::new(h, 0.1).unwrap();
    assert!((hessian.damping() - 0.3).abs() < 1e-15);
    assert!((hessian.matrix()[[3, 3]] - 6.3).abs() < 1e-15);
    assert_eq!(Hessian::new(Array2::eye(3), 0.0).unwrap().matrix(), Array2::<f64>::eye(3));
}
