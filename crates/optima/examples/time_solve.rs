//! The Rust side of the Python package's overhead benchmark (python/benchmarks/overhead.py): one
//! layer problem solved as a Rust caller would, from matrices in memory: the damped `Hessian`,
//! the `LayerProblem`, the solver built and run. Prints the wall seconds of each run as JSON.
//!
//! `cargo run --release -p optima --features problem-files --example time_solve -- P.safetensors
//! [--pattern 0.5] [--solver auto] [--threads 2] [--repeat 1]`

use std::path::PathBuf;
use std::time::Instant;

use optima::io::read_problem_file;
use optima::prelude::*;

fn main() -> optima::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let (mut pattern, mut solver, mut threads, mut repeat) = ("0.5".to_string(), "auto".to_string(), 0, 1);
    while let Some(arg) = args.next() {
        let mut value =
            || args.next().ok_or_else(|| optima::OptimaError::InvalidSetting(format!("{arg} needs a value")));
        let number =
            |v: String| v.parse().map_err(|_| optima::OptimaError::InvalidSetting(format!("not a count: {v}")));
        match arg.as_str() {
            "--pattern" => pattern = value()?,
            "--solver" => solver = value()?,
            "--threads" => threads = number(value()?)?,
            "--repeat" => repeat = number(value()?)?,
            _ => path = Some(PathBuf::from(&arg)),
        }
    }
    let path = path.ok_or_else(|| optima::OptimaError::InvalidSetting("usage: time_solve P.safetensors".into()))?;
    let file = read_problem_file(&path)?;
    let pattern: SparsityPattern = pattern.parse()?;
    let mask =
        WandaMasker.select(file.weight.view(), &Hessian::new(file.hessian.clone(), DEFAULT_PERCDAMP)?, &pattern)?;
    let spec = solver.parse::<SolverSpec>()?.parallelism(Parallelism::from_threads(threads)).tolerance(1e-6);
    let mut seconds = Vec::new();
    let mut objective = 0.0;
    for _ in 0..repeat {
        let (weight, matrix, mask) = (file.weight.clone(), file.hessian.clone(), mask.clone());
        let start = Instant::now();
        let hessian = Hessian::new(matrix, DEFAULT_PERCDAMP)?;
        let problem = LayerProblem::new(weight, hessian, mask)?;
        let solution = spec.build(Device::Cpu)?.solve(&problem, None)?;
        seconds.push(start.elapsed().as_secs_f64());
        objective = solution.report.objective;
    }
    println!("{{\"seconds\": {seconds:?}, \"objective\": {objective}}}");
    Ok(())
}
