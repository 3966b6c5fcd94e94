//! Parameter initialisation.

use rand::Rng;

/// How to initialise an [`crate::Mlp`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Init {
    /// Set the output layer's weights and bias to zero (the SI paper's Split MNIST setting).
    pub zero_output: bool,
}

/// PyTorch's `nn.Linear` default: `kaiming_uniform_(a = sqrt(5))` for the weight, which is
/// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, and the same bound for the bias.
pub fn kaiming_uniform(rng: &mut impl Rng, fan_in: usize, out: &mut [f32]) {
    let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
    for w in out.iter_mut() {
        *w = rng.random_range(-bound..bound);
    }
}
