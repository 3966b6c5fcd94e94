//! The softmax family: log-softmax and its backward, the fused masked softmax cross-entropy and
//! its backward, and the arg-max count of evaluation.

use super::{elems, elems_mut, Cpu, CpuFloat};
use crate::backend::same_shape;
use crate::{View, ViewMut};

/// Row `i` of the mask (`1 x cols`, broadcast, or `rows x cols`), if there is a mask.
fn mask_row<'a, T: CpuFloat>(
    mask: Option<&'a View<'a, Cpu<T>>>,
    rows: usize,
    cols: usize,
    i: usize,
) -> Option<&'a [T]> {
    mask.map(|m| {
        assert_eq!(m.cols, cols, "mask has {} columns, logits {}", m.cols, cols);
        let r = if m.rows == 1 {
            0
        } else {
            assert_eq!(m.rows, rows, "mask has {} rows, logits {}", m.rows, rows);
            i
        };
        &elems(m)[r * cols..(r + 1) * cols]
    })
}

/// `out = log_softmax(x)` row by row: `(x - max) - ln sum exp(x - max)`.
pub(crate) fn log_softmax<T: CpuFloat>(x: View<'_, Cpu<T>>, out: ViewMut<'_, Cpu<T>>) {
    same_shape("log_softmax", x.shape(), out.shape());
    let cols = x.cols;
    if cols == 0 {
        return;
    }
    for (orow, xrow) in elems_mut(out).chunks_exact_mut(cols).zip(elems(&x).chunks_exact(cols)) {
        let mx = xrow.iter().copied().fold(T::neg_infinity(), T::max);
        let ln_z = xrow.iter().map(|&v| (v - mx).exp()).sum::<T>().ln();
        // (x - max) - ln z: exact for large logits, unlike x - (max + ln z).
        for (o, &v) in orow.iter_mut().zip(xrow) {
            *o = (v - mx) - ln_z;
        }
    }
}

/// `out = gy - exp(y) * rowsum(gy)`.
pub(crate) fn log_softmax_backward<T: CpuFloat>(y: View<'_, Cpu<T>>, gy: View<'_, Cpu<T>>, out: ViewMut<'_, Cpu<T>>) {
    same_shape("log_softmax_backward", y.shape(), gy.shape());
    same_shape("log_softmax_backward", y.shape(), out.shape());
    let cols = y.cols;
    if cols == 0 {
        return;
    }
    for ((orow, grow), yrow) in
        elems_mut(out).chunks_exact_mut(cols).zip(elems(&gy).chunks_exact(cols)).zip(elems(&y).chunks_exact(cols))
    {
        let total: T = grow.iter().copied().sum();
        for ((o, &g), &yi) in orow.iter_mut().zip(grow).zip(yrow) {
            *o = g - yi.exp() * total;
        }
    }
}

/// The mean masked cross-entropy (`loss`, `1 x 1`, accumulated in f64) and the masked softmax
/// probabilities (`probs`, zero where masked). A masked-out label gives `+inf`.
pub(crate) fn masked_xent<T: CpuFloat>(
    logits: View<'_, Cpu<T>>,
    labels: View<'_, Cpu<T>, u32>,
    mask: Option<View<'_, Cpu<T>>>,
    loss: ViewMut<'_, Cpu<T>>,
    probs: ViewMut<'_, Cpu<T>>,
) {
    let (rows, cols) = logits.shape();
    assert_eq!(labels.len(), rows, "masked_xent: {} labels for {} rows", labels.len(), rows);
    same_shape("masked_xent", logits.shape(), probs.shape());
    assert_eq!(loss.shape(), (1, 1), "masked_xent: the loss is 1x1");
    let (ls, ys, ps) = (elems(&logits), elems(&labels), elems_mut(probs));
    let mut total = 0f64;
    for i in 0..rows {
        let x = &ls[i * cols..(i + 1) * cols];
        let p = &mut ps[i * cols..(i + 1) * cols];
        let m = mask_row(mask.as_ref(), rows, cols, i);
        let allowed = |j: usize| m.is_none_or(|m| m[j] != T::zero());
        let mut mx = T::neg_infinity();
        for (j, &v) in x.iter().enumerate() {
            if allowed(j) && v > mx {
                mx = v;
            }
        }
        let mut z = T::zero();
        for (j, (&v, pj)) in x.iter().zip(p.iter_mut()).enumerate() {
            *pj = T::zero();
            if allowed(j) {
                let e = (v - mx).exp();
                *pj = e;
                z += e;
            }
        }
        let inv = T::one() / z;
        p.iter_mut().for_each(|pj| *pj *= inv);
        let y = ys[i] as usize;
        assert!(y < cols, "masked_xent: label {y} out of range for {cols} classes");
        // -log p_y = lse - x_y = (mx + ln z) - x_y; a masked-out label gives +inf.
        let nll = if allowed(y) { ((mx - x[y]) + z.ln()).as_f64() } else { f64::INFINITY };
        total += nll;
    }
    let mean = if rows == 0 { 0.0 } else { total / rows as f64 };
    elems_mut(loss)[0] = T::from_f64_lossy(mean);
}

/// `out = (p - onehot(label)) * gy / rows`.
pub(crate) fn masked_xent_backward<T: CpuFloat>(
    probs: View<'_, Cpu<T>>,
    labels: View<'_, Cpu<T>, u32>,
    gy: View<'_, Cpu<T>>,
    out: ViewMut<'_, Cpu<T>>,
) {
    same_shape("masked_xent_backward", probs.shape(), out.shape());
    let (rows, cols) = probs.shape();
    assert_eq!(gy.shape(), (1, 1), "masked_xent_backward: gy must be 1x1");
    let scale = if rows == 0 { T::zero() } else { elems(&gy)[0] / T::from_usize(rows).expect("rows fit") };
    let o = elems_mut(out);
    for (o, &p) in o.iter_mut().zip(elems(&probs)) {
        *o = p * scale;
    }
    for (i, &y) in elems(&labels).iter().enumerate() {
        o[i * cols + y as usize] -= scale;
    }
}

/// Number of rows whose arg-max over the allowed classes equals the label (ties: lowest index).
pub(crate) fn count_correct<T: CpuFloat>(
    logits: View<'_, Cpu<T>>,
    labels: View<'_, Cpu<T>, u32>,
    mask: Option<View<'_, Cpu<T>>>,
) -> u32 {
    let (rows, cols) = logits.shape();
    assert_eq!(labels.len(), rows, "count_correct: {} labels for {} rows", labels.len(), rows);
    let (ls, ys) = (elems(&logits), elems(&labels));
    let mut correct = 0;
    for i in 0..rows {
        let x = &ls[i * cols..(i + 1) * cols];
        let m = mask_row(mask.as_ref(), rows, cols, i);
        let mut best = None;
        for (j, &v) in x.iter().enumerate() {
            if m.is_none_or(|m| m[j] != T::zero()) && best.is_none_or(|(_, bv)| v > bv) {
                best = Some((j, v));
            }
        }
        if best.is_some_and(|(j, _)| j == ys[i] as usize) {
            correct += 1;
        }
    }
    correct
}
