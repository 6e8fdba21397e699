//! SparseGPT against a straightforward dense reference written here: no lazy blocks, the full
//! OBS update of every later column after each column.

mod common;

use common::llm_like;
use ndarray::Array2;
use ndarray_linalg::{Cholesky, Inverse, UPLO};
use optima::prelude::*;
use optima::solve::{SparseGptMasker, SparseGptSettings, SparseGptSolver};
use optima::{Mask, RatioScope};

/// Reference sweep. `pattern` chooses the mask block by block (blocks of `block` columns, per row
/// lowest `w²/U_jj²` on the weights as updated so far; N:M at each group start); `given` fixes it.
fn reference(
    w: &Array2<f64>,
    h: &Array2<f64>,
    given: Option<&Mask>,
    pattern: Option<SparsityPattern>,
    block: usize,
) -> (Mask, Array2<f64>) {
    let (m, n) = w.dim();
    let u = h.inv().unwrap().cholesky(UPLO::Upper).unwrap();
    let mut w = w.clone();
    let mut mask = given.cloned().unwrap_or_else(|| Mask::empty(m, n));
    let score = |w: &Array2<f64>, i: usize, j: usize| w[[i, j]].powi(2) / u[[j, j]].powi(2);
    for j in 0..n {
        match pattern {
            Some(SparsityPattern::Unstructured { ratio, scope: RatioScope::PerRow }) if j % block == 0 => {
                let end = (j + block).min(n);
                let count = (ratio * end as f64).floor() as usize - (ratio * j as f64).floor() as usize;
                for i in 0..m {
                    let mut cols: Vec<usize> = (j..end).collect();
                    cols.sort_by(|&a, &b| score(&w, i, a).partial_cmp(&score(&w, i, b)).unwrap().then(a.cmp(&b)));
                    for &c in &cols[..count] {
                        mask.set(i, c, true);
                    }
                }
            }
            Some(SparsityPattern::NM { keep, group }) if j % group == 0 => {
                for i in 0..m {
                    let mut cols: Vec<usize> = (j..j + group).collect();
                    cols.sort_by(|&a, &b| score(&w, i, a).partial_cmp(&score(&w, i, b)).unwrap().then(a.cmp(&b)));
                    for &c in &cols[..group - keep] {
                        mask.set(i, c, true);
                    }
                }
            }
            _ => {}
        }
        for i in 0..m {
            if mask.is_pruned(i, j) {
                let err = w[[i, j]] / u[[j, j]];
                for c in j + 1..n {
                    w[[i, c]] -= err * u[[j, c]];
                }
                w[[i, j]] = 0.0;
            }
        }
    }
    (mask, w)
}

fn max_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    (a - b).mapv(f64::abs).fold(0.0, |x: f64, &y| x.max(y))
}

#[test]
fn updater_matches_the_dense_reference_for_any_block_size() {
    let (w, h) = llm_like(10, 72, 5);
    let hessian = Hessian::new(h, 0.01).unwrap();
    let mask = Mask::from_fn(10, 72, |i, j| (i * 31 + j * 17) % 5 < 2);
    let (_, want) = reference(&w, &hessian.matrix().to_owned(), Some(&mask), None, 128);
    let problem = LayerProblem::new(w, hessian, mask).unwrap();
    for block in [1, 7, 16, 128] {
        let solver = SparseGptSolver::new(SparseGptSettings::default().block_size(block));
        let sol = solver.solve(&problem, None).unwrap();
        assert!(max_diff(&sol.weight, &want) < 1e-10, "block {block}: {}", max_diff(&sol.weight, &want));
        assert_eq!(sol.report.max_abs_pruned, 0.0);
        assert!(sol.report.objective <= sol.report.objective_mask_only);
    }
}

#[test]
fn masker_matches_the_dense_reference_and_its_pattern() {
    let (w, h) = llm_like(9, 64, 6);
    let hessian = Hessian::new(h, 0.01).unwrap();
    let hd = hessian.matrix().to_owned();
    for (pattern, block) in [("0.5", 16), ("0.3", 128), ("2:4", 16), ("4:8", 128)] {
        let p: SparsityPattern = pattern.parse().unwrap();
        let masker = SparseGptMasker::new(SparseGptSettings::default().block_size(block));
        let (mask, updated) = masker.select_and_update(w.view(), &hessian, &p).unwrap();
        mask.validate(&p).unwrap();
        let (want_mask, want_w) = reference(&w, &hd, None, Some(p), block);
        assert_eq!(mask, want_mask, "{pattern}");
        assert!(max_diff(&updated, &want_w) < 1e-10, "{pattern}");
    }
}

#[test]
fn exact_reconstruction_beats_sparsegpt_on_its_own_mask() {
    let (w, h) = llm_like(32, 128, 7);
    let hessian = Hessian::new(h, 0.01).unwrap();
    let mask = SparseGptMasker::default().select(w.view(), &hessian, &"0.5".parse().unwrap()).unwrap();
    let problem = LayerProblem::new(w, hessian, mask).unwrap();
    let approx = SparseGptSolver::default().solve(&problem, None).unwrap();
    let exact = DirectSolver::default().solve(&problem, None).unwrap();
    assert!(exact.report.objective < approx.report.objective);
    assert!(approx.report.objective < approx.report.objective_mask_only);
}
