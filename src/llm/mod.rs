//! The end-to-end LLM side: tokenizer from GGUF metadata, the Llama forward pass, perplexity.

pub mod llama;
pub mod perplexity;
pub mod tokenizer;
