//! numpy arrays in and out: the element types each argument takes, read in place (any strides)
//! and copied once into the owned f64 matrices the core's problem types hold.

use ndarray::{Array2, ArrayView2};
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2};
use optima::Mask;
use pyo3::prelude::*;

/// A 2-D float array as numpy gave it: float64 or float32 (the Python layer casts float16).
#[derive(FromPyObject)]
pub enum FloatMatrix<'py> {
    /// float64.
    F64(PyReadonlyArray2<'py, f64>),
    /// float32.
    F32(PyReadonlyArray2<'py, f32>),
}

/// A borrowed view of a [`FloatMatrix`], which can cross into a thread that released the GIL.
#[derive(Clone, Copy)]
pub enum FloatView<'a> {
    /// float64.
    F64(ArrayView2<'a, f64>),
    /// float32.
    F32(ArrayView2<'a, f32>),
}

impl FloatMatrix<'_> {
    /// The array's elements where numpy keeps them.
    pub fn view(&self) -> FloatView<'_> {
        match self {
            Self::F64(a) => FloatView::F64(a.as_array()),
            Self::F32(a) => FloatView::F32(a.as_array()),
        }
    }
}

impl FloatView<'_> {
    /// Whether the elements are float32 (results are handed back in the input's type).
    pub fn is_f32(&self) -> bool {
        matches!(self, Self::F32(_))
    }

    /// A row-major f64 copy.
    pub fn to_f64(self) -> Array2<f64> {
        match self {
            Self::F64(v) => copy_into(v, |x| x),
            Self::F32(v) => copy_into(v, f64::from),
        }
    }
}

fn copy_into<T: Copy>(view: ArrayView2<'_, T>, cast: impl Fn(T) -> f64) -> Array2<f64> {
    let mut out = Array2::<f64>::zeros(view.dim());
    out.zip_mut_with(&view, |o, &x| *o = cast(x));
    out
}

/// A boolean mask array (True = pruned) as the core's [`Mask`].
pub fn mask_from(view: ArrayView2<'_, bool>) -> Mask {
    let (rows, cols) = view.dim();
    Mask::from_fn(rows, cols, |i, j| view.get((i, j)).copied().unwrap_or(false))
}

/// A mask as a numpy bool array (True = pruned).
pub fn mask_to_py<'py>(py: Python<'py>, mask: &Mask) -> Bound<'py, PyArray2<bool>> {
    Array2::from_shape_fn((mask.rows(), mask.cols()), |(i, j)| mask.is_pruned(i, j)).into_pyarray(py)
}
