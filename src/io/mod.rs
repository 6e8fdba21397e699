//! Files: layer problems and solutions as safetensors; writes are atomic.

pub mod gguf;
mod problem_file;

use std::io::Write;
use std::path::Path;

pub use problem_file::{ProblemFile, read_problem_file, write_problem_file, write_solution_file};

use crate::error::{OptimaError, Result};

/// Writes `bytes` to `path` atomically: a temporary file beside it, flushed, then renamed over.
/// A failure leaves any previous file at `path` untouched.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io_err = |source| OptimaError::Io { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}
