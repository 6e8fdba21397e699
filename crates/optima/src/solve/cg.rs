//! The batched conjugate-gradient core `pcg` and `dual-pcg` share: the precision the GEMMs run
//! in, the operators, and the live rows with their fused step and direction passes.
//!
//! Both solve one SPD system per row, restricted to a per-row set of entries (the kept inputs for
//! `pcg`, the pruned ones for `dual-pcg`), with a shared operator: all live rows advance together,
//! one GEMM per iteration, then one fused pass over each row (step and new direction), rows in
//! parallel.

#![allow(clippy::indexing_slicing)] // Dense kernels: every index runs over the dimensions LayerProblem::new validated (m rows, n
// inputs) or over the live batch built from them.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use faer_ext::IntoFaer;
use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::backend::cpu::{cholesky_inverse, cholesky_of};
use crate::error::Result;

/// The scalar the iterations' GEMMs run in: f64, or f32 in mixed precision.
pub(crate) trait ProductScalar: faer::traits::ComplexField + Copy + Send + Sync + 'static {
    /// Rounds an f64 to this type.
    fn narrow(value: f64) -> Self;
    /// Widens back to f64.
    fn widen(self) -> f64;
    /// Unit roundoff of this type.
    const ROUNDOFF: f64;
    /// A symmetric operator in this precision: borrowed when it already is.
    fn operator(matrix: ArrayView2<'_, f64>) -> Operator<'_, Self>;
    /// A faer matrix in this precision: borrowed when it already is.
    fn lowered(matrix: MatRef<'_, f64>) -> Operator<'_, Self>;
    /// `H⁻¹` of the symmetric positive definite `h`, in this precision.
    fn inverse(h: ArrayView2<'_, f64>, par: Par) -> Result<Operator<'static, Self>>;
}

/// `H⁻¹` in f64: Cholesky (with bounded regularization retries) and the inverse of the factor.
pub(crate) fn inverse_f64(h: ArrayView2<'_, f64>, par: Par) -> Result<Mat<f64>> {
    let (l, _) = cholesky_of(h, 0.0, par)?;
    Ok(cholesky_inverse(l.as_ref(), par))
}

impl ProductScalar for f64 {
    const ROUNDOFF: f64 = f64::EPSILON / 2.0;
    fn narrow(value: f64) -> Self {
        value
    }
    fn widen(self) -> f64 {
        self
    }
    fn operator(matrix: ArrayView2<'_, f64>) -> Operator<'_, Self> {
        Operator::Borrowed(matrix.into_faer())
    }
    fn lowered(matrix: MatRef<'_, f64>) -> Operator<'_, Self> {
        Operator::Borrowed(matrix)
    }
    fn inverse(h: ArrayView2<'_, f64>, par: Par) -> Result<Operator<'static, Self>> {
        Ok(Operator::Owned(inverse_f64(h, par)?))
    }
}

impl ProductScalar for f32 {
    const ROUNDOFF: f64 = f32::EPSILON as f64 / 2.0;
    fn narrow(value: f64) -> Self {
        value as f32
    }
    fn widen(self) -> f64 {
        f64::from(self)
    }
    /// Reads `matrix[[j, i]]` for entry (i, j) of the column-major copy: the same value for a
    /// symmetric matrix, and contiguous reads of the row-major original.
    fn operator(matrix: ArrayView2<'_, f64>) -> Operator<'_, Self> {
        Operator::Owned(Mat::from_fn(matrix.nrows(), matrix.ncols(), |i, j| matrix[[j, i]] as f32))
    }
    fn lowered(matrix: MatRef<'_, f64>) -> Operator<'_, Self> {
        Operator::Owned(Mat::from_fn(matrix.nrows(), matrix.ncols(), |i, j| matrix[(i, j)] as f32))
    }
    /// Factored and inverted in f32 (it only preconditions, and twice as fast as f64); in f64 and
    /// rounded when `H` is too ill-conditioned for an f32 Cholesky.
    fn inverse(h: ArrayView2<'_, f64>, par: Par) -> Result<Operator<'static, Self>> {
        let n = h.nrows();
        let mut l = Mat::<f32>::from_fn(n, n, |i, j| if i >= j { h[[j, i]] as f32 } else { 0.0 });
        let scratch = llt::factor::cholesky_in_place_scratch::<f32>(n, par, Default::default())
            .or(llt::inverse::inverse_scratch::<f32>(n, par));
        let mut buffer = MemBuffer::new(scratch);
        let factored = llt::factor::cholesky_in_place(
            l.as_mut(),
            Default::default(),
            par,
            MemStack::new(&mut buffer),
            Default::default(),
        );
        if factored.is_ok() {
            let mut inverse = Mat::<f32>::zeros(n, n);
            llt::inverse::inverse(inverse.as_mut(), l.as_ref(), par, MemStack::new(&mut buffer));
            for j in 0..n {
                for i in 0..j {
                    inverse[(i, j)] = inverse[(j, i)];
                }
            }
            if (0..n).all(|j| inverse.col(j).iter().all(|v| v.is_finite())) {
                return Ok(Operator::Owned(inverse));
            }
        }
        let g = inverse_f64(h, par)?;
        Ok(Operator::Owned(Mat::from_fn(n, n, |i, j| g[(i, j)] as f32)))
    }
}

/// An n×n operator the batch is multiplied by.
pub(crate) enum Operator<'a, T> {
    /// A view of the caller's matrix.
    Borrowed(MatRef<'a, T>),
    /// A matrix of its own.
    Owned(Mat<T>),
}

impl<T> Operator<'_, T> {
    pub(crate) fn view(&self) -> MatRef<'_, T> {
        match self {
            Self::Borrowed(m) => *m,
            Self::Owned(m) => m.as_ref(),
        }
    }
}

/// `out = input · op` for row-major `rows × n` buffers and a symmetric `op`.
pub(crate) fn product<T: ProductScalar>(input: &[T], rows: usize, op: MatRef<'_, T>, out: &mut [T], par: Par) {
    let n = op.ncols();
    faer::linalg::matmul::matmul(
        MatMut::from_row_major_slice_mut(out, rows, n),
        Accum::Replace,
        MatRef::from_row_major_slice(input, rows, n),
        op,
        T::narrow(1.0),
        par,
    );
}

/// The shared preconditioner in the iterations' precision.
pub(crate) enum Apply<T: 'static> {
    /// `diag(d)`: `z = d ∘ r`.
    Diagonal(Vec<f64>),
    /// A dense operator `M`: `z = M r`, restricted to the row's entries (one more GEMM).
    Dense(Operator<'static, T>),
}

/// The scalars of one live row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowState {
    /// The row's index in the layer.
    pub(crate) global: usize,
    /// CG steps taken.
    pub(crate) iterations: usize,
    /// `‖(H w)_S‖∞`, the scale of the relative KKT residual.
    pub(crate) scale: f64,
    /// `rᵀz` of the current residual.
    pub(crate) rz: f64,
    /// `‖r‖∞` of the recurrence.
    pub(crate) residual: f64,
    /// The last step went nowhere (`pᵀAp ≤ 0` in the products' precision): check and restart.
    pub(crate) stalled: bool,
    /// A step or product was not finite.
    pub(crate) broken: bool,
}

/// The live rows: iterates in f64, everything the GEMMs read or write in `T`, all row-major.
///
/// Only the iterate needs f64: the residual and direction are corrected by the f64 residual
/// checks and restarts, so storing them in `T` costs no accuracy and halves the memory traffic of
/// the fused passes in mixed precision.
pub(crate) struct Batch<T> {
    /// Row width (the layer's inputs).
    pub(crate) n: usize,
    /// One per live row.
    pub(crate) states: Vec<RowState>,
    /// Iterates (zero outside the row's entries).
    pub(crate) x: Vec<f64>,
    /// 1 on the row's entries (kept inputs for `pcg`, pruned ones for `dual-pcg`), 0 elsewhere.
    pub(crate) active: Vec<T>,
    /// Residuals, zero outside the row's entries (the dense preconditioner's input).
    pub(crate) r: Vec<T>,
    /// Directions, zero outside the row's entries (the operator GEMM's input).
    pub(crate) p: Vec<T>,
    /// GEMM output.
    pub(crate) out: Vec<T>,
}

impl RowState {
    /// Row `global` before its first step.
    pub(crate) fn new(global: usize) -> Self {
        Self { global, iterations: 0, scale: 1.0, rz: 0.0, residual: 0.0, stalled: false, broken: false }
    }
}

impl<T: ProductScalar> Batch<T> {
    /// Rows `states` with iterates `x` on their entries `active` (both row-major, `n` wide);
    /// residuals and directions zero until the caller starts them.
    pub(crate) fn new(n: usize, states: Vec<RowState>, x: Vec<f64>, active: Vec<T>) -> Self {
        let zero = T::narrow(0.0);
        let len = states.len() * n;
        Self { n, states, x, active, r: vec![zero; len], p: vec![zero; len], out: vec![zero; len] }
    }

    /// Live rows.
    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    /// The local rows `rows`, the `c`-th filled by `fill(c, local, row)` into the f64 row-major
    /// buffer `input`, multiplied by `h` in f64 into `out` (both resized; callers that check
    /// repeatedly reuse them).
    pub(crate) fn product_f64(
        &self,
        rows: &[usize],
        h: MatRef<'_, f64>,
        par: Par,
        fill: impl Fn(usize, usize, &mut [f64]) + Sync,
        input: &mut Vec<f64>,
        out: &mut Vec<f64>,
    ) {
        let n = self.n;
        input.resize(rows.len() * n, 0.0);
        input.truncate(rows.len() * n);
        input.par_chunks_mut(n).zip(rows.par_iter()).enumerate().for_each(|(c, (dst, &i))| fill(c, i, dst));
        out.resize(rows.len() * n, 0.0);
        out.truncate(rows.len() * n);
        product(input, rows.len(), h, out, par);
    }

    /// A full CG iteration of every live row with the shared operator `A`: `q = A p`, then
    /// `x += α p`, `r −= α q` on the row's entries, then new directions. With a diagonal
    /// preconditioner the step and the direction run in one pass, each row's direction while the
    /// row is still in cache; a dense one needs its own product first.
    pub(crate) fn iterate(&mut self, a: MatRef<'_, T>, precond: &Apply<T>, par: Par) {
        let diagonal = match precond {
            Apply::Diagonal(d) => Some(d.as_slice()),
            Apply::Dense(_) => None,
        };
        let n = self.n;
        product(&self.p, self.len(), a, &mut self.out, par);
        self.x
            .par_chunks_mut(n)
            .zip(self.r.par_chunks_mut(n))
            .zip(self.p.par_chunks_mut(n).zip(self.active.par_chunks(n)).zip(self.out.par_chunks(n)))
            .zip(self.states.par_iter_mut())
            .for_each(|(((x, r), ((p, active), q)), state)| {
                let direction = diagonal.map(|d| (RowPreconditioner::Diagonal(d), false));
                pulp::Arch::new().dispatch(RowKernel { x, r, p, active, q, state, direction });
            });
        if diagonal.is_none() {
            self.directions(None, precond, false, par);
        }
    }

    /// New directions `p = z + β p` (`β = 0` when `restart`) of the local rows `rows` (all when
    /// `None`), with `z` the preconditioned residual.
    pub(crate) fn directions(&mut self, rows: Option<&[usize]>, precond: &Apply<T>, restart: bool, par: Par) {
        let n = self.n;
        let live = self.len();
        let mut slot: Vec<Option<usize>> = vec![None; live];
        match rows {
            None => slot.iter_mut().enumerate().for_each(|(i, s)| *s = Some(i)),
            Some(rows) => rows.iter().enumerate().for_each(|(c, &i)| slot[i] = Some(c)),
        }
        let mut gathered: Vec<T> = Vec::new();
        if let Apply::Dense(g) = precond {
            match rows {
                None => product(&self.r, live, g.view(), &mut self.out, par),
                Some(rows) => {
                    let mut input = Vec::with_capacity(rows.len() * n);
                    for &i in rows {
                        input.extend_from_slice(&self.r[i * n..(i + 1) * n]);
                    }
                    gathered = vec![T::narrow(0.0); rows.len() * n];
                    product(&input, rows.len(), g.view(), &mut gathered, par);
                }
            }
        }
        let products: &[T] = if rows.is_none() { &self.out } else { &gathered };
        self.p
            .par_chunks_mut(n)
            .zip(self.r.par_chunks(n).zip(self.active.par_chunks(n)))
            .zip(self.states.par_iter_mut())
            .zip(slot.par_iter())
            .for_each(|(((p, (r, active)), state), slot)| {
                let Some(c) = *slot else { return };
                let z = match precond {
                    Apply::Dense(_) => RowPreconditioner::Product { z: &products[c * n..(c + 1) * n], active },
                    Apply::Diagonal(d) => RowPreconditioner::Diagonal(d),
                };
                pulp::Arch::new().dispatch(DirectionKernel { p, r, z, restart, state });
            });
    }

    /// Moves the local rows `keep` (ascending) to the front and drops the rest.
    pub(crate) fn retain(&mut self, keep: &[usize]) {
        let n = self.n;
        compact(&mut self.x, n, keep);
        compact(&mut self.active, n, keep);
        compact(&mut self.r, n, keep);
        compact(&mut self.p, n, keep);
        compact(&mut self.states, 1, keep);
        self.out.truncate(keep.len() * n);
    }
}

/// The step of one row: `α = rᵀz / pᵀq`, `x += α p`, `r −= α q` on the row's entries.
#[inline(always)]
fn step_row<T: ProductScalar>(x: &mut [f64], r: &mut [T], p: &[T], active: &[T], q: &[T], state: &mut RowState) {
    let pq = sum3(p, q, active, |p, q, k| p.widen() * q.widen() * k.widen());
    state.broken |= !(pq.is_finite() && state.rz.is_finite());
    let descends = pq > 0.0;
    state.stalled = !descends;
    let alpha = if descends { state.rz / pq } else { 0.0 };
    let update = |x: &mut f64, r: &mut T, p: T, q: T, k: T| {
        *x += alpha * p.widen();
        let rj = r.widen() - alpha * q.widen() * k.widen();
        *r = T::narrow(rj);
        rj.abs()
    };
    let mut residual = Lanes::default();
    let ((xc, xt), (rc, rt)) = (blocks_mut(x), blocks_mut(r));
    let ((pc, pt), (qc, qt), (kc, kt)) = (blocks(p), blocks(q), blocks(active));
    for ((((x, r), p), q), k) in xc.zip(rc).zip(pc).zip(qc).zip(kc) {
        for l in 0..LANES {
            residual.max(l, update(&mut x[l], &mut r[l], p[l], q[l], k[l]));
        }
    }
    for ((((x, r), p), q), k) in xt.iter_mut().zip(rt.iter_mut()).zip(pt).zip(qt).zip(kt) {
        residual.max(0, update(x, r, *p, *q, *k));
    }
    state.residual = residual.max_all();
    state.iterations += 1;
}

/// The preconditioned residual `z` of one row.
enum RowPreconditioner<'a, T> {
    /// `z = diag(d) r`.
    Diagonal(&'a [f64]),
    /// `z` computed by a product, restricted to the row's entries `active`.
    Product { z: &'a [T], active: &'a [T] },
}

/// The new direction of one row, `p = z + β p` with `β = 0` when `restart`.
#[inline(always)]
fn direction_row<T: ProductScalar>(
    p: &mut [T],
    r: &[T],
    z: RowPreconditioner<'_, T>,
    restart: bool,
    state: &mut RowState,
) {
    let continues = !restart && state.rz > 0.0;
    let beta = |rz: f64| if continues { rz / state.rz } else { 0.0 };
    let rz = match z {
        RowPreconditioner::Diagonal(d) => {
            let rz = sum3(r, r, d, |r, _, d| r.widen() * r.widen() * d);
            let beta = beta(rz);
            update_with(p, r, d, |r, d, p| T::narrow(r.widen() * d + beta * p.widen()));
            rz
        }
        RowPreconditioner::Product { z, active } => {
            let rz = sum3(r, z, active, |r, z, k| r.widen() * z.widen() * k.widen());
            let beta = beta(rz);
            update_with(p, z, active, |z, k, p| T::narrow(z.widen() * k.widen() + beta * p.widen()));
            rz
        }
    };
    state.broken |= !rz.is_finite();
    state.rz = rz;
    if restart {
        state.stalled = false;
    }
}

/// `Σ_j f(a_j, b_j, c_j)` in [`LANES`] partial sums.
#[inline(always)]
fn sum3<A: Copy, B: Copy, C: Copy>(a: &[A], b: &[B], c: &[C], f: impl Fn(A, B, C) -> f64) -> f64 {
    let mut sum = Lanes::default();
    let ((ac, at), (bc, bt), (cc, ct)) = (blocks(a), blocks(b), blocks(c));
    for ((a, b), c) in ac.zip(bc).zip(cc) {
        for l in 0..LANES {
            sum.add(l, f(a[l], b[l], c[l]));
        }
    }
    for ((a, b), c) in at.iter().zip(bt).zip(ct) {
        sum.add(0, f(*a, *b, *c));
    }
    sum.sum()
}

/// `p_j = f(a_j, b_j, p_j)` for every `j`, in blocks of [`LANES`].
#[inline(always)]
fn update_with<P: Copy, A: Copy, B: Copy>(p: &mut [P], a: &[A], b: &[B], f: impl Fn(A, B, P) -> P) {
    let ((pc, pt), (ac, at), (bc, bt)) = (blocks_mut(p), blocks(a), blocks(b));
    for ((p, a), b) in pc.zip(ac).zip(bc) {
        for l in 0..LANES {
            p[l] = f(a[l], b[l], p[l]);
        }
    }
    for ((p, a), b) in pt.iter_mut().zip(at).zip(bt) {
        *p = f(*a, *b, *p);
    }
}

/// `values` in blocks of [`LANES`] and the shorter rest.
#[inline(always)]
fn blocks<V>(values: &[V]) -> (std::slice::ChunksExact<'_, V>, &[V]) {
    let (head, tail) = values.split_at(values.len() / LANES * LANES);
    (head.chunks_exact(LANES), tail)
}

/// [`blocks`] of a mutable slice.
#[inline(always)]
fn blocks_mut<V>(values: &mut [V]) -> (std::slice::ChunksExactMut<'_, V>, &mut [V]) {
    let (head, tail) = values.split_at_mut(values.len() / LANES * LANES);
    (head.chunks_exact_mut(LANES), tail)
}

/// One row's step (and new direction), run through [`pulp::Arch::dispatch`]: compiled for the
/// widest vector instructions the CPU has (AVX2 and FMA on x86-64 when present, detected at run
/// time). The row kernels are written in blocks of [`LANES`] so the compiler vectorizes them.
struct RowKernel<'a, T> {
    x: &'a mut [f64],
    r: &'a mut [T],
    p: &'a mut [T],
    active: &'a [T],
    q: &'a [T],
    state: &'a mut RowState,
    /// The preconditioner and restart flag of the new direction, if one follows the step.
    direction: Option<(RowPreconditioner<'a, T>, bool)>,
}

impl<T: ProductScalar> pulp::WithSimd for RowKernel<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        step_row(self.x, self.r, self.p, self.active, self.q, self.state);
        if let Some((z, restart)) = self.direction {
            direction_row(self.p, self.r, z, restart, self.state);
        }
    }
}

/// One row's new direction, dispatched as [`RowKernel`].
struct DirectionKernel<'a, T> {
    p: &'a mut [T],
    r: &'a [T],
    z: RowPreconditioner<'a, T>,
    restart: bool,
    state: &'a mut RowState,
}

impl<T: ProductScalar> pulp::WithSimd for DirectionKernel<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        direction_row(self.p, self.r, self.z, self.restart, self.state);
    }
}

/// Lanes of the reductions: independent partial results the compiler keeps in vector registers
/// (an in-order sum or max cannot be vectorized).
const LANES: usize = 8;

/// [`LANES`] partial sums or maxima.
#[derive(Default)]
struct Lanes([f64; LANES]);

impl Lanes {
    #[inline(always)]
    fn add(&mut self, lane: usize, v: f64) {
        self.0[lane % LANES] += v;
    }

    /// Keeps the larger (of non-negative values; NaN propagates).
    #[inline(always)]
    fn max(&mut self, lane: usize, v: f64) {
        let m = &mut self.0[lane % LANES];
        *m = max_or_nan(*m, v);
    }

    #[inline(always)]
    fn sum(&self) -> f64 {
        self.0.iter().sum()
    }

    #[inline(always)]
    fn max_all(&self) -> f64 {
        self.0.iter().fold(0.0, |m, &v| max_or_nan(m, v))
    }
}

/// `max(a, b)` for non-negative values, NaN propagating.
#[inline(always)]
fn max_or_nan(a: f64, b: f64) -> f64 {
    if b > a || b.is_nan() { b } else { a }
}

/// `max values` (of non-negative values; NaN propagates) over [`LANES`] partial maxima.
pub(crate) fn lane_max(values: impl Iterator<Item = f64>) -> f64 {
    let mut lanes = Lanes::default();
    for (i, v) in values.enumerate() {
        lanes.max(i, v);
    }
    lanes.max_all()
}

/// Moves the `width`-long rows `keep` (ascending) of `buffer` to its front and truncates it.
pub(crate) fn compact<V: Copy>(buffer: &mut Vec<V>, width: usize, keep: &[usize]) {
    for (k, &i) in keep.iter().enumerate() {
        if i != k {
            buffer.copy_within(i * width..(i + 1) * width, k * width);
        }
    }
    buffer.truncate(keep.len() * width);
}
