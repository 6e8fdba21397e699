//! What a pruning run is asked to do: its mask, update, damping, solver, device and budgets.

use std::str::FromStr;

use serde::Serialize;

use optima::backend::Device;
use optima::error::{OptimaError, Result};
use optima::memory::Bytes;
use optima::problem::SparsityPattern;
use optima::solve::{SolverOptions, solver_by_name};

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

/// How kept weights are updated after masking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateChoice {
    /// Mask only: kept weights unchanged.
    None,
    /// A [`optima::solve::QpSolver`] by name (`direct`, `auto`, `dual-pcg`, `pcg`, `admm`, `pdhg`, `sparsegpt`).
    Solver(String),
}

impl std::fmt::Display for UpdateChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Solver(name) => f.write_str(name),
        }
    }
}

impl Serialize for UpdateChoice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl FromStr for UpdateChoice {
    type Err = OptimaError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            name => {
                solver_by_name(name, &SolverOptions::default())?;
                Ok(Self::Solver(name.to_string()))
            }
        }
    }
}

/// Settings of [`prune_model`](crate::prune::prune_model).
#[derive(Clone, Debug, Serialize)]
pub struct PruneSettings {
    /// Sparsity pattern of every linear layer.
    pub pattern: SparsityPattern,
    /// Mask selection.
    pub masker: MaskerChoice,
    /// Weight update.
    pub update: UpdateChoice,
    /// Relative Hessian damping.
    pub percdamp: f64,
    /// Solver options (tolerance, threads, …).
    pub solver: SolverOptions,
    /// Where the weight updates run (`cuda` runs `auto`, `direct` and `pcg` on a GPU).
    pub device: Device,
    /// Prune only the first this many blocks (`None`: all); later blocks stay dense.
    pub max_blocks: Option<usize>,
    /// Memory the run may allocate beyond the loaded model (`None`: unbounded). Within it,
    /// calibration activations spill to disk and solves run in row chunks as needed; a run that
    /// cannot fit fails before any work with [`OptimaError::MemoryBudget`].
    pub memory_budget: Option<Bytes>,
    /// Write every layer's problem (weights, undamped Hessian, mask) to
    /// `DIR/blk.B.KIND.safetensors` before it is solved, for `optima solve` and `optima bench`.
    pub save_problems: Option<std::path::PathBuf>,
}
