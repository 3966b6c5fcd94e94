//! Reductions: column sums, the sum of all elements, f64 accumulation, and the f64 dot
//! products, Gram matrix and weighted combination of GEM's memory gradients. Every sum runs in a
//! fixed order, so results never depend on the number of threads.

use super::{elems, elems_mut, Cpu, CpuFloat};
use crate::{Float, View, ViewMut};
use rayon::prelude::*;

/// Columns of a tile in [`gram_f64`] and [`combine_f64`]: `k` rows of a tile stay in cache while
/// every pair is formed (the rows themselves, 350 KiB each for the GEM network, do not).
pub const TILE: usize = 1024;

/// `out (+)= column sums of x`, rows added in order (the fresh sum is formed first, then added).
pub(crate) fn sum_rows<T: CpuFloat>(x: View<'_, Cpu<T>>, out: ViewMut<'_, Cpu<T>>, accumulate: bool) {
    assert_eq!(out.shape(), (1, x.cols), "sum_rows: output {:?} for {} columns", out.shape(), x.cols);
    let cols = x.cols;
    let o = elems_mut(out);
    if cols == 0 {
        return;
    }
    let x = elems(&x);
    if accumulate {
        let mut fresh = vec![T::zero(); cols];
        column_sums(x, &mut fresh);
        o.iter_mut().zip(&fresh).for_each(|(o, &v)| *o += v);
    } else {
        column_sums(x, o);
    }
}

/// `into = column sums of the rows of `x`` (`into.len()` columns), rows added in order from 0.
fn column_sums<T: CpuFloat>(x: &[T], into: &mut [T]) {
    into.fill(T::zero());
    for r in x.chunks_exact(into.len()) {
        into.iter_mut().zip(r).for_each(|(o, &v)| *o += v);
    }
}

/// [`Backend::sum_rows_blocks`](crate::Backend::sum_rows_blocks) on the CPU: each block's
/// column sums as [`sum_rows`] forms them, the blocks side by side on rayon's threads.
pub(crate) fn sum_rows_blocks<T: CpuFloat>(
    x: View<'_, Cpu<T>>,
    blocks: &[std::ops::Range<usize>],
    out: ViewMut<'_, Cpu<T>>,
    stride: usize,
) {
    let cols = x.cols;
    super::matmul::check_blocks("sum_rows_blocks", blocks, x.rows, cols, stride, out.len());
    if cols == 0 {
        return;
    }
    let o = elems_mut(out);
    let at = super::matmul::SharedMut(o.as_mut_ptr());
    let xs = elems(&x);
    let one = |(t, r): (usize, &std::ops::Range<usize>)| {
        // SAFETY: block t writes o[t*stride .. t*stride + cols], inside `o` (asserted) and
        // disjoint from every other block's window (stride >= cols); nothing else borrows `o`.
        let into = unsafe { std::slice::from_raw_parts_mut(at.ptr().add(t * stride), cols) };
        column_sums(&xs[r.start * cols..r.end * cols], into);
    };
    if blocks.len() > 1 && xs.len() >= super::PAR_ELEMS {
        blocks.par_iter().enumerate().for_each(one);
    } else {
        blocks.iter().enumerate().for_each(one);
    }
}

/// `out (1 x 1) = sum x`, accumulated in f64 in order, rounded once.
pub(crate) fn sum_all<T: CpuFloat>(x: View<'_, Cpu<T>>, out: ViewMut<'_, Cpu<T>>) {
    assert_eq!(out.shape(), (1, 1), "sum_all: the output must be 1x1");
    let total: f64 = elems(&x).iter().map(|v| v.as_f64()).sum();
    elems_mut(out)[0] = T::from_f64_lossy(total);
}

/// `acc += x as f64`.
pub(crate) fn accumulate_f64<T: CpuFloat>(acc: ViewMut<'_, Cpu<T>, f64>, x: View<'_, Cpu<T>>) {
    crate::backend::same_len("accumulate_f64", x.len(), acc.len());
    elems_mut(acc).iter_mut().zip(elems(&x)).for_each(|(a, v)| *a += v.as_f64());
}

/// `out[i] = <rows[i], v>` in f64.
pub(crate) fn dots_f64<T: CpuFloat>(rows: View<'_, Cpu<T>>, v: View<'_, Cpu<T>>, out: ViewMut<'_, Cpu<T>, f64>) {
    assert_eq!(v.len(), rows.cols, "dots_f64: a vector of {} for rows of {}", v.len(), rows.cols);
    crate::backend::same_len("dots_f64", rows.rows, out.len());
    let (r, v, o) = (elems(&rows), elems(&v), elems_mut(out));
    let p = rows.cols;
    // Each row's dot is one serial sum: rows side by side give the same bits.
    let one = |(i, o): (usize, &mut f64)| *o = dot_f64(&r[i * p..(i + 1) * p], v);
    if o.len() > 1 && r.len() >= super::PAR_ELEMS {
        o.par_iter_mut().enumerate().for_each(one);
    } else {
        o.iter_mut().enumerate().for_each(one);
    }
}

/// `out = rows rows'` in f64 ([`gram_f64`] on views).
pub(crate) fn gram_view<T: CpuFloat>(rows: View<'_, Cpu<T>>, out: ViewMut<'_, Cpu<T>, f64>) {
    assert_eq!(out.shape(), (rows.rows, rows.rows), "gram_f64: output {:?} for {} rows", out.shape(), rows.rows);
    gram_f64(elems(&rows), rows.rows, rows.cols, elems_mut(out));
}

/// `g <- g + sum_i w_i rows_i` (GEM paper Eq. 13: `g~ = G' v + g`), summed in `f64` and rounded
/// once, tile by tile (a tile of the sum stays in cache while every row is added).
pub(crate) fn combine_f64<T: CpuFloat>(g: ViewMut<'_, Cpu<T>>, rows: View<'_, Cpu<T>>, w: View<'_, Cpu<T>, f64>) {
    let p = g.len();
    assert_eq!(rows.cols, p, "combine_f64: rows of {} for a vector of {p}", rows.cols);
    crate::backend::same_len("combine_f64", rows.rows, w.len());
    let (g, rows, w) = (elems_mut(g), elems(&rows), elems(&w));
    // Tiles are independent (each element's sum runs over the rows in order): tiles side by
    // side give the same bits.
    let tile = |(t, gt): (usize, &mut [T])| {
        let c0 = t * TILE;
        let mut acc = [0f64; TILE];
        let buf = &mut acc[..gt.len()];
        for (a, &x) in buf.iter_mut().zip(gt.iter()) {
            *a = x.as_f64();
        }
        for (i, &wi) in w.iter().enumerate() {
            for (a, &x) in buf.iter_mut().zip(&rows[i * p + c0..i * p + c0 + gt.len()]) {
                *a += wi * x.as_f64();
            }
        }
        for (gi, &a) in gt.iter_mut().zip(buf.iter()) {
            *gi = T::from_f64_lossy(a);
        }
    };
    if rows.len() >= super::PAR_ELEMS {
        g.par_chunks_mut(TILE).enumerate().for_each(tile);
    } else {
        g.chunks_mut(TILE).enumerate().for_each(tile);
    }
}

/// `sum_i x_i y_i` with each product formed exactly in `f64` (eight independent accumulators,
/// combined in order; compiled for AVX2 where the CPU has it, same arithmetic).
pub fn dot_f64<T: Float>(x: &[T], y: &[T]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { dot_f64_avx2(x, y) };
        }
    }
    dot_f64_portable(x, y)
}

#[inline(always)]
fn dot_f64_portable<T: Float>(x: &[T], y: &[T]) -> f64 {
    let mut acc = [0f64; 8];
    let n = x.len().min(y.len());
    let chunks = n / 8;
    for c in 0..chunks {
        let xs = &x[c * 8..c * 8 + 8];
        let ys = &y[c * 8..c * 8 + 8];
        for l in 0..8 {
            acc[l] += xs[l].as_f64() * ys[l].as_f64();
        }
    }
    let mut total: f64 = acc.iter().sum();
    for i in chunks * 8..n {
        total += x[i].as_f64() * y[i].as_f64();
    }
    total
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f64_avx2<T: Float>(x: &[T], y: &[T]) -> f64 {
    dot_f64_portable(x, y)
}

/// `sum_i x_i y_i` over `f64` slices (sixteen independent accumulators, combined in order).
pub fn dot_f64_f64(x: &[f64], y: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { dot_f64_f64_avx2(x, y) };
        }
    }
    dot_f64_f64_portable(x, y)
}

#[inline(always)]
fn dot_f64_f64_portable(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [0f64; 16];
    let mut xc = x.chunks_exact(16);
    let mut yc = y.chunks_exact(16);
    for (xs, ys) in (&mut xc).zip(&mut yc) {
        for l in 0..16 {
            acc[l] += xs[l] * ys[l];
        }
    }
    let mut total: f64 = acc.iter().sum();
    for (a, b) in xc.remainder().iter().zip(yc.remainder()) {
        total += a * b;
    }
    total
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f64_f64_avx2(x: &[f64], y: &[f64]) -> f64 {
    dot_f64_f64_portable(x, y)
}

/// The Gram matrix `out = G G'` of the `k x p` row-major matrix `g`, in f64: each tile of
/// `TILE` (1024) columns is widened to f64 once (products of f32 values are exact in f64), then every
/// pair of its rows is dotted while the tile sits in cache. Above a size, groups of tiles run in
/// parallel and their partial sums are added in group order (fixed, whatever the thread count).
pub fn gram_f64<T: Float>(g: &[T], k: usize, p: usize, out: &mut [f64]) {
    assert_eq!(out.len(), k * k);
    assert_eq!(g.len(), k * p);
    let ntiles = p.div_ceil(TILE).max(1);
    let groups = ntiles.min(if k * k * p >= 1 << 20 { 8 } else { 1 });
    let per = ntiles.div_ceil(groups);
    let partial = |gi: usize| {
        let mut acc = vec![0f64; k * k];
        let mut tile = vec![0f64; k * TILE];
        for t in gi * per..((gi + 1) * per).min(ntiles) {
            let (c0, c1) = (t * TILE, ((t + 1) * TILE).min(p));
            let w = c1 - c0;
            for i in 0..k {
                for (d, &x) in tile[i * w..(i + 1) * w].iter_mut().zip(&g[i * p + c0..i * p + c1]) {
                    *d = x.as_f64();
                }
            }
            for i in 0..k {
                let ti = &tile[i * w..(i + 1) * w];
                for j in 0..=i {
                    acc[i * k + j] += dot_f64_f64(ti, &tile[j * w..(j + 1) * w]);
                }
            }
        }
        acc
    };
    let parts: Vec<Vec<f64>> =
        if groups > 1 { (0..groups).into_par_iter().map(partial).collect() } else { vec![partial(0)] };
    out.fill(0.0);
    for part in &parts {
        for (o, v) in out.iter_mut().zip(part) {
            *o += v;
        }
    }
    // Symmetrise exactly (keep the lower triangle).
    for i in 0..k {
        for j in 0..i {
            out[j * k + i] = out[i * k + j];
        }
    }
}
