//! CPU kernel tests: the matrix product against a naive triple loop, bit-identical results
//! whatever the number of rayon threads, the stability of the fused masked cross-entropy in
//! `f32`, and `count_correct`'s mask.

mod common;

use common::{count_correct, log_softmax, matmul, ArrayTape};
use engram_tape::{cpu::CpuFloat, Float, Var};
use ndarray::{array, Array2};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A `rows x cols` matrix with elements uniform in `[lo, hi)`.
fn uniform<T: CpuFloat>(rng: &mut ChaCha8Rng, rows: usize, cols: usize, lo: f64, hi: f64) -> Array2<T> {
    Array2::from_shape_simple_fn((rows, cols), || T::from_f64_lossy(rng.random_range(lo..hi)))
}

/// Storage for `op(X)` of shape `rows x cols`: `X` itself is `cols x rows` when transposed.
fn stored<T: CpuFloat>(rng: &mut ChaCha8Rng, rows: usize, cols: usize, trans: bool) -> Array2<T> {
    if trans {
        uniform(rng, cols, rows, -2.0, 2.0)
    } else {
        uniform(rng, rows, cols, -2.0, 2.0)
    }
}

/// Naive `op(A) op(B)` in `f64` (whatever `T` is), and the error scale `sum_p |op(A)[i,p] op(B)[p,j]|`
/// of each element.
fn naive<T: CpuFloat>(a: &Array2<T>, ta: bool, b: &Array2<T>, tb: bool) -> (Array2<f64>, Array2<f64>) {
    let oa = if ta { a.t().mapv(Float::as_f64) } else { a.mapv(Float::as_f64) };
    let ob = if tb { b.t().mapv(Float::as_f64) } else { b.mapv(Float::as_f64) };
    let (m, k) = oa.dim();
    let (k2, n) = ob.dim();
    assert_eq!(k, k2);
    let (oa, ob) = (oa.as_standard_layout().into_owned(), ob.as_standard_layout().into_owned());
    let (sa, sb) = (oa.as_slice().unwrap(), ob.as_slice().unwrap());
    let mut c = Array2::zeros((m, n));
    let mut scale = Array2::zeros((m, n));
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut abs) = (0.0, 0.0);
            for p in 0..k {
                let v = sa[i * k + p] * sb[p * n + j];
                s += v;
                abs += v.abs();
            }
            c[[i, j]] = s;
            scale[[i, j]] = abs;
        }
    }
    (c, scale)
}

/// `cpu::matmul` agrees with the naive product: `|C - C_ref| <= rtol * sum_p |a_ip b_pj|` for
/// every element (the natural scale of a dot product's rounding error).
fn check_matmul<T: CpuFloat>(
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
    rtol: f64,
    seed: u64,
) -> Result<(), String> {
    let mut r = rng(seed);
    let a: Array2<T> = stored(&mut r, m, k, ta);
    let b: Array2<T> = stored(&mut r, k, n, tb);
    let c = matmul(&a, ta, &b, tb);
    if c.dim() != (m, n) {
        return Err(format!("shape {:?}, expected {:?}", c.dim(), (m, n)));
    }
    let (c_ref, scale) = naive(&a, ta, &b, tb);
    for ((ij, &v), (&want, &s)) in c.indexed_iter().zip(c_ref.iter().zip(scale.iter())) {
        let err = (v.as_f64() - want).abs();
        if err.is_nan() || err > rtol * s {
            return Err(format!(
                "matmul_{} {m}x{k} @ {k}x{n} (trans {ta}, {tb}) at {ij:?}: {v} vs {want}, |diff| {err:e} > {:e}",
                T::NAME,
                rtol * s
            ));
        }
    }
    Ok(())
}

const TRANS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `matmul_f64` and `matmul_f32` on random shapes (`1..=48` per dimension) and transpose flags
    /// equal the naive triple loop within `1e-12` (f64) / `1e-5` (f32) of `sum_p |a_ip b_pj|`.
    #[test]
    fn matmul_matches_naive_on_random_shapes(
        m in 1usize..=48,
        k in 1usize..=48,
        n in 1usize..=48,
        ta in any::<bool>(),
        tb in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check_matmul::<f64>(m, k, n, ta, tb, 1e-12, seed).map_err(TestCaseError::fail)?;
        check_matmul::<f32>(m, k, n, ta, tb, 1e-5, seed).map_err(TestCaseError::fail)?;
    }
}

/// Shapes large enough for the parallel row-block path (`m n k` well above one block), including
/// a row count that is not a multiple of the block height, for all four transpose combinations.
#[test]
fn matmul_matches_naive_on_parallel_shapes() {
    for (m, k, n) in [(300, 500, 200), (1037, 257, 33)] {
        for (ta, tb) in TRANS {
            check_matmul::<f64>(m, k, n, ta, tb, 1e-12, 1).unwrap();
            check_matmul::<f32>(m, k, n, ta, tb, 1e-5, 2).unwrap();
        }
    }
}

/// Degenerate shapes: `k = 0` (an all-zero `m x n` result), `m = 1`, `n = 1`, `k = 1`, and empty
/// outputs, for all four transpose combinations.
#[test]
fn matmul_degenerate_shapes() {
    for (ta, tb) in TRANS {
        for (m, k, n) in [(1, 1, 1), (1, 7, 5), (6, 7, 1), (1, 600, 1), (9, 1, 4), (1, 300, 700)] {
            check_matmul::<f64>(m, k, n, ta, tb, 1e-12, 3).unwrap();
            check_matmul::<f32>(m, k, n, ta, tb, 1e-5, 4).unwrap();
        }
        for (m, n) in [(3, 4), (1, 1), (0, 5), (5, 0)] {
            let a = if ta { Array2::<f64>::zeros((0, m)) } else { Array2::zeros((m, 0)) };
            let b = if tb { Array2::<f64>::zeros((n, 0)) } else { Array2::zeros((0, n)) };
            assert_eq!(matmul(&a, ta, &b, tb), Array2::zeros((m, n)), "k = 0, {m}x{n}, trans {ta} {tb}");
        }
        let mut r = rng(5);
        let a: Array2<f64> = stored(&mut r, 0, 3, ta);
        let b: Array2<f64> = stored(&mut r, 3, 4, tb);
        assert_eq!(matmul(&a, ta, &b, tb).dim(), (0, 4));
    }
}

/// `matmul` agrees with itself on non-standard-layout inputs (a transposed view made owned).
#[test]
fn matmul_accepts_non_standard_layout() {
    let mut r = rng(6);
    let a: Array2<f64> = uniform(&mut r, 20, 30, -2.0, 2.0);
    let b: Array2<f64> = uniform(&mut r, 20, 10, -2.0, 2.0);
    let at = a.t().to_owned(); // 30 x 20, possibly column-major
    let c1 = matmul(&at, false, &b, false);
    let c2 = matmul(&a, true, &b, false);
    assert_eq!(c1.dim(), (30, 10));
    let (c_ref, scale) = naive(&a, true, &b, false);
    for ((&x, &y), (&want, &s)) in c1.iter().zip(&c2).zip(c_ref.iter().zip(&scale)) {
        assert!((x - want).abs() <= 1e-12 * s && (y - want).abs() <= 1e-12 * s);
    }
}

// ---- determinism across thread counts ------------------------------------------------------

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool")
}

fn bits<T: Float>(x: &Array2<T>) -> Vec<u64> {
    x.iter().map(|v| v.as_f64().to_bits()).collect()
}

/// `matmul_f32` and `matmul_f64` on a parallel-path shape give bit-identical results in 1-, 2-
/// and 3-thread pools, for all four transpose combinations.
#[test]
fn matmul_is_bit_identical_across_thread_counts() {
    fn run<T: CpuFloat>() {
        let mut r = rng(8);
        for (ta, tb) in TRANS {
            let a: Array2<T> = stored(&mut r, 300, 500, ta);
            let b: Array2<T> = stored(&mut r, 500, 200, tb);
            let reference = bits(&pool(1).install(|| matmul(&a, ta, &b, tb)));
            for threads in [2, 3] {
                let c = pool(threads).install(|| matmul(&a, ta, &b, tb));
                assert!(bits(&c) == reference, "matmul_{} trans {ta} {tb}: {threads} threads differ", T::NAME);
            }
        }
    }
    run::<f32>();
    run::<f64>();
}

/// Loss and every gradient (parameters and intermediates) of a 2-layer MLP step with the
/// quadratic penalty, in `f32`.
fn mlp_step(x: &Array2<f32>, labels: &[u32], mask: &Array2<f32>, params: &[Array2<f32>]) -> Vec<Vec<u64>> {
    let mut t = ArrayTape::<f32>::new();
    let p: Vec<Var> = params.iter().map(|w| t.param(w.clone())).collect();
    let xv = t.constant(x.clone());
    let h = t.matmul(xv, p[0]);
    let h = t.add_row(h, p[1]);
    let h = t.relu(h);
    let o = t.matmul(h, p[2]);
    let o = t.add_row(o, p[3]);
    let m = t.constant(mask.clone());
    let xent = t.masked_xent(o, labels, Some(m));
    let star = t.constant(params[0].mapv(|v| 0.5 * v));
    let omega = t.constant(params[0].mapv(f32::abs));
    let d = t.sub(p[0], star);
    let d2 = t.square(d);
    let wd2 = t.mul(omega, d2);
    let pen = t.sum(wd2);
    let pen = t.scale(pen, 0.01);
    let loss = t.add(xent, pen);
    let logp = t.log_softmax(o);
    let aux = t.mean(logp);
    let total = t.add(loss, aux);
    let grads = t.backward(total);
    let mut out = vec![bits(&t.value(total))];
    for v in p.iter().chain([&h, &o, &d2]) {
        out.push(bits(&grads.get(*v).expect("gradient")));
    }
    out
}

/// A whole forward + backward of an MLP, sized so that matmuls take the parallel row-block path
/// and element-wise kernels their parallel path (`>= 2^15` elements), is bit-identical in 1-, 2-
/// and 3-thread pools.
#[test]
fn mlp_forward_backward_is_bit_identical_across_thread_counts() {
    let mut r = rng(9);
    let (batch, d_in, hidden, classes) = (512, 256, 128, 10);
    let x: Array2<f32> = uniform(&mut r, batch, d_in, -1.0, 1.0);
    let params: Vec<Array2<f32>> = [(d_in, hidden), (1, hidden), (hidden, classes), (1, classes)]
        .iter()
        .map(|&(a, b)| uniform(&mut r, a, b, -0.2, 0.2))
        .collect();
    let mut mask = Array2::<f32>::zeros((1, classes));
    mask.slice_mut(ndarray::s![.., 2..7]).fill(1.0);
    let labels: Vec<u32> = (0..batch).map(|_| r.random_range(2..7)).collect();
    let reference = pool(1).install(|| mlp_step(&x, &labels, &mask, &params));
    for threads in [2, 3] {
        let got = pool(threads).install(|| mlp_step(&x, &labels, &mask, &params));
        assert!(got == reference, "{threads} threads differ from 1 thread");
    }
}

// ---- masked softmax cross-entropy and count_correct -----------------------------------------

/// Reference mean masked cross-entropy in `f64`: `(1/n) sum_i [lse_{k in M_i} x_ik - x_iy_i]`.
fn xent_ref(logits: &Array2<f32>, labels: &[u32], mask: Option<&Array2<f32>>) -> f64 {
    let rows = logits.nrows();
    let mut total = 0.0;
    for (i, row) in logits.outer_iter().enumerate() {
        let allowed = |j: usize| mask.is_none_or(|m| m[[if m.nrows() == 1 { 0 } else { i }, j]] != 0.0);
        let vals: Vec<f64> = row.iter().enumerate().filter(|&(j, _)| allowed(j)).map(|(_, &v)| v as f64).collect();
        let mx = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = mx + vals.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
        total += lse - row[labels[i] as usize] as f64;
    }
    total / rows as f64
}

/// Runs the fused op through the tape in `f32`; returns the loss and `dL/dlogits`.
fn xent_f32(logits: &Array2<f32>, labels: &[u32], mask: Option<&Array2<f32>>) -> (f32, Array2<f32>) {
    let mut t = ArrayTape::<f32>::new();
    let x = t.param(logits.clone());
    let m = mask.map(|m| t.constant(m.clone()));
    let loss = t.masked_xent(x, labels, m);
    let grads = t.backward(loss);
    (t.value(loss)[[0, 0]], grads.get(x).unwrap())
}

/// `masked_xent_f32` stays finite for logits of magnitude up to `1e4` (no mask, a broadcast mask
/// and a per-row mask), matches an `f64` reference to `1e-5` relative, and its gradient is finite,
/// sums to 0 over each row and is 0 outside the mask.
#[test]
fn masked_xent_f32_is_stable_for_large_logits() {
    let mut r = rng(10);
    let (rows, classes) = (16, 10);
    for scale in [1e2, 1e3, 1e4] {
        let logits: Array2<f32> = uniform(&mut r, rows, classes, -scale, scale);
        let bmask = Array2::from_shape_fn((1, classes), |(_, j)| if j % 3 == 0 { 0.0f32 } else { 1.0 });
        let rmask = Array2::from_shape_fn((rows, classes), |(i, j)| if (i + j) % 2 == 0 { 1.0f32 } else { 0.0 });
        let plain: Vec<u32> = (0..rows).map(|_| r.random_range(0..classes as u32)).collect();
        let in_b: Vec<u32> = (0..rows).map(|i| [1, 2, 4, 5, 7, 8][i % 6]).collect();
        let in_r: Vec<u32> = (0..rows).map(|i| ((i % 2) + 2 * (i % 5)) as u32).collect();
        for (labels, mask) in [(&plain, None), (&in_b, Some(&bmask)), (&in_r, Some(&rmask))] {
            let (loss, g) = xent_f32(&logits, labels, mask);
            let want = xent_ref(&logits, labels, mask);
            assert!(loss.is_finite(), "scale {scale}: loss {loss}");
            assert!(
                (loss as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                "scale {scale}: loss {loss} vs f64 reference {want}"
            );
            assert!(g.iter().all(|v| v.is_finite()), "scale {scale}: non-finite gradient");
            for (i, row) in g.outer_iter().enumerate() {
                let s: f32 = row.sum();
                assert!(s.abs() <= 1e-6, "scale {scale}: row {i} gradient sums to {s}");
                if let Some(m) = mask {
                    for (j, &v) in row.iter().enumerate() {
                        if m[[if m.nrows() == 1 { 0 } else { i }, j]] == 0.0 {
                            assert_eq!(v, 0.0, "scale {scale}: gradient at masked ({i}, {j})");
                        }
                    }
                }
            }
        }
    }
}

/// Masked logits take no part in the softmax: a huge masked logit (`1e4`, or `+inf`-like in
/// `exp`) leaves the loss equal to the loss over the allowed classes alone.
#[test]
fn masked_xent_ignores_huge_masked_logits() {
    let logits = array![[1e4f32, 0.5, -0.25, 1e4], [1e4, 2.0, 1.0, 1e4]];
    let mask = array![[0.0f32, 1.0, 1.0, 0.0]];
    let (loss, g) = xent_f32(&logits, &[1, 2], Some(&mask));
    let alone = array![[0.5f32, -0.25], [2.0, 1.0]];
    let (want, _) = xent_f32(&alone, &[0, 1], None);
    assert!(loss.is_finite() && (loss - want).abs() <= 1e-6, "{loss} vs {want}");
    assert_eq!(g.column(0).to_vec(), vec![0.0, 0.0]);
    assert_eq!(g.column(3).to_vec(), vec![0.0, 0.0]);
}

/// `log_softmax_f32` stays finite for logits of magnitude `1e4`.
#[test]
fn log_softmax_f32_is_stable_for_large_logits() {
    let x = array![[1e4f32, -1e4, 0.0], [1e4, 1e4, 1e4]];
    let y = log_softmax(&x);
    assert!(y.iter().all(|v| v.is_finite()));
    assert_eq!(y[[0, 0]], 0.0);
    // `x - lse` with `lse = 1e4 + ln 3` rounded to f32 (ulp 2^-10 near 1e4): within one ulp.
    for v in y.row(1) {
        assert!((v + 3.0f32.ln()).abs() <= 1e-3, "{v}");
    }
}

/// Naive `count_correct`: arg-max over the allowed classes (lowest index on ties) equals the label.
fn count_ref(logits: &Array2<f32>, labels: &[u32], mask: Option<&Array2<f32>>) -> usize {
    let mut correct = 0;
    for (i, row) in logits.outer_iter().enumerate() {
        let mut best: Option<(usize, f32)> = None;
        for (j, &v) in row.iter().enumerate() {
            let allowed = mask.is_none_or(|m| m[[if m.nrows() == 1 { 0 } else { i }, j]] != 0.0);
            if allowed && best.is_none_or(|(_, b)| v > b) {
                best = Some((j, v));
            }
        }
        correct += usize::from(best.is_some_and(|(j, _)| j == labels[i] as usize));
    }
    correct
}

/// `count_correct` takes the arg-max over the allowed classes only: a masked class with the largest
/// logit never wins, a label outside the mask is never counted, and ties go to the lowest index.
#[test]
fn count_correct_respects_the_mask() {
    let logits = array![[9.0f32, 1.0, 2.0, 0.0], [0.0, 5.0, 5.0, 9.0], [3.0, 3.0, 1.0, 0.0]];
    let labels = [2, 1, 0];
    // Unmasked, only row 2 (tie 0/1 -> 0) is right.
    assert_eq!(count_correct(&logits, &labels, None), 1);
    // Classes 1..=2 only: row 0 -> 2 (right), row 1 tie 1/2 -> 1 (right), row 2 -> 1 (wrong).
    let bmask = array![[0.0f32, 1.0, 1.0, 0.0]];
    assert_eq!(count_correct(&logits, &labels, Some(&bmask)), 2);
    // Per-row: row 0 allows {0, 2} -> 0 (wrong); row 1 allows {1, 3} -> 3 (wrong);
    // row 2 allows {1, 2} -> 1, and its label 0 is outside the mask (wrong).
    let rmask = array![[1.0f32, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]];
    assert_eq!(count_correct(&logits, &labels, Some(&rmask)), 0);
    // Per-row: row 0 allows {1, 2} -> 2; row 1 allows {1} -> 1; row 2 allows {0, 1} -> 0.
    let rmask = array![[0.0f32, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]];
    assert_eq!(count_correct(&logits, &labels, Some(&rmask)), 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `count_correct` equals the naive masked arg-max count on random logits (with many ties:
    /// integer-valued logits), labels and masks (none, broadcast, per-row).
    #[test]
    fn count_correct_matches_naive(rows in 1usize..=16, classes in 1usize..=8, kind in 0u8..3, seed in any::<u64>()) {
        let mut r = rng(seed);
        let logits = Array2::from_shape_simple_fn((rows, classes), || r.random_range(-3i32..=3) as f32);
        let labels: Vec<u32> = (0..rows).map(|_| r.random_range(0..classes as u32)).collect();
        let mask_rows = match kind { 0 => 0, 1 => 1, _ => rows };
        let mask = (kind > 0).then(|| {
            Array2::from_shape_simple_fn((mask_rows, classes), || if r.random_bool(0.6) { 1.0f32 } else { 0.0 })
        });
        let got = count_correct(&logits, &labels, mask.as_ref());
        prop_assert_eq!(got as usize, count_ref(&logits, &labels, mask.as_ref()));
    }
}
