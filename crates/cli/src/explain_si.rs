//! `engram explain-si`: Synaptic Intelligence on the quadratic toy problem of the SI paper's
//! theory section, every number printed.
//!
//! The loss is `E(theta) = 1/2 (theta - theta*)' H (theta - theta*)`. Plain gradient descent
//! from `theta(0) = theta* + delta` follows `theta(t) - theta* = (I - lr H)^t delta`. SI credits
//! each parameter with `omega_k = -sum_t g_k(t) (theta_k(t+1) - theta_k(t))` (its share of the
//! loss drop, the path integral) and sets `Omega_k = omega_k / (Delta_k^2 + xi)`.
//!
//! Averaged over random starts `delta ~ N(0, sigma^2 I)` (gradient flow, lr -> 0):
//! `E[omega_k] = sigma^2 / 2 * H_kk` and `E[Delta_k^2] = sigma^2`, so `Omega_k ~ H_kk / 2`:
//! SI's importance estimates half the diagonal of the Hessian, and the penalty
//! `c sum_k Omega_k (theta_k - theta*_k)^2` with `c = 1` is the diagonal part of the old loss.
//! With a finite step the exact expectation is `E[omega] = sigma^2 diag(H (2I - lr H)^-1)`.
//! The walk-through runs the real fused step (`engram_si::fused_step_f32`, SGD, `c = 0`,
//! importance accumulation on) and the real consolidation (`engram_si::end_of_task`).

use anyhow::{bail, Result};
use clap::Args;
use engram_si::{end_of_task, fused_step_f32, OmegaGrad, Optimizer, ReluPlacement, Slices, StepConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr_free::normal;

/// Arguments of `engram explain-si`.
#[derive(Args, Debug, Clone)]
pub struct ExplainSiArgs {
    /// Number of parameters of the toy problem.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub dim: usize,
    /// Coupling rho of the Hessian H = D^1/2 ((1 - rho) I + rho 11') D^1/2 (0: diagonal H; must
    /// lie in [0, 1)). The diagonal of H is D, geometric from 0.1 to 4.
    #[arg(long, default_value_t = 0.5, value_name = "RHO")]
    pub coupling: f64,
    /// Learning rate of gradient descent (lr times the largest eigenvalue of H must stay below 2).
    #[arg(long, default_value_t = 0.02)]
    pub lr: f64,
    /// Gradient-descent steps (enough to converge: several times 1 / (lr * smallest eigenvalue)).
    #[arg(long, default_value_t = 5000)]
    pub steps: usize,
    /// Random starts averaged in the expectation tables.
    #[arg(long, default_value_t = 2000, value_name = "M")]
    pub starts: usize,
    /// Spread sigma of the starts: theta(0) - theta* ~ N(0, sigma^2 I).
    #[arg(long, default_value_t = 1.0)]
    pub sigma: f64,
    /// SI's damping xi in Omega = omega / (Delta^2 + xi).
    #[arg(long, default_value_t = 1e-3)]
    pub xi: f64,
    /// Adam's learning rate in the last section (the SI paper trains with Adam).
    #[arg(long, default_value_t = 1e-3)]
    pub adam_lr: f64,
    /// Seed of the starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// A tiny, dependency-free standard normal (Box-Muller) on the project's seeded RNG.
mod rand_distr_free {
    use rand::Rng;
    /// One draw of N(0, 1).
    pub fn normal(rng: &mut impl Rng) -> f64 {
        let u1: f64 = rng.random::<f64>().max(1e-300);
        let u2: f64 = rng.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// The toy problem.
#[derive(Clone, Debug)]
pub struct Toy {
    /// H, row-major `n x n`.
    pub h: Vec<f64>,
    /// Dimension.
    pub n: usize,
}

impl Toy {
    /// `H = D^1/2 ((1 - rho) I + rho 11') D^1/2`, `D` geometric from 0.1 to 4.
    pub fn new(n: usize, rho: f64) -> Toy {
        let d: Vec<f64> =
            (0..n).map(|k| if n == 1 { 1.0 } else { 0.1 * 40f64.powf(k as f64 / (n - 1) as f64) }).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let c = if i == j { 1.0 } else { rho };
                h[i * n + j] = c * (d[i] * d[j]).sqrt();
            }
        }
        Toy { h, n }
    }

    fn hkk(&self, k: usize) -> f64 {
        self.h[k * self.n + k]
    }

    /// `H u`.
    fn mul(&self, u: &[f64]) -> Vec<f64> {
        (0..self.n).map(|i| (0..self.n).map(|j| self.h[i * self.n + j] * u[j]).sum()).collect()
    }

    /// `E = 1/2 u' H u` with `u = theta - theta*`.
    pub fn energy(&self, u: &[f64]) -> f64 {
        0.5 * u.iter().zip(self.mul(u)).map(|(a, b)| a * b).sum::<f64>()
    }

    /// Largest and smallest eigenvalue (power iteration on H and on lmax I - H).
    pub fn eig_range(&self) -> (f64, f64) {
        let power = |f: &dyn Fn(&[f64]) -> Vec<f64>| {
            let mut v = vec![1.0; self.n];
            v[0] = 1.3;
            let mut lam = 0.0;
            for _ in 0..5000 {
                let w = f(&v);
                let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
                lam = v.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() / v.iter().map(|x| x * x).sum::<f64>();
                v = w.iter().map(|x| x / norm).collect();
            }
            lam
        };
        let lmax = power(&|u| self.mul(u));
        let shifted = power(&|u| {
            let hu = self.mul(u);
            u.iter().zip(hu).map(|(a, b)| lmax * a - b).collect()
        });
        (lmax, lmax - shifted)
    }

    /// The exact expectation over `delta ~ N(0, I)` of gradient descent's path integral for
    /// each parameter, `lr sum_t diag(H A^t A^t' H)` with `A = I - lr H`, and of `Delta_k^2`,
    /// `diag((I - A^T)(I - A^T)')`.
    pub fn discrete_theory(&self, lr: f64, steps: usize) -> (Vec<f64>, Vec<f64>) {
        let n = self.n;
        let matmul = |a: &[f64], b: &[f64]| {
            let mut c = vec![0.0; n * n];
            for i in 0..n {
                for k in 0..n {
                    let aik = a[i * n + k];
                    for j in 0..n {
                        c[i * n + j] += aik * b[k * n + j];
                    }
                }
            }
            c
        };
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = f64::from(u8::from(i == j)) - lr * self.h[i * n + j];
            }
        }
        // B_t = H A^t; omega_k = lr sum_t (B_t B_t')_kk.
        let mut b = self.h.clone();
        let mut om = vec![0.0; n];
        for _ in 0..steps {
            for (k, o) in om.iter_mut().enumerate() {
                *o += lr * (0..n).map(|j| b[k * n + j] * b[k * n + j]).sum::<f64>();
            }
            b = matmul(&b, &a);
        }
        // A^T = I - lr sum H A^t...: compute directly.
        let mut at = vec![0.0; n * n];
        for i in 0..n {
            at[i * n + i] = 1.0;
        }
        for _ in 0..steps {
            at = matmul(&at, &a);
        }
        let delta2 = (0..n)
            .map(|k| (0..n).map(|j| (f64::from(u8::from(k == j)) - at[k * n + j]).powi(2)).sum::<f64>())
            .collect();
        (om, delta2)
    }
}

/// What gradient descent from `starts` random points gave, per start and parameter.
#[derive(Clone, Debug)]
pub struct Walk {
    /// `omega[s * n + k]`: the path integral of parameter `k` from start `s`.
    pub omega: Vec<f64>,
    /// `Omega[s * n + k]` after `end_of_task` (no relu).
    pub big_omega: Vec<f64>,
    /// `Delta[s * n + k] = theta(end) - theta(start)`.
    pub delta: Vec<f64>,
    /// `theta(0) - theta*` per start and parameter.
    pub start: Vec<f64>,
    /// `E(theta(0)) - E(theta(end))` per start.
    pub drop: Vec<f64>,
    /// `E` per start at the checkpoints `(step, E, sum omega so far)`, for start 0 only.
    pub trace: Vec<(usize, f64, f64)>,
}

/// Runs `steps` steps of `optimizer` from `starts` random points, all at once: the parameters of
/// every start sit side by side in one vector, so one call of the fused step moves them all.
pub fn walk(toy: &Toy, optimizer: Optimizer, steps: usize, starts: usize, sigma: f64, xi: f64, seed: u64) -> Walk {
    let n = toy.n;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let u0: Vec<f64> = (0..n * starts).map(|_| sigma * normal(&mut rng)).collect();
    // theta* = 0: theta is the displacement u.
    let mut theta: Vec<f32> = u0.iter().map(|&x| x as f32).collect();
    let len = theta.len();
    let mut omega = vec![0f32; len];
    let adam = matches!(optimizer, Optimizer::Adam { .. });
    let (mut m, mut v) = if adam { (vec![0f32; len], vec![0f32; len]) } else { (Vec::new(), Vec::new()) };
    let mut g = vec![0f32; len];
    let checkpoints = [0, 1, 10, 100, 1000, steps];
    let mut trace = Vec::new();
    let energy0 = |th: &[f32]| toy.energy(&th[..n].iter().map(|&x| x as f64).collect::<Vec<_>>());
    for t in 0..steps {
        if checkpoints.contains(&t) {
            trace.push((t, energy0(&theta), omega[..n].iter().map(|&x| x as f64).sum()));
        }
        for s in 0..starts {
            let u: Vec<f64> = theta[s * n..(s + 1) * n].iter().map(|&x| x as f64).collect();
            for (gk, hu) in g[s * n..(s + 1) * n].iter_mut().zip(toy.mul(&u)) {
                *gk = hu as f32;
            }
        }
        let cfg = StepConfig { optimizer, c: 0.0, omega: Some(OmegaGrad::Task), t: t as u64 + 1 };
        fused_step_f32(
            Slices {
                theta: &mut theta,
                g: &g,
                big_omega: &[],
                theta_star: &[],
                omega: &mut omega,
                m: &mut m,
                v: &mut v,
            },
            &cfg,
        );
    }
    trace.push((steps, energy0(&theta), omega[..n].iter().map(|&x| x as f64).sum()));
    let omega_f64: Vec<f64> = omega.iter().map(|&x| x as f64).collect();
    let mut big = vec![0f32; len];
    let mut star: Vec<f32> = u0.iter().map(|&x| x as f32).collect(); // the task's start point
    let delta: Vec<f64> = theta.iter().zip(&star).map(|(&a, &b)| (a - b) as f64).collect();
    end_of_task(&theta, &mut omega, &mut big, &mut star, xi as f32, ReluPlacement::None);
    let drop = (0..starts)
        .map(|s| {
            let a: Vec<f64> = u0[s * n..(s + 1) * n].to_vec();
            let b: Vec<f64> = theta[s * n..(s + 1) * n].iter().map(|&x| x as f64).collect();
            toy.energy(&a) - toy.energy(&b)
        })
        .collect();
    Walk { start: u0, omega: omega_f64, big_omega: big.iter().map(|&x| x as f64).collect(), delta, drop, trace }
}

fn col_mean(x: &[f64], n: usize, k: usize) -> f64 {
    let m = x.len() / n;
    (0..m).map(|s| x[s * n + k]).sum::<f64>() / m as f64
}

fn col_median(x: &[f64], n: usize, k: usize) -> f64 {
    let mut v: Vec<f64> = x.iter().skip(k).step_by(n).copied().collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn corr(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

fn vec_str(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:8.4}")).collect::<Vec<_>>().join(" ")
}

/// Runs `engram explain-si`.
pub fn run(a: ExplainSiArgs) -> Result<()> {
    if a.dim == 0 || a.dim > 50 {
        bail!("--dim must lie in 1..=50");
    }
    if !(a.coupling.is_finite() && (0.0..1.0).contains(&a.coupling)) {
        bail!("--coupling must lie in [0, 1) (H stays positive definite), got {}", a.coupling);
    }
    for (name, v) in [("--lr", a.lr), ("--sigma", a.sigma), ("--xi", a.xi), ("--adam-lr", a.adam_lr)] {
        if !(v.is_finite() && v > 0.0) {
            bail!("{name} must be a positive number, got {v}");
        }
    }
    if a.steps == 0 || a.starts == 0 {
        bail!("--steps and --starts must be at least 1");
    }
    let n = a.dim;
    let toy = Toy::new(n, a.coupling);
    let (lmax, lmin) = toy.eig_range();
    if a.lr * lmax >= 2.0 {
        bail!("--lr {} times the largest eigenvalue of H ({lmax:.3}) is >= 2: gradient descent diverges", a.lr);
    }
    let sgd = Optimizer::Sgd { lr: a.lr as f32 };
    println!("Synaptic Intelligence on a quadratic (Zenke, Poole & Ganguli 2017, theory section)");
    println!("==================================================================================");
    println!("E(theta) = 1/2 (theta - theta*)' H (theta - theta*), theta* = 0, {n} parameters.");
    println!("H = D^1/2 ((1 - rho) I + rho 11') D^1/2 with rho = {}; its rows:", a.coupling);
    for i in 0..n {
        println!("  [{}]", vec_str(&toy.h[i * n..(i + 1) * n]));
    }
    println!("eigenvalues of H in [{lmin:.4}, {lmax:.4}]; gradient descent, lr = {}, {} steps", a.lr, a.steps);
    println!(
        "(lr * lambda_max = {:.3} < 2: stable; (1 - lr * lambda_min)^steps = {:.1e}: converged)",
        a.lr * lmax,
        (1.0 - a.lr * lmin).powi(a.steps as i32)
    );
    println!();
    println!("Each step the fused kernel (engram_si::fused_step_f32, SGD, c = 0) moves theta and accumulates");
    println!("  omega_k -= g_k(t) * (theta_k(t+1) - theta_k(t)),   g = H theta the loss gradient at theta(t);");
    println!("at the end, engram_si::end_of_task sets Omega_k = omega_k / (Delta_k^2 + xi), xi = {}.", a.xi);

    // 1. One start, step by step.
    let one = walk(&toy, sgd, a.steps, 1, a.sigma, a.xi, a.seed);
    let u0 = &one.start;
    println!();
    println!("1. One run from theta(0) ~ N(0, {}^2 I)", a.sigma);
    println!("   theta(0) - theta* = [{}]", vec_str(u0));
    println!("   {:>6} {:>12} {:>14} {:>16} {:>10}", "step", "E(theta)", "E(0) - E(t)", "sum_k omega_k", "ratio");
    let e0 = one.trace[0].1;
    for &(t, e, om) in &one.trace {
        let drop = e0 - e;
        let ratio = if drop > 0.0 { format!("{:.4}", om / drop) } else { "-".into() };
        println!("   {:>6} {:>12.6} {:>14.6} {:>16.6} {:>10}", t, e, drop, om, ratio);
    }
    println!("   The path integral sum_k omega_k equals the loss drop up to the curvature of each finite step:");
    println!("   -g'dtheta = E(t) - E(t+1) + 1/2 dtheta' H dtheta, so the ratio sits slightly above 1 (O(lr)).");
    println!();
    println!(
        "   {:>3} {:>9} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "k", "H_kk", "Delta_k", "omega_k", "Omega_k", "H_kk/2", "Omega/(H/2)"
    );
    for k in 0..n {
        println!(
            "   {:>3} {:>9.4} {:>10.4} {:>10.5} {:>10.5} {:>10.5} {:>12.3}",
            k,
            toy.hkk(k),
            one.delta[k],
            one.omega[k],
            one.big_omega[k],
            toy.hkk(k) / 2.0,
            one.big_omega[k] / (toy.hkk(k) / 2.0)
        );
    }
    if a.coupling > 0.0 {
        println!("   With a coupled H one run's Omega_k also depends on where it started: credit for the loss drop");
        println!("   moves between coupled parameters. Averaged over starts it tracks the diagonal of H:");
    } else {
        println!("   With a diagonal H each parameter descends on its own: omega_k = Delta_k^2 H_kk / (2 - lr H_kk),");
        println!("   so Omega_k = H_kk / (2 - lr H_kk) * Delta_k^2 / (Delta_k^2 + xi) ~ H_kk / 2 for every start.");
    }

    // 2. Many starts.
    let many = walk(&toy, sgd, a.steps, a.starts, a.sigma, a.xi, a.seed.wrapping_add(1));
    let (th_om, _) = toy.discrete_theory(a.lr, a.steps);
    let s2 = a.sigma * a.sigma;
    println!();
    println!("2. Averaged over {} starts (theta(0) - theta* ~ N(0, {}^2 I))", a.starts, a.sigma);
    println!("   gradient flow: E[omega_k] = sigma^2 H_kk / 2, E[Delta_k^2] = sigma^2  =>  Omega_k ~ H_kk / 2;");
    println!("   finite lr: E[omega] = sigma^2 diag(H (2I - lr H)^-1) (the 'exact' column).");
    println!(
        "   {:>3} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10}",
        "k", "H_kk", "s2*H_kk/2", "exact", "E[omega]", "E[Delta2]", "Omega_est", "est/(H/2)", "median Om"
    );
    let mut mean_big = Vec::new();
    for (k, exact_k) in th_om.iter().enumerate() {
        let mo = col_mean(&many.omega, n, k);
        let d2: Vec<f64> = many.delta.iter().map(|d| d * d).collect();
        let md = col_mean(&d2, n, k);
        mean_big.push(mo / md);
        println!(
            "   {:>3} {:>8.4} {:>10.5} {:>10.5} {:>10.5} {:>10.5} {:>10.5} {:>9.3} {:>10.5}",
            k,
            toy.hkk(k),
            s2 * toy.hkk(k) / 2.0,
            s2 * exact_k,
            mo,
            md,
            mo / md,
            mo / md / (toy.hkk(k) / 2.0),
            col_median(&many.big_omega, n, k)
        );
    }
    println!(
        "   (E[..]: means over the starts; Omega_est = E[omega] / E[Delta^2].) One run's Omega_k is heavy-tailed:"
    );
    println!(
        "   a start with a small Delta_k still collects omega_k through the coupling, and dividing by Delta_k^2 + xi"
    );
    let mean_of_ratio: Vec<String> = (0..n).map(|k| format!("{:.3}", col_mean(&many.big_omega, n, k))).collect();
    println!("   inflates it: the plain mean of Omega_k over the runs is [{}].", mean_of_ratio.join(", "));
    let diag: Vec<f64> = (0..n).map(|k| toy.hkk(k)).collect();
    let frac_neg = many.big_omega.iter().filter(|&&x| x < 0.0).count() as f64 / many.big_omega.len() as f64;
    println!(
        "   correlation of Omega_est with diag(H): {:.4}; fraction of negative Omega_k over all runs: {:.2}%",
        corr(&mean_big, &diag),
        100.0 * frac_neg
    );
    let ratio: Vec<f64> = many.omega.chunks(n).zip(&many.drop).map(|(o, d)| o.iter().sum::<f64>() / d).collect();
    let mr = ratio.iter().sum::<f64>() / ratio.len() as f64;
    let maxdev = ratio.iter().map(|r| (r - 1.0).abs()).fold(0.0, f64::max);
    println!("   path-integral identity over the {} runs: sum omega / loss drop = {mr:.4} on average, at most {maxdev:.4} from 1", a.starts);

    // 3. What the penalty means.
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed.wrapping_add(2));
    let w: Vec<f64> = (0..n).map(|_| 0.5 * normal(&mut rng)).collect();
    let exact = toy.energy(&w);
    let diag_part: f64 = (0..n).map(|k| toy.hkk(k) / 2.0 * w[k] * w[k]).sum();
    let si_pen: f64 = (0..n).map(|k| mean_big[k] * w[k] * w[k]).sum();
    let si_one: f64 = (0..n).map(|k| one.big_omega[k] * w[k] * w[k]).sum();
    println!();
    println!("3. What the SI penalty c sum_k Omega_k (theta_k - theta*_k)^2 stands for (c = 1)");
    println!("   Later tasks move theta away from the anchor; with Omega ~ H_kk / 2 the penalty is the diagonal part");
    println!("   of the old task's loss. At theta - theta* = [{}]:", vec_str(&w));
    println!("     old loss 1/2 u'Hu                      = {exact:.5}");
    println!("     its diagonal part sum_k H_kk/2 u_k^2   = {diag_part:.5}");
    println!("     SI penalty, c = 1, Omega_est above     = {si_pen:.5}");
    println!("     SI penalty, c = 1, the one run of 1.   = {si_one:.5}");
    println!(
        "   The diagonal part ignores the coupling (here it {} the old loss); one run's Omega is a",
        if diag_part > exact { "overstates" } else { "understates" }
    );
    println!(
        "   noisy estimate of it. c scales the whole term: c > 1 guards old tasks more than their own loss would."
    );
    println!("   (The official code's penalty has no 1/2 factor: Omega already carries it.)");

    // 4. Adam.
    let adam = Optimizer::Adam { lr: a.adam_lr as f32, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    let ad = walk(&toy, adam, a.steps, a.starts, a.sigma, a.xi, a.seed.wrapping_add(1));
    println!();
    println!("4. The same starts with Adam (lr {}, betas 0.9/0.999), as the SI paper trains", a.adam_lr);
    println!(
        "   {:>3} {:>8} {:>10} {:>10} {:>10} {:>9} {:>10}",
        "k", "H_kk", "E[omega]", "E[Delta2]", "Omega_est", "est/(H/2)", "median Om"
    );
    let mut mean_ad = Vec::new();
    for k in 0..n {
        let d2: Vec<f64> = ad.delta.iter().map(|d| d * d).collect();
        let (mo, md) = (col_mean(&ad.omega, n, k), col_mean(&d2, n, k));
        mean_ad.push(mo / md);
        println!(
            "   {:>3} {:>8.4} {:>10.5} {:>10.5} {:>10.5} {:>9.3} {:>10.5}",
            k,
            toy.hkk(k),
            mo,
            md,
            mo / md,
            mo / md / (toy.hkk(k) / 2.0),
            col_median(&ad.big_omega, n, k)
        );
    }
    let ad_drop = ad.drop.iter().sum::<f64>() / ad.drop.len() as f64;
    let ad_om = ad.omega.iter().sum::<f64>() / a.starts as f64;
    println!(
        "   correlation of Omega_est with diag(H): {:.4}; mean loss drop {ad_drop:.5} vs mean sum omega {ad_om:.5}",
        corr(&mean_ad, &diag)
    );
    println!("   Adam rescales each coordinate's step, so omega no longer weighs the path by the curvature alone:");
    println!("   compare the est/(H/2) column with section 2. The path-integral identity still holds (the loss");
    println!("   drop is still shared out between the parameters), but Omega is then a curvature-ordered");
    println!("   importance, compressed towards the mean, not half the Hessian's diagonal.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Diagonal H: every run's Omega_k is H_kk / (2 - lr H_kk) * Delta^2 / (Delta^2 + xi).
    #[test]
    fn diagonal_hessian_gives_half_its_diagonal_for_every_start() {
        let toy = Toy::new(4, 0.0);
        let lr = 0.05;
        let w = walk(&toy, Optimizer::Sgd { lr }, 4000, 50, 1.0, 1e-3, 3);
        for s in 0..50 {
            for k in 0..4 {
                let h = toy.hkk(k);
                let d2 = w.delta[s * 4 + k].powi(2);
                let want = h / (2.0 - lr as f64 * h) * d2 / (d2 + 1e-3);
                let got = w.big_omega[s * 4 + k];
                assert!((got - want).abs() <= 2e-3 * want.abs() + 1e-5, "start {s} k {k}: {got} vs {want}");
            }
        }
    }

    /// Coupled H: averaged over starts, omega matches the exact finite-step expectation and
    /// Omega tracks H_kk / 2.
    #[test]
    fn coupled_hessian_matches_the_expectation_on_average() {
        let toy = Toy::new(5, 0.5);
        let (lr, steps) = (0.02, 5000);
        let w = walk(&toy, Optimizer::Sgd { lr: lr as f32 }, steps, 4000, 1.0, 1e-3, 11);
        let (om, _) = toy.discrete_theory(lr, steps);
        for (k, &exact) in om.iter().enumerate() {
            let mo = col_mean(&w.omega, 5, k);
            assert!((mo - exact).abs() < 0.08 * exact, "k {k}: mean omega {mo} vs exact {exact}");
            // continuous theory: H_kk / 2
            assert!((exact - toy.hkk(k) / 2.0).abs() < 0.05 * toy.hkk(k), "k {k}");
        }
        let d2: Vec<f64> = w.delta.iter().map(|d| d * d).collect();
        let means: Vec<f64> = (0..5).map(|k| col_mean(&w.omega, 5, k) / col_mean(&d2, 5, k)).collect();
        for (k, m) in means.iter().enumerate() {
            assert!((m / (toy.hkk(k) / 2.0) - 1.0).abs() < 0.1, "k {k}: Omega_est {m}");
        }
        let diag: Vec<f64> = (0..5).map(|k| toy.hkk(k)).collect();
        assert!(corr(&means, &diag) > 0.95, "Omega tracks diag(H): {means:?}");
    }

    /// The path integral exceeds the loss drop by the curvature of the finite steps only.
    #[test]
    fn path_integral_matches_the_loss_drop() {
        let toy = Toy::new(5, 0.5);
        let w = walk(&toy, Optimizer::Sgd { lr: 0.01 }, 6000, 100, 1.0, 1e-3, 5);
        for (o, d) in w.omega.chunks(5).zip(&w.drop) {
            let r = o.iter().sum::<f64>() / d;
            assert!((1.0..1.05).contains(&(r + 1e-4)), "sum omega / drop = {r}");
        }
    }

    #[test]
    fn eigenvalues_bracket_the_diagonal() {
        let toy = Toy::new(5, 0.5);
        let (lmax, lmin) = toy.eig_range();
        assert!(lmin > 0.0 && lmin <= 0.1 && lmax >= 4.0, "{lmin} {lmax}");
        let diag = Toy::new(3, 0.0);
        let (a, b) = diag.eig_range();
        assert!((a - 4.0).abs() < 1e-9 && (b - 0.1).abs() < 1e-6, "{a} {b}");
    }
}
