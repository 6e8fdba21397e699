//! Which device a computation runs on, as a value: `cpu`, `cuda` or `cuda:N`.

use std::fmt;
use std::str::FromStr;

use crate::error::{OptimaError, Result};

/// A compute device. Always compiled, so that callers pick the backend by a value; asking for
/// `Cuda` in a build without the `cuda` feature (or on a machine without a GPU) gives
/// [`OptimaError::BackendUnavailable`] when a solver or accumulator is made for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Device {
    /// The CPU backend (faer and rayon).
    #[default]
    Cpu,
    /// An NVIDIA GPU through cudarc, by ordinal.
    Cuda {
        /// The device ordinal (`cuda` alone is 0).
        ordinal: usize,
    },
}

impl Device {
    /// Whether this is a CUDA device.
    pub fn is_cuda(self) -> bool {
        matches!(self, Self::Cuda { .. })
    }

    /// Whether this build was compiled with the `cuda` feature.
    pub fn cuda_compiled() -> bool {
        cfg!(feature = "cuda")
    }
}

impl FromStr for Device {
    type Err = OptimaError;

    /// `cpu`, `cuda` (ordinal 0) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || OptimaError::InvalidSetting(format!("unknown device {s:?}; choose cpu, cuda or cuda:N"));
        match s.trim() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda { ordinal: 0 }),
            other => {
                let ordinal = other.strip_prefix("cuda:").ok_or_else(bad)?;
                Ok(Self::Cuda { ordinal: ordinal.parse().map_err(|_| bad())? })
            }
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda { ordinal: 0 } => write!(f, "cuda"),
            Self::Cuda { ordinal } => write!(f, "cuda:{ordinal}"),
        }
    }
}

/// The error for a CUDA request in a build without the `cuda` feature.
pub fn cuda_not_compiled() -> OptimaError {
    OptimaError::BackendUnavailable(
        "this optima was built without CUDA support; rebuild with `cargo build --features cuda`".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda { ordinal: 0 });
        assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda { ordinal: 3 });
        assert!("gpu".parse::<Device>().is_err());
        assert!("cuda:x".parse::<Device>().is_err());
        for d in ["cpu", "cuda", "cuda:2"] {
            assert_eq!(d.parse::<Device>().unwrap().to_string(), d);
        }
    }
}
