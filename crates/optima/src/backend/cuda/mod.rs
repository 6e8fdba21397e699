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

mod kernels;
mod linalg;
mod ops;

use std::collections::HashMap;
use std::ffi::c_int;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cudarc::cublas::CudaBlas;
use cudarc::cusolver::DnHandle;
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, ValidAsZeroBits};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};

use crate::error::{OptimaError, Result};

/// Environment variable that, when set to `1`, makes [`CudaBackend::new`] report the backend
/// unavailable (to exercise the CPU-only paths on a GPU machine).
pub const DISABLE_ENV: &str = "OPTIMA_DISABLE_CUDA";

/// Threads per block of the element-wise kernels.
pub(super) const THREADS: u32 = 256;
/// Most blocks an element-wise launch uses (the kernels loop over the rest).
pub(super) const MAX_BLOCKS: usize = 1 << 16;

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

pub(super) fn unavailable(what: impl std::fmt::Display) -> OptimaError {
    OptimaError::BackendUnavailable(format!("CUDA: {what}"))
}

/// A cudarc error met while computing, with what was being done.
pub(crate) fn device_error(what: &str, e: impl std::fmt::Debug) -> OptimaError {
    OptimaError::Device(format!("CUDA error in {what}: {e:?}"))
}

pub(super) fn dim(what: &str, v: usize) -> Result<c_int> {
    c_int::try_from(v)
        .map_err(|_| OptimaError::InvalidSetting(format!("{what} = {v} exceeds the CUDA API's int range")))
}

pub(super) fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(OptimaError::Internal(format!("device buffer {what} holds {got} values, {want} expected")))
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
    pub(crate) fn session(&self) -> Result<MutexGuard<'_, ()>> {
        let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.ctx.bind_to_thread().map_err(|e| device_error("binding the context", e))?;
        Ok(guard)
    }

    /// Records the device memory in use now (callers do this where their allocations peak).
    pub(crate) fn note_memory(&self) {
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
    pub(crate) fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream.clone_htod(host).map_err(|e| device_error("host-to-device copy", e))
    }

    /// Overwrites `dev` with `host` (same length).
    pub(crate) fn upload_into<T: DeviceRepr>(&self, host: &[T], dev: &mut CudaSlice<T>) -> Result<()> {
        check_len("upload target", dev.len(), host.len())?;
        self.stream.memcpy_htod(host, dev).map_err(|e| device_error("host-to-device copy", e))
    }

    /// A zeroed device buffer of `len` values.
    pub(crate) fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros(len.max(1)).map_err(|e| device_error(&format!("allocating {len} values"), e))
    }

    /// Copies a device buffer to the host, waiting for it.
    pub(crate) fn download<T: DeviceRepr>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        let host = self.stream.clone_dtoh(dev).map_err(|e| device_error("device-to-host copy", e))?;
        self.synchronize()?;
        Ok(host)
    }

    /// A device copy of a device buffer.
    pub(crate) fn duplicate<T: DeviceRepr>(&self, dev: &CudaSlice<T>) -> Result<CudaSlice<T>> {
        self.stream.clone_dtod(dev).map_err(|e| device_error("device-to-device copy", e))
    }

    /// Sets every value of `a` to zero.
    pub(crate) fn fill_zero<T: DeviceRepr + ValidAsZeroBits>(&self, a: &mut CudaSlice<T>) -> Result<()> {
        self.stream.memset_zeros(a).map_err(|e| device_error("memset", e))
    }

    /// `dst = src` (same length).
    pub(crate) fn copy<T: DeviceRepr>(&self, src: &CudaSlice<T>, dst: &mut CudaSlice<T>) -> Result<()> {
        check_len("copy target", dst.len(), src.len())?;
        self.stream.memcpy_dtod(src, dst).map_err(|e| device_error("device-to-device copy", e))
    }
}
