//! The training step's hand-written forward and backward ([`StepBuffers::loss_and_grad`]) against
//! the tape: the same loss and the same gradient bit for bit (every op of the tape is checked
//! against finite differences in crates/tape/tests/gradcheck.rs), and the gradient itself
//! against central differences in f64 around the f32 parameters.

use engram_nn::{Batch, Block, Cpu, Init, Mlp, StepBuffers, Tape, Tensor, ViewMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A random batch: inputs in [0, 1) with about a quarter exactly 0 (dead ReLU inputs), labels
/// among the allowed classes, and the mask kind asked for (0: none, 1: one row broadcast, 2: a
/// mask per row).
struct Case {
    x: Tensor<Cpu<f32>>,
    labels: Tensor<Cpu<f32>, u32>,
    mask: Option<Tensor<Cpu<f32>>>,
}

fn case(be: &Cpu<f32>, model: &Mlp, rows: usize, mask_kind: u8, rng: &mut ChaCha8Rng) -> Case {
    let (inputs, classes) = (model.inputs(), model.outputs());
    let x: Vec<f32> =
        (0..rows * inputs).map(|_| if rng.random_range(0..4) == 0 { 0.0 } else { rng.random() }).collect();
    let allowed: Vec<Vec<bool>> = (0..if mask_kind == 2 { rows } else { 1 })
        .map(|_| {
            let mut a: Vec<bool> = (0..classes).map(|_| rng.random_range(0..3) > 0).collect();
            a[rng.random_range(0..classes)] = true;
            a
        })
        .collect();
    let labels: Vec<u32> = (0..rows)
        .map(|i| {
            let a = &allowed[if mask_kind == 2 { i } else { 0 }];
            loop {
                let y = rng.random_range(0..classes);
                if mask_kind == 0 || a[y] {
                    break y as u32;
                }
            }
        })
        .collect();
    let mask = (mask_kind > 0).then(|| {
        let flat: Vec<f32> = allowed.iter().flatten().map(|&a| if a { 1.0 } else { 0.0 }).collect();
        Tensor::from_host(be, allowed.len(), classes, &flat).unwrap()
    });
    Case {
        x: Tensor::from_host(be, rows, inputs, &x).unwrap(),
        labels: Tensor::from_host(be, 1, rows, &labels).unwrap(),
        mask,
    }
}

fn batch(c: &Case) -> Batch<'_, Cpu<f32>> {
    Batch { x: c.x.view(), labels: c.labels.view(), mask: c.mask.as_ref().map(Tensor::view) }
}

/// The loss and gradient through the tape: `Mlp::forward`, `Tape::masked_xent`,
/// `Tape::backward_into`.
fn tape_loss_and_grad(be: &Cpu<f32>, model: &Mlp, theta: &Vec<f32>, c: &Case) -> (f32, Vec<f32>) {
    let mut tape = Tape::new(*be);
    let params = model.params(&mut tape, theta, true);
    let x = tape.constant_view(c.x.view());
    let logits = model.forward(&mut tape, &params, x).unwrap();
    let mask = c.mask.as_ref().map(|m| tape.constant_view(m.view()));
    let l = tape.masked_xent(logits, c.labels.view(), mask).unwrap();
    let loss = tape.value(l).buf[0];
    let mut grad = vec![f32::NAN; model.num_params()];
    tape.backward_into(l, ViewMut::row_of(be, &mut grad)).unwrap();
    (loss, grad)
}

fn step_loss_and_grad(
    be: &Cpu<f32>,
    model: &Mlp,
    theta: &Vec<f32>,
    c: &Case,
    buffers: &mut StepBuffers<Cpu<f32>>,
) -> (f32, Vec<f32>) {
    let mut grad = vec![f32::NAN; model.num_params()];
    let mut loss = Tensor::zeros(be, 1, 1).unwrap();
    buffers.loss_and_grad(be, model, theta, batch(c), ViewMut::row_of(be, &mut grad), loss.view_mut()).unwrap();
    (loss.buf[0], grad)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Networks of one to three layers, batches of 1 to 70 rows, every mask kind, one set of buffers
/// reused across batches of different sizes (growing when a batch is larger): the loss and every
/// gradient value equal the tape's bit for bit, and no gradient is left unwritten.
#[test]
fn step_equals_the_tape_bit_for_bit() {
    let be = Cpu::<f32>::new();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for sizes in [vec![7, 3], vec![13, 9, 5], vec![20, 17, 11, 6], vec![784, 64, 64, 10]] {
        let model = Mlp::new(&sizes);
        let theta = model.init(&mut rng, Init::default());
        let mut buffers = StepBuffers::new(&be, &model, 8).unwrap();
        for (rows, mask_kind) in [(5, 0), (8, 1), (1, 2), (33, 2), (70, 1), (17, 0), (64, 2)] {
            let c = case(&be, &model, rows, mask_kind, &mut rng);
            let (tl, tg) = tape_loss_and_grad(&be, &model, &theta, &c);
            let (sl, sg) = step_loss_and_grad(&be, &model, &theta, &c, &mut buffers);
            assert_eq!(
                sl.to_bits(),
                tl.to_bits(),
                "{sizes:?}, {rows} rows, mask {mask_kind}: loss {sl} vs the tape's {tl}"
            );
            assert!(sg.iter().all(|g| g.is_finite()), "{sizes:?}, {rows} rows: a gradient left unwritten");
            assert_eq!(
                bits(&sg),
                bits(&tg),
                "{sizes:?}, {rows} rows, mask {mask_kind}: gradient differs from the tape's"
            );
        }
        assert_eq!(buffers.rows(), 70, "the buffers grew to the largest batch");
    }
}

/// The loss in f64 at `theta` (the forward pass only, through the step).
fn loss_at(be: &Cpu<f32>, model: &Mlp, theta: &Vec<f32>, c: &Case, buffers: &mut StepBuffers<Cpu<f32>>) -> f64 {
    step_loss_and_grad(be, model, theta, c, buffers).0 as f64
}

/// Central differences: for a sample of parameters (weights and biases of every layer),
/// `(L(theta + h e_i) - L(theta - h e_i)) / 2h` agrees with the step's gradient.
#[test]
fn step_gradient_matches_finite_differences() {
    let be = Cpu::<f32>::new();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let model = Mlp::new(&[12, 10, 8, 4]);
    let theta = model.init(&mut rng, Init::default());
    let mut buffers = StepBuffers::new(&be, &model, 16).unwrap();
    for mask_kind in [0, 1, 2] {
        let c = case(&be, &model, 16, mask_kind, &mut rng);
        let (_, g) = step_loss_and_grad(&be, &model, &theta, &c, &mut buffers);
        let h = 1e-2f32;
        let mut checked = 0;
        for i in (0..model.num_params()).step_by(3) {
            let mut plus = theta.clone();
            plus[i] += h;
            let mut minus = theta.clone();
            minus[i] -= h;
            let step = (plus[i] - minus[i]) as f64;
            let fd =
                (loss_at(&be, &model, &plus, &c, &mut buffers) - loss_at(&be, &model, &minus, &c, &mut buffers)) / step;
            let tol = 2e-3 + 2e-2 * fd.abs();
            assert!(
                (g[i] as f64 - fd).abs() <= tol,
                "mask {mask_kind}, parameter {i}: gradient {} vs finite difference {fd}",
                g[i]
            );
            checked += 1;
        }
        assert!(checked > 30);
    }
}

/// GEM's memory gradients: several batches in one pass ([`StepBuffers::block_gradients`], one
/// forward over every row, the parameter gradients per block) give each block's loss and
/// gradient bit for bit as a separate pass over that block alone. Blocks of different sizes and
/// masks, large enough that the products over all rows are split differently across threads
/// than the products over one block.
#[test]
fn block_gradients_equal_separate_passes_bit_for_bit() {
    let be = Cpu::<f32>::new();
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let model = Mlp::new(&[784, 100, 100, 10]);
    let theta = model.init(&mut rng, Init::default());
    let p = model.num_params();
    let cases: Vec<Case> =
        [(256, 0), (97, 1), (256, 2), (1, 1)].iter().map(|&(r, m)| case(&be, &model, r, m, &mut rng)).collect();
    // The blocks one after the other in one input.
    let rows: usize = cases.iter().map(|c| c.labels.cols).sum();
    let x: Vec<f32> = cases.iter().flat_map(|c| c.x.buf.iter().copied()).collect();
    let labels: Vec<u32> = cases.iter().flat_map(|c| c.labels.buf.iter().copied()).collect();
    let x = Tensor::from_host(&be, rows, model.inputs(), &x).unwrap();
    let labels = Tensor::from_host(&be, 1, rows, &labels).unwrap();
    let mut at = 0;
    let blocks: Vec<Block<'_, Cpu<f32>>> = cases
        .iter()
        .map(|c| {
            let r = at..at + c.labels.cols;
            at = r.end;
            Block { rows: r, mask: c.mask.as_ref().map(Tensor::view) }
        })
        .collect();
    let mut grads = Tensor::<Cpu<f32>>::zeros(&be, cases.len(), p).unwrap();
    grads.buf.fill(f32::NAN);
    let mut losses = Tensor::<Cpu<f32>>::zeros(&be, 1, cases.len()).unwrap();
    let mut buffers = StepBuffers::new(&be, &model, 16).unwrap();
    buffers
        .block_gradients(&be, &model, &theta, x.view(), labels.view(), &blocks, grads.view_mut(), losses.view_mut())
        .unwrap();
    for (i, c) in cases.iter().enumerate() {
        let (l, g) = step_loss_and_grad(&be, &model, &theta, c, &mut StepBuffers::new(&be, &model, 1).unwrap());
        assert_eq!(losses.buf[i].to_bits(), l.to_bits(), "block {i}: loss {} vs {l}", losses.buf[i]);
        assert_eq!(bits(&grads.buf[i * p..(i + 1) * p]), bits(&g), "block {i}: gradient differs");
    }
}
