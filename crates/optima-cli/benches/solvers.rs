//! Criterion benches of the solvers' kernels: `direct` beside the faer Cholesky it is measured
//! against, and one iteration-bound run of each batched solver.

use criterion::{Criterion, criterion_group, criterion_main};
use optima::Parallelism;
use optima::solve::SolverSpec;
use optima_cli::harness::{BenchCase, cholesky_baseline_seconds, generate_problem};

fn solvers(c: &mut Criterion) {
    let par = Parallelism::AllCores;
    let mut group = c.benchmark_group("solvers");
    group.sample_size(10);
    for (rows, cols, pattern) in [(576, 576, "0.5"), (576, 576, "2:4"), (1536, 576, "0.5")] {
        let case = BenchCase { rows, cols, pattern: pattern.parse().unwrap(), seed: 0 };
        let problem = generate_problem(&case, par).unwrap();
        for name in ["direct", "auto", "dual-pcg", "pcg", "sparsegpt"] {
            let solver = name.parse::<SolverSpec>().unwrap().parallelism(par).build(optima::Device::Cpu).unwrap();
            group.bench_function(format!("{name} {rows}x{cols} {pattern}"), |b| {
                b.iter(|| solver.solve(&problem, None).unwrap())
            });
        }
        group.bench_function(format!("faer cholesky {rows}x{} ({pattern} case)", cols / 2), |b| {
            b.iter(|| cholesky_baseline_seconds(&problem, cols / 2, rows, par).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, solvers);
criterion_main!(benches);
