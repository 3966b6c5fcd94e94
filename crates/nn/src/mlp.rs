//! Dense layers, the multi-layer perceptron, and the task mask.

use crate::init::{he_uniform, kaiming_uniform, xavier_uniform, Init, InitScheme};
use engram_tape::{Backend, Float, Result, Tape, Tensor, Var, View};
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
    pub fn forward<B: Backend>(&self, tape: &mut Tape<'_, B>, x: Var, w: Var, b: Var) -> Result<Var> {
        let xw = tape.matmul(x, w)?;
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
    /// otherwise; Xavier- and He-uniform leave the biases at zero), optionally a zero output
    /// layer. Drawn on the host (one seeded stream), to be uploaded once.
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

    /// Puts every parameter tensor on the tape as a view of `theta`, the flat parameter vector
    /// (no copy): `[W0, b0, W1, b1, ...]`. Trainable parameters name their place in the gradient
    /// vector (the same offsets as in `theta`), so [`Tape::backward_into`] fills a flat gradient
    /// of `theta`'s layout; otherwise they are constants (evaluation records no gradient).
    pub fn params<'p, B: Backend>(
        &self,
        tape: &mut Tape<'p, B>,
        theta: &'p B::Buffer<B::T>,
        trainable: bool,
    ) -> Vec<Var> {
        let mut vars = Vec::with_capacity(2 * self.layers.len());
        for l in &self.layers {
            for (rows, cols, range) in [(l.fan_in, l.fan_out, &l.weight), (1, l.fan_out, &l.bias)] {
                let view = View::new(theta, range.start, rows, cols);
                vars.push(if trainable { tape.param_view(view, Some(range.start)) } else { tape.constant_view(view) });
            }
        }
        vars
    }

    /// The logits for the batch `x` (`rows x inputs`), given the parameter nodes from
    /// [`Mlp::params`].
    pub fn forward<B: Backend>(&self, tape: &mut Tape<'_, B>, params: &[Var], x: Var) -> Result<Var> {
        Ok(self.forward_trace(tape, params, x)?.logits)
    }

    /// Like [`Mlp::forward`], also returning each layer's input and pre-activation nodes: with
    /// them, per-sample gradient statistics of a dense layer come out of one batched backward
    /// (`sum_i (x_i outer d_i)^2 = (X*X)^T (D*D)`, used by the Fisher and MAS importances).
    pub fn forward_trace<B: Backend>(&self, tape: &mut Tape<'_, B>, params: &[Var], x: Var) -> Result<Trace> {
        let mut h = x;
        let last = self.layers.len() - 1;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut preacts = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            inputs.push(h);
            h = l.forward(tape, h, params[2 * i], params[2 * i + 1])?;
            preacts.push(h);
            if i < last {
                h = tape.relu(h)?;
            }
        }
        Ok(Trace { inputs, preacts, logits: h })
    }
}

/// Which classes a task's rows may predict (the multi-head / task-incremental setting).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskMask {
    classes: usize,
    allowed: Vec<bool>,
}

impl TaskMask {
    /// Only `allowed` of `classes` outputs take part in the softmax (classes out of range are
    /// ignored).
    pub fn new(classes: usize, allowed: &[usize]) -> Self {
        let mut a = vec![false; classes];
        for &c in allowed {
            if let Some(slot) = a.get_mut(c) {
                *slot = true;
            }
        }
        Self { classes, allowed: a }
    }

    /// Whether class `c` is allowed.
    pub fn allows(&self, c: usize) -> bool {
        self.allowed.get(c).copied().unwrap_or(false)
    }

    /// The allowed classes as 0/1 flags.
    pub fn flags(&self) -> &[bool] {
        &self.allowed
    }

    /// The mask as a row of 0/1 values.
    pub fn values<T: Float>(&self) -> Vec<T> {
        self.allowed.iter().map(|&a| T::from_f64_lossy(if a { 1.0 } else { 0.0 })).collect()
    }

    /// The mask as a `1 x classes` tensor of 0/1 on `be` (an upload).
    pub fn tensor<B: Backend>(&self, be: &B) -> Result<Tensor<B>> {
        Tensor::from_host(be, 1, self.classes, &self.values::<B::T>())
    }
}
