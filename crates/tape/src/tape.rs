//! The append-only tape.
//!
//! Every op appends one node holding its output value and the ids of its inputs. Because inputs
//! always precede outputs, [`Tape::backward`] is a single reverse loop over the nodes: for each
//! node with an upstream gradient, the op's backward produces the input gradients, which are
//! *accumulated* (`+=`) into the inputs' slots (a value used twice receives both contributions).
//!
//! A tape records on any [`Backend`]. Its leaves are owned tensors ([`Tape::param`],
//! [`Tape::constant`]) or windows of buffers that outlive the tape ([`Tape::param_view`],
//! [`Tape::constant_view`]): the model's parameters enter as views of its ONE flat parameter
//! vector, without a copy. A parameter view may name its place in a flat gradient vector; then
//! [`Tape::backward_into`] writes its gradient there, in place.

use crate::backend::Result;
use crate::ops::{self, Sink};
use crate::{Backend, Element, Float, Tensor, View, ViewMut};

/// A handle to a value recorded on a [`Tape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(usize);

impl Var {
    /// The node's position on the tape.
    pub fn index(self) -> usize {
        self.0
    }
}

/// A node's value: computed by the tape, or borrowed from a buffer that outlives it.
enum Value<'p, B: Backend, E: Element = <B as Backend>::T> {
    Owned(Tensor<B, E>),
    Borrowed(View<'p, B, E>),
}

impl<B: Backend, E: Element> Value<'_, B, E> {
    fn view(&self) -> View<'_, B, E> {
        match self {
            Value::Owned(t) => t.view(),
            Value::Borrowed(v) => *v,
        }
    }
}

enum Op<'p, B: Backend> {
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
    MaskedXent { logits: Var, labels: View<'p, B, u32>, probs: Tensor<B> },
}

impl<B: Backend> Op<'_, B> {
    /// The op's inputs, in order.
    fn inputs(&self) -> [Option<Var>; 2] {
        match *self {
            Op::Leaf => [None, None],
            Op::MatMul(a, b) | Op::AddRow(a, b) | Op::Add(a, b) | Op::Sub(a, b) | Op::Mul(a, b) => [Some(a), Some(b)],
            Op::Scale(a, _) | Op::Square(a) | Op::Relu(a) | Op::Sum(a) | Op::Mean(a) | Op::LogSoftmax(a) => {
                [Some(a), None]
            }
            Op::MaskedXent { logits, .. } => [Some(logits), None],
        }
    }
}

struct Node<'p, B: Backend> {
    op: Op<'p, B>,
    value: Value<'p, B>,
    requires_grad: bool,
    /// For a parameter view: where its gradient goes in the gradient vector of
    /// [`Tape::backward_into`] (an element offset).
    grad_at: Option<usize>,
}

/// An append-only record of a computation on backend `B`, and its reverse-mode differentiation.
/// `'p` is the lifetime of the buffers its views borrow (parameters, data, masks, labels).
pub struct Tape<'p, B: Backend> {
    backend: B,
    nodes: Vec<Node<'p, B>>,
}

/// Gradients from [`Tape::backward`], one optional tensor per node.
pub struct Grads<B: Backend> {
    grads: Vec<Option<Tensor<B>>>,
}

impl<B: Backend> Grads<B> {
    /// `dL/dv` for any recorded node (parameters and intermediate values alike), or `None` when
    /// `v` does not influence the loss, needs no gradient (constants and what depends only on
    /// constants), or had its gradient written into [`Tape::backward_into`]'s vector.
    pub fn get(&self, v: Var) -> Option<View<'_, B>> {
        self.grads.get(v.0).and_then(Option::as_ref).map(Tensor::view)
    }

    /// Moves `dL/dv` out.
    pub fn take(&mut self, v: Var) -> Option<Tensor<B>> {
        self.grads.get_mut(v.0).and_then(Option::take)
    }
}

impl<'p, B: Backend> Tape<'p, B> {
    /// An empty tape on `backend`.
    pub fn new(backend: B) -> Self {
        Self { backend, nodes: Vec::with_capacity(32) }
    }

    /// The backend the tape computes on.
    pub fn backend(&self) -> &B {
        &self.backend
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
    pub fn value(&self, v: Var) -> View<'_, B> {
        self.nodes[v.0].value.view()
    }

    /// Shape of a recorded node.
    pub fn shape(&self, v: Var) -> (usize, usize) {
        self.value(v).shape()
    }

    /// A trainable input the tape owns: gradients flow to it.
    pub fn param(&mut self, value: Tensor<B>) -> Var {
        self.push(Op::Leaf, Value::Owned(value), true, None)
    }

    /// A constant input the tape owns (data, masks, anchors): no gradient is computed for it.
    pub fn constant(&mut self, value: Tensor<B>) -> Var {
        self.push(Op::Leaf, Value::Owned(value), false, None)
    }

    /// A trainable input borrowed from a buffer (a parameter tensor inside the flat parameter
    /// vector). With `grad_at`, [`Tape::backward_into`] writes its gradient at that element
    /// offset of the gradient vector it is given.
    pub fn param_view(&mut self, value: View<'p, B>, grad_at: Option<usize>) -> Var {
        self.push(Op::Leaf, Value::Borrowed(value), true, grad_at)
    }

    /// A constant input borrowed from a buffer (a batch, a mask).
    pub fn constant_view(&mut self, value: View<'p, B>) -> Var {
        self.push(Op::Leaf, Value::Borrowed(value), false, None)
    }

    fn push(&mut self, op: Op<'p, B>, value: Value<'p, B>, requires_grad: bool, grad_at: Option<usize>) -> Var {
        self.nodes.push(Node { op, value, requires_grad, grad_at });
        Var(self.nodes.len() - 1)
    }

    fn needs_grad(&self, v: Var) -> bool {
        self.nodes[v.0].requires_grad
    }

    /// Records the node `op` whose `rows x cols` value `forward` writes.
    fn record(
        &mut self,
        op: Op<'p, B>,
        (rows, cols): (usize, usize),
        forward: impl FnOnce(&Self, ViewMut<'_, B>) -> Result<()>,
    ) -> Result<Var> {
        let mut y = Tensor::zeros(&self.backend, rows, cols)?;
        forward(self, y.view_mut())?;
        let rg = op.inputs().iter().flatten().any(|&v| self.needs_grad(v));
        Ok(self.push(op, Value::Owned(y), rg, None))
    }

    fn check_same(&self, op: &str, a: Var, b: Var) {
        let (sa, sb) = (self.shape(a), self.shape(b));
        assert_eq!(sa, sb, "{op}: shapes differ: {sa:?} vs {sb:?}");
    }

    /// `a @ b`.
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        let (sa, sb) = (self.shape(a), self.shape(b));
        assert_eq!(sa.1, sb.0, "matmul: {sa:?} @ {sb:?}");
        self.record(Op::MatMul(a, b), (sa.0, sb.1), |t, y| ops::matmul::forward(&t.backend, t.value(a), t.value(b), y))
    }

    /// `x + bias`, the `1 x n` bias broadcast over the rows of `x`.
    pub fn add_row(&mut self, x: Var, bias: Var) -> Result<Var> {
        let (sx, sb) = (self.shape(x), self.shape(bias));
        assert!(sb.0 == 1 && sb.1 == sx.1, "add_row: bias {sb:?} for {sx:?}");
        self.record(Op::AddRow(x, bias), sx, |t, y| ops::add_row::forward(&t.backend, t.value(x), t.value(bias), y))
    }

    /// `a + b`.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        self.check_same("add", a, b);
        let s = self.shape(a);
        self.record(Op::Add(a, b), s, |t, y| ops::elementwise::add_forward(&t.backend, t.value(a), t.value(b), y))
    }

    /// `a - b`.
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var> {
        self.check_same("sub", a, b);
        let s = self.shape(a);
        self.record(Op::Sub(a, b), s, |t, y| ops::elementwise::sub_forward(&t.backend, t.value(a), t.value(b), y))
    }

    /// `a * b`, element by element.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.check_same("mul", a, b);
        let s = self.shape(a);
        self.record(Op::Mul(a, b), s, |t, y| ops::elementwise::mul_forward(&t.backend, t.value(a), t.value(b), y))
    }

    /// `s * a` for a constant `s`.
    pub fn scale(&mut self, a: Var, s: B::T) -> Result<Var> {
        let shape = self.shape(a);
        self.record(Op::Scale(a, s), shape, |t, y| ops::elementwise::scale_forward(&t.backend, t.value(a), s, y))
    }

    /// `a^2`, element by element.
    pub fn square(&mut self, a: Var) -> Result<Var> {
        let s = self.shape(a);
        self.record(Op::Square(a), s, |t, y| ops::elementwise::square_forward(&t.backend, t.value(a), y))
    }

    /// `max(x, 0)`.
    pub fn relu(&mut self, x: Var) -> Result<Var> {
        let s = self.shape(x);
        self.record(Op::Relu(x), s, |t, y| ops::relu::forward(&t.backend, t.value(x), y))
    }

    /// Sum of all elements (`1 x 1`).
    pub fn sum(&mut self, x: Var) -> Result<Var> {
        self.record(Op::Sum(x), (1, 1), |t, y| ops::reduce::sum_forward(&t.backend, t.value(x), y))
    }

    /// Mean of all elements (`1 x 1`).
    pub fn mean(&mut self, x: Var) -> Result<Var> {
        self.record(Op::Mean(x), (1, 1), |t, y| ops::reduce::mean_forward(&t.backend, t.value(x), y))
    }

    /// Row-wise log-softmax.
    pub fn log_softmax(&mut self, x: Var) -> Result<Var> {
        let s = self.shape(x);
        self.record(Op::LogSoftmax(x), s, |t, y| ops::log_softmax::forward(&t.backend, t.value(x), y))
    }

    /// Mean masked softmax cross-entropy of `logits` against `labels` (`1 x rows`), a `1 x 1`
    /// node. `mask` is a constant node (`1 x classes` or `rows x classes`, non-zero = allowed).
    pub fn masked_xent(&mut self, logits: Var, labels: View<'p, B, u32>, mask: Option<Var>) -> Result<Var> {
        let (rows, cols) = self.shape(logits);
        let mut probs = Tensor::zeros(&self.backend, rows, cols)?;
        let mut loss = Tensor::zeros(&self.backend, 1, 1)?;
        let m = mask.map(|m| self.value(m));
        ops::masked_xent::forward(&self.backend, self.value(logits), labels, m, loss.view_mut(), probs.view_mut())?;
        let rg = self.needs_grad(logits);
        Ok(self.push(Op::MaskedXent { logits, labels, probs }, Value::Owned(loss), rg, None))
    }

    /// Reverse-mode differentiation of the `1 x 1` node `loss`: one reverse loop over the tape.
    /// Every gradient is returned in [`Grads`].
    pub fn backward(&self, loss: Var) -> Result<Grads<B>> {
        self.differentiate(loss, None)
    }

    /// [`Tape::backward`], writing the gradient of each parameter view recorded with a
    /// `grad_at` offset into `grad` at that offset (overwriting what was there): one flat
    /// gradient vector receives every layer's gradients in place. Parameters that do not
    /// influence the loss keep their old values in `grad`; the caller zeroes it when that matters.
    pub fn backward_into(&self, loss: Var, grad: ViewMut<'_, B>) -> Result<Grads<B>> {
        self.differentiate(loss, Some(grad))
    }

    fn differentiate(&self, loss: Var, mut external: Option<ViewMut<'_, B>>) -> Result<Grads<B>> {
        let be = &self.backend;
        assert_eq!(self.shape(loss), (1, 1), "backward: the loss must be a 1x1 scalar");
        let mut grads: Vec<Option<Tensor<B>>> = (0..self.nodes.len()).map(|_| None).collect();
        let mut written = vec![false; self.nodes.len()];
        let mut one = Tensor::zeros(be, 1, 1)?;
        be.fill(one.view_mut(), B::T::from_f64_lossy(1.0))?;
        grads[loss.0] = Some(one);
        for i in (0..=loss.0).rev() {
            let node = &self.nodes[i];
            if !node.requires_grad {
                continue;
            }
            let Some(gy) = grads[i].take() else { continue };
            for (which, input) in node.op.inputs().into_iter().enumerate() {
                let Some(v) = input else { continue };
                if !self.needs_grad(v) {
                    continue;
                }
                let (rows, cols) = self.shape(v);
                match (self.nodes[v.0].grad_at, external.as_mut()) {
                    (Some(at), Some(g)) => {
                        assert!(
                            g.offset + at + rows * cols <= g.offset + g.len(),
                            "backward_into: a parameter at {at} of {rows}x{cols} lies outside the gradient vector of {}",
                            g.len()
                        );
                        let out = ViewMut::new(&mut *g.buf, g.offset + at, rows, cols);
                        let accumulate = std::mem::replace(&mut written[v.0], true);
                        self.input_grad(node, which, gy.view(), Sink { out, accumulate })?;
                    }
                    _ => match &mut grads[v.0] {
                        Some(acc) => {
                            self.input_grad(node, which, gy.view(), Sink { out: acc.view_mut(), accumulate: true })?
                        }
                        slot @ None => {
                            let mut g = Tensor::zeros(be, rows, cols)?;
                            self.input_grad(node, which, gy.view(), Sink { out: g.view_mut(), accumulate: false })?;
                            *slot = Some(g);
                        }
                    },
                }
            }
            // Inputs always precede outputs, so no later iteration writes slot `i`: the upstream
            // gradient is put back after use and stays readable through [`Grads::get`].
            grads[i] = Some(gy);
        }
        Ok(Grads { grads })
    }

    /// The gradient of `node`'s input number `which`, given the node's upstream gradient `gy`.
    fn input_grad(&self, node: &Node<'p, B>, which: usize, gy: View<'_, B>, sink: Sink<'_, B>) -> Result<()> {
        let be = &self.backend;
        let val = |v: Var| self.value(v);
        match &node.op {
            Op::Leaf => Ok(()),
            Op::MatMul(a, b) => ops::matmul::backward(be, val(*a), val(*b), gy, which, sink),
            Op::AddRow(..) => ops::add_row::backward(be, gy, which, sink),
            Op::Add(..) => ops::elementwise::add_backward(be, gy, sink),
            Op::Sub(..) => ops::elementwise::sub_backward(be, gy, which, sink),
            Op::Mul(a, b) => ops::elementwise::mul_backward(be, val(*a), val(*b), gy, which, sink),
            Op::Scale(_, s) => ops::elementwise::scale_backward(be, gy, *s, sink),
            Op::Square(a) => ops::elementwise::square_backward(be, val(*a), gy, sink),
            Op::Relu(x) => ops::relu::backward(be, val(*x), gy, sink),
            Op::Sum(_) => ops::reduce::sum_backward(be, gy, sink),
            Op::Mean(x) => ops::reduce::mean_backward(be, val(*x).len(), gy, sink),
            Op::LogSoftmax(_) => ops::log_softmax::backward(be, node.value.view(), gy, sink),
            Op::MaskedXent { labels, probs, .. } => ops::masked_xent::backward(be, probs.view(), *labels, gy, sink),
        }
    }
}
