// The fused consolidation step and the end-of-task updates (CPU twins: crates/si/src/fused.rs
// and consolidate.rs; the arithmetic is the same expression for expression, compiled without
// FMA contraction, so theta, m, v and omega match the CPU bit for bit).

// One step's configuration, passed by value (the Rust side is the #[repr(C)] StepParams of
// crates/si/src/cuda.rs: the same fields in the same order).
struct StepParams {
    float two_c;     // 2c: the penalty gradient is (2c Omega)(theta - theta*)
    float lr;        // SGD's learning rate
    float beta1;
    float omb1;      // 1 - beta1
    float beta2;
    float omb2;      // 1 - beta2
    float step;      // Adam's lr / (1 - beta1^t)
    float bc2_sqrt;  // sqrt(1 - beta2^t)
    float eps;
    int adam;        // 1: Adam, 0: SGD
    int penalty;     // 1: c != 0 (read Omega and theta*)
    int omega;       // 0: no path integral, 1: task gradient, 2: total gradient
    u64 n;
};

// Flushes a subnormal to zero (engram_si::flush_subnormal).
__device__ __forceinline__ float flush_subnormal(float x) {
    return fabsf(x) < 1.17549435082228750797e-38f ? 0.0f : x;
}

// Per parameter, with theta the value before the step:
//   G = g + (2c Omega)(theta - theta*)                         SI eq. (4)'s gradient
//   Adam: m = beta1 m + (1 - beta1) G; v = beta2 v + (1 - beta2) G G (subnormals -> 0)
//         theta' = theta - step (m / (sqrt(v) / sqrt(1 - beta2^t) + eps));  SGD: theta - lr G
//   omega -= g_used (theta' - theta)                            SI eq. (3)
// and partials[block] = sum over the block's parameters of Omega (theta - theta*)^2, in f64.
extern "C" __global__ void fused_step_f32(
    StepParams k, float* theta, const float* g, const float* big_omega, const float* theta_star,
    float* omega, float* m, float* v, double* partials
) {
    __shared__ double shared[REDUCE_THREADS];
    double pen = 0.0;
    GRID_STRIDE(i, k.n) {
        float t0 = theta[i];
        float gi = g[i];
        float gt = gi;
        if (k.penalty) {
            float d = t0 - theta_star[i];
            pen += (double)(big_omega[i] * d * d);
            gt = gi + (k.two_c * big_omega[i]) * d;
        }
        float t1;
        if (k.adam) {
            float mi = flush_subnormal(k.beta1 * m[i] + k.omb1 * gt);
            float vi = flush_subnormal(k.beta2 * v[i] + k.omb2 * gt * gt);
            m[i] = mi;
            v[i] = vi;
            t1 = t0 - k.step * (mi / (sqrtf(vi) / k.bc2_sqrt + k.eps));
        } else {
            t1 = t0 - k.lr * gt;
        }
        theta[i] = t1;
        if (k.omega != 0) {
            float gu = k.omega == 1 ? gi : gt;
            omega[i] -= gu * (t1 - t0);
        }
    }
    double total = block_sum_f64(pen, shared);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// partials[block] = sum of Omega (theta - theta*)^2 over the block's parameters (no step).
extern "C" __global__ void penalty_partials_f32(
    const float* theta, const float* big_omega, const float* theta_star, double* partials, u64 n
) {
    __shared__ double shared[REDUCE_THREADS];
    double pen = 0.0;
    GRID_STRIDE(i, n) {
        float d = theta[i] - theta_star[i];
        pen += (double)(big_omega[i] * d * d);
    }
    double total = block_sum_f64(pen, shared);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// out[0] = c * (the partials added in block order), one thread.
extern "C" __global__ void penalty_finish_f64(const double* partials, u64 blocks, double c, double* out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double total = 0.0;
    for (u64 b = 0; b < blocks; ++b) total += partials[b];
    out[0] = c * total;
}

// SI's consolidation (Zenke et al. 2017, eq. (5)): term = omega / ((theta - theta*)^2 + xi);
// relu 0: Omega += term, 1: Omega += relu(term), 2: Omega = relu(Omega + term); omega = 0,
// theta* = theta.
extern "C" __global__ void si_end_of_task_f32(
    const float* theta, float* omega, float* big_omega, float* theta_star, float xi, int relu, u64 n
) {
    GRID_STRIDE(i, n) {
        float t = theta[i];
        float delta = t - theta_star[i];
        float term = omega[i] / (delta * delta + xi);
        float o = big_omega[i];
        if (relu == 0) o = o + term;
        else if (relu == 1) o = o + fmaxf(term, 0.0f);
        else o = fmaxf(o + term, 0.0f);
        big_omega[i] = o;
        omega[i] = 0.0f;
        theta_star[i] = t;
    }
}

// The other methods' consolidation (engram_si::Consolidation): rule 0 L2 (Omega = 1), 1 EWC with
// one penalty per task (merged anchors), 2 online EWC (Omega = gamma Omega + F), 3 MAS
// (Omega += F); theta* = theta except for rule 1.
extern "C" __global__ void consolidate_f32(
    int rule, float gamma, const float* theta, const float* fresh, float* big_omega, float* theta_star, u64 n
) {
    GRID_STRIDE(i, n) {
        float th = theta[i];
        if (rule == 0) {
            big_omega[i] = 1.0f;
            theta_star[i] = th;
        } else if (rule == 1) {
            float om = big_omega[i], fi = fresh[i];
            float o = om + fi;
            theta_star[i] = o > 0.0f ? (om * theta_star[i] + fi * th) / o : th;
            big_omega[i] = o;
        } else if (rule == 2) {
            big_omega[i] = gamma * big_omega[i] + fresh[i];
            theta_star[i] = th;
        } else {
            big_omega[i] += fresh[i];
            theta_star[i] = th;
        }
    }
}

// out = acc / n rounded to f32, or its square (the square of a mean gradient).
extern "C" __global__ void importance_mean_f32(const double* acc, double n, int squared, float* out, u64 len) {
    GRID_STRIDE(i, len) {
        double q = acc[i] / n;
        out[i] = (float)(squared ? q * q : q);
    }
}

// SI's off-by-one variant: omega -= g_used * prev_delta, then prev_delta = theta - theta_before;
// g_used = g, or with total != 0 g + (2c Omega)(theta_before - theta*).
extern "C" __global__ void prev_step_accumulate_f32(
    float* omega, const float* theta, const float* theta_before, const float* g, float* prev_delta,
    const float* big_omega, const float* theta_star, float c, int total, u64 n
) {
    GRID_STRIDE(i, n) {
        float gu = total ? g[i] + ((2.0f * c) * big_omega[i]) * (theta_before[i] - theta_star[i]) : g[i];
        omega[i] -= gu * prev_delta[i];
        prev_delta[i] = theta[i] - theta_before[i];
    }
}
