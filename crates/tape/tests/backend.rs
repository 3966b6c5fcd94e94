//! The backend contract on the CPU backend: the data and reduction kernels against naive
//! references, gradients written in place into one flat vector through views, the transfer
//! counts of `Counting`, and an allocation that does not fit reported as an error.

use engram_tape::counting::Counting;
use engram_tape::cpu::Cpu;
use engram_tape::{Backend, BackendError, PixelMap, Tape, Tensor, Var, View, ViewMut};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn cpu() -> Cpu<f32> {
    Cpu::new()
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0..1.0f32)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// `gather_rows`: `out[r][j] = src[rows[r]][m(r, j)]` with no map, one shared map and one map
    /// per row, for f32 and u32 elements.
    #[test]
    fn gather_rows_matches_the_definition(n in 1usize..20, cols in 1usize..12, b in 0usize..30, seed in any::<u64>()) {
        let be = cpu();
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let src = random(n * cols, seed ^ 1);
        let rows: Vec<u32> = (0..b).map(|_| r.random_range(0..n as u32)).collect();
        let perm = |r: &mut ChaCha8Rng| {
            let mut p: Vec<u32> = (0..cols as u32).collect();
            for i in (1..cols).rev() {
                p.swap(i, r.random_range(0..=i));
            }
            p
        };
        let maps: Vec<u32> = (0..3).flat_map(|_| perm(&mut r)).collect();
        let ids: Vec<u32> = (0..b).map(|_| r.random_range(0..3u32)).collect();
        let s = Tensor::<Cpu<f32>>::from_host(&be, n, cols, &src).unwrap();
        let su = Tensor::<Cpu<f32>, u32>::from_host(&be, n, cols, &src.iter().map(|v| v.to_bits()).collect::<Vec<_>>()).unwrap();
        let rt = Tensor::<Cpu<f32>, u32>::from_host(&be, 1, b, &rows).unwrap();
        let mt = Tensor::<Cpu<f32>, u32>::from_host(&be, 3, cols, &maps).unwrap();
        let it = Tensor::<Cpu<f32>, u32>::from_host(&be, 1, b, &ids).unwrap();
        for kind in 0..3 {
            let map = match kind {
                0 => PixelMap::Identity,
                1 => PixelMap::Shared(mt.view().rows(1, 2)),
                _ => PixelMap::PerRow { ids: it.view(), maps: mt.view() },
            };
            let col = |row: usize, j: usize| -> usize {
                match kind {
                    0 => j,
                    1 => maps[cols + j] as usize,
                    _ => maps[ids[row] as usize * cols + j] as usize,
                }
            };
            let mut out = Tensor::<Cpu<f32>>::zeros(&be, b, cols).unwrap();
            be.gather_rows(s.view(), rt.view(), map, out.view_mut()).unwrap();
            let mut out_u = Tensor::<Cpu<f32>, u32>::zeros(&be, b, cols).unwrap();
            be.gather_rows(su.view(), rt.view(), map, out_u.view_mut()).unwrap();
            let (got, got_u) = (out.to_host(&be).unwrap(), out_u.to_host(&be).unwrap());
            for i in 0..b {
                for j in 0..cols {
                    let want = src[rows[i] as usize * cols + col(i, j)];
                    prop_assert_eq!(got[i * cols + j].to_bits(), want.to_bits());
                    prop_assert_eq!(got_u[i * cols + j], want.to_bits());
                }
            }
        }
    }

    /// `dots_f64`, `gram_f64` and `combine_f64` against f64 references: the dot products and the
    /// Gram matrix within 1e-12 of the scale of their terms, the combination exactly (the same
    /// f64 sum in the same order, rounded once).
    #[test]
    fn f64_reductions_match_their_references(k in 1usize..6, p in 1usize..3000, seed in any::<u64>()) {
        let be = cpu();
        let rows = random(k * p, seed);
        let v = random(p, seed ^ 7);
        let w: Vec<f64> = random(k, seed ^ 9).iter().map(|&x| 3.0 * x as f64).collect();
        let rt = Tensor::<Cpu<f32>>::from_host(&be, k, p, &rows).unwrap();
        let vt = Tensor::<Cpu<f32>>::from_host(&be, 1, p, &v).unwrap();
        let dot = |a: &[f32], b: &[f32]| -> (f64, f64) {
            a.iter().zip(b).fold((0.0, 0.0), |(s, t), (&x, &y)| (s + x as f64 * y as f64, t + (x as f64 * y as f64).abs()))
        };
        let mut dots = Tensor::<Cpu<f32>, f64>::zeros(&be, 1, k).unwrap();
        be.dots_f64(rt.view(), vt.view(), dots.view_mut()).unwrap();
        let mut gram = Tensor::<Cpu<f32>, f64>::zeros(&be, k, k).unwrap();
        be.gram_f64(rt.view(), gram.view_mut()).unwrap();
        let (d, g) = (dots.to_host(&be).unwrap(), gram.to_host(&be).unwrap());
        for i in 0..k {
            let (want, scale) = dot(&rows[i * p..(i + 1) * p], &v);
            prop_assert!((d[i] - want).abs() <= 1e-12 * scale.max(1e-300), "dot {}: {} vs {}", i, d[i], want);
            for j in 0..k {
                let (want, scale) = dot(&rows[i * p..(i + 1) * p], &rows[j * p..(j + 1) * p]);
                prop_assert!((g[i * k + j] - want).abs() <= 1e-12 * scale.max(1e-300));
                prop_assert_eq!(g[i * k + j], g[j * k + i], "the Gram matrix is symmetric");
            }
        }
        let wt = Tensor::<Cpu<f32>, f64>::from_host(&be, 1, k, &w).unwrap();
        let mut gt = Tensor::<Cpu<f32>>::from_host(&be, 1, p, &v).unwrap();
        be.combine_f64(gt.view_mut(), rt.view(), wt.view()).unwrap();
        let got = gt.to_host(&be).unwrap();
        for c in 0..p {
            let mut acc = v[c] as f64;
            for (i, wi) in w.iter().enumerate() {
                acc += wi * rows[i * p + c] as f64;
            }
            prop_assert_eq!(got[c].to_bits(), (acc as f32).to_bits());
        }
    }
}

/// `first_non_finite` finds the first NaN or infinity (or reports none), `count_nonzero` counts.
#[test]
fn finiteness_and_nonzero_counts() {
    let be = cpu();
    let mut out = Tensor::<Cpu<f32>, u64>::zeros(&be, 1, 1).unwrap();
    let mut check = |v: &[f32]| {
        let t = Tensor::<Cpu<f32>>::from_host(&be, 1, v.len(), v).unwrap();
        be.first_non_finite(t.view(), out.view_mut()).unwrap();
        let first = out.to_host(&be).unwrap()[0];
        be.count_nonzero(t.view(), out.view_mut()).unwrap();
        (first, out.to_host(&be).unwrap()[0])
    };
    assert_eq!(check(&[0.0, 1.0, -2.0]), (u64::MAX, 2));
    assert_eq!(check(&[0.0, f32::INFINITY, f32::NAN]), (1, 2));
    assert_eq!(check(&[f32::NAN]), (0, 1));
    assert_eq!(check(&[0.0, -0.0]), (u64::MAX, 0));
}

/// Parameters recorded as views of one flat vector: `backward_into` writes each one's gradient
/// at its offset of one flat gradient vector, bit for bit what `backward` returns per node, and
/// leaves the other elements of the vector alone.
#[test]
fn gradients_land_in_place_in_one_flat_vector() {
    let be = cpu();
    // theta = [W (3x4) | b (1x4) | padding (2)], the gradient vector 3 longer, offset by 1.
    let theta = random(3 * 4 + 4 + 2, 5);
    let x = Tensor::<Cpu<f32>>::from_host(&be, 2, 3, &random(6, 6)).unwrap();
    let labels = Tensor::<Cpu<f32>, u32>::from_host(&be, 1, 2, &[1, 3]).unwrap();
    let th = be.upload(&theta).unwrap();
    fn record<'p>(
        tape: &mut Tape<'p, Cpu<f32>>,
        th: &'p Vec<f32>,
        x: &'p Tensor<Cpu<f32>>,
        labels: &'p Tensor<Cpu<f32>, u32>,
    ) -> (Var, Var, Var) {
        let w = tape.param_view(View::new(th, 0, 3, 4), Some(0));
        let b = tape.param_view(View::new(th, 12, 1, 4), Some(12));
        let xv = tape.constant_view(x.view());
        let h = tape.matmul(xv, w).unwrap();
        let z = tape.add_row(h, b).unwrap();
        let loss = tape.masked_xent(z, labels.view(), None).unwrap();
        (w, b, loss)
    }
    let mut tape = Tape::new(be);
    let (w, b, loss) = record(&mut tape, &th, &x, &labels);
    let grads = tape.backward(loss).unwrap();
    let (gw, gb) = (be.download(grads.get(w).unwrap()).unwrap(), be.download(grads.get(b).unwrap()).unwrap());
    let mut flat = vec![7.0f32; 16 + 3];
    let mut tape = Tape::new(be);
    let (w2, _, loss) = record(&mut tape, &th, &x, &labels);
    let rest = tape.backward_into(loss, ViewMut::new(&mut flat, 1, 1, 16)).unwrap();
    assert!(rest.get(w2).is_none(), "a parameter with a place gets no separate gradient");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&flat[1..13]), bits(&gw));
    assert_eq!(bits(&flat[13..17]), bits(&gb));
    assert_eq!((flat[0], flat[17], flat[18]), (7.0, 7.0, 7.0), "outside the parameters: untouched");
}

/// `Counting` adds up exactly the bytes of uploads and downloads; kernels and device copies move
/// nothing across.
#[test]
fn counting_counts_only_the_transfers() {
    let be = Counting::new(cpu());
    let a = Tensor::<Counting<Cpu<f32>>>::from_host(&be, 2, 3, &[1.0; 6]).unwrap();
    let mut b = Tensor::<Counting<Cpu<f32>>>::zeros(&be, 2, 3).unwrap();
    be.relu(a.view(), b.view_mut()).unwrap();
    be.copy(a.view(), b.view_mut()).unwrap();
    let idx = Tensor::<Counting<Cpu<f32>>, u32>::from_host(&be, 1, 2, &[1, 0]).unwrap();
    be.upload_into(&[5.0, 6.0, 7.0], b.view_mut().range(0, 3)).unwrap();
    let t = be.transfers();
    assert_eq!((t.host_to_backend, t.uploads), (6 * 4 + 2 * 4 + 3 * 4, 3));
    assert_eq!((t.backend_to_host, t.downloads), (0, 0));
    let host = b.to_host(&be).unwrap();
    assert_eq!(host, vec![5.0, 6.0, 7.0, 1.0, 1.0, 1.0]);
    let t2 = be.transfers() - t;
    assert_eq!((t2.backend_to_host, t2.downloads, t2.host_to_backend), (24, 1, 0));
    let _ = idx;
}

/// An allocation that does not fit is an error naming what was asked, not an abort.
#[test]
fn an_allocation_that_does_not_fit_is_an_error() {
    let be = cpu();
    match be.alloc::<f32>(usize::MAX / 8) {
        Err(BackendError::OutOfMemory { bytes, .. }) => assert!(bytes > 1 << 60),
        other => panic!("expected OutOfMemory, got {:?}", other.map(|v| v.len())),
    }
}
