//! `matmul_{f32,f64}`: `C (+)= op(A) op(B)` with row blocks of `C` computed in parallel.

use super::{elems, elems_mut, Cpu, CpuFloat};
use crate::{View, ViewMut};
use rayon::prelude::*;

/// Approximate multiply-adds per parallel matmul block.
const MATMUL_BLOCK_MACS: usize = 1 << 19;

/// `c (+)= op(a) op(b)` on row-major slices: `a` is stored `ar x ac`, `b` `br x bc`, `c` is
/// `m x n`. Row blocks of `c` run in parallel; their size depends only on the shape (never on
/// the thread count), so the result is the same whatever the number of threads.
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
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (k2, n) = if trans_b { (bc, br) } else { (br, bc) };
    assert_eq!(k, k2, "matmul: inner dimensions differ ({m}x{k} @ {k2}x{n})");
    assert_eq!(a.len(), ar * ac, "matmul: A holds {} values, not {ar}x{ac}", a.len());
    assert_eq!(b.len(), br * bc, "matmul: B holds {} values, not {br}x{bc}", b.len());
    assert_eq!(c.len(), m * n, "matmul: C holds {} values, not {m}x{n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(T::zero());
        }
        return;
    }
    let beta = if accumulate { T::one() } else { T::zero() };
    // Strides of op(A) and op(B) over their row-major storage.
    let (rsa, csa) = if trans_a { (1isize, ac as isize) } else { (ac as isize, 1isize) };
    let (rsb, csb) = if trans_b { (1isize, bc as isize) } else { (bc as isize, 1isize) };
    // Block size from the shape alone (never from the thread count): multiples of 16 rows.
    let macs = m * n * k;
    let blocks = (macs / MATMUL_BLOCK_MACS).clamp(1, 64);
    let rows_per = m.div_ceil(blocks).next_multiple_of(16).min(m);
    let run = |i0: usize, c_blk: &mut [T]| {
        let rows = c_blk.len() / n;
        // SAFETY: row i of op(A) starts at i * rsa; the block covers rows i0..i0+rows < m;
        // B and C are whole, valid matrices and C's block is exclusively borrowed.
        unsafe {
            T::gemm(
                rows,
                k,
                n,
                T::one(),
                a.as_ptr().offset(i0 as isize * rsa),
                rsa,
                csa,
                b.as_ptr(),
                rsb,
                csb,
                beta,
                c_blk.as_mut_ptr(),
                n as isize,
                1,
            )
        }
    };
    if rows_per >= m {
        run(0, c);
    } else {
        c.par_chunks_mut(rows_per * n).enumerate().for_each(|(blk, c_blk)| run(blk * rows_per, c_blk));
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
