//! The streaming accumulator equals XᵀX/N computed in one go, whatever the batch sizes.

use ndarray::{Array2, s};
use optima::prelude::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn batches_of_any_size_give_the_same_mean(tokens in 1usize..80, n in 1usize..24, cuts in prop::collection::vec(0usize..80, 0..5), seed in 0u64..1000) {
        let x = Array2::from_shape_fn((tokens, n), |(t, j)| (((t * 31 + j * 17 + seed as usize) % 23) as f32 - 11.0) * 0.37);
        let x64 = x.mapv(f64::from);
        let want = x64.t().dot(&x64) / tokens as f64;
        let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c % (tokens + 1)).chain([0, tokens]).collect();
        bounds.sort_unstable();
        let mut acc = CpuHessianAccumulator::new(n, Parallelism::Sequential);
        for w in bounds.windows(2) {
            acc.add_batch(x.slice(s![w[0]..w[1], ..])).unwrap();
        }
        prop_assert_eq!(acc.tokens(), tokens);
        let h = acc.finish(0.0).unwrap();
        let scale = want.iter().fold(0.0f64, |a, v| a.max(v.abs())).max(1e-30);
        for ((i, j), &v) in want.indexed_iter() {
            if want[[j, j]] == 0.0 && i == j {
                prop_assert_eq!(h.matrix()[[i, j]], 1.0); // dead input
            } else {
                prop_assert!((h.matrix()[[i, j]] - v).abs() <= 1e-12 * scale, "H[{i},{j}]");
            }
        }
    }
}

#[test]
fn an_empty_accumulator_and_a_wrong_width_are_errors() {
    let acc = CpuHessianAccumulator::new(4, Parallelism::Sequential);
    assert!(matches!(acc.finish(0.01), Err(optima::OptimaError::Empty(_))));
    let mut acc = CpuHessianAccumulator::new(4, Parallelism::Sequential);
    assert!(matches!(
        acc.add_batch(Array2::<f32>::zeros((3, 5)).view()),
        Err(optima::OptimaError::ShapeMismatch { .. })
    ));
    assert_eq!(acc.tokens(), 0);
}

/// A diagonal accumulator's `diag(XᵀX)/N` is the whole accumulator's diagonal to the bit, at real
/// layer widths, batch sizes past a GEMM's blocking, and any thread count; and a diagonal masker
/// chooses the same mask from either.
#[test]
fn the_diagonal_alone_is_the_whole_hessians_diagonal_to_the_bit() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(7);
    for (n, batches) in [(576, vec![256, 256, 37]), (1536, vec![300, 1]), (40, vec![2048, 5, 0, 17])] {
        let xs: Vec<Array2<f32>> = batches
            .iter()
            .map(|&b| Array2::from_shape_fn((b, n), |_| rng.random_range(-3.0..3.0f32) * rng.random_range(0.0..1.0f32)))
            .collect();
        let mut diagonal = DiagonalAccumulator::new(n);
        xs.iter().for_each(|x| diagonal.add_batch(x.view()).unwrap());
        assert_eq!(diagonal.tokens(), batches.iter().sum::<usize>());
        let diagonal = diagonal.finish().unwrap();
        for par in [Parallelism::Sequential, Parallelism::Threads(2), Parallelism::Threads(3)] {
            let mut whole = CpuHessianAccumulator::new(n, par);
            xs.iter().for_each(|x| whole.add_batch(x.view()).unwrap());
            let h = whole.finish(0.01).unwrap();
            let bits = |d: &[f64]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(h.raw_diag()), bits(&diagonal), "n = {n}, {par:?}");
            let weight = Array2::from_shape_fn((24, n), |_| rng.random_range(-1.0..1.0f64));
            for pattern in ["0.5", "0.7/layer", "2:4"] {
                let pattern: SparsityPattern = pattern.parse().unwrap();
                let from_h = WandaMasker.select(weight.view(), &h, &pattern).unwrap();
                let from_diagonal = WandaMasker.select_from_diagonal(weight.view(), &diagonal, &pattern).unwrap();
                assert_eq!(from_h, from_diagonal, "n = {n}, {pattern}");
            }
        }
    }
}

#[test]
fn a_diagonal_accumulator_checks_its_batches_as_the_whole_one_does() {
    let mut acc = DiagonalAccumulator::new(4);
    assert!(matches!(
        acc.add_batch(Array2::<f32>::zeros((3, 5)).view()),
        Err(optima::OptimaError::ShapeMismatch { .. })
    ));
    let mut bad = Array2::<f32>::ones((2, 4));
    bad[[1, 2]] = f32::NAN;
    assert!(matches!(acc.add_batch(bad.view()), Err(optima::OptimaError::NonFinite { row: 1, col: 2, .. })));
    acc.add_batch(Array2::<f32>::zeros((0, 4)).view()).unwrap();
    assert!(matches!(acc.finish(), Err(optima::OptimaError::Empty(_))));
    let mut acc = DiagonalAccumulator::new(2);
    acc.add_batch(ndarray::array![[1.0f32, -2.0], [3.0, 0.0]].view()).unwrap();
    assert_eq!(acc.finish().unwrap(), vec![5.0, 2.0]);
}

#[test]
fn diagonal_maskers_refuse_a_diagonal_of_the_wrong_length_sign_or_value() {
    let weight = Array2::from_shape_fn((2, 4), |(i, j)| (i + j) as f64 - 1.5);
    let pattern: SparsityPattern = "0.5".parse().unwrap();
    let wrong = |d: &[f64]| WandaMasker.select_from_diagonal(weight.view(), d, &pattern).unwrap_err();
    assert!(matches!(wrong(&[1.0; 3]), optima::OptimaError::ShapeMismatch { .. }));
    assert!(matches!(wrong(&[1.0, -1.0, 1.0, 1.0]), optima::OptimaError::NegativeDiagonal { index: 1, .. }));
    assert!(matches!(wrong(&[1.0, 1.0, f64::INFINITY, 1.0]), optima::OptimaError::NonFinite { .. }));
    assert!(MagnitudeMasker.select_from_diagonal(weight.view(), &[1.0; 3], &pattern).is_err());
    let mask = MagnitudeMasker.select_from_diagonal(weight.view(), &[0.0; 4], &pattern).unwrap();
    assert_eq!(
        mask,
        MagnitudeMasker.select(weight.view(), &Hessian::new(Array2::eye(4), 0.01).unwrap(), &pattern).unwrap()
    );
}

/// f32 products added into f64 sums: within `1e-6 · max |H|` of the f64 accumulator over several
/// batches (each batch's product replaces the last one's, none is counted twice), symmetric, and
/// with the f64 accumulator's diagonal to the bit, so diagonal masks do not move.
#[test]
fn f32_products_agree_with_f64_to_their_rounding_and_keep_the_exact_diagonal() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(11);
    for (n, batches) in [(576, vec![256, 256, 256, 37]), (97, vec![1, 300, 0, 64])] {
        let xs: Vec<Array2<f32>> = batches
            .iter()
            .map(|&b| Array2::from_shape_fn((b, n), |_| rng.random_range(-3.0..3.0f32) * rng.random_range(0.0..1.0f32)))
            .collect();
        let accumulate = |precision: HessianPrecision| {
            let mut acc = CpuHessianAccumulator::with_precision(n, Parallelism::Threads(2), precision);
            assert_eq!(acc.precision(), precision);
            xs.iter().for_each(|x| acc.add_batch(x.view()).unwrap());
            assert_eq!(acc.tokens(), batches.iter().sum::<usize>());
            acc.finish(0.01).unwrap()
        };
        let (h64, h32) = (accumulate(HessianPrecision::F64), accumulate(HessianPrecision::F32));
        let scale = h64.matrix().iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let worst = (&h64.matrix() - &h32.matrix()).iter().fold(0.0f64, |a, v| a.max(v.abs()));
        assert!(worst <= 1e-6 * scale, "n = {n}: max |ΔH| = {worst:e} against max |H| = {scale:e}");
        assert!(worst > 0.0, "n = {n}: f32 products round otherwise than f64 ones");
        assert_eq!(h32.matrix(), h32.matrix().t(), "n = {n}: symmetric");
        let bits = |d: &[f64]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(h32.raw_diag()), bits(h64.raw_diag()), "n = {n}: the diagonal is exact");
    }
    assert_eq!("f32".parse::<HessianPrecision>().unwrap(), HessianPrecision::F32);
    assert!(matches!("f16".parse::<HessianPrecision>(), Err(optima::OptimaError::InvalidSetting(_))));
}
