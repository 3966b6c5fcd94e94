//! Element-wise kernels: `out = f(a, b)`, `out = f(a)`, `acc += x`, and the bias adds. Parallel
//! over fixed chunks above [`PAR_ELEMS`] elements; each element's arithmetic is independent of
//! the split.

use super::{elems, elems_mut, Cpu, CpuFloat, PAR_ELEMS};
use crate::backend::same_shape;
use crate::{View, ViewMut};
use rayon::prelude::*;

/// Elements per parallel work item.
const CHUNK: usize = 1 << 13;

/// `out = f(a, b)`, element by element.
pub(crate) fn zip_map<T: CpuFloat>(
    op: &str,
    a: View<'_, Cpu<T>>,
    b: View<'_, Cpu<T>>,
    out: ViewMut<'_, Cpu<T>>,
    f: impl Fn(T, T) -> T + Sync + Send,
) {
    same_shape(op, a.shape(), b.shape());
    same_shape(op, a.shape(), out.shape());
    let (a, b, o) = (elems(&a), elems(&b), elems_mut(out));
    if o.len() >= PAR_ELEMS {
        o.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).zip(b.par_chunks(CHUNK)).for_each(|((o, a), b)| {
            o.iter_mut().zip(a).zip(b).for_each(|((o, &x), &y)| *o = f(x, y));
        });
    } else {
        o.iter_mut().zip(a).zip(b).for_each(|((o, &x), &y)| *o = f(x, y));
    }
}

/// `out = f(a)`, element by element.
pub(crate) fn map<T: CpuFloat>(
    op: &str,
    a: View<'_, Cpu<T>>,
    out: ViewMut<'_, Cpu<T>>,
    f: impl Fn(T) -> T + Sync + Send,
) {
    same_shape(op, a.shape(), out.shape());
    let (a, o) = (elems(&a), elems_mut(out));
    if o.len() >= PAR_ELEMS {
        o.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).for_each(|(o, a)| {
            o.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x));
        });
    } else {
        o.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x));
    }
}

/// `acc += x`.
pub(crate) fn accumulate<T: CpuFloat>(acc: ViewMut<'_, Cpu<T>>, x: View<'_, Cpu<T>>) {
    same_shape("accumulate", acc.shape(), x.shape());
    let (o, x) = (elems_mut(acc), elems(&x));
    if o.len() >= PAR_ELEMS {
        o.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| {
            o.iter_mut().zip(x).for_each(|(o, &v)| *o += v);
        });
    } else {
        o.iter_mut().zip(x).for_each(|(o, &v)| *o += v);
    }
}

/// `out[i, j] = x[i, j] + row[j]`.
pub(crate) fn add_row<T: CpuFloat>(x: View<'_, Cpu<T>>, row: View<'_, Cpu<T>>, out: ViewMut<'_, Cpu<T>>) {
    assert_eq!(row.rows, 1, "add_row: the row must be 1 x cols");
    assert_eq!(row.cols, x.cols, "add_row: {} columns vs {}", row.cols, x.cols);
    same_shape("add_row", x.shape(), out.shape());
    let cols = x.cols;
    let (xs, r, o) = (elems(&x), elems(&row), elems_mut(out));
    if cols == 0 {
        return;
    }
    for (orow, xrow) in o.chunks_exact_mut(cols).zip(xs.chunks_exact(cols)) {
        for ((o, &v), &b) in orow.iter_mut().zip(xrow).zip(r) {
            *o = v + b;
        }
    }
}

/// `y[i, j] = y[i, j] + bias[j]`, then `max(., 0)` when `relu` (NaN gives 0, as `relu` does).
pub(crate) fn add_bias<T: CpuFloat>(y: ViewMut<'_, Cpu<T>>, bias: View<'_, Cpu<T>>, relu: bool) {
    assert_eq!(bias.rows, 1, "add_bias: the bias must be 1 x cols");
    assert_eq!(bias.cols, y.cols, "add_bias: {} columns vs {}", bias.cols, y.cols);
    let cols = y.cols;
    if cols == 0 {
        return;
    }
    let (ys, b) = (elems_mut(y), elems(&bias));
    for row in ys.chunks_exact_mut(cols) {
        add_bias_row(row, b, relu);
    }
}

/// One row of [`add_bias`] (or the part of a row a product block wrote, with its part of the
/// bias): `v = v + b`, then `max(v, 0)` when `relu`.
#[inline]
pub(crate) fn add_bias_row<T: CpuFloat>(row: &mut [T], bias: &[T], relu: bool) {
    if relu {
        for (v, &c) in row.iter_mut().zip(bias) {
            let s = *v + c;
            *v = if s > T::zero() { s } else { T::zero() };
        }
    } else {
        row.iter_mut().zip(bias).for_each(|(v, &c)| *v += c);
    }
}
