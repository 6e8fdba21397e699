//! `optima bench --llama3-8b-shapes`: generated LLM-like layers with the shapes of Llama-3-8B's
//! seven linear layers, at 50% and 2:4, on a chosen device: seconds per layer, GFLOP/s against
//! the device's measured GEMM rate, peak device memory, and the time projected for all 32 blocks.

use std::collections::BTreeMap;

use serde::Serialize;

use super::model_flops;
use optima::backend::{Device, Parallelism};
use optima::error::Result;
use optima::mask::{Masker, WandaMasker};
use optima::problem::{DEFAULT_PERCDAMP, Hessian, LayerProblem, Mask, SparsityPattern};
use optima::solve::{QpSolver, SolverSpec};
use optima::synthetic::LlmLikeLayer;

/// Llama-3-8B's linear layers per block: name, outputs m, inputs n.
pub const LLAMA3_8B_LAYERS: [(&str, usize, usize); 7] = [
    ("q_proj", 4096, 4096),
    ("k_proj", 1024, 4096),
    ("v_proj", 1024, 4096),
    ("o_proj", 4096, 4096),
    ("gate_proj", 14336, 4096),
    ("up_proj", 14336, 4096),
    ("down_proj", 4096, 14336),
];
/// Transformer blocks in Llama-3-8B.
pub const LLAMA3_8B_BLOCKS: usize = 32;

/// What to run.
#[derive(Clone, Debug)]
pub struct LlamaBenchOptions {
    /// The device.
    pub device: Device,
    /// Solvers with their settings.
    pub solvers: Vec<SolverSpec>,
    /// Patterns (default 50% and 2:4).
    pub patterns: Vec<SparsityPattern>,
    /// Solve only the first R rows of each layer (the per-layer time is then scaled to all rows).
    pub rows: Option<usize>,
    /// Divide every dimension by this (≥ 1; for smoke tests on small machines).
    pub scale_down: usize,
    /// Threads of the generator and masker (each solver has its own).
    pub parallelism: Parallelism,
    /// The tolerance the solvers were given, for the report.
    pub tolerance: f64,
    /// Generator seed.
    pub seed: u64,
}

/// One measured layer.
#[derive(Clone, Debug, Serialize)]
pub struct LlamaRow {
    /// Layer name.
    pub layer: String,
    /// `m×n` of the layer as generated.
    pub shape: String,
    /// Rows solved (all, or the `--rows` subset).
    pub rows_solved: usize,
    /// Pattern.
    pub pattern: String,
    /// Solver.
    pub solver: String,
    /// Solve seconds for the rows solved.
    pub seconds: f64,
    /// Seconds scaled to the whole layer (`seconds · m / rows_solved`).
    pub seconds_per_layer: f64,
    /// Model flops (`bench::model_flops`) per second, GFLOP/s.
    pub gflops: f64,
    /// `gflops` over the device's measured SGEMM rate (when measured).
    pub fraction_of_sgemm: Option<f64>,
    /// Peak device memory above the backend's start, bytes (CUDA only).
    pub peak_device_bytes: Option<usize>,
    /// Largest relative KKT residual.
    pub kkt_residual: f64,
    /// Rows not solved to the promise.
    pub failed_rows: usize,
    /// Largest iteration count.
    pub iterations: usize,
    /// `E` before (mask only).
    pub error_before: f64,
    /// `E` after.
    pub error_after: f64,
    /// Seconds the CPU spent on the report (not in `seconds`).
    pub evaluation_seconds: f64,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct LlamaBenchReport {
    /// Device as given.
    pub device: String,
    /// The device's name.
    pub device_name: String,
    /// UTC date of the run, `YYYY-MM-DD`.
    pub date: String,
    /// Measured 8192³ SGEMM rate, GFLOP/s (CUDA only).
    pub sgemm_gflops: Option<f64>,
    /// Measured 8192³ DGEMM rate, GFLOP/s (CUDA only).
    pub dgemm_gflops: Option<f64>,
    /// Relative KKT tolerance.
    pub tolerance: f64,
    /// Dimensions divided by this.
    pub scale_down: usize,
    /// Per-layer figures.
    pub rows: Vec<LlamaRow>,
    /// `"pattern solver"` → seconds for all 7 layers of all 32 blocks.
    pub projected_32_blocks_seconds: BTreeMap<String, f64>,
}

/// Today's UTC date as `YYYY-MM-DD`.
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// A solver factory and the device's figures.
struct Runner {
    #[cfg(feature = "cuda")]
    backend: Option<std::sync::Arc<optima::backend::cuda::CudaBackend>>,
    name: String,
    gemm: Option<(f64, f64)>,
}

impl Runner {
    fn new(device: Device) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Self {
                #[cfg(feature = "cuda")]
                backend: None,
                name: "cpu".into(),
                gemm: None,
            }),
            #[cfg(feature = "cuda")]
            Device::Cuda { ordinal } => {
                let backend = optima::backend::cuda::CudaBackend::new(ordinal)?;
                let gemm = backend.measure_gemm_gflops(8192)?;
                Ok(Self { name: backend.name().to_string(), backend: Some(backend), gemm: Some(gemm) })
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda { .. } => Err(optima::backend::cuda_not_compiled()),
        }
    }

    fn solver(&self, spec: &SolverSpec) -> Result<Box<dyn QpSolver + Send + Sync>> {
        #[cfg(feature = "cuda")]
        if let Some(backend) = &self.backend {
            backend.reset_peak_memory();
            return spec.build_on(backend.clone());
        }
        spec.build(Device::Cpu)
    }

    fn peak(&self) -> Option<usize> {
        #[cfg(feature = "cuda")]
        if let Some(backend) = &self.backend {
            return Some(backend.peak_memory());
        }
        None
    }
}

/// Runs the Llama-3-8B shapes; `progress` is told each step as it starts.
pub fn bench_llama3_8b(opts: &LlamaBenchOptions, mut progress: impl FnMut(&str)) -> Result<LlamaBenchReport> {
    for spec in &opts.solvers {
        match opts.device {
            Device::Cpu => spec.validate()?,
            Device::Cuda { .. } => spec.validate().and_then(|()| spec.check_cuda())?,
        }
    }
    let runner = Runner::new(opts.device)?;
    let scale = opts.scale_down.max(1);
    let par: Parallelism = opts.parallelism;
    let mut rows = Vec::new();
    let mut current: Option<((usize, usize), ndarray::Array2<f64>, Hessian)> = None;
    for (layer, m_full, n_full) in LLAMA3_8B_LAYERS {
        let (m, n) = ((m_full / scale).max(4), (n_full / scale).max(4));
        if current.as_ref().is_none_or(|(shape, _, _)| *shape != (m, n)) {
            progress(&format!("generating {m}x{n}"));
            drop(current.take());
            let (w, h) = LlmLikeLayer::new(m, n, opts.seed).generate(par);
            current = Some(((m, n), w, Hessian::new(h, DEFAULT_PERCDAMP)?));
        }
        let Some((_, weight, hessian)) = current.as_ref() else { continue };
        let r = opts.rows.unwrap_or(m).clamp(1, m);
        for pattern in &opts.patterns {
            let mask = WandaMasker.select(weight.view(), hessian, pattern)?;
            let sub_mask = Mask::from_fn(r, n, |i, j| mask.is_pruned(i, j));
            let sub_weight = weight.slice(ndarray::s![..r, ..]).to_owned();
            let problem = LayerProblem::new(sub_weight, hessian.clone(), sub_mask)?;
            for spec in &opts.solvers {
                let solver_name = spec.name();
                progress(&format!("{layer} {m}x{n} {pattern} {solver_name}"));
                let solver = runner.solver(spec)?;
                let report = solver.solve(&problem, None)?.report;
                let gflops = model_flops(&report, &problem, spec) / report.seconds / 1e9;
                progress(&format!(
                    "done {layer} {pattern} {solver_name}: {:.3} s for {r} rows, {gflops:.0} GFLOP/s, KKT {:.1e}, {} failed",
                    report.seconds, report.kkt_residual, report.failed_rows
                ));
                rows.push(LlamaRow {
                    layer: layer.to_string(),
                    shape: format!("{m}x{n}"),
                    rows_solved: r,
                    pattern: pattern.to_string(),
                    solver: solver_name.to_string(),
                    seconds: report.seconds,
                    seconds_per_layer: report.seconds * m as f64 / r as f64,
                    gflops,
                    fraction_of_sgemm: runner.gemm.map(|(s, _)| gflops / s),
                    peak_device_bytes: runner.peak(),
                    kkt_residual: report.kkt_residual,
                    failed_rows: report.failed_rows,
                    iterations: report.iterations,
                    error_before: report.error_before,
                    error_after: report.error_after,
                    evaluation_seconds: report.evaluation_seconds,
                });
            }
        }
    }
    let mut projected = BTreeMap::new();
    for row in &rows {
        *projected.entry(format!("{} {}", row.pattern, row.solver)).or_insert(0.0) +=
            row.seconds_per_layer * LLAMA3_8B_BLOCKS as f64;
    }
    Ok(LlamaBenchReport {
        device: opts.device.to_string(),
        device_name: runner.name,
        date: utc_date(),
        sgemm_gflops: runner.gemm.map(|g| g.0),
        dgemm_gflops: runner.gemm.map(|g| g.1),
        tolerance: opts.tolerance,
        scale_down: scale,
        rows,
        projected_32_blocks_seconds: projected,
    })
}

/// The report as Markdown: the device line, the per-layer table and the 32-block projection.
pub fn llama_markdown(report: &LlamaBenchReport) -> String {
    let gemm = match (report.sgemm_gflops, report.dgemm_gflops) {
        (Some(s), Some(d)) => format!(", measured SGEMM {s:.0} GFLOP/s, DGEMM {d:.0} GFLOP/s"),
        _ => String::new(),
    };
    let scaled = if report.scale_down > 1 { format!(", dimensions / {}", report.scale_down) } else { String::new() };
    let mut out = format!(
        "{} ({}), {}, tolerance {:.0e}{gemm}{scaled}\n\n",
        report.device_name, report.device, report.date, report.tolerance
    );
    out.push_str(
        "| layer | shape | rows | pattern | solver | s/layer | GFLOP/s | % SGEMM | peak MiB | iterations | KKT | failed | E before | E after |\n\
         |---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &report.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.3} | {:.0} | {} | {} | {} | {:.1e} | {} | {:.5} | {:.5} |\n",
            r.layer,
            r.shape,
            r.rows_solved,
            r.pattern,
            r.solver,
            r.seconds_per_layer,
            r.gflops,
            r.fraction_of_sgemm.map(|f| format!("{:.0}%", 100.0 * f)).unwrap_or_else(|| "–".into()),
            r.peak_device_bytes.map(|b| format!("{:.0}", b as f64 / (1u64 << 20) as f64)).unwrap_or_else(|| "–".into()),
            r.iterations,
            r.kkt_residual,
            r.failed_rows,
            r.error_before,
            r.error_after
        ));
    }
    out.push_str("\nProjected for all 32 blocks (7 layers each):\n\n| pattern solver | seconds |\n|---|---:|\n");
    for (k, v) in &report.projected_32_blocks_seconds {
        out.push_str(&format!("| {k} | {v:.1} |\n"));
    }
    out
}
