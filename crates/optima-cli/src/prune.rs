//! `optima prune`: prune a Llama model (GGUF or Hugging Face) block by block and write it out.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use optima::allocation::{AllocationMethod, AllocationSettings};
use optima::backend::Device;
use optima::hessian::HessianPrecision;
use optima::mask::WarmStart;
use optima::memory::Bytes;
use optima::solve::SolverSpec;
use optima::{OptimaError, Parallelism, SparsityPattern};
use optima_cli::solver_flags::SolverFlags;
use optima_llm::calibration::{
    calibration_sequences, calibration_starts, held_out_calibration_windows, read_text, skip_chars,
};
use optima_llm::checkpoint::Checkpoint;
use optima_llm::model_file::load_model;
use optima_llm::perplexity::perplexity;
use optima_llm::preset::{Preset, Recipe};
use optima_llm::prune::{InBlockOrder, MaskerChoice, Objective, PruneSettings, plan_memory, prune_model_resumable};
use serde_json::json;

use crate::output::{DTYPE_HELP, Output};

mod summary;
use summary::{dampings_chosen, forward_gflop, layer_error_line, refinement_summary};

#[derive(Args)]
pub struct PruneArgs {
    /// The model to prune: a GGUF file, or a Hugging Face folder (or its config.json).
    #[arg(long)]
    model: PathBuf,
    /// Calibration text: a file (gzip allowed) or a folder of text files.
    #[arg(long)]
    calib: PathBuf,
    /// Sparsity pattern: 0.5, 0.5/layer, 2:4, …
    #[arg(long, default_value = "0.5")]
    pattern: SparsityPattern,
    /// A published recipe: sparsegpt (its mask and update), wanda (its mask, no update) or
    /// optima-paper (Wanda's mask, pdhg at 1e-2, an update kept only where it lowers the
    /// calibration loss). Flags given explicitly override it. Without one: wanda + auto,
    /// layers in order inside each block, dampings chosen on held-out calibration sequences.
    #[arg(long)]
    preset: Option<Preset>,
    /// Mask selection: magnitude, wanda or sparsegpt [default: the preset's, else wanda].
    #[arg(long)]
    masker: Option<MaskerChoice>,
    /// Weight update: none, sparsegpt, direct, auto, dual-pcg, admm, pcg or pdhg [default: the
    /// preset's, else auto].
    #[arg(long)]
    solver: Option<String>,
    /// What the update fits: layer (each layer's own output on its pruned-model inputs) or dense
    /// (the dense model's output) [default: the preset's, layer].
    #[arg(long)]
    objective: Option<Objective>,
    /// Which activations a block's later layers are calibrated on: sequential (o_proj on the
    /// pruned q/k/v's attention, down_proj on the pruned gate/up) or parallel (all on the block's
    /// unpruned activations) [default: the preset's, sequential].
    #[arg(long)]
    in_block: Option<InBlockOrder>,
    /// Hold out one calibration sequence in N, choose each layer's update damping from
    /// --damping-grid by the error on them, and keep an update only where it beats the mask's
    /// own weights there; 0 turns it off [default: the preset's, else 8 (off with fewer than 8
    /// calibration sequences or no update)].
    #[arg(long)]
    held_out: Option<usize>,
    /// Relative dampings tried per layer with --held-out, comma-separated
    /// [default: 0.01,0.03,0.1,0.3].
    #[arg(long, value_delimiter = ',')]
    damping_grid: Option<Vec<f64>>,
    /// Keep a layer's update only where it lowers the calibration loss [default: the preset's,
    /// else off].
    #[arg(long)]
    keep_only_improving: Option<bool>,
    /// Refine each layer's mask with the solver in the loop: at most K ADMM iterations on the
    /// ℓ0-constrained layer problem from the exact fit on the masker's mask; the starting mask
    /// then competes on the held-out tokens (without them, each row keeps the support with the
    /// lower exact objective); 0 turns it off [default: 60 without a preset, else off].
    #[arg(long, value_name = "K")]
    refine: Option<usize>,
    /// The first ADMM penalty of --refine, relative to the normalized Hessian's unit diagonal
    /// [default: 0.1].
    #[arg(long)]
    refine_rho: Option<f64>,
    /// Where --refine starts ADMM: `exact` (the exact fit on the masker's mask) or `masked` (the
    /// masked weights, one solve per layer less) [default: exact].
    #[arg(long, value_name = "exact|masked")]
    refine_warm_start: Option<String>,
    /// The damping --refine's ADMM searches at: `held-out` (the one --held-out's grid chose for
    /// the masker's mask, per layer) or `run` (--damping) [default: held-out with --held-out].
    #[arg(long, value_name = "held-out|run")]
    refine_damping: Option<String>,
    /// How the pattern's sparsity is allotted across layers, at exactly the uniform pattern's
    /// pruned count: uniform, owl (layers of blocks with more outlier scores pruned less) or
    /// equalized (equal marginal diagonal error per pruned weight); unstructured patterns only.
    #[arg(long, default_value = "uniform")]
    allocation: AllocationMethod,
    /// OWL's λ: ratios spread over ±λ around the pattern's [default: 0.08].
    #[arg(long)]
    owl_lambda: Option<f64>,
    /// OWL's M: a score is an outlier above M times its block's mean [default: 5].
    #[arg(long)]
    owl_threshold: Option<f64>,
    /// No layer's allotted ratio strays further than this from the pattern's [default: 0.1].
    #[arg(long)]
    allocation_max_deviation: Option<f64>,
    /// Calibration sequences.
    #[arg(long, default_value_t = 32)]
    calib_seqs: usize,
    /// Tokens per calibration sequence.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Seed of the calibration sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Relative Hessian damping [default: the preset's, 0.01].
    #[arg(long)]
    damping: Option<f64>,
    /// Relative KKT tolerance of iterative solvers [default: 1e-6; pdhg keeps its own 1e-2].
    #[arg(long)]
    tol: Option<f64>,
    /// Prune only the first N blocks (the rest stay dense), e.g. for a quick check.
    #[arg(long)]
    max_blocks: Option<usize>,
    /// Also write every layer's problem (weights, undamped Hessian, mask) into this folder as
    /// `blk.B.KIND.safetensors`, for `optima solve --problem` and `optima bench --problem`.
    #[arg(long)]
    save_problems: Option<PathBuf>,
    /// Device of the weight updates: cpu, cuda or cuda:N (cuda runs auto, direct and pcg; it needs
    /// a build with `--features cuda` and a GPU).
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Where to write the pruned model: .gguf (from a GGUF model only; types: --dtype),
    /// .safetensors (f32 tensors under their GGUF names), or any other path: a Hugging Face
    /// folder that `transformers` loads.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, help = DTYPE_HELP)]
    dtype: Option<String>,
    /// Write GGUF weights as F16 (the same as --dtype f16).
    #[arg(long)]
    f16: bool,
    /// Write the per-layer report (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Measure every layer's error E (and the mean E of the summary) where the recipe needs only
    /// the Hessians' diagonal: a magnitude or Wanda mask with --solver none (e.g. --preset wanda)
    /// accumulates only diag(XᵀX)/N, much faster, and reports E as not measured (null in --json);
    /// this accumulates the whole Hessians instead. The pruned weights are the same either way.
    #[arg(long)]
    layer_error: bool,
    /// Arithmetic of the Hessians' products XᵀX: f64 (the default), or f32 products added into
    /// f64 sums, about twice as fast on a CPU (relative error about 1e-6 of max |H|, the diagonal
    /// kept exact; the dense objective's statistics stay f64).
    #[arg(long, default_value = "f64")]
    hessian_precision: HessianPrecision,
    /// Evaluate perplexity of the pruned model on this text; repeat the flag for several texts.
    #[arg(long)]
    eval: Vec<PathBuf>,
    /// Characters of the evaluation text to skip: one value for every text, or one per --eval,
    /// in order [default: 0].
    #[arg(long)]
    start_char: Vec<usize>,
    /// Evaluation windows.
    #[arg(long, default_value_t = 16)]
    windows: usize,
    /// Tokens per evaluation window.
    #[arg(long, default_value_t = 512)]
    window_len: usize,
    /// Also score the pruned model's perplexity on this many windows (of --window-len tokens) of
    /// the calibration text that no calibration sequence touches: a held-out score from the
    /// calibration distribution, to choose settings on without looking at any evaluation text.
    #[arg(long, default_value_t = 0, value_name = "N")]
    calib_eval_windows: usize,
    /// Print the run's summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Save progress here after every block [default: OUT.checkpoint when --out is given]; removed
    /// once the output is written.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Memory budget of the whole run (e.g. 8G): activations spill to disk and solves run in row
    /// chunks to fit; a run that cannot fit fails before any work.
    #[arg(long)]
    max_memory: Option<Bytes>,
    /// Continue a run that was interrupted, from the last block its checkpoint finished.
    #[arg(long)]
    resume: bool,
}

/// What the process holds besides the model, texts and the planned work: code, the tokenizer,
/// thread stacks, allocator arenas. Measured at 100–150 MiB on SmolLM2 (docs/robustness.md).
const RUNTIME_OVERHEAD: Bytes = Bytes(192 << 20);

pub fn run(args: PruneArgs) -> optima::Result<()> {
    let start = Instant::now();
    let par = Parallelism::from_threads(args.threads);
    // The forward passes and perplexity run on rayon's global pool: --threads bounds it too.
    if args.threads > 0 {
        // Fails only when a pool already exists (a second run in one process): keep that one.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global();
    }
    let recipe = resolve(&args, par)?;
    let allocation = allocation_settings(&args)?;
    let update = recipe.update.clone();
    if let Some(dir) = &args.save_problems {
        std::fs::create_dir_all(dir).map_err(|source| OptimaError::Io { path: dir.clone(), source })?;
    }
    let mut loaded = load_model(&args.model)?;
    let output = args
        .out
        .as_ref()
        .map(|out| Output::resolve(out, args.dtype.as_deref(), args.f16, loaded.gguf().is_some()))
        .transpose()?;
    let calib_text = read_text(&args.calib)?;
    let starts = match args.start_char.as_slice() {
        [] => vec![0; args.eval.len()],
        &[one] => vec![one; args.eval.len()],
        many if many.len() == args.eval.len() => many.to_vec(),
        many => {
            return Err(OptimaError::InvalidSetting(format!(
                "{} --start-char values for {} --eval texts: give one for all, or one per text",
                many.len(),
                args.eval.len()
            )));
        }
    };
    let eval_texts = args.eval.iter().map(|p| read_text(p)).collect::<optima::Result<Vec<_>>>()?;
    let t = Instant::now();
    let calib_tokens = loaded.tokenizer.encode(&calib_text)?;
    let calibration = calibration_sequences(&calib_tokens, args.calib_seqs, args.seq_len, args.seed)?;
    let calib_held_out = match args.calib_eval_windows {
        0 => None,
        windows => {
            let starts = calibration_starts(calib_tokens.len(), args.calib_seqs, args.seq_len, args.seed)?;
            Some(held_out_calibration_windows(&calib_tokens, &starts, args.seq_len, windows, args.window_len)?)
        }
    };
    let tokenize_seconds = t.elapsed().as_secs_f64();
    let settings = PruneSettings {
        pattern: args.pattern,
        masker: recipe.masker,
        update,
        objective: recipe.objective,
        order: recipe.order,
        percdamp: recipe.percdamp,
        held_out: recipe.held_out.clone(),
        keep_only_improving: recipe.keep_only_improving,
        refine: recipe.refine,
        parallelism: par,
        device: args.device,
        max_blocks: args.max_blocks,
        memory_budget: None,
        save_problems: args.save_problems.clone(),
        allocation,
        layer_error: args.layer_error,
        hessian_precision: args.hessian_precision,
    };
    // The budget covers the whole process: the file as mapped and its f32 weights come first.
    let file_bytes = loaded.source.mapped_bytes();
    let texts = calib_text.len() + eval_texts.iter().map(String::len).sum::<usize>() + 4 * calib_tokens.len();
    let loaded_bytes =
        Bytes(file_bytes) + Bytes::f32s(loaded.model.parameter_count()) + Bytes(texts as u64) + RUNTIME_OVERHEAD;
    let settings = match args.max_memory {
        Some(total) if loaded_bytes >= total => {
            return Err(OptimaError::MemoryBudget {
                what: "loading the model".into(),
                needed: loaded_bytes,
                budget: total,
            });
        }
        Some(total) => PruneSettings { memory_budget: Some(Bytes(total.0 - loaded_bytes.0)), ..settings },
        None => settings,
    };
    let plan = plan_memory(&loaded.model.config, calibration.len(), args.seq_len, &settings)?;
    if plan.activations_on_disk && !args.json {
        eprintln!("calibration activations spill to disk to fit --max-memory");
    }
    let checkpoint_dir = args.checkpoint.clone().or_else(|| {
        args.out.as_ref().map(|out| {
            let mut name = out.file_name().unwrap_or_default().to_os_string();
            name.push(".checkpoint");
            out.with_file_name(name)
        })
    });
    let checkpoint =
        checkpoint_dir.map(|dir| Checkpoint::new(dir, &loaded.model, &calibration, &settings)).transpose()?;
    match &checkpoint {
        Some(c) if c.exists() && !args.resume => {
            return Err(OptimaError::InvalidSetting(format!(
                "{} holds an unfinished run; pass --resume to continue it, or remove the folder",
                c.dir().display()
            )));
        }
        None if args.resume => {
            return Err(OptimaError::InvalidSetting("--resume needs --checkpoint DIR or --out".into()));
        }
        Some(c) if args.resume && !c.exists() && !args.json => {
            eprintln!("no checkpoint in {}; starting from the first block", c.dir().display())
        }
        _ => {}
    }
    if let Some(out) = &args.out {
        optima::io::remove_stale_temporaries(out);
    }
    let bar = crate::progress::PruneBar::new(!args.json);
    let report =
        prune_model_resumable(&mut loaded.model, &calibration, &settings, checkpoint.as_ref(), |e| bar.update(e))?;
    drop(bar);
    if let Some(output) = &output {
        output.write(&loaded)?;
    }
    let mut perplexities = Vec::new();
    for (text, &start) in eval_texts.iter().zip(&starts) {
        let tokens = loaded.tokenizer.encode(skip_chars(text, start))?;
        let bar = crate::progress::PerplexityBar::new(!args.json);
        perplexities.push(perplexity(&loaded.model, &tokens, args.windows, args.window_len, |p| bar.update(p))?);
    }
    let calib_ppl = match &calib_held_out {
        Some(tokens) => {
            let bar = crate::progress::PerplexityBar::new(!args.json);
            Some(perplexity(&loaded.model, tokens, args.calib_eval_windows, args.window_len, |p| bar.update(p))?)
        }
        None => None,
    };
    let ppl = perplexities.first().cloned();
    let evaluations: Vec<_> = args
        .eval
        .iter()
        .zip(&starts)
        .zip(&perplexities)
        .map(|((path, start), p)| json!({ "text": path.display().to_string(), "start_char": start, "perplexity": p }))
        .collect();
    let summary = json!({
        "model": args.model.display().to_string(),
        "pattern": args.pattern.to_string(),
        "preset": args.preset,
        "masker": recipe.masker,
        "solver": recipe.update.as_ref().map_or("none", |spec| spec.name()),
        "objective": recipe.objective,
        "in_block": recipe.order,
        "damping": recipe.percdamp,
        "hessian_precision": args.hessian_precision,
        "keep_only_improving": recipe.keep_only_improving,
        "held_out": recipe.held_out,
        "refine": recipe.refine,
        "refinement": refinement_summary(&report.layers),
        "allocation": allocation,
        "allocation_record": report.allocation,
        "global_sparsity": report.global_sparsity(),
        "dampings_chosen": dampings_chosen(&report.layers),
        "updates_kept": report.layers.iter().filter(|l| l.update_kept).count(),
        "device": args.device.to_string(),
        "calibration_sequences": calibration.len(),
        "seq_len": args.seq_len,
        "hessians": if settings.diagonal_only() { "diagonal" } else { "full" },
        "mean_error_before": report.mean_error_before,
        "mean_error_after": report.mean_error_after,
        "forward_gflop_per_s": forward_gflop(&loaded.model.config, &calibration, &recipe, settings.max_blocks)
            / report.forward_seconds.max(1e-9),
        "seconds": {
            "total": start.elapsed().as_secs_f64(),
            "pruning": report.total_seconds,
            "forward": report.forward_seconds,
            "hessian": report.hessian_seconds,
            "mask": report.mask_seconds,
            "solve": report.solve_seconds,
            "tokenize": tokenize_seconds,
        },
        "perplexity": ppl,
        "evaluations": evaluations,
        "calibration_held_out": calib_ppl,
        "memory_plan": plan,
        "out": args.out.as_ref().map(|p| p.display().to_string()),
    });
    if let (Some(c), Some(_)) = (&checkpoint, &args.out) {
        c.remove()?;
    }
    if let Some(path) = &args.report {
        let full = json!({ "summary": summary, "layers": report.layers });
        let text = serde_json::to_string_pretty(&full).map_err(|e| OptimaError::InvalidSetting(e.to_string()))?;
        optima::io::write_atomically(path, text.as_bytes())?;
    }
    if args.json {
        println!("{summary}");
    } else {
        println!(
            "pruned {} layers ({} {} + {}) in {:.1} s (forward {:.1} s, Hessians {:.1} s, masks {:.1} s, updates {:.1} s)",
            report.layers.len(),
            args.pattern,
            serde_json::to_string(&recipe.masker).unwrap_or_default().trim_matches('"'),
            recipe.update.as_ref().map_or("none", |spec| spec.name()),
            report.total_seconds,
            report.forward_seconds,
            report.hessian_seconds,
            report.mask_seconds,
            report.solve_seconds
        );
        println!("{}", layer_error_line(report.mean_error_before, report.mean_error_after));
        for (path, p) in args.eval.iter().zip(&perplexities) {
            println!(
                "perplexity {:.4} on {} over {} tokens ({} windows of {})",
                p.ppl,
                path.display(),
                p.tokens_scored,
                p.windows,
                p.window_len
            );
        }
        if let Some(p) = &calib_ppl {
            println!(
                "perplexity {:.4} on held-out calibration text over {} tokens ({} windows of {})",
                p.ppl, p.tokens_scored, p.windows, p.window_len
            );
        }
        if let Some(out) = &args.out {
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}

/// The allocation's settings from the flags, checked before the model is read.
fn allocation_settings(args: &PruneArgs) -> optima::Result<AllocationSettings> {
    let mut settings = AllocationSettings::default().method(args.allocation);
    if let Some(lambda) = args.owl_lambda {
        settings = settings.owl_lambda(lambda);
    }
    if let Some(threshold) = args.owl_threshold {
        settings = settings.owl_outlier_threshold(threshold);
    }
    if let Some(deviation) = args.allocation_max_deviation {
        settings = settings.max_deviation(deviation);
    }
    settings.check()?;
    if !settings.is_uniform() && matches!(args.pattern, SparsityPattern::NM { .. }) {
        return Err(OptimaError::InvalidSetting(format!(
            "--allocation {} varies unstructured ratios across layers; {} stays the same in every layer",
            settings.method, args.pattern
        )));
    }
    Ok(settings)
}

/// The run's recipe: the preset's (or the default pipeline's), with every flag given explicitly in
/// its place; the update is checked before the model is read, so a bad name or setting costs
/// nothing.
fn resolve(args: &PruneArgs, par: Parallelism) -> optima::Result<Recipe> {
    let mut recipe = args.preset.map_or_else(Recipe::default_pipeline, Preset::recipe);
    if let Some(masker) = args.masker {
        recipe.masker = masker;
    }
    if let Some(damping) = args.damping {
        recipe.percdamp = damping;
    }
    if let Some(objective) = args.objective {
        recipe.objective = objective;
    }
    match (args.held_out, &args.damping_grid) {
        (Some(0), Some(_)) => {
            return Err(OptimaError::InvalidSetting("--damping-grid needs --held-out N with N ≥ 2".into()));
        }
        (Some(0), None) => recipe.held_out = None,
        (Some(every), grid) => {
            let base = recipe.held_out.take().unwrap_or_default().every(every);
            recipe.held_out = Some(match grid {
                Some(grid) => base.grid(grid.clone()),
                None => base,
            });
        }
        (None, Some(grid)) => match recipe.held_out.take() {
            Some(selection) => recipe.held_out = Some(selection.grid(grid.clone())),
            None => return Err(OptimaError::InvalidSetting("--damping-grid needs --held-out N".into())),
        },
        (None, None) => {}
    }
    if let Some(order) = args.in_block {
        recipe.order = order;
    }
    if let Some(keep) = args.keep_only_improving {
        recipe.keep_only_improving = keep;
    }
    match (args.refine, args.refine_rho) {
        (Some(0), Some(_)) => {
            return Err(OptimaError::InvalidSetting("--refine-rho needs --refine K with K ≥ 1".into()));
        }
        (Some(0), None) => recipe.refine = None,
        (Some(iterations), rho) => {
            let base = recipe.refine.take().unwrap_or_default().iterations(iterations).parallelism(par);
            recipe.refine = Some(rho.map_or(base, |rho| base.rho_start(rho)));
        }
        (None, Some(rho)) => match recipe.refine.take() {
            Some(settings) => recipe.refine = Some(settings.rho_start(rho)),
            None => return Err(OptimaError::InvalidSetting("--refine-rho needs --refine K".into())),
        },
        (None, None) => {}
    }
    if let Some(warm) = args.refine_warm_start.as_deref() {
        let warm = match warm {
            "exact" => WarmStart::ExactSolution,
            "masked" => WarmStart::MaskedWeights,
            other => {
                return Err(OptimaError::InvalidSetting(format!(
                    "--refine-warm-start {other:?}: choose exact or masked"
                )));
            }
        };
        match recipe.refine.take() {
            Some(settings) => recipe.refine = Some(settings.warm_start(warm)),
            None => {
                return Err(OptimaError::InvalidSetting("--refine-warm-start needs refinement (--refine K)".into()));
            }
        }
    }
    if let Some(which) = args.refine_damping.as_deref() {
        let damps = match which {
            "held-out" => true,
            "run" => false,
            other => {
                return Err(OptimaError::InvalidSetting(format!("--refine-damping {other:?}: choose held-out or run")));
            }
        };
        match recipe.held_out.take() {
            Some(selection) => recipe.held_out = Some(selection.damps_refinement(damps)),
            None if !damps => {}
            None => return Err(OptimaError::InvalidSetting("--refine-damping held-out needs --held-out N".into())),
        }
    }
    if let Some(refine) = &recipe.refine {
        refine.check()?;
    }
    let flags = SolverFlags { tolerance: args.tol, parallelism: par, ..SolverFlags::default() };
    recipe.update = match (args.solver.as_deref(), recipe.update) {
        (Some("none"), _) | (None, None) => None,
        (Some(name), _) => Some(flags.spec(name, args.device)?),
        (None, Some(spec)) => {
            let spec = spec.parallelism(par);
            Some(match args.tol {
                Some(tol) => spec.tolerance(tol),
                None => spec,
            })
        }
    };
    // The default's refinement needs an exact update (not the mask alone, not SparseGPT's own);
    // given explicitly, the run refuses what cannot work.
    if args.refine.is_none() && matches!(recipe.update, None | Some(SolverSpec::SparseGpt(_))) {
        recipe.refine = None;
    }
    // The default's held-out choice needs an update and enough sequences to hold some out; given
    // explicitly, the run checks it (and refuses what cannot work).
    if args.held_out.is_none()
        && (recipe.update.is_none() || recipe.held_out.as_ref().is_some_and(|h| args.calib_seqs < h.every))
    {
        recipe.held_out = None;
    }
    if let Some(spec) = &recipe.update {
        spec.validate()?;
        if matches!(args.device, Device::Cuda { .. }) {
            spec.check_cuda()?;
        }
    }
    Ok(recipe)
}
