//! Progress events of long runs. The library reports them through a callback; drawing them (the
//! binary's progress bars) is the caller's business.

use std::path::Path;

use crate::llama::LinearKind;

/// What a pruning run reports as it goes.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum PruneEvent<'a> {
    /// The run picked up a checkpoint: blocks before `first_block` are already pruned.
    Resumed {
        /// The first block this run prunes.
        first_block: usize,
        /// Blocks the run prunes in all.
        blocks: usize,
        /// The checkpoint folder.
        checkpoint: &'a Path,
    },
    /// The sparsity allocation's dense pass reached block `block` (of `blocks`).
    AllocationBlock {
        /// The block.
        block: usize,
        /// Blocks the run prunes in all.
        blocks: usize,
    },
    /// Block `block` (of `blocks`) starts: calibration forward pass and Hessians.
    BlockStarted {
        /// The block.
        block: usize,
        /// Blocks the run prunes in all.
        blocks: usize,
    },
    /// One linear layer of the current block is being masked and reconstructed.
    LayerStarted {
        /// The block.
        block: usize,
        /// The layer.
        kind: LinearKind,
    },
    /// Block `block` is pruned and its outputs computed (and checkpointed, when asked).
    BlockFinished {
        /// The block.
        block: usize,
        /// Blocks the run prunes in all.
        blocks: usize,
    },
}

/// What a perplexity evaluation reports after each window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerplexityProgress {
    /// Windows evaluated so far.
    pub windows_done: usize,
    /// Windows in all.
    pub windows: usize,
    /// Perplexity over the windows done so far.
    pub ppl_so_far: f64,
}
