//! The exact solver against an independent LAPACK solution of every row's KKT system.

mod common;

use common::{kkt_oracle, llm_like, objective, random_mask, random_spd, random_weight};
use ndarray::Array2;
use optima::prelude::*;
use optima::solve::DirectForm;
use proptest::prelude::*;

/// Solves with `form` and checks every row against the oracle.
fn check_against_oracle(weight: Array2<f64>, h_raw: Array2<f64>, percdamp: f64, mask: Mask, form: DirectForm) {
    let hessian = Hessian::new(h_raw, percdamp).unwrap();
    let h = hessian.matrix().to_owned();
    let problem = LayerProblem::new(weight.clone(), hessian, mask.clone()).unwrap();
    let solver = DirectSolver::new(DirectSettings::default().form(form).parallelism(Parallelism::Threads(2)));
    let solution = solver.solve(&problem, None).unwrap();
    let report = &solution.report;
    assert_eq!(report.failed_rows, 0);
    for i in 0..weight.nrows() {
        let w = weight.row(i).to_owned();
        let pruned = mask.pruned_indices(i);
        let got = solution.weight.row(i).to_owned();
        for &j in &pruned {
            assert_eq!(got[j].to_bits(), 0.0f64.to_bits(), "row {i} pruned entry {j} is {} (must be +0.0)", got[j]);
        }
        let oracle = kkt_oracle(&h, &w, &pruned);
        let f_got = objective(&h, &got, &w);
        let f_oracle = objective(&h, &oracle, &w);
        let scale = f_oracle.max(1e-12 * w.dot(&h.dot(&w)));
        assert!(
            (f_got - f_oracle).abs() <= 1e-9 * scale,
            "row {i} ({form:?}): objective {f_got} vs oracle {f_oracle} (rel {})",
            (f_got - f_oracle).abs() / scale
        );
        let row = &report.rows[i];
        assert!(row.objective <= row.objective_mask_only * (1.0 + 1e-12) + 1e-300, "row {i} worse than mask-only");
        assert!((row.objective - f_got).abs() <= 1e-9 * scale.max(row.objective));
        assert!(row.kkt_residual < 1e-8, "row {i} KKT residual {}", row.kkt_residual);
        assert_eq!(row.iterations, 1);
    }
    assert!(report.objective <= report.objective_mask_only * (1.0 + 1e-12));
    assert_eq!(report.max_abs_pruned, 0.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_spd_matches_lapack(m in 1usize..12, n in 2usize..40, p in 0.05f64..0.95, seed in 0u64..1000, form_id in 0usize..3) {
        let form = [DirectForm::Auto, DirectForm::Primal, DirectForm::Dual][form_id];
        let h = random_spd(n, n / 2 + 1, seed);
        let weight = random_weight(m, n, seed + 1);
        let mask = random_mask(m, n, p, seed + 2);
        check_against_oracle(weight, h, 0.01, mask, form);
    }

    #[test]
    fn llm_like_matches_lapack(m in 1usize..10, n in 8usize..48, p in 0.2f64..0.8, seed in 0u64..1000, form_id in 0usize..3) {
        let form = [DirectForm::Auto, DirectForm::Primal, DirectForm::Dual][form_id];
        let (weight, h) = llm_like(m, n, seed);
        let mask = random_mask(m, n, p, seed + 3);
        check_against_oracle(weight, h, 0.01, mask, form);
    }

    #[test]
    fn undamped_full_rank_matches_lapack(m in 1usize..8, n in 4usize..32, seed in 0u64..1000, form_id in 0usize..2) {
        let form = [DirectForm::Primal, DirectForm::Dual][form_id];
        let h = random_spd(n, 2 * n, seed);
        let weight = random_weight(m, n, seed + 1);
        let mask = random_mask(m, n, 0.5, seed + 2);
        check_against_oracle(weight, h, 0.0, mask, form);
    }
}

#[test]
fn larger_llm_like_layer_both_forms_agree_with_lapack() {
    // At 25% sparsity the dual (|P|×|P|) is the cheaper form, and the savings pay for H⁻¹.
    let (weight, h) = llm_like(24, 160, 7);
    let mask = random_mask(24, 160, 0.25, 8);
    check_against_oracle(weight.clone(), h.clone(), 0.01, mask.clone(), DirectForm::Auto);
    check_against_oracle(weight, h, 0.01, mask, DirectForm::Dual);
}

#[test]
fn wanda_and_nm_masks_solve_exactly() {
    let (weight, h) = llm_like(16, 64, 3);
    let hessian = Hessian::new(h.clone(), 0.01).unwrap();
    for pattern in ["0.5", "2:4", "4:8", "0.6/layer"] {
        let mask = WandaMasker.select(weight.view(), &hessian, &pattern.parse().unwrap()).unwrap();
        check_against_oracle(weight.clone(), h.clone(), 0.01, mask, DirectForm::Auto);
    }
}

#[test]
fn rows_that_share_a_mask_get_their_own_answers() {
    // Every row has the same mask: one factorization serves all, yet rows differ.
    let h = random_spd(20, 30, 1);
    let weight = random_weight(6, 20, 2);
    let mask = Mask::from_fn(6, 20, |_, j| j % 3 == 0);
    check_against_oracle(weight, h, 0.01, mask, DirectForm::Primal);
}
