//! Calibration activations between blocks: in memory, or spilled to disk one sequence per file
//! when a memory budget says they do not fit (then only one sequence is in memory at a time).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2};

use optima::error::{OptimaError, Result};
use optima::io::write_atomically;

/// One matrix per calibration sequence.
pub(crate) enum ActivationStore {
    /// All sequences in memory.
    Memory(Vec<Array2<f32>>),
    /// Sequence `s` in `dir/seq{s}.bin`; `dir` is removed when the store is dropped.
    Disk { dir: PathBuf, count: usize },
}

impl ActivationStore {
    /// Sequences held.
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Memory(xs) => xs.len(),
            Self::Disk { count, .. } => *count,
        }
    }

    /// Sequence `s`.
    pub(crate) fn get(&self, s: usize) -> Result<Cow<'_, Array2<f32>>> {
        match self {
            Self::Memory(xs) => xs
                .get(s)
                .map(Cow::Borrowed)
                .ok_or_else(|| OptimaError::Internal(format!("no calibration sequence {s}"))),
            Self::Disk { dir, .. } => read_matrix(&sequence_file(dir, s)).map(Cow::Owned),
        }
    }

    /// Builds a store from `count` sequences made by `make`, in memory or (with `spill`) in
    /// that new folder.
    pub(crate) fn build(
        count: usize,
        spill: Option<PathBuf>,
        mut make: impl FnMut(usize) -> Result<Array2<f32>>,
    ) -> Result<Self> {
        let mut writer = ActivationWriter::new(spill)?;
        for s in 0..count {
            writer.push(make(s)?)?;
        }
        Ok(writer.finish())
    }

    /// Writes every sequence into `dir` (one file each), for a checkpoint.
    pub(crate) fn write_to(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| OptimaError::Io { path: dir.to_path_buf(), source })?;
        for s in 0..self.len() {
            write_matrix(&sequence_file(dir, s), self.get(s)?.view())?;
        }
        Ok(())
    }

    /// Reads `count` sequences written by [`Self::write_to`], into memory or (with `spill`) into
    /// that new folder.
    pub(crate) fn read_from(dir: &Path, count: usize, spill: Option<PathBuf>) -> Result<Self> {
        Self::build(count, spill, |s| read_matrix(&sequence_file(dir, s)))
    }
}

/// A store being filled one sequence at a time, in order.
pub(crate) struct ActivationWriter {
    store: ActivationStore,
}

impl ActivationWriter {
    /// An empty store in memory, or (with `spill`) in that new folder.
    pub(crate) fn new(spill: Option<PathBuf>) -> Result<Self> {
        let store = match spill {
            None => ActivationStore::Memory(Vec::new()),
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(|source| OptimaError::Io { path: dir.clone(), source })?;
                ActivationStore::Disk { dir, count: 0 }
            }
        };
        // Owned from here on, so that a failure later removes the folder.
        Ok(Self { store })
    }

    /// Appends the next sequence.
    pub(crate) fn push(&mut self, a: Array2<f32>) -> Result<()> {
        match &mut self.store {
            ActivationStore::Memory(xs) => xs.push(a),
            ActivationStore::Disk { dir, count } => {
                write_matrix(&sequence_file(dir, *count), a.view())?;
                *count += 1;
            }
        }
        Ok(())
    }

    /// The filled store.
    pub(crate) fn finish(self) -> ActivationStore {
        self.store
    }
}

impl Drop for ActivationStore {
    fn drop(&mut self) {
        if let Self::Disk { dir, .. } = self {
            // Scratch data; failing to remove it loses nothing.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn sequence_file(dir: &Path, s: usize) -> PathBuf {
    dir.join(format!("seq{s}.bin"))
}

/// `rows`, `cols` as little-endian u64, then the values as little-endian f32, row-major.
pub(super) fn write_matrix(path: &Path, a: ArrayView2<'_, f32>) -> Result<()> {
    let mut bytes = Vec::with_capacity(16 + 4 * a.len());
    bytes.extend((a.nrows() as u64).to_le_bytes());
    bytes.extend((a.ncols() as u64).to_le_bytes());
    a.iter().for_each(|v| bytes.extend(v.to_le_bytes()));
    write_atomically(path, &bytes)
}

pub(super) fn read_matrix(path: &Path) -> Result<Array2<f32>> {
    let bytes = std::fs::read(path).map_err(|source| OptimaError::Io { path: path.to_path_buf(), source })?;
    let bad = |detail: &str| OptimaError::Format { path: path.to_path_buf(), detail: detail.to_string() };
    let (header, data) = bytes.split_at_checked(16).ok_or_else(|| bad("truncated activation file"))?;
    let word = |i: usize| {
        header
            .get(i..i + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| bad("bad activation header"))
    };
    let (rows, cols) = (word(0)?, word(8)?);
    if rows.checked_mul(cols).and_then(|n| n.checked_mul(4)) != Some(data.len()) {
        return Err(bad("activation file size does not match its header"));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| c.try_into().map(f32::from_le_bytes).map_err(|_| bad("truncated activation data")))
        .collect::<Result<Vec<f32>>>()?;
    Array2::from_shape_vec((rows, cols), values).map_err(|e| bad(&e.to_string()))
}
