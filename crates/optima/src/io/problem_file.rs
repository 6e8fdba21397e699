//! The layer-problem file `optima solve` reads: safetensors with `weight` [m,n] (f32/f16/bf16),
//! `hessian` [n,n] (f64/f32) and optionally `mask` [m,n] u8 (1 = pruned).

use std::collections::HashMap;
use std::path::Path;

use ndarray::{Array2, ArrayView2};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::write_atomically;
use crate::error::{OptimaError, Result};
use crate::problem::Mask;

/// The contents of a problem file, checked for shapes and element types (not for finiteness or
/// symmetry: [`crate::problem::Hessian::new`] and [`crate::problem::LayerProblem::new`] do that).
#[derive(Clone, Debug)]
pub struct ProblemFile {
    /// Weights, m×n.
    pub weight: Array2<f64>,
    /// Undamped Hessian, n×n.
    pub hessian: Array2<f64>,
    /// The mask, when the file has one.
    pub mask: Option<Mask>,
}

/// Reads and checks a problem file.
pub fn read_problem_file(path: &Path) -> Result<ProblemFile> {
    let bytes = std::fs::read(path).map_err(|source| OptimaError::Io { path: path.to_path_buf(), source })?;
    parse_problem_file(&bytes, path)
}

/// Checks a problem file already in memory (see [`read_problem_file`]); `path` only names the
/// file in errors.
pub fn parse_problem_file(bytes: &[u8], path: &Path) -> Result<ProblemFile> {
    let format = |detail: String| OptimaError::Format { path: path.to_path_buf(), detail };
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| format(format!("not a valid safetensors file: {e}")))?;
    let get = |name: &str| {
        tensors
            .tensor(name)
            .map_err(|_| format(format!("has no tensor {name:?} (found: {})", tensors.names().join(", "))))
    };
    let weight = to_matrix(&get("weight")?, "weight", &[Dtype::F32, Dtype::F16, Dtype::BF16]).map_err(format)?;
    let hessian = to_matrix(&get("hessian")?, "hessian", &[Dtype::F64, Dtype::F32]).map_err(format)?;
    let (m, n) = weight.dim();
    if hessian.dim() != (n, n) {
        return Err(OptimaError::shape(
            "hessian vs weight",
            format!("{n}×{n}"),
            format!("{}×{}", hessian.nrows(), hessian.ncols()),
        ));
    }
    let mask = match tensors.tensor("mask") {
        Err(_) => None,
        Ok(view) => {
            if view.dtype() != Dtype::U8 {
                return Err(format(format!("tensor \"mask\" is {:?}; it must be U8 (1 = pruned)", view.dtype())));
            }
            let dims = matrix_dims(&view, "mask").map_err(format)?;
            if dims != (m, n) {
                return Err(OptimaError::shape("mask vs weight", format!("{m}×{n}"), format!("{}×{}", dims.0, dims.1)));
            }
            let dense =
                ArrayView2::from_shape(dims, view.data()).map_err(|e| format(format!("tensor \"mask\": {e}")))?;
            Some(Mask::from_dense(dense)?)
        }
    };
    Ok(ProblemFile { weight, hessian, mask })
}

fn matrix_dims(view: &TensorView<'_>, name: &str) -> std::result::Result<(usize, usize), String> {
    match *view.shape() {
        [rows, cols] => Ok((rows, cols)),
        ref other => Err(format!("tensor {name:?} has shape {other:?}; it must be 2-D")),
    }
}

fn to_matrix(view: &TensorView<'_>, name: &str, allowed: &[Dtype]) -> std::result::Result<Array2<f64>, String> {
    let dims = matrix_dims(view, name)?;
    let data = view.data();
    let values: Vec<f64> = match view.dtype() {
        Dtype::F64 if allowed.contains(&Dtype::F64) => le_values(data, f64::from_le_bytes),
        Dtype::F32 if allowed.contains(&Dtype::F32) => le_values(data, |b| f64::from(f32::from_le_bytes(b))),
        Dtype::F16 if allowed.contains(&Dtype::F16) => le_values(data, |b| half::f16::from_le_bytes(b).to_f64()),
        Dtype::BF16 if allowed.contains(&Dtype::BF16) => le_values(data, |b| half::bf16::from_le_bytes(b).to_f64()),
        other => return Err(format!("tensor {name:?} has dtype {other:?}; allowed: {allowed:?}")),
    };
    Array2::from_shape_vec(dims, values).map_err(|e| format!("tensor {name:?}: {e}"))
}

/// The values of little-endian data, `N` bytes each (a trailing partial value is dropped; the
/// safetensors reader has already checked the length against the shape).
fn le_values<const N: usize>(data: &[u8], convert: impl Fn([u8; N]) -> f64) -> Vec<f64> {
    data.chunks_exact(N).filter_map(|c| <[u8; N]>::try_from(c).ok()).map(convert).collect()
}

fn f32_bytes(a: ArrayView2<'_, f64>) -> Vec<u8> {
    a.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect()
}

fn write_tensors(path: &Path, tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>) -> Result<()> {
    let format =
        |e: safetensors::SafeTensorError| OptimaError::Format { path: path.to_path_buf(), detail: e.to_string() };
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            Ok((name.to_string(), TensorView::new(*dtype, shape.clone(), data).map_err(format)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("producer".to_string(), format!("optima {}", env!("CARGO_PKG_VERSION")))]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(format)?;
    write_atomically(path, &bytes)
}

/// Writes a problem file: `weight` as f32, `hessian` as f64, and `mask` as u8 when given.
pub fn write_problem_file(
    path: &Path,
    weight: ArrayView2<'_, f64>,
    hessian: ArrayView2<'_, f64>,
    mask: Option<&Mask>,
) -> Result<()> {
    let mut tensors = vec![
        ("weight", Dtype::F32, weight.shape().to_vec(), f32_bytes(weight)),
        ("hessian", Dtype::F64, hessian.shape().to_vec(), hessian.iter().flat_map(|v| v.to_le_bytes()).collect()),
    ];
    if let Some(mask) = mask {
        tensors.push(("mask", Dtype::U8, vec![mask.rows(), mask.cols()], mask.to_dense().into_raw_vec_and_offset().0));
    }
    write_tensors(path, tensors)
}

/// Writes a solution file: the reconstructed `weight` as f32 (pruned entries exactly 0) and `mask`.
pub fn write_solution_file(path: &Path, weight: ArrayView2<'_, f64>, mask: &Mask) -> Result<()> {
    write_tensors(
        path,
        vec![
            ("weight", Dtype::F32, weight.shape().to_vec(), f32_bytes(weight)),
            ("mask", Dtype::U8, vec![mask.rows(), mask.cols()], mask.to_dense().into_raw_vec_and_offset().0),
        ],
    )
}
