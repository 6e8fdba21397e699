//! Runs whose masks need only the Hessians' diagonal (a magnitude or Wanda mask, no update)
//! accumulate only the diagonal: the same pruned bits as from the whole Hessians, the layer error
//! `E` reported as not measured; every run that needs `H` still gets it whole.

mod tiny_model;

use optima::allocation::{AllocationMethod, AllocationSettings};
use optima_llm::llama::{LinearKind, LlamaModel};
use optima_llm::prune::{InBlockOrder, MaskerChoice, Objective, PruneReport, PruneSettings, plan_memory, prune_model};
use optima_llm::settings::HeldOutSelection;
use tiny_model::*;

fn pruned(dense: &LlamaModel, settings: &PruneSettings) -> (LlamaModel, PruneReport) {
    let mut model = dense.clone();
    let report = prune_model(&mut model, &calibration(6), settings).unwrap();
    (model, report)
}

fn bits(model: &LlamaModel) -> Vec<Vec<u32>> {
    model
        .blocks
        .iter()
        .flat_map(|b| LinearKind::ALL.map(|k| b.weight(k).iter().map(|v| v.to_bits()).collect()))
        .collect()
}

#[test]
fn a_mask_only_run_from_the_diagonal_writes_the_bits_of_one_from_the_whole_hessians() {
    let dense = LlamaModel::random(tiny_config(), 21).unwrap();
    let cases = [
        ("0.5", MaskerChoice::Wanda, InBlockOrder::Sequential, AllocationMethod::Uniform),
        ("2:4", MaskerChoice::Wanda, InBlockOrder::Parallel, AllocationMethod::Uniform),
        ("0.6/layer", MaskerChoice::Wanda, InBlockOrder::Sequential, AllocationMethod::Uniform),
        ("0.5", MaskerChoice::Wanda, InBlockOrder::Sequential, AllocationMethod::Owl),
        ("0.5", MaskerChoice::Magnitude, InBlockOrder::Parallel, AllocationMethod::Uniform),
    ];
    for (pattern, masker, order, allocation) in cases {
        let mut diagonal = settings(pattern, masker, "none");
        diagonal.order = order;
        diagonal.allocation = AllocationSettings::default().method(allocation);
        let full = PruneSettings { layer_error: true, ..diagonal.clone() };
        let what = format!("{pattern} {masker:?} {order:?} {allocation:?}");
        assert!(diagonal.diagonal_only() && !full.diagonal_only(), "{what}");
        let (from_diagonal, diagonal_report) = pruned(&dense, &diagonal);
        let (from_full, full_report) = pruned(&dense, &full);
        assert_eq!(bits(&from_diagonal), bits(&from_full), "{what}: the same pruned bits");
        assert_ne!(bits(&from_diagonal), bits(&dense), "{what}: something was pruned");
        if allocation == AllocationMethod::Uniform {
            check_pattern(&from_diagonal, &pattern.parse().unwrap());
        }
        assert_eq!(diagonal_report.layers.len(), full_report.layers.len());
        for (d, f) in diagonal_report.layers.iter().zip(&full_report.layers) {
            assert_eq!((d.block, d.layer, d.sparsity, d.ratio), (f.block, f.layer, f.sparsity, f.ratio), "{what}");
            assert_eq!((d.error_before, d.error_after, d.kkt_residual), (None, None, None), "{what}: not measured");
            let (before, after) = (f.error_before.unwrap(), f.error_after.unwrap());
            assert!(before > 0.0 && before.is_finite() && after == before, "{what}: measured from H");
            assert!(f.kkt_residual.is_some());
            assert!(!d.update_kept && !f.update_kept && d.iterations == f.iterations && d.chunks == f.chunks);
        }
        assert_eq!((diagonal_report.mean_error_before, diagonal_report.mean_error_after), (None, None), "{what}");
        assert!(full_report.mean_error_before.is_some_and(|e| e > 0.0), "{what}");
        assert_eq!(full_report.mean_error_after, full_report.mean_error_before, "{what}");
    }
    // The diagonal's memory plan holds no n×n matrices.
    let config = dense.config;
    let diagonal = settings("0.5", MaskerChoice::Wanda, "none");
    let full = PruneSettings { layer_error: true, ..diagonal.clone() };
    let peak = |s: &PruneSettings| plan_memory(&config, 6, 48, s).unwrap().estimated_peak;
    assert!(peak(&diagonal) < peak(&full));
    // f32 Hessian products: one f32 batch product beside each of the four inputs' accumulators.
    let f32_products = PruneSettings { hessian_precision: optima::HessianPrecision::F32, ..full.clone() };
    let (h, i) = (config.hidden, config.intermediate);
    assert_eq!(peak(&f32_products).0 - peak(&full).0, (4 * (3 * h * h + i * i)) as u64);
}

#[test]
fn every_run_that_needs_the_hessian_accumulates_it_whole() {
    let dense = LlamaModel::random(tiny_config(), 22).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let with = |masker, update: &str, f: &dyn Fn(&mut PruneSettings)| {
        let mut s = settings("0.5", masker, update);
        f(&mut s);
        s
    };
    // What reads H beyond its diagonal: an update (and with it refinement, held-out dampings, the
    // dense objective), SparseGPT's mask, the saved problems, or E asked for.
    let needing = [
        ("an update", with(MaskerChoice::Wanda, "direct", &|_| {})),
        ("SparseGPT's update", with(MaskerChoice::Wanda, "sparsegpt", &|_| {})),
        ("SparseGPT's mask", with(MaskerChoice::SparseGpt, "none", &|_| {})),
        ("refinement", with(MaskerChoice::Wanda, "direct", &|s| s.refine = Some(Default::default()))),
        (
            "held-out dampings",
            with(MaskerChoice::Wanda, "direct", &|s| s.held_out = Some(HeldOutSelection::default().every(3))),
        ),
        ("the dense objective", with(MaskerChoice::Wanda, "direct", &|s| s.objective = Objective::Dense)),
        ("saved problems", with(MaskerChoice::Wanda, "none", &|s| s.save_problems = Some(dir.path().to_path_buf()))),
        ("the layer error", with(MaskerChoice::Magnitude, "none", &|s| s.layer_error = true)),
    ];
    for (what, s) in &needing {
        assert!(!s.diagonal_only(), "{what}");
        let (_, report) = pruned(&dense, s);
        for l in &report.layers {
            assert!(l.error_before.is_some() && l.error_after.is_some() && l.kkt_residual.is_some(), "{what}");
        }
        assert!(report.mean_error_before.is_some() && report.mean_error_after.is_some(), "{what}");
    }
    // The saved problems hold the whole undamped Hessian.
    let file =
        optima::io::read_problem_file(&dir.path().join(format!("blk.0.{}.safetensors", LinearKind::Q.short_name())))
            .unwrap();
    assert_eq!(file.hessian.dim(), (64, 64));
    assert!(file.hessian.iter().filter(|&&v| v != 0.0).count() > 64, "off-diagonal entries were accumulated");
}
