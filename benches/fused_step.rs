//! The fused consolidation step against the unfused one and against memory bandwidth.
//!
//! Three kernels, all parallel over the same fixed chunks with rayon, at 100k, 1M, 10M and 50M
//! parameters:
//! - `triad`: STREAM triad `a = b + s c` (`engram_si::stream::triad_f32`): the bandwidth this
//!   machine achieves in this very run. STREAM's byte count: 12 bytes per element.
//! - `fused`: `engram_si::fused_step_f32`, the full SI configuration (Adam, c != 0, omega
//!   accumulated from the task gradient). It must read theta, g, Omega, theta*, omega, m, v and
//!   write theta, m, v, omega: 11 f32 = 44 bytes per parameter.
//! - `unfused`: `engram_si::reference::unfused_step_f32_with`, the same arithmetic as 11
//!   separate passes with full-size temporaries (reused across iterations, as a caching
//!   allocator would: the faster of the two reference variants).
//!
//! Both step variants are charged the SAME 44 bytes per parameter, the fused step's minimal
//! traffic, so their GB/s figures compare like with like: GB/s(fused) / GB/s(unfused) is the
//! speed-up, and GB/s(fused) / GB/s(triad) is the fraction of achievable bandwidth the fused
//! step reaches. (The unfused step really moves about 3x more bytes; its "GB/s" here is useful
//! work per second, not bus traffic.) Throughput is reported in decimal GB/s.
//!
//! Run: `cargo bench --bench fused_step -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use engram_si::reference::{unfused_step_f32_with, Scratch};
use engram_si::stream::triad_f32;
use engram_si::{fused_step_f32, OmegaGrad, Optimizer, Slices, StepConfig};

/// Bytes per parameter the fused step must move: 7 f32 reads + 4 f32 writes.
const STEP_BYTES: u64 = 44;
/// STREAM triad: 2 f32 reads + 1 f32 write.
const TRIAD_BYTES: u64 = 12;
const SIZES: [usize; 4] = [100_000, 1_000_000, 10_000_000, 50_000_000];

/// Deterministic pseudo-random values in [lo, hi) (a 32-bit LCG; no allocation beyond `out`).
fn fill(n: usize, seed: u32, lo: f32, hi: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            lo + (hi - lo) * ((x >> 8) as f32 / (1u32 << 24) as f32)
        })
        .collect()
}

struct State {
    theta: Vec<f32>,
    g: Vec<f32>,
    big_omega: Vec<f32>,
    theta_star: Vec<f32>,
    omega: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl State {
    fn new(n: usize) -> State {
        State {
            theta: fill(n, 1, -1.0, 1.0),
            g: fill(n, 2, -1e-2, 1e-2),
            big_omega: fill(n, 3, 0.0, 1.0),
            theta_star: fill(n, 4, -1.0, 1.0),
            omega: vec![0.0; n],
            m: fill(n, 5, -1e-3, 1e-3),
            v: fill(n, 6, 1e-6, 1e-4),
        }
    }

    fn slices(&mut self) -> Slices<'_> {
        Slices {
            theta: &mut self.theta,
            g: &self.g,
            big_omega: &self.big_omega,
            theta_star: &self.theta_star,
            omega: &mut self.omega,
            m: &mut self.m,
            v: &mut self.v,
        }
    }
}

/// The full SI step: Adam, penalty on, omega from the task gradient.
const CFG: StepConfig = StepConfig {
    optimizer: Optimizer::Adam { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8 },
    c: 0.1,
    omega: Some(OmegaGrad::Task),
    t: 10,
};

fn bench(c: &mut Criterion) {
    for n in SIZES {
        let mut group = c.benchmark_group("fused_step");
        if n >= 10_000_000 {
            group.sample_size(10).sampling_mode(SamplingMode::Flat);
        }

        let (mut a, b, cc) = (vec![0.0f32; n], fill(n, 7, -1.0, 1.0), fill(n, 8, -1.0, 1.0));
        group.throughput(Throughput::BytesDecimal(TRIAD_BYTES * n as u64));
        group.bench_function(BenchmarkId::new("triad", n), |bch| {
            bch.iter(|| triad_f32(black_box(&mut a), black_box(&b), black_box(&cc), black_box(0.5)))
        });
        drop((a, b, cc));

        let mut st = State::new(n);
        group.throughput(Throughput::BytesDecimal(STEP_BYTES * n as u64));
        group.bench_function(BenchmarkId::new("fused", n), |bch| {
            bch.iter(|| black_box(fused_step_f32(st.slices(), black_box(&CFG))))
        });

        let mut scratch = Scratch::new(n);
        group.bench_function(BenchmarkId::new("unfused", n), |bch| {
            bch.iter(|| black_box(unfused_step_f32_with(st.slices(), black_box(&CFG), &mut scratch)))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
