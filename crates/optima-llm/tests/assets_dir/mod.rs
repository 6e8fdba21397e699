//! The workspace's downloaded assets (`assets/`, filled by `scripts/fetch-assets.sh`, which the
//! README's test command runs first). A test that needs one fails when it is missing, naming the
//! fix: it never passes without having run.
#![allow(dead_code)]

use std::path::PathBuf;

/// The workspace root (this crate lives in `crates/optima-llm`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `assets/NAME`, which must exist.
pub fn require(name: &str) -> PathBuf {
    let path = workspace_root().join("assets").join(name);
    assert!(path.exists(), "{} is missing: run scripts/fetch-assets.sh (the tests need it)", path.display());
    path
}

/// The SmolLM2-135M GGUF.
pub fn smollm2() -> PathBuf {
    require("SmolLM2-135M-Instruct.Q4_1.gguf")
}
