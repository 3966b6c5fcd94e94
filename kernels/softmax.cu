// The softmax family and the arg-max count (CPU twins: crates/tape/src/cpu/softmax.rs). One
// thread per row: rows are short (the classes).

// Whether class c is allowed in row r: no mask (mask_rows 0), a broadcast row (1), or a row each.
__device__ __forceinline__ bool allowed(const float* mask, u64 mask_rows, u64 r, u64 cols, u64 c) {
    if (mask_rows == 0) return true;
    u64 row = mask_rows == 1 ? 0 : r;
    return mask[row * cols + c] != 0.0f;
}

extern "C" __global__ void log_softmax_f32(const float* x, float* out, u64 rows, u64 cols) {
    GRID_STRIDE(r, rows) {
        const float* xr = x + r * cols;
        float mx = -INF_F32;
        for (u64 c = 0; c < cols; ++c) mx = fmaxf(mx, xr[c]);
        float z = 0.0f;
        for (u64 c = 0; c < cols; ++c) z += expf(xr[c] - mx);
        float ln_z = logf(z);
        for (u64 c = 0; c < cols; ++c) out[r * cols + c] = (xr[c] - mx) - ln_z;
    }
}

// gx = gy - exp(y) * rowsum(gy).
extern "C" __global__ void log_softmax_backward_f32(const float* y, const float* gy, float* out, u64 rows, u64 cols) {
    GRID_STRIDE(r, rows) {
        float s = 0.0f;
        for (u64 c = 0; c < cols; ++c) s += gy[r * cols + c];
        for (u64 c = 0; c < cols; ++c) out[r * cols + c] = gy[r * cols + c] - expf(y[r * cols + c]) * s;
    }
}

// Per row: the masked softmax probabilities (zero where masked) and the row's negative log
// likelihood in f64 (+inf for a masked-out label). masked_xent_mean_f32 averages them.
extern "C" __global__ void masked_xent_rows_f32(
    const float* logits, const u32* labels, const float* mask, u64 mask_rows,
    float* probs, double* nll, u64 rows, u64 cols
) {
    GRID_STRIDE(r, rows) {
        const float* x = logits + r * cols;
        float* p = probs + r * cols;
        float mx = -INF_F32;
        for (u64 c = 0; c < cols; ++c)
            if (allowed(mask, mask_rows, r, cols, c) && x[c] > mx) mx = x[c];
        float z = 0.0f;
        for (u64 c = 0; c < cols; ++c) {
            p[c] = 0.0f;
            if (allowed(mask, mask_rows, r, cols, c)) {
                float e = expf(x[c] - mx);
                p[c] = e;
                z += e;
            }
        }
        float inv = 1.0f / z;
        for (u64 c = 0; c < cols; ++c) p[c] *= inv;
        u64 y = labels[r];
        // A masked-out label gives +inf (as on the CPU); a label out of range, NaN (the CPU
        // panics; here the run's check of the loss stops it).
        nll[r] = y >= cols ? NAN_F64
                 : allowed(mask, mask_rows, r, cols, y) ? (double)((mx - x[y]) + logf(z)) : INF_F64;
    }
}

// loss[0] = mean of the rows' nll, added in row order (one thread).
extern "C" __global__ void masked_xent_mean_f32(const double* nll, float* loss, u64 rows) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double total = 0.0;
    for (u64 r = 0; r < rows; ++r) total += nll[r];
    loss[0] = rows == 0 ? 0.0f : (float)(total / (double)rows);
}

// out = (p - onehot(label)) * gy / rows.
extern "C" __global__ void masked_xent_backward_f32(
    const float* probs, const u32* labels, const float* gy, float* out, u64 rows, u64 cols
) {
    float s = rows == 0 ? 0.0f : gy[0] / (float)rows;
    GRID_STRIDE(i, rows * cols) {
        u64 r = i / cols, c = i % cols;
        float o = probs[i] * s;
        if (c == labels[r]) o -= s;
        out[i] = o;
    }
}

// out[0] += number of rows whose arg-max over the allowed classes (ties: lowest index) is the
// label (out[0] set to 0 before the launch).
extern "C" __global__ void count_correct_f32(
    const float* logits, const u32* labels, const float* mask, u64 mask_rows, u32* out, u64 rows, u64 cols
) {
    u32 count = 0;
    GRID_STRIDE(r, rows) {
        const float* x = logits + r * cols;
        long long best = -1;
        float best_v = 0.0f;
        for (u64 c = 0; c < cols; ++c) {
            if (allowed(mask, mask_rows, r, cols, c) && (best < 0 || x[c] > best_v)) {
                best = (long long)c;
                best_v = x[c];
            }
        }
        count += best >= 0 && (u64)best == labels[r];
    }
    if (count) atomicAdd(out, count);
}
