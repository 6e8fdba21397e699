//! Sparsity allocation through the whole pipeline on a tiny random Llama: the pruned model's zero
//! count is exactly the uniform pattern's, each layer's zeros are what its reported ratio prunes,
//! the checkpoint tells allocations apart, and N:M refuses a non-uniform allocation.

mod tiny_model;

use optima::allocation::{AllocationMethod, AllocationSettings};
use optima::problem::pruned_count;
use optima::{OptimaError, RatioScope, SparsityPattern};
use optima_llm::checkpoint::Checkpoint;
use optima_llm::llama::{LinearKind, LlamaModel};
use optima_llm::prune::{MaskerChoice, PruneSettings, prune_model, prune_model_resumable};
use tiny_model::*;

fn allocated(pattern: &str, method: AllocationMethod, masker: MaskerChoice) -> PruneSettings {
    let mut s = settings(pattern, masker, "direct");
    s.allocation = AllocationSettings::default().method(method);
    s
}

fn zeros(w: &ndarray::Array2<f32>) -> usize {
    w.iter().filter(|&&v| v == 0.0).count()
}

#[test]
fn the_pruned_model_holds_exactly_the_uniform_zero_count_and_each_layer_its_reported_ratio() {
    let dense = LlamaModel::random(tiny_config(), 4).unwrap();
    for (pattern, masker) in
        [("0.5", MaskerChoice::Wanda), ("0.6/layer", MaskerChoice::Wanda), ("0.5", MaskerChoice::SparseGpt)]
    {
        let p: SparsityPattern = pattern.parse().unwrap();
        let SparsityPattern::Unstructured { ratio, scope } = p else { unreachable!() };
        let count = |r: f64, m: usize, n: usize| match scope {
            RatioScope::PerRow => m * pruned_count(r, n),
            RatioScope::PerLayer => pruned_count(r, m * n),
        };
        let uniform: usize = LinearKind::ALL
            .iter()
            .map(|k| {
                let (m, n) = k.shape(&dense.config);
                count(ratio, m, n)
            })
            .sum::<usize>()
            * dense.blocks.len();
        for method in [AllocationMethod::Owl, AllocationMethod::Equalized] {
            let mut model = dense.clone();
            let report = prune_model(&mut model, &calibration(0), &allocated(pattern, method, masker)).unwrap();
            let total: usize = model.blocks.iter().flat_map(|b| LinearKind::ALL.map(|k| zeros(b.weight(k)))).sum();
            assert_eq!(total, uniform, "{pattern} {method}: zeros");
            let record = report.allocation.as_ref().expect("a non-uniform run records its allocation");
            assert_eq!(record.pruned as usize, uniform);
            assert!((report.global_sparsity() - record.global_ratio).abs() < 1e-12);
            let mut ratios = Vec::new();
            for l in &report.layers {
                let w = model.blocks[l.block].weight(l.layer);
                assert_eq!(
                    zeros(w),
                    count(l.ratio, l.rows, l.cols),
                    "{pattern} {method} block {} {}",
                    l.block,
                    l.layer
                );
                assert!((l.ratio - ratio).abs() <= 0.1 + 1e-12);
                ratios.push(l.ratio);
            }
            assert!(ratios.iter().any(|&r| r != ratio), "{pattern} {method}: every layer at the uniform ratio");
        }
    }
}

#[test]
fn uniform_allocation_is_the_plain_pipeline() {
    let dense = LlamaModel::random(tiny_config(), 5).unwrap();
    let (mut a, mut b) = (dense.clone(), dense);
    let plain = settings("0.5", MaskerChoice::Wanda, "direct");
    let ra = prune_model(&mut a, &calibration(0), &plain).unwrap();
    let rb = prune_model(&mut b, &calibration(0), &allocated("0.5", AllocationMethod::Uniform, MaskerChoice::Wanda))
        .unwrap();
    assert!(ra.allocation.is_none() && rb.allocation.is_none());
    assert!(ra.layers.iter().all(|l| l.ratio == 0.5));
    for (x, y) in a.blocks.iter().zip(&b.blocks) {
        for k in LinearKind::ALL {
            assert_eq!(x.weight(k), y.weight(k));
        }
    }
}

#[test]
fn n_m_with_a_non_uniform_allocation_is_refused_before_any_work() {
    let dense = LlamaModel::random(tiny_config(), 6).unwrap();
    for method in [AllocationMethod::Owl, AllocationMethod::Equalized] {
        let mut model = dense.clone();
        let err = prune_model(&mut model, &calibration(0), &allocated("2:4", method, MaskerChoice::Wanda)).unwrap_err();
        assert!(matches!(err, OptimaError::InvalidSetting(_)), "{err}");
        assert_eq!(model.blocks[0].q, dense.blocks[0].q);
    }
}

#[test]
fn the_checkpoint_tells_allocations_apart() {
    let dir = tempfile::tempdir().unwrap();
    let dense = LlamaModel::random(tiny_config(), 7).unwrap();
    let mut owl = allocated("0.5", AllocationMethod::Owl, MaskerChoice::Wanda);
    owl.max_blocks = Some(1);
    let ckpt = Checkpoint::new(dir.path().join("c"), &dense, &calibration(0), &owl).unwrap();
    let mut model = dense.clone();
    prune_model_resumable(&mut model, &calibration(0), &owl, Some(&ckpt), |_| {}).unwrap();
    // The same run resumes; another allocation is another run.
    let mut again = dense.clone();
    prune_model_resumable(&mut again, &calibration(0), &owl, Some(&ckpt), |_| {}).unwrap();
    assert_eq!(again.blocks[0].q, model.blocks[0].q);
    let lambda = PruneSettings { allocation: owl.allocation.owl_lambda(0.05), ..owl.clone() };
    let other = Checkpoint::new(dir.path().join("c"), &dense, &calibration(0), &lambda).unwrap();
    let mut third = dense.clone();
    let err = prune_model_resumable(&mut third, &calibration(0), &lambda, Some(&other), |_| {}).unwrap_err();
    assert!(matches!(err, OptimaError::InvalidSetting(_)), "{err}");
}
