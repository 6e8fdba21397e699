//! Sparsity allocation: every method prunes exactly the uniform pattern's weight count (checked
//! against the masker's own masks), keeps every layer within its bounds, OWL never prunes a layer
//! with more outliers harder, and the equalized allocation never has a higher summed diagonal
//! error than uniform and matches a brute-force optimum over every count vector when the counts
//! come in equal units.

use ndarray::Array2;
use optima::allocation::{AllocationMethod, AllocationSettings, LayerStats, allocate, outlier_ratio};
use optima::mask::select_lowest;
use optima::problem::pruned_count;
use optima::{OptimaError, RatioScope, SparsityPattern};
use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

fn scores(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Heavy-tailed, so that some layers have outliers and others not.
    Array2::from_shape_fn((rows, cols), |_| rng.random_range(0.0..1.0f64).powi(rng.random_range(1..6)))
}

fn pattern(ratio: f64, scope: RatioScope) -> SparsityPattern {
    SparsityPattern::Unstructured { ratio, scope }
}

/// The uniform pattern's pruned count of a `rows × cols` layer, as the masker counts it.
fn uniform_count(ratio: f64, scope: RatioScope, rows: usize, cols: usize) -> usize {
    match scope {
        RatioScope::PerRow => rows * pruned_count(ratio, cols),
        RatioScope::PerLayer => pruned_count(ratio, rows * cols),
    }
}

/// The normalized diagonal error of pruning `k` units, computed here from the scores directly.
fn diagonal_error(s: &Array2<f64>, scope: RatioScope, k: usize) -> f64 {
    let total: f64 = s.iter().map(|v| v * v).sum();
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    let pruned: f64 = match scope {
        RatioScope::PerRow => {
            s.rows().into_iter().map(|r| sorted(r.iter().map(|v| v * v).collect()).iter().take(k).sum::<f64>()).sum()
        }
        RatioScope::PerLayer => sorted(s.iter().map(|v| v * v).collect()).iter().take(k).sum(),
    };
    if total > 0.0 { pruned / total } else { 0.0 }
}

struct Case {
    scores: Vec<Array2<f64>>,
    stats: Vec<LayerStats>,
    scope: RatioScope,
}

fn case(shapes: &[(usize, usize)], seed: u64, per_layer: bool) -> Case {
    let scope = if per_layer { RatioScope::PerLayer } else { RatioScope::PerRow };
    let scores: Vec<Array2<f64>> =
        shapes.iter().enumerate().map(|(l, &(m, n))| scores(m, n, seed * 31 + l as u64)).collect();
    let stats = scores
        .iter()
        .map(|s| {
            let d = outlier_ratio(&[s.view()], 2.0).unwrap();
            LayerStats::from_scores(s.view(), scope, d).unwrap()
        })
        .collect();
    Case { scores, stats, scope }
}

fn method() -> impl Strategy<Value = AllocationMethod> {
    prop_oneof![Just(AllocationMethod::Uniform), Just(AllocationMethod::Owl), Just(AllocationMethod::Equalized)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_allocation_prunes_exactly_the_uniform_count_within_bounds(
        shapes in prop::collection::vec((1usize..7, 1usize..40), 1..9),
        seed in 0u64..1000,
        per_layer in any::<bool>(),
        ratio in 0.0f64..0.95,
        deviation in 0.0f64..0.6,
        lambda in 0.0f64..0.5,
        method in method(),
    ) {
        let c = case(&shapes, seed, per_layer);
        let settings = AllocationSettings::default().method(method).max_deviation(deviation).owl_lambda(lambda);
        let a = allocate(&pattern(ratio, c.scope), &c.stats, &settings).unwrap();
        let uniform: usize = shapes.iter().map(|&(m, n)| uniform_count(ratio, c.scope, m, n)).sum();
        prop_assert_eq!(a.uniform_pruned, uniform as u64);
        let mut total = 0;
        for (l, s) in c.scores.iter().enumerate() {
            let r = a.ratios[l];
            prop_assert!((0.0..1.0).contains(&r), "layer {} ratio {}", l, r);
            prop_assert!(r == ratio || (r - ratio).abs() <= deviation + 1e-12, "layer {} ratio {} vs {} ± {}", l, r, ratio, deviation);
            // What the masker prunes at the layer's ratio is what the allocation counted.
            let mask = select_lowest(s.view(), &pattern(r, c.scope)).unwrap();
            prop_assert_eq!(mask.total_pruned() as u64, a.pruned[l]);
            total += mask.total_pruned();
        }
        prop_assert_eq!(total, uniform);
        let weights: usize = shapes.iter().map(|&(m, n)| m * n).sum();
        prop_assert!((a.global_ratio() - uniform as f64 / weights as f64).abs() < 1e-15);
    }

    #[test]
    fn owl_never_prunes_a_layer_with_more_outliers_harder(
        shapes in prop::collection::vec(prop_oneof![Just((4usize, 16usize)), Just((2, 24)), Just((6, 10))], 2..10),
        outliers in prop::collection::vec(0.0f64..0.2, 10),
        per_layer in any::<bool>(),
        ratio in 0.05f64..0.9,
        deviation in 0.0f64..0.4,
        lambda in 0.0f64..0.3,
    ) {
        let scope = if per_layer { RatioScope::PerLayer } else { RatioScope::PerRow };
        let stats: Vec<LayerStats> =
            shapes.iter().zip(&outliers).map(|(&(m, n), &d)| LayerStats::new(m, n, scope, d).unwrap()).collect();
        let settings = AllocationSettings::default().method(AllocationMethod::Owl).max_deviation(deviation).owl_lambda(lambda);
        let a = allocate(&pattern(ratio, scope), &stats, &settings).unwrap();
        for i in 0..stats.len() {
            for j in 0..stats.len() {
                if outliers[i] > outliers[j] {
                    let steps = |l: usize| match scope { RatioScope::PerRow => shapes[l].1, RatioScope::PerLayer => shapes[l].0 * shapes[l].1 } as f64;
                    // Targets: monotone up to the bounds' rounding to whole units.
                    prop_assert!(a.targets[i] <= a.targets[j] + 1.0 / steps(i) + 1.0 / steps(j) + 1e-12);
                    if shapes[i] == shapes[j] {
                        prop_assert!(a.ratios[i] <= a.ratios[j], "{:?}", a);
                    }
                }
            }
        }
    }

    #[test]
    fn equalized_beats_uniform_and_matches_brute_force_on_equal_units(
        shapes in prop::collection::vec((1usize..4, 1usize..7), 1..5),
        seed in 0u64..1000,
        per_layer in any::<bool>(),
        ratio in 0.0f64..0.9,
        deviation in 0.0f64..0.7,
    ) {
        let c = case(&shapes, seed, per_layer);
        let settings = AllocationSettings::default().method(AllocationMethod::Equalized).max_deviation(deviation);
        let a = allocate(&pattern(ratio, c.scope), &c.stats, &settings).unwrap();
        let (units, steps): (Vec<usize>, Vec<usize>) = shapes
            .iter()
            .map(|&(m, n)| if per_layer { (1, m * n) } else { (m, n) })
            .unzip();
        let error = |ks: &[usize]| -> f64 {
            ks.iter().enumerate().map(|(l, &k)| diagonal_error(&c.scores[l], c.scope, k)).sum()
        };
        let chosen: Vec<usize> = a.pruned.iter().zip(&units).map(|(&p, &u)| p as usize / u).collect();
        let uniform: Vec<usize> = steps.iter().map(|&s| pruned_count(ratio, s)).collect();
        prop_assert!(error(&chosen) <= error(&uniform) + 1e-12);
        // Every count vector within the bounds with the exact total.
        let bounds: Vec<(usize, usize)> = steps
            .iter()
            .zip(&uniform)
            .map(|(&s, &k0)| {
                let lo = ((((ratio - deviation).max(0.0)) * s as f64).ceil() as usize).min(k0);
                let hi = (((ratio + deviation) * s as f64).floor() as usize).min(s - 1).max(k0);
                (lo, hi)
            })
            .collect();
        let want: usize = uniform.iter().zip(&units).map(|(k, u)| k * u).sum();
        let mut best = f64::INFINITY;
        let mut ks: Vec<usize> = bounds.iter().map(|b| b.0).collect();
        loop {
            if ks.iter().zip(&units).map(|(k, u)| k * u).sum::<usize>() == want {
                best = best.min(error(&ks));
            }
            let Some(l) = (0..ks.len()).find(|&l| ks[l] < bounds[l].1) else { break };
            ks[l] += 1;
            for earlier in 0..l {
                ks[earlier] = bounds[earlier].0;
            }
        }
        prop_assert!(error(&chosen) >= best - 1e-12);
        if units.iter().all(|&u| u == units[0]) {
            prop_assert!(error(&chosen) <= best + 1e-12, "{} vs brute force {}", error(&chosen), best);
        }
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let good = scores(3, 8, 1);
    let mut nan = good.clone();
    nan[[1, 2]] = f64::NAN;
    assert!(matches!(LayerStats::from_scores(nan.view(), RatioScope::PerRow, 0.1), Err(OptimaError::NonFinite { .. })));
    assert!(matches!(outlier_ratio(&[nan.view()], 5.0), Err(OptimaError::NonFinite { .. })));
    assert!(LayerStats::new(3, 8, RatioScope::PerRow, f64::NAN).is_err());
    assert!(LayerStats::new(0, 8, RatioScope::PerRow, 0.0).is_err());
    let stats = vec![LayerStats::from_scores(good.view(), RatioScope::PerRow, 0.1).unwrap()];
    let p = pattern(0.5, RatioScope::PerRow);
    for bad in [
        AllocationSettings::default().max_deviation(f64::NAN),
        AllocationSettings::default().max_deviation(1.0),
        AllocationSettings::default().max_deviation(-0.1),
        AllocationSettings::default().owl_lambda(-1.0),
        AllocationSettings::default().owl_outlier_threshold(0.0),
    ] {
        assert!(matches!(allocate(&p, &stats, &bad), Err(OptimaError::InvalidSetting(_))), "{bad:?}");
    }
    let equalized = AllocationSettings::default().method(AllocationMethod::Equalized);
    let shape_only = vec![LayerStats::new(3, 8, RatioScope::PerRow, 0.1).unwrap()];
    assert!(matches!(allocate(&p, &shape_only, &equalized), Err(OptimaError::InvalidSetting(_))));
    assert!(matches!(allocate(&"2:4".parse().unwrap(), &stats, &equalized), Err(OptimaError::InvalidSetting(_))));
    assert!(matches!(
        allocate(&pattern(0.5, RatioScope::PerLayer), &stats, &equalized),
        Err(OptimaError::InvalidSetting(_))
    ));
    assert!(matches!(allocate(&p, &[], &equalized), Err(OptimaError::Empty(_))));
}

#[test]
fn equalized_moves_sparsity_to_the_layer_whose_small_weights_cost_least() {
    // Layer 0: one big score per row, the rest tiny (cheap to prune); layer 1: all equal.
    let cheap = Array2::from_shape_fn((4, 10), |(_, j)| if j == 0 { 10.0 } else { 0.01 });
    let flat = Array2::from_elem((4, 10), 1.0);
    let stats: Vec<LayerStats> =
        [&cheap, &flat].iter().map(|s| LayerStats::from_scores(s.view(), RatioScope::PerRow, 0.0).unwrap()).collect();
    let settings = AllocationSettings::default().method(AllocationMethod::Equalized).max_deviation(0.3);
    let a = allocate(&pattern(0.5, RatioScope::PerRow), &stats, &settings).unwrap();
    assert_eq!(a.ratios, vec![0.8, 0.2]);
    assert_eq!(a.pruned, vec![32, 8]);
}
