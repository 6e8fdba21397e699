//! What a pruning run did: per-layer records and the run's totals.

use serde::{Deserialize, Serialize};

pub use crate::allocation::AllocationRecord;
use crate::held_out::HeldOutRecord;
use crate::llama::LinearKind;

/// What happened to one linear layer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Block index.
    pub block: usize,
    /// Which linear layer.
    pub layer: LinearKind,
    /// Outputs.
    pub rows: usize,
    /// Inputs.
    pub cols: usize,
    /// The pattern's sparsity this layer was pruned at: its allotted unstructured ratio under a
    /// non-uniform allocation, else the run's pattern's (0 in checkpoints from before allocation).
    #[serde(default)]
    pub ratio: f64,
    /// Fraction of weights pruned.
    pub sparsity: f64,
    /// `E` with the mask alone; `None` where it was not measured: a run that needs only the
    /// Hessians' diagonal ([`crate::settings::PruneSettings::diagonal_only`]) has no `H` to
    /// measure it with.
    pub error_before: Option<f64>,
    /// `E` after the update (`None`: not measured, as `error_before`).
    pub error_after: Option<f64>,
    /// Largest relative KKT residual (`None`: not measured, as `error_before`).
    pub kkt_residual: Option<f64>,
    /// Largest iteration count.
    pub iterations: usize,
    /// Rows not solved to the solver's promise.
    pub failed_rows: usize,
    /// Row chunks the solve ran in (more than 1 when the memory budget split it).
    pub chunks: usize,
    /// Whether the layer keeps its update (`false` for mask-only runs, and where
    /// `keep_only_improving` found that the update did not lower the calibration loss).
    pub update_kept: bool,
    /// The damping chosen on held-out calibration tokens and the held-out errors of its update
    /// and of the mask's own weights, when the run chose dampings that way.
    #[serde(default)]
    pub held_out: Option<HeldOutRecord>,
    /// What mask refinement did, when the run refined masks.
    #[serde(default)]
    pub refinement: Option<RefinementRecord>,
    /// Seconds choosing the mask (refinement included).
    pub mask_seconds: f64,
    /// Seconds updating the weights.
    pub solve_seconds: f64,
}

/// One layer's mask refinement: its cost, rows moved, how the two supports compared, and whether
/// the answer is on the refined mask.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct RefinementRecord {
    /// ADMM iterations run.
    pub iterations: usize,
    /// Seconds refining (ADMM, and the exact solves of the certified path).
    pub seconds: f64,
    /// Rows whose support moved.
    pub rows_changed: usize,
    /// Whether the layer's answer is on the refined mask (not where a fallback to the starting
    /// mask won on held-out tokens, or refinement changed nothing).
    pub kept: bool,
    /// Without held-out selection: the exact layer objectives (`Σ f_i` at the run's damping) on
    /// the starting mask, on ADMM's and row by row the lower of the two.
    #[serde(default)]
    pub objectives: Option<StepObjectives>,
    /// With held-out selection: the held-out layer errors of the update on each mask, on the
    /// damping grid's row sample at the chosen damping.
    #[serde(default)]
    pub held_out: Option<SupportErrors>,
}

/// The exact layer objective of each step of a certified refinement.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct StepObjectives {
    /// On the starting mask.
    pub start: f64,
    /// On the support ADMM ended on.
    pub admm: f64,
    /// Row by row the lower of the two.
    pub refined: f64,
}

/// Held-out layer errors of the update on the starting and on the refined mask.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SupportErrors {
    /// On the starting mask.
    pub start: f64,
    /// On the refined mask.
    pub refined: f64,
}

/// The whole run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Per linear layer, in order.
    pub layers: Vec<LayerRecord>,
    /// Calibration sequences × tokens.
    pub calibration_tokens: usize,
    /// Seconds in block forward passes (calibration inputs in, pruned outputs out).
    pub forward_seconds: f64,
    /// Seconds accumulating Hessians.
    pub hessian_seconds: f64,
    /// Seconds choosing masks.
    pub mask_seconds: f64,
    /// Seconds updating weights.
    pub solve_seconds: f64,
    /// Wall time of the whole run.
    pub total_seconds: f64,
    /// Mean `E` over layers with the mask alone; `None` unless every layer's was measured.
    pub mean_error_before: Option<f64>,
    /// Mean `E` over layers after the update; `None` unless every layer's was measured.
    pub mean_error_after: Option<f64>,
    /// How the sparsity was allotted across layers, under a non-uniform allocation.
    pub allocation: Option<AllocationRecord>,
}

impl PruneReport {
    /// The mean of one measured figure over the layers: `None` when there are none or any layer's
    /// was not measured.
    pub(crate) fn mean_over_layers(&self, figure: impl Fn(&LayerRecord) -> Option<f64>) -> Option<f64> {
        let values: Option<Vec<f64>> = self.layers.iter().map(figure).collect();
        values.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// The fraction of all pruned layers' weights that are pruned.
    pub fn global_sparsity(&self) -> f64 {
        let weights: usize = self.layers.iter().map(|l| l.rows * l.cols).sum();
        let pruned: f64 = self.layers.iter().map(|l| l.sparsity * (l.rows * l.cols) as f64).sum();
        pruned / weights.max(1) as f64
    }
}
