//! Parameter initialisation.

use rand::Rng;

/// The distribution of the initial weights and biases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitScheme {
    /// PyTorch's `nn.Linear` default: weight and bias both `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`
    /// (`kaiming_uniform_(a = sqrt(5))`).
    #[default]
    KaimingUniform,
    /// Xavier/Glorot uniform with gain 1 and zero biases: weight
    /// `U(-sqrt(6/(fan_in+fan_out)), sqrt(6/(fan_in+fan_out)))`. The GEM paper's official code
    /// (`model/common.py`, `Xavier`: `std = sqrt(2/(fan_in+fan_out))`, `a = sqrt(3) std`, bias 0).
    XavierUniform,
    /// He/Kaiming uniform for ReLU with zero biases: weight `U(-sqrt(6/fan_in), sqrt(6/fan_in))`,
    /// `torch.nn.init.kaiming_uniform_(w, nonlinearity="relu")` (gain sqrt(2)).
    HeUniform,
}

/// How to initialise an [`crate::Mlp`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Init {
    /// Set the output layer's weights and bias to zero (the SI paper's Split MNIST setting).
    pub zero_output: bool,
    /// The distribution of every other layer.
    pub scheme: InitScheme,
}

/// PyTorch's `nn.Linear` default: `kaiming_uniform_(a = sqrt(5))` for the weight, which is
/// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, and the same bound for the bias.
pub fn kaiming_uniform(rng: &mut impl Rng, fan_in: usize, out: &mut [f32]) {
    uniform(rng, 1.0 / (fan_in.max(1) as f32).sqrt(), out);
}

/// The bound `a` of Xavier/Glorot uniform (gain 1): `sqrt(6 / (fan_in + fan_out))`.
pub fn xavier_bound(fan_in: usize, fan_out: usize) -> f32 {
    (6.0 / (fan_in + fan_out).max(1) as f64).sqrt() as f32
}

/// Xavier/Glorot uniform (gain 1) for a `fan_in x fan_out` weight: `U(-a, a)` with
/// `a = sqrt(6 / (fan_in + fan_out))`.
pub fn xavier_uniform(rng: &mut impl Rng, fan_in: usize, fan_out: usize, out: &mut [f32]) {
    uniform(rng, xavier_bound(fan_in, fan_out), out);
}

/// He/Kaiming uniform for ReLU (gain sqrt(2)): `U(-sqrt(6/fan_in), sqrt(6/fan_in))`.
pub fn he_uniform(rng: &mut impl Rng, fan_in: usize, out: &mut [f32]) {
    uniform(rng, (6.0 / fan_in.max(1) as f64).sqrt() as f32, out);
}

/// Fills `out` with draws from `U(-bound, bound)`, in order.
fn uniform(rng: &mut impl Rng, bound: f32, out: &mut [f32]) {
    for w in out.iter_mut() {
        *w = rng.random_range(-bound..bound);
    }
}
