//! The command line's solver flags, turned into a [`SolverSpec`]: the one place a name and flags
//! become a solver's settings, for `solve`, `bench` and `prune` alike.

use optima::backend::{Device, Parallelism};
use optima::solve::{DEFAULT_TOLERANCE, DirectForm, Precision, Preconditioner, SolverSpec};

/// Flags that configure solvers. A flag applies to the solvers that have the setting and leaves
/// the others as they are (so `bench --solvers direct,pcg --preconditioner inverse` works).
#[derive(Clone, Copy, Debug, Default)]
pub struct SolverFlags {
    /// Relative KKT tolerance (default 1e-6).
    pub tolerance: Option<f64>,
    /// `eps_abs = eps_rel` of `pdhg` (default: its own 1e-2).
    pub pdhg_tolerance: Option<f64>,
    /// Iteration cap of the iterative solvers (default: each solver's own).
    pub max_iterations: Option<usize>,
    /// `pcg`'s preconditioner.
    pub preconditioner: Option<Preconditioner>,
    /// `pcg`'s and `dual-pcg`'s precision (default: double for `pcg` on the CPU, mixed on a GPU,
    /// where it is the only one; mixed for `dual-pcg`).
    pub precision: Option<Precision>,
    /// `direct`'s closed form.
    pub form: Option<DirectForm>,
    /// Threads.
    pub parallelism: Parallelism,
}

impl SolverFlags {
    /// The solver `name` with these flags, for `device`.
    pub fn spec(&self, name: &str, device: Device) -> optima::Result<SolverSpec> {
        let mut spec = name
            .parse::<SolverSpec>()?
            .parallelism(self.parallelism)
            .tolerance(self.tolerance.unwrap_or(DEFAULT_TOLERANCE));
        if let Some(cap) = self.max_iterations {
            spec = spec.max_iterations(cap);
        }
        match &mut spec {
            SolverSpec::Pcg(s) => {
                if let Some(p) = self.preconditioner {
                    s.preconditioner = p;
                }
                let on_gpu = matches!(device, Device::Cuda { .. });
                s.precision = self.precision.unwrap_or(if on_gpu { Precision::Mixed } else { s.precision });
            }
            SolverSpec::DualPcg(s) => s.precision = self.precision.unwrap_or(s.precision),
            SolverSpec::Direct(s) => s.form = self.form.unwrap_or(s.form),
            SolverSpec::Pdhg(s) => {
                if let Some(eps) = self.pdhg_tolerance {
                    s.eps_abs = eps;
                    s.eps_rel = eps;
                }
            }
            _ => {}
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_reach_the_solvers_that_have_them() {
        let flags = SolverFlags {
            tolerance: Some(1e-8),
            pdhg_tolerance: Some(1e-4),
            max_iterations: Some(9),
            preconditioner: Some(Preconditioner::InverseHessian),
            precision: None,
            form: Some(DirectForm::Dual),
            parallelism: Parallelism::Threads(2),
        };
        let SolverSpec::Pcg(pcg) = flags.spec("pcg", Device::Cpu).unwrap() else { panic!() };
        assert_eq!(pcg.preconditioner, Preconditioner::InverseHessian);
        assert_eq!(pcg.precision, Precision::Double);
        assert_eq!((pcg.iterative.tolerance, pcg.iterative.max_iterations), (1e-8, 9));
        let SolverSpec::Pcg(gpu) = flags.spec("pcg", Device::Cuda { ordinal: 0 }).unwrap() else { panic!() };
        assert_eq!(gpu.precision, Precision::Mixed);
        let SolverSpec::Direct(direct) = flags.spec("direct", Device::Cpu).unwrap() else { panic!() };
        assert_eq!(direct.form, DirectForm::Dual);
        let SolverSpec::Pdhg(pdhg) = flags.spec("pdhg", Device::Cpu).unwrap() else { panic!() };
        assert_eq!((pdhg.eps_abs, pdhg.eps_rel, pdhg.iterative.max_iterations), (1e-4, 1e-4, 9));
        let SolverSpec::Auto(auto) = flags.spec("auto", Device::Cpu).unwrap() else { panic!() };
        assert_eq!((auto.tolerance, auto.parallelism), (1e-8, Parallelism::Threads(2)));
        // An explicit precision a GPU cannot honour is kept, and refused when the solver is built.
        let double = SolverFlags { precision: Some(Precision::Double), ..flags };
        let spec = double.spec("pcg", Device::Cuda { ordinal: 0 }).unwrap();
        assert!(spec.build(Device::Cuda { ordinal: 0 }).is_err());
        assert!(flags.spec("newton", Device::Cpu).is_err());
    }
}
