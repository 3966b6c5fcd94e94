//! GEM's dual QP solver (crate::qp): against brute force over every active set, the KKT
//! conditions on problems up to 50 constraints, and degenerate inputs.

mod common;

use engram_cl::methods::qp::{gem_dual, kkt_violation, solve_gem_dual, QpError, QpSolver, OFFICIAL_REG};
use proptest::prelude::*;
use rand::Rng;

/// Solves the small dense system `m x = r` (`n x n`) by Gaussian elimination with partial
/// pivoting; `None` when singular.
fn gauss(mut m: Vec<f64>, mut r: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    for c in 0..n {
        let piv = (c..n).max_by(|&a, &b| m[a * n + c].abs().total_cmp(&m[b * n + c].abs()))?;
        if m[piv * n + c].abs() < 1e-300 {
            return None;
        }
        for j in 0..n {
            m.swap(c * n + j, piv * n + j);
        }
        r.swap(c, piv);
        for i in c + 1..n {
            let f = m[i * n + c] / m[c * n + c];
            for j in c..n {
                m[i * n + j] -= f * m[c * n + j];
            }
            r[i] -= f * r[c];
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|j| m[i * n + j] * x[j]).sum();
        x[i] = (r[i] - s) / m[i * n + i];
    }
    Some(x)
}

/// Brute force: for every subset F of variables off their bound, solve the stationarity
/// equations on F with the others at gamma; keep the subset whose solution is primal and dual
/// feasible. For a positive definite A exactly one subset qualifies (up to ties at zero).
fn brute_force(a: &[f64], b: &[f64], gamma: f64) -> Vec<f64> {
    let k = b.len();
    let mut best: Option<(f64, Vec<f64>)> = None;
    for mask in 0u32..(1 << k) {
        let f: Vec<usize> = (0..k).filter(|i| mask >> i & 1 == 1).collect();
        let n = f.len();
        let mut v = vec![gamma; k];
        if n > 0 {
            let m: Vec<f64> = f.iter().flat_map(|&i| f.iter().map(move |&j| a[i * k + j])).collect();
            // A_FF v_F = -b_F - A_F,S gamma
            let r: Vec<f64> = f
                .iter()
                .map(|&i| -b[i] - (0..k).filter(|j| mask >> j & 1 == 0).map(|j| a[i * k + j] * gamma).sum::<f64>())
                .collect();
            let Some(x) = gauss(m, r, n) else { continue };
            for (&i, xi) in f.iter().zip(x) {
                v[i] = xi;
            }
        }
        let viol = kkt_violation(a, b, gamma, &v);
        if best.as_ref().is_none_or(|(bv, _)| viol < *bv) {
            best = Some((viol, v));
        }
    }
    let (viol, v) = best.expect("at least the empty set");
    assert!(viol < 1e-9, "brute force found no KKT point ({viol})");
    v
}

/// A random GEM-like problem: k memory gradients of length p (some correlated with g so that
/// both active and inactive constraints occur), A = G G' + reg I, b = G g.
fn random_problem(rng: &mut impl Rng, k: usize, p: usize, reg: f64) -> (Vec<f64>, Vec<f64>, Vec<f32>, Vec<f32>) {
    let g: Vec<f32> = (0..p).map(|_| rng.random_range(-1.0..1.0f32)).collect();
    let mut gm = Vec::with_capacity(k * p);
    for _ in 0..k {
        let w = rng.random_range(-1.0..1.0f32);
        gm.extend(g.iter().map(|&x| w * x + rng.random_range(-1.0..1.0f32)));
    }
    let (a, b) = gem_dual(&gm, k, &g, reg);
    (a, b, gm, g)
}

fn objective(a: &[f64], b: &[f64], v: &[f64]) -> f64 {
    let k = b.len();
    let mut s = 0.0;
    for i in 0..k {
        for j in 0..k {
            s += 0.5 * v[i] * a[i * k + j] * v[j];
        }
        s += b[i] * v[i];
    }
    s
}

/// 1..8 constraints, random margins: the solver's v equals the brute-force minimiser to 1e-9
/// (relative), and its objective is never above it.
#[test]
fn matches_brute_force_on_small_problems() {
    let mut rng = common::rng(11);
    let mut solver = QpSolver::new();
    let mut active_seen = 0;
    let mut free_seen = 0;
    for trial in 0..400 {
        let k = 1 + trial % 8;
        let p = [3, 10, 50][trial % 3];
        let gamma = [0.0, 0.5, 0.1, 2.0][trial % 4];
        let (a, b, _, _) = random_problem(&mut rng, k, p, OFFICIAL_REG);
        let want = brute_force(&a, &b, gamma);
        let (v, stats) = solver.solve(&a, &b, gamma).expect("solvable");
        let scale = want.iter().fold(1f64, |m, x| m.max(x.abs()));
        for (x, y) in v.iter().zip(&want) {
            assert!((x - y).abs() <= 1e-9 * scale, "trial {trial}: k {k} gamma {gamma}: {v:?} vs {want:?}");
        }
        let (fo, fw) = (objective(&a, &b, v), objective(&a, &b, &want));
        assert!(fo <= fw + 1e-12 * fw.abs().max(1.0), "objective {fo} above brute force {fw}");
        free_seen += stats.free;
        active_seen += k - stats.free;
    }
    // The random problems exercise both sides of the bound.
    assert!(free_seen > 100 && active_seen > 100, "free {free_seen}, at bound {active_seen}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Up to 50 constraints: stationarity (lambda = A v + b), v >= gamma, lambda >= 0 and
    /// lambda_i (v_i - gamma) = 0, each to 1e-9 relative to the size of its terms.
    #[test]
    fn kkt_holds_up_to_50_constraints(
        k in 1usize..=50,
        p in 5usize..200,
        gamma in prop_oneof![Just(0.0), Just(0.5), 0.0f64..3.0],
        reg in prop_oneof![Just(OFFICIAL_REG), Just(1e-6), Just(1.0)],
        seed in any::<u64>(),
    ) {
        let mut rng = common::rng(seed);
        let (a, b, _, _) = random_problem(&mut rng, k, p, reg);
        let mut solver = QpSolver::new();
        let (v, stats) = solver.solve(&a, &b, gamma).expect("solvable");
        let v = v.to_vec();
        let viol = kkt_violation(&a, &b, gamma, &v);
        prop_assert!(viol <= 1e-9, "KKT violation {viol}");
        prop_assert!(v.iter().all(|&x| x >= gamma));
        // The same conditions spelt out.
        for i in 0..k {
            let lambda: f64 = (0..k).map(|j| a[i * k + j] * v[j]).sum::<f64>() + b[i];
            let s: f64 = (0..k).map(|j| (a[i * k + j] * v[j]).abs()).sum::<f64>() + b[i].abs();
            prop_assert!(lambda >= -1e-9 * s, "dual infeasible at {i}: {lambda}");
            prop_assert!((lambda * (v[i] - gamma)).abs() <= 1e-9 * s * v[i].abs().max(1.0), "slackness at {i}");
        }
        prop_assert_eq!(stats.kkt, viol);
    }
}

/// GEM's projected gradient z = G'v + g with gamma = 0 and no ridge is the projection of g onto
/// {z : G z >= 0}: G z >= 0 and <z - g, z> = 0 (the optimality of the primal, paper Eq. 10).
#[test]
fn zero_margin_gives_the_primal_projection() {
    let mut rng = common::rng(3);
    for k in [1, 2, 5, 12] {
        let (_, _, gm, g) = random_problem(&mut rng, k, 64, 0.0);
        let v = solve_gem_dual(&gm, k, &g, 0.0, 0.0).expect("solvable");
        let z: Vec<f64> =
            (0..64).map(|p| g[p] as f64 + (0..k).map(|i| v[i] * gm[i * 64 + p] as f64).sum::<f64>()).collect();
        let gz_scale: f64 = z.iter().map(|x| x * x).sum::<f64>().sqrt();
        for i in 0..k {
            let d: f64 = (0..64).map(|p| gm[i * 64 + p] as f64 * z[p]).sum();
            assert!(d >= -1e-9 * gz_scale * 10.0, "k {k}: constraint {i} violated: {d}");
        }
        let cross: f64 = (0..64).map(|p| (z[p] - g[p] as f64) * z[p]).sum();
        assert!(cross.abs() <= 1e-8 * gz_scale * gz_scale, "k {k}: <z - g, z> = {cross}");
    }
}

/// Zero gradients: A = reg I, b = 0; the minimiser is v = gamma (every variable at its bound).
#[test]
fn zero_gradients() {
    for k in [1, 3, 20] {
        let gm = vec![0f32; k * 30];
        let g = vec![0f32; 30];
        let v = solve_gem_dual(&gm, k, &g, 0.5, OFFICIAL_REG).expect("solvable");
        assert_eq!(v, vec![0.5; k]);
        // No ridge at all: A = 0, b = 0, every v >= gamma is optimal; the solver returns one.
        let v = solve_gem_dual(&gm, k, &g, 0.5, 0.0).expect("solvable");
        assert!(v.iter().all(|&x| x >= 0.5));
        // A zero batch gradient with non-zero memories: b = 0, gamma = 0: v = 0.
        let mut rng = common::rng(k as u64);
        let gm: Vec<f32> = (0..k * 30).map(|_| rng.random_range(-1.0..1.0f32)).collect();
        let v = solve_gem_dual(&gm, k, &g, 0.0, OFFICIAL_REG).expect("solvable");
        assert!(v.iter().all(|&x| x.abs() < 1e-12), "{v:?}");
    }
}

/// Parallel and anti-parallel memory gradients make G G' singular (rank 1); with and without the
/// ridge the solver returns a KKT point and the projected gradient satisfies every constraint.
#[test]
fn parallel_and_antiparallel_memories() {
    let p = 40;
    let mut rng = common::rng(5);
    let base: Vec<f32> = (0..p).map(|_| rng.random_range(-1.0..1.0f32)).collect();
    // g points against base.
    let g: Vec<f32> = base.iter().map(|&x| -x + 0.1 * rng.random_range(-1.0..1.0f32)).collect();
    for (name, scales) in [
        ("parallel", vec![1.0f32, 2.0, 0.5]),
        ("identical", vec![1.0, 1.0, 1.0, 1.0]),
        ("anti-parallel", vec![1.0, -1.0]),
        ("mixed", vec![1.0, -2.0, 3.0]),
    ] {
        let k = scales.len();
        let gm: Vec<f32> = scales.iter().flat_map(|&s| base.iter().map(move |&x| s * x)).collect();
        for reg in [0.0, OFFICIAL_REG] {
            for gamma in [0.0, 0.5] {
                let (a, b) = gem_dual(&gm, k, &g, reg);
                let mut solver = QpSolver::new();
                let (v, _) =
                    solver.solve(&a, &b, gamma).unwrap_or_else(|e| panic!("{name} reg {reg} gamma {gamma}: {e}"));
                let v = v.to_vec();
                assert!(kkt_violation(&a, &b, gamma, &v) <= 1e-9, "{name} reg {reg} gamma {gamma}");
                if reg == 0.0 && gamma == 0.0 {
                    // Primal feasibility of z = G'v + g: G z = A v + b = lambda >= 0.
                    let z: Vec<f64> = (0..p)
                        .map(|q| g[q] as f64 + (0..k).map(|i| v[i] * gm[i * p + q] as f64).sum::<f64>())
                        .collect();
                    for i in 0..k {
                        let d: f64 = (0..p).map(|q| gm[i * p + q] as f64 * z[q]).sum();
                        assert!(d >= -1e-9, "{name}: constraint {i}: {d}");
                    }
                    if name == "anti-parallel" || name == "mixed" {
                        // Both g_1 and -g_1 constrain: z must be orthogonal to base.
                        let d: f64 = (0..p).map(|q| base[q] as f64 * z[q]).sum();
                        assert!(d.abs() < 1e-9, "{name}: <base, z> = {d}");
                    }
                }
            }
        }
    }
}

/// G G' singular because there are more memories than parameters (k = 12 > p = 4).
#[test]
fn more_constraints_than_parameters() {
    let mut rng = common::rng(9);
    for trial in 0..50 {
        let (a, b, _, _) = random_problem(&mut rng, 12, 4, if trial % 2 == 0 { 0.0 } else { OFFICIAL_REG });
        let mut solver = QpSolver::new();
        let (v, _) = solver.solve(&a, &b, 0.5).expect("solvable");
        let v = v.to_vec();
        assert!(kkt_violation(&a, &b, 0.5, &v) <= 1e-9);
    }
}

/// Bad input is an error, never a panic: wrong shape, NaN, infinite values, a negative diagonal,
/// an unbounded problem.
#[test]
fn bad_inputs_are_errors() {
    let mut s = QpSolver::new();
    assert!(matches!(s.solve(&[1.0; 3], &[1.0, 2.0], 0.0), Err(QpError::Shape { .. })));
    assert_eq!(s.solve(&[f64::NAN], &[1.0], 0.0).unwrap_err(), QpError::NonFinite);
    assert_eq!(s.solve(&[1.0], &[f64::INFINITY], 0.0).unwrap_err(), QpError::NonFinite);
    assert_eq!(s.solve(&[1.0], &[1.0], f64::NAN).unwrap_err(), QpError::NonFinite);
    assert_eq!(s.solve(&[-1.0], &[1.0], 0.0).unwrap_err(), QpError::NotPositiveSemidefinite);
    // Unbounded: A = 0 and b < 0 (v can grow forever).
    assert!(s.solve(&[0.0], &[-1.0], 0.0).is_err());
    // Empty problem: nothing to solve.
    let (v, _) = s.solve(&[], &[], 0.5).expect("empty");
    assert!(v.is_empty());
}

/// The solver reuses its buffers: solving a small problem after a large one gives the same answer
/// as a fresh solver.
#[test]
fn reused_solver_agrees_with_a_fresh_one() {
    let mut rng = common::rng(21);
    let mut reused = QpSolver::new();
    for k in [30, 3, 17, 1, 8] {
        let (a, b, _, _) = random_problem(&mut rng, k, 25, OFFICIAL_REG);
        let v1 = reused.solve(&a, &b, 0.5).expect("ok").0.to_vec();
        let v2 = QpSolver::new().solve(&a, &b, 0.5).expect("ok").0.to_vec();
        assert_eq!(v1, v2);
    }
}
