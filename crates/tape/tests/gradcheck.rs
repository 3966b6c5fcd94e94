//! Gradient checks for every op of the tape, in `f64`, against central finite differences
//! (DESIGN.md, "Gradient checks").
//!
//! * Shapes are drawn by proptest, `1..=8` per dimension; values come from a ChaCha stream seeded
//!   by proptest, bounded (`[-2, 2]` unless a test says otherwise).
//! * Every element of every input is perturbed by `h = 1e-6` in both directions, the forward is
//!   re-run on a fresh tape, and the analytic gradient passes when
//!   `|analytic - numeric| <= 1e-6 + 1e-4 |numeric|` for EVERY element.
//! * An op with a non-scalar output `y` is reduced with a fixed random constant weighting,
//!   `L = sum(W * y)` (tape ops `mul` + `sum`), so `dL/dy = W` and the check covers the whole
//!   vector-Jacobian product `W^T J`, not just the column sums of the Jacobian.
//!
//! Each test's doc comment states the derivative it checks, with `G = W` the weighting.
//!
//! The deterministic tests at the end check what finite differences cannot: gradient
//! accumulation when a value is used twice, constants and unused parameters getting no gradient,
//! and ReLU's derivative at exactly 0.

mod common;

use common::ArrayTape;
use engram_tape::Var;
use ndarray::{array, Array2};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Tape64 = ArrayTape<f64>;

/// Finite-difference step.
const H: f64 = 1e-6;
/// Absolute tolerance.
const ATOL: f64 = 1e-6;
/// Relative tolerance (relative to the numeric derivative).
const RTOL: f64 = 1e-4;
/// Proptest cases per op.
const CASES: u32 = 64;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A `rows x cols` matrix with elements uniform in `[lo, hi)`.
fn uniform(rng: &mut ChaCha8Rng, rows: usize, cols: usize, lo: f64, hi: f64) -> Array2<f64> {
    Array2::from_shape_simple_fn((rows, cols), || rng.random_range(lo..hi))
}

/// A `rows x cols` matrix with `|x|` uniform in `[min_abs, max_abs)` and a random sign.
fn away_from_zero(rng: &mut ChaCha8Rng, rows: usize, cols: usize, min_abs: f64, max_abs: f64) -> Array2<f64> {
    Array2::from_shape_simple_fn((rows, cols), || {
        let m = rng.random_range(min_abs..max_abs);
        if rng.random_bool(0.5) {
            m
        } else {
            -m
        }
    })
}

/// Records `inputs` as parameters on a fresh tape and returns the scalar value of `build`.
fn loss_value(build: &impl Fn(&mut Tape64, &[Var]) -> Var, inputs: &[Array2<f64>]) -> f64 {
    let mut tape = ArrayTape::new();
    let vars: Vec<Var> = inputs.iter().map(|x| tape.param(x.clone())).collect();
    let loss = build(&mut tape, &vars);
    let value = tape.value(loss);
    assert_eq!(value.dim(), (1, 1), "the loss must be 1x1");
    value[[0, 0]]
}

/// The gradient check: `build` turns the parameters (one per input, in order) into a `1 x 1`
/// loss. The analytic gradient of every input is compared, element by element, with the central
/// difference `(L(x + h e) - L(x - h e)) / 2h`, each evaluated on a fresh tape. On failure the
/// message names the worst element (largest `|analytic - numeric| / tolerance`).
fn check(build: impl Fn(&mut Tape64, &[Var]) -> Var, inputs: Vec<Array2<f64>>) -> Result<(), TestCaseError> {
    let mut tape = ArrayTape::new();
    let vars: Vec<Var> = inputs.iter().map(|x| tape.param(x.clone())).collect();
    let loss = build(&mut tape, &vars);
    prop_assert_eq!(tape.shape(loss), (1, 1), "the loss must be 1x1");
    let grads = tape.backward(loss);

    struct Worst {
        ratio: f64,
        input: usize,
        at: (usize, usize),
        analytic: f64,
        numeric: f64,
    }
    let mut worst: Option<Worst> = None;
    let mut failures = 0usize;
    let mut perturbed = inputs.clone();
    for (i, (x, v)) in inputs.iter().zip(&vars).enumerate() {
        let Some(g) = grads.get(*v) else {
            return Err(TestCaseError::fail(format!("input {i} ({:?}) got no gradient", x.dim())));
        };
        prop_assert_eq!(g.dim(), x.dim(), "gradient of input {} has the wrong shape", i);
        for ((r, c), &x0) in x.indexed_iter() {
            let (xp, xm) = (x0 + H, x0 - H);
            perturbed[i][[r, c]] = xp;
            let lp = loss_value(&build, &perturbed);
            perturbed[i][[r, c]] = xm;
            let lm = loss_value(&build, &perturbed);
            perturbed[i][[r, c]] = x0;
            // Divide by the step actually taken (x0 +- h is rounded).
            let numeric = (lp - lm) / (xp - xm);
            let analytic = g[[r, c]];
            let tol = ATOL + RTOL * numeric.abs();
            let err = (analytic - numeric).abs();
            // NaN in either side counts as a failure (and as the worst element).
            let ratio = if err.is_nan() { f64::INFINITY } else { err / tol };
            if err.is_nan() || err > tol {
                failures += 1;
            }
            if worst.as_ref().is_none_or(|w| ratio > w.ratio) {
                worst = Some(Worst { ratio, input: i, at: (r, c), analytic, numeric });
            }
        }
    }
    if failures > 0 {
        let w = worst.expect("a failure implies a worst element");
        return Err(TestCaseError::fail(format!(
            "{failures} element(s) off; worst: input {} {:?} element {:?}: analytic {:e}, numeric {:e}, \
             |diff| {:e} > tol {:e} (shapes {:?})",
            w.input,
            inputs[w.input].dim(),
            w.at,
            w.analytic,
            w.numeric,
            (w.analytic - w.numeric).abs(),
            ATOL + RTOL * w.numeric.abs(),
            inputs.iter().map(|x| x.dim()).collect::<Vec<_>>(),
        )));
    }
    Ok(())
}

/// `L = sum(W * y)` for a constant `W` of `y`'s shape: `dL/dy = W`.
fn weighted(tape: &mut Tape64, y: Var, w: &Array2<f64>) -> Var {
    let w = tape.constant(w.clone());
    let wy = tape.mul(y, w);
    tape.sum(wy)
}

/// Which mask a masked cross-entropy check uses.
#[derive(Clone, Copy, Debug)]
enum MaskKind {
    None,
    /// `1 x classes`, broadcast over the rows.
    Broadcast,
    /// `rows x classes`, one mask per row.
    PerRow,
}

/// A random non-empty set of allowed classes, as a `0/1` row.
fn mask_row(rng: &mut ChaCha8Rng, classes: usize) -> Vec<f64> {
    let mut row: Vec<f64> = (0..classes).map(|_| if rng.random_bool(0.6) { 1.0 } else { 0.0 }).collect();
    let forced = rng.random_range(0..classes);
    row[forced] = 1.0;
    row
}

/// Labels and a mask of `kind`; every label lies inside its row's mask.
fn labels_and_mask(
    rng: &mut ChaCha8Rng,
    rows: usize,
    classes: usize,
    kind: MaskKind,
) -> (Vec<u32>, Option<Array2<f64>>) {
    let mask = match kind {
        MaskKind::None => None,
        MaskKind::Broadcast => Some(Array2::from_shape_vec((1, classes), mask_row(rng, classes)).unwrap()),
        MaskKind::PerRow => {
            let data = (0..rows).flat_map(|_| mask_row(rng, classes)).collect();
            Some(Array2::from_shape_vec((rows, classes), data).unwrap())
        }
    };
    let labels = (0..rows)
        .map(|i| {
            let allowed: Vec<usize> = match &mask {
                None => (0..classes).collect(),
                Some(m) => {
                    let r = if m.nrows() == 1 { 0 } else { i };
                    (0..classes).filter(|&j| m[[r, j]] != 0.0).collect()
                }
            };
            allowed[rng.random_range(0..allowed.len())] as u32
        })
        .collect();
    (labels, mask)
}

fn mask_kind() -> impl Strategy<Value = MaskKind> {
    prop_oneof![Just(MaskKind::None), Just(MaskKind::Broadcast), Just(MaskKind::PerRow)]
}

/// Checks the fused masked cross-entropy, and that its analytic gradient is exactly 0 outside
/// the mask.
fn check_masked_xent(rows: usize, classes: usize, kind: MaskKind, seed: u64) -> Result<(), TestCaseError> {
    let mut r = rng(seed);
    let logits = uniform(&mut r, rows, classes, -2.0, 2.0);
    let (labels, mask) = labels_and_mask(&mut r, rows, classes, kind);
    let w = uniform(&mut r, 1, 1, -2.0, 2.0);
    let build = |t: &mut Tape64, v: &[Var]| {
        let m = mask.as_ref().map(|m| t.constant(m.clone()));
        let l = t.masked_xent(v[0], &labels, m);
        weighted(t, l, &w)
    };
    if let Some(m) = &mask {
        let mut tape = ArrayTape::new();
        let x = tape.param(logits.clone());
        let loss = build(&mut tape, &[x]);
        let grads = tape.backward(loss);
        let g = grads.get(x).expect("logits gradient");
        for ((i, j), &gij) in g.indexed_iter() {
            let allowed = m[[if m.nrows() == 1 { 0 } else { i }, j]] != 0.0;
            prop_assert!(allowed || gij == 0.0, "gradient {} at masked ({}, {})", gij, i, j);
        }
    }
    check(build, vec![logits])
}

fn dim() -> std::ops::RangeInclusive<usize> {
    1..=8
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// `y = A B` (`m x k` times `k x n`): `dL/dA = G B^T`, `dL/dB = A^T G`.
    #[test]
    fn grad_matmul(m in dim(), k in dim(), n in dim(), seed in any::<u64>()) {
        let mut r = rng(seed);
        let a = uniform(&mut r, m, k, -2.0, 2.0);
        let b = uniform(&mut r, k, n, -2.0, 2.0);
        let w = uniform(&mut r, m, n, -2.0, 2.0);
        check(|t, v| { let y = t.matmul(v[0], v[1]); weighted(t, y, &w) }, vec![a, b])?;
    }

    /// `y = x + 1 b` (the `1 x n` bias broadcast over rows): `dL/dx = G`,
    /// `dL/db[j] = sum_i G[i, j]`.
    #[test]
    fn grad_add_row(m in dim(), n in dim(), seed in any::<u64>()) {
        let mut r = rng(seed);
        let x = uniform(&mut r, m, n, -2.0, 2.0);
        let b = uniform(&mut r, 1, n, -2.0, 2.0);
        let w = uniform(&mut r, m, n, -2.0, 2.0);
        check(|t, v| { let y = t.add_row(v[0], v[1]); weighted(t, y, &w) }, vec![x, b])?;
    }

    /// `y = a + b`: `dL/da = G`, `dL/db = G`.
    #[test]
    fn grad_add(m in dim(), n in dim(), seed in any::<u64>()) {
        let mut r = rng(seed);
        let a = uniform(&mut r, m, n, -2.0, 2.0);
        let b = uniform(&mut r, m, n, -2.0, 2.0);
        let w = uniform(&mut r, m, n, -2.0, 2.0);
        check(|t, v| { let y = t.add(v[0], v[1]); weighted(t, y, &w) }, vec![a, b])?;
    }

    /// `y = a - b`: `dL/da = G`, `dL/db = -G`.
    #[test]
    fn grad_sub(m in dim(), n in dim(), seed in any::<u64>()) {
        let mut r = rng(seed);
        let a = uniform(&mut r, m, n, -2.0, 2.0);
        let b = uniform(&mut r, m, n, -2.0, 2.0);
        let w = uniform(&mut r, m, n, -2.0, 2.0);
        check(|t, v| { let y = t.sub(v[0], v[1]); weighted(t, y, &w) }, vec![a, b])?;
    }

    /// `y = a * b` (element-wise): `dL/da = G * b`, `dL/db = G * a`.
    #[test]
    fn grad_mul(m in dim(), n in dim(), seed in any::<u64>()) {
        let mut r = rng(seed);
        let a = uniform(&mut r, m, n, -2.0, 2.0);
        let b = uniform(&mut r, m, n, -2.0, 2.0);
        let w = uniform(&mut r, m, n, -2.0, 2.0);
        check(|t, v| { let y = t.mul(v[0], v[1]); weighted(t, y, &w) }, vec![a, b])?;
    }

    /// `y = s a` for a constant scalar `s` in `[-2, 2]`: `dL/da = s G`.
    #[test]
    fn grad_scale(m in dim(), n in dim(), s in -2.0f64..2.0, seed in any::<u64>()) {
        let mut r = rng(seed);
        let a = uniform(&mut r, m, n, -2.0, 2.0);
        let w = uniform(&mut r, m, n, -2.0, 2.0);
        check(|t, v| { let y = t.scale(v[0], s); weighted(t, y, &w) }, vec![a])?;
    }

    /// `y = a^2` (element-wise): `dL/da = 2 a G`.
    #[test]
    fn grad_square(m in dim(), n in dim(), seed in any::<u64>()) {
        let mut r = rng(seed);
        let a = uniform(&mut r, m, n, -2.0, 2.0);
        let w = uniform(&mut r, m, n, -2.0, 2.0);
        check(|t, v| { let y = t.square(v[0]); weighted(t, y, &w) }, vec![a])?;
    }

    /// `y = max(x, 0)`: `dL/dx = G * 1[x > 0]`, with `0.05 <= |x| <= 2` so that no perturbation
    /// crosses the kink (the value at 0 is checked by `relu_derivative_at_zero_is_zero`).
    #[test]
    fn grad_relu(m in dim(), n in dim(), seed in any::<u64>()) {
        let mut r = rng(seed);
        let x = away_from_zero(&mut r, m, n, 0.05, 2.0);
        let w = uniform(&mut r, m, n, -2.0, 2.0);
        check(|t, v| { let y = t.relu(v[0]); weighted(t, y, &w) }, vec![x])?;
    }

    /// `y = sum_ij x[i, j]` (`1 x 1`), weighted by a scalar `w`: `dL/dx[i, j] = w`.
    #[test]
    fn grad_sum(m in dim(), n in dim(), seed in any::<u64>()) {
        let mut r = rng(seed);
        let x = uniform(&mut r, m, n, -2.0, 2.0);
        let w = uniform(&mut r, 1, 1, -2.0, 2.0);
        check(|t, v| { let y = t.sum(v[0]); weighted(t, y, &w) }, vec![x])?;
    }

    /// `y = (1 / N) sum_ij x[i, j]` with `N = m n`, weighted by a scalar `w`:
    /// `dL/dx[i, j] = w / N`.
    #[test]
    fn grad_mean(m in dim(), n in dim(), seed in any::<u64>()) {
        let mut r = rng(seed);
        let x = uniform(&mut r, m, n, -2.0, 2.0);
        let w = uniform(&mut r, 1, 1, -2.0, 2.0);
        check(|t, v| { let y = t.mean(v[0]); weighted(t, y, &w) }, vec![x])?;
    }

    /// `y = log_softmax(x)` row-wise:
    /// `dL/dx[i, j] = G[i, j] - softmax(x)[i, j] * sum_k G[i, k]`.
    #[test]
    fn grad_log_softmax(m in dim(), n in dim(), seed in any::<u64>()) {
        let mut r = rng(seed);
        let x = uniform(&mut r, m, n, -2.0, 2.0);
        let w = uniform(&mut r, m, n, -2.0, 2.0);
        check(|t, v| { let y = t.log_softmax(v[0]); weighted(t, y, &w) }, vec![x])?;
    }

    /// Fused softmax cross-entropy without a mask, `y = (1/n) sum_i [lse_k x[i, k] - x[i, y_i]]`,
    /// weighted by a scalar `w`: `dL/dx[i, k] = w (p[i, k] - 1[k = y_i]) / n`, `p = softmax(x)`.
    #[test]
    fn grad_masked_xent_no_mask(rows in dim(), classes in dim(), seed in any::<u64>()) {
        check_masked_xent(rows, classes, MaskKind::None, seed)?;
    }

    /// Fused masked softmax cross-entropy with a `1 x classes` mask `M` broadcast over the rows
    /// (labels inside `M`): `dL/dx[i, k] = w (p[i, k] - 1[k = y_i]) / n` for `k` in `M`, with `p`
    /// the softmax over `M` only, and exactly 0 for `k` outside `M`.
    #[test]
    fn grad_masked_xent_broadcast_mask(rows in dim(), classes in dim(), seed in any::<u64>()) {
        check_masked_xent(rows, classes, MaskKind::Broadcast, seed)?;
    }

    /// Fused masked softmax cross-entropy with a `rows x classes` mask (one set `M_i` per row,
    /// labels inside it): `dL/dx[i, k] = w (p[i, k] - 1[k = y_i]) / n` for `k` in `M_i`, with `p`
    /// the softmax over `M_i`, and exactly 0 for `k` outside `M_i`.
    #[test]
    fn grad_masked_xent_per_row_mask(rows in dim(), classes in dim(), seed in any::<u64>()) {
        check_masked_xent(rows, classes, MaskKind::PerRow, seed)?;
    }

    /// Composite: a 2-layer MLP loss plus the consolidation penalty over all four parameters,
    /// `L = xent(relu(x W1 + 1 b1) W2 + 1 b2; y, mask) + c sum_p sum(Omega_p * (theta_p - theta*_p)^2)`
    /// (penalty built from tape ops sub, square, mul, sum, add, scale; `c` in `[0, 0.5]`,
    /// `Omega >= 0`). Checks, for each `theta_p` in `W1, b1, W2, b2`,
    /// `dL/dtheta_p = d xent / d theta_p (chain rule through every op) + 2 c Omega_p (theta_p - theta*_p)`.
    /// Parameters and anchors lie in `[-1, 1]` (keeps the loss, hence finite-difference rounding,
    /// small), `x` in `[-2, 2]`; cases with a hidden pre-activation within `1e-3` of the ReLU kink
    /// are skipped.
    #[test]
    fn grad_mlp_with_quadratic_penalty(
        batch in dim(),
        d_in in dim(),
        hidden in dim(),
        classes in dim(),
        kind in mask_kind(),
        c in 0.0f64..0.5,
        seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let x = uniform(&mut r, batch, d_in, -2.0, 2.0);
        let shapes = [(d_in, hidden), (1, hidden), (hidden, classes), (1, classes)];
        let params: Vec<Array2<f64>> = shapes.iter().map(|&(a, b)| uniform(&mut r, a, b, -1.0, 1.0)).collect();
        let anchors: Vec<Array2<f64>> = shapes.iter().map(|&(a, b)| uniform(&mut r, a, b, -1.0, 1.0)).collect();
        let omegas: Vec<Array2<f64>> = shapes.iter().map(|&(a, b)| uniform(&mut r, a, b, 0.0, 2.0)).collect();
        let (labels, mask) = labels_and_mask(&mut r, batch, classes, kind);
        let pre = x.dot(&params[0]) + &params[1];
        prop_assume!(pre.iter().all(|v| v.abs() >= 1e-3), "pre-activation too close to the ReLU kink");

        let build = |t: &mut Tape64, v: &[Var]| {
            let xv = t.constant(x.clone());
            let h = t.matmul(xv, v[0]);
            let h = t.add_row(h, v[1]);
            let h = t.relu(h);
            let o = t.matmul(h, v[2]);
            let o = t.add_row(o, v[3]);
            let m = mask.as_ref().map(|m| t.constant(m.clone()));
            let xent = t.masked_xent(o, &labels, m);
            let mut penalty: Option<Var> = None;
            for ((&p, star), omega) in v.iter().zip(&anchors).zip(&omegas) {
                let star = t.constant(star.clone());
                let omega = t.constant(omega.clone());
                let d = t.sub(p, star);
                let d2 = t.square(d);
                let wd2 = t.mul(omega, d2);
                let s = t.sum(wd2);
                penalty = Some(match penalty { None => s, Some(acc) => t.add(acc, s) });
            }
            let penalty = t.scale(penalty.expect("four parameters"), c);
            t.add(xent, penalty)
        };
        check(build, params)?;
    }

    /// A value used by several ops at once (square `x`, `n x n`):
    /// `y = x @ x + x * x + x`, `dL/dx = G x^T + x^T G + 2 x G + G`; every use's contribution must
    /// be accumulated into the one gradient.
    #[test]
    fn grad_value_used_many_times(n in dim(), seed in any::<u64>()) {
        let mut r = rng(seed);
        let x = uniform(&mut r, n, n, -2.0, 2.0);
        let w = uniform(&mut r, n, n, -2.0, 2.0);
        let build = |t: &mut Tape64, v: &[Var]| {
            let a = t.matmul(v[0], v[0]);
            let b = t.mul(v[0], v[0]);
            let y = t.add(a, b);
            let y = t.add(y, v[0]);
            weighted(t, y, &w)
        };
        check(build, vec![x])?;
    }
}

// ---- deterministic tests --------------------------------------------------------------------

/// `y = x * x` via `mul(x, x)`, `L = sum(W * y)`: `dL/dx = 2 x W` (both operands' contributions
/// accumulate into the one slot).
#[test]
fn mul_of_a_value_with_itself_accumulates_to_2x() {
    let x = array![[1.5, -2.0, 0.25], [3.0, 0.0, -0.5]];
    let w = array![[1.0, 2.0, -1.0], [0.5, 4.0, 3.0]];
    let mut tape = ArrayTape::new();
    let xv = tape.param(x.clone());
    let y = tape.mul(xv, xv);
    let loss = weighted(&mut tape, y, &w);
    let grads = tape.backward(loss);
    assert_eq!(grads.get(xv).unwrap(), 2.0 * &x * &w);
    // The intermediate's gradient is dL/dy = W.
    assert_eq!(grads.get(y).unwrap(), w);
}

/// `y = x + x` via `add(x, x)`, `L = sum(y)`: `dL/dx = 2` everywhere.
#[test]
fn add_of_a_value_with_itself_gives_2() {
    let mut tape = ArrayTape::new();
    let xv = tape.param(array![[1.0, -3.0], [0.5, 7.0], [0.0, 2.0]]);
    let y = tape.add(xv, xv);
    let loss = tape.sum(y);
    let grads = tape.backward(loss);
    assert_eq!(grads.get(xv).unwrap(), Array2::from_elem((3, 2), 2.0));
}

/// `y = x - x` gives `dL/dx = G - G = 0` (accumulation of opposite contributions).
#[test]
fn sub_of_a_value_from_itself_gives_0() {
    let mut tape = ArrayTape::new();
    let xv = tape.param(array![[1.0, -3.0, 2.5]]);
    let y = tape.sub(xv, xv);
    let loss = weighted(&mut tape, y, &array![[2.0, -1.0, 0.5]]);
    let grads = tape.backward(loss);
    assert_eq!(grads.get(xv).unwrap(), Array2::zeros((1, 3)));
}

/// For every binary op with one constant operand, the constant gets `None` and the parameter gets
/// exactly the gradient it gets when both operands are parameters. Values computed from constants
/// only get `None` too.
#[test]
fn constants_get_no_gradient() {
    let mut r = rng(7);
    let a = uniform(&mut r, 3, 4, -2.0, 2.0);
    let b = uniform(&mut r, 3, 4, -2.0, 2.0);
    let bt = uniform(&mut r, 4, 5, -2.0, 2.0);
    let row = uniform(&mut r, 1, 4, -2.0, 2.0);
    type BinOp = fn(&mut Tape64, Var, Var) -> Var;
    let cases: [(&str, BinOp, &Array2<f64>, &Array2<f64>); 5] = [
        ("matmul", |t, x, y| t.matmul(x, y), &a, &bt),
        ("add_row", |t, x, y| t.add_row(x, y), &a, &row),
        ("add", |t, x, y| t.add(x, y), &a, &b),
        ("sub", |t, x, y| t.sub(x, y), &a, &b),
        ("mul", |t, x, y| t.mul(x, y), &a, &b),
    ];
    for (name, op, x, y) in cases {
        let run = |x_param: bool, y_param: bool| {
            let mut t = ArrayTape::new();
            let xv = if x_param { t.param(x.clone()) } else { t.constant(x.clone()) };
            let yv = if y_param { t.param(y.clone()) } else { t.constant(y.clone()) };
            let out = op(&mut t, xv, yv);
            let (rows, cols) = t.shape(out);
            let w = Array2::from_shape_fn((rows, cols), |(i, j)| (i as f64 + 1.0) * 0.5 - j as f64);
            let loss = weighted(&mut t, out, &w);
            let g = t.backward(loss);
            (g.get(xv), g.get(yv))
        };
        let (gx_full, gy_full) = run(true, true);
        let (gx, gy) = run(true, false);
        assert_eq!(gy, None, "{name}: constant right operand got a gradient");
        assert_eq!(gx, gx_full, "{name}: left gradient changed when the right operand is constant");
        let (gx, gy) = run(false, true);
        assert_eq!(gx, None, "{name}: constant left operand got a gradient");
        assert_eq!(gy, gy_full, "{name}: right gradient changed when the left operand is constant");
    }

    // A chain of constants: nothing along it gets a gradient; the parameter still does.
    let mut t = ArrayTape::new();
    let c = t.constant(a.clone());
    let c2 = t.square(c);
    let p = t.param(b.clone());
    let y = t.mul(c2, p);
    let loss = t.sum(y);
    let g = t.backward(loss);
    assert!(g.get(c).is_none() && g.get(c2).is_none());
    assert_eq!(g.get(p).unwrap(), &a * &a);
}

/// `Tape::backward` on a graph with a parameter the loss does not use returns `None` for it
/// (and the used one still gets `dL/dx = 1`).
#[test]
fn unused_param_gets_none() {
    let mut t = ArrayTape::new();
    let used = t.param(array![[1.0, 2.0]]);
    let unused = t.param(array![[3.0], [4.0]]);
    let also_unused = t.relu(unused);
    let loss = t.sum(used);
    let grads = t.backward(loss);
    assert!(grads.get(unused).is_none());
    assert!(grads.get(also_unused).is_none());
    assert_eq!(grads.get(used).unwrap(), array![[1.0, 1.0]]);
}

/// ReLU's derivative is taken as 0 at exactly `x = 0` (and at `-0.0`): with `L = sum(W * relu(x))`,
/// `dL/dx = W * 1[x > 0]`, so the elements at 0 get exactly 0.
#[test]
fn relu_derivative_at_zero_is_zero() {
    let x = array![[0.0, -0.0, 1.5, -2.0], [0.0, 3.0, 0.0, -1e-300]];
    let w = array![[5.0, -4.0, 3.0, 2.0], [-1.0, 0.5, 7.0, 9.0]];
    let mut t = ArrayTape::new();
    let xv = t.param(x);
    let y = t.relu(xv);
    assert_eq!(t.value(y), array![[0.0, 0.0, 1.5, 0.0], [0.0, 3.0, 0.0, 0.0]]);
    let loss = weighted(&mut t, y, &w);
    let grads = t.backward(loss);
    assert_eq!(grads.get(xv).unwrap(), array![[0.0, 0.0, 3.0, 0.0], [0.0, 0.5, 0.0, 0.0]]);
}
