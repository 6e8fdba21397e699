//! The `optima` binary's benchmark harness: generated and real layer problems, every solver side by
//! side, and the Llama-3-8B-shaped bench. The binary (`src/main.rs`) and the criterion bench use it.

pub mod harness;
