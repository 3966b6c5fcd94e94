//! `matmul_{f32,f64}`: `C (+)= op(A) op(B)`, split into a few blocks of rows or of columns of
//! `C` computed in parallel.
//!
//! `matrixmultiply` packs both operands before its micro-kernel runs, and every block packs
//! again the operand it shares with the other blocks. So a product is split into few, large
//! blocks, along the dimension of `C` whose shared operand is the smaller one: along columns
//! when `C` has fewer rows than columns (the blocks share `op(A)`, `m x k`), along rows
//! otherwise (they share `op(B)`, `k x n`). At batch 64, two blocks of columns of
//! `64 x 784 @ 784 x 256` pack 1.6x less than four blocks of 16 rows did, and the step's
//! products run 1.5x faster on 2 cores (`cargo bench --bench train_step`, group `matmul`).
//!
//! Determinism: the partition depends only on the shape (never on the thread count), and
//! every element of `C` is the same sum in the same order whichever block computes it.

use super::elementwise::add_bias_row;
use super::{elems, elems_mut, Cpu, CpuFloat};
use crate::{View, ViewMut};
use rayon::prelude::*;

/// Multiply-adds below which a product runs as one block (splitting costs more than it saves).
const SPLIT_MACS: usize = 1 << 18;
/// Multiply-adds per block above [`SPLIT_MACS`]: the number of blocks is the power of two
/// nearest below `macs / BLOCK_MACS`, at least 2 and at most [`MAX_BLOCKS`].
const BLOCK_MACS: usize = 1 << 24;
/// The most blocks one product is split into.
const MAX_BLOCKS: usize = 16;
/// Block edges fall on multiples of this many rows or columns (a multiple of every
/// `matrixmultiply` micro-kernel's tile, 8 or 16).
const BLOCK_ALIGN: usize = 16;

/// How a product `m x n`, reduced over `k`, is split: `(blocks, along_rows, width)`, each block
/// `width` rows (or columns) of `C` but the last. A function of the shape alone.
fn partition(m: usize, n: usize, k: usize) -> (usize, bool, usize) {
    let macs = m.saturating_mul(n).saturating_mul(k);
    let along_rows = m >= n;
    let len = if along_rows { m } else { n };
    if macs <= SPLIT_MACS || len <= BLOCK_ALIGN {
        return (1, along_rows, len);
    }
    let wanted = (macs / BLOCK_MACS).clamp(2, MAX_BLOCKS);
    let wanted = 1 << wanted.ilog2();
    let width = len.div_ceil(wanted).next_multiple_of(BLOCK_ALIGN).min(len);
    (len.div_ceil(width), along_rows, width)
}

/// A pointer that may cross to rayon's threads: each block writes a disjoint part of `C`.
#[derive(Clone, Copy)]
pub(super) struct SharedMut<T>(pub(super) *mut T);
// SAFETY: the blocks of one product write disjoint elements of C, and the product returns only
// after every block has finished.
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer; a method, so that a closure captures the whole (Sync) wrapper, not its field.
    pub(super) fn ptr(&self) -> *mut T {
        self.0
    }
}

/// `c (+)= op(a) op(b)` on row-major slices: `a` is stored `ar x ac`, `b` `br x bc`, `c` is
/// `m x n`. Blocks of `c` run in parallel (see the module comment); the result is the same
/// whatever the number of threads.
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: CpuFloat>(
    a: &[T],
    (ar, ac): (usize, usize),
    trans_a: bool,
    b: &[T],
    (br, bc): (usize, usize),
    trans_b: bool,
    c: &mut [T],
    accumulate: bool,
) {
    matmul_then(a, (ar, ac), trans_a, b, (br, bc), trans_b, c, accumulate, None);
}

/// A bias added to the product (with the ReLU when `relu`), block by block.
#[derive(Clone, Copy)]
struct Bias<'a, T> {
    values: &'a [T],
    relu: bool,
}

/// [`matmul`], then, when `bias` is given, [`add_bias_row`] over the part of `c` each block
/// wrote, inside the block's parallel task (while that part is in cache).
#[allow(clippy::too_many_arguments)]
fn matmul_then<T: CpuFloat>(
    a: &[T],
    (ar, ac): (usize, usize),
    trans_a: bool,
    b: &[T],
    (br, bc): (usize, usize),
    trans_b: bool,
    c: &mut [T],
    accumulate: bool,
    bias: Option<Bias<'_, T>>,
) {
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if trans_b { (bc, br) } else { (br, bc) };
    assert_eq!(k, k2, "matmul: inner dimensions differ ({m}x{k} @ {k2}x{n})");
    assert_eq!(a.len(), ar * ac, "matmul: A holds {} values, not {ar}x{ac}", a.len());
    assert_eq!(b.len(), br * bc, "matmul: B holds {} values, not {br}x{bc}", b.len());
    assert_eq!(c.len(), m * n, "matmul: C holds {} values, not {m}x{n}", c.len());
    if let Some(bias) = bias {
        assert_eq!(bias.values.len(), n, "matmul_bias: a bias of {} for {n} columns", bias.values.len());
    }
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(T::zero());
        }
        if let Some(bias) = bias {
            c.chunks_exact_mut(n).for_each(|row| add_bias_row(row, bias.values, bias.relu));
        }
        return;
    }
    let beta = if accumulate { T::one() } else { T::zero() };
    // Strides of op(A) and op(B) over their row-major storage.
    let (rsa, csa) = if trans_a { (1isize, ac as isize) } else { (ac as isize, 1isize) };
    let (rsb, csb) = if trans_b { (1isize, bc as isize) } else { (bc as isize, 1isize) };
    let (blocks, along_rows, width) = partition(m, n, k);
    let c_at = SharedMut(c.as_mut_ptr());
    let run = |blk: usize| {
        let start = blk * width;
        let len = width.min(if along_rows { m } else { n } - start);
        let (rows, cols) = if along_rows { (len, n) } else { (m, len) };
        let (a_off, b_off, c_off) =
            if along_rows { (start as isize * rsa, 0, start * n) } else { (0, start as isize * csb, start) };
        // SAFETY: the block's rows (or columns) start..start+len lie inside op(A)'s m rows (or
        // op(B)'s n columns) and inside C; A and B are valid matrices of the asserted sizes, and
        // the blocks write disjoint elements of C, which nothing else borrows meanwhile.
        unsafe {
            T::gemm(
                rows,
                k,
                cols,
                T::one(),
                a.as_ptr().offset(a_off),
                rsa,
                csa,
                b.as_ptr().offset(b_off),
                rsb,
                csb,
                beta,
                c_at.ptr().add(c_off),
                n as isize,
                1,
            )
        }
        if let Some(bias) = bias {
            // The block's part of C: whole rows, or columns start..start+len of every row.
            let (first, count, cols, skip) = if along_rows { (start, len, n, 0) } else { (0, m, len, start) };
            for r in first..first + count {
                // SAFETY: row r's columns skip..skip+cols lie inside C and inside this block's
                // part of it, which no other block touches.
                let row = unsafe { std::slice::from_raw_parts_mut(c_at.ptr().add(r * n + skip), cols) };
                add_bias_row(row, &bias.values[skip..skip + cols], bias.relu);
            }
        }
    };
    if blocks == 1 {
        run(0);
    } else {
        (0..blocks).into_par_iter().for_each(run);
    }
}

/// [`matmul`] on views.
pub(crate) fn matmul_into<T: CpuFloat>(
    a: View<'_, Cpu<T>>,
    trans_a: bool,
    b: View<'_, Cpu<T>>,
    trans_b: bool,
    out: ViewMut<'_, Cpu<T>>,
    accumulate: bool,
) {
    let m = if trans_a { a.cols } else { a.rows };
    let n = if trans_b { b.rows } else { b.cols };
    assert_eq!(out.shape(), (m, n), "matmul: output is {:?}, the product {m}x{n}", out.shape());
    matmul(elems(&a), a.shape(), trans_a, elems(&b), b.shape(), trans_b, elems_mut(out), accumulate);
}

/// [`Backend::matmul_bias`](crate::Backend::matmul_bias) on the CPU: `out = x w`, the bias
/// (and ReLU) added by each block of the product to the part it wrote: the same arithmetic as
/// [`matmul`] then [`add_bias`](super::elementwise::add_bias), the bias pass parallel and in
/// cache.
pub(crate) fn matmul_bias_into<T: CpuFloat>(
    x: View<'_, Cpu<T>>,
    w: View<'_, Cpu<T>>,
    bias: View<'_, Cpu<T>>,
    relu: bool,
    out: ViewMut<'_, Cpu<T>>,
) {
    assert_eq!(bias.rows, 1, "matmul_bias: the bias must be 1 x cols");
    assert_eq!(out.shape(), (x.rows, w.cols), "matmul: output is {:?}, the product {}x{}", out.shape(), x.rows, w.cols);
    let bias = Bias { values: elems(&bias), relu };
    matmul_then(elems(&x), x.shape(), false, elems(&w), w.shape(), false, elems_mut(out), false, Some(bias));
}

/// Checks the blocks of a `*_blocks` op: each a range of `0..rows`, their windows of `len`
/// values `stride` apart (disjoint) inside an output of `out_len`.
pub(super) fn check_blocks(
    op: &str,
    blocks: &[std::ops::Range<usize>],
    rows: usize,
    len: usize,
    stride: usize,
    out_len: usize,
) {
    assert!(stride >= len || blocks.len() <= 1, "{op}: stride {stride} below a block's {len} values");
    if let Some(last) = blocks.len().checked_sub(1) {
        let need = last * stride + len;
        assert!(need <= out_len, "{op}: output holds {out_len}, the blocks need {need}");
    }
    for r in blocks {
        assert!(r.start <= r.end && r.end <= rows, "{op}: rows {r:?} outside 0..{rows}");
    }
}

/// [`Backend::matmul_tn_blocks`](crate::Backend::matmul_tn_blocks) on the CPU: the blocks' products
/// side by side on rayon's threads, one parallel region for all of them (each product may
/// itself split into blocks of `C`: the same per-element arithmetic as one [`matmul`] call on
/// those rows, so the same bits whatever the number of threads).
pub(crate) fn matmul_tn_blocks<T: CpuFloat>(
    a: View<'_, Cpu<T>>,
    b: View<'_, Cpu<T>>,
    blocks: &[std::ops::Range<usize>],
    out: ViewMut<'_, Cpu<T>>,
    stride: usize,
) {
    let (m, n) = (a.cols, b.cols);
    let len = m * n;
    assert_eq!(a.rows, b.rows, "matmul_tn_blocks: a has {} rows, b {}", a.rows, b.rows);
    check_blocks("matmul_tn_blocks", blocks, a.rows, len, stride, out.len());
    let c = elems_mut(out);
    let c_at = SharedMut(c.as_mut_ptr());
    let (a, b) = (elems(&a), elems(&b));
    let one = |(t, r): (usize, &std::ops::Range<usize>)| {
        // SAFETY: block t writes c[t*stride .. t*stride + len], inside `c` (asserted) and
        // disjoint from every other block's window (stride >= len); nothing else borrows `c`.
        let ct = unsafe { std::slice::from_raw_parts_mut(c_at.ptr().add(t * stride), len) };
        let rows = r.end - r.start;
        matmul(&a[r.start * m..r.end * m], (rows, m), true, &b[r.start * n..r.end * n], (rows, n), false, ct, false);
    };
    if blocks.len() <= 1 {
        blocks.iter().enumerate().for_each(one);
    } else {
        blocks.par_iter().enumerate().for_each(one);
    }
}
