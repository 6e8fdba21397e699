//! Where a GGUF file's bytes live: in memory ([`GgufFile::from_bytes`](super::GgufFile::from_bytes))
//! or memory-mapped from the file ([`GgufFile::read`](super::GgufFile::read)), so that a model is
//! not held twice (the file and its `f32` weights) while it loads.
//!
//! A mapped file is assumed not to be modified or truncated while it is mapped, as by every
//! mmap-based model reader: bytes that change under the map change what is read, and touching a
//! page past a shortened end raises `SIGBUS`, which no error value can catch. What can be checked
//! is: every tensor lies inside the file as it was when opened (checked once, before any tensor is
//! read), and the file has not shrunk since (checked again before each tensor's bytes are handed
//! out, see [`FileBytes::check_intact`]), so a file truncated between two reads is a format error.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use optima::error::{OptimaError, Result};

/// The bytes of a GGUF file.
pub(crate) enum FileBytes {
    /// Read into memory (or built there).
    Owned(Vec<u8>),
    /// Mapped read-only from `file`, which stays open so its length can be checked again.
    Mapped {
        /// The mapping of the whole file.
        map: Mmap,
        /// The mapped file.
        file: File,
    },
}

impl FileBytes {
    /// Maps the file at `path` read-only.
    pub(crate) fn map(path: &Path) -> Result<FileBytes> {
        let io = |source| OptimaError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        // SAFETY: a read-only shared map of a file, under the assumption stated in the module
        // docs (the file is not modified or truncated while mapped); every access goes through
        // bounds-checked slices of the map's length, and `check_intact` refuses to hand out bytes
        // once the file is shorter than the map.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Ok(FileBytes::Mapped { map, file })
    }

    /// All the bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            FileBytes::Owned(v) => v,
            FileBytes::Mapped { map, .. } => map,
        }
    }

    /// For a mapped file: an error if the file is now shorter than the map (truncated since it was
    /// opened; reading its tail would crash the process). Always fine in memory.
    pub(crate) fn check_intact(&self, path: &Path) -> Result<()> {
        let FileBytes::Mapped { map, file } = self else { return Ok(()) };
        let now = file.metadata().map_err(|source| OptimaError::Io { path: path.to_path_buf(), source })?.len();
        if now < map.len() as u64 {
            return Err(OptimaError::Format {
                path: path.to_path_buf(),
                detail: format!(
                    "the file shrank from {} to {now} bytes while it was open (overwritten or truncated?)",
                    map.len()
                ),
            });
        }
        Ok(())
    }

    /// Tells the OS that bytes `start..start + len` are not needed soon, so a mapped file's pages
    /// stop counting towards this process's memory once a tensor has been converted (they are
    /// read again from the file, or the page cache, if touched again). Does nothing in memory.
    pub(crate) fn release(&self, start: usize, len: usize) {
        #[cfg(unix)]
        if let FileBytes::Mapped { map, .. } = self {
            // SAFETY: `MADV_DONTNEED` on a read-only *shared* file mapping only drops this process's
            // page-table entries: a later access faults the same bytes back in from the file, so a
            // live borrow of the range sees unchanged contents (given the module's assumption that
            // the file is not modified). memmap2 marks it unsafe for private and anonymous maps,
            // where it would discard data. The result is ignored: it is only advice.
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
        }
        #[cfg(not(unix))]
        let _ = (start, len);
    }
}
