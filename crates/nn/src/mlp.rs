//! Dense layers, the multi-layer perceptron, and the masked loss.

use crate::init::{he_uniform, kaiming_uniform, xavier_uniform, Init, InitScheme};
use engram_tape::{Backend, Tape, Var};
use rand::Rng;
use std::ops::Range;

/// A fully connected layer `y = x W + b` with `W: in x out` and `b: 1 x out`, whose parameters
/// are two ranges of the model's flat parameter vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dense {
    /// Input features.
    pub fan_in: usize,
    /// Output features.
    pub fan_out: usize,
    /// Where `W` (row-major `fan_in x fan_out`) lives in `theta`.
    pub weight: Range<usize>,
    /// Where `b` lives in `theta`.
    pub bias: Range<usize>,
}

impl Dense {
    /// `y = x W + b`, recorded on the tape (`w`, `b` are the layer's parameter nodes).
    pub fn forward<B: Backend>(&self, tape: &mut Tape<B>, x: Var, w: Var, b: Var) -> Var {
        let xw = tape.matmul(x, w);
        tape.add_row(xw, b)
    }
}

/// The nodes of one forward pass, layer by layer (see [`Mlp::forward_trace`]).
#[derive(Clone, Debug)]
pub struct Trace {
    /// Each layer's input (`x` for the first layer, the previous ReLU output after).
    pub inputs: Vec<Var>,
    /// Each layer's pre-activation `x W + b` (the last one is the logits).
    pub preacts: Vec<Var>,
    /// The logits.
    pub logits: Var,
}

/// A multi-layer perceptron: Dense, ReLU, Dense, ReLU, ..., Dense (logits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mlp {
    sizes: Vec<usize>,
    layers: Vec<Dense>,
    num_params: usize,
}

impl Mlp {
    /// An MLP with layer widths `sizes` (input, hidden..., output), e.g. `[784, 256, 256, 10]`.
    ///
    /// # Panics
    /// When fewer than two sizes are given or one is zero (callers validate user input first).
    pub fn new(sizes: &[usize]) -> Self {
        assert!(sizes.len() >= 2, "an MLP needs at least an input and an output size");
        assert!(sizes.iter().all(|&s| s > 0), "layer sizes must be positive: {sizes:?}");
        let mut off = 0;
        let layers = sizes
            .windows(2)
            .map(|w| {
                let weight = off..off + w[0] * w[1];
                off = weight.end;
                let bias = off..off + w[1];
                off = bias.end;
                Dense { fan_in: w[0], fan_out: w[1], weight, bias }
            })
            .collect();
        Self { sizes: sizes.to_vec(), layers, num_params: off }
    }

    /// Layer widths, input first.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The dense layers.
    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }

    /// Total number of parameters (the length of `theta`).
    pub fn num_params(&self) -> usize {
        self.num_params
    }

    /// Number of input features.
    pub fn inputs(&self) -> usize {
        self.sizes[0]
    }

    /// Number of outputs (logits).
    pub fn outputs(&self) -> usize {
        *self.sizes.last().expect("non-empty")
    }

    /// Fresh parameters drawn as `init.scheme` says (PyTorch-default Kaiming-uniform unless told
    /// otherwise; Xavier-uniform leaves the biases at zero), optionally a zero output layer.
    pub fn init(&self, rng: &mut impl Rng, init: Init) -> Vec<f32> {
        let mut theta = vec![0f32; self.num_params];
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            if i == last && init.zero_output {
                continue;
            }
            match init.scheme {
                InitScheme::KaimingUniform => {
                    kaiming_uniform(rng, l.fan_in, &mut theta[l.weight.clone()]);
                    kaiming_uniform(rng, l.fan_in, &mut theta[l.bias.clone()]);
                }
                InitScheme::XavierUniform => {
                    xavier_uniform(rng, l.fan_in, l.fan_out, &mut theta[l.weight.clone()]);
                }
                InitScheme::HeUniform => {
                    he_uniform(rng, l.fan_in, &mut theta[l.weight.clone()]);
                }
            }
        }
        theta
    }

    /// Puts every parameter tensor on the tape (as trainable nodes when `trainable`, else as
    /// constants: evaluation records no gradients). Returns `[W0, b0, W1, b1, ...]`.
    pub fn load<B: Backend>(&self, tape: &mut Tape<B>, theta: &[B::T], trainable: bool) -> Vec<Var> {
        assert_eq!(theta.len(), self.num_params, "theta has {} values, the model {}", theta.len(), self.num_params);
        let mut vars = Vec::with_capacity(2 * self.layers.len());
        for l in &self.layers {
            for (r, c, range) in [(l.fan_in, l.fan_out, l.weight.clone()), (1, l.fan_out, l.bias.clone())] {
                let t = tape.backend().from_vec(r, c, theta[range].to_vec());
                vars.push(if trainable { tape.param(t) } else { tape.constant(t) });
            }
        }
        vars
    }

    /// The logits for the batch `x` (`rows x inputs`), given the parameter nodes from [`Mlp::load`].
    pub fn forward<B: Backend>(&self, tape: &mut Tape<B>, params: &[Var], x: Var) -> Var {
        self.forward_trace(tape, params, x).logits
    }

    /// Like [`Mlp::forward`], also returning each layer's input and pre-activation nodes: with
    /// them, per-sample gradient statistics of a dense layer come out of one batched backward
    /// (`sum_i (x_i outer d_i)^2 = (X*X)^T (D*D)`, used by the Fisher and MAS importances).
    pub fn forward_trace<B: Backend>(&self, tape: &mut Tape<B>, params: &[Var], x: Var) -> Trace {
        let mut h = x;
        let last = self.layers.len() - 1;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut preacts = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            inputs.push(h);
            h = l.forward(tape, h, params[2 * i], params[2 * i + 1]);
            preacts.push(h);
            if i < last {
                h = tape.relu(h);
            }
        }
        Trace { inputs, preacts, logits: h }
    }

    /// Copies the gradients of the parameter nodes into the flat vector `grad` (zero where a
    /// parameter received no gradient).
    pub fn gather_grads<B: Backend>(
        &self,
        tape: &Tape<B>,
        grads: &engram_tape::Grads<B>,
        params: &[Var],
        grad: &mut [B::T],
    ) {
        assert_eq!(grad.len(), self.num_params);
        let be = tape.backend();
        for (i, l) in self.layers.iter().enumerate() {
            for (v, range) in [(params[2 * i], l.weight.clone()), (params[2 * i + 1], l.bias.clone())] {
                match grads.get(v) {
                    Some(g) => grad[range].copy_from_slice(&be.to_vec(g)),
                    None => grad[range].fill(num_traits_zero::<B>()),
                }
            }
        }
    }
}

fn num_traits_zero<B: Backend>() -> B::T {
    <B::T as engram_tape::Float>::from_f64_lossy(0.0)
}

/// Which classes a task's rows may predict (the multi-head / task-incremental setting).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskMask {
    classes: usize,
    allowed: Vec<bool>,
}

impl TaskMask {
    /// Only `allowed` of `classes` outputs take part in the softmax.
    pub fn new(classes: usize, allowed: &[usize]) -> Self {
        let mut a = vec![false; classes];
        for &c in allowed {
            a[c] = true;
        }
        Self { classes, allowed: a }
    }

    /// Whether class `c` is allowed.
    pub fn allows(&self, c: usize) -> bool {
        self.allowed.get(c).copied().unwrap_or(false)
    }

    /// The mask as a `1 x classes` tensor of 0/1 on `be`.
    pub fn tensor<B: Backend>(&self, be: &B) -> B::Tensor {
        let one = <B::T as engram_tape::Float>::from_f64_lossy(1.0);
        let zero = <B::T as engram_tape::Float>::from_f64_lossy(0.0);
        be.from_vec(1, self.classes, self.allowed.iter().map(|&a| if a { one } else { zero }).collect())
    }
}

/// The mean masked softmax cross-entropy of `logits` against `labels`; `mask` is `None` for a
/// plain softmax over every output.
pub fn masked_loss<B: Backend>(tape: &mut Tape<B>, logits: Var, labels: &[u32], mask: Option<&B::Tensor>) -> Var {
    let labels = tape.backend().labels(labels);
    let m = mask.map(|m| tape.constant(m.clone()));
    tape.masked_xent(logits, labels, m)
}

impl Mlp {
    /// One forward and backward pass on a fresh recording: returns the mean loss of the batch
    /// and writes `dL/dtheta` into `grad`. The tape is cleared first and reused (no reallocation
    /// of its node list between steps).
    #[allow(clippy::too_many_arguments)]
    pub fn loss_grad<B: Backend>(
        &self,
        tape: &mut Tape<B>,
        theta: &[B::T],
        x: B::Tensor,
        labels: &[u32],
        mask: Option<&B::Tensor>,
        grad: &mut [B::T],
    ) -> B::T {
        tape.clear();
        let params = self.load(tape, theta, true);
        let xv = tape.constant(x);
        let logits = self.forward(tape, &params, xv);
        let loss = masked_loss(tape, logits, labels, mask);
        let grads = tape.backward(loss);
        self.gather_grads(tape, &grads, &params, grad);
        tape.backend().scalar(tape.value(loss))
    }

    /// The logits for `x`, recorded without gradients.
    pub fn logits<B: Backend>(&self, tape: &mut Tape<B>, theta: &[B::T], x: B::Tensor) -> B::Tensor {
        tape.clear();
        let params = self.load(tape, theta, false);
        let xv = tape.constant(x);
        let out = self.forward(tape, &params, xv);
        tape.value(out).clone()
    }

    /// Accuracy on `images` (`n x inputs`, row-major) against `labels`, evaluated in chunks of
    /// `chunk` rows; arg-max restricted to `mask` when one is given. Returns a fraction in [0, 1].
    pub fn accuracy<B: Backend>(
        &self,
        be: &B,
        theta: &[B::T],
        images: &[f32],
        labels: &[u32],
        mask: Option<&B::Tensor>,
        chunk: usize,
    ) -> f64 {
        let dim = self.inputs();
        let n = labels.len();
        assert_eq!(images.len(), n * dim, "accuracy: {} pixels for {} images of {}", images.len(), n, dim);
        if n == 0 {
            return 0.0;
        }
        let mut tape = Tape::new(be.clone());
        let mut correct = 0usize;
        for start in (0..n).step_by(chunk.max(1)) {
            let end = (start + chunk.max(1)).min(n);
            let x = be.from_vec(end - start, dim, to_t::<B>(&images[start * dim..end * dim]));
            let logits = self.logits(&mut tape, theta, x);
            correct += be.count_correct(&logits, &be.labels(&labels[start..end]), mask);
        }
        correct as f64 / n as f64
    }
}

/// Converts f32 host data (pixels) to the backend's element type.
pub fn to_t<B: Backend>(xs: &[f32]) -> Vec<B::T> {
    xs.iter().map(|&v| <B::T as engram_tape::Float>::from_f64_lossy(v as f64)).collect()
}
