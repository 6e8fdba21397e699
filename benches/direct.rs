//! Criterion benches of the exact solver and of the faer Cholesky it is measured against.

use criterion::{Criterion, criterion_group, criterion_main};
use optima::bench::{BenchCase, cholesky_baseline_seconds, generate_problem};
use optima::{DirectSettings, DirectSolver, Parallelism, QpSolver};

fn direct(c: &mut Criterion) {
    let par = Parallelism::AllCores;
    let mut group = c.benchmark_group("direct");
    group.sample_size(10);
    for (rows, cols, pattern) in [(576, 576, "0.5"), (576, 576, "2:4"), (1536, 576, "0.5")] {
        let case = BenchCase { rows, cols, pattern: pattern.parse().unwrap(), seed: 0 };
        let problem = generate_problem(&case, par).unwrap();
        let solver = DirectSolver::new(DirectSettings::default().parallelism(par));
        group.bench_function(format!("{rows}x{cols} {pattern}"), |b| b.iter(|| solver.solve(&problem, None).unwrap()));
        group.bench_function(format!("faer cholesky {rows}x{} ", cols / 2), |b| {
            b.iter(|| cholesky_baseline_seconds(&problem, cols / 2, rows, par).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, direct);
criterion_main!(benches);
