//! # optima-llm — Llama-family models for optima
//!
//! The end-to-end LLM side of [optima](https://docs.rs/optima): GGUF files and Hugging Face
//! checkpoints, the tokenizer from GGUF metadata (or `tokenizer.json`), the Llama forward pass, perplexity, and block-sequential pruning with
//! checkpoints. Long runs report [`progress`] events through a callback.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

mod activations;
pub mod allocation;
pub mod calibration;
pub mod checkpoint;
pub mod gguf;
pub mod held_out;
pub mod hf;
mod layer;
pub mod llama;
pub mod model_file;
pub mod perplexity;
pub mod preset;
pub mod progress;
pub mod prune;
pub mod report;
pub mod settings;
mod stages;
pub mod tokenizer;
