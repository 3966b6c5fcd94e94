//! The bandwidth yardstick of the `fused_step` benchmark: a STREAM triad (McCalpin's STREAM,
//! kernel "Triad"), parallel over the same fixed chunks as the fused step.

use rayon::prelude::*;

use crate::CHUNK;

/// STREAM triad `a[i] = b[i] + s * c[i]`, parallel over chunks of [`CHUNK`] elements with rayon,
/// exactly as [`fused_step_f32`](crate::fused_step_f32) walks memory. By STREAM's convention it
/// moves 12 bytes per element (two f32 reads, one f32 write; the write-allocate read of `a` is
/// not counted).
///
/// # Panics
/// When the three slices differ in length.
pub fn triad_f32(a: &mut [f32], b: &[f32], c: &[f32], s: f32) {
    assert!(a.len() == b.len() && a.len() == c.len(), "engram-si: triad slices differ in length");
    a.par_chunks_mut(CHUNK).zip(b.par_chunks(CHUNK)).zip(c.par_chunks(CHUNK)).for_each(|((a, b), c)| {
        for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
            *a = b + s * c;
        }
    });
}
