//! The append-only tape.
//!
//! Every op appends one node holding its output value and the ids of its inputs. Because inputs
//! always precede outputs, [`Tape::backward`] is a single reverse loop over the nodes: for each
//! node with an upstream gradient, the op's backward produces the input gradients, which are
//! *accumulated* (`+=`) into the inputs' slots (a value used twice receives both contributions).

use crate::ops;
use crate::Backend;

/// A handle to a value recorded on a [`Tape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(usize);

impl Var {
    /// The node's position on the tape.
    pub fn index(self) -> usize {
        self.0
    }
}

enum Op<B: Backend> {
    Leaf,
    MatMul(Var, Var),
    AddRow(Var, Var),
    Add(Var, Var),
    Sub(Var, Var),
    Mul(Var, Var),
    Scale(Var, B::T),
    Square(Var),
    Relu(Var),
    Sum(Var),
    Mean(Var),
    LogSoftmax(Var),
    MaskedXent { logits: Var, labels: B::Labels, probs: B::Tensor },
}

struct Node<B: Backend> {
    op: Op<B>,
    value: B::Tensor,
    requires_grad: bool,
}

/// An append-only record of a computation, and its reverse-mode differentiation.
pub struct Tape<B: Backend> {
    backend: B,
    nodes: Vec<Node<B>>,
}

/// Gradients from [`Tape::backward`], one optional tensor per node.
pub struct Grads<B: Backend> {
    grads: Vec<Option<B::Tensor>>,
}

impl<B: Backend> Grads<B> {
    /// `dL/dv` for any recorded node (parameters and intermediate values alike), or `None` when
    /// `v` does not influence the loss or needs no gradient (constants and what depends only on
    /// constants).
    pub fn get(&self, v: Var) -> Option<&B::Tensor> {
        self.grads.get(v.0).and_then(Option::as_ref)
    }

    /// Moves `dL/dv` out.
    pub fn take(&mut self, v: Var) -> Option<B::Tensor> {
        self.grads.get_mut(v.0).and_then(Option::take)
    }
}

impl<B: Backend> Tape<B> {
    /// An empty tape on `backend`.
    pub fn new(backend: B) -> Self {
        Self { backend, nodes: Vec::new() }
    }

    /// The backend the tape computes on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Forgets every node, keeping the allocation (one tape serves many training steps).
    pub fn clear(&mut self) {
        self.nodes.clear();
    }

    /// Number of recorded nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The value of a recorded node.
    pub fn value(&self, v: Var) -> &B::Tensor {
        &self.nodes[v.0].value
    }

    /// Shape of a recorded node.
    pub fn shape(&self, v: Var) -> (usize, usize) {
        self.backend.shape(self.value(v))
    }

    /// A trainable input: gradients flow to it.
    pub fn param(&mut self, value: B::Tensor) -> Var {
        self.push(Op::Leaf, value, true)
    }

    /// A constant input (data, masks, anchors): no gradient is computed for it.
    pub fn constant(&mut self, value: B::Tensor) -> Var {
        self.push(Op::Leaf, value, false)
    }

    fn push(&mut self, op: Op<B>, value: B::Tensor, requires_grad: bool) -> Var {
        self.nodes.push(Node { op, value, requires_grad });
        Var(self.nodes.len() - 1)
    }

    fn rg(&self, v: Var) -> bool {
        self.nodes[v.0].requires_grad
    }

    fn check_shapes(&self, op: &str, a: Var, b: Var) {
        let (sa, sb) = (self.shape(a), self.shape(b));
        assert_eq!(sa, sb, "{op}: shapes differ: {sa:?} vs {sb:?}");
    }

    /// `a @ b`.
    pub fn matmul(&mut self, a: Var, b: Var) -> Var {
        let (sa, sb) = (self.shape(a), self.shape(b));
        assert_eq!(sa.1, sb.0, "matmul: {sa:?} @ {sb:?}");
        let y = ops::matmul::forward(&self.backend, self.value(a), self.value(b));
        let rg = self.rg(a) || self.rg(b);
        self.push(Op::MatMul(a, b), y, rg)
    }

    /// `x + bias`, the `1 x n` bias broadcast over the rows of `x`.
    pub fn add_row(&mut self, x: Var, bias: Var) -> Var {
        let (sx, sb) = (self.shape(x), self.shape(bias));
        assert!(sb.0 == 1 && sb.1 == sx.1, "add_row: bias {sb:?} for {sx:?}");
        let y = ops::add_row::forward(&self.backend, self.value(x), self.value(bias));
        let rg = self.rg(x) || self.rg(bias);
        self.push(Op::AddRow(x, bias), y, rg)
    }

    /// `a + b`.
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        self.check_shapes("add", a, b);
        let y = ops::elementwise::add_forward(&self.backend, self.value(a), self.value(b));
        let rg = self.rg(a) || self.rg(b);
        self.push(Op::Add(a, b), y, rg)
    }

    /// `a - b`.
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        self.check_shapes("sub", a, b);
        let y = ops::elementwise::sub_forward(&self.backend, self.value(a), self.value(b));
        let rg = self.rg(a) || self.rg(b);
        self.push(Op::Sub(a, b), y, rg)
    }

    /// `a * b`, element by element.
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        self.check_shapes("mul", a, b);
        let y = ops::elementwise::mul_forward(&self.backend, self.value(a), self.value(b));
        let rg = self.rg(a) || self.rg(b);
        self.push(Op::Mul(a, b), y, rg)
    }

    /// `s * a` for a constant `s`.
    pub fn scale(&mut self, a: Var, s: B::T) -> Var {
        let y = ops::elementwise::scale_forward(&self.backend, self.value(a), s);
        let rg = self.rg(a);
        self.push(Op::Scale(a, s), y, rg)
    }

    /// `a^2`, element by element.
    pub fn square(&mut self, a: Var) -> Var {
        let y = ops::elementwise::square_forward(&self.backend, self.value(a));
        let rg = self.rg(a);
        self.push(Op::Square(a), y, rg)
    }

    /// `max(x, 0)`.
    pub fn relu(&mut self, x: Var) -> Var {
        let y = ops::relu::forward(&self.backend, self.value(x));
        let rg = self.rg(x);
        self.push(Op::Relu(x), y, rg)
    }

    /// Sum of all elements (`1 x 1`).
    pub fn sum(&mut self, x: Var) -> Var {
        let y = ops::reduce::sum_forward(&self.backend, self.value(x));
        let rg = self.rg(x);
        self.push(Op::Sum(x), y, rg)
    }

    /// Mean of all elements (`1 x 1`).
    pub fn mean(&mut self, x: Var) -> Var {
        let y = ops::reduce::mean_forward(&self.backend, self.value(x));
        let rg = self.rg(x);
        self.push(Op::Mean(x), y, rg)
    }

    /// Row-wise log-softmax.
    pub fn log_softmax(&mut self, x: Var) -> Var {
        let y = ops::log_softmax::forward(&self.backend, self.value(x));
        let rg = self.rg(x);
        self.push(Op::LogSoftmax(x), y, rg)
    }

    /// Mean masked softmax cross-entropy of `logits` against `labels` (`1 x 1`).
    /// `mask` is a constant node (`1 x classes` or `rows x classes`, non-zero = allowed).
    pub fn masked_xent(&mut self, logits: Var, labels: B::Labels, mask: Option<Var>) -> Var {
        let (loss, probs) = {
            let m = mask.map(|m| self.value(m));
            ops::masked_xent::forward(&self.backend, self.value(logits), &labels, m)
        };
        let rg = self.rg(logits);
        self.push(Op::MaskedXent { logits, labels, probs }, loss, rg)
    }

    /// Reverse-mode differentiation of the `1 x 1` node `loss`: one reverse loop over the tape.
    pub fn backward(&self, loss: Var) -> Grads<B> {
        let be = &self.backend;
        assert_eq!(self.shape(loss), (1, 1), "backward: the loss must be a 1x1 scalar");
        let mut grads: Vec<Option<B::Tensor>> = (0..self.nodes.len()).map(|_| None).collect();
        grads[loss.0] = Some(be.full(1, 1, num_traits::one()));
        for i in (0..=loss.0).rev() {
            let node = &self.nodes[i];
            if !node.requires_grad {
                continue;
            }
            let Some(gy) = grads[i].take() else { continue };
            // Inputs always precede outputs, so no later iteration writes slot `i`: the upstream
            // gradient is put back after use and stays readable through [`Grads::get`].
            let val = |v: Var| &self.nodes[v.0].value;
            let need = |v: Var| self.nodes[v.0].requires_grad;
            let mut contrib: [(Option<Var>, Option<B::Tensor>); 2] = [(None, None), (None, None)];
            match &node.op {
                Op::Leaf => {}
                Op::MatMul(a, b) => {
                    let [ga, gb] = ops::matmul::backward(be, val(*a), val(*b), &gy, [need(*a), need(*b)]);
                    contrib = [(Some(*a), ga), (Some(*b), gb)];
                }
                Op::AddRow(x, b) => {
                    let [gx, gb] = ops::add_row::backward(be, &gy, [need(*x), need(*b)]);
                    contrib = [(Some(*x), gx), (Some(*b), gb)];
                }
                Op::Add(a, b) => {
                    let [ga, gb] = ops::elementwise::add_backward::<B>(&gy, [need(*a), need(*b)]);
                    contrib = [(Some(*a), ga), (Some(*b), gb)];
                }
                Op::Sub(a, b) => {
                    let [ga, gb] = ops::elementwise::sub_backward(be, &gy, [need(*a), need(*b)]);
                    contrib = [(Some(*a), ga), (Some(*b), gb)];
                }
                Op::Mul(a, b) => {
                    let [ga, gb] = ops::elementwise::mul_backward(be, val(*a), val(*b), &gy, [need(*a), need(*b)]);
                    contrib = [(Some(*a), ga), (Some(*b), gb)];
                }
                Op::Scale(a, s) => contrib[0] = (Some(*a), Some(ops::elementwise::scale_backward(be, &gy, *s))),
                Op::Square(a) => contrib[0] = (Some(*a), Some(ops::elementwise::square_backward(be, val(*a), &gy))),
                Op::Relu(x) => contrib[0] = (Some(*x), Some(ops::relu::backward(be, val(*x), &gy))),
                Op::Sum(x) => contrib[0] = (Some(*x), Some(ops::reduce::sum_backward(be, be.shape(val(*x)), &gy))),
                Op::Mean(x) => contrib[0] = (Some(*x), Some(ops::reduce::mean_backward(be, be.shape(val(*x)), &gy))),
                Op::LogSoftmax(x) => {
                    contrib[0] = (Some(*x), Some(ops::log_softmax::backward(be, &node.value, &gy)));
                }
                Op::MaskedXent { logits, labels, probs } => {
                    contrib[0] = (Some(*logits), Some(ops::masked_xent::backward(be, probs, labels, &gy)));
                }
            }
            grads[i] = Some(gy);
            for (v, g) in contrib {
                if let (Some(v), Some(g)) = (v, g) {
                    if !need(v) {
                        continue;
                    }
                    match &mut grads[v.0] {
                        Some(acc) => be.accumulate(acc, &g),
                        slot @ None => *slot = Some(g),
                    }
                }
            }
        }
        Grads { grads }
    }
}
