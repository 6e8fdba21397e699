//! Maskers: masks follow their pattern exactly, and selections equal plain sort-based references.

mod common;

use common::{llm_like, random_spd, random_weight};
use ndarray::Array2;
use optima::prelude::*;
use optima::{Mask, RatioScope};
use proptest::prelude::*;

/// Reference: in each row, sort (score, column) ascending and prune the first ⌊ratio·n⌋.
fn reference_per_row(scores: &Array2<f64>, ratio: f64) -> Mask {
    let (m, n) = scores.dim();
    let count = (ratio * n as f64).floor() as usize;
    let mut mask = Mask::empty(m, n);
    for i in 0..m {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| scores[[i, a]].partial_cmp(&scores[[i, b]]).unwrap().then(a.cmp(&b)));
        for &j in &order[..count] {
            mask.set(i, j, true);
        }
    }
    mask
}

/// Reference: in each group of M, sort and prune the M−N lowest.
fn reference_nm(scores: &Array2<f64>, keep: usize, group: usize) -> Mask {
    let (m, n) = scores.dim();
    let mut mask = Mask::empty(m, n);
    for i in 0..m {
        for g in (0..n).step_by(group) {
            let mut order: Vec<usize> = (g..g + group).collect();
            order.sort_by(|&a, &b| scores[[i, a]].partial_cmp(&scores[[i, b]]).unwrap().then(a.cmp(&b)));
            for &j in &order[..group - keep] {
                mask.set(i, j, true);
            }
        }
    }
    mask
}

/// Reference: the ⌊ratio·m·n⌋ lowest scores of the whole layer (ties by row-major index).
fn reference_per_layer(scores: &Array2<f64>, ratio: f64) -> Mask {
    let (m, n) = scores.dim();
    let count = (ratio * (m * n) as f64).floor() as usize;
    let mut order: Vec<usize> = (0..m * n).collect();
    order.sort_by(|&a, &b| scores[[a / n, a % n]].partial_cmp(&scores[[b / n, b % n]]).unwrap().then(a.cmp(&b)));
    let mut mask = Mask::empty(m, n);
    for &f in &order[..count] {
        mask.set(f / n, f % n, true);
    }
    mask
}

fn wanda_scores(weight: &Array2<f64>, h: &Array2<f64>) -> Array2<f64> {
    Array2::from_shape_fn(weight.dim(), |(i, j)| weight[[i, j]].abs() * h[[j, j]].sqrt())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn wanda_per_row_equals_sort_reference(m in 1usize..10, n in 1usize..50, ratio in 0.0f64..0.99, seed in 0u64..1000) {
        let (weight, h) = llm_like(m, n.max(2), seed);
        let hessian = Hessian::new(h.clone(), 0.01).unwrap();
        let pattern = SparsityPattern::per_row(ratio).unwrap();
        let mask = WandaMasker.select(weight.view(), &hessian, &pattern).unwrap();
        prop_assert_eq!(&mask, &reference_per_row(&wanda_scores(&weight, &h), ratio));
        mask.validate(&pattern).unwrap();
    }

    #[test]
    fn wanda_nm_equals_sort_reference(m in 1usize..8, groups in 1usize..12, nm in prop::sample::select(vec![(1usize, 2usize), (2, 4), (4, 8), (1, 4), (3, 4)]), seed in 0u64..1000) {
        let (keep, group) = nm;
        let n = groups * group;
        let (weight, h) = llm_like(m, n.max(2), seed);
        let hessian = Hessian::new(h.clone(), 0.01).unwrap();
        let pattern = SparsityPattern::n_m(keep, group).unwrap();
        let mask = WandaMasker.select(weight.view(), &hessian, &pattern).unwrap();
        prop_assert_eq!(&mask, &reference_nm(&wanda_scores(&weight, &h), keep, group));
        mask.validate(&pattern).unwrap();
        for i in 0..m {
            for g in 0..groups {
                let kept = (g * group..(g + 1) * group).filter(|&j| !mask.is_pruned(i, j)).count();
                prop_assert_eq!(kept, keep);
            }
        }
    }

    #[test]
    fn magnitude_per_layer_equals_sort_reference(m in 1usize..10, n in 1usize..40, ratio in 0.0f64..0.99, seed in 0u64..1000) {
        let weight = random_weight(m, n, seed);
        let hessian = Hessian::new(random_spd(n, n + 1, seed), 0.01).unwrap();
        let pattern = SparsityPattern::Unstructured { ratio, scope: RatioScope::PerLayer };
        let mask = MagnitudeMasker.select(weight.view(), &hessian, &pattern).unwrap();
        prop_assert_eq!(&mask, &reference_per_layer(&weight.mapv(f64::abs), ratio));
        mask.validate(&pattern).unwrap();
        prop_assert_eq!(mask.total_pruned(), (ratio * (m * n) as f64).floor() as usize);
    }
}

#[test]
fn wanda_uses_activation_norms_not_just_magnitudes() {
    // Column 0 has the largest weights but a dead-quiet input; Wanda prunes it, magnitude keeps it.
    let weight = Array2::from_shape_vec((1, 4), vec![10.0, 1.0, 2.0, 3.0]).unwrap();
    let mut h = Array2::<f64>::eye(4);
    h[[0, 0]] = 1e-6;
    let hessian = Hessian::new(h, 0.0).unwrap();
    let pattern = SparsityPattern::per_row(0.25).unwrap();
    assert!(WandaMasker.select(weight.view(), &hessian, &pattern).unwrap().is_pruned(0, 0));
    let by_magnitude = MagnitudeMasker.select(weight.view(), &hessian, &pattern).unwrap();
    assert!(!by_magnitude.is_pruned(0, 0) && by_magnitude.is_pruned(0, 1));
}

#[test]
fn masks_that_break_their_pattern_are_named() {
    let pattern: SparsityPattern = "2:4".parse().unwrap();
    let mask = Mask::from_fn(2, 8, |i, j| i == 1 && j < 3);
    let err = mask.validate(&pattern).unwrap_err().to_string();
    assert!(err.contains("row 0"), "{err}");
    let per_row = SparsityPattern::per_row(0.5).unwrap();
    let err = Mask::from_fn(2, 8, |_, j| j < 3).validate(&per_row).unwrap_err().to_string();
    assert!(err.contains("prunes 3 of 8"), "{err}");
}

#[test]
fn patterns_parse_and_print() {
    for s in ["0.5", "0.5/layer", "2:4", "4:8", "0"] {
        let p: SparsityPattern = s.parse().unwrap();
        assert_eq!(p.to_string(), s);
    }
    assert_eq!("0.5/row".parse::<SparsityPattern>().unwrap().to_string(), "0.5");
    assert!((("2:4".parse::<SparsityPattern>().unwrap()).sparsity() - 0.5).abs() < 1e-15);
}

#[test]
fn dense_round_trip_and_counts() {
    let mask = Mask::from_fn(3, 70, |i, j| (i + j) % 3 == 0);
    assert_eq!(Mask::from_dense(mask.to_dense().view()).unwrap(), mask);
    assert_eq!(mask.total_pruned(), (0..3).map(|i| mask.pruned_in_row(i)).sum::<usize>());
    assert_eq!(mask.pruned_indices(1).len() + mask.kept_indices(1).len(), 70);
    let bad = Array2::from_elem((1, 2), 2u8);
    assert!(matches!(Mask::from_dense(bad.view()), Err(optima::OptimaError::MaskViolation { .. })));
}
