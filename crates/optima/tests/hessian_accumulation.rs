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
