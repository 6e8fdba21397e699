//! The CUDA backend on cudarc: one device context and stream, cuBLAS and cuSOLVER handles, and
//! the NVRTC kernels of [`kernels`], behind typed methods that check every buffer length before
//! a launch and turn every cudarc error into an [`OptimaError`].
//!
//! cudarc loads the CUDA libraries dynamically and *panics* when one is missing, so
//! [`CudaBackend::new`] first asks each library whether it can be loaded and returns
//! [`OptimaError::BackendUnavailable`] otherwise (and, as a last guard, catches a panic during
//! start-up). Nothing in this module panics for want of a GPU.
//!
//! Matrices on the device are row-major `rows × n`, as on the host. cuBLAS is column-major, so a
//! row-major `A` is the column-major `Aᵀ`; `A · S` with `S` symmetric is computed as the
//! column-major `S · Aᵀ`.

pub mod kernels;

use std::collections::HashMap;
use std::ffi::c_int;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys as blas_sys};
use cudarc::cusolver::{DnHandle, sys as solver_sys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use crate::error::{OptimaError, Result};

/// Environment variable that, when set to `1`, makes [`CudaBackend::new`] report the backend
/// unavailable (to exercise the CPU-only paths on a GPU machine).
pub const DISABLE_ENV: &str = "OPTIMA_DISABLE_CUDA";

/// Threads per block of the element-wise kernels.
const THREADS: u32 = 256;
/// Most blocks an element-wise launch uses (the kernels loop over the rest).
const MAX_BLOCKS: usize = 1 << 16;

/// One CUDA device, ready to run optima's kernels.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    dn: DnHandle,
    functions: HashMap<&'static str, CudaFunction>,
    lock: Mutex<()>,
    name: String,
    total_bytes: usize,
    baseline_used: usize,
    peak_used: AtomicUsize,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend").field("ordinal", &self.ctx.ordinal()).field("name", &self.name).finish()
    }
}

fn unavailable(what: impl std::fmt::Display) -> OptimaError {
    OptimaError::BackendUnavailable(format!("CUDA: {what}"))
}

/// A cudarc error met while computing, with what was being done.
pub(crate) fn device_error(what: &str, e: impl std::fmt::Debug) -> OptimaError {
    OptimaError::Numerical(format!("CUDA error in {what}: {e:?}"))
}

fn dim(what: &str, v: usize) -> Result<c_int> {
    c_int::try_from(v)
        .map_err(|_| OptimaError::InvalidSetting(format!("{what} = {v} exceeds the CUDA API's int range")))
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(OptimaError::Numerical(format!("internal: device buffer {what} holds {got} values, {want} expected")))
    }
}

/// Whether every dynamically loaded library the backend needs can be opened; the first missing
/// one as an error.
pub fn check_libraries() -> Result<()> {
    if std::env::var(DISABLE_ENV).is_ok_and(|v| v == "1") {
        return Err(unavailable(format!("disabled by {DISABLE_ENV}=1")));
    }
    // SAFETY: each probe only tries to dlopen the library by its candidate names.
    type Probe = unsafe fn() -> bool;
    let probes: [(&str, Probe); 4] = [
        ("the driver library libcuda (is an NVIDIA driver installed?)", cudarc::driver::sys::is_culib_present),
        ("cuBLAS (libcublas)", cudarc::cublas::sys::is_culib_present),
        ("cuSOLVER (libcusolver)", cudarc::cusolver::sys::is_culib_present),
        ("NVRTC (libnvrtc)", cudarc::nvrtc::sys::is_culib_present),
    ];
    for (name, present) in probes {
        if !unsafe { present() } {
            return Err(unavailable(format!("cannot load {name}; put the CUDA 13 libraries on LD_LIBRARY_PATH")));
        }
    }
    Ok(())
}

impl CudaBackend {
    /// Starts device `ordinal`: checks the libraries and the ordinal, creates the context, stream,
    /// cuBLAS and cuSOLVER handles, and compiles the kernels. `BackendUnavailable` when any of
    /// that is impossible on this machine.
    pub fn new(ordinal: usize) -> Result<Arc<Self>> {
        check_libraries()?;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Self::create(ordinal))) {
            Ok(result) => result.map(Arc::new),
            Err(_) => Err(unavailable(format!(
                "starting device {ordinal} panicked inside cudarc (a driver or library older than CUDA 13?)"
            ))),
        }
    }

    fn create(ordinal: usize) -> Result<Self> {
        let count = CudaContext::device_count().map_err(|e| unavailable(format!("cannot count devices: {e}")))?;
        let count = usize::try_from(count).unwrap_or(0);
        if ordinal >= count {
            return Err(unavailable(format!("no device {ordinal}: {count} CUDA device(s) found")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| unavailable(format!("device {ordinal}: {e}")))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| unavailable(format!("cuBLAS handle: {e}")))?;
        let dn = DnHandle::new(stream.clone()).map_err(|e| unavailable(format!("cuSOLVER handle: {e}")))?;
        let options = CompileOptions { name: Some("optima_kernels.cu".into()), ..Default::default() };
        let ptx = compile_ptx_with_opts(kernels::SOURCE, options)
            .map_err(|e| unavailable(format!("NVRTC could not compile the kernels: {e}")))?;
        let module = ctx.load_module(ptx).map_err(|e| unavailable(format!("loading the kernels: {e}")))?;
        let mut functions = HashMap::new();
        for &name in kernels::KERNEL_NAMES {
            let f = module.load_function(name).map_err(|e| unavailable(format!("kernel {name}: {e}")))?;
            functions.insert(name, f);
        }
        let name = ctx.name().unwrap_or_else(|_| format!("CUDA device {ordinal}"));
        let (free, total) = ctx.mem_get_info().map_err(|e| unavailable(format!("memory info: {e}")))?;
        let used = total.saturating_sub(free);
        Ok(Self {
            ctx,
            stream,
            blas,
            dn,
            functions,
            lock: Mutex::new(()),
            name,
            total_bytes: total,
            baseline_used: used,
            peak_used: AtomicUsize::new(used),
        })
    }

    /// The device's name, e.g. "NVIDIA H200".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device ordinal.
    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// Total device memory, bytes.
    pub fn total_memory(&self) -> usize {
        self.total_bytes
    }

    /// Exclusive use of the device for one computation, with the context bound to this thread.
    pub fn session(&self) -> Result<MutexGuard<'_, ()>> {
        let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.ctx.bind_to_thread().map_err(|e| device_error("binding the context", e))?;
        Ok(guard)
    }

    /// Records the device memory in use now (callers do this where their allocations peak).
    pub fn note_memory(&self) {
        if let Ok((free, total)) = self.ctx.mem_get_info() {
            self.peak_used.fetch_max(total.saturating_sub(free), Ordering::Relaxed);
        }
    }

    /// Peak device memory noted since start-up (or the last reset) above what was in use when
    /// the backend started, bytes.
    pub fn peak_memory(&self) -> usize {
        self.peak_used.load(Ordering::Relaxed).saturating_sub(self.baseline_used)
    }

    /// Forgets the peak noted so far.
    pub fn reset_peak_memory(&self) {
        self.peak_used.store(self.baseline_used, Ordering::Relaxed);
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| device_error("synchronize", e))
    }

    /// Copies `host` to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream.clone_htod(host).map_err(|e| device_error("host-to-device copy", e))
    }

    /// Overwrites `dev` with `host` (same length).
    pub fn upload_into<T: DeviceRepr>(&self, host: &[T], dev: &mut CudaSlice<T>) -> Result<()> {
        check_len("upload target", dev.len(), host.len())?;
        self.stream.memcpy_htod(host, dev).map_err(|e| device_error("host-to-device copy", e))
    }

    /// A zeroed device buffer of `len` values.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros(len.max(1)).map_err(|e| device_error(&format!("allocating {len} values"), e))
    }

    /// Copies a device buffer to the host, waiting for it.
    pub fn download<T: DeviceRepr>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        let host = self.stream.clone_dtoh(dev).map_err(|e| device_error("device-to-host copy", e))?;
        self.synchronize()?;
        Ok(host)
    }

    /// A device copy of a device buffer.
    pub fn duplicate<T: DeviceRepr>(&self, dev: &CudaSlice<T>) -> Result<CudaSlice<T>> {
        self.stream.clone_dtod(dev).map_err(|e| device_error("device-to-device copy", e))
    }

    /// Sets every value of `a` to zero.
    pub fn fill_zero<T: DeviceRepr + ValidAsZeroBits>(&self, a: &mut CudaSlice<T>) -> Result<()> {
        self.stream.memset_zeros(a).map_err(|e| device_error("memset", e))
    }

    /// `dst = src` (same length).
    pub fn copy<T: DeviceRepr>(&self, src: &CudaSlice<T>, dst: &mut CudaSlice<T>) -> Result<()> {
        check_len("copy target", dst.len(), src.len())?;
        self.stream.memcpy_dtod(src, dst).map_err(|e| device_error("device-to-device copy", e))
    }

    fn function(&self, name: &str) -> Result<&CudaFunction> {
        self.functions.get(name).ok_or_else(|| OptimaError::Numerical(format!("internal: kernel {name} not loaded")))
    }

    fn elementwise(len: usize) -> LaunchConfig {
        let blocks = len.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
    }

    fn per_row(rows: usize) -> Result<LaunchConfig> {
        let rows = u32::try_from(rows.max(1)).map_err(|_| OptimaError::InvalidSetting("too many rows".into()))?;
        Ok(LaunchConfig { grid_dim: (rows, 1, 1), block_dim: (kernels::REDUCE_THREADS, 1, 1), shared_mem_bytes: 0 })
    }

    fn launched(
        what: &str,
        r: std::result::Result<
            Option<(cudarc::driver::CudaEvent, cudarc::driver::CudaEvent)>,
            cudarc::driver::DriverError,
        >,
    ) -> Result<()> {
        r.map(|_| ()).map_err(|e| device_error(what, e))
    }

    /// `a ∘= kept` (f32).
    pub fn mask_mul_f32(&self, a: &mut CudaSlice<f32>, kept: &CudaSlice<f32>) -> Result<()> {
        check_len("mask_mul_f32 kept", kept.len(), a.len())?;
        let len = a.len() as i64;
        let f = self.function("mask_mul_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(a).arg(kept).arg(&len);
        // SAFETY: both buffers hold `len` values; the kernel touches indices below `len` only.
        Self::launched("mask_mul_f32", unsafe { b.launch(Self::elementwise(len as usize)) })
    }

    /// `a ∘= kept` (f64 values, f32 mask).
    pub fn mask_mul_f64(&self, a: &mut CudaSlice<f64>, kept: &CudaSlice<f32>) -> Result<()> {
        check_len("mask_mul_f64 kept", kept.len(), a.len())?;
        let len = a.len() as i64;
        let f = self.function("mask_mul_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(a).arg(kept).arg(&len);
        // SAFETY: as in mask_mul_f32.
        Self::launched("mask_mul_f64", unsafe { b.launch(Self::elementwise(len as usize)) })
    }

    /// `out = x − w`.
    pub fn sub_f64(&self, out: &mut CudaSlice<f64>, x: &CudaSlice<f64>, w: &CudaSlice<f64>) -> Result<()> {
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
    pub fn convert_f64_to_f32(&self, out: &mut CudaSlice<f32>, input: &CudaSlice<f64>, sign: f64) -> Result<()> {
        check_len("convert_f64_to_f32", input.len(), out.len())?;
        let len = out.len() as i64;
        let f = self.function("convert_f64_to_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(out).arg(input).arg(&sign).arg(&len);
        // SAFETY: two buffers of `len` values.
        Self::launched("convert_f64_to_f32", unsafe { b.launch(Self::elementwise(len as usize)) })
    }

    /// `out = (f64) input`.
    pub fn convert_f32_to_f64(&self, out: &mut CudaSlice<f64>, input: &CudaSlice<f32>) -> Result<()> {
        check_len("convert_f32_to_f64", input.len(), out.len())?;
        let len = out.len() as i64;
        let f = self.function("convert_f32_to_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(out).arg(input).arg(&len);
        // SAFETY: two buffers of `len` values.
        Self::launched("convert_f32_to_f64", unsafe { b.launch(Self::elementwise(len as usize)) })
    }

    /// `x += (f64) e`.
    pub fn add_f32_to_f64(&self, x: &mut CudaSlice<f64>, e: &CudaSlice<f32>) -> Result<()> {
        check_len("add_f32_to_f64", e.len(), x.len())?;
        let len = x.len() as i64;
        let f = self.function("add_f32_to_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(e).arg(&len);
        // SAFETY: two buffers of `len` values.
        Self::launched("add_f32_to_f64", unsafe { b.launch(Self::elementwise(len as usize)) })
    }

    /// Per row of the `rows × n` matrices: `dot = Σ a∘b`, `amax = max |a|` (in f64).
    pub fn row_dot_max_f32(
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
    pub fn row_max_f64(&self, a: &CudaSlice<f64>, amax: &mut CudaSlice<f64>, n: usize) -> Result<()> {
        let rows = amax.len();
        check_len("row_max a", a.len(), rows * n)?;
        let n32 = dim("n", n)?;
        let f = self.function("row_max_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(a).arg(amax).arg(&n32);
        // SAFETY: one block per row reads `n` values of that row.
        Self::launched("row_max_f64", unsafe { b.launch(Self::per_row(rows)?) })
    }

    fn per_entry(m: usize) -> LaunchConfig {
        let blocks = m.div_ceil(THREADS as usize).max(1) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
    }

    /// `alpha = rz / pq` on active rows with positive curvature, else 0.
    pub fn pcg_alpha(
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
    pub fn pcg_step(
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
    pub fn pcg_beta(
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
    pub fn pcg_direction(
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
    pub fn pcg_update_active(
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
    pub fn scale_cols_f32(
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
            return Err(OptimaError::Numerical("internal: scale_cols dimensions".into()));
        }
        let (len64, n32) = (len as i64, dim("n", n)?);
        let f = self.function("scale_cols_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(out).arg(r).arg(dinv).arg(kept).arg(&len64).arg(&n32);
        // SAFETY: three buffers of `len` values and `n` column scales.
        Self::launched("scale_cols_f32", unsafe { b.launch(Self::elementwise(len)) })
    }

    /// For `batch` index sets of size k (`idx`, values `< n`): the k×k blocks `H[idx, idx]`.
    pub fn gather_blocks_f64(
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
    pub fn gather_rhs_f64(
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
            return Err(OptimaError::Numerical("internal: gather_rhs dimensions".into()));
        }
        let (k32, n32, c32) = (dim("k", k)?, dim("n", n)?, dim("rows", count)?);
        let f = self.function("gather_rhs_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(out).arg(hd0).arg(idx).arg(rows).arg(group).arg(&k32).arg(&n32).arg(&c32);
        // SAFETY: the caller guarantees row and group indices in range, column indices below n.
        Self::launched("gather_rhs_f64", unsafe { b.launch(Self::elementwise(count * k)) })
    }

    /// `a = I` (n×n).
    pub fn fill_identity_f64(&self, a: &mut CudaSlice<f64>, n: usize) -> Result<()> {
        check_len("fill_identity", a.len(), n * n)?;
        let n32 = dim("n", n)?;
        let f = self.function("fill_identity_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(a).arg(&n32);
        // SAFETY: n² values.
        Self::launched("fill_identity_f64", unsafe { b.launch(Self::elementwise(n * n)) })
    }

    /// Uses TF32 tensor cores for f32 GEMMs (`true`) or exact f32 arithmetic (`false`).
    pub fn set_tf32(&self, tf32: bool) -> Result<()> {
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

    fn sym_config<T>(rows: usize, n: usize, alpha: T, beta: T) -> Result<GemmConfig<T>> {
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
    pub fn times_symmetric_f32(
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
    pub fn times_symmetric_f64(
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
    pub fn syrk_f32(&self, x: &CudaSlice<f32>, c: &mut CudaSlice<f32>, n: usize, alpha: f32, beta: f32) -> Result<()> {
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
    pub fn syrk_f64(&self, x: &CudaSlice<f64>, c: &mut CudaSlice<f64>, n: usize, alpha: f64, beta: f64) -> Result<()> {
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
    pub fn spd_inverse_f64(&self, h: &CudaSlice<f64>, n: usize) -> Result<Option<CudaSlice<f64>>> {
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
    pub fn potrf_batched(&self, blocks: &mut CudaSlice<f64>, k: usize) -> Result<Vec<i32>> {
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
    pub fn potrs_batched(
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
            return Err(OptimaError::Numerical("internal: potrs_batched factor index out of range".into()));
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
