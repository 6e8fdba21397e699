//! A layer's damping chosen on held-out calibration tokens (docs/math.md, "Damping from held-out
//! tokens"): the grid scored on a sample of the layer's rows, the winner solved on every row.

use ndarray::{Array2, Axis};

use super::{LayerFit, target};
use crate::held_out::{HeldOut, HeldOutRecord, Scorer};
use crate::report::SupportErrors;
use optima::backend::Parallelism;
use optima::error::{OptimaError, Result};
use optima::problem::{Hessian, LayerProblem, Mask, SolveReport};

/// A layer's solve: weights and report.
pub(super) type Solve<'a> = dyn Fn(&LayerProblem) -> Result<(Array2<f64>, SolveReport)> + 'a;

/// Layers with at least this many rows score the damping grid on every [`GRID_ROW_STRIDE`]-th row
/// and solve all rows once, at the chosen damping; smaller layers score every row.
pub(super) const GRID_SAMPLE_MIN_ROWS: usize = 256;
/// The row stride of the grid's sample.
pub(super) const GRID_ROW_STRIDE: usize = 4;

/// The held-out choice of one layer's update.
pub(super) struct Choice {
    pub(super) weights: Array2<f64>,
    pub(super) report: SolveReport,
    pub(super) record: HeldOutRecord,
    /// Whether the alternative mask won (the starting mask, against a refined one).
    pub(super) alternative: bool,
    /// With an alternative: the held-out errors on the row sample at the chosen damping, of the
    /// update on the alternative (starting) mask and on the main (refined) one.
    pub(super) support_errors: Option<SupportErrors>,
}

/// A layer's held-out grid sample: the rows its damping grid is scored on (every
/// [`GRID_ROW_STRIDE`]-th row of a large layer, else all) and their fit.
pub(super) struct GridSample<'a> {
    rows: Vec<usize>,
    fit: LayerFit<'a>,
    held_out: &'a HeldOut,
}

/// The best damping of a grid on a [`GridSample`]: its error there, Hessian, weights and report.
pub(super) struct GridBest {
    pub(super) error: f64,
    pub(super) hessian: Hessian,
    pub(super) weights: Array2<f64>,
    pub(super) report: SolveReport,
}

impl<'a> GridSample<'a> {
    pub(super) fn new(fit: &LayerFit<'a>, held_out: &'a HeldOut) -> Self {
        let m = fit.weight.nrows();
        let rows: Vec<usize> =
            if m >= GRID_SAMPLE_MIN_ROWS { (0..m).step_by(GRID_ROW_STRIDE).collect() } else { (0..m).collect() };
        let fit = LayerFit {
            weight: fit.weight.select(Axis(0), &rows),
            hessian: fit.hessian.clone(),
            cross: fit.cross,
            held_out: None,
            pattern: fit.pattern,
        };
        Self { rows, fit, held_out }
    }

    /// The held-out scorer of the sampled rows.
    pub(super) fn scorer(&self, par: Parallelism) -> Result<Scorer<'_>> {
        self.held_out.scorer(self.fit.weight.view(), par)
    }

    /// Whether the sample leaves rows out.
    fn sampled(&self, m: usize) -> bool {
        self.rows.len() < m
    }

    /// `mask`'s rows of the sample.
    fn mask(&self, mask: &Mask) -> Mask {
        Mask::from_fn(self.rows.len(), mask.cols(), |i, j| self.rows.get(i).is_some_and(|&r| mask.is_pruned(r, j)))
    }

    /// The update on `mask`'s sampled rows at each damping of `grid`; the one with the lowest
    /// held-out error.
    pub(super) fn best(
        &self,
        scorer: &Scorer<'_>,
        grid: &[f64],
        mask: &Mask,
        solve: &Solve<'_>,
        par: Parallelism,
    ) -> Result<GridBest> {
        let sample_mask = self.mask(mask);
        let mut best: Option<GridBest> = None;
        for &damping in grid {
            let hessian = Hessian::new(self.fit.hessian.undamped(), damping)?;
            let candidate = LayerProblem::new(target(&self.fit, &hessian, par)?, hessian.clone(), sample_mask.clone())?;
            let (weights, report) = solve(&candidate)?;
            let error = scorer.error(weights.view())?;
            if best.as_ref().is_none_or(|b| error < b.error) {
                best = Some(GridBest { error, hessian, weights, report });
            }
        }
        best.ok_or_else(|| OptimaError::InvalidSetting("the held-out damping grid is empty".into()))
    }
}

/// The update at the damping of `grid` with the lowest held-out error (docs/math.md, "Damping from
/// held-out tokens"), its report, and the record of the choice against `baseline`. With an
/// `alternative` mask, that mask's update at the chosen damping competes on the same rows, and the
/// winner is the one solved in full. `start` is the starting mask's best on the sample at `grid`'s
/// one damping when the caller has it already (the refinement's search): the alternative's, or the
/// problem's own when there is no alternative; it is not solved again.
#[allow(clippy::too_many_arguments)] // The layer's fit, both masks, the grid and the scoring parts.
pub(super) fn choose_damping(
    fit: &LayerFit<'_>,
    problem: &LayerProblem,
    alternative: Option<&Mask>,
    start: Option<GridBest>,
    grid: &[f64],
    baseline: &Array2<f64>,
    held_out: &HeldOut,
    solve: &Solve<'_>,
    par: Parallelism,
) -> Result<Choice> {
    let sample = GridSample::new(fit, held_out);
    let scorer = sample.scorer(par)?;
    let (main, start) = match (alternative, start) {
        (None, Some(start)) => (start, None),
        (_, start) => (sample.best(&scorer, grid, problem.mask(), solve, par)?, start),
    };
    let GridBest { error, hessian, weights, report } = main;
    let damping = hessian.percdamp();
    let mut winner = (problem.mask(), weights, report, false);
    let mut support_errors = None;
    if let Some(other) = alternative {
        let other_best = match start {
            Some(best) => best,
            None => sample.best(&scorer, &[damping], other, solve, par)?,
        };
        support_errors = Some(SupportErrors { start: other_best.error, refined: error });
        if other_best.error < error {
            winner = (other, other_best.weights, other_best.report, true);
        }
    }
    let (mask, weights, report, alternative) = winner;
    let (weights, report) = if sample.sampled(problem.rows()) {
        solve(&LayerProblem::new(target(fit, &hessian, par)?, hessian, mask.clone())?)?
    } else {
        (weights, report)
    };
    let scorer = held_out.scorer(fit.weight.view(), par)?;
    let record = HeldOutRecord {
        damping,
        error_update: scorer.error(weights.view())?,
        error_baseline: scorer.error(baseline.view())?,
    };
    Ok(Choice { weights, report, record, alternative, support_errors })
}
