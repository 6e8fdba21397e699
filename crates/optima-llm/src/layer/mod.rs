//! One linear layer's pruning: its mask (refined with the solver in the loop if asked), its weight update (at the run's damping, or chosen from a
//! grid on held-out calibration tokens), and the record of what was done.

mod damping;

use std::sync::Arc;
use std::time::Instant;

use damping::{GridSample, choose_damping};

use ndarray::Array2;

use super::held_out::HeldOut;
use super::llama::LinearKind;
use super::report::{LayerRecord, RefinementRecord, StepObjectives, SupportErrors};
use super::settings::{MaskerChoice, PruneSettings};
use optima::backend::Parallelism;
use optima::error::{OptimaError, Result};
use optima::hessian::dense_target;
use optima::mask::{
    DiagonalMasker, MagnitudeMasker, MaskRefiner, Masker, Proposal, Refinement, SparseGptMasker, WandaMasker,
};
use optima::memory::Bytes;
use optima::problem::{Hessian, LayerProblem, Mask, RowStatus, SolveReport, SparsityPattern};
use optima::solve::{QpSolver, RowChunked, SolverSpec, SparseGptSettings, evaluate};

/// How one layer's weights are updated: the run's solver (none for mask-only) and the memory the
/// solve may use (`None`: unbounded).
pub(crate) struct LayerUpdate {
    pub(crate) solver: Option<Arc<dyn QpSolver + Send + Sync>>,
    pub(crate) budget: Option<Bytes>,
}

/// What one layer is fitted from.
pub(crate) struct LayerFit<'a> {
    /// The dense weights (m×n).
    pub(crate) weight: Array2<f64>,
    /// The Hessian of its fitted calibration tokens, damped with the run's damping.
    pub(crate) hessian: Hessian,
    /// The cross term `C` (dense objective): the update fits `W̃ = H⁻¹(C + δI)W`, not `W`.
    pub(crate) cross: Option<&'a Array2<f64>>,
    /// Held-out statistics, when the damping is chosen on held-out tokens.
    pub(crate) held_out: Option<&'a HeldOut>,
    /// The layer's pattern: the run's, at the layer's allotted ratio under a non-uniform
    /// allocation.
    pub(crate) pattern: SparsityPattern,
}

/// What the layer's update fits at `hessian`'s damping: `W`, or the dense target.
fn target(fit: &LayerFit<'_>, hessian: &Hessian, par: Parallelism) -> Result<Array2<f64>> {
    match fit.cross {
        Some(cross) => dense_target(fit.weight.view(), hessian, cross.view(), par),
        None => Ok(fit.weight.clone()),
    }
}

/// Masks and updates one layer; writes the result into `out` (pruned entries exactly 0).
pub(crate) fn prune_layer(
    block: usize,
    kind: LinearKind,
    fit: LayerFit<'_>,
    settings: &PruneSettings,
    update: LayerUpdate,
    out: &mut Array2<f32>,
) -> Result<LayerRecord> {
    let par: Parallelism = settings.parallelism;
    let t = Instant::now();
    let weight = target(&fit, &fit.hessian, par)?;
    let (start_mask, masker_weights): (Mask, Option<Array2<f64>>) = match settings.masker {
        MaskerChoice::Magnitude => (MagnitudeMasker.select(weight.view(), &fit.hessian, &fit.pattern)?, None),
        MaskerChoice::Wanda => (WandaMasker.select(weight.view(), &fit.hessian, &fit.pattern)?, None),
        MaskerChoice::SparseGpt => {
            let masker = SparseGptMasker::new(SparseGptSettings::default().parallelism(par));
            let (mask, updated) = masker.select_and_update(weight.view(), &fit.hessian, &fit.pattern)?;
            (mask, Some(updated))
        }
    };
    let solve = |problem: &LayerProblem| -> Result<(Array2<f64>, SolveReport)> {
        let (Some(spec), Some(solver)) = (&settings.update, &update.solver) else {
            return Err(OptimaError::Internal(format!("{kind}: no solver was made")));
        };
        let solution = match update.budget {
            Some(budget) => {
                let (rows, cols) = (problem.rows(), problem.cols());
                let what = format!("{kind} ({rows}×{cols}) with {}", spec.name());
                RowChunked::for_budget(solver.clone(), rows, cols, budget, &what)?.solve(problem, None)?
            }
            None => solver.solve(problem, None)?,
        };
        Ok((solution.weight, solution.report))
    };
    // With held-out tokens that damp the refinement, ADMM searches at the damping the grid chose
    // for the starting mask; otherwise at the run's.
    // The search's grid result on the starting mask is the update's answer on it, not solved twice.
    let mut search_best = match (&settings.refine, fit.held_out, settings.held_out.as_ref()) {
        (Some(_), Some(held_out), Some(selection)) if selection.damps_refinement => {
            let sample = GridSample::new(&fit, held_out);
            Some(sample.best(&sample.scorer(par)?, &selection.grid, &start_mask, &solve, par)?)
        }
        _ => None,
    };
    let search_damping = search_best.as_ref().map(|best| best.hessian.percdamp());
    let search_weight = search_best.as_ref().map(|best| target(&fit, &best.hessian, par)).transpose()?;
    let (search_weight, search_h) = match (&search_weight, &search_best) {
        (Some(w), Some(best)) => (w.view(), &best.hessian),
        _ => (weight.view(), &fit.hessian),
    };
    // With held-out tokens, ADMM's support (from the exact solution on the starting mask) is only
    // proposed: the held-out comparison below judges it against the starting mask. Without, the
    // certified path also solves ADMM's support exactly and keeps the better support per row.
    let refinement = match (&settings.refine, &update.solver) {
        (Some(refine), Some(solver)) => {
            let refiner = MaskRefiner::new(refine.parallelism(par), solver.clone())?;
            Some(match fit.held_out {
                Some(_) => Refined::Proposed(refiner.propose(search_weight, search_h, &fit.pattern, &start_mask)?),
                None => Refined::Certified(Box::new(refiner.refine(
                    weight.view(),
                    &fit.hessian,
                    &fit.pattern,
                    &start_mask,
                )?)),
            })
        }
        (Some(_), None) => return Err(OptimaError::Internal(format!("{kind}: refinement without a solver"))),
        (None, _) => None,
    };
    let mask_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let refined_mask = refinement.as_ref().map(|r| r.mask().clone()).filter(|mask| *mask != start_mask);
    // The problem the update solves, and (when refinement moved the mask) the starting mask's own,
    // which every fallback to the mask's own weights returns to.
    let (problem, start_problem) = match refined_mask {
        Some(mask) => (
            LayerProblem::new(weight.clone(), fit.hessian.clone(), mask)?,
            Some(LayerProblem::new(weight, fit.hessian.clone(), start_mask)?),
        ),
        None => (LayerProblem::new(weight, fit.hessian.clone(), start_mask)?, None),
    };
    let baseline_problem = start_problem.as_ref().unwrap_or(&problem);
    if let Some(dir) = &settings.save_problems {
        let path = dir.join(format!("blk.{block}.{}.safetensors", kind.short_name()));
        let undamped = problem.hessian().undamped();
        optima::io::write_problem_file(&path, problem.weight(), undamped.view(), Some(problem.mask()))?;
    }
    let m = problem.rows();
    let unit = |name: &str, weights: &Array2<f64>, problem: &LayerProblem, seconds: f64| -> Result<SolveReport> {
        let status = vec![RowStatus::Solved; m];
        let iterations = vec![usize::from(name != "none"); m];
        par.install(|| evaluate(name, problem, weights.view(), &iterations, &status, seconds, par))
    };
    // The mask's own weights: the masked W, on the starting mask.
    let mask_only = || -> Result<(Array2<f64>, SolveReport)> {
        let masked = baseline_problem.masked_weight();
        let report = unit("none", &masked, baseline_problem, 0.0)?;
        Ok((masked, report))
    };
    // Each answer: weights, report, whether an update is kept, the held-out record, and whether
    // the answer is on the starting mask rather than the refined one.
    let mut support_errors = None;
    let (new_weight, report, update_kept, held_out, on_start_mask) =
        match (&settings.update, masker_weights, fit.held_out) {
            (None, _, _) => {
                let (masked, report) = mask_only()?;
                (masked, report, false, None, true)
            }
            // SparseGPT's own update came with its mask.
            (Some(SolverSpec::SparseGpt(_)), Some(updated), None) => {
                let report = unit("sparsegpt", &updated, &problem, mask_seconds)?;
                let kept = !settings.keep_only_improving || report.objective < report.objective_mask_only;
                (updated, report, kept, None, false)
            }
            (Some(_), _, None) => {
                let (weights, report) = match &refinement {
                    Some(Refined::Certified(refined)) if start_problem.is_some() => {
                        (refined.weight.clone(), refined.report.clone())
                    }
                    _ => solve(&problem)?,
                };
                // Kept only where it beats the starting mask's own weights.
                let baseline_objective = match &start_problem {
                    Some(p) if settings.keep_only_improving => {
                        unit("none", &p.masked_weight(), p, 0.0)?.objective_mask_only
                    }
                    _ => report.objective_mask_only,
                };
                let kept = !settings.keep_only_improving || report.objective < baseline_objective;
                (weights, report, kept, None, false)
            }
            (Some(_), own, Some(held_out)) => {
                // A refinement searched at the chosen damping is judged there; else the whole grid.
                let chosen = search_damping.map(|d| [d]);
                let grid = match &chosen {
                    Some(d) => d.as_slice(),
                    None => settings.held_out.as_ref().map(|s| s.grid.as_slice()).unwrap_or_default(),
                };
                // The mask's own weights: SparseGPT's update where it chose the mask, else the masked W.
                let baseline_name = if own.is_some() { "sparsegpt" } else { "none" };
                let baseline = own.unwrap_or_else(|| baseline_problem.masked_weight());
                let alternative = start_problem.as_ref().map(LayerProblem::mask);
                let choice = choose_damping(
                    &fit,
                    &problem,
                    alternative,
                    search_best.take(),
                    grid,
                    &baseline,
                    held_out,
                    &solve,
                    par,
                )?;
                support_errors = choice.support_errors;
                if choice.record.error_update < choice.record.error_baseline {
                    (choice.weights, choice.report, true, Some(choice.record), choice.alternative)
                } else {
                    let report = unit(baseline_name, &baseline, baseline_problem, 0.0)?;
                    (baseline, report, false, Some(choice.record), true)
                }
            }
        };
    let (new_weight, report) = if settings.update.is_some() && !update_kept && held_out.is_none() {
        mask_only()?
    } else {
        (new_weight, report)
    };
    let on_start_mask = on_start_mask || !update_kept;
    let final_problem = if on_start_mask { baseline_problem } else { &problem };
    let solve_seconds = t.elapsed().as_secs_f64();
    if new_weight.iter().any(|v| !v.is_finite()) {
        return Err(OptimaError::Numerical(format!("{kind}: the update produced a non-finite weight")));
    }
    if out.dim() != new_weight.dim() {
        return Err(OptimaError::shape(
            kind.short_name(),
            format!("{:?}", out.dim()),
            format!("{:?}", new_weight.dim()),
        ));
    }
    ndarray::Zip::indexed(out).and(&new_weight).for_each(|(i, j), v, &w| {
        *v = if final_problem.mask().is_pruned(i, j) { 0.0 } else { w as f32 };
    });
    Ok(LayerRecord {
        block,
        layer: kind,
        ratio: fit.pattern.sparsity(),
        rows: m,
        cols: problem.cols(),
        sparsity: final_problem.mask().sparsity(),
        error_before: Some(report.error_before),
        error_after: Some(report.error_after),
        kkt_residual: Some(report.kkt_residual),
        iterations: report.iterations,
        failed_rows: report.failed_rows,
        chunks: report.chunks,
        update_kept,
        held_out,
        refinement: refinement.map(|r| r.record(!on_start_mask && start_problem.is_some(), support_errors)),
        mask_seconds,
        solve_seconds,
    })
}

/// Masks one layer from the diagonal of its input's Hessian alone, for a run that needs nothing
/// more ([`PruneSettings::diagonal_only`]): `masker`'s mask on the weights in `out`, whose pruned
/// entries become exactly 0 and the rest stay as they are — the bits [`prune_layer`] writes
/// without an update. The layer error `E` and the KKT residual are not measured (`None`).
pub(crate) fn mask_layer(
    block: usize,
    kind: LinearKind,
    diagonal: &[f64],
    pattern: SparsityPattern,
    masker: MaskerChoice,
    out: &mut Array2<f32>,
) -> Result<LayerRecord> {
    let t = Instant::now();
    let weight = out.mapv(f64::from);
    let mask = match masker {
        MaskerChoice::Magnitude => MagnitudeMasker.select_from_diagonal(weight.view(), diagonal, &pattern)?,
        MaskerChoice::Wanda => WandaMasker.select_from_diagonal(weight.view(), diagonal, &pattern)?,
        MaskerChoice::SparseGpt => {
            return Err(OptimaError::Internal(format!("{kind}: SparseGPT's mask needs the whole Hessian")));
        }
    };
    let mask_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    ndarray::Zip::indexed(&mut *out).for_each(|(i, j), v| {
        if mask.is_pruned(i, j) {
            *v = 0.0;
        }
    });
    Ok(LayerRecord {
        block,
        layer: kind,
        ratio: pattern.sparsity(),
        rows: mask.rows(),
        cols: mask.cols(),
        sparsity: mask.sparsity(),
        error_before: None,
        error_after: None,
        kkt_residual: None,
        iterations: 0,
        failed_rows: 0,
        chunks: 1,
        update_kept: false,
        held_out: None,
        refinement: None,
        mask_seconds,
        solve_seconds: t.elapsed().as_secs_f64(),
    })
}

/// A layer's refinement: ADMM's support alone, or certified by exact solves of both supports.
enum Refined {
    Proposed(Proposal),
    Certified(Box<Refinement>),
}

impl Refined {
    fn mask(&self) -> &Mask {
        match self {
            Refined::Proposed(p) => &p.mask,
            Refined::Certified(r) => &r.mask,
        }
    }

    fn record(self, kept: bool, held_out: Option<SupportErrors>) -> RefinementRecord {
        match self {
            Refined::Proposed(p) => RefinementRecord {
                iterations: p.iterations,
                seconds: p.seconds,
                rows_changed: p.rows_changed,
                kept,
                objectives: None,
                held_out,
            },
            Refined::Certified(r) => RefinementRecord {
                iterations: r.summary.iterations,
                seconds: r.summary.seconds,
                rows_changed: r.summary.rows_changed,
                kept,
                objectives: Some(StepObjectives {
                    start: r.summary.objective_start,
                    admm: r.summary.objective_admm,
                    refined: r.summary.objective,
                }),
                held_out,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::damping::GRID_SAMPLE_MIN_ROWS;
    use super::*;
    use crate::held_out::HeldOutSelection;
    use crate::settings::{InBlockOrder, Objective};
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn settings(grid: Vec<f64>) -> PruneSettings {
        PruneSettings {
            pattern: "0.5".parse().unwrap(),
            masker: MaskerChoice::Wanda,
            update: Some("direct".parse().unwrap()),
            objective: Objective::Layer,
            order: InBlockOrder::Sequential,
            percdamp: 0.01,
            held_out: Some(HeldOutSelection::default().grid(grid)),
            keep_only_improving: false,
            refine: None,
            parallelism: Parallelism::Sequential,
            device: optima::Device::Cpu,
            max_blocks: None,
            memory_budget: None,
            save_problems: None,
            allocation: optima::allocation::AllocationSettings::default(),
            layer_error: false,
            hessian_precision: Default::default(),
        }
    }

    /// Prunes a 6×12 layer fitted on 20 random tokens, choosing the damping on `held_out`.
    fn prune(held_out: Array2<f64>, grid: Vec<f64>) -> (LayerRecord, Array2<f32>, Array2<f64>) {
        prune_rows(6, held_out, grid)
    }

    fn prune_rows(rows: usize, held_out: Array2<f64>, grid: Vec<f64>) -> (LayerRecord, Array2<f32>, Array2<f64>) {
        prune_with(rows, Some(held_out), settings(grid))
    }

    fn prune_with(
        rows: usize,
        held_out: Option<Array2<f64>>,
        settings: PruneSettings,
    ) -> (LayerRecord, Array2<f32>, Array2<f64>) {
        let mut rng = StdRng::seed_from_u64(3);
        let x = Array2::from_shape_fn((20, 12), |_| rng.random_range(-1.0..1.0f64));
        let train = x.t().dot(&x) / 20.0;
        let weight = Array2::from_shape_fn((rows, 12), |_| rng.random_range(-1.0..1.0f64));
        let solver = settings.update.as_ref().unwrap().build(optima::Device::Cpu).unwrap();
        let held = held_out.map(HeldOut::of_layer);
        let fit = LayerFit {
            weight: weight.clone(),
            hessian: Hessian::new(train, settings.percdamp).unwrap(),
            cross: None,
            held_out: held.as_ref(),
            pattern: settings.pattern,
        };
        let mut out = Array2::<f32>::zeros((rows, 12));
        let update = LayerUpdate { solver: Some(Arc::from(solver)), budget: None };
        let record = prune_layer(0, LinearKind::Q, fit, &settings, update, &mut out).unwrap();
        (record, out, weight)
    }

    #[test]
    fn held_out_tokens_like_the_fitted_ones_choose_the_exact_fit() {
        // Held-out statistics equal to the fitted ones: the undamped exact solve is strictly best.
        let mut rng = StdRng::seed_from_u64(3);
        let x = Array2::from_shape_fn((20, 12), |_| rng.random_range(-1.0..1.0f64));
        let (record, ..) = prune(x.t().dot(&x) / 20.0, vec![1.0, 0.0, 0.1]);
        let chosen = record.held_out.unwrap();
        assert_eq!(chosen.damping, 0.0);
        assert!(record.update_kept && chosen.error_update < chosen.error_baseline, "{chosen:?}");
    }

    #[test]
    fn held_out_tokens_that_punish_any_move_keep_the_mask_alone() {
        // H = I on the held-out tokens: the error is ‖ŵ − w‖², so the most damped update is the
        // best candidate, and the masked weights (which move no kept weight) beat every update.
        let (record, out, weight) = prune(Array2::eye(12), vec![0.0, 10.0, 0.1]);
        let chosen = record.held_out.unwrap();
        assert_eq!(chosen.damping, 10.0);
        assert!(!record.update_kept && chosen.error_baseline < chosen.error_update, "{chosen:?}");
        for ((i, j), &v) in out.indexed_iter() {
            assert!(v == 0.0 || v == weight[[i, j]] as f32, "kept weights stay dense at ({i}, {j})");
        }
        assert_eq!(record.error_after, record.error_before, "the report is the mask's own");
        assert!(record.error_before.is_some(), "a run with an update measures E");
    }

    #[test]
    fn large_layers_score_the_grid_on_a_row_sample_and_solve_every_row_at_the_choice() {
        let mut rng = StdRng::seed_from_u64(3);
        let x = Array2::from_shape_fn((20, 12), |_| rng.random_range(-1.0..1.0f64));
        let train = x.t().dot(&x) / 20.0;
        let rows = GRID_SAMPLE_MIN_ROWS + 5;
        let (record, out, weight) = prune_rows(rows, train.clone(), vec![1.0, 0.0, 0.1]);
        let chosen = record.held_out.unwrap();
        assert_eq!(chosen.damping, 0.0);
        assert!(record.update_kept);
        // Every row is the exact solution at the chosen damping, not only the sampled ones.
        let hessian = Hessian::new(train, 0.0).unwrap();
        let mask = optima::mask::WandaMasker
            .select(weight.view(), &Hessian::new(hessian.undamped(), 0.01).unwrap(), &"0.5".parse().unwrap())
            .unwrap();
        let problem = LayerProblem::new(weight, hessian, mask).unwrap();
        let want =
            "direct".parse::<SolverSpec>().unwrap().build(optima::Device::Cpu).unwrap().solve(&problem, None).unwrap();
        assert_eq!(out, want.weight.mapv(|v| v as f32));
    }

    #[test]
    fn a_refined_mask_is_kept_only_where_the_held_out_tokens_prefer_it() {
        let mut rng = StdRng::seed_from_u64(3);
        let x = Array2::from_shape_fn((20, 12), |_| rng.random_range(-1.0..1.0f64));
        let train = x.t().dot(&x) / 20.0;
        let plain = settings(vec![0.0]);
        let refined = PruneSettings { refine: Some(optima::mask::RefineSettings::default()), ..plain.clone() };
        // Held-out tokens like the fitted ones: the refined support's lower objective carries over.
        let (before, ..) = prune_with(8, Some(train.clone()), plain.clone());
        let (after, out, _) = prune_with(8, Some(train.clone()), refined.clone());
        let record = after.refinement.expect("the run refined its masks");
        let errors = record.held_out.expect("the held-out comparison of both supports is recorded");
        assert!(record.objectives.is_none(), "with held-out tokens ADMM's support is only proposed");
        assert!(record.kept && errors.refined < errors.start, "{record:?}");
        assert!(after.held_out.unwrap().error_update <= before.held_out.unwrap().error_update);
        for row in out.rows() {
            assert_eq!(row.iter().filter(|&&v| v == 0.0).count(), 6, "the pattern holds exactly");
        }
        // Without held-out tokens the refinement is certified: each step's exact objective, and
        // row by row the lower of the two.
        let (certified, out, _) = prune_with(8, None, refined.clone());
        let record = certified.refinement.expect("the run refined its masks");
        let steps = record.objectives.expect("the certified path records its objectives");
        assert!(record.held_out.is_none());
        assert!(
            steps.refined <= steps.start && steps.refined <= steps.admm && steps.refined < steps.start,
            "{steps:?}"
        );
        for row in out.rows() {
            assert_eq!(row.iter().filter(|&&v| v == 0.0).count(), 6, "the pattern holds exactly");
        }
        // Held-out tokens that punish every move of a kept weight: nothing beats the mask alone,
        // which is on the masker's own mask.
        let (punished, out, weight) = prune_with(8, Some(Array2::eye(12)), refined);
        assert!(!punished.update_kept && !punished.refinement.unwrap().kept);
        let wanda = optima::mask::WandaMasker
            .select(weight.view(), &Hessian::new(x.t().dot(&x) / 20.0, 0.01).unwrap(), &"0.5".parse().unwrap())
            .unwrap();
        for ((i, j), &v) in out.indexed_iter() {
            assert_eq!(v == 0.0, wanda.is_pruned(i, j), "({i}, {j}) is on Wanda's mask");
        }
    }

    #[test]
    fn the_refinement_searches_at_the_damping_the_held_out_grid_chose_for_the_starting_mask() {
        let mut rng = StdRng::seed_from_u64(3);
        let x = Array2::from_shape_fn((20, 12), |_| rng.random_range(-1.0..1.0f64));
        let train = x.t().dot(&x) / 20.0;
        // Held-out tokens with energy in every direction the fit has little of: moving far from
        // the dense weights costs there, so the grid's larger damping wins on the starting mask.
        let held_out = &train + &(Array2::<f64>::eye(12) * 0.5);
        let grid = vec![0.0, 1.0];
        let refine = optima::mask::RefineSettings::default().parallelism(Parallelism::Sequential);
        let searched = PruneSettings { refine: Some(refine), ..settings(grid) };
        let mut at_run = searched.clone();
        at_run.held_out = at_run.held_out.map(|h| h.damps_refinement(false));
        let (record, out, weight) = prune_with(8, Some(held_out.clone()), searched);
        let (record_run, ..) = prune_with(8, Some(held_out), at_run);
        // ADMM's proposal, independently, from Wanda's mask at each damping.
        let pattern: SparsityPattern = "0.5".parse().unwrap();
        let wanda = WandaMasker.select(weight.view(), &Hessian::new(train.clone(), 0.01).unwrap(), &pattern).unwrap();
        let solver: Arc<dyn QpSolver + Send + Sync> =
            Arc::from("direct".parse::<SolverSpec>().unwrap().build(optima::Device::Cpu).unwrap());
        let refiner = MaskRefiner::new(refine, solver).unwrap();
        let propose = |damping: f64| {
            refiner.propose(weight.view(), &Hessian::new(train.clone(), damping).unwrap(), &pattern, &wanda).unwrap()
        };
        let (at_one, at_run_damping) = (propose(1.0), propose(0.01));
        assert_ne!(at_one.mask, at_run_damping.mask, "the case tells the two dampings apart");
        let chosen = record.held_out.unwrap();
        assert_eq!(chosen.damping, 1.0, "{chosen:?}");
        let refinement = record.refinement.unwrap();
        assert_eq!(refinement.rows_changed, at_one.rows_changed);
        assert_eq!(record_run.refinement.unwrap().rows_changed, at_run_damping.rows_changed);
        // The answer is on the searched support where it won, else on Wanda's.
        let on = if refinement.kept && record.update_kept { &at_one.mask } else { &wanda };
        for ((i, j), &v) in out.indexed_iter() {
            assert_eq!(v == 0.0, on.is_pruned(i, j), "({i}, {j})");
        }
    }
}
