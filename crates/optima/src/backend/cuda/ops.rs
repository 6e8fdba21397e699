//! Launches of the NVRTC kernels of [`super::kernels`]: elementwise, per-row and PCG steps.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::*;

impl CudaBackend {
    pub(super) fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or_else(|| OptimaError::Internal(format!("kernel {name} not loaded")))
    }

    pub(super) fn elementwise(len: usize) -> LaunchConfig {
        let blocks = len.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
    }

    pub(super) fn per_row(rows: usize) -> Result<LaunchConfig> {
        let rows = u32::try_from(rows.max(1)).map_err(|_| OptimaError::InvalidSetting("too many rows".into()))?;
        Ok(LaunchConfig { grid_dim: (rows, 1, 1), block_dim: (kernels::REDUCE_THREADS, 1, 1), shared_mem_bytes: 0 })
    }

    pub(super) fn launched(
        what: &str,
        r: std::result::Result<
            Option<(cudarc::driver::CudaEvent, cudarc::driver::CudaEvent)>,
            cudarc::driver::DriverError,
        >,
    ) -> Result<()> {
        r.map(|_| ()).map_err(|e| device_error(what, e))
    }

    /// `a ∘= kept` (f32).
    pub(crate) fn mask_mul_f32(&self, a: &mut CudaSlice<f32>, kept: &CudaSlice<f32>) -> Result<()> {
        check_len("mask_mul_f32 kept", kept.len(), a.len())?;
        let len = a.len() as i64;
        let f = self.function("mask_mul_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(a).arg(kept).arg(&len);
        // SAFETY: both buffers hold `len` values; the kernel touches indices below `len` only.
        Self::launched("mask_mul_f32", unsafe { b.launch(Self::elementwise(len as usize)) })
    }

    /// `a ∘= kept` (f64 values, f32 mask).
    pub(crate) fn mask_mul_f64(&self, a: &mut CudaSlice<f64>, kept: &CudaSlice<f32>) -> Result<()> {
        check_len("mask_mul_f64 kept", kept.len(), a.len())?;
        let len = a.len() as i64;
        let f = self.function("mask_mul_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(a).arg(kept).arg(&len);
        // SAFETY: as in mask_mul_f32.
        Self::launched("mask_mul_f64", unsafe { b.launch(Self::elementwise(len as usize)) })
    }

    /// `out = x − w`.
    pub(crate) fn sub_f64(&self, out: &mut CudaSlice<f64>, x: &CudaSlice<f64>, w: &CudaSlice<f64>) -> Result<()> {
        check_len("sub_f64 x", x.len(), out.len())?;
        check_len("sub_f64 w", w.len(), out.len())?;
        let len = out.len() as i64;
        let f = self.function("sub_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(out).arg(x).arg(w).arg(&len);
        // SAFETY: three buffers of `len` values.
        Self::launched("sub_f64", unsafe { b.launch(Self::elementwise(len as usize)) })
    }

    /// `out = (f32)(sign · input)`.
    pub(crate) fn convert_f64_to_f32(&self, out: &mut CudaSlice<f32>, input: &CudaSlice<f64>, sign: f64) -> Result<()> {
        check_len("convert_f64_to_f32", input.len(), out.len())?;
        let len = out.len() as i64;
        let f = self.function("convert_f64_to_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(out).arg(input).arg(&sign).arg(&len);
        // SAFETY: two buffers of `len` values.
        Self::launched("convert_f64_to_f32", unsafe { b.launch(Self::elementwise(len as usize)) })
    }

    /// `x += (f64) e`.
    pub(crate) fn add_f32_to_f64(&self, x: &mut CudaSlice<f64>, e: &CudaSlice<f32>) -> Result<()> {
        check_len("add_f32_to_f64", e.len(), x.len())?;
        let len = x.len() as i64;
        let f = self.function("add_f32_to_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(e).arg(&len);
        // SAFETY: two buffers of `len` values.
        Self::launched("add_f32_to_f64", unsafe { b.launch(Self::elementwise(len as usize)) })
    }

    /// Per row of the `rows × n` matrices: `dot = Σ a∘b`, `amax = max |a|` (in f64).
    pub(crate) fn row_dot_max_f32(
        &self,
        a: &CudaSlice<f32>,
        b_mat: &CudaSlice<f32>,
        dot: &mut CudaSlice<f64>,
        amax: &mut CudaSlice<f64>,
        n: usize,
    ) -> Result<()> {
        let rows = dot.len();
        check_len("row_dot_max a", a.len(), rows * n)?;
        check_len("row_dot_max b", b_mat.len(), rows * n)?;
        check_len("row_dot_max amax", amax.len(), rows)?;
        let n32 = dim("n", n)?;
        let f = self.function("row_dot_max_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(a).arg(b_mat).arg(dot).arg(amax).arg(&n32);
        // SAFETY: one block per row reads `n` values of that row and writes one value per output.
        Self::launched("row_dot_max_f32", unsafe { b.launch(Self::per_row(rows)?) })
    }

    /// Per row of the `rows × n` matrix: `amax = max |a|` (NaN propagates).
    pub(crate) fn row_max_f64(&self, a: &CudaSlice<f64>, amax: &mut CudaSlice<f64>, n: usize) -> Result<()> {
        let rows = amax.len();
        check_len("row_max a", a.len(), rows * n)?;
        let n32 = dim("n", n)?;
        let f = self.function("row_max_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(a).arg(amax).arg(&n32);
        // SAFETY: one block per row reads `n` values of that row.
        Self::launched("row_max_f64", unsafe { b.launch(Self::per_row(rows)?) })
    }

    pub(super) fn per_entry(m: usize) -> LaunchConfig {
        let blocks = m.div_ceil(THREADS as usize).max(1) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
    }

    /// `alpha = rz / pq` on active rows with positive curvature, else 0.
    pub(crate) fn pcg_alpha(
        &self,
        rz: &CudaSlice<f64>,
        pq: &CudaSlice<f64>,
        active: &CudaSlice<i32>,
        alpha: &mut CudaSlice<f64>,
    ) -> Result<()> {
        let m = alpha.len();
        check_len("pcg_alpha rz", rz.len(), m)?;
        check_len("pcg_alpha pq", pq.len(), m)?;
        check_len("pcg_alpha active", active.len(), m)?;
        let m32 = dim("rows", m)?;
        let f = self.function("pcg_alpha")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(rz).arg(pq).arg(active).arg(alpha).arg(&m32);
        // SAFETY: four buffers of `m` values, guarded by `i < m`.
        Self::launched("pcg_alpha", unsafe { b.launch(Self::per_entry(m)) })
    }

    /// `e += α_row p`, `r −= α_row q` on `rows × n` matrices.
    pub(crate) fn pcg_step(
        &self,
        e: &mut CudaSlice<f32>,
        r: &mut CudaSlice<f32>,
        p: &CudaSlice<f32>,
        q: &CudaSlice<f32>,
        alpha: &CudaSlice<f64>,
        n: usize,
    ) -> Result<()> {
        let len = e.len();
        check_len("pcg_step r", r.len(), len)?;
        check_len("pcg_step p", p.len(), len)?;
        check_len("pcg_step q", q.len(), len)?;
        check_len("pcg_step alpha", alpha.len() * n, len)?;
        let (len64, n32) = (len as i64, dim("n", n)?);
        let f = self.function("pcg_step_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(e).arg(r).arg(p).arg(q).arg(alpha).arg(&len64).arg(&n32);
        // SAFETY: four buffers of `len` values and `len / n` scalars.
        Self::launched("pcg_step_f32", unsafe { b.launch(Self::elementwise(len)) })
    }

    /// `beta = rz_new / rz` on active rows (else 0), then `rz = rz_new`.
    pub(crate) fn pcg_beta(
        &self,
        rz: &mut CudaSlice<f64>,
        rz_new: &CudaSlice<f64>,
        active: &CudaSlice<i32>,
        beta: &mut CudaSlice<f64>,
    ) -> Result<()> {
        let m = beta.len();
        check_len("pcg_beta rz", rz.len(), m)?;
        check_len("pcg_beta rz_new", rz_new.len(), m)?;
        check_len("pcg_beta active", active.len(), m)?;
        let m32 = dim("rows", m)?;
        let f = self.function("pcg_beta")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(rz).arg(rz_new).arg(active).arg(beta).arg(&m32);
        // SAFETY: four buffers of `m` values, guarded by `i < m`.
        Self::launched("pcg_beta", unsafe { b.launch(Self::per_entry(m)) })
    }

    /// `p = z + β_row p`.
    pub(crate) fn pcg_direction(
        &self,
        p: &mut CudaSlice<f32>,
        z: &CudaSlice<f32>,
        beta: &CudaSlice<f64>,
        n: usize,
    ) -> Result<()> {
        let len = p.len();
        check_len("pcg_direction z", z.len(), len)?;
        check_len("pcg_direction beta", beta.len() * n, len)?;
        let (len64, n32) = (len as i64, dim("n", n)?);
        let f = self.function("pcg_direction_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(p).arg(z).arg(beta).arg(&len64).arg(&n32);
        // SAFETY: two buffers of `len` values and `len / n` scalars.
        Self::launched("pcg_direction_f32", unsafe { b.launch(Self::elementwise(len)) })
    }

    /// A row stays active while `rmax > target` (and is finite).
    pub(crate) fn pcg_update_active(
        &self,
        active: &mut CudaSlice<i32>,
        rmax: &CudaSlice<f64>,
        target: &CudaSlice<f64>,
    ) -> Result<()> {
        let m = active.len();
        check_len("pcg_update_active rmax", rmax.len(), m)?;
        check_len("pcg_update_active target", target.len(), m)?;
        let m32 = dim("rows", m)?;
        let f = self.function("pcg_update_active")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(active).arg(rmax).arg(target).arg(&m32);
        // SAFETY: three buffers of `m` values, guarded by `i < m`.
        Self::launched("pcg_update_active", unsafe { b.launch(Self::per_entry(m)) })
    }

    /// Jacobi step: `out = r ∘ dinv[col] ∘ kept`.
    pub(crate) fn scale_cols_f32(
        &self,
        out: &mut CudaSlice<f32>,
        r: &CudaSlice<f32>,
        dinv: &CudaSlice<f32>,
        kept: &CudaSlice<f32>,
    ) -> Result<()> {
        let (len, n) = (out.len(), dinv.len());
        check_len("scale_cols r", r.len(), len)?;
        check_len("scale_cols kept", kept.len(), len)?;
        if n == 0 || len % n != 0 {
            return Err(OptimaError::Internal("scale_cols dimensions".into()));
        }
        let (len64, n32) = (len as i64, dim("n", n)?);
        let f = self.function("scale_cols_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(out).arg(r).arg(dinv).arg(kept).arg(&len64).arg(&n32);
        // SAFETY: three buffers of `len` values and `n` column scales.
        Self::launched("scale_cols_f32", unsafe { b.launch(Self::elementwise(len)) })
    }

    /// For `batch` index sets of size k (`idx`, values `< n`): the k×k blocks `H[idx, idx]`.
    pub(crate) fn gather_blocks_f64(
        &self,
        out: &mut CudaSlice<f64>,
        h: &CudaSlice<f64>,
        idx: &CudaSlice<i32>,
        k: usize,
        n: usize,
    ) -> Result<()> {
        let batch = idx.len().checked_div(k).unwrap_or(0);
        check_len("gather_blocks idx", idx.len(), batch * k)?;
        check_len("gather_blocks out", out.len(), batch * k * k)?;
        check_len("gather_blocks h", h.len(), n * n)?;
        let (k32, n32, b32) = (dim("k", k)?, dim("n", n)?, dim("batch", batch)?);
        let f = self.function("gather_blocks_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(out).arg(h).arg(idx).arg(&k32).arg(&n32).arg(&b32);
        // SAFETY: lengths checked above; the caller guarantees every index is below n.
        Self::launched("gather_blocks_f64", unsafe { b.launch(Self::elementwise(batch * k * k)) })
    }

    /// Right-hand sides `out[r] = −hd0[rows[r], idx[group[r]]]` (each of length k).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gather_rhs_f64(
        &self,
        out: &mut CudaSlice<f64>,
        hd0: &CudaSlice<f64>,
        idx: &CudaSlice<i32>,
        rows: &CudaSlice<i32>,
        group: &CudaSlice<i32>,
        k: usize,
        n: usize,
    ) -> Result<()> {
        let count = rows.len();
        check_len("gather_rhs group", group.len(), count)?;
        check_len("gather_rhs out", out.len(), count * k)?;
        if hd0.len() % n.max(1) != 0 {
            return Err(OptimaError::Internal("gather_rhs dimensions".into()));
        }
        let (k32, n32, c32) = (dim("k", k)?, dim("n", n)?, dim("rows", count)?);
        let f = self.function("gather_rhs_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(out).arg(hd0).arg(idx).arg(rows).arg(group).arg(&k32).arg(&n32).arg(&c32);
        // SAFETY: the caller guarantees row and group indices in range, column indices below n.
        Self::launched("gather_rhs_f64", unsafe { b.launch(Self::elementwise(count * k)) })
    }

    /// `a = I` (n×n).
    pub(crate) fn fill_identity_f64(&self, a: &mut CudaSlice<f64>, n: usize) -> Result<()> {
        check_len("fill_identity", a.len(), n * n)?;
        let n32 = dim("n", n)?;
        let f = self.function("fill_identity_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(a).arg(&n32);
        // SAFETY: n² values.
        Self::launched("fill_identity_f64", unsafe { b.launch(Self::elementwise(n * n)) })
    }
}
