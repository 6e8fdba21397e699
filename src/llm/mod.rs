//! The end-to-end LLM side: tokenizer from GGUF metadata, the Llama forward pass, perplexity,
//! block-sequential pruning with checkpoints.

mod activations;
pub mod calibration;
pub mod checkpoint;
pub mod llama;
pub mod model_file;
pub mod perplexity;
pub mod prune;
pub mod tokenizer;
