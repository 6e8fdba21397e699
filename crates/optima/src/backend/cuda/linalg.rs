//! cuBLAS and cuSOLVER: symmetric products, SYRK, inverses, batched Cholesky, GEMM rates.

use cudarc::cublas::{Gemm, GemmConfig, sys as blas_sys};
use cudarc::cusolver::sys as solver_sys;
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

use super::*;

impl CudaBackend {
    /// Uses TF32 tensor cores for f32 GEMMs (`true`) or exact f32 arithmetic (`false`).
    pub(crate) fn set_tf32(&self, tf32: bool) -> Result<()> {
        let mode = if tf32 {
            blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
        } else {
            blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
        };
        // SAFETY: the handle is live for the backend's lifetime.
        unsafe { blas_sys::cublasSetMathMode(*self.blas.handle(), mode) }
            .result()
            .map_err(|e| device_error("cublasSetMathMode", e))
    }

    pub(super) fn sym_config<T>(rows: usize, n: usize, alpha: T, beta: T) -> Result<GemmConfig<T>> {
        let (rows, n) = (dim("rows", rows)?, dim("n", n)?);
        Ok(GemmConfig {
            transa: blas_sys::cublasOperation_t::CUBLAS_OP_N,
            transb: blas_sys::cublasOperation_t::CUBLAS_OP_N,
            m: n,
            n: rows,
            k: n,
            alpha,
            lda: n,
            ldb: n,
            beta,
            ldc: n,
        })
    }

    /// `out = a · s` for row-major `a` (rows × n) and a symmetric n×n `s`, in f32.
    pub(crate) fn times_symmetric_f32(
        &self,
        a: &CudaSlice<f32>,
        s: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        n: usize,
    ) -> Result<()> {
        let rows = a.len().checked_div(n).unwrap_or(0);
        check_len("gemm a", a.len(), rows * n)?;
        check_len("gemm s", s.len(), n * n)?;
        check_len("gemm out", out.len(), rows * n)?;
        let cfg = Self::sym_config(rows, n, 1.0f32, 0.0f32)?;
        // SAFETY: column-major S (n×n, ld n) times Aᵀ (n×rows, ld n) into Outᵀ (n×rows, ld n); sizes checked.
        unsafe { self.blas.gemm(cfg, s, a, out) }.map_err(|e| device_error("SGEMM", e))
    }

    /// `out = a · s` for row-major `a` (rows × n) and a symmetric n×n `s`, in f64.
    pub(crate) fn times_symmetric_f64(
        &self,
        a: &CudaSlice<f64>,
        s: &CudaSlice<f64>,
        out: &mut CudaSlice<f64>,
        n: usize,
    ) -> Result<()> {
        let rows = a.len().checked_div(n).unwrap_or(0);
        check_len("gemm a", a.len(), rows * n)?;
        check_len("gemm s", s.len(), n * n)?;
        check_len("gemm out", out.len(), rows * n)?;
        let cfg = Self::sym_config(rows, n, 1.0f64, 0.0f64)?;
        // SAFETY: as in times_symmetric_f32.
        unsafe { self.blas.gemm(cfg, s, a, out) }.map_err(|e| device_error("DGEMM", e))
    }

    /// `c = beta·c + alpha·XᵀX` on the lower triangle of the column-major n×n `c` (f32), for a
    /// row-major `tokens × n` batch `x`.
    pub(crate) fn syrk_f32(
        &self,
        x: &CudaSlice<f32>,
        c: &mut CudaSlice<f32>,
        n: usize,
        alpha: f32,
        beta: f32,
    ) -> Result<()> {
        let tokens = x.len().checked_div(n).unwrap_or(0);
        check_len("syrk x", x.len(), tokens * n)?;
        check_len("syrk c", c.len(), n * n)?;
        let (n32, k32) = (dim("n", n)?, dim("tokens", tokens)?);
        let (xp, _rx) = x.device_ptr(&self.stream);
        let (cp, _rc) = c.device_ptr_mut(&self.stream);
        // SAFETY: x is column-major n×tokens (ld n), c is n×n (ld n); sizes checked.
        unsafe {
            blas_sys::cublasSsyrk_v2(
                *self.blas.handle(),
                blas_sys::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                n32,
                k32,
                &alpha,
                xp as *const f32,
                n32,
                &beta,
                cp as *mut f32,
                n32,
            )
        }
        .result()
        .map_err(|e| device_error("SSYRK", e))
    }

    /// As [`Self::syrk_f32`], in f64.
    pub(crate) fn syrk_f64(
        &self,
        x: &CudaSlice<f64>,
        c: &mut CudaSlice<f64>,
        n: usize,
        alpha: f64,
        beta: f64,
    ) -> Result<()> {
        let tokens = x.len().checked_div(n).unwrap_or(0);
        check_len("syrk x", x.len(), tokens * n)?;
        check_len("syrk c", c.len(), n * n)?;
        let (n32, k32) = (dim("n", n)?, dim("tokens", tokens)?);
        let (xp, _rx) = x.device_ptr(&self.stream);
        let (cp, _rc) = c.device_ptr_mut(&self.stream);
        // SAFETY: as in syrk_f32.
        unsafe {
            blas_sys::cublasDsyrk_v2(
                *self.blas.handle(),
                blas_sys::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                n32,
                k32,
                &alpha,
                xp as *const f64,
                n32,
                &beta,
                cp as *mut f64,
                n32,
            )
        }
        .result()
        .map_err(|e| device_error("DSYRK", e))
    }

    /// `H⁻¹` of a symmetric positive definite n×n `h` (f64) by cuSOLVER's Cholesky; `None` when
    /// a pivot is not positive (the caller falls back to the CPU's regularizing retries).
    pub(crate) fn spd_inverse_f64(&self, h: &CudaSlice<f64>, n: usize) -> Result<Option<CudaSlice<f64>>> {
        check_len("spd_inverse h", h.len(), n * n)?;
        let n32 = dim("n", n)?;
        let lower = solver_sys::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER;
        let mut l = self.duplicate(h)?;
        let mut lwork: c_int = 0;
        {
            let (lp, _rl) = l.device_ptr_mut(&self.stream);
            // SAFETY: l is n×n (ld n); lwork is a host int.
            unsafe {
                solver_sys::cusolverDnDpotrf_bufferSize(self.dn.cu(), lower, n32, lp as *mut f64, n32, &mut lwork)
            }
            .result()
            .map_err(|e| device_error("potrf_bufferSize", e))?;
        }
        let mut work = self.zeros::<f64>(usize::try_from(lwork).unwrap_or(0).max(1))?;
        let mut info = self.zeros::<i32>(1)?;
        {
            let (lp, _rl) = l.device_ptr_mut(&self.stream);
            let (wp, _rw) = work.device_ptr_mut(&self.stream);
            let (ip, _ri) = info.device_ptr_mut(&self.stream);
            // SAFETY: workspace of lwork values, one info int, l n×n.
            unsafe {
                solver_sys::cusolverDnDpotrf(
                    self.dn.cu(),
                    lower,
                    n32,
                    lp as *mut f64,
                    n32,
                    wp as *mut f64,
                    lwork,
                    ip as *mut c_int,
                )
            }
            .result()
            .map_err(|e| device_error("potrf", e))?;
        }
        if self.download(&info)?.first().copied().unwrap_or(-1) != 0 {
            return Ok(None);
        }
        let mut g = self.zeros::<f64>(n * n)?;
        self.fill_identity_f64(&mut g, n)?;
        {
            let (lp, _rl) = l.device_ptr(&self.stream);
            let (gp, _rg) = g.device_ptr_mut(&self.stream);
            let (ip, _ri) = info.device_ptr_mut(&self.stream);
            // SAFETY: factor n×n, n right-hand sides n×n (ld n), one info int.
            unsafe {
                solver_sys::cusolverDnDpotrs(
                    self.dn.cu(),
                    lower,
                    n32,
                    n32,
                    lp as *const f64,
                    n32,
                    gp as *mut f64,
                    n32,
                    ip as *mut c_int,
                )
            }
            .result()
            .map_err(|e| device_error("potrs", e))?;
        }
        self.note_memory();
        if self.download(&info)?.first().copied().unwrap_or(-1) != 0 {
            return Ok(None);
        }
        Ok(Some(g))
    }

    /// Cholesky-factors `batch` k×k blocks stored one after another in `blocks` (lower
    /// triangle, in place). Returns each block's info: 0 = factored, i > 0 = leading minor i
    /// not positive definite.
    pub(crate) fn potrf_batched(&self, blocks: &mut CudaSlice<f64>, k: usize) -> Result<Vec<i32>> {
        let batch = if k == 0 { 0 } else { blocks.len() / (k * k) };
        check_len("potrf_batched blocks", blocks.len(), batch * k * k)?;
        if batch == 0 {
            return Ok(Vec::new());
        }
        let (k32, b32) = (dim("k", k)?, dim("batch", batch)?);
        let mut info = self.zeros::<i32>(batch)?;
        {
            let (bp, _rb) = blocks.device_ptr_mut(&self.stream);
            let stride = (k * k * std::mem::size_of::<f64>()) as u64;
            let pointers: Vec<u64> = (0..batch as u64).map(|b| bp + b * stride).collect();
            let ptrs = self.upload(&pointers)?;
            let (pp, _rp) = ptrs.device_ptr(&self.stream);
            let (ip, _ri) = info.device_ptr_mut(&self.stream);
            // SAFETY: `batch` pointers to k×k blocks inside `blocks`, `batch` info ints.
            unsafe {
                solver_sys::cusolverDnDpotrfBatched(
                    self.dn.cu(),
                    solver_sys::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER,
                    k32,
                    pp as *mut *mut f64,
                    k32,
                    ip as *mut c_int,
                    b32,
                )
            }
            .result()
            .map_err(|e| device_error("potrfBatched", e))?;
            self.synchronize()?;
        }
        self.download(&info)
    }

    /// Solves `L Lᵀ x = b` in place for `count` right-hand sides of length k stored one after
    /// another in `rhs`; right-hand side r uses the factor `blocks[factor_of[r]]`.
    pub(crate) fn potrs_batched(
        &self,
        blocks: &CudaSlice<f64>,
        k: usize,
        factor_of: &[usize],
        rhs: &mut CudaSlice<f64>,
    ) -> Result<()> {
        let count = factor_of.len();
        let batch = if k == 0 { 0 } else { blocks.len() / (k * k) };
        check_len("potrs_batched rhs", rhs.len(), count * k)?;
        if count == 0 {
            return Ok(());
        }
        if factor_of.iter().any(|&f| f >= batch) {
            return Err(OptimaError::Internal("potrs_batched factor index out of range".into()));
        }
        let (k32, c32) = (dim("k", k)?, dim("count", count)?);
        let mut info = self.zeros::<i32>(1)?;
        {
            let (bp, _rb) = blocks.device_ptr(&self.stream);
            let (rp, _rr) = rhs.device_ptr_mut(&self.stream);
            let (block_bytes, rhs_bytes) = ((k * k * 8) as u64, (k * 8) as u64);
            let a_ptrs: Vec<u64> = factor_of.iter().map(|&f| bp + f as u64 * block_bytes).collect();
            let b_ptrs: Vec<u64> = (0..count as u64).map(|r| rp + r * rhs_bytes).collect();
            let (a_dev, b_dev) = (self.upload(&a_ptrs)?, self.upload(&b_ptrs)?);
            let (ap, _ra) = a_dev.device_ptr(&self.stream);
            let (bq, _rq) = b_dev.device_ptr(&self.stream);
            let (ip, _ri) = info.device_ptr_mut(&self.stream);
            // SAFETY: `count` factor pointers and `count` vectors of k values; nrhs = 1 as the
            // batched API requires.
            unsafe {
                solver_sys::cusolverDnDpotrsBatched(
                    self.dn.cu(),
                    solver_sys::cublasFillMode_t::CUBLAS_FILL_MODE_LOWER,
                    k32,
                    1,
                    ap as *mut *mut f64,
                    k32,
                    bq as *mut *mut f64,
                    k32,
                    ip as *mut c_int,
                    c32,
                )
            }
            .result()
            .map_err(|e| device_error("potrsBatched", e))?;
            self.synchronize()?;
        }
        match self.download(&info)?.first().copied() {
            Some(0) => Ok(()),
            other => Err(device_error("potrsBatched", format!("info = {other:?}"))),
        }
    }

    /// Measured GEMM rates on `size`³ products, GFLOP/s: (SGEMM, DGEMM).
    pub fn measure_gemm_gflops(&self, size: usize) -> Result<(f64, f64)> {
        let _session = self.session()?;
        let host32: Vec<f32> = (0..size * size).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0).collect();
        let host64: Vec<f64> = host32.iter().map(|&v| f64::from(v)).collect();
        let flops = 2.0 * (size as f64).powi(3);
        let time = |run: &dyn Fn() -> Result<()>| -> Result<f64> {
            run()?;
            self.synchronize()?;
            let start = std::time::Instant::now();
            let reps = 5;
            for _ in 0..reps {
                run()?;
            }
            self.synchronize()?;
            Ok(flops * reps as f64 / start.elapsed().as_secs_f64() / 1e9)
        };
        let (a32, mut c32) = (self.upload(&host32)?, self.zeros::<f32>(size * size)?);
        let out32 = std::cell::RefCell::new(&mut c32);
        let sgemm = time(&|| self.times_symmetric_f32(&a32, &a32, &mut out32.borrow_mut(), size))?;
        let (a64, mut c64) = (self.upload(&host64)?, self.zeros::<f64>(size * size)?);
        let out64 = std::cell::RefCell::new(&mut c64);
        let dgemm = time(&|| self.times_symmetric_f64(&a64, &a64, &mut out64.borrow_mut(), size))?;
        Ok((sgemm, dgemm))
    }
}
