//! Test helpers: a tape over `ndarray` matrices on the CPU backend, with the ops unwrapped (a
//! CPU kernel never fails), so that the tests read like the math they check.
#![allow(dead_code)]

use engram_tape::cpu::{self, Cpu, CpuFloat};
use engram_tape::{Backend, Grads, Tape, Tensor, Var};
use ndarray::Array2;

/// A CPU tape whose leaves and values are `ndarray` matrices.
pub struct ArrayTape<F: CpuFloat> {
    pub tape: Tape<'static, Cpu<F>>,
}

/// Gradients of an [`ArrayTape`], as matrices.
pub struct ArrayGrads<F: CpuFloat>(pub Grads<Cpu<F>>);

impl<F: CpuFloat> ArrayGrads<F> {
    pub fn get(&self, v: Var) -> Option<Array2<F>> {
        self.0.get(v).map(cpu::array)
    }
}

impl<F: CpuFloat> Default for ArrayTape<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: CpuFloat> ArrayTape<F> {
    pub fn new() -> Self {
        Self { tape: Tape::new(Cpu::new()) }
    }
    pub fn param(&mut self, a: Array2<F>) -> Var {
        self.tape.param(cpu::tensor(&a))
    }
    pub fn constant(&mut self, a: Array2<F>) -> Var {
        self.tape.constant(cpu::tensor(&a))
    }
    pub fn matmul(&mut self, a: Var, b: Var) -> Var {
        self.tape.matmul(a, b).unwrap()
    }
    pub fn add_row(&mut self, a: Var, b: Var) -> Var {
        self.tape.add_row(a, b).unwrap()
    }
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        self.tape.add(a, b).unwrap()
    }
    pub fn sub(&mut self, a: Var, b: Var) -> Var {
        self.tape.sub(a, b).unwrap()
    }
    pub fn mul(&mut self, a: Var, b: Var) -> Var {
        self.tape.mul(a, b).unwrap()
    }
    pub fn scale(&mut self, a: Var, s: F) -> Var {
        self.tape.scale(a, s).unwrap()
    }
    pub fn square(&mut self, a: Var) -> Var {
        self.tape.square(a).unwrap()
    }
    pub fn relu(&mut self, a: Var) -> Var {
        self.tape.relu(a).unwrap()
    }
    pub fn sum(&mut self, a: Var) -> Var {
        self.tape.sum(a).unwrap()
    }
    pub fn mean(&mut self, a: Var) -> Var {
        self.tape.mean(a).unwrap()
    }
    pub fn log_softmax(&mut self, a: Var) -> Var {
        self.tape.log_softmax(a).unwrap()
    }
    /// The labels live as long as the test process (leaked: the tape borrows them).
    pub fn masked_xent(&mut self, logits: Var, labels: &[u32], mask: Option<Var>) -> Var {
        let t: &'static Tensor<Cpu<F>, u32> =
            Box::leak(Box::new(Tensor::from_host(&Cpu::new(), 1, labels.len(), labels).unwrap()));
        self.tape.masked_xent(logits, t.view(), mask).unwrap()
    }
    pub fn value(&self, v: Var) -> Array2<F> {
        cpu::array(self.tape.value(v))
    }
    pub fn shape(&self, v: Var) -> (usize, usize) {
        self.tape.shape(v)
    }
    pub fn backward(&self, loss: Var) -> ArrayGrads<F> {
        ArrayGrads(self.tape.backward(loss).unwrap())
    }
}

/// `op(a) @ op(b)` through the CPU backend's kernel.
pub fn matmul<F: CpuFloat>(a: &Array2<F>, ta: bool, b: &Array2<F>, tb: bool) -> Array2<F> {
    let be = Cpu::<F>::new();
    let (at, bt) = (cpu::tensor(a), cpu::tensor(b));
    let m = if ta { a.ncols() } else { a.nrows() };
    let n = if tb { b.nrows() } else { b.ncols() };
    let mut c = Tensor::<Cpu<F>>::zeros(&be, m, n).unwrap();
    be.matmul(at.view(), ta, bt.view(), tb, c.view_mut(), false).unwrap();
    cpu::array(c.view())
}

/// Row-wise log-softmax through the CPU backend's kernel.
pub fn log_softmax<F: CpuFloat>(x: &Array2<F>) -> Array2<F> {
    let be = Cpu::<F>::new();
    let xt = cpu::tensor(x);
    let mut y = Tensor::<Cpu<F>>::zeros(&be, x.nrows(), x.ncols()).unwrap();
    be.log_softmax(xt.view(), y.view_mut()).unwrap();
    cpu::array(y.view())
}

/// The CPU backend's `count_correct`.
pub fn count_correct(logits: &Array2<f32>, labels: &[u32], mask: Option<&Array2<f32>>) -> u32 {
    let be = Cpu::<f32>::new();
    let lt = cpu::tensor(logits);
    let yt = Tensor::<Cpu<f32>, u32>::from_host(&be, 1, labels.len(), labels).unwrap();
    let mt = mask.map(cpu::tensor);
    let mut out = Tensor::<Cpu<f32>, u32>::zeros(&be, 1, 1).unwrap();
    be.count_correct(lt.view(), yt.view(), mt.as_ref().map(|m| m.view()), out.view_mut()).unwrap();
    out.to_host(&be).unwrap()[0]
}
