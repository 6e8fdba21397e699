//! Problem validation on arbitrary shapes, floats, mask bits and pattern strings: `Hessian::new`,
//! `SparsityPattern` parsing and construction, `Mask` building and validation, the maskers,
//! `LayerProblem::new`, and an exact solve when everything validates. Sizes stay at most 16×16.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ndarray::Array2;
use optima::{
    DirectForm, DirectSettings, DirectSolver, Hessian, LayerProblem, MagnitudeMasker, Mask, Masker, Parallelism,
    QpSolver, SparsityPattern, WandaMasker,
};

/// Largest row or column count tried.
const MAX_DIM: usize = 16;

#[derive(Arbitrary, Debug)]
enum HessianKind {
    /// The values as they come (rarely symmetric).
    Raw,
    /// `(A + Aᵀ) / 2`: symmetric, diagonal of any sign.
    Symmetrized,
    /// `AᵀA`: symmetric positive semi-definite, like a real Hessian.
    Gram,
}

#[derive(Arbitrary, Debug)]
enum PatternSource {
    Text(String),
    PerRow(f64),
    NM(u8, u8),
}

#[derive(Arbitrary, Debug)]
enum MaskSource {
    /// One byte per entry: 0 kept, 1 pruned, anything else an error.
    Dense(Vec<u8>),
    /// One bit per entry.
    Bits(Vec<u8>),
    Magnitude,
    Wanda,
}

#[derive(Arbitrary, Debug)]
struct Input {
    rows: u8,
    cols: u8,
    hessian_rows: u8,
    weight: Vec<f64>,
    hessian: Vec<f64>,
    kind: HessianKind,
    percdamp: f64,
    pattern: PatternSource,
    mask: MaskSource,
    form: u8,
}

/// A `rows`×`cols` matrix filled from `values`, cycling (zeros when there are none).
fn matrix(rows: usize, cols: usize, values: &[f64]) -> Array2<f64> {
    Array2::from_shape_fn((rows, cols), |(i, j)| match values.len() {
        0 => 0.0,
        len => values[(i * cols + j) % len],
    })
}

fuzz_target!(|input: Input| {
    let m = usize::from(input.rows) % (MAX_DIM + 1);
    let n = usize::from(input.cols) % (MAX_DIM + 1);
    let weight = matrix(m, n, &input.weight);
    let h = match input.kind {
        HessianKind::Raw => matrix(usize::from(input.hessian_rows) % (MAX_DIM + 1), n, &input.hessian),
        HessianKind::Symmetrized => {
            let a = matrix(n, n, &input.hessian);
            (&a + &a.t()) * 0.5
        }
        HessianKind::Gram => {
            let a = matrix(n, n, &input.hessian);
            a.t().dot(&a)
        }
    };
    let hessian = Hessian::new(h, input.percdamp);

    let pattern = match input.pattern {
        PatternSource::Text(s) => s.parse::<SparsityPattern>(),
        PatternSource::PerRow(r) => SparsityPattern::per_row(r),
        PatternSource::NM(keep, group) => SparsityPattern::n_m(keep.into(), group.into()),
    };
    if let Ok(p) = &pattern {
        let _ = p.validate(n);
        let _ = p.sparsity();
        // Display and parsing agree.
        let again: SparsityPattern = p.to_string().parse().expect("a displayed pattern parses");
        assert_eq!(&again, p);
    }

    let Ok(hessian) = hessian else { return };
    let mask = match input.mask {
        MaskSource::Dense(bytes) => {
            let dense = Array2::from_shape_fn((m, n), |(i, j)| bytes.get(i * n + j).copied().unwrap_or(0));
            Mask::from_dense(dense.view())
        }
        MaskSource::Bits(bytes) => Ok(Mask::from_fn(m, n, |i, j| {
            let k = i * n + j;
            bytes.get(k / 8).is_some_and(|b| b >> (k % 8) & 1 == 1)
        })),
        MaskSource::Magnitude | MaskSource::Wanda => {
            let Ok(p) = &pattern else { return };
            let masker: &dyn Masker =
                if matches!(input.mask, MaskSource::Magnitude) { &MagnitudeMasker } else { &WandaMasker };
            let selected = masker.select(weight.view(), &hessian, p);
            if let Ok(mask) = &selected {
                assert_eq!((mask.rows(), mask.cols()), (m, n));
                mask.validate(p).expect("a masker's mask follows its pattern");
            }
            selected
        }
    };
    let Ok(mask) = mask else { return };
    if let Ok(p) = &pattern {
        let _ = mask.validate(p);
    }

    let Ok(problem) = LayerProblem::new(weight, hessian, mask) else { return };
    let form = match input.form % 3 {
        0 => DirectForm::Auto,
        1 => DirectForm::Primal,
        _ => DirectForm::Dual,
    };
    let solver = DirectSolver::new(DirectSettings::default().parallelism(Parallelism::Sequential).form(form));
    if let Ok(solution) = solver.solve(&problem, None) {
        assert_eq!(solution.report.rows.len(), m);
    }
});
