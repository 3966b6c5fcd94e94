// Reductions (CPU twins: crates/tape/src/cpu/reduce.rs). No floating-point atomics: partial
// sums per block, combined in a fixed order.

// Column sums: one thread per column adds the rows in order (the CPU's order: bit-identical).
// With `accumulate` the fresh sum is added to out.
extern "C" __global__ void sum_rows_f32(const float* x, float* out, u64 rows, u64 cols, int accumulate) {
    GRID_STRIDE(j, cols) {
        float s = 0.0f;
        for (u64 r = 0; r < rows; ++r) s += x[r * cols + j];
        out[j] = accumulate ? out[j] + s : s;
    }
}

// out[0] = sum of x, in f64: one block of REDUCE_THREADS, each thread a strided partial, then a
// fixed tree.
extern "C" __global__ void sum_all_f32(const float* x, float* out, u64 n) {
    __shared__ double shared[REDUCE_THREADS];
    double acc = 0.0;
    for (u64 i = threadIdx.x; i < n; i += REDUCE_THREADS) acc += (double)x[i];
    double total = block_sum_f64(acc, shared);
    if (threadIdx.x == 0) out[0] = (float)total;
}

// acc += x, acc in f64.
extern "C" __global__ void accumulate_f64_f32(double* acc, const float* x, u64 n) {
    GRID_STRIDE(i, n) acc[i] += (double)x[i];
}

// out[i] = <rows[i], v> in f64: block i, strided partials, fixed tree.
extern "C" __global__ void dots_f64_f32(const float* rows, const float* v, double* out, u64 p) {
    __shared__ double shared[REDUCE_THREADS];
    const float* r = rows + (u64)blockIdx.x * p;
    double acc = 0.0;
    for (u64 j = threadIdx.x; j < p; j += REDUCE_THREADS) acc += (double)r[j] * (double)v[j];
    double total = block_sum_f64(acc, shared);
    if (threadIdx.x == 0) out[blockIdx.x] = total;
}

// out = rows rows' in f64 (k x k): block (i, j) for j <= i, mirrored.
extern "C" __global__ void gram_f64_f32(const float* rows, double* out, u64 k, u64 p) {
    __shared__ double shared[REDUCE_THREADS];
    u64 i = blockIdx.x / k, j = blockIdx.x % k;
    if (j > i) return;
    const float* a = rows + i * p;
    const float* b = rows + j * p;
    double acc = 0.0;
    for (u64 c = threadIdx.x; c < p; c += REDUCE_THREADS) acc += (double)a[c] * (double)b[c];
    double total = block_sum_f64(acc, shared);
    if (threadIdx.x == 0) {
        out[i * k + j] = total;
        out[j * k + i] = total;
    }
}

// g = g + sum_i w[i] rows[i], in f64, rounded once (GEM paper Eq. 13; A-GEM's projection with one
// row). The same sum in the same order as the CPU: bit-identical.
extern "C" __global__ void combine_f64_f32(float* g, const float* rows, const double* w, u64 k, u64 p) {
    GRID_STRIDE(c, p) {
        double a = (double)g[c];
        for (u64 i = 0; i < k; ++i) a += w[i] * (double)rows[i * p + c];
        g[c] = (float)a;
    }
}

// out[0] = index of the first NaN or infinity (out[0] set to u64 max before the launch).
extern "C" __global__ void first_non_finite_f32(const float* x, u64* out, u64 n) {
    GRID_STRIDE(i, n) {
        if (!isfinite(x[i])) atomicMin(out, i);
    }
}

// out[0] += number of non-zero elements (out[0] set to 0 before the launch).
extern "C" __global__ void count_nonzero_f32(const float* x, u64* out, u64 n) {
    u64 count = 0;
    GRID_STRIDE(i, n) count += x[i] != 0.0f;
    if (count) atomicAdd(out, count);
}
