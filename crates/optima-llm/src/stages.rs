//! One block's calibration, stage by stage (docs/math.md, "In-block order"): the calibration
//! sequences go through the block one linear input at a time — attention input, o_proj's input,
//! MLP input, down_proj's input — and each stream keeps what the next stage starts from, so the
//! whole block costs one forward pass however its layers are calibrated. Between stages the
//! driver may prune the layers of the stage just calibrated (sequential order), so that later
//! stages see them pruned.

use std::path::PathBuf;
use std::time::Instant;

use ndarray::{Array2, ArrayView2};

use super::activations::{ActivationStore, ActivationWriter};
use super::held_out::{HeldOutAccumulator, HeldOutSelection};
use super::llama::{LinearInput, LlamaBlock, LlamaConfig};
use optima::error::{OptimaError, Result};
use optima::hessian::{CrossAccumulator, DeviceHessianAccumulator, DiagonalAccumulator, HessianAccumulator};
use optima::problem::Hessian;

/// One stream of calibration activations through a block: its inputs, and what it has kept of
/// the stages run so far (one matrix per sequence).
pub(crate) struct Stream<'a> {
    inputs: &'a ActivationStore,
    /// o_proj's inputs after [`LinearInput::AttnOut`], the residual stream `h` after
    /// [`LinearInput::Mlp`].
    carried: Option<ActivationStore>,
    /// down_proj's inputs after [`LinearInput::MlpHidden`].
    hidden: Option<ActivationStore>,
    /// Where its stores spill (`None`: in memory); each stage adds its own suffix.
    spill: Option<PathBuf>,
}

/// What a stage step keeps for the next stage.
enum Keep {
    Nothing,
    /// The layer input itself (o_proj's and down_proj's inputs are carried on).
    Input,
    /// Something else (the residual stream).
    Other(Array2<f32>),
}

impl<'a> Stream<'a> {
    /// A stream starting from the block inputs `inputs`.
    pub(crate) fn new(inputs: &'a ActivationStore, spill: Option<PathBuf>) -> Self {
        Self { inputs, carried: None, hidden: None, spill }
    }

    /// Sequences in the stream.
    pub(crate) fn len(&self) -> usize {
        self.inputs.len()
    }

    fn kept(
        store: &Option<ActivationStore>,
        s: usize,
        stage: LinearInput,
    ) -> Result<std::borrow::Cow<'_, Array2<f32>>> {
        store
            .as_ref()
            .ok_or_else(|| OptimaError::Internal(format!("stage {stage:?} run before the stages it builds on")))?
            .get(s)
    }

    /// Sequence `s`'s input to the layers of `stage`, with `block`'s current weights.
    fn step(
        &self,
        block: &LlamaBlock,
        config: &LlamaConfig,
        stage: LinearInput,
        s: usize,
    ) -> Result<(Array2<f32>, Keep)> {
        match stage {
            LinearInput::Attn => Ok((block.attn_input(config, self.inputs.get(s)?.view())?, Keep::Nothing)),
            LinearInput::AttnOut => {
                let xn = block.attn_input(config, self.inputs.get(s)?.view())?;
                Ok((block.attention_mix(config, xn.view())?, Keep::Input))
            }
            LinearInput::Mlp => {
                let attn = Self::kept(&self.carried, s, stage)?;
                let h = block.after_attention(config, self.inputs.get(s)?.view(), attn.view())?;
                Ok((block.mlp_input(config, h.view())?, Keep::Other(h)))
            }
            LinearInput::MlpHidden => {
                let h = Self::kept(&self.carried, s, stage)?;
                let hn = block.mlp_input(config, h.view())?;
                Ok((block.mlp_hidden(config, hn.view())?, Keep::Input))
            }
        }
    }

    fn writer(&self, what: &str) -> Result<ActivationWriter> {
        ActivationWriter::new(self.spill.as_ref().map(|dir| dir.with_extension(what)))
    }

    fn commit(&mut self, stage: LinearInput, store: ActivationStore) {
        match stage {
            LinearInput::Attn => {}
            LinearInput::AttnOut | LinearInput::Mlp => self.carried = Some(store),
            LinearInput::MlpHidden => self.hidden = Some(store),
        }
    }

    /// The block's outputs from the stages run (all four), with `block`'s weights for down_proj,
    /// into a new store that spills to `spill`.
    pub(crate) fn finish(
        self,
        block: &LlamaBlock,
        config: &LlamaConfig,
        spill: Option<PathBuf>,
    ) -> Result<ActivationStore> {
        let mut out = ActivationWriter::new(spill)?;
        for s in 0..self.len() {
            let h = Self::kept(&self.carried, s, LinearInput::Mlp)?.into_owned();
            let act = Self::kept(&self.hidden, s, LinearInput::MlpHidden)?;
            out.push(block.after_mlp(config, h, act.view())?)?;
        }
        Ok(out.finish())
    }
}

/// What accumulates a stage's layer inputs: `H` alone (layer objective), `H` and the cross term
/// `C` with the dense model's inputs (dense objective), or only the diagonal of `H`.
pub(crate) enum StageAccumulator {
    /// `H = X_pᵀX_p/N`, on the run's device.
    Layer(DeviceHessianAccumulator),
    /// `H` and `C = X_pᵀX_d/N`, on the CPU.
    Dense(CrossAccumulator),
    /// The diagonal of `H` alone, on the CPU: the allocation's dense pass, and the pruning pass of
    /// a run whose masks need nothing more ([`crate::settings::PruneSettings::diagonal_only`]).
    Diagonal(DiagonalAccumulator),
}

/// What a stage's layers are pruned from: the damped `H` (with the dense objective's `C`), or
/// the undamped diagonal of `H` alone.
pub(crate) enum StageStatistics {
    /// The whole Hessian.
    Hessian { hessian: Hessian, cross: Option<Array2<f64>> },
    /// `diag(XᵀX)/N`.
    Diagonal(Vec<f64>),
}

impl StageAccumulator {
    fn add(&mut self, pruned: ArrayView2<'_, f32>, dense: Option<ArrayView2<'_, f32>>) -> Result<()> {
        match (self, dense) {
            (Self::Layer(acc), _) => acc.add_batch(pruned),
            (Self::Dense(acc), Some(dense)) => acc.add_batch(pruned, dense),
            (Self::Dense(_), None) => Err(OptimaError::Internal("the dense objective needs the dense stream".into())),
            (Self::Diagonal(acc), _) => acc.add_batch(pruned),
        }
    }

    /// The damped `H` and, for the dense objective, `C`; or the diagonal.
    pub(crate) fn finish(self, percdamp: f64) -> Result<StageStatistics> {
        match self {
            Self::Layer(acc) => Ok(StageStatistics::Hessian { hessian: acc.finish(percdamp)?, cross: None }),
            Self::Dense(acc) => {
                acc.finish(percdamp).map(|(hessian, c)| StageStatistics::Hessian { hessian, cross: Some(c) })
            }
            Self::Diagonal(acc) => acc.finish().map(StageStatistics::Diagonal),
        }
    }

    /// The diagonal `diag(XᵀX)/N` of a [`StageAccumulator::Diagonal`].
    pub(crate) fn finish_diagonal(self) -> Result<Vec<f64>> {
        match self {
            Self::Diagonal(acc) => acc.finish(),
            _ => Err(OptimaError::Internal("only a diagonal accumulator finishes to a diagonal".into())),
        }
    }
}

/// Seconds a stage spent computing activations and accumulating them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StageSeconds {
    pub(crate) forward: f64,
    pub(crate) hessian: f64,
}

/// Runs `stage` for every sequence: the pruned stream through `block` (its weights as they are
/// now), the dense stream (when given) through `dense_block`, their layer inputs added to
/// `accumulator` — or, for the sequences `held_out` holds out, to its accumulator; both streams
/// keep what the next stage needs.
pub(crate) fn run_stage(
    config: &LlamaConfig,
    stage: LinearInput,
    pruned: (&mut Stream<'_>, &LlamaBlock),
    dense: Option<(&mut Stream<'_>, &LlamaBlock)>,
    accumulator: &mut StageAccumulator,
    mut held_out: Option<(&HeldOutSelection, &mut HeldOutAccumulator)>,
) -> Result<StageSeconds> {
    let (stream, block) = pruned;
    let mut seconds = StageSeconds::default();
    let tag = format!("{stage:?}").to_lowercase();
    let mut kept = stream.writer(&tag)?;
    let mut dense = dense.map(|(s, b)| s.writer(&tag).map(|w| (s, b, w))).transpose()?;
    for s in 0..stream.len() {
        let t = Instant::now();
        let (input, keep) = stream.step(block, config, stage, s)?;
        let dense_step = dense.as_ref().map(|(ds, db, _)| ds.step(db, config, stage, s)).transpose()?;
        let th = Instant::now();
        seconds.forward += th.duration_since(t).as_secs_f64();
        let dense_input = dense_step.as_ref().map(|(d, _)| d.view());
        match held_out.as_mut() {
            Some((selection, held)) if selection.holds_out(s) => held.add(input.view(), dense_input)?,
            _ => accumulator.add(input.view(), dense_input)?,
        }
        seconds.hessian += th.elapsed().as_secs_f64();
        push(&mut kept, input, keep)?;
        if let (Some((_, _, writer)), Some((d, keep))) = (dense.as_mut(), dense_step) {
            push(writer, d, keep)?;
        }
    }
    stream.commit(stage, kept.finish());
    if let Some((ds, _, writer)) = dense {
        ds.commit(stage, writer.finish());
    }
    Ok(seconds)
}

fn push(writer: &mut ActivationWriter, input: Array2<f32>, keep: Keep) -> Result<()> {
    match keep {
        Keep::Nothing => Ok(()),
        Keep::Input => writer.push(input),
        Keep::Other(a) => writer.push(a),
    }
}
