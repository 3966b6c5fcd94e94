// Element-wise kernels and the bias add (CPU twins: crates/tape/src/cpu/elementwise.rs).

extern "C" __global__ void add_f32(const float* a, const float* b, float* out, u64 n) {
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

extern "C" __global__ void sub_f32(const float* a, const float* b, float* out, u64 n) {
    GRID_STRIDE(i, n) out[i] = a[i] - b[i];
}

extern "C" __global__ void mul_f32(const float* a, const float* b, float* out, u64 n) {
    GRID_STRIDE(i, n) out[i] = a[i] * b[i];
}

extern "C" __global__ void scale_f32(const float* a, float s, float* out, u64 n) {
    GRID_STRIDE(i, n) out[i] = s * a[i];
}

extern "C" __global__ void accumulate_f32(float* acc, const float* x, u64 n) {
    GRID_STRIDE(i, n) acc[i] += x[i];
}

extern "C" __global__ void abs_f32(const float* x, float* out, u64 n) {
    GRID_STRIDE(i, n) out[i] = fabsf(x[i]);
}

// max(x, 0); NaN gives 0, as the CPU's `if v > 0 { v } else { 0 }`.
extern "C" __global__ void relu_f32(const float* x, float* out, u64 n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        out[i] = v > 0.0f ? v : 0.0f;
    }
}

// gy * 1[x > 0]: the derivative is taken as 0 at x = 0.
extern "C" __global__ void relu_backward_f32(const float* x, const float* gy, float* out, u64 n) {
    GRID_STRIDE(i, n) out[i] = x[i] > 0.0f ? gy[i] : 0.0f;
}

// out[r][c] = x[r][c] + row[c].
extern "C" __global__ void add_row_f32(const float* x, const float* row, float* out, u64 rows, u64 cols) {
    GRID_STRIDE(i, rows * cols) out[i] = x[i] + row[i % cols];
}

// y[r][c] = y[r][c] + bias[c], then max(., 0) when relu (NaN gives 0): add_row then relu, in
// place, in one pass.
extern "C" __global__ void add_bias_f32(float* y, const float* bias, int relu, u64 rows, u64 cols) {
    GRID_STRIDE(i, rows * cols) {
        float v = y[i] + bias[i % cols];
        y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
}

// Every element s * g[0] (the backward of sum and mean).
extern "C" __global__ void broadcast_scalar_f32(const float* g, float s, float* out, u64 n) {
    GRID_STRIDE(i, n) out[i] = s * g[0];
}

extern "C" __global__ void fill_f32(float* out, float value, u64 n) {
    GRID_STRIDE(i, n) out[i] = value;
}

extern "C" __global__ void fill_f64(double* out, double value, u64 n) {
    GRID_STRIDE(i, n) out[i] = value;
}

extern "C" __global__ void fill_u32(u32* out, u32 value, u64 n) {
    GRID_STRIDE(i, n) out[i] = value;
}

extern "C" __global__ void fill_u64(u64* out, u64 value, u64 n) {
    GRID_STRIDE(i, n) out[i] = value;
}
