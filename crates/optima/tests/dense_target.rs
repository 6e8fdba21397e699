//! The dense-target closed form against an independent least-squares solve (LAPACK's SVD) with
//! the explicit inputs `X_d`, `X_p`: solving the layer QP for `W̃` under a mask must give the
//! minimizer of `‖X_d w − X_p ŵ‖²/N + δ‖ŵ − w‖²` with the pruned entries at 0.

mod common;

use ndarray::{Array1, Array2, Axis, concatenate, s};
use ndarray_linalg::LeastSquaresSvd;
use optima::hessian::{CrossAccumulator, dense_target};
use optima::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

/// `X_d` random with a few large channels; `X_p` the same inputs after an earlier pruning: a
/// perturbation of 30% plus a shift.
fn inputs(tokens: usize, n: usize, seed: u64) -> (Array2<f32>, Array2<f32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dense = Array2::from_shape_fn((tokens, n), |(_, j)| {
        rng.sample::<f32, _>(StandardNormal) * if j % 7 == 0 { 5.0 } else { 1.0 }
    });
    let pruned = dense.mapv(|v| v + 0.3 * rng.sample::<f32, _>(StandardNormal) * v.abs().sqrt() + 0.05);
    (dense, pruned)
}

/// Row `i`'s minimizer of `‖X_d w − X_p ŵ‖²/N + δ‖ŵ − w‖²` over `ŵ` with `ŵ_P = 0`, as an
/// augmented least-squares problem `[X_p,S/√N; √δ I] ŵ_S ≈ [X_d w/√N; √δ w_S]`.
fn brute_force(xd: &Array2<f64>, xp: &Array2<f64>, w: &Array1<f64>, kept: &[usize], delta: f64) -> Array1<f64> {
    let tokens = xd.nrows() as f64;
    let a_top = xp.select(Axis(1), kept) / tokens.sqrt();
    let b_top = xd.dot(w) / tokens.sqrt();
    let k = kept.len();
    let a_bottom = Array2::<f64>::eye(k) * delta.sqrt();
    let b_bottom = Array1::from_iter(kept.iter().map(|&j| w[j] * delta.sqrt()));
    let a = concatenate![Axis(0), a_top, a_bottom];
    let b = concatenate![Axis(0), b_top, b_bottom];
    let solved = a.least_squares(&b).unwrap().solution;
    let mut full = Array1::zeros(w.len());
    for (&j, &v) in kept.iter().zip(&solved) {
        full[j] = v;
    }
    full
}

#[test]
fn the_dense_target_reaches_the_least_squares_fit_of_the_dense_output() {
    common::single_threaded_openblas();
    let (m, n, tokens) = (6, 24, 200);
    for (seed, percdamp) in [(1, 0.0), (2, 0.01), (3, 0.1)] {
        let (dense, pruned) = inputs(tokens, n, seed);
        let mut acc = CrossAccumulator::new(n, Parallelism::Threads(2));
        // Two batches: the running means must not depend on how tokens are split.
        acc.add_batch(pruned.slice(s![..70, ..]), dense.slice(s![..70, ..])).unwrap();
        acc.add_batch(pruned.slice(s![70.., ..]), dense.slice(s![70.., ..])).unwrap();
        assert_eq!(acc.tokens(), tokens);
        let (hessian, cross) = acc.finish(percdamp).unwrap();
        let weight = common::random_weight(m, n, seed + 10);
        let target = dense_target(weight.view(), &hessian, cross.view(), Parallelism::Threads(2)).unwrap();
        let mask = common::random_mask(m, n, 0.5, seed + 20);
        let problem = LayerProblem::new(target, hessian.clone(), mask.clone()).unwrap();
        let solution = DirectSolver::default().solve(&problem, None).unwrap();
        let (xd, xp) = (dense.mapv(f64::from), pruned.mapv(f64::from));
        for i in 0..m {
            let kept = mask.kept_indices(i);
            let want = brute_force(&xd, &xp, &weight.row(i).to_owned(), &kept, hessian.damping());
            let got = solution.weight.row(i);
            let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
            let err = (&got - &want).iter().fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(err <= 1e-8 * scale, "damping {percdamp} row {i}: off by {err} (scale {scale})");
        }
    }
}

#[test]
fn with_no_earlier_pruning_the_dense_target_is_the_weight() {
    let (dense, _) = inputs(150, 16, 4);
    let mut acc = CrossAccumulator::new(16, Parallelism::Threads(1));
    acc.add_batch(dense.view(), dense.view()).unwrap();
    let (hessian, cross) = acc.finish(0.01).unwrap();
    let weight = common::random_weight(3, 16, 5);
    let target = dense_target(weight.view(), &hessian, cross.view(), Parallelism::Threads(2)).unwrap();
    let err = (&target - &weight).iter().fold(0.0f64, |a, v| a.max(v.abs()));
    assert!(err < 1e-9, "{err}");
}

#[test]
fn mismatched_or_bad_inputs_are_typed_errors() {
    let mut acc = CrossAccumulator::new(4, Parallelism::Threads(1));
    let ok = Array2::<f32>::ones((3, 4));
    let other = Array2::<f32>::ones((2, 4));
    assert!(matches!(acc.add_batch(ok.view(), other.view()), Err(optima::OptimaError::ShapeMismatch { .. })));
    let mut nan = ok.clone();
    nan[[1, 2]] = f32::NAN;
    assert!(matches!(acc.add_batch(ok.view(), nan.view()), Err(optima::OptimaError::NonFinite { row: 1, col: 2, .. })));
    assert_eq!(acc.tokens(), 0, "a rejected batch adds nothing");
    assert!(matches!(acc.clone().finish(0.01), Err(optima::OptimaError::Empty(_))));
    acc.add_batch(ok.view(), ok.view()).unwrap();
    let (hessian, cross) = acc.finish(0.01).unwrap();
    let wide = Array2::<f64>::ones((2, 5));
    assert!(matches!(
        dense_target(wide.view(), &hessian, cross.view(), Parallelism::Sequential),
        Err(optima::OptimaError::ShapeMismatch { .. })
    ));
    let small = Array2::<f64>::ones((3, 3));
    let weight = Array2::<f64>::ones((2, 4));
    assert!(matches!(
        dense_target(weight.view(), &hessian, small.view(), Parallelism::Sequential),
        Err(optima::OptimaError::ShapeMismatch { .. })
    ));
}
