//! [`SolverSpec`]: the one way a solver is built. One variant per solver, each carrying its
//! settings; validated once, when it is built for a device; an option the device cannot honour is
//! an error there, never dropped.

use std::fmt;
use std::str::FromStr;

use super::{
    AdmmSettings, AdmmSolver, AutoSettings, AutoSolver, DirectForm, DirectSettings, DirectSolver, DualPcgSettings,
    DualPcgSolver, IterativeSettings, PcgSettings, PcgSolver, PdhgSettings, PdhgSolver, QpSolver, SparseGptSolver,
};
use crate::backend::{Device, Parallelism};
use crate::error::{OptimaError, Result};
use crate::mask::SparseGptSettings;

/// A solver and its settings. Build it with [`SolverSpec::build`]; parse a name with its default
/// settings with `"auto".parse()`.
///
/// ```
/// use optima::prelude::*;
/// use optima::solve::{Precision, PcgSettings};
///
/// # fn main() -> optima::Result<()> {
/// let spec: SolverSpec = "dual-pcg".parse()?;
/// let spec = spec.tolerance(1e-8).parallelism(Parallelism::Threads(2));
/// let solver = spec.build(Device::Cpu)?;
/// assert_eq!(solver.name(), "dual-pcg");
///
/// let pcg = SolverSpec::Pcg(PcgSettings::default().precision(Precision::Mixed));
/// assert!(pcg.build(Device::Cpu).is_ok());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(tag = "solver", content = "settings", rename_all = "kebab-case")
)]
#[non_exhaustive]
pub enum SolverSpec {
    /// `auto`: dual PCG or `direct`, whichever the cost model and a probe predict cheaper.
    Auto(AutoSettings),
    /// `direct`: every row exactly.
    Direct(DirectSettings),
    /// `dual-pcg`: batched CG on the pruning multipliers.
    DualPcg(DualPcgSettings),
    /// `pcg`: batched preconditioned CG on the weights.
    Pcg(PcgSettings),
    /// `admm`: shared-factorization ADMM.
    Admm(AdmmSettings),
    /// `pdhg`: the published method's restarted averaged PDHG.
    Pdhg(PdhgSettings),
    /// `sparsegpt`: SparseGPT's approximate update.
    SparseGpt(SparseGptSettings),
}

impl SolverSpec {
    /// The solvers' names, as [`SolverSpec::name`] gives them and `parse` takes them.
    pub const NAMES: &'static [&'static str] = &["auto", "direct", "dual-pcg", "pcg", "admm", "pdhg", "sparsegpt"];

    /// The solver's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Auto(_) => "auto",
            Self::Direct(_) => "direct",
            Self::DualPcg(_) => "dual-pcg",
            Self::Pcg(_) => "pcg",
            Self::Admm(_) => "admm",
            Self::Pdhg(_) => "pdhg",
            Self::SparseGpt(_) => "sparsegpt",
        }
    }

    /// The threads the solver uses.
    pub fn threads(&self) -> Parallelism {
        match self {
            Self::Auto(s) => s.parallelism,
            Self::Direct(s) => s.parallelism,
            Self::SparseGpt(s) => s.parallelism,
            Self::DualPcg(s) => s.iterative.parallelism,
            Self::Pcg(s) => s.iterative.parallelism,
            Self::Admm(s) => s.iterative.parallelism,
            Self::Pdhg(s) => s.iterative.parallelism,
        }
    }

    fn iterative_mut(&mut self) -> Option<&mut IterativeSettings> {
        match self {
            Self::DualPcg(s) => Some(&mut s.iterative),
            Self::Pcg(s) => Some(&mut s.iterative),
            Self::Admm(s) => Some(&mut s.iterative),
            Self::Pdhg(s) => Some(&mut s.iterative),
            Self::Auto(_) | Self::Direct(_) | Self::SparseGpt(_) => None,
        }
    }

    /// Sets the threads, whatever the solver.
    pub fn parallelism(mut self, parallelism: Parallelism) -> Self {
        match &mut self {
            Self::Auto(s) => s.parallelism = parallelism,
            Self::Direct(s) => s.parallelism = parallelism,
            Self::SparseGpt(s) => s.parallelism = parallelism,
            other => {
                if let Some(it) = other.iterative_mut() {
                    it.parallelism = parallelism;
                }
            }
        }
        self
    }

    /// Sets the relative KKT tolerance of the solvers that stop on one (`auto`, `dual-pcg`,
    /// `pcg`, `admm`); `pdhg` stops on its own `eps_abs`/`eps_rel`, and `direct` and `sparsegpt`
    /// have no tolerance, so they are left as they are.
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        match &mut self {
            Self::Auto(s) => s.tolerance = tolerance,
            Self::DualPcg(s) => s.iterative.tolerance = tolerance,
            Self::Pcg(s) => s.iterative.tolerance = tolerance,
            Self::Admm(s) => s.iterative.tolerance = tolerance,
            Self::Pdhg(_) | Self::Direct(_) | Self::SparseGpt(_) => {}
        }
        self
    }

    /// Sets the iteration cap of the iterative solvers (`dual-pcg`, `pcg`, `admm`, `pdhg`);
    /// `auto` plans its own caps, and the others do not iterate.
    pub fn max_iterations(mut self, max_iterations: usize) -> Self {
        if let Some(it) = self.iterative_mut() {
            it.max_iterations = max_iterations;
        }
        self
    }

    /// Checks every setting; [`SolverSpec::build`] calls it.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Auto(s) => s.check(),
            Self::Direct(_) => Ok(()),
            Self::DualPcg(s) => s.iterative.check(),
            Self::Pcg(s) => s.iterative.check(),
            Self::Admm(s) => s.check(),
            Self::Pdhg(s) => s.check(),
            Self::SparseGpt(s) => s.check(),
        }
    }

    /// The solver on `device`, its settings validated. On a CUDA device `auto`, `direct` (primal
    /// form) and `pcg` (mixed precision) run; any other solver or setting there is an
    /// [`OptimaError::InvalidSetting`], and a build without the `cuda` feature or a machine
    /// without a usable GPU gives [`OptimaError::BackendUnavailable`].
    pub fn build(&self, device: Device) -> Result<Box<dyn QpSolver + Send + Sync>> {
        self.validate()?;
        match device {
            Device::Cpu => Ok(self.build_cpu()),
            Device::Cuda { ordinal } => self.build_cuda(ordinal),
        }
    }

    fn build_cpu(&self) -> Box<dyn QpSolver + Send + Sync> {
        match self {
            Self::Auto(s) => Box::new(AutoSolver::new(*s)),
            Self::Direct(s) => Box::new(DirectSolver::new(*s)),
            Self::DualPcg(s) => Box::new(DualPcgSolver::new(*s)),
            Self::Pcg(s) => Box::new(PcgSolver::new(*s)),
            Self::Admm(s) => Box::new(AdmmSolver::new(*s)),
            Self::Pdhg(s) => Box::new(PdhgSolver::new(*s)),
            Self::SparseGpt(s) => Box::new(SparseGptSolver::new(*s)),
        }
    }

    /// What the CUDA backend cannot honour in this spec, as an error naming the fix.
    pub fn check_cuda(&self) -> Result<()> {
        let refuse = |what: String| Err(OptimaError::InvalidSetting(what));
        match self {
            Self::Auto(_) => Ok(()),
            Self::Direct(s) if s.form == DirectForm::Dual => {
                refuse("direct runs only its primal form on a CUDA device; use form auto or primal".into())
            }
            Self::Direct(_) => Ok(()),
            Self::Pcg(s) if s.precision != super::Precision::Mixed => refuse(format!(
                "pcg runs in mixed precision (f32 products, f64 refinement) on a CUDA device, not {:?}; \
                 choose mixed precision",
                s.precision
            )),
            Self::Pcg(_) => Ok(()),
            other => {
                refuse(format!("solver {:?} does not run on a CUDA device; there: auto, direct, pcg", other.name()))
            }
        }
    }

    #[cfg(feature = "cuda")]
    fn build_cuda(&self, ordinal: usize) -> Result<Box<dyn QpSolver + Send + Sync>> {
        self.check_cuda()?;
        self.build_on(crate::backend::cuda::CudaBackend::new(ordinal)?)
    }

    #[cfg(not(feature = "cuda"))]
    fn build_cuda(&self, _ordinal: usize) -> Result<Box<dyn QpSolver + Send + Sync>> {
        self.check_cuda()?;
        Err(crate::backend::cuda_not_compiled())
    }

    /// The solver on an already opened CUDA backend (so several solvers share one context),
    /// validated as [`SolverSpec::build`] does.
    #[cfg(feature = "cuda")]
    pub fn build_on(
        &self,
        backend: std::sync::Arc<crate::backend::cuda::CudaBackend>,
    ) -> Result<Box<dyn QpSolver + Send + Sync>> {
        use super::cuda::{CudaAutoSolver, CudaDirectSolver, CudaPcgSettings, CudaPcgSolver};
        self.validate()?;
        self.check_cuda()?;
        match self {
            Self::Auto(s) => Ok(Box::new(CudaAutoSolver::new(backend, *s))),
            Self::Direct(s) => Ok(Box::new(CudaDirectSolver::new(backend, *s))),
            Self::Pcg(s) => Ok(Box::new(CudaPcgSolver::new(backend, CudaPcgSettings { pcg: *s, tf32: false }))),
            other => Err(OptimaError::Internal(format!("{} passed the CUDA check", other.name()))),
        }
    }
}

impl FromStr for SolverSpec {
    type Err = OptimaError;

    /// A solver by name, with its default settings.
    fn from_str(name: &str) -> Result<Self> {
        Ok(match name {
            "auto" => Self::Auto(AutoSettings::default()),
            "direct" => Self::Direct(DirectSettings::default()),
            "dual-pcg" => Self::DualPcg(DualPcgSettings::default()),
            "pcg" => Self::Pcg(PcgSettings::default()),
            "admm" => Self::Admm(AdmmSettings::default()),
            "pdhg" => Self::Pdhg(PdhgSettings::default()),
            "sparsegpt" => Self::SparseGpt(SparseGptSettings::default()),
            other => {
                return Err(OptimaError::InvalidSetting(format!(
                    "unknown solver {other:?}; available: {}",
                    Self::NAMES.join(", ")
                )));
            }
        })
    }
}

impl fmt::Display for SolverSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solve::Precision;

    #[test]
    fn every_name_parses_to_its_variant_and_builds_on_the_cpu() {
        for &name in SolverSpec::NAMES {
            let spec: SolverSpec = name.parse().unwrap();
            assert_eq!(spec.name(), name);
            assert_eq!(spec.to_string(), name);
            assert_eq!(spec.build(Device::Cpu).unwrap().name(), name);
        }
        assert!(matches!("simplex".parse::<SolverSpec>(), Err(OptimaError::InvalidSetting(_))));
    }

    #[test]
    fn setters_reach_the_settings_of_every_solver_that_has_them() {
        let par = Parallelism::Threads(3);
        for &name in SolverSpec::NAMES {
            let spec = name.parse::<SolverSpec>().unwrap().parallelism(par).tolerance(1e-9).max_iterations(7);
            assert_eq!(spec.threads(), par, "{name}");
            match spec {
                SolverSpec::Auto(s) => assert_eq!(s.tolerance, 1e-9),
                SolverSpec::DualPcg(s) => assert_eq!((s.iterative.tolerance, s.iterative.max_iterations), (1e-9, 7)),
                SolverSpec::Pcg(s) => assert_eq!((s.iterative.tolerance, s.iterative.max_iterations), (1e-9, 7)),
                SolverSpec::Admm(s) => assert_eq!((s.iterative.tolerance, s.iterative.max_iterations), (1e-9, 7)),
                SolverSpec::Pdhg(s) => assert_eq!((s.eps_abs, s.iterative.max_iterations), (1e-2, 7)),
                SolverSpec::Direct(_) | SolverSpec::SparseGpt(_) => {}
            }
        }
    }

    #[test]
    fn bad_settings_are_refused_when_built() {
        let bad = [
            SolverSpec::Auto(AutoSettings::default().tolerance(0.0)),
            SolverSpec::DualPcg(DualPcgSettings::default()).tolerance(f64::NAN),
            SolverSpec::Pcg(PcgSettings::default()).max_iterations(0),
            SolverSpec::Admm(AdmmSettings::default().rho(-1.0)),
            SolverSpec::Pdhg(PdhgSettings::default().eps_abs(0.0).eps_rel(0.0)),
            SolverSpec::SparseGpt(SparseGptSettings::default().block_size(0)),
        ];
        for spec in bad {
            assert!(matches!(spec.build(Device::Cpu), Err(OptimaError::InvalidSetting(_))), "{spec:?}");
        }
    }

    #[test]
    fn options_a_cuda_device_cannot_honour_are_errors_not_dropped() {
        let refused = [
            SolverSpec::Pcg(PcgSettings::default().precision(Precision::Double)),
            SolverSpec::Direct(DirectSettings::default().form(DirectForm::Dual)),
            "dual-pcg".parse().unwrap(),
            "admm".parse().unwrap(),
            "pdhg".parse().unwrap(),
            "sparsegpt".parse().unwrap(),
        ];
        for spec in refused {
            let err = spec.check_cuda().unwrap_err();
            assert!(matches!(err, OptimaError::InvalidSetting(_)), "{spec:?}: {err}");
            // Refused before any device is looked for, with or without the feature.
            let built = spec.build(Device::Cuda { ordinal: 0 });
            assert!(matches!(built, Err(OptimaError::InvalidSetting(_))), "{spec:?}");
        }
        let honoured = [
            SolverSpec::Pcg(PcgSettings::default().precision(Precision::Mixed)),
            SolverSpec::Direct(DirectSettings::default().form(DirectForm::Primal)),
            "direct".parse().unwrap(),
            "auto".parse().unwrap(),
        ];
        for spec in honoured {
            spec.check_cuda().unwrap();
        }
    }
}
