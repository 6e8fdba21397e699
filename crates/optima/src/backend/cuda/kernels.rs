//! The NVRTC source of optima's element-wise, masking, gather and per-row reduction kernels.
//!
//! Matrices are row-major `rows × n` (the layout of the host arrays), so row `i` of a matrix is
//! `a[i*n .. (i+1)*n]`. Element-wise kernels use grid-stride loops over `long long` indices;
//! per-row reductions use one block of [`REDUCE_THREADS`] threads per row and accumulate in
//! double.

/// Threads per block of the per-row reductions (a power of two; the source assumes 256).
pub const REDUCE_THREADS: u32 = 256;

/// Names of every kernel in [`SOURCE`], loaded once per backend.
pub const KERNEL_NAMES: &[&str] = &[
    "mask_mul_f32",
    "mask_mul_f64",
    "sub_f64",
    "convert_f64_to_f32",
    "add_f32_to_f64",
    "row_dot_max_f32",
    "row_max_f64",
    "pcg_alpha",
    "pcg_step_f32",
    "pcg_beta",
    "pcg_direction_f32",
    "pcg_update_active",
    "scale_cols_f32",
    "gather_blocks_f64",
    "gather_rhs_f64",
    "fill_identity_f64",
];

/// CUDA C source compiled at run time by NVRTC.
pub const SOURCE: &str = r#"
#define GRID_STRIDE(i, len) for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (len); i += (long long)blockDim.x * gridDim.x)

extern "C" __global__ void mask_mul_f32(float* a, const float* kept, long long len) {
    GRID_STRIDE(i, len) { a[i] *= kept[i]; }
}

extern "C" __global__ void mask_mul_f64(double* a, const float* kept, long long len) {
    GRID_STRIDE(i, len) { a[i] *= (double)kept[i]; }
}

// out = x - w
extern "C" __global__ void sub_f64(double* out, const double* x, const double* w, long long len) {
    GRID_STRIDE(i, len) { out[i] = x[i] - w[i]; }
}

// out = (float)(sign * in)
extern "C" __global__ void convert_f64_to_f32(float* out, const double* in, double sign, long long len) {
    GRID_STRIDE(i, len) { out[i] = (float)(sign * in[i]); }
}

// x += (double)e
extern "C" __global__ void add_f32_to_f64(double* x, const float* e, long long len) {
    GRID_STRIDE(i, len) { x[i] += (double)e[i]; }
}

// One block per row: dot[row] = sum_j a[row,j] * b[row,j], amax[row] = max_j |a[row,j]| (NaN propagates).
extern "C" __global__ void row_dot_max_f32(const float* a, const float* b, double* dot, double* amax, int n) {
    __shared__ double s_dot[256];
    __shared__ double s_max[256];
    long long base = (long long)blockIdx.x * n;
    double d = 0.0, m = 0.0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        double x = (double)a[base + j];
        double ax = fabs(x);
        d += x * (double)b[base + j];
        m = (ax != ax || ax > m) ? ax : m;
    }
    s_dot[threadIdx.x] = d;
    s_max[threadIdx.x] = m;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            double o = s_max[threadIdx.x + s];
            double c = s_max[threadIdx.x];
            s_dot[threadIdx.x] += s_dot[threadIdx.x + s];
            s_max[threadIdx.x] = (o != o || o > c) ? o : c;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) { dot[blockIdx.x] = s_dot[0]; amax[blockIdx.x] = s_max[0]; }
}

// One block per row: amax[row] = max_j |a[row,j]| (NaN propagates).
extern "C" __global__ void row_max_f64(const double* a, double* amax, int n) {
    __shared__ double s_max[256];
    long long base = (long long)blockIdx.x * n;
    double m = 0.0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        double x = fabs(a[base + j]);
        m = (x != x || x > m) ? x : m;
    }
    s_max[threadIdx.x] = m;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            double o = s_max[threadIdx.x + s];
            double c = s_max[threadIdx.x];
            s_max[threadIdx.x] = (o != o || o > c) ? o : c;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) { amax[blockIdx.x] = s_max[0]; }
}

// alpha = rz / pq for active rows with a positive curvature, else 0.
extern "C" __global__ void pcg_alpha(const double* rz, const double* pq, const int* active, double* alpha, int m) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < m) { alpha[i] = (active[i] && pq[i] > 0.0 && rz[i] > 0.0) ? rz[i] / pq[i] : 0.0; }
}

// e += alpha_row * p, r -= alpha_row * q.
extern "C" __global__ void pcg_step_f32(float* e, float* r, const float* p, const float* q, const double* alpha, long long len, int n) {
    GRID_STRIDE(i, len) {
        float a = (float)alpha[i / n];
        e[i] += a * p[i];
        r[i] -= a * q[i];
    }
}

// beta = rz_new / rz for active rows (0 otherwise); rz = rz_new.
extern "C" __global__ void pcg_beta(double* rz, const double* rz_new, const int* active, double* beta, int m) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < m) {
        beta[i] = (active[i] && rz[i] > 0.0) ? rz_new[i] / rz[i] : 0.0;
        rz[i] = rz_new[i];
    }
}

// p = z + beta_row * p.
extern "C" __global__ void pcg_direction_f32(float* p, const float* z, const double* beta, long long len, int n) {
    GRID_STRIDE(i, len) { p[i] = z[i] + (float)beta[i / n] * p[i]; }
}

// A row stays active while its residual is above its target; a non-finite residual stops it.
extern "C" __global__ void pcg_update_active(int* active, const double* rmax, const double* target, int m) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < m) {
        double r = rmax[i];
        active[i] = (active[i] && r == r && r > target[i]) ? 1 : 0;
    }
}

// Jacobi: out[row,j] = r[row,j] * dinv[j] * kept[row,j].
extern "C" __global__ void scale_cols_f32(float* out, const float* r, const float* dinv, const float* kept, long long len, int n) {
    GRID_STRIDE(i, len) { out[i] = r[i] * dinv[i % n] * kept[i]; }
}

// For each of `batch` index sets idx[b*k .. (b+1)*k]: out[b][a + c*k] = h[idx[a]*n + idx[c]]
// (H_SS as a column-major k×k block; H is symmetric so the layout is immaterial).
extern "C" __global__ void gather_blocks_f64(double* out, const double* h, const int* idx, int k, int n, int batch) {
    long long len = (long long)batch * k * k;
    GRID_STRIDE(t, len) {
        long long b = t / ((long long)k * k);
        long long rem = t - b * k * k;
        int c = (int)(rem / k);
        int a = (int)(rem - (long long)c * k);
        const int* set = idx + b * k;
        out[t] = h[(long long)set[a] * n + set[c]];
    }
}

// Right-hand sides of the primal form: out[r*k + a] = -hd0[rows[r]*n + idx[group[r]*k + a]].
extern "C" __global__ void gather_rhs_f64(double* out, const double* hd0, const int* idx, const int* rows, const int* group, int k, int n, int count) {
    long long len = (long long)count * k;
    GRID_STRIDE(t, len) {
        long long r = t / k;
        int a = (int)(t - r * k);
        int col = idx[(long long)group[r] * k + a];
        out[t] = -hd0[(long long)rows[r] * n + col];
    }
}

// a = I (n×n).
extern "C" __global__ void fill_identity_f64(double* a, int n) {
    long long len = (long long)n * n;
    GRID_STRIDE(t, len) { a[t] = (t / n == t % n) ? 1.0 : 0.0; }
}
"#;
