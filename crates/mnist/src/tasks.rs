//! Pure helpers that continual-learning scenarios build their tasks from: class subsets
//! (Split MNIST, even/odd), pixel permutations (Permuted MNIST) and rotations (Rotated MNIST).

use crate::load::Split;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Positions `i` (in increasing order) of the samples whose label is one of `classes`.
///
/// Panics if `labels.len()` exceeds `u32::MAX`.
///
/// ```
/// assert_eq!(engram_mnist::indices_of_classes(&[5, 0, 4, 1, 9, 0], &[0, 1]), [1, 3, 5]);
/// ```
pub fn indices_of_classes(labels: &[u8], classes: &[u8]) -> Vec<u32> {
    assert!(u32::try_from(labels.len()).is_ok(), "indices_of_classes: more than u32::MAX labels");
    let mut wanted = [false; 256];
    for &c in classes {
        wanted[usize::from(c)] = true;
    }
    labels.iter().enumerate().filter(|&(_, &l)| wanted[usize::from(l)]).map(|(i, _)| i as u32).collect()
}

/// A uniformly random permutation of `0..n`, fixed by `seed`: Fisher-Yates (Durstenfeld) on
/// `[0, 1, ..., n-1]`, for `i` from `n-1` down to 1 swapping position `i` with a position `j`
/// drawn uniformly from `0..=i` by a [`ChaCha8Rng`] seeded with `seed_from_u64(seed)`.
/// The same seed gives the same permutation on every platform.
///
/// Used as a pixel permutation, pixel `k` of the permuted image is pixel `perm[k]` of the
/// original (see [`permute_image`]).
///
/// Panics if `n` exceeds `u32::MAX`.
pub fn permutation(seed: u64, n: usize) -> Vec<u32> {
    let n32 = u32::try_from(n).expect("permutation: n exceeds u32::MAX");
    let mut perm: Vec<u32> = (0..n32).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..n32).rev() {
        let j = rng.random_range(0..=i);
        perm.swap(i as usize, j as usize);
    }
    perm
}

/// Applies a pixel permutation: `dst[k] = src[perm[k]]`.
///
/// Panics if the lengths differ or an entry of `perm` is out of range.
pub fn permute_image(src: &[f32], perm: &[u32], dst: &mut [f32]) {
    assert_eq!(src.len(), perm.len(), "permute_image: image and permutation lengths differ");
    assert_eq!(dst.len(), perm.len(), "permute_image: destination and permutation lengths differ");
    for (d, &p) in dst.iter_mut().zip(perm) {
        *d = src[p as usize];
    }
}

/// Every image of `split` permuted by `perm` ([`permute_image`]), image after image.
///
/// Panics if `perm.len() != split.dim` or an entry of `perm` is out of range.
pub fn permute_split(split: &Split, perm: &[u32]) -> Vec<f32> {
    assert_eq!(perm.len(), split.dim, "permute_split: permutation length differs from the image size");
    let mut out = vec![0.0; split.images.len()];
    if split.dim > 0 {
        for (src, dst) in split.images.chunks_exact(split.dim).zip(out.chunks_exact_mut(split.dim)) {
            permute_image(src, perm, dst);
        }
    }
    out
}

/// The four bilinear taps `(source index, weight)` of one destination pixel; a tap outside
/// the image has weight 0 (and index 0).
type Taps = [(u32, f32); 4];

/// Precomputed geometry of one rotation: sin, cos and the centre.
struct Rotation {
    rows: usize,
    cols: usize,
    sin: f64,
    cos: f64,
    cr: f64,
    cc: f64,
}

/// Rounds `x` to the nearest integer when it is within 1e-9 of it, so that rotations by
/// multiples of 90 degrees sample the grid exactly despite `cos(90°) ≈ 6e-17`.
fn snap(x: f64) -> f64 {
    let r = x.round();
    if (x - r).abs() < 1e-9 {
        r
    } else {
        x
    }
}

impl Rotation {
    fn new(rows: usize, cols: usize, angle_deg: f32) -> Self {
        let (sin, cos) = f64::from(angle_deg).to_radians().sin_cos();
        Self { rows, cols, sin, cos, cr: (rows as f64 - 1.0) / 2.0, cc: (cols as f64 - 1.0) / 2.0 }
    }

    /// The taps of destination pixel `(r, c)`: the source point is the destination point
    /// rotated by `-angle` about the centre.
    fn taps(&self, r: usize, c: usize) -> Taps {
        // Mathematical coordinates: x to the right, y up, origin at the centre.
        let x = c as f64 - self.cc;
        let y = self.cr - r as f64;
        let xs = x * self.cos + y * self.sin;
        let ys = -x * self.sin + y * self.cos;
        let sr = snap(self.cr - ys);
        let sc = snap(self.cc + xs);
        let (r0, c0) = (sr.floor(), sc.floor());
        let (fr, fc) = ((sr - r0) as f32, (sc - c0) as f32);
        let mut taps = [(0u32, 0.0f32); 4];
        let corners = [
            (0.0, 0.0, (1.0 - fr) * (1.0 - fc)),
            (0.0, 1.0, (1.0 - fr) * fc),
            (1.0, 0.0, fr * (1.0 - fc)),
            (1.0, 1.0, fr * fc),
        ];
        for (tap, (dr, dc, w)) in taps.iter_mut().zip(corners) {
            let (rr, cc) = (r0 + dr, c0 + dc);
            if w != 0.0 && rr >= 0.0 && cc >= 0.0 && rr < self.rows as f64 && cc < self.cols as f64 {
                *tap = ((rr as usize * self.cols + cc as usize) as u32, w);
            }
        }
        taps
    }
}

/// Interpolates one pixel from its taps (zero-weight taps are skipped, so the outside of the
/// image is exactly 0 whatever the source holds).
fn apply(src: &[f32], taps: &Taps) -> f32 {
    // A zero tap adds +0 instead of being skipped: the same sum (`v` starts at +0 and an exact
    // cancellation rounds to +0, so it is never -0, and `v + 0 = v`), without a branch; and not
    // `0 * src[i]`, which is NaN where that pixel is infinite.
    let mut v = 0.0;
    for &(i, w) in taps {
        v += if w != 0.0 { w * src[i as usize] } else { 0.0 };
    }
    v
}

/// Rotates a `rows x cols` row-major image by `angle_deg` degrees about its centre
/// `((rows-1)/2, (cols-1)/2)`, writing the result to `dst`.
///
/// Convention: a positive angle turns the picture **counter-clockwise as displayed** (row 0 at
/// the top): a pixel right of the centre moves above it under +90°. Each destination pixel takes
/// the bilinear interpolation of the source at the inversely rotated position; positions
/// outside the source read as 0. Rotations by multiples of 90° of a square image move pixels
/// exactly. A non-finite angle gives an all-zero image.
///
/// Panics if `src.len()` or `dst.len()` is not `rows * cols`, or `rows * cols > u32::MAX`.
pub fn rotate_image(src: &[f32], rows: usize, cols: usize, angle_deg: f32, dst: &mut [f32]) {
    let n = check_dims(rows, cols);
    assert_eq!(src.len(), n, "rotate_image: source is not rows * cols");
    assert_eq!(dst.len(), n, "rotate_image: destination is not rows * cols");
    if !angle_deg.is_finite() {
        dst.fill(0.0);
        return;
    }
    let rot = Rotation::new(rows, cols, angle_deg);
    for r in 0..rows {
        for c in 0..cols {
            dst[r * cols + c] = apply(src, &rot.taps(r, c));
        }
    }
}

/// Every image of `split` (each `rows x cols`) rotated by `angle_deg` ([`rotate_image`], same
/// results bit for bit), image after image. The interpolation taps are computed once.
///
/// Panics if `split.dim != rows * cols`.
pub fn rotate_split(split: &Split, rows: usize, cols: usize, angle_deg: f32) -> Vec<f32> {
    let n = check_dims(rows, cols);
    assert_eq!(split.dim, n, "rotate_split: split.dim is not rows * cols");
    let mut out = vec![0.0; split.images.len()];
    if n == 0 || !angle_deg.is_finite() {
        return out;
    }
    let rot = Rotation::new(rows, cols, angle_deg);
    let taps: Vec<Taps> = (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).map(|(r, c)| rot.taps(r, c)).collect();
    for (src, dst) in split.images.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        for (d, t) in dst.iter_mut().zip(&taps) {
            *d = apply(src, t);
        }
    }
    out
}

/// One rotation's bilinear taps, computed once and applied to many images: the same results
/// as [`rotate_image`], bit for bit, about eight times faster per image (the taps' geometry
/// costs more than the interpolation itself).
#[derive(Clone, Debug)]
pub struct Rotator {
    taps: Vec<Taps>,
    /// The same taps tap by tap (`index[k * n + p]` is pixel `p`'s tap `k`), for loads of eight
    /// pixels' taps at once ([`Rotator::apply`] with AVX2).
    index: Vec<u32>,
    weight: Vec<f32>,
}

impl Rotator {
    /// The taps of a rotation of `rows x cols` images by `angle_deg` degrees (a non-finite
    /// angle gives all-zero images, as [`rotate_image`]).
    ///
    /// Panics if `rows * cols` overflows or exceeds `u32::MAX`.
    pub fn new(rows: usize, cols: usize, angle_deg: f32) -> Self {
        let n = check_dims(rows, cols);
        let taps: Vec<Taps> = if angle_deg.is_finite() {
            let rot = Rotation::new(rows, cols, angle_deg);
            (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).map(|(r, c)| rot.taps(r, c)).collect()
        } else {
            vec![[(0, 0.0); 4]; n]
        };
        let index = (0..4).flat_map(|k| taps.iter().map(move |t| t[k].0)).collect();
        let weight = (0..4).flat_map(|k| taps.iter().map(move |t| t[k].1)).collect();
        Self { taps, index, weight }
    }

    /// Rotates `src` into `dst` (both `rows * cols`): per pixel [`apply`]'s sum, eight pixels
    /// at a time with AVX2 where the CPU has it (gathers of the source, then the same
    /// multiplies, zero-weight selects and additions in the same order: the same bits).
    ///
    /// Panics if a length differs from `rows * cols`.
    pub fn apply(&self, src: &[f32], dst: &mut [f32]) {
        assert_eq!(src.len(), self.taps.len(), "Rotator::apply: source is not rows * cols");
        assert_eq!(dst.len(), self.taps.len(), "Rotator::apply: destination is not rows * cols");
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && i32::try_from(src.len()).is_ok() {
            // SAFETY: the CPU has AVX2; every index is below rows * cols = src.len() (the taps
            // are built so, `Rotation::taps`), which fits the gathers' signed 32-bit offsets.
            done = unsafe { self.apply_avx2(src, dst) };
        }
        for (d, t) in dst[done..].iter_mut().zip(&self.taps[done..]) {
            *d = apply(src, t);
        }
    }

    /// The pixels of whole groups of eight; returns how many it wrote.
    ///
    /// # Safety
    /// The CPU supports AVX2, `src` and `dst` have the taps' length, and that length fits an
    /// `i32`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn apply_avx2(&self, src: &[f32], dst: &mut [f32]) -> usize {
        use std::arch::x86_64::*;
        let n = self.taps.len();
        let full = n - n % 8;
        let zero = _mm256_setzero_ps();
        for p in (0..full).step_by(8) {
            let mut v = zero;
            for k in 0..4 {
                // SAFETY: k * n + p + 8 <= 4n, the length of `index` and `weight`; the indices
                // are below src.len() (the caller's contract).
                let (w, s) = unsafe {
                    let idx = _mm256_loadu_si256(self.index.as_ptr().add(k * n + p).cast());
                    (_mm256_loadu_ps(self.weight.as_ptr().add(k * n + p)), _mm256_i32gather_ps::<4>(src.as_ptr(), idx))
                };
                // `if w != 0 { w * s } else { 0 }`: NEQ is true for a NaN weight, as `!=` is.
                let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(w, zero);
                v = _mm256_add_ps(v, _mm256_and_ps(nonzero, _mm256_mul_ps(w, s)));
            }
            // SAFETY: p + 8 <= n = dst.len().
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(p), v) };
        }
        full
    }
}

fn check_dims(rows: usize, cols: usize) -> usize {
    let n = rows.checked_mul(cols).expect("rotate: rows * cols overflows");
    assert!(u32::try_from(n).is_ok(), "rotate: rows * cols exceeds u32::MAX");
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic test image with distinct values.
    fn ramp(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols).map(|i| ((i * 37) % 101) as f32 / 100.0).collect()
    }

    fn rot(src: &[f32], rows: usize, cols: usize, a: f32) -> Vec<f32> {
        let mut dst = vec![f32::NAN; src.len()];
        rotate_image(src, rows, cols, a, &mut dst);
        dst
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn indices_of_classes_keeps_order_and_selects_exactly() {
        let labels = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5];
        assert_eq!(indices_of_classes(&labels, &[5, 1]), [1, 3, 4, 8, 10]);
        assert_eq!(indices_of_classes(&labels, &[]), Vec::<u32>::new());
        assert_eq!(indices_of_classes(&labels, &[7]), Vec::<u32>::new());
        let all: Vec<u32> = (0..labels.len() as u32).collect();
        assert_eq!(indices_of_classes(&labels, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), all);
    }

    #[test]
    fn permutation_is_a_deterministic_permutation() {
        let p = permutation(42, 784);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..784).collect::<Vec<u32>>());
        assert_eq!(p, permutation(42, 784), "same seed, same permutation");
        assert_ne!(p, permutation(43, 784), "different seeds differ");
        assert_ne!(p, sorted, "not the identity");
        assert_eq!(permutation(7, 0), Vec::<u32>::new());
        assert_eq!(permutation(7, 1), [0]);
    }

    #[test]
    fn permutation_is_pinned() {
        // Pins the algorithm (ChaCha8 + Fisher-Yates from the top): experiments must stay
        // reproducible across versions. Update only on a deliberate change.
        assert_eq!(permutation(0, 10), PINNED_0_10);
    }

    const PINNED_0_10: [u32; 10] = [1, 4, 0, 2, 7, 8, 3, 5, 9, 6];

    #[test]
    fn permute_image_and_split_follow_the_convention() {
        let perm = [2u32, 0, 1];
        let mut dst = [0.0; 3];
        permute_image(&[10.0, 20.0, 30.0], &perm, &mut dst);
        assert_eq!(dst, [30.0, 10.0, 20.0]);
        let split = Split { n: 2, dim: 3, images: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], labels: vec![0, 1] };
        assert_eq!(permute_split(&split, &perm), [3.0, 1.0, 2.0, 6.0, 4.0, 5.0]);
    }

    #[test]
    fn rotate_zero_is_identity() {
        for (r, c) in [(28, 28), (5, 7), (1, 1), (4, 1)] {
            let src = ramp(r, c);
            assert_eq!(rot(&src, r, c, 0.0), src);
            assert_eq!(rot(&src, r, c, 360.0), src);
        }
    }

    #[test]
    fn rotate_90_four_times_is_identity() {
        for side in [28, 5, 4] {
            let src = ramp(side, side);
            let mut img = src.clone();
            for _ in 0..4 {
                img = rot(&img, side, side, 90.0);
            }
            assert!(max_diff(&img, &src) <= 1e-5, "side {side}: {}", max_diff(&img, &src));
            // And -90 undoes +90.
            let back = rot(&rot(&src, side, side, 90.0), side, side, -90.0);
            assert!(max_diff(&back, &src) <= 1e-5);
        }
    }

    #[test]
    fn rotate_180_reverses_the_image() {
        for (r, c) in [(28, 28), (5, 7), (6, 3)] {
            let src = ramp(r, c);
            let mut rev = src.clone();
            rev.reverse();
            assert!(max_diff(&rot(&src, r, c, 180.0), &rev) <= 1e-5);
            assert!(max_diff(&rot(&src, r, c, -180.0), &rev) <= 1e-5);
        }
    }

    #[test]
    fn rotate_positive_is_counter_clockwise_as_displayed() {
        // 5x5, centre (2, 2). A dot right of the centre, at (2, 4).
        let mut src = vec![0.0; 25];
        src[2 * 5 + 4] = 1.0;
        let out = rot(&src, 5, 5, 90.0);
        // Counter-clockwise by 90 degrees as displayed: right -> up, i.e. row 0, column 2.
        assert!((out[2] - 1.0).abs() <= 1e-6, "{out:?}");
        assert!((out.iter().sum::<f32>() - 1.0).abs() <= 1e-6);
        // Clockwise with a negative angle: right -> down (row 4, column 2).
        let out = rot(&src, 5, 5, -90.0);
        assert!((out[4 * 5 + 2] - 1.0).abs() <= 1e-6, "{out:?}");
    }

    #[test]
    fn rotate_small_angle_roughly_conserves_mass() {
        // A blob well inside a 28x28 frame, like a digit.
        let mut src = vec![0.0; 784];
        for r in 6..22 {
            for c in 9..19 {
                src[r * 28 + c] = ((r + c) % 5) as f32 / 4.0;
            }
        }
        let mass: f32 = src.iter().sum();
        for a in [-15.0, -5.0, 3.0, 10.0, 15.0] {
            let out = rot(&src, 28, 28, a);
            let m: f32 = out.iter().sum();
            assert!((m - mass).abs() <= 0.03 * mass, "angle {a}: mass {m} vs {mass}");
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)), "bilinear stays within the input range");
        }
    }

    #[test]
    fn rotate_outside_is_zero_and_nan_angle_is_zero() {
        // 45 degrees of an all-ones square: the corners come from outside and are 0.
        let src = vec![1.0; 28 * 28];
        let out = rot(&src, 28, 28, 45.0);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[27], 0.0);
        assert_eq!(out[27 * 28], 0.0);
        assert_eq!(out[28 * 28 - 1], 0.0);
        assert!((out[14 * 28 + 14] - 1.0).abs() <= 1e-6);
        assert!(rot(&src, 28, 28, f32::NAN).iter().all(|&v| v == 0.0));
        assert!(rot(&src, 28, 28, f32::INFINITY).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn rotate_split_matches_rotate_image_exactly() {
        let (r, c) = (6, 5);
        let images: Vec<f32> = (0..3).flat_map(|k| ramp(r, c).into_iter().map(move |v| v * (k + 1) as f32)).collect();
        let split = Split { n: 3, dim: r * c, images, labels: vec![0, 1, 2] };
        for a in [0.0, 13.7, 90.0, -200.0] {
            let all = rotate_split(&split, r, c, a);
            for i in 0..3 {
                let one = rot(split.image(i), r, c, a);
                assert_eq!(&all[i * r * c..(i + 1) * r * c], &one[..], "angle {a}, image {i}");
            }
        }
    }

    /// Rotator (taps computed once; eight pixels at a time with AVX2, the rest one by one)
    /// gives rotate_image's results bit for bit: NaN angles, sizes that are not a multiple of
    /// eight pixels, and sources holding infinities and NaN (whose zero-weight taps must add
    /// +0, not `0 * inf`).
    #[test]
    fn rotator_matches_rotate_image_exactly() {
        for (r, c) in [(28, 28), (5, 7), (13, 11), (1, 1), (3, 40)] {
            let plain = ramp(r, c);
            let mut odd = ramp(r, c);
            for (i, v) in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN].into_iter().enumerate() {
                let at = (i * 7) % odd.len();
                odd[at] = v;
            }
            for src in [&plain, &odd] {
                for a in [0.0, 9.3, 45.0, 90.0, 177.7, -31.0, f32::NAN] {
                    let mut dst = vec![1.0; r * c];
                    Rotator::new(r, c, a).apply(src, &mut dst);
                    let want = rot(src, r, c, a);
                    let same = dst.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{r}x{c}, angle {a}: {dst:?} vs {want:?}");
                }
            }
        }
    }
}
