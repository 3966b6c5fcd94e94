//! The dual quadratic program of Gradient Episodic Memory, solved in `f64` by our own
//! active-set method (no external QP crate).
//!
//! GEM (Lopez-Paz & Ranzato 2017) projects the proposed gradient `g` onto the cone of gradients
//! that do not increase the loss on any past task's memory. Its primal problem (paper, Eq. 10)
//!
//! ```text
//!     min_z  1/2 ||g - z||^2   subject to   G z >= 0         (rows of G: the memory gradients g_k)
//! ```
//!
//! has the dual (paper, Eq. 11 and 12)
//!
//! ```text
//!     min_v  1/2 v' G G' v + g' G' v   subject to   v >= 0,      then   z = G' v + g.
//! ```
//!
//! The paper's code replaces the bound `v >= 0` by `v >= gamma` (`memory_strength`, the margin
//! that biases the step towards the memories) and adds `1e-3` to the diagonal of `G G'` before
//! calling quadprog. [`gem_dual`] builds exactly that problem, `A = G G' + reg I`, `b = G g`,
//! with `reg` chosen by the caller (GEM uses [`OFFICIAL_REG`] = `1e-3`, as the official
//! code); [`QpSolver::solve`] solves
//!
//! ```text
//!     min_v  1/2 v' A v + b' v   subject to   v_i >= gamma  for every i
//! ```
//!
//! for a symmetric positive semi-definite `A` of up to a few dozen constraints.
//!
//! # Method
//! With `u = v - gamma 1` the problem is the bound-constrained QP `min 1/2 u'Au + c'u, u >= 0`,
//! `c = b + A gamma 1`. We solve it with the primal active-set method of Lawson & Hanson (1974,
//! NNLS, Ch. 23) generalised to a quadratic objective: a "free" set `F` of variables away from
//! their bound; each outer iteration frees the bound variable with the most negative gradient,
//! each inner iteration solves the equality-constrained problem on `F` (`A_FF u_F = -c_F`, by
//! Cholesky) and steps towards it as far as feasibility allows, dropping variables that reach
//! their bound. For a positive definite `A` the objective decreases strictly and no free set
//! repeats, so the method terminates; the answer is the unique minimiser. For a singular `A`
//! (e.g. `reg = 0` and linearly dependent memory gradients) a variable whose column is dependent
//! on the free ones is never freed (its gradient is zero up to rounding, or its Cholesky pivot
//! vanishes), which keeps every solve well posed; the returned `v` is then one of the minimisers
//! (all give the same `z = G'v + g`). The final free set is polished by one step of iterative
//! refinement, and the KKT conditions are checked before the answer is returned.

use engram_tape::cpu::{dot_f64, gram_f64};
use std::fmt;

/// The ridge the official GEM code adds to the diagonal of `G G'` (`eps = 1e-3` in
/// `project2cone2`).
pub const OFFICIAL_REG: f64 = 1e-3;

/// Why the QP was not solved.
#[derive(Clone, Debug, PartialEq)]
pub enum QpError {
    /// `a` is not `k x k` for `k = b.len()`.
    Shape {
        /// Entries of `a`.
        a_len: usize,
        /// Entries of `b`.
        b_len: usize,
    },
    /// An input (or gamma) is NaN or infinite.
    NonFinite,
    /// `A` is not symmetric positive semi-definite (a negative diagonal entry or a negative
    /// curvature direction was met).
    NotPositiveSemidefinite,
    /// The iteration limit was reached.
    NoConvergence {
        /// Iterations done.
        iterations: usize,
    },
    /// The answer violates the KKT conditions by more than the tolerance (e.g. the problem is
    /// unbounded below: `A` singular and `b` not in its range).
    KktViolated {
        /// The largest scaled violation.
        violation: f64,
    },
}

impl fmt::Display for QpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape { a_len, b_len } => {
                write!(f, "QP: A has {a_len} entries, expected {b_len} x {b_len}")
            }
            Self::NonFinite => write!(f, "QP: an input is not a finite number"),
            Self::NotPositiveSemidefinite => write!(f, "QP: the matrix is not positive semi-definite"),
            Self::NoConvergence { iterations } => write!(f, "QP: no convergence after {iterations} iterations"),
            Self::KktViolated { violation } => {
                write!(f, "QP: the answer violates the optimality conditions by {violation:.3e} (unbounded problem?)")
            }
        }
    }
}

impl std::error::Error for QpError {}

/// Diagnostics of a solve.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct QpStats {
    /// Linear solves done (inner iterations).
    pub iterations: usize,
    /// Variables strictly above their bound at the answer.
    pub free: usize,
    /// Largest KKT violation, scaled by the problem's magnitude (see [`kkt_violation`]).
    pub kkt: f64,
}

/// A reusable solver: its buffers grow to the largest problem seen and are never reallocated for
/// smaller or equal ones (the GEM step calls it at every projected step).
#[derive(Clone, Debug, Default)]
pub struct QpSolver {
    u: Vec<f64>,
    c: Vec<f64>,
    w: Vec<f64>,
    z: Vec<f64>,
    free: Vec<bool>,
    blocked: Vec<bool>,
    idx: Vec<usize>,
    chol: Vec<f64>,
    rhs: Vec<f64>,
    v: Vec<f64>,
    /// Largest scaled KKT violation accepted ([`QpSolver::solve`] fails beyond it).
    pub kkt_tolerance: f64,
}

/// The symmetric matrix `A` (row-major `k x k`) times `x`, into `out`.
fn mat_vec(a: &[f64], k: usize, x: &[f64], out: &mut [f64]) {
    for (i, o) in out.iter_mut().enumerate().take(k) {
        let row = &a[i * k..(i + 1) * k];
        *o = row.iter().zip(x).map(|(p, q)| p * q).sum();
    }
}

/// The largest violation of the KKT conditions of `min 1/2 v'Av + b'v, v >= gamma` at `v`,
/// each scaled by the magnitude of the terms it compares:
///
/// * stationarity and dual feasibility: `lambda = A v + b >= 0` (the bound's multiplier),
/// * primal feasibility: `v >= gamma`,
/// * complementary slackness: `lambda_i (v_i - gamma) = 0`.
///
/// The scale of entry `i` is `s_i = sum_j |A_ij v_j| + |b_i|` (the size of the terms of
/// `lambda_i`, so a relative violation), `max(1, |gamma|, max |v|)` for the bound.
pub fn kkt_violation(a: &[f64], b: &[f64], gamma: f64, v: &[f64]) -> f64 {
    let k = b.len();
    let vscale = v.iter().fold(1f64.max(gamma.abs()), |m, x| m.max(x.abs()));
    let mut worst = 0f64;
    for i in 0..k {
        let row = &a[i * k..(i + 1) * k];
        let lambda: f64 = row.iter().zip(v).map(|(p, q)| p * q).sum::<f64>() + b[i];
        let s = row.iter().zip(v).map(|(p, q)| (p * q).abs()).sum::<f64>() + b[i].abs() + f64::MIN_POSITIVE;
        let slack = v[i] - gamma;
        worst = worst.max((-lambda).max(0.0) / s);
        worst = worst.max((-slack).max(0.0) / vscale);
        worst = worst.max((lambda / s).abs().min(slack.abs() / vscale));
    }
    worst
}

impl QpSolver {
    /// A solver with the default tolerance (`1e-9`, scaled as in [`kkt_violation`]).
    pub fn new() -> Self {
        Self { kkt_tolerance: 1e-9, ..Self::default() }
    }

    /// Solves `min_v 1/2 v'Av + b'v` subject to `v_i >= gamma` (GEM's dual, paper Eq. 11 with
    /// the official code's margin `gamma`). `a` is row-major `k x k` with `k = b.len()`,
    /// symmetric positive semi-definite. Returns the minimiser (borrowed from the solver) and
    /// diagnostics.
    pub fn solve(&mut self, a: &[f64], b: &[f64], gamma: f64) -> Result<(&[f64], QpStats), QpError> {
        let k = b.len();
        if a.len() != k * k {
            return Err(QpError::Shape { a_len: a.len(), b_len: k });
        }
        if !gamma.is_finite() || a.iter().chain(b).any(|x| !x.is_finite()) {
            return Err(QpError::NonFinite);
        }
        if (0..k).any(|i| a[i * k + i] < 0.0) {
            return Err(QpError::NotPositiveSemidefinite);
        }
        for buf in [&mut self.u, &mut self.c, &mut self.w, &mut self.z, &mut self.rhs, &mut self.v] {
            buf.clear();
            buf.resize(k, 0.0);
        }
        self.free.clear();
        self.free.resize(k, false);
        self.blocked.clear();
        self.blocked.resize(k, false);
        self.chol.clear();
        self.chol.resize(k * k, 0.0);
        // c = b + A gamma 1
        for i in 0..k {
            self.c[i] = b[i] + gamma * a[i * k..(i + 1) * k].iter().sum::<f64>();
        }
        let amax = a.iter().fold(0f64, |m, x| m.max(x.abs()));
        let cmax = self.c.iter().fold(0f64, |m, x| m.max(x.abs()));
        let max_outer = 10 * k + 50;
        let max_inner = 10 * k * k + 100;
        let mut inner_total = 0usize;
        let mut outer = 0usize;
        loop {
            outer += 1;
            if outer > max_outer {
                return Err(QpError::NoConvergence { iterations: inner_total });
            }
            // w = -(A u + c): the negative gradient; a bound variable with w_j > 0 should move.
            mat_vec(a, k, &self.u, &mut self.w);
            let umax = self.u.iter().fold(1f64, |m, x| m.max(x.abs()));
            let tol = 1e-13 * (amax * umax + cmax) * (k as f64).max(1.0);
            let mut best = None;
            let mut best_w = tol;
            for j in 0..k {
                let wj = -(self.w[j] + self.c[j]);
                if !self.free[j] && !self.blocked[j] && wj > best_w {
                    best_w = wj;
                    best = Some(j);
                }
            }
            let Some(j) = best else { break };
            self.free[j] = true;
            let mut first = true;
            loop {
                inner_total += 1;
                if inner_total > max_inner {
                    return Err(QpError::NoConvergence { iterations: inner_total });
                }
                // Equality-constrained minimiser on the free set: A_FF z_F = -c_F.
                if !self.solve_free(a, k, amax)? {
                    // Singular pivot: j's column depends on the free ones; keep it at its bound.
                    self.free[j] = false;
                    self.blocked[j] = true;
                    break;
                }
                let all_positive = self.idx.iter().all(|&i| self.z[i] > 0.0);
                if all_positive {
                    for &i in &self.idx {
                        self.u[i] = self.z[i];
                    }
                    // Progress made: previously blocked variables may be tried again.
                    self.blocked.iter_mut().for_each(|b| *b = false);
                    break;
                }
                // Step from u towards z until the first free variable reaches its bound (it
                // leaves the free set exactly, whatever the rounding of the step).
                let mut alpha = f64::INFINITY;
                let mut hit = j;
                for &i in &self.idx {
                    if self.z[i] <= 0.0 {
                        let d = self.u[i] - self.z[i];
                        let ratio = if d > 0.0 { self.u[i] / d } else { 0.0 };
                        if ratio < alpha {
                            alpha = ratio;
                            hit = i;
                        }
                    }
                }
                let alpha = alpha.min(1.0);
                if first && alpha <= 0.0 && hit == j {
                    // The freed variable would go straight back (rounding): do not retry it
                    // until the iterate changes.
                    self.free[j] = false;
                    self.blocked[j] = true;
                    break;
                }
                first = false;
                for &i in &self.idx {
                    self.u[i] += alpha * (self.z[i] - self.u[i]);
                    if self.u[i] <= 0.0 {
                        self.u[i] = 0.0;
                        self.free[i] = false;
                    }
                }
                self.u[hit] = 0.0;
                self.free[hit] = false;
                if !self.free.iter().any(|&f| f) {
                    break;
                }
            }
        }
        // Polish: one step of iterative refinement on the final free set.
        if self.free.iter().any(|&f| f) && self.solve_free(a, k, amax)? {
            let _ = self.refine(a, k);
        }
        for i in 0..k {
            self.v[i] = self.u[i] + gamma;
        }
        let kkt = kkt_violation(a, b, gamma, &self.v);
        if kkt.is_nan() || kkt > self.kkt_tolerance.max(1e-12) {
            return Err(QpError::KktViolated { violation: kkt });
        }
        let stats = QpStats { iterations: inner_total, free: self.free.iter().filter(|&&f| f).count(), kkt };
        Ok((&self.v, stats))
    }

    /// Factorises `A_FF` (Cholesky) into `self.chol` and solves `A_FF z_F = -c_F` into `self.z`.
    /// Returns `Ok(false)` on a vanishing pivot (singular `A_FF`).
    fn solve_free(&mut self, a: &[f64], k: usize, amax: f64) -> Result<bool, QpError> {
        self.idx.clear();
        self.idx.extend((0..k).filter(|&i| self.free[i]));
        let n = self.idx.len();
        let l = &mut self.chol;
        let pivot_floor = 1e-13 * amax.max(f64::MIN_POSITIVE) * n as f64;
        for (ci, &i) in self.idx.iter().enumerate() {
            for (cj, &j) in self.idx.iter().enumerate().take(ci + 1) {
                let mut s = a[i * k + j];
                for p in 0..cj {
                    s -= l[ci * n + p] * l[cj * n + p];
                }
                if ci == cj {
                    if s < -pivot_floor * 1e3 && s < -1e-8 * a[i * k + i].abs() {
                        return Err(QpError::NotPositiveSemidefinite);
                    }
                    if s <= pivot_floor {
                        return Ok(false);
                    }
                    l[ci * n + ci] = s.sqrt();
                } else {
                    l[ci * n + cj] = s / l[cj * n + cj];
                }
            }
        }
        for (ci, &i) in self.idx.iter().enumerate() {
            self.rhs[ci] = -self.c[i];
        }
        self.chol_solve(n);
        self.z.iter_mut().for_each(|z| *z = 0.0);
        for (ci, &i) in self.idx.iter().enumerate() {
            self.z[i] = self.rhs[ci];
        }
        Ok(true)
    }

    /// Solves `L L' x = rhs` in place (first `n` entries of `self.rhs`).
    fn chol_solve(&mut self, n: usize) {
        let l = &self.chol;
        let x = &mut self.rhs;
        for i in 0..n {
            let mut s = x[i];
            for p in 0..i {
                s -= l[i * n + p] * x[p];
            }
            x[i] = s / l[i * n + i];
        }
        for i in (0..n).rev() {
            let mut s = x[i];
            for p in i + 1..n {
                s -= l[p * n + i] * x[p];
            }
            x[i] = s / l[i * n + i];
        }
    }

    /// `u_F = z_F + correction` where the correction solves `A_FF d = -c_F - A_FF z_F` (one step of
    /// iterative refinement), if the result stays feasible.
    fn refine(&mut self, a: &[f64], k: usize) -> bool {
        let n = self.idx.len();
        for (ci, &i) in self.idx.iter().enumerate() {
            let row = &a[i * k..(i + 1) * k];
            let az: f64 = self.idx.iter().map(|&j| row[j] * self.z[j]).sum();
            self.rhs[ci] = -self.c[i] - az;
        }
        self.chol_solve(n);
        let ok = self.idx.iter().enumerate().all(|(ci, &i)| self.z[i] + self.rhs[ci] > 0.0);
        if ok {
            for (ci, &i) in self.idx.iter().enumerate() {
                self.u[i] = self.z[i] + self.rhs[ci];
            }
        } else if self.idx.iter().all(|&i| self.z[i] > 0.0) {
            for &i in &self.idx {
                self.u[i] = self.z[i];
            }
        }
        ok
    }
}

/// GEM's dual problem for the memory gradients `g_mem` (`k` rows of `p` entries, row-major) and
/// the proposed gradient `g`: `A = G G' + reg I` (row-major `k x k`) and `b = G g`, both
/// accumulated in `f64` from the `f32` entries (every product is exact in `f64`).
pub fn gem_dual(g_mem: &[f32], k: usize, g: &[f32], reg: f64) -> (Vec<f64>, Vec<f64>) {
    let p = g.len();
    assert_eq!(g_mem.len(), k * p, "gem_dual: {} entries for {k} gradients of {p}", g_mem.len());
    let mut a = vec![0f64; k * k];
    let mut b = vec![0f64; k];
    gram_f64(g_mem, k, p, &mut a);
    for i in 0..k {
        a[i * k + i] += reg;
        b[i] = dot_f64(&g_mem[i * p..(i + 1) * p], g);
    }
    (a, b)
}

/// Solves GEM's dual for `g_mem` and `g` (see [`gem_dual`]) with margin `gamma` and ridge `reg`,
/// returning `v` (allocating; GEM keeps a [`QpSolver`] between steps instead).
pub fn solve_gem_dual(g_mem: &[f32], k: usize, g: &[f32], gamma: f64, reg: f64) -> Result<Vec<f64>, QpError> {
    let (a, b) = gem_dual(g_mem, k, g, reg);
    let mut s = QpSolver::new();
    s.solve(&a, &b, gamma).map(|(v, _)| v.to_vec())
}
