//! Initialisation schemes: the stated bounds, zero biases for Xavier, and the output-layer option.

use engram_nn::{xavier_bound, Init, InitScheme, Mlp};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn stats(xs: &[f32]) -> (f32, f32, f64, f64) {
    let min = xs.iter().copied().fold(f32::INFINITY, f32::min);
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (min, max, mean, var)
}

/// Xavier-uniform (the GEM paper's `Xavier`): every weight in (-a, a), a = sqrt(6/(fan_in+fan_out)),
/// the spread of a uniform on it (variance a^2/3 = 2/(fan_in+fan_out)), reaching near both ends;
/// every bias exactly 0.
#[test]
fn xavier_uniform_bounds_and_zero_biases() {
    let model = Mlp::new(&[784, 100, 100, 10]);
    let theta =
        model.init(&mut ChaCha8Rng::seed_from_u64(3), Init { zero_output: false, scheme: InitScheme::XavierUniform });
    assert_eq!(theta.len(), model.num_params());
    for l in model.layers() {
        let a = xavier_bound(l.fan_in, l.fan_out);
        assert!((a as f64 - (6.0 / (l.fan_in + l.fan_out) as f64).sqrt()).abs() < 1e-7);
        // The official code's formula: std = sqrt(2/(fan_in+fan_out)), a = sqrt(3) std.
        assert!((a as f64 - 3f64.sqrt() * (2.0 / (l.fan_in + l.fan_out) as f64).sqrt()).abs() < 1e-6);
        let w = &theta[l.weight.clone()];
        let (min, max, mean, var) = stats(w);
        assert!(min >= -a && max < a, "layer {}x{}: [{min}, {max}] outside (-{a}, {a})", l.fan_in, l.fan_out);
        assert!(min < -0.95 * a && max > 0.95 * a, "layer {}x{} does not fill (-a, a)", l.fan_in, l.fan_out);
        let n = w.len() as f64;
        let sd_mean = (a as f64) / (3.0 * n).sqrt();
        assert!(mean.abs() < 5.0 * sd_mean, "mean {mean}");
        let want = (a as f64).powi(2) / 3.0;
        assert!((var / want - 1.0).abs() < 0.1, "variance {var}, want {want}");
        assert!(theta[l.bias.clone()].iter().all(|&b| b == 0.0), "Xavier leaves the biases at zero");
    }
}

/// Kaiming-uniform (PyTorch's default) stays the default: weights and biases in
/// (-1/sqrt(fan_in), 1/sqrt(fan_in)), biases not zero.
#[test]
fn kaiming_uniform_is_the_default() {
    assert_eq!(Init::default().scheme, InitScheme::KaimingUniform);
    let model = Mlp::new(&[784, 100, 10]);
    let theta = model.init(&mut ChaCha8Rng::seed_from_u64(4), Init::default());
    for l in model.layers() {
        let k = 1.0 / (l.fan_in as f32).sqrt();
        for range in [l.weight.clone(), l.bias.clone()] {
            let (min, max, _, _) = stats(&theta[range]);
            assert!(min >= -k && max < k);
        }
        assert!(theta[l.bias.clone()].iter().any(|&b| b != 0.0));
        let (min, max, _, _) = stats(&theta[l.weight.clone()]);
        assert!(min < -0.95 * k && max > 0.95 * k);
    }
}

/// He-uniform (`torch.nn.init.kaiming_uniform_(w, nonlinearity="relu")`): weights in
/// (-sqrt(6/fan_in), sqrt(6/fan_in)) with variance 2/fan_in (gain sqrt(2)), filling the interval;
/// biases exactly 0.
#[test]
fn he_uniform_bounds_variance_and_zero_biases() {
    let model = Mlp::new(&[784, 256, 10]);
    let theta =
        model.init(&mut ChaCha8Rng::seed_from_u64(5), Init { zero_output: false, scheme: InitScheme::HeUniform });
    for l in model.layers() {
        let a = (6.0 / l.fan_in as f64).sqrt() as f32;
        let w = &theta[l.weight.clone()];
        let (min, max, mean, var) = stats(w);
        assert!(min >= -a && max < a, "layer {}x{}: [{min}, {max}] outside (-{a}, {a})", l.fan_in, l.fan_out);
        assert!(min < -0.95 * a && max > 0.95 * a, "layer {}x{} does not fill (-a, a)", l.fan_in, l.fan_out);
        let sd_mean = (a as f64) / (3.0 * w.len() as f64).sqrt();
        assert!(mean.abs() < 5.0 * sd_mean, "mean {mean}");
        let want = 2.0 / l.fan_in as f64;
        assert!((var / want - 1.0).abs() < 0.1, "variance {var}, want 2/fan_in = {want}");
        assert!(theta[l.bias.clone()].iter().all(|&b| b == 0.0), "He-uniform leaves the biases at zero");
    }
}

/// zero_output zeroes the last layer under either scheme; the same seed gives the same draw.
#[test]
fn zero_output_and_determinism() {
    let model = Mlp::new(&[20, 8, 3]);
    for scheme in [InitScheme::KaimingUniform, InitScheme::XavierUniform, InitScheme::HeUniform] {
        let init = Init { zero_output: true, scheme };
        let theta = model.init(&mut ChaCha8Rng::seed_from_u64(1), init);
        let last = &model.layers()[1];
        assert!(theta[last.weight.start..last.bias.end].iter().all(|&x| x == 0.0));
        assert!(theta[model.layers()[0].weight.clone()].iter().any(|&x| x != 0.0));
        assert_eq!(theta, model.init(&mut ChaCha8Rng::seed_from_u64(1), init));
    }
}
