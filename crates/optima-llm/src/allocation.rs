//! Sparsity allotted across the model's layers (docs/math.md, "Sparsity allocation"): one dense
//! pass over the calibration tokens, stage by stage as the pruning pass runs them, collects the
//! diagonal of every linear input's Hessian (`‖X_j‖₂²/N`); each layer's Wanda scores
//! `|W_ij|·‖X_j‖₂` give its statistics (OWL's outlier ratio per block, the equalized allocation's
//! error curve), and [`optima::allocation::allocate`] turns them into one unstructured ratio per
//! layer at the run's exact global count.

use std::time::Instant;

use ndarray::Array2;
use serde::Serialize;

use super::activations::ActivationStore;
use super::llama::{LinearInput, LinearKind, LlamaModel};
use super::progress::PruneEvent;
use super::settings::PruneSettings;
use super::stages::{StageAccumulator, Stream, run_stage};
use optima::allocation::{AllocationMethod, AllocationSettings, LayerStats, allocate};
use optima::error::{OptimaError, Result};
use optima::hessian::DiagonalAccumulator;
use optima::problem::SparsityPattern;

/// The per-layer patterns of a run with a non-uniform allocation.
#[derive(Clone, Debug)]
pub(crate) struct Allotment {
    layers: Vec<(usize, LinearKind, SparsityPattern)>,
    /// What the run's summary records.
    pub(crate) record: AllocationRecord,
}

impl Allotment {
    /// The pattern of `kind` in block `block`.
    pub(crate) fn pattern(&self, block: usize, kind: LinearKind) -> Result<SparsityPattern> {
        self.layers
            .iter()
            .find(|(b, k, _)| *b == block && *k == kind)
            .map(|(.., p)| *p)
            .ok_or_else(|| OptimaError::Internal(format!("no allotted ratio for block {block} {kind}")))
    }
}

/// How a run allotted its sparsity.
#[derive(Clone, Debug, Serialize)]
pub struct AllocationRecord {
    /// The allocation's settings.
    pub settings: AllocationSettings,
    /// Weights pruned over the pruned blocks' linear layers (exactly the uniform pattern's count).
    pub pruned: u64,
    /// Weights of those layers.
    pub weights: u64,
    /// `pruned / weights`.
    pub global_ratio: f64,
    /// Per block, the outlier ratio OWL allots by (the fraction of the block's scores above
    /// `owl_outlier_threshold` times their mean).
    pub block_outliers: Vec<f64>,
    /// Seconds of the dense pass and the allocation.
    pub seconds: f64,
}

/// Checks a run's allocation before any work: N:M stays uniform.
pub(crate) fn check(settings: &PruneSettings) -> Result<()> {
    settings.allocation.check()?;
    if !settings.allocation.is_uniform() && matches!(settings.pattern, SparsityPattern::NM { .. }) {
        return Err(OptimaError::InvalidSetting(format!(
            "the {} allocation varies unstructured ratios across layers; {} stays the same in every layer \
             (hardware needs it): use --allocation uniform",
            settings.allocation.method, settings.pattern
        )));
    }
    Ok(())
}

/// The per-layer patterns of the first `blocks` blocks of the dense `model`, or `None` for a
/// uniform allocation. `spill` names the folder each block's activations spill to (`None`: in
/// memory), as the run's memory plan says.
pub(crate) fn allot(
    model: &LlamaModel,
    calibration: &[Vec<u32>],
    settings: &PruneSettings,
    blocks: usize,
    spill: &dyn Fn(&str, usize) -> Option<std::path::PathBuf>,
    progress: &mut dyn FnMut(PruneEvent<'_>),
) -> Result<Option<Allotment>> {
    check(settings)?;
    let alloc: &AllocationSettings = &settings.allocation;
    let SparsityPattern::Unstructured { scope, .. } = settings.pattern else {
        return Ok(None);
    };
    if alloc.is_uniform() {
        return Ok(None);
    }
    let t = Instant::now();
    let config = model.config;
    let mut xs = ActivationStore::build(calibration.len(), spill("allocation", 0), |s| {
        calibration.get(s).map_or_else(|| Err(OptimaError::Empty("calibration".into())), |seq| model.embed(seq))
    })?;
    let mut stats = Vec::new();
    let mut index = Vec::new();
    let mut block_outliers = Vec::new();
    for b in 0..blocks {
        progress(PruneEvent::AllocationBlock { block: b, blocks });
        let block = model.blocks.get(b).ok_or_else(|| OptimaError::Internal(format!("no block {b}")))?;
        let mut stream = Stream::new(&xs, spill("allocation-stream", b));
        let mut norms: Vec<(LinearKind, Vec<f64>)> = Vec::new();
        for stage in LinearInput::ALL {
            let mut accumulator = StageAccumulator::Diagonal(DiagonalAccumulator::new(stage.dim(&config)));
            run_stage(&config, stage, (&mut stream, block), None, &mut accumulator, None)?;
            let diagonal = accumulator.finish_diagonal()?;
            let norm: Vec<f64> = diagonal.iter().map(|d| d.max(0.0).sqrt()).collect();
            norms.extend(stage.kinds().iter().map(|&kind| (kind, norm.clone())));
        }
        let scores = |kind: LinearKind, norm: &[f64]| -> Result<Array2<f64>> {
            let w = block.weight(kind);
            if w.ncols() != norm.len() {
                return Err(OptimaError::shape(
                    kind.short_name(),
                    format!("{} inputs", norm.len()),
                    w.ncols().to_string(),
                ));
            }
            let mut s = w.mapv(|v| f64::from(v).abs());
            for mut row in s.rows_mut() {
                row.iter_mut().zip(norm).for_each(|(v, n)| *v *= n);
            }
            Ok(s)
        };
        // OWL's cut: M times the block's mean score (the OWL code pools the block's layers).
        let (mut sum, mut count) = (0.0, 0usize);
        for (kind, norm) in &norms {
            let s = scores(*kind, norm)?;
            sum += s.sum();
            count += s.len();
        }
        let cut = alloc.owl_outlier_threshold * sum / count.max(1) as f64;
        let mut above = 0usize;
        let first = stats.len();
        for (kind, norm) in &norms {
            let s = scores(*kind, norm)?;
            above += s.iter().filter(|&&v| v > cut).count();
            let layer = match alloc.method {
                AllocationMethod::Equalized => LayerStats::from_scores(s.view(), scope, 0.0)?,
                _ => LayerStats::new(s.nrows(), s.ncols(), scope, 0.0)?,
            };
            stats.push(layer);
            index.push((b, *kind));
        }
        let outliers = above as f64 / count.max(1) as f64;
        for layer in stats.iter_mut().skip(first) {
            *layer = layer.clone().with_outliers(outliers)?;
        }
        block_outliers.push(outliers);
        xs = stream.finish(block, &config, spill("allocation", b + 1))?;
    }
    drop(xs);
    let allocated = allocate(&settings.pattern, &stats, alloc)?;
    let layers = index
        .into_iter()
        .zip(&allocated.ratios)
        .map(|((b, kind), &ratio)| (b, kind, SparsityPattern::Unstructured { ratio, scope }))
        .collect();
    let pruned = allocated.pruned.iter().sum();
    let record = AllocationRecord {
        settings: *alloc,
        pruned,
        weights: allocated.weights,
        global_ratio: allocated.global_ratio(),
        block_outliers,
        seconds: t.elapsed().as_secs_f64(),
    };
    Ok(Some(Allotment { layers, record }))
}
