//! The published pruning recipes as one value, so that a comparison with them is one flag and is
//! run by the same code: [`Preset::recipe`] says exactly what each sets, and a setting given
//! explicitly overrides the preset's.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use optima::error::{OptimaError, Result};
use optima::mask::{RefineSettings, SparseGptSettings};
use optima::problem::DEFAULT_PERCDAMP;
use optima::solve::{PdhgSettings, SolverSpec};

use crate::settings::{HeldOutSelection, InBlockOrder, MaskerChoice, Objective};

/// A published recipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// SparseGPT (Frantar & Alistarh, 2023): its own mask and update, 1% damping, every layer of a
    /// block calibrated on the block's unpruned activations in one pass, as its reference code
    /// does for Llama (one group of all the block's layers).
    #[serde(rename = "sparsegpt")]
    SparseGpt,
    /// Wanda (Sun et al., 2023): its mask, no update, every layer of a block scored on the
    /// block's unpruned activations as its reference code does.
    Wanda,
    /// The published OPTIMA method as its code runs: Wanda's mask, PDHG at `eps = 1e-2` on the
    /// layer objective, and a layer's update kept only when it lowers the calibration loss; a
    /// block's layers calibrated on its unpruned activations, as Wanda's pipeline it builds on.
    OptimaPaper,
}

/// What a run does: a preset's settings, or the default pipeline's.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    /// Mask selection.
    pub masker: MaskerChoice,
    /// Weight update (`None`: the mask alone).
    pub update: Option<SolverSpec>,
    /// What the update fits.
    pub objective: Objective,
    /// Which activations a block's later layers are calibrated on.
    pub order: InBlockOrder,
    /// Relative Hessian damping.
    pub percdamp: f64,
    /// Dampings chosen per layer on held-out calibration sequences (`None`: `percdamp` for all).
    pub held_out: Option<HeldOutSelection>,
    /// Keep a layer's update only when it lowers the layer's loss on the calibration tokens
    /// (else the masked weights stay).
    pub keep_only_improving: bool,
    /// Refine each layer's mask with the solver in the loop (`None`: the masker's mask).
    pub refine: Option<RefineSettings>,
}

impl Preset {
    /// The presets' names, as `parse` takes them.
    pub const NAMES: &'static [&'static str] = &["sparsegpt", "wanda", "optima-paper"];

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            Self::SparseGpt => "sparsegpt",
            Self::Wanda => "wanda",
            Self::OptimaPaper => "optima-paper",
        }
    }

    /// Exactly what the preset sets.
    pub fn recipe(self) -> Recipe {
        match self {
            Self::SparseGpt => Recipe {
                masker: MaskerChoice::SparseGpt,
                update: Some(SolverSpec::SparseGpt(SparseGptSettings::default())),
                objective: Objective::Layer,
                order: InBlockOrder::Parallel,
                percdamp: DEFAULT_PERCDAMP,
                held_out: None,
                keep_only_improving: false,
                refine: None,
            },
            Self::Wanda => Recipe {
                masker: MaskerChoice::Wanda,
                update: None,
                objective: Objective::Layer,
                order: InBlockOrder::Parallel,
                percdamp: DEFAULT_PERCDAMP,
                held_out: None,
                keep_only_improving: false,
                refine: None,
            },
            Self::OptimaPaper => Recipe {
                masker: MaskerChoice::Wanda,
                update: Some(SolverSpec::Pdhg(PdhgSettings::default())),
                objective: Objective::Layer,
                order: InBlockOrder::Parallel,
                percdamp: DEFAULT_PERCDAMP,
                held_out: None,
                keep_only_improving: true,
                refine: None,
            },
        }
    }
}

impl Recipe {
    /// `optima prune` with no preset, the best pipeline measured (docs/results.md), for every
    /// pattern: Wanda's mask, exact reconstruction by `auto` at 1e-6 on the layer objective, layers
    /// calibrated in order inside each block, each layer's damping chosen on one calibration
    /// sequence in 8 held out, an update kept only where it beats the mask there, and masks
    /// refined with the solver in the loop ([`RefineSettings::default`]) at the damping the
    /// held-out tokens chose for Wanda's mask, Wanda's mask competing on the held-out tokens.
    pub fn default_pipeline() -> Self {
        Self {
            masker: MaskerChoice::Wanda,
            update: Some(SolverSpec::Auto(optima::solve::AutoSettings::default())),
            objective: Objective::Layer,
            order: InBlockOrder::Sequential,
            percdamp: DEFAULT_PERCDAMP,
            held_out: Some(HeldOutSelection::default()),
            keep_only_improving: false,
            refine: Some(RefineSettings::default()),
        }
    }
}

impl FromStr for Preset {
    type Err = OptimaError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sparsegpt" => Ok(Self::SparseGpt),
            "wanda" => Ok(Self::Wanda),
            "optima-paper" => Ok(Self::OptimaPaper),
            other => {
                Err(OptimaError::InvalidSetting(format!("unknown preset {other:?}; choose {}", Self::NAMES.join(", "))))
            }
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_expand_to_exactly_their_documented_settings() {
        let sparsegpt = Preset::SparseGpt.recipe();
        assert_eq!(sparsegpt.masker, MaskerChoice::SparseGpt);
        assert!(matches!(sparsegpt.update, Some(SolverSpec::SparseGpt(s)) if s == SparseGptSettings::default()));
        assert_eq!((sparsegpt.percdamp, sparsegpt.keep_only_improving), (0.01, false));
        assert_eq!(sparsegpt.order, InBlockOrder::Parallel);
        assert_eq!(Preset::Wanda.recipe().order, InBlockOrder::Parallel);
        assert_eq!(Preset::OptimaPaper.recipe().order, InBlockOrder::Parallel);
        for preset in [Preset::SparseGpt, Preset::Wanda, Preset::OptimaPaper] {
            assert_eq!(preset.recipe().objective, Objective::Layer, "{preset}");
        }

        let wanda = Preset::Wanda.recipe();
        assert_eq!((wanda.masker, wanda.update.clone(), wanda.percdamp), (MaskerChoice::Wanda, None, 0.01));
        assert!(!wanda.keep_only_improving);

        let paper = Preset::OptimaPaper.recipe();
        assert_eq!(paper.masker, MaskerChoice::Wanda);
        match paper.update {
            Some(SolverSpec::Pdhg(s)) => assert_eq!((s.eps_abs, s.eps_rel), (1e-2, 1e-2)),
            other => panic!("optima-paper updates with pdhg, not {other:?}"),
        }
        assert_eq!((paper.percdamp, paper.keep_only_improving), (0.01, true));

        let default = Recipe::default_pipeline();
        assert_eq!(default.refine, Some(RefineSettings::default()), "masks are refined");
        assert_eq!(default.masker, MaskerChoice::Wanda);
        assert!(matches!(default.update, Some(SolverSpec::Auto(s)) if s.tolerance == 1e-6));
        assert!(!default.keep_only_improving);
        assert_eq!(default.order, InBlockOrder::Sequential);
        let held_out = default.held_out.expect("the default chooses dampings on held-out tokens");
        assert_eq!((held_out.every, held_out.grid), (8, vec![0.01, 0.03, 0.1, 0.3]));
        assert!(held_out.damps_refinement, "the refinement searches at the held-out damping");
        for preset in [Preset::SparseGpt, Preset::Wanda, Preset::OptimaPaper] {
            assert_eq!(preset.recipe().held_out, None, "{preset}");
        }
    }

    #[test]
    fn names_round_trip() {
        for &name in Preset::NAMES {
            assert_eq!(name.parse::<Preset>().unwrap().to_string(), name);
        }
        assert!(matches!("obs".parse::<Preset>(), Err(OptimaError::InvalidSetting(_))));
        for preset in [Preset::SparseGpt, Preset::Wanda, Preset::OptimaPaper] {
            assert_eq!(serde_json::to_value(preset).unwrap(), serde_json::json!(preset.name()));
        }
    }
}
