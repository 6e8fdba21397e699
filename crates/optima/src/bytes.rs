//! Byte counts that print and parse with binary units: a leaf type that errors and budgets share.

use std::fmt;
use std::str::FromStr;

/// A byte count that prints and parses with binary units (`512M`, `8G`, `1.5GiB`, `4096`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl Bytes {
    /// `f64` elements.
    pub fn f64s(count: usize) -> Self {
        Self((count as u64).saturating_mul(8))
    }

    /// `f32` elements.
    pub fn f32s(count: usize) -> Self {
        Self((count as u64).saturating_mul(4))
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl std::ops::Add for Bytes {
    type Output = Bytes;
    fn add(self, rhs: Bytes) -> Bytes {
        Bytes(self.0.saturating_add(rhs.0))
    }
}

impl std::ops::Mul<usize> for Bytes {
    type Output = Bytes;
    fn mul(self, rhs: usize) -> Bytes {
        Bytes(self.0.saturating_mul(rhs as u64))
    }
}

impl std::iter::Sum for Bytes {
    fn sum<I: Iterator<Item = Bytes>>(iter: I) -> Bytes {
        iter.fold(Bytes(0), |a, b| a + b)
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        match UNITS.get(unit) {
            Some(&"B") | None => write!(f, "{} B", self.0),
            Some(u) => write!(f, "{value:.1} {u}"),
        }
    }
}

impl FromStr for Bytes {
    type Err = ParseBytesError;
    fn from_str(s: &str) -> Result<Self, ParseBytesError> {
        let bad = || ParseBytesError(s.to_string());
        let t = s.trim();
        let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let value: f64 = number.trim().parse().map_err(|_| bad())?;
        let shift = match unit.trim().to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
            "" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            "T" => 40,
            _ => return Err(bad()),
        };
        let bytes = value * (1u64 << shift) as f64;
        if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
            return Err(bad());
        }
        Ok(Self(bytes as u64))
    }
}

/// A memory size that does not parse (`8G`, `512M`, `1.5GiB` and `4096` do).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("memory size {0:?}: expected a number with K, M, G or T")]
pub struct ParseBytesError(pub String);
