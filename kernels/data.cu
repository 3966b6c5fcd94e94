// Gathering a batch by index from the data held on the device (CPU twin:
// crates/tape/src/cpu/data.rs): out[r][j] = src[rows[r]][m(r, j)], with m(r, j) = j (mode 0),
// maps[j] (mode 1, one permutation) or maps[ids[r]][j] (mode 2, a permutation per row).
// The indices are the run's own, checked when the tasks are built (the CPU twin panics on one
// out of range; here it would read outside src): rows[r] < src rows, maps[..] < cols.

__device__ __forceinline__ u64 source_column(const u32* ids, const u32* maps, int mode, u64 r, u64 j, u64 cols) {
    if (mode == 0) return j;
    if (mode == 1) return maps[j];
    return maps[(u64)ids[r] * cols + j];
}

extern "C" __global__ void gather_rows_f32(
    const float* src, const u32* rows, const u32* ids, const u32* maps, int mode, float* out, u64 b, u64 cols
) {
    GRID_STRIDE(i, b * cols) {
        u64 r = i / cols, j = i % cols;
        out[i] = src[(u64)rows[r] * cols + source_column(ids, maps, mode, r, j, cols)];
    }
}

extern "C" __global__ void gather_rows_u32(
    const u32* src, const u32* rows, const u32* ids, const u32* maps, int mode, u32* out, u64 b, u64 cols
) {
    GRID_STRIDE(i, b * cols) {
        u64 r = i / cols, j = i % cols;
        out[i] = src[(u64)rows[r] * cols + source_column(ids, maps, mode, r, j, cols)];
    }
}
