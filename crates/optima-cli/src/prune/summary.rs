//! What `optima prune` reports besides the library's records: refinement and damping tallies, the
//! forward passes' arithmetic, and the layer error as a figure or as not measured.

use optima_llm::preset::Recipe;
use optima_llm::prune::{InBlockOrder, Objective};
use serde_json::json;

/// What mask refinement did over the run: layers whose answer is on a refined mask, rows moved,
/// iterations and seconds, and how the supports compared: the mean relative drop from the
/// starting mask of the exact layer objective (certified runs) or of the held-out layer error
/// (runs with held-out selection).
pub(super) fn refinement_summary(layers: &[optima_llm::report::LayerRecord]) -> serde_json::Value {
    let refined: Vec<_> = layers.iter().filter_map(|l| l.refinement.as_ref()).collect();
    if refined.is_empty() {
        return serde_json::Value::Null;
    }
    let mean_drop = |pairs: Vec<(f64, f64)>| -> Option<f64> {
        (!pairs.is_empty()).then(|| {
            pairs.iter().map(|&(start, after)| 1.0 - after / start.max(f64::MIN_POSITIVE)).sum::<f64>()
                / pairs.len() as f64
        })
    };
    let objective = mean_drop(refined.iter().filter_map(|r| r.objectives.map(|o| (o.start, o.refined))).collect());
    let held_out = mean_drop(refined.iter().filter_map(|r| r.held_out.map(|e| (e.start, e.refined))).collect());
    json!({
        "layers": refined.len(),
        "layers_on_refined_mask": refined.iter().filter(|r| r.kept).count(),
        "mean_objective_drop": objective,
        "mean_held_out_error_drop": held_out,
        "rows_changed": refined.iter().map(|r| r.rows_changed).sum::<usize>(),
        "mean_iterations": refined.iter().map(|r| r.iterations as f64).sum::<f64>() / refined.len() as f64,
        "seconds": refined.iter().map(|r| r.seconds).sum::<f64>(),
    })
}

/// How many layers kept an update at each damping chosen on held-out tokens (empty without).
pub(super) fn dampings_chosen(layers: &[optima_llm::report::LayerRecord]) -> serde_json::Value {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for record in layers.iter().filter(|l| l.update_kept) {
        if let Some(h) = &record.held_out {
            *counts.entry(h.damping.to_string()).or_default() += 1;
        }
    }
    json!(counts)
}

/// The forward passes' arithmetic of a prune in GFLOP: per calibration sequence of `T` tokens and
/// block, `2·T` per linear weight and `2·heads·head_dim·T²` for the causal attention (QKᵀ and PV,
/// halved by the mask); one pass per block in order, two with the parallel order (the dense
/// capture, then the pruned outputs), twice that with the dense objective's second stream.
pub(super) fn forward_gflop(
    config: &optima_llm::llama::LlamaConfig,
    calibration: &[Vec<u32>],
    recipe: &Recipe,
    max_blocks: Option<usize>,
) -> f64 {
    use optima_llm::llama::LinearKind;
    let weights: usize = LinearKind::ALL.iter().map(|k| k.shape(config).0 * k.shape(config).1).sum();
    let per_block: f64 = calibration
        .iter()
        .map(|seq| {
            let t = seq.len() as f64;
            2.0 * t * weights as f64 + 2.0 * (config.heads * config.head_dim) as f64 * t * t
        })
        .sum();
    let blocks = max_blocks.map_or(config.blocks, |b| b.min(config.blocks)) as f64;
    let passes = match recipe.order {
        InBlockOrder::Sequential => 1.0,
        InBlockOrder::Parallel => 2.0,
    } * if recipe.objective == Objective::Dense { 2.0 } else { 1.0 };
    per_block * blocks * passes / 1e9
}

/// The summary's line on the mean layer error `E`, measured or not.
pub(super) fn layer_error_line(before: Option<f64>, after: Option<f64>) -> String {
    match (before, after) {
        (Some(before), Some(after)) => {
            format!("mean layer error E: {before:.5} with the mask alone, {after:.5} after the update")
        }
        _ => "mean layer error E: not measured (this mask-only run accumulated only the Hessians' diagonal; \
              --layer-error measures it)"
            .into(),
    }
}
