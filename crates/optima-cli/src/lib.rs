//! The `optima` binary's library: its benchmark harness (generated and real layer problems, every
//! solver side by side, the Llama-3-8B-shaped bench) and its solver flags. The binary
//! (`src/main.rs`) and the criterion bench use it.

pub mod harness;
pub mod solver_flags;
