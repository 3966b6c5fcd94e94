// Shared by every kernel file (prepended by the loader; NVRTC has no include path here).
//
// Conventions (the same as the CPU kernels in crates/tape/src/cpu and crates/si/src):
// * kernels are named {op}_{dtype} and take element counts as unsigned long long;
// * element-wise kernels walk a grid-stride loop, so any launch covers any size;
// * reductions never use floating-point atomics: each block writes its partial sum, and a
//   second, single-thread pass adds the partials in block order, so the same inputs give the
//   same bits run after run (integer atomics, order-independent, count and find minima);
// * compiled with --fmad=false, --prec-div=true, --prec-sqrt=true, --ftz=false: a * b + c is a
//   multiply then an add, as on the CPU, so element-wise arithmetic matches the CPU bit for bit
//   (expf and logf do not: CUDA's are within 2 ulp).

typedef unsigned int u32;
typedef unsigned long long u64;

#define GRID_STRIDE(i, n) for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (u64)blockDim.x * gridDim.x)

// Infinities (NVRTC has no math.h macros).
#define INF_F32 __int_as_float(0x7f800000)
#define INF_F64 __longlong_as_double(0x7ff0000000000000LL)
#define NAN_F64 __longlong_as_double(0x7ff8000000000000LL)

// Threads per block of the reductions (a power of two; the launches use exactly this).
#define REDUCE_THREADS 256

// Sums the block's values in shared memory in a fixed tree order; thread 0 holds the total.
__device__ __forceinline__ double block_sum_f64(double v, double* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (unsigned int s = REDUCE_THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    return shared[0];
}
