//! Block-sequential pruning of a Llama model (docs/architecture.md): each block sees calibration inputs
//! that come from the already-pruned blocks before it; one Hessian per distinct linear input
//! (q/k/v share one, gate/up share one, o and down have their own); every linear layer is masked
//! and reconstructed; then the block's outputs are recomputed with the pruned weights.

use std::sync::Arc;
use std::time::Instant;

use ndarray::Array2;
use serde::Serialize;

use super::activations::ActivationStore;
use super::allocation::Allotment;
use super::checkpoint::Checkpoint;
use super::held_out::{HeldOut, HeldOutAccumulator};
use super::layer::{LayerFit, LayerUpdate, mask_layer, prune_layer};
use super::llama::{LinearInput, LinearKind, LlamaConfig, LlamaModel};
use super::progress::PruneEvent;
pub use super::report::{LayerRecord, PruneReport};
pub use super::settings::{InBlockOrder, MaskerChoice, Objective, PruneSettings};
use super::stages::{StageAccumulator, StageStatistics, Stream, run_stage};
use optima::backend::{Device, Parallelism};
use optima::error::{OptimaError, Result};
use optima::hessian::{CrossAccumulator, DeviceHessianAccumulator, DiagonalAccumulator, HessianPrecision};
use optima::memory::{Bytes, MemoryEstimate};
use optima::solve::{QpSolver, SolverSpec, problem_memory};

/// How a run fits its memory budget ([`plan_memory`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MemoryPlan {
    /// Calibration activations live on disk, one sequence in memory at a time.
    pub activations_on_disk: bool,
    /// Estimated peak of the run beyond the model, with this plan (solves chunked to fit).
    pub estimated_peak: Bytes,
}

/// What one block's work needs besides the activations: Hessians, one sequence's forward pass,
/// and the largest layer's mask and solve at one row per chunk.
struct BlockMemory {
    shared: Bytes,
    layers: Vec<(LinearKind, Bytes, MemoryEstimate)>,
}

/// Numbers the runs of this process, so that their spill folders differ.
static NEXT_RUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn block_memory(config: &LlamaConfig, seq_len: usize, settings: &PruneSettings) -> Result<BlockMemory> {
    let (h, i) = (config.hidden, config.intermediate);
    let dense = settings.objective == Objective::Dense;
    // Accumulators and finished matrices of all four inputs (the parallel order holds them all):
    // H, with the dense objective C beside it, and the held-out H (and C, D) when dampings are
    // chosen on held-out sequences.
    let held_out = match (&settings.held_out, dense) {
        (None, _) => 0,
        (Some(_), false) => 2,
        (Some(_), true) => 6,
    };
    // f32 products (layer objective) add each accumulator's f32 batch product: the fitted
    // tokens' and, with held-out dampings, the held-out ones'.
    let f32_products = match (settings.hessian_precision, dense) {
        (HessianPrecision::F32, false) => Bytes::f32s(3 * h * h + i * i) * (1 + usize::from(held_out > 0)),
        _ => Bytes(0),
    };
    let hessians = if settings.diagonal_only() {
        Bytes::f64s(3 * h + i)
    } else {
        Bytes::f64s(3 * h * h + i * i) * (if dense { 4 } else { 2 } + held_out) + f32_products
    };
    let dense_block = if dense { Bytes::f32s(4 * h * h + 3 * h * i) } else { Bytes(0) };
    let forward =
        Bytes::f32s(seq_len * (10 * h + 4 * i) + seq_len * seq_len * config.heads) + Bytes::f64s(seq_len * h.max(i));
    let solver = settings.update.as_ref().map(|spec| spec.build(optima::Device::Cpu)).transpose()?;
    let layers = LinearKind::ALL
        .iter()
        .map(|&kind| {
            let (m, n) = kind.shape(config);
            let sparsegpt =
                if settings.masker == MaskerChoice::SparseGpt { Bytes::f64s(4 * n * n + 2 * m * n) } else { Bytes(0) };
            // With held-out dampings: the baseline, the best candidate and the one being solved.
            let candidates = if settings.held_out.is_some() { 3 } else { 0 };
            // Refinement: Ĥ and (Ĥ + ρI)⁻¹, ADMM's six iterates, both supports' solutions and problems.
            let refine = if settings.refine.is_some() { Bytes::f64s(2 * n * n + 10 * m * n) } else { Bytes(0) };
            let whole_layer = Bytes::f64s((if dense { 4 } else { 3 } + candidates) * m * n) + sparsegpt + refine;
            let solve =
                solver.as_ref().map_or(MemoryEstimate::default(), |s| problem_memory(n).plus(s.memory_estimate(n)));
            (kind, whole_layer, solve)
        })
        .collect();
    Ok(BlockMemory { shared: hessians + forward + dense_block, layers })
}

/// Plans a run of `sequences × seq_len` calibration tokens on a model of `config` within
/// `settings.memory_budget`: activations in memory when they fit, else on disk; an error naming
/// the smallest budget that would do when even one sequence and one row per solve do not fit.
pub fn plan_memory(
    config: &LlamaConfig,
    sequences: usize,
    seq_len: usize,
    settings: &PruneSettings,
) -> Result<MemoryPlan> {
    plan_with_needs(config, sequences, seq_len, settings).map(|(plan, ..)| plan)
}

/// [`plan_memory`], with what the driver needs to size each solve: the per-block needs and the
/// memory the activations take under the plan.
fn plan_with_needs(
    config: &LlamaConfig,
    sequences: usize,
    seq_len: usize,
    settings: &PruneSettings,
) -> Result<(MemoryPlan, BlockMemory, Bytes)> {
    let need = block_memory(config, seq_len, settings)?;
    let largest = need.layers.iter().map(|(_, whole, solve)| *whole + solve.for_rows(1)).max().unwrap_or_default();
    // Per stream and sequence: the block's inputs and outputs, and what the stages carry (the
    // residual stream and down_proj's inputs); the pruned stream, and with the dense objective
    // the dense one beside it.
    let stores = if settings.objective == Objective::Dense { 2 } else { 1 };
    let one_sequence = Bytes::f32s(seq_len * (3 * config.hidden + config.intermediate)) * stores;
    let all_sequences = one_sequence * sequences;
    let in_memory = need.shared + all_sequences + largest;
    let on_disk = need.shared + one_sequence + largest;
    let in_memory_plan = MemoryPlan { activations_on_disk: false, estimated_peak: in_memory };
    match settings.memory_budget {
        None => Ok((in_memory_plan, need, all_sequences)),
        Some(budget) if in_memory <= budget => Ok((in_memory_plan, need, all_sequences)),
        Some(budget) if on_disk <= budget => {
            Ok((MemoryPlan { activations_on_disk: true, estimated_peak: on_disk }, need, one_sequence))
        }
        Some(budget) => Err(OptimaError::MemoryBudget {
            what: "pruning one block (Hessians, one sequence's forward pass, the largest layer one row at a time)"
                .into(),
            needed: on_disk,
            budget,
        }),
    }
}

fn to_f64(a: &Array2<f32>) -> Array2<f64> {
    a.mapv(f64::from)
}

/// Prunes every linear layer of `model` in place, block by block, on calibration sequences.
pub fn prune_model(model: &mut LlamaModel, calibration: &[Vec<u32>], settings: &PruneSettings) -> Result<PruneReport> {
    prune_model_resumable(model, calibration, settings, None, |_| {})
}

/// [`prune_model`] that saves its progress to `checkpoint` after every block and, when the
/// checkpoint already holds progress of this same run, resumes after its last finished block.
/// `model` must be the dense model as loaded; the result is bit-identical to an uninterrupted
/// run with the same thread count. `progress` is told of each block and layer as it starts.
pub fn prune_model_resumable(
    model: &mut LlamaModel,
    calibration: &[Vec<u32>],
    settings: &PruneSettings,
    checkpoint: Option<&Checkpoint>,
    mut progress: impl FnMut(PruneEvent<'_>),
) -> Result<PruneReport> {
    if calibration.is_empty() {
        return Err(OptimaError::Empty("no calibration sequences".into()));
    }
    if let Some(selection) = &settings.held_out {
        if settings.update.is_none() {
            return Err(OptimaError::InvalidSetting(
                "choosing the damping on held-out tokens needs a weight update (not --solver none)".into(),
            ));
        }
        selection.validate(calibration.len())?;
    }
    if let Some(refine) = &settings.refine {
        if matches!(settings.update, None | Some(SolverSpec::SparseGpt(_))) {
            return Err(OptimaError::InvalidSetting(
                "mask refinement needs an update by a QP solver (not --solver none or sparsegpt)".into(),
            ));
        }
        refine.check()?;
    }
    super::allocation::check(settings)?;
    let start = Instant::now();
    let par = settings.parallelism;
    let mut report = PruneReport { calibration_tokens: calibration.iter().map(Vec::len).sum(), ..Default::default() };
    let blocks = settings.max_blocks.map_or(model.blocks.len(), |b| b.min(model.blocks.len()));
    // The device (one context for the Hessians and the solver) and the solver are made once,
    // before any work.
    let device = Compute::open(settings.device)?;
    let solver: Option<Arc<dyn QpSolver + Send + Sync>> =
        settings.update.as_ref().map(|spec| device.solver(spec)).transpose()?.map(Arc::from);
    let seq_len = calibration.iter().map(Vec::len).max().unwrap_or(0);
    let (plan, memory, activations_memory) = plan_with_needs(&model.config, calibration.len(), seq_len, settings)?;
    // Every spill folder is unique per run as well as per process (see `scratch` below).
    let run = NEXT_RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let spill = |b: usize| {
        plan.activations_on_disk
            .then(|| std::env::temp_dir().join(format!("optima-activations-{}-{run}-{b}", std::process::id())))
    };
    let dense = settings.objective == Objective::Dense;
    if dense && settings.update.is_none() {
        return Err(OptimaError::InvalidSetting(
            "the dense objective shapes the weight update; with no update (--solver none) it has nothing to fit".into(),
        ));
    }
    // A non-uniform allocation's dense pass, on the dense model (before a resume replaces its
    // weights), within the plan: one block's stream and one layer's scores at a time, less than
    // the pruning pass holds.
    let allocation_spill = |tag: &str, b: usize| {
        plan.activations_on_disk
            .then(|| std::env::temp_dir().join(format!("optima-{tag}-{}-{run}-{b}", std::process::id())))
    };
    let allotment = super::allocation::allot(model, calibration, settings, blocks, &allocation_spill, &mut progress)?;
    report.allocation = allotment.as_ref().map(|a| a.record.clone());
    // The dense model's inputs to the first block this run prunes, from the dense weights (before
    // a resume replaces them): the checkpoint keeps only the pruned inputs.
    let mut dense_inputs = if dense {
        let first = match checkpoint {
            Some(c) => c.blocks_done()?.unwrap_or(0).min(blocks),
            None => 0,
        };
        let t = Instant::now();
        let spill_dense = plan
            .activations_on_disk
            .then(|| std::env::temp_dir().join(format!("optima-dense-{}-{run}", std::process::id())));
        let store = ActivationStore::build(calibration.len(), spill_dense, |s| {
            let seq =
                calibration.get(s).ok_or_else(|| OptimaError::Internal(format!("no calibration sequence {s}")))?;
            let mut x = model.embed(seq)?;
            for b in 0..first {
                x = model.block_forward(b, x.view(), None)?;
            }
            Ok(x)
        })?;
        report.forward_seconds += t.elapsed().as_secs_f64();
        Some(store)
    } else {
        None
    };
    let resumed = match checkpoint {
        Some(c) => c.resume(model)?,
        None => None,
    };
    let (first, mut xs) = match resumed {
        Some(state) => {
            [report.forward_seconds, report.hessian_seconds, report.mask_seconds, report.solve_seconds] = state.seconds;
            report.layers = state.layers;
            let first = state.blocks_done.min(blocks);
            (first, ActivationStore::read_from(&state.inputs, state.sequences, spill(first))?)
        }
        None => {
            let t = Instant::now();
            let xs = ActivationStore::build(calibration.len(), spill(0), |s| {
                calibration.get(s).map_or_else(|| Err(OptimaError::Empty("calibration".into())), |seq| model.embed(seq))
            })?;
            report.forward_seconds += t.elapsed().as_secs_f64();
            if let Some(c) = checkpoint {
                c.save(model, 0, &xs, &[], [report.forward_seconds, 0.0, 0.0, 0.0])?;
            }
            (0, xs)
        }
    };
    if let (true, Some(c)) = (first > 0, checkpoint) {
        progress(PruneEvent::Resumed { first_block: first, blocks, checkpoint: c.dir() });
    }
    for b in first..blocks {
        progress(PruneEvent::BlockStarted { block: b, blocks });
        let config = model.config;
        // The block as it was: the dense stream's weights, and with the parallel order the
        // weights every stage is calibrated with.
        let original = model.blocks.get(b).cloned().ok_or_else(|| OptimaError::Internal(format!("no block {b}")))?;
        // Unique per run as well as per process: two runs in one process (tests, a library caller
        // pruning two models at once) must never share, or delete, each other's spill folders.
        let scratch = |tag: &str| {
            plan.activations_on_disk.then(|| {
                let name = format!("optima-{tag}-{}-{run}-{b}", std::process::id());
                std::env::temp_dir().join(name)
            })
        };
        let mut pruned = Stream::new(&xs, scratch("pruned"));
        let mut dense_stream = dense_inputs.as_ref().map(|xd| Stream::new(xd, scratch("dense")));
        let mut calibrated: Vec<Calibrated> = Vec::new();
        for stage in LinearInput::ALL {
            let dim = stage.dim(&config);
            let mut accumulator = match &dense_stream {
                _ if settings.diagonal_only() => StageAccumulator::Diagonal(DiagonalAccumulator::new(dim)),
                None => StageAccumulator::Layer(device.accumulator(dim, par, settings.hessian_precision)?),
                Some(_) => StageAccumulator::Dense(CrossAccumulator::new(dim, par)),
            };
            let mut held_out_accumulator = settings
                .held_out
                .as_ref()
                .map(|_| HeldOutAccumulator::new(dim, dense_stream.is_some(), par, settings.hessian_precision));
            let current = match settings.order {
                InBlockOrder::Sequential => model.blocks.get(b).unwrap_or(&original),
                InBlockOrder::Parallel => &original,
            };
            let seconds = run_stage(
                &config,
                stage,
                (&mut pruned, current),
                dense_stream.as_mut().map(|s| (s, &original)),
                &mut accumulator,
                settings.held_out.as_ref().zip(held_out_accumulator.as_mut()),
            )
            .map_err(|e| located(e, b, "calibration activations"))?;
            let t = Instant::now();
            let failed = |e| located(e, b, &format!("{stage:?} Hessian"));
            let statistics = accumulator.finish(settings.percdamp).map_err(failed)?;
            let held_out = held_out_accumulator.map(|a| a.finish().map_err(failed)).transpose()?;
            report.forward_seconds += seconds.forward;
            report.hessian_seconds += seconds.hessian + t.elapsed().as_secs_f64();
            calibrated.push(Calibrated { block: b, stage, statistics, held_out });
            if settings.order == InBlockOrder::Sequential || stage == LinearInput::MlpHidden {
                for layers in calibrated.drain(..) {
                    prune_stage(
                        model,
                        &layers,
                        settings,
                        allotment.as_ref(),
                        &solver,
                        &memory,
                        activations_memory,
                        &mut report,
                        &mut progress,
                    )?;
                }
            }
        }
        // The next block's inputs, from this block with its pruned weights.
        let t = Instant::now();
        let next = match settings.order {
            InBlockOrder::Sequential => {
                let block = model.blocks.get(b).ok_or_else(|| OptimaError::Internal(format!("no block {b}")))?;
                pruned.finish(block, &config, spill(b + 1))?
            }
            InBlockOrder::Parallel => {
                drop(pruned);
                ActivationStore::build(xs.len(), spill(b + 1), |seq| model.block_forward(b, xs.get(seq)?.view(), None))?
            }
        };
        let next_dense = dense_stream.map(|s| s.finish(&original, &config, scratch("dense-next"))).transpose()?;
        xs = next;
        if next_dense.is_some() {
            dense_inputs = next_dense;
        }
        report.forward_seconds += t.elapsed().as_secs_f64();
        if let Some(c) = checkpoint {
            let seconds = [report.forward_seconds, report.hessian_seconds, report.mask_seconds, report.solve_seconds];
            c.save(model, b + 1, &xs, &report.layers, seconds)?;
        }
        progress(PruneEvent::BlockFinished { block: b, blocks });
    }
    report.mean_error_before = report.mean_over_layers(|l| l.error_before);
    report.mean_error_after = report.mean_over_layers(|l| l.error_after);
    report.total_seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// One calibrated stage of a block: the Hessian its layers share (with the dense objective the
/// cross term), or its diagonal alone, and the held-out statistics when dampings are chosen on
/// them.
struct Calibrated {
    block: usize,
    stage: LinearInput,
    statistics: StageStatistics,
    held_out: Option<HeldOut>,
}

/// Masks and updates every layer that reads `layers.stage`'s input, in place, and records them.
#[allow(clippy::too_many_arguments)] // The driver's state, passed explicitly rather than bundled.
fn prune_stage(
    model: &mut LlamaModel,
    layers: &Calibrated,
    settings: &PruneSettings,
    allotment: Option<&Allotment>,
    solver: &Option<Arc<dyn QpSolver + Send + Sync>>,
    memory: &BlockMemory,
    activations_memory: Bytes,
    report: &mut PruneReport,
    progress: &mut impl FnMut(PruneEvent<'_>),
) -> Result<()> {
    let b = layers.block;
    for &kind in layers.stage.kinds() {
        progress(PruneEvent::LayerStarted { block: b, kind });
        let solve_budget = settings.memory_budget.map(|budget| {
            let whole_layer = memory.layers.iter().find(|(k, ..)| *k == kind).map_or(Bytes(0), |(_, w, _)| *w);
            let used = memory.shared + activations_memory + whole_layer;
            Bytes(budget.0.saturating_sub(used.0))
        });
        let block = model.blocks.get_mut(b).ok_or_else(|| OptimaError::Internal(format!("no block {b}")))?;
        let pattern = match allotment {
            Some(a) => a.pattern(b, kind)?,
            None => settings.pattern,
        };
        let record = match &layers.statistics {
            StageStatistics::Diagonal(diagonal) => {
                mask_layer(b, kind, diagonal, pattern, settings.masker, block.weight_mut(kind))
            }
            StageStatistics::Hessian { hessian, cross } => {
                let fit = LayerFit {
                    weight: to_f64(block.weight(kind)),
                    hessian: hessian.clone(),
                    cross: cross.as_ref(),
                    held_out: layers.held_out.as_ref(),
                    pattern,
                };
                let update = LayerUpdate { solver: solver.clone(), budget: solve_budget };
                prune_layer(b, kind, fit, settings, update, block.weight_mut(kind))
            }
        }
        .map_err(|e| located(e, b, kind.short_name()))?;
        report.mask_seconds += record.mask_seconds;
        report.solve_seconds += record.solve_seconds;
        report.layers.push(record);
    }
    Ok(())
}

/// Where a run computes: the CPU, or one opened CUDA device that its Hessians and its solver share.
enum Compute {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda(Arc<optima::backend::cuda::CudaBackend>),
}

impl Compute {
    fn open(device: Device) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Self::Cpu),
            #[cfg(feature = "cuda")]
            Device::Cuda { ordinal } => Ok(Self::Cuda(optima::backend::cuda::CudaBackend::new(ordinal)?)),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda { .. } => Err(optima::backend::cuda_not_compiled()),
        }
    }

    fn solver(&self, spec: &SolverSpec) -> Result<Box<dyn QpSolver + Send + Sync>> {
        match self {
            Self::Cpu => spec.build(Device::Cpu),
            #[cfg(feature = "cuda")]
            Self::Cuda(backend) => spec.build_on(backend.clone()),
        }
    }

    fn accumulator(&self, n: usize, par: Parallelism, precision: HessianPrecision) -> Result<DeviceHessianAccumulator> {
        match self {
            Self::Cpu => Ok(DeviceHessianAccumulator::cpu(n, par, precision)),
            #[cfg(feature = "cuda")]
            Self::Cuda(backend) => DeviceHessianAccumulator::cuda(backend.clone(), n, precision),
        }
    }
}

fn located(e: OptimaError, block: usize, what: &str) -> OptimaError {
    match e {
        OptimaError::Numerical(msg) => OptimaError::Numerical(format!("block {block} {what}: {msg}")),
        OptimaError::Device(msg) => OptimaError::Device(format!("block {block} {what}: {msg}")),
        OptimaError::NonFinite { what: w, row, col, value } => {
            OptimaError::NonFinite { what: format!("block {block} {what}: {w}"), row, col, value }
        }
        other => other,
    }
}
