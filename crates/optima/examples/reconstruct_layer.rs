//! How a compression stack plugs optima in: it already has a layer's weights and the activations
//! that flow into it. Accumulate the Hessian batch by batch, pick a mask, reconstruct, read the
//! report.
//!
//! Run with `cargo run --release --example reconstruct_layer`.

use ndarray::{Array2, s};
use optima::prelude::*;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::StandardNormal;

fn main() -> optima::Result<()> {
    let (outputs, inputs, tokens) = (256, 512, 2048);
    let mut rng = StdRng::seed_from_u64(42);

    // Stand-ins for what the caller's framework provides: weights, and activations whose channels
    // are correlated through a few shared factors, with two outlier channels.
    let weight = Array2::from_shape_fn((outputs, inputs), |_| rng.sample::<f64, _>(StandardNormal) * 0.05);
    let factors = Array2::from_shape_fn((tokens, 16), |_| rng.sample::<f32, _>(StandardNormal));
    let loadings = Array2::from_shape_fn((16, inputs), |_| rng.sample::<f32, _>(StandardNormal));
    let mut activations =
        factors.dot(&loadings) + Array2::from_shape_fn((tokens, inputs), |_| rng.sample::<f32, _>(StandardNormal));
    activations.column_mut(7).mapv_inplace(|v| v * 60.0);
    activations.column_mut(300).mapv_inplace(|v| v * 90.0);

    // 1. The Hessian, streamed in batches of 256 tokens as the forward passes produce them.
    let mut accumulator = CpuHessianAccumulator::new(inputs, Parallelism::AllCores);
    for batch in 0..tokens / 256 {
        accumulator.add_batch(activations.slice(s![batch * 256..(batch + 1) * 256, ..]))?;
    }
    let hessian = accumulator.finish(DEFAULT_PERCDAMP)?;

    // 2. A 2:4 mask chosen by Wanda.
    let pattern: SparsityPattern = "2:4".parse()?;
    let mask = WandaMasker.select(weight.view(), &hessian, &pattern)?;
    mask.validate(&pattern)?;

    // 3. The exact reconstruction of every row.
    let problem = LayerProblem::new(weight, hessian, mask)?;
    let solution =
        DirectSolver::new(DirectSettings::default().parallelism(Parallelism::AllCores)).solve(&problem, None)?;

    // 4. The report certifies the answer.
    let r = &solution.report;
    println!("layer {}x{}, {:.0}% pruned ({pattern})", r.m, r.n, 100.0 * problem.mask().sparsity());
    println!("| | output error E |");
    println!("|---|---:|");
    println!("| mask only (Wanda) | {:.5} |", r.error_before);
    println!("| exact reconstruction | {:.5} |", r.error_after);
    println!(
        "solve {:.3} s, max KKT residual {:.1e}, rows regularized {}, failed {}",
        r.seconds, r.kkt_residual, r.regularized_rows, r.failed_rows
    );
    // `solution.weight` now replaces the layer's weights; pruned entries are exactly zero.
    Ok(())
}
