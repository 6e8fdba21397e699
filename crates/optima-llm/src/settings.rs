//! What a pruning run is asked to do: its mask, update (a [`SolverSpec`]), damping, device and
//! budgets.

use std::str::FromStr;

use serde::Serialize;

use optima::allocation::AllocationSettings;
use optima::backend::Device;
use optima::backend::Parallelism;
use optima::error::{OptimaError, Result};
use optima::hessian::HessianPrecision;
use optima::mask::RefineSettings;
use optima::memory::Bytes;
use optima::problem::SparsityPattern;
use optima::solve::SolverSpec;

pub use crate::held_out::HeldOutSelection;

/// How masks are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskerChoice {
    /// `|W|`.
    Magnitude,
    /// `|W| · ‖X_j‖`.
    Wanda,
    /// SparseGPT's OBS selection.
    SparseGpt,
}

impl FromStr for MaskerChoice {
    type Err = OptimaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "magnitude" => Ok(Self::Magnitude),
            "wanda" => Ok(Self::Wanda),
            "sparsegpt" => Ok(Self::SparseGpt),
            other => Err(OptimaError::InvalidSetting(format!(
                "unknown masker {other:?}; choose magnitude, wanda or sparsegpt"
            ))),
        }
    }
}

/// What each layer's weights are fitted to (docs/math.md, "Dense targets").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Reproduce the layer's own output on its inputs in the pruned model (SparseGPT's).
    #[default]
    Layer,
    /// Reproduce the dense model's output: the layer's dense inputs times its dense weights,
    /// from its inputs in the pruned model.
    Dense,
}

impl FromStr for Objective {
    type Err = OptimaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "layer" => Ok(Self::Layer),
            "dense" => Ok(Self::Dense),
            other => Err(OptimaError::InvalidSetting(format!("unknown objective {other:?}; choose layer or dense"))),
        }
    }
}

/// Which activations a block's later layers are calibrated on (docs/math.md, "In-block order").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InBlockOrder {
    /// q/k/v first, then o_proj on the attention of the pruned q/k/v, then gate/up on the output
    /// of the pruned attention, then down_proj on the pruned gate/up (GPTQ's `--true-sequential`).
    #[default]
    Sequential,
    /// Every layer on the block's activations with its dense weights, all captured in one pass
    /// (the SparseGPT and Wanda reference code for Llama).
    Parallel,
}

impl FromStr for InBlockOrder {
    type Err = OptimaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sequential" => Ok(Self::Sequential),
            "parallel" => Ok(Self::Parallel),
            other => Err(OptimaError::InvalidSetting(format!(
                "unknown in-block order {other:?}; choose sequential or parallel"
            ))),
        }
    }
}

/// Settings of a pruning run (`prune_model`).
#[derive(Clone, Debug, Serialize)]
pub struct PruneSettings {
    /// Sparsity pattern of every linear layer.
    pub pattern: SparsityPattern,
    /// Mask selection.
    pub masker: MaskerChoice,
    /// Weight update after masking: a solver with its settings, or `None` for the mask alone.
    pub update: Option<SolverSpec>,
    /// What the update fits: the layer's own output or the dense model's (needs an update).
    pub objective: Objective,
    /// Which activations a block's later layers are calibrated on.
    pub order: InBlockOrder,
    /// Relative Hessian damping of the masks, and of the updates unless `held_out` chooses it.
    pub percdamp: f64,
    /// Choose each layer's update damping on held-out calibration sequences, and keep an update
    /// only where it beats the mask's own weights there (`None`: every layer at `percdamp`).
    pub held_out: Option<HeldOutSelection>,
    /// Keep a layer's update only when it lowers the layer's loss on the calibration tokens
    /// (the published OPTIMA code's rule); otherwise every update is kept.
    pub keep_only_improving: bool,
    /// Refine each layer's mask with the update's solver in the loop (`None`: the masker's mask
    /// as it is). Needs an update other than SparseGPT's.
    pub refine: Option<RefineSettings>,
    /// Threads of the maskers, Hessians and mask-only reports (the solver has its own). The
    /// forward passes run on the caller's rayon pool: install one to bound them too (the CLI's
    /// `--threads` sizes the global pool).
    pub parallelism: Parallelism,
    /// Where the weight updates run (`cuda` runs `auto`, `direct` and `pcg` on a GPU).
    pub device: Device,
    /// Prune only the first this many blocks (`None`: all); later blocks stay dense.
    pub max_blocks: Option<usize>,
    /// Memory the run may allocate beyond the loaded model (`None`: unbounded). Within it,
    /// calibration activations spill to disk and solves run in row chunks as needed; a run that
    /// cannot fit fails before any work with [`OptimaError::MemoryBudget`].
    pub memory_budget: Option<Bytes>,
    /// How the pattern's sparsity is allotted across layers (unstructured patterns only; N:M
    /// stays uniform): uniform by default, or by OWL's outlier ratios or the equalized diagonal
    /// error, at exactly the uniform pattern's pruned count (docs/math.md, "Sparsity allocation").
    pub allocation: AllocationSettings,
    /// Write every layer's problem (weights, undamped Hessian, mask) to
    /// `DIR/blk.B.KIND.safetensors` before it is solved, for `optima solve` and `optima bench`.
    pub save_problems: Option<std::path::PathBuf>,
    /// Accumulate the whole Hessians and measure every layer's error `E` even where the run's
    /// masks need only their diagonal ([`PruneSettings::diagonal_only`]); without it such a run
    /// reports `E` as not measured. The pruned weights are the same bits either way.
    /// (Left out of the serialization when off, so runs without it keep their checkpoints'
    /// fingerprints.)
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub layer_error: bool,
    /// Arithmetic of the layer objective's Hessian products (the fitted and the held-out
    /// tokens'; the dense objective's statistics stay f64): f64 by default, or f32 products
    /// added into f64 sums, about twice as fast on a CPU. (Left out of the serialization at f64,
    /// so runs without it keep their checkpoints' fingerprints.)
    #[serde(skip_serializing_if = "is_f64")]
    pub hessian_precision: HessianPrecision,
}

fn is_f64(precision: &HessianPrecision) -> bool {
    *precision == HessianPrecision::F64
}

impl PruneSettings {
    /// Whether the run needs only the diagonal `diag(XᵀX)/N` of each layer input's Hessian: a
    /// magnitude or Wanda mask, no weight update (so no refinement, held-out dampings or dense
    /// objective), no saved problems and no `layer_error`. Such a run accumulates the diagonal
    /// alone, on the CPU (`n` flops a token instead of `n²/2`), masks from it
    /// ([`optima::mask::DiagonalMasker`]), and reports the layer error `E` as not measured: it
    /// needs the whole `H`. Its masks and weights are bit-identical to those from the CPU's full
    /// Hessians, whose diagonal is the same sum (a CUDA device's agrees to rounding).
    pub fn diagonal_only(&self) -> bool {
        matches!(self.masker, MaskerChoice::Magnitude | MaskerChoice::Wanda)
            && self.update.is_none()
            && self.refine.is_none()
            && self.held_out.is_none()
            && self.objective == Objective::Layer
            && self.save_problems.is_none()
            && !self.layer_error
    }
}
