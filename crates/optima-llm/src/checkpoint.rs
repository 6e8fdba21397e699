//! Resumable pruning: after each finished block, `prune_model_resumable` can
//! save the block's pruned weights, the next block's calibration inputs and the report so far to
//! a folder; a later run with the same model, calibration and settings picks up from there and
//! produces the same bits as an uninterrupted run.
//!
//! Layout of the folder (every file written atomically, the manifest last, so a run killed at any
//! instant leaves either the previous consistent state or the new one):
//!
//! - `manifest.json`: format version, the run's fingerprint, blocks done, per-layer records, times;
//! - `block-B/KIND.bin`: the seven pruned weight matrices of block `B` (f32, the same raw matrix
//!   format as the spilled activations);
//! - `inputs-B/seqS.bin`: the calibration inputs of block `B` (the outputs of block `B − 1`), one
//!   file per sequence so that they are written and read one sequence at a time.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::activations::{ActivationStore, read_matrix, write_matrix};
use super::llama::{LinearKind, LlamaModel};
use super::report::LayerRecord;
use super::settings::PruneSettings;
use optima::error::{OptimaError, Result};
use optima::io::write_atomically;

const FORMAT_VERSION: u32 = 2;
const MANIFEST: &str = "manifest.json";

/// What a run has finished, as recorded in the manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    fingerprint: String,
    blocks_done: usize,
    sequences: usize,
    layers: Vec<LayerRecord>,
    seconds: [f64; 4],
}

/// A checkpoint folder for one pruning run.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    fingerprint: String,
}

/// The state a resumed run starts from.
#[derive(Clone, Debug)]
pub struct ResumeState {
    /// Blocks already pruned (their weights are applied to the model by [`Checkpoint::resume`]).
    pub blocks_done: usize,
    /// The records of the layers already pruned.
    pub layers: Vec<LayerRecord>,
    /// Folder of the calibration inputs of block `blocks_done` (one file per sequence).
    pub(crate) inputs: PathBuf,
    /// Calibration sequences.
    pub(crate) sequences: usize,
    /// Seconds spent so far in forward passes, Hessians, masks and updates.
    pub seconds: [f64; 4],
}

impl Checkpoint {
    /// A checkpoint in `dir` for the run that `model` (dense, as loaded), `calibration` and
    /// `settings` define (see `fingerprint`). The folder is created when the first block is saved.
    pub fn new(
        dir: impl Into<PathBuf>,
        model: &LlamaModel,
        calibration: &[Vec<u32>],
        settings: &PruneSettings,
    ) -> Result<Self> {
        Ok(Self { dir: dir.into(), fingerprint: fingerprint(model, calibration, settings)? })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the folder holds a manifest (of any run).
    pub fn exists(&self) -> bool {
        self.dir.join(MANIFEST).is_file()
    }

    /// Blocks the saved run has finished, without touching any model: `Ok(None)` when the folder
    /// holds no manifest; an error when it belongs to another run or is damaged.
    pub fn blocks_done(&self) -> Result<Option<usize>> {
        Ok(self.manifest()?.map(|m| m.blocks_done))
    }

    fn manifest(&self) -> Result<Option<Manifest>> {
        let path = self.dir.join(MANIFEST);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(OptimaError::Io { path, source }),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| OptimaError::Format {
            path: path.clone(),
            detail: format!("damaged checkpoint manifest: {e}"),
        })?;
        if manifest.version != FORMAT_VERSION {
            return Err(OptimaError::Format {
                path,
                detail: format!("checkpoint format {} (this build reads {FORMAT_VERSION})", manifest.version),
            });
        }
        if manifest.fingerprint != self.fingerprint {
            return Err(OptimaError::InvalidSetting(format!(
                "the checkpoint in {} belongs to another run (different model, calibration or settings); \
                 remove it or choose another --checkpoint",
                self.dir.display()
            )));
        }
        Ok(Some(manifest))
    }

    /// Loads the saved state and applies the saved blocks' weights to `model`. `Ok(None)` when the
    /// folder holds no manifest; an error when it belongs to another run or is damaged.
    pub fn resume(&self, model: &mut LlamaModel) -> Result<Option<ResumeState>> {
        let path = self.dir.join(MANIFEST);
        let Some(manifest) = self.manifest()? else { return Ok(None) };
        if manifest.blocks_done > model.blocks.len() {
            return Err(OptimaError::Format {
                path,
                detail: format!("{} blocks done but the model has {}", manifest.blocks_done, model.blocks.len()),
            });
        }
        for b in 0..manifest.blocks_done {
            let block = model.blocks.get_mut(b).ok_or_else(|| OptimaError::Internal(format!("no block {b}")))?;
            for kind in LinearKind::ALL {
                let saved = read_matrix(&self.dir.join(format!("block-{b}/{}.bin", kind.short_name())))?;
                let weight = block.weight_mut(kind);
                if saved.dim() != weight.dim() {
                    return Err(OptimaError::shape(
                        format!("checkpoint block {b} {kind}"),
                        format!("{:?}", weight.dim()),
                        format!("{:?}", saved.dim()),
                    ));
                }
                *weight = saved;
            }
        }
        Ok(Some(ResumeState {
            blocks_done: manifest.blocks_done,
            layers: manifest.layers,
            inputs: self.dir.join(format!("inputs-{}", manifest.blocks_done)),
            sequences: manifest.sequences,
            seconds: manifest.seconds,
        }))
    }

    /// Records that `blocks_done` blocks are finished: saves the last finished block's weights
    /// (if any), the next block's inputs, then the manifest, and removes superseded inputs.
    pub(crate) fn save(
        &self,
        model: &LlamaModel,
        blocks_done: usize,
        inputs: &ActivationStore,
        layers: &[LayerRecord],
        seconds: [f64; 4],
    ) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|source| OptimaError::Io { path: self.dir.clone(), source })?;
        if let Some(b) = blocks_done.checked_sub(1) {
            let block = model.blocks.get(b).ok_or_else(|| OptimaError::Internal(format!("no block {b}")))?;
            let dir = self.dir.join(format!("block-{b}"));
            std::fs::create_dir_all(&dir).map_err(|source| OptimaError::Io { path: dir.clone(), source })?;
            for kind in LinearKind::ALL {
                write_matrix(&dir.join(format!("{}.bin", kind.short_name())), block.weight(kind).view())?;
            }
        }
        inputs.write_to(&self.dir.join(format!("inputs-{blocks_done}")))?;
        let manifest = Manifest {
            version: FORMAT_VERSION,
            fingerprint: self.fingerprint.clone(),
            blocks_done,
            sequences: inputs.len(),
            layers: layers.to_vec(),
            seconds,
        };
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| OptimaError::InvalidSetting(e.to_string()))?;
        write_atomically(&self.dir.join(MANIFEST), &text)?;
        if let Some(previous) = blocks_done.checked_sub(1) {
            // Superseded now that the manifest points past it; failing to remove it loses nothing.
            let _ = std::fs::remove_dir_all(self.dir.join(format!("inputs-{previous}")));
        }
        Ok(())
    }

    /// Removes the folder (after the run's output is safely written).
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(OptimaError::Io { path: self.dir.clone(), source }),
        }
    }
}

/// A digest of everything that determines a run's result: the dense weights and norms, the
/// calibration tokens, and a canonical serialization (JSON) of the whole [`PruneSettings`], the
/// device and the solver's precision included. Three settings are left out because they do not
/// change the result's meaning: the thread count (a resumed run may use another machine), the
/// memory budget (it gives the same bits, tested) and `save_problems` (a side output).
///
/// The hash is 64-bit FNV-1a over little-endian bytes: a fixed algorithm, so a checkpoint written
/// by one build is recognised by the next (the standard library's `DefaultHasher` promises no such
/// thing).
fn fingerprint(model: &LlamaModel, calibration: &[Vec<u32>], settings: &PruneSettings) -> Result<String> {
    let mut canonical = settings.clone();
    canonical.parallelism = optima::Parallelism::Sequential;
    canonical.update = canonical.update.map(|spec| spec.parallelism(optima::Parallelism::Sequential));
    canonical.refine = canonical.refine.map(|refine| refine.parallelism(optima::Parallelism::Sequential));
    canonical.memory_budget = None;
    canonical.save_problems = None;
    let text = serde_json::to_string(&(FORMAT_VERSION, model.config, &canonical))
        .map_err(|e| OptimaError::Internal(format!("serializing the run's settings: {e}")))?;
    let mut h = Fnv1a::default();
    h.write(text.as_bytes());
    for block in &model.blocks {
        for kind in LinearKind::ALL {
            block.weight(kind).iter().for_each(|v| h.write(&v.to_le_bytes()));
        }
        block.attn_norm.iter().chain(&block.ffn_norm).for_each(|v| h.write(&v.to_le_bytes()));
    }
    model.token_embd.iter().for_each(|v| h.write(&v.to_le_bytes()));
    model.output_norm.iter().for_each(|v| h.write(&v.to_le_bytes()));
    if let Some(output) = &model.output {
        output.iter().for_each(|v| h.write(&v.to_le_bytes()));
    }
    h.write(&(calibration.len() as u64).to_le_bytes());
    for seq in calibration {
        h.write(&(seq.len() as u64).to_le_bytes());
        seq.iter().for_each(|t| h.write(&t.to_le_bytes()));
    }
    Ok(format!("{:016x}", h.0))
}

/// 64-bit FNV-1a (Fowler–Noll–Vo), a fixed and documented hash.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
