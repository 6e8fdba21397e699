//! The problem's data types: Hessian, masks and patterns, layer problems and solutions.

mod hessian;
mod layer;
mod mask;
mod pattern;
mod solution;

pub use hessian::{DEFAULT_PERCDAMP, Hessian};
pub use layer::LayerProblem;
pub use mask::{Mask, pruned_count};
pub use pattern::{RatioScope, SparsityPattern};
pub use solution::{RowReport, RowStatus, Solution, SolveReport};
