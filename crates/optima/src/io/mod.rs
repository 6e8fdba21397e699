//! Files: atomic writes, and (feature `problem-files`) layer problems and solutions as safetensors.

#[cfg(feature = "problem-files")]
mod problem_file;

use std::io::Write;
use std::path::Path;

#[cfg(feature = "problem-files")]
pub use problem_file::{ProblemFile, parse_problem_file, read_problem_file, write_problem_file, write_solution_file};

use crate::error::{OptimaError, Result};

fn temporary_prefix(path: &Path) -> String {
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    format!(".{name}.tmp-")
}

/// Removes temporaries that [`write_atomically`] or [`write_dir_atomically`] left beside `path` when a process writing it was
/// killed mid-write. Best effort: what cannot be listed or removed is left alone.
pub fn remove_stale_temporaries(path: &Path) {
    let prefix = temporary_prefix(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            // A folder is what [`write_dir_atomically`] left.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir_all(entry.path());
            } else {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, flushed, then renamed over.
/// A failure leaves any previous file at `path` untouched.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically_with(path, |file| {
        file.write_all(bytes).map_err(|source| OptimaError::Io { path: path.to_path_buf(), source })
    })
}

/// As [`write_atomically`], with the content streamed by `write` into the temporary file, so
/// that a large file never has to be whole in memory.
pub fn write_atomically_with(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    write_atomically_via(path, |tmp| {
        let io_err = |source| OptimaError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::create(tmp).map_err(io_err)?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
        write(&mut writer)?;
        writer.flush().map_err(io_err)
    })
}

/// As [`write_atomically`], with `write` creating the temporary file at the path it is given
/// (for writers that want a path); it is then synced and renamed over `path`.
pub fn write_atomically_via(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let io_err = |source| OptimaError::Io { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = dir.join(format!("{}{}", temporary_prefix(path), std::process::id()));
    let result = (|| {
        write(&tmp)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io_err)?;
        std::fs::rename(&tmp, path).map_err(io_err)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes the folder `path` atomically: `write` fills a temporary folder beside it, whose files
/// are then synced and which is renamed to `path`. A folder already at `path` (the caller decides
/// whether it may be replaced) is moved aside first and removed once the new one is in place; a
/// failure removes the temporary folder and leaves any previous folder at `path` as it was.
pub fn write_dir_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let io_err = |source| OptimaError::Io { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = dir.join(format!("{}{}", temporary_prefix(path), std::process::id()));
    let old = dir.join(format!("{}old-{}", temporary_prefix(path), std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err)?;
    }
    std::fs::create_dir(&tmp).map_err(io_err)?;
    let result = (|| {
        write(&tmp)?;
        for entry in std::fs::read_dir(&tmp).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            std::fs::File::open(entry.path()).and_then(|f| f.sync_all()).map_err(io_err)?;
        }
        if path.exists() {
            std::fs::rename(path, &old).map_err(io_err)?;
            if let Err(source) = std::fs::rename(&tmp, path) {
                let _ = std::fs::rename(&old, path);
                return Err(io_err(source));
            }
            let _ = std::fs::remove_dir_all(&old);
            Ok(())
        } else {
            std::fs::rename(&tmp, path).map_err(io_err)
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}
