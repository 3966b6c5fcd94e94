//! Every backend kernel, one test body per op, run per device (`test_device!`): `op::cpu` on the
//! CPU backend, `op::cuda` on GPU 0 (with `--features cuda`; elsewhere one skip line).
//!
//! Each body runs the op on the device under test on random shapes and values (proptest),
//! checks it against a naive host reference in f64 and, on the GPU, against the CPU backend:
//! * element-wise ops, data movement and counts: within 1e-6 relative of the reference and of
//!   the CPU backend (the kernels are compiled without FMA contraction, so they are in fact
//!   equal bit for bit);
//! * reductions accumulated in f64 and rounded once: within 1e-6 relative plus 1e-12 of the sum
//!   of magnitudes (the f64 sums differ only in their order);
//! * matrix products (cuBLAS on the GPU, `matrixmultiply` on the CPU, both f32): within the
//!   classical bound `2 k u sum_l |a_il b_lj|`, `u = 2^-24`, of the f64 product;
//! * the softmax family (`exp` and `log` of libm and of CUDA differ by an ulp or two): within
//!   1e-5 absolute plus 1e-5 relative.

use engram_tape::cpu::Cpu;
use engram_tape::{test_device, Backend, Element, PixelMap, Tensor};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The unit roundoff of f32.
const U: f64 = 1.0 / 16_777_216.0;

type Check = Result<(), TestCaseError>;

/// Runs `check` on `n` random (rows, cols, seed), rows and cols in `1..max`.
fn cases(n: u32, max: usize, check: impl Fn(usize, usize, u64) -> Check) {
    let mut runner = TestRunner::new(Config { cases: n, failure_persistence: None, ..Config::default() });
    runner.run(&(1..max, 1..max, any::<u64>()), |(r, c, s)| check(r, c, s)).unwrap();
}

/// Values in -3..3, about one in eight exactly 0 (the ReLU tie, `count_nonzero`).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| if r.random_range(0..8) == 0 { 0.0 } else { r.random_range(-3.0..3.0f32) }).collect()
}

fn up<B: Backend, E: Element>(be: &B, rows: usize, cols: usize, v: &[E]) -> Tensor<B, E> {
    Tensor::from_host(be, rows, cols, v).unwrap()
}

fn zeros<B: Backend, E: Element>(be: &B, rows: usize, cols: usize) -> Tensor<B, E> {
    Tensor::zeros(be, rows, cols).unwrap()
}

fn down<B: Backend, E: Element>(be: &B, t: &Tensor<B, E>) -> Vec<E> {
    t.to_host(be).unwrap()
}

/// Runs `$body` with `$d` bound to the device under test, then to the CPU backend: the two
/// results, (device, CPU).
macro_rules! on_both {
    ($be:expr, |$d:ident| $body:expr) => {{
        let device = {
            let $d = $be;
            $body
        };
        let cpu = {
            let $d = &Cpu::<f32>::new();
            $body
        };
        (device, cpu)
    }};
}

/// `got` within `tol(i)` of `want` everywhere.
fn close(op: &str, got: &[f32], want: &[f64], tol: impl Fn(usize) -> f64) -> Check {
    prop_assert_eq!(got.len(), want.len(), "{}: length", op);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g as f64 - w).abs() <= tol(i) || (g.is_infinite() && g as f64 == w);
        prop_assert!(ok, "{}: element {} is {} but should be {} (within {:e})", op, i, g, w, tol(i));
    }
    Ok(())
}

/// The device's result within `tol` of the reference, and within 1e-6 relative of the CPU
/// backend's (plus `cpu_abs` absolute).
fn check(op: &str, got: &[f32], cpu: &[f32], want: &[f64], tol: impl Fn(usize) -> f64, cpu_abs: f64) -> Check {
    close(op, got, want, tol)?;
    let cpu64: Vec<f64> = cpu.iter().map(|&v| v as f64).collect();
    close(&format!("{op} (against the CPU backend)"), got, &cpu64, |i| 1e-6 * cpu64[i].abs() + cpu_abs)
}

/// An element-wise op `$name` computed by `$call` (on `d`, inputs `a`, `b` and output `o`) and
/// equal to `$f` applied in f32.
macro_rules! elementwise {
    ($name:ident, |$d:ident, $a:ident, $b:ident, $o:ident| $call:expr, |$x:ident, $y:ident| $f:expr) => {
        fn $name<B: Backend<T = f32>>(be: &B) {
            cases(48, 70, |r, c, s| {
                let (av, bv) = (values(r * c, s), values(r * c, s ^ 1));
                let (got, cpu) = on_both!(be, |$d| {
                    let ($a, $b) = (up($d, r, c, &av), up($d, r, c, &bv));
                    let ($a, $b) = (&$a, &$b);
                    let mut $o = zeros($d, r, c);
                    $call;
                    down($d, &$o)
                });
                let want: Vec<f64> = av.iter().zip(&bv).map(|(&$x, &$y)| $f as f64).collect();
                check(stringify!($name), &got, &cpu, &want, |i| 1e-6 * want[i].abs(), 0.0)
            });
        }
    };
}

elementwise!(add, |d, a, b, o| d.add(a.view(), b.view(), o.view_mut()).unwrap(), |x, y| x + y);
elementwise!(sub, |d, a, b, o| d.sub(a.view(), b.view(), o.view_mut()).unwrap(), |x, y| x - y);
elementwise!(mul, |d, a, b, o| d.mul(a.view(), b.view(), o.view_mut()).unwrap(), |x, y| x * y);
elementwise!(scale, |d, a, _b, o| d.scale(a.view(), -0.37, o.view_mut()).unwrap(), |x, _y| -0.37f32 * x);
elementwise!(abs, |d, a, _b, o| d.abs(a.view(), o.view_mut()).unwrap(), |x, _y| x.abs());
elementwise!(relu, |d, a, _b, o| d.relu(a.view(), o.view_mut()).unwrap(), |x, _y| x.max(0.0));
elementwise!(
    relu_backward,
    |d, a, b, o| d.relu_backward(a.view(), b.view(), o.view_mut()).unwrap(),
    |x, gy| if x > 0.0 { gy } else { 0.0 }
);
elementwise!(
    accumulate,
    |d, a, b, o| {
        d.copy(a.view(), o.view_mut()).unwrap();
        d.accumulate(o.view_mut(), b.view()).unwrap()
    },
    |x, y| x + y
);

/// `add_row`: the `1 x cols` row broadcast over the rows.
fn add_row<B: Backend<T = f32>>(be: &B) {
    cases(48, 70, |r, c, s| {
        let (x, row) = (values(r * c, s), values(c, s ^ 1));
        let (got, cpu) = on_both!(be, |d| {
            let mut o = zeros(d, r, c);
            d.add_row(up(d, r, c, &x).view(), up(d, 1, c, &row).view(), o.view_mut()).unwrap();
            down(d, &o)
        });
        let want: Vec<f64> = (0..r * c).map(|i| (x[i] + row[i % c]) as f64).collect();
        check("add_row", &got, &cpu, &want, |i| 1e-6 * want[i].abs(), 0.0)
    });
}

/// `add_bias`: the bias added in place, then the ReLU when asked (`add_row` then `relu` in one
/// pass), on a window of rows of a larger buffer (the rows around it untouched).
fn add_bias<B: Backend<T = f32>>(be: &B) {
    cases(48, 70, |r, c, s| {
        let (x, bias) = (values(r * c, s), values(c, s ^ 1));
        for relu in [false, true] {
            let (got, cpu) = on_both!(be, |d| {
                let mut y = up(d, r + 2, c, &[vec![9.0f32; c], x.clone(), vec![9.0f32; c]].concat());
                d.add_bias(y.view_mut().rows(1, r + 1), up(d, 1, c, &bias).view(), relu).unwrap();
                down(d, &y)
            });
            let mut want = vec![9.0f64; c];
            want.extend((0..r * c).map(|i| {
                let v = x[i] + bias[i % c];
                (if relu && v <= 0.0 { 0.0 } else { v }) as f64
            }));
            want.extend(vec![9.0f64; c]);
            check("add_bias", &got, &cpu, &want, |_| 0.0, 0.0)?;
        }
        Ok(())
    });
}

/// `upload_with`: the closure gets a host slice of the window's length, and what it writes
/// lands in the window of a larger buffer (the rows around it untouched).
fn upload_with<B: Backend<T = f32>>(be: &B) {
    cases(24, 50, |r, c, s| {
        let x = values(r * c, s);
        let mut y = up(be, r + 2, c, &vec![9.0f32; (r + 2) * c]);
        let mut seen = 0;
        be.upload_with(y.view_mut().rows(1, r + 1), &mut |dst: &mut [f32]| {
            seen = dst.len();
            dst.copy_from_slice(&x);
        })
        .unwrap();
        prop_assert_eq!(seen, r * c);
        let want = [vec![9.0f32; c], x.clone(), vec![9.0f32; c]].concat();
        prop_assert_eq!(down(be, &y), want);
        Ok(())
    });
}

/// `fill`, `copy` and `broadcast_scalar` into windows of a larger buffer (the rest untouched),
/// and the upload / download round trip.
fn fill_copy_broadcast<B: Backend<T = f32>>(be: &B) {
    cases(32, 70, |r, c, s| {
        let x = values(r * c, s);
        let (got, cpu) = on_both!(be, |d| {
            let src = up(d, r, c, &x);
            let mut o = up(d, 3, r * c, &vec![7.0f32; 3 * r * c]);
            d.fill(o.view_mut().rows(0, 1), -2.5).unwrap();
            d.copy(src.view(), o.view_mut().rows(1, 2)).unwrap();
            d.broadcast_scalar(src.view().range(0, 1).reshape(1, 1), 0.5, o.view_mut().rows(2, 3).range(1, r * c))
                .unwrap();
            down(d, &o)
        });
        let mut want = vec![-2.5f64; r * c];
        want.extend(x.iter().map(|&v| v as f64));
        want.push(7.0);
        want.extend(std::iter::repeat_n((0.5 * x[0]) as f64, r * c - 1));
        check("fill, copy, broadcast_scalar", &got, &cpu, &want, |_| 0.0, 0.0)
    });
}

/// `sum_rows` (column sums, rows in order) and its accumulate form.
fn sum_rows<B: Backend<T = f32>>(be: &B) {
    cases(48, 90, |r, c, s| {
        let (x, start) = (values(r * c, s), values(c, s ^ 1));
        let (got, cpu) = on_both!(be, |d| {
            let (x, mut o, mut acc) = (up(d, r, c, &x), zeros(d, 1, c), up(d, 1, c, &start));
            d.sum_rows(x.view(), o.view_mut(), false).unwrap();
            d.sum_rows(x.view(), acc.view_mut(), true).unwrap();
            [down(d, &o), down(d, &acc)].concat()
        });
        let col = |j: usize| (0..r).map(|i| x[i * c + j] as f64).sum::<f64>();
        let mag = |j: usize| (0..r).map(|i| x[i * c + j].abs() as f64).sum::<f64>() + start[j % c].abs() as f64;
        let want: Vec<f64> = (0..c).map(col).chain((0..c).map(|j| col(j) + start[j] as f64)).collect();
        // f32 additions in row order: within r u of the magnitudes.
        check("sum_rows", &got, &cpu, &want, |i| (r + 1) as f64 * U * mag(i % c), 0.0)
    });
}

/// `sum_all` accumulated in f64, rounded once.
fn sum_all<B: Backend<T = f32>>(be: &B) {
    cases(48, 300, |r, c, s| {
        let x = values(r * c, s);
        let (got, cpu) = on_both!(be, |d| {
            let mut o = zeros(d, 1, 1);
            d.sum_all(up(d, r, c, &x).view(), o.view_mut()).unwrap();
            down(d, &o)
        });
        let want = [x.iter().map(|&v| v as f64).sum::<f64>()];
        let mag: f64 = x.iter().map(|v| v.abs() as f64).sum();
        check("sum_all", &got, &cpu, &want, |_| U * want[0].abs() + 1e-12 * mag, 1e-12 * mag)
    });
}

/// The f64 reductions: `accumulate_f64`, `dots_f64`, `gram_f64`, `combine_f64` (rows `r`,
/// length `c`).
fn f64_reductions<B: Backend<T = f32>>(be: &B) {
    cases(32, 60, |r, c, s| {
        let (rows, v, start) = (values(r * c, s), values(c, s ^ 1), values(c, s ^ 2));
        let w: Vec<f64> = values(r, s ^ 3).iter().map(|&x| x as f64 * 0.3).collect();
        let (got, cpu) = on_both!(be, |d| {
            let (m, vt, wt) = (up(d, r, c, &rows), up(d, 1, c, &v), up(d, 1, r, &w));
            let mut acc = up(d, 1, c, &start.iter().map(|&x| x as f64 * 1e-3).collect::<Vec<f64>>());
            d.accumulate_f64(acc.view_mut(), vt.view()).unwrap();
            let (mut dots, mut gram) = (zeros(d, 1, r), zeros(d, r, r));
            d.dots_f64(m.view(), vt.view(), dots.view_mut()).unwrap();
            d.gram_f64(m.view(), gram.view_mut()).unwrap();
            let mut g = up(d, 1, c, &start);
            d.combine_f64(g.view_mut(), m.view(), wt.view()).unwrap();
            (down(d, &acc), down(d, &dots), down(d, &gram), down(d, &g))
        });
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>();
        let mag = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum::<f64>();
        let row = |i: usize| &rows[i * c..(i + 1) * c];
        for (j, (&g, &c64)) in got.0.iter().zip(&cpu.0).enumerate() {
            prop_assert_eq!(g, start[j] as f64 * 1e-3 + v[j] as f64, "accumulate_f64 element {}", j);
            prop_assert_eq!(g, c64);
        }
        for i in 0..r {
            let (want, tol) = (dot(row(i), &v), 1e-12 * mag(row(i), &v) + 1e-300);
            prop_assert!((got.1[i] - want).abs() <= tol, "dots_f64 {}: {} vs {}", i, got.1[i], want);
            prop_assert!((got.1[i] - cpu.1[i]).abs() <= tol, "dots_f64 {} against the CPU", i);
            for k in 0..r {
                let (want, tol) = (dot(row(i), row(k)), 1e-12 * mag(row(i), row(k)) + 1e-300);
                prop_assert!((got.2[i * r + k] - want).abs() <= tol, "gram_f64 ({}, {})", i, k);
                prop_assert!((got.2[i * r + k] - cpu.2[i * r + k]).abs() <= tol, "gram_f64 against the CPU");
            }
        }
        let want: Vec<f64> =
            (0..c).map(|j| start[j] as f64 + (0..r).map(|i| w[i] * rows[i * c + j] as f64).sum::<f64>()).collect();
        let mag: Vec<f64> = (0..c)
            .map(|j| start[j].abs() as f64 + (0..r).map(|i| (w[i] * rows[i * c + j] as f64).abs()).sum::<f64>())
            .collect();
        check(
            "combine_f64",
            &got.3,
            &cpu.3,
            &want,
            |j| U * want[j].abs() + 1e-12 * mag[j],
            1e-12 * mag.iter().sum::<f64>(),
        )
    });
}

/// `first_non_finite` (NaN or infinity planted at random places, or none) and `count_nonzero`.
fn finite_and_nonzero<B: Backend<T = f32>>(be: &B) {
    cases(48, 200, |r, c, s| {
        let mut x = values(r * c, s);
        let mut rng = ChaCha8Rng::seed_from_u64(s ^ 5);
        for _ in 0..rng.random_range(0..3) {
            let i = rng.random_range(0..x.len());
            x[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][rng.random_range(0..3)];
        }
        let (got, cpu) = on_both!(be, |d| {
            let (xt, mut first, mut nz) = (up(d, r, c, &x), zeros::<_, u64>(d, 1, 1), zeros::<_, u64>(d, 1, 1));
            d.first_non_finite(xt.view(), first.view_mut()).unwrap();
            d.count_nonzero(xt.view(), nz.view_mut()).unwrap();
            (down(d, &first)[0], down(d, &nz)[0])
        });
        let want_first = x.iter().position(|v| !v.is_finite()).map_or(u64::MAX, |i| i as u64);
        let want_nz = x.iter().filter(|&&v| v != 0.0).count() as u64;
        prop_assert_eq!(got, (want_first, want_nz));
        prop_assert_eq!(got, cpu);
        Ok(())
    });
}

/// `matmul` with each transposition, overwriting and accumulating; `(r, c)` is `(m, k)`, `n`
/// drawn from the seed.
fn matmul<B: Backend<T = f32>>(be: &B) {
    cases(48, 130, |m, k, s| {
        let n = 1 + (s % 97) as usize;
        for (ta, tb, acc) in [(false, false, false), (true, false, true), (false, true, false), (true, true, true)] {
            let (a, b, c0) = (values(m * k, s), values(k * n, s ^ 1), values(m * n, s ^ 2));
            let (got, cpu) = on_both!(be, |d| {
                let at = if ta { up(d, k, m, &a) } else { up(d, m, k, &a) };
                let bt = if tb { up(d, n, k, &b) } else { up(d, k, n, &b) };
                let mut out = up(d, m, n, &c0);
                d.matmul(at.view(), ta, bt.view(), tb, out.view_mut(), acc).unwrap();
                down(d, &out)
            });
            let a_ = |i: usize, l: usize| if ta { a[l * m + i] } else { a[i * k + l] } as f64;
            let b_ = |l: usize, j: usize| if tb { b[j * k + l] } else { b[l * n + j] } as f64;
            let start = |i: usize| if acc { c0[i] as f64 } else { 0.0 };
            let want: Vec<f64> =
                (0..m * n).map(|i| start(i) + (0..k).map(|l| a_(i / n, l) * b_(l, i % n)).sum::<f64>()).collect();
            let mag: Vec<f64> = (0..m * n)
                .map(|i| start(i).abs() + (0..k).map(|l| (a_(i / n, l) * b_(l, i % n)).abs()).sum::<f64>())
                .collect();
            let tol = |i: usize| 2.0 * (k + 1) as f64 * U * mag[i];
            let op = format!("matmul (trans_a {ta}, trans_b {tb}, accumulate {acc})");
            close(&op, &got, &want, tol)?;
            let cpu64: Vec<f64> = cpu.iter().map(|&v| v as f64).collect();
            close(&format!("{op} against the CPU backend"), &got, &cpu64, |i| 2.0 * tol(i))?;
        }
        Ok(())
    });
}

/// `r` rows cut into at most `cuts + 1` blocks at random (some empty), and a stride between
/// windows of `len` values (`len` to `len + 2`).
fn random_blocks(r: usize, cuts: usize, len: usize, rng: &mut ChaCha8Rng) -> (Vec<std::ops::Range<usize>>, usize) {
    let mut at: Vec<usize> = (0..rng.random_range(0..=cuts)).map(|_| rng.random_range(0..=r)).collect();
    at.extend([0, r]);
    at.sort_unstable();
    (at.windows(2).map(|w| w[0]..w[1]).collect(), len + rng.random_range(0..3))
}

/// Runs a `*_blocks` op (`run(blocks, out, stride)`) into windows of `len` values over a
/// sentinel-filled output, and checks each window bit for bit against `one(rows)`, the op on
/// the block's rows alone, and that the gaps between windows are left as they were.
fn check_windows<B: Backend<T = f32>>(
    be: &B,
    (blocks, stride): (Vec<std::ops::Range<usize>>, usize),
    len: usize,
    run: impl Fn(&[std::ops::Range<usize>], &mut Tensor<B>, usize),
    one: impl Fn(std::ops::Range<usize>) -> Vec<f32>,
) -> Check {
    let sentinel = -7.25f32;
    let span = (blocks.len() - 1) * stride + len;
    let mut out = up(be, 1, span, &vec![sentinel; span]);
    run(&blocks, &mut out, stride);
    let got = down(be, &out);
    for (t, rows) in blocks.iter().enumerate() {
        let want = one(rows.clone());
        let window = &got[t * stride..t * stride + len];
        let same = window.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
        prop_assert!(same, "block {t} (rows {rows:?}): differs from the op on its rows alone");
        if t + 1 < blocks.len() {
            let gap = &got[t * stride + len..(t + 1) * stride];
            prop_assert!(gap.iter().all(|&v| v == sentinel), "block {t}: the gap after its window was written");
        }
    }
    Ok(())
}

/// `matmul_tn_blocks`: `r` rows cut into blocks at random, `a` of `c` columns, `b` of `n`
/// drawn from the seed: each block's window holds bit for bit what `matmul` gives on the
/// block's rows alone on the same device, the gaps between windows untouched.
fn matmul_tn_blocks<B: Backend<T = f32>>(be: &B) {
    cases(32, 90, |r, c, s| {
        let n = 1 + (s % 37) as usize;
        let blocks = random_blocks(r, 4, c * n, &mut ChaCha8Rng::seed_from_u64(s));
        let (at, bt) = (up(be, r, c, &values(r * c, s)), up(be, r, n, &values(r * n, s ^ 1)));
        let run = |b: &[std::ops::Range<usize>], out: &mut Tensor<B>, stride: usize| {
            be.matmul_tn_blocks(at.view(), bt.view(), b, out.view_mut(), stride).unwrap()
        };
        check_windows(be, blocks, c * n, run, |rows| {
            let mut one = zeros::<B, f32>(be, c, n);
            let (ab, bb) = (at.view().rows(rows.start, rows.end), bt.view().rows(rows.start, rows.end));
            be.matmul(ab, true, bb, false, one.view_mut(), false).unwrap();
            down(be, &one)
        })
    });
}

/// `sum_rows_blocks`: `r` rows (up to 450, enough for the CPU to run the blocks side by side)
/// cut into blocks at random: each window holds bit for bit what `sum_rows` gives on the
/// block's rows alone on the same device, the gaps between windows untouched.
fn sum_rows_blocks<B: Backend<T = f32>>(be: &B) {
    cases(32, 90, |r, c, s| {
        let r = r * (1 + (s % 5) as usize);
        let blocks = random_blocks(r, 5, c, &mut ChaCha8Rng::seed_from_u64(s));
        let x = up(be, r, c, &values(r * c, s));
        let run = |b: &[std::ops::Range<usize>], out: &mut Tensor<B>, stride: usize| {
            be.sum_rows_blocks(x.view(), b, out.view_mut(), stride).unwrap()
        };
        check_windows(be, blocks, c, run, |rows| {
            let mut one = zeros::<B, f32>(be, 1, c);
            be.sum_rows(x.view().rows(rows.start, rows.end), one.view_mut(), false).unwrap();
            down(be, &one)
        })
    });
}

/// `matmul_bias`: bit for bit `matmul` then `add_bias` on the same device, into a window of
/// rows of a larger buffer (the rows around it untouched), on random shapes and on products
/// large enough for the CPU to split into blocks of rows and of columns (each block adds its
/// part of the bias).
fn matmul_bias<B: Backend<T = f32>>(be: &B) {
    cases(24, 60, |r, c, s| {
        let n = 1 + (s % 41) as usize;
        let split = [(r, c, n), (300 + r, 64 + c, 40 + n), (17 + r, 200 + c, 300 + n)];
        for (m, k, n) in split {
            let (x, w, bias) = (values(m * k, s), values(k * n, s ^ 1), values(n, s ^ 2));
            for relu in [false, true] {
                let sentinel = vec![-7.25f32; n];
                let fused = {
                    let mut y = up(be, m + 2, n, &[sentinel.clone(), vec![0.5; m * n], sentinel.clone()].concat());
                    let (xt, wt, bt) = (up(be, m, k, &x), up(be, k, n, &w), up(be, 1, n, &bias));
                    be.matmul_bias(xt.view(), wt.view(), bt.view(), relu, y.view_mut().rows(1, m + 1)).unwrap();
                    down(be, &y)
                };
                let mut two = zeros::<B, f32>(be, m, n);
                let (xt, wt, bt) = (up(be, m, k, &x), up(be, k, n, &w), up(be, 1, n, &bias));
                be.matmul(xt.view(), false, wt.view(), false, two.view_mut(), false).unwrap();
                be.add_bias(two.view_mut(), bt.view(), relu).unwrap();
                let want = [sentinel.clone(), down(be, &two), sentinel].concat();
                let same = fused.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                prop_assert!(same, "{m}x{k} @ {k}x{n}, relu {relu}: differs from matmul then add_bias");
            }
        }
        Ok(())
    });
}

/// A mask over `c` classes, one row (`per_row` false) or `r`, with each row's label allowed.
fn mask_and_labels(r: usize, c: usize, per_row: bool, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mrows = if per_row { r } else { 1 };
    let mut mask: Vec<f32> = (0..mrows * c).map(|_| rng.random_range(0..3u32).min(1) as f32).collect();
    let labels: Vec<u32> = (0..r)
        .map(|i| {
            let y = rng.random_range(0..c);
            mask[(if per_row { i } else { 0 }) * c + y] = 1.0;
            y as u32
        })
        .collect();
    (mask, labels)
}

/// `log_softmax` and its backward.
fn log_softmax<B: Backend<T = f32>>(be: &B) {
    cases(48, 40, |r, c, s| {
        let (x, gy) = (values(r * c, s).iter().map(|v| 4.0 * v).collect::<Vec<_>>(), values(r * c, s ^ 1));
        let (got, cpu) = on_both!(be, |d| {
            let (mut y, mut gx) = (zeros(d, r, c), zeros(d, r, c));
            d.log_softmax(up(d, r, c, &x).view(), y.view_mut()).unwrap();
            d.log_softmax_backward(y.view(), up(d, r, c, &gy).view(), gx.view_mut()).unwrap();
            [down(d, &y), down(d, &gx)].concat()
        });
        let mut want = Vec::new();
        let mut grad = Vec::new();
        for i in 0..r {
            let row: Vec<f64> = x[i * c..(i + 1) * c].iter().map(|&v| v as f64).collect();
            let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lz = row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            let g: Vec<f64> = gy[i * c..(i + 1) * c].iter().map(|&v| v as f64).collect();
            let total: f64 = g.iter().sum();
            want.extend(row.iter().map(|v| v - mx - lz));
            grad.extend(row.iter().zip(&g).map(|(v, gj)| gj - (v - mx - lz).exp() * total));
        }
        want.extend(grad);
        check("log_softmax and backward", &got, &cpu, &want, |i| 1e-5 * (1.0 + want[i].abs()) * c as f64, 1e-5)
    });
}

/// `masked_xent` (no mask, a broadcast mask, a mask per row), its backward and `count_correct`.
fn masked_xent<B: Backend<T = f32>>(be: &B) {
    cases(48, 40, |r, c, s| {
        let x: Vec<f32> = values(r * c, s).iter().map(|v| 4.0 * v).collect();
        for kind in 0..3 {
            let (mask, labels) = mask_and_labels(r, c, kind == 2, s ^ 7);
            let mask = if kind == 0 { vec![1.0; c] } else { mask };
            let mrows = mask.len() / c;
            let (got, cpu) = on_both!(be, |d| {
                let (xt, yt, mt) = (up(d, r, c, &x), up(d, 1, r, &labels), up(d, mrows, c, &mask));
                let mview = (kind > 0).then(|| mt.view());
                let (mut loss, mut probs, mut gx, mut correct) =
                    (zeros(d, 1, 1), zeros(d, r, c), zeros(d, r, c), zeros::<_, u32>(d, 1, 1));
                d.masked_xent(xt.view(), yt.view(), mview, loss.view_mut(), probs.view_mut()).unwrap();
                d.masked_xent_backward(probs.view(), yt.view(), up(d, 1, 1, &[0.75f32]).view(), gx.view_mut()).unwrap();
                d.count_correct(xt.view(), yt.view(), mview, correct.view_mut()).unwrap();
                ([down(d, &loss), down(d, &probs), down(d, &gx)].concat(), down(d, &correct)[0])
            });
            let (mut loss, mut probs, mut grads, mut correct) = (0f64, Vec::new(), Vec::new(), 0u32);
            for i in 0..r {
                let m = &mask[(i % mrows) * c..(i % mrows + 1) * c];
                let row = &x[i * c..(i + 1) * c];
                let mx = (0..c).filter(|&j| m[j] != 0.0).map(|j| row[j] as f64).fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = (0..c).filter(|&j| m[j] != 0.0).map(|j| (row[j] as f64 - mx).exp()).sum();
                let y = labels[i] as usize;
                loss += mx + z.ln() - row[y] as f64;
                for j in 0..c {
                    let p = if m[j] != 0.0 { (row[j] as f64 - mx).exp() / z } else { 0.0 };
                    probs.push(p);
                    grads.push((p - if j == y { 1.0 } else { 0.0 }) * 0.75 / r as f64);
                }
                let best = (0..c).filter(|&j| m[j] != 0.0).fold(None, |b: Option<usize>, j| match b {
                    Some(b) if row[b] >= row[j] => Some(b),
                    _ => Some(j),
                });
                correct += (best == Some(y)) as u32;
            }
            let mut want = vec![loss / r as f64];
            want.extend(probs);
            want.extend(grads);
            check(
                &format!("masked_xent (mask kind {kind})"),
                &got.0,
                &cpu.0,
                &want,
                |i| 1e-5 * (1.0 + want[i].abs()),
                1e-6,
            )?;
            prop_assert_eq!(got.1, correct, "count_correct (mask kind {})", kind);
            prop_assert_eq!(got.1, cpu.1);
        }
        Ok(())
    });
}

/// `gather_rows` of f32 and u32 rows with no map, one shared permutation and one per row.
fn gather_rows<B: Backend<T = f32>>(be: &B) {
    cases(32, 50, |n, cols, s| {
        let mut rng = ChaCha8Rng::seed_from_u64(s);
        let b = rng.random_range(0..60);
        let src = values(n * cols, s ^ 1);
        let bits: Vec<u32> = src.iter().map(|v| v.to_bits() ^ 0x5555).collect();
        let rows: Vec<u32> = (0..b).map(|_| rng.random_range(0..n as u32)).collect();
        let mut maps = Vec::new();
        for _ in 0..3 {
            let mut p: Vec<u32> = (0..cols as u32).collect();
            for i in (1..cols).rev() {
                p.swap(i, rng.random_range(0..=i));
            }
            maps.extend(p);
        }
        let ids: Vec<u32> = (0..b).map(|_| rng.random_range(0..3u32)).collect();
        for kind in 0..3 {
            let (got, cpu) = on_both!(be, |d| {
                let (st, su, rt) = (up(d, n, cols, &src), up(d, n, cols, &bits), up(d, 1, b, &rows));
                let (mt, it) = (up(d, 3, cols, &maps), up(d, 1, b, &ids));
                let map = match kind {
                    0 => PixelMap::Identity,
                    1 => PixelMap::Shared(mt.view().rows(1, 2)),
                    _ => PixelMap::PerRow { ids: it.view(), maps: mt.view() },
                };
                let (mut of, mut ou) = (zeros(d, b, cols), zeros::<_, u32>(d, b, cols));
                d.gather_rows(st.view(), rt.view(), map, of.view_mut()).unwrap();
                d.gather_rows(su.view(), rt.view(), map, ou.view_mut()).unwrap();
                (down(d, &of), down(d, &ou))
            });
            let col = |r: usize, j: usize| match kind {
                0 => j,
                1 => maps[cols + j] as usize,
                _ => maps[ids[r] as usize * cols + j] as usize,
            };
            let want: Vec<f64> =
                (0..b * cols).map(|i| src[rows[i / cols] as usize * cols + col(i / cols, i % cols)] as f64).collect();
            let want_bits: Vec<u32> =
                (0..b * cols).map(|i| bits[rows[i / cols] as usize * cols + col(i / cols, i % cols)]).collect();
            check(&format!("gather_rows f32 (map kind {kind})"), &got.0, &cpu.0, &want, |_| 0.0, 0.0)?;
            prop_assert_eq!(&got.1, &want_bits, "gather_rows u32 (map kind {})", kind);
            prop_assert_eq!(&got.1, &cpu.1);
        }
        Ok(())
    });
}

test_device!(
    add,
    sub,
    mul,
    scale,
    abs,
    relu,
    relu_backward,
    accumulate,
    add_row,
    add_bias,
    fill_copy_broadcast,
    upload_with,
    sum_rows,
    sum_all,
    f64_reductions,
    finite_and_nonzero,
    matmul,
    matmul_tn_blocks,
    matmul_bias,
    sum_rows_blocks,
    log_softmax,
    masked_xent,
    gather_rows,
);
