//! A backend wrapper that counts the bytes crossing between host and backend.
//!
//! [`Counting`] runs every kernel on the backend it wraps and adds up what passes through the
//! transfer points of the contract ([`Backend::upload`], [`Backend::upload_into`],
//! [`Backend::download`]). It makes the claim "the run state lives on the backend" checkable: a
//! test runs a whole continual-learning run on `Counting<Cpu<f32>>` and reads how many bytes
//! moved per training step and per task.

use crate::backend::{PixelMap, Result};
use crate::{Backend, Element, View, ViewMut};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Bytes and calls that crossed between host and backend so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Bytes copied host -> backend.
    pub host_to_backend: u64,
    /// Bytes copied backend -> host.
    pub backend_to_host: u64,
    /// Number of host -> backend copies.
    pub uploads: u64,
    /// Number of backend -> host copies.
    pub downloads: u64,
}

impl std::ops::Sub for Transfers {
    type Output = Transfers;
    fn sub(self, o: Transfers) -> Transfers {
        Transfers {
            host_to_backend: self.host_to_backend - o.host_to_backend,
            backend_to_host: self.backend_to_host - o.backend_to_host,
            uploads: self.uploads - o.uploads,
            downloads: self.downloads - o.downloads,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
    uploads: AtomicU64,
    downloads: AtomicU64,
}

/// `B`, with every host <-> backend transfer counted (clones share the counts).
#[derive(Clone, Debug, Default)]
pub struct Counting<B: Backend> {
    inner: B,
    counters: Arc<Counters>,
}

impl<B: Backend> Counting<B> {
    /// Wraps `inner`; the counts start at zero.
    pub fn new(inner: B) -> Self {
        Self { inner, counters: Arc::default() }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// What has crossed so far.
    pub fn transfers(&self) -> Transfers {
        let c = &self.counters;
        Transfers {
            host_to_backend: c.up.load(Relaxed),
            backend_to_host: c.down.load(Relaxed),
            uploads: c.uploads.load(Relaxed),
            downloads: c.downloads.load(Relaxed),
        }
    }

    fn up<E: Element>(&self, len: usize) {
        self.counters.up.fetch_add(crate::element::bytes_of::<E>(len), Relaxed);
        self.counters.uploads.fetch_add(1, Relaxed);
    }

    fn down<E: Element>(&self, len: usize) {
        self.counters.down.fetch_add(crate::element::bytes_of::<E>(len), Relaxed);
        self.counters.downloads.fetch_add(1, Relaxed);
    }
}

/// The same window, seen as one of the wrapped backend.
pub fn inner_view<'a, B: Backend, E: Element>(v: View<'a, Counting<B>, E>) -> View<'a, B, E> {
    View::new(v.buf, v.offset, v.rows, v.cols)
}

/// The same writable window, seen as one of the wrapped backend.
pub fn inner_mut<'a, B: Backend, E: Element>(v: ViewMut<'a, Counting<B>, E>) -> ViewMut<'a, B, E> {
    ViewMut::new(v.buf, v.offset, v.rows, v.cols)
}

fn inner_map<'a, B: Backend>(m: PixelMap<'a, Counting<B>>) -> PixelMap<'a, B> {
    match m {
        PixelMap::Identity => PixelMap::Identity,
        PixelMap::Shared(v) => PixelMap::Shared(inner_view(v)),
        PixelMap::PerRow { ids, maps } => PixelMap::PerRow { ids: inner_view(ids), maps: inner_view(maps) },
    }
}

use inner_mut as im;
use inner_view as iv;

impl<B: Backend> Backend for Counting<B> {
    type T = B::T;
    type Buffer<E: Element> = B::Buffer<E>;

    fn name(&self) -> String {
        format!("{} (transfers counted)", self.inner.name())
    }
    fn alloc<E: Element>(&self, len: usize) -> Result<B::Buffer<E>> {
        self.inner.alloc(len)
    }
    fn buffer_len<E: Element>(&self, buf: &B::Buffer<E>) -> usize {
        self.inner.buffer_len(buf)
    }
    fn upload<E: Element>(&self, host: &[E]) -> Result<B::Buffer<E>> {
        self.up::<E>(host.len());
        self.inner.upload(host)
    }
    fn upload_into<E: Element>(&self, host: &[E], dst: ViewMut<'_, Self, E>) -> Result<()> {
        self.up::<E>(host.len());
        self.inner.upload_into(host, im(dst))
    }
    fn download<E: Element>(&self, src: View<'_, Self, E>) -> Result<Vec<E>> {
        self.down::<E>(src.len());
        self.inner.download(iv(src))
    }
    fn copy<E: Element>(&self, src: View<'_, Self, E>, dst: ViewMut<'_, Self, E>) -> Result<()> {
        self.inner.copy(iv(src), im(dst))
    }
    fn fill<E: Element>(&self, dst: ViewMut<'_, Self, E>, value: E) -> Result<()> {
        self.inner.fill(im(dst), value)
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
    fn matmul(
        &self,
        a: View<'_, Self>,
        ta: bool,
        b: View<'_, Self>,
        tb: bool,
        out: ViewMut<'_, Self>,
        accumulate: bool,
    ) -> Result<()> {
        self.inner.matmul(iv(a), ta, iv(b), tb, im(out), accumulate)
    }
    fn matmul_tn_blocks(
        &self,
        a: View<'_, Self>,
        b: View<'_, Self>,
        blocks: &[std::ops::Range<usize>],
        out: ViewMut<'_, Self>,
        stride: usize,
    ) -> Result<()> {
        self.inner.matmul_tn_blocks(iv(a), iv(b), blocks, im(out), stride)
    }
    fn add_row(&self, x: View<'_, Self>, row: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.inner.add_row(iv(x), iv(row), im(out))
    }
    fn add_bias(&self, y: ViewMut<'_, Self>, bias: View<'_, Self>, relu: bool) -> Result<()> {
        self.inner.add_bias(im(y), iv(bias), relu)
    }
    fn sum_rows(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, accumulate: bool) -> Result<()> {
        self.inner.sum_rows(iv(x), im(out), accumulate)
    }
    fn add(&self, a: View<'_, Self>, b: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.inner.add(iv(a), iv(b), im(out))
    }
    fn sub(&self, a: View<'_, Self>, b: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.inner.sub(iv(a), iv(b), im(out))
    }
    fn mul(&self, a: View<'_, Self>, b: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.inner.mul(iv(a), iv(b), im(out))
    }
    fn scale(&self, a: View<'_, Self>, s: B::T, out: ViewMut<'_, Self>) -> Result<()> {
        self.inner.scale(iv(a), s, im(out))
    }
    fn accumulate(&self, acc: ViewMut<'_, Self>, x: View<'_, Self>) -> Result<()> {
        self.inner.accumulate(im(acc), iv(x))
    }
    fn abs(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.inner.abs(iv(x), im(out))
    }
    fn relu(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.inner.relu(iv(x), im(out))
    }
    fn relu_backward(&self, x: View<'_, Self>, gy: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.inner.relu_backward(iv(x), iv(gy), im(out))
    }
    fn sum_all(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.inner.sum_all(iv(x), im(out))
    }
    fn broadcast_scalar(&self, g: View<'_, Self>, s: B::T, out: ViewMut<'_, Self>) -> Result<()> {
        self.inner.broadcast_scalar(iv(g), s, im(out))
    }
    fn accumulate_f64(&self, acc: ViewMut<'_, Self, f64>, x: View<'_, Self>) -> Result<()> {
        self.inner.accumulate_f64(im(acc), iv(x))
    }
    fn dots_f64(&self, rows: View<'_, Self>, v: View<'_, Self>, out: ViewMut<'_, Self, f64>) -> Result<()> {
        self.inner.dots_f64(iv(rows), iv(v), im(out))
    }
    fn gram_f64(&self, rows: View<'_, Self>, out: ViewMut<'_, Self, f64>) -> Result<()> {
        self.inner.gram_f64(iv(rows), im(out))
    }
    fn combine_f64(&self, g: ViewMut<'_, Self>, rows: View<'_, Self>, w: View<'_, Self, f64>) -> Result<()> {
        self.inner.combine_f64(im(g), iv(rows), iv(w))
    }
    fn first_non_finite(&self, x: View<'_, Self>, out: ViewMut<'_, Self, u64>) -> Result<()> {
        self.inner.first_non_finite(iv(x), im(out))
    }
    fn count_nonzero(&self, x: View<'_, Self>, out: ViewMut<'_, Self, u64>) -> Result<()> {
        self.inner.count_nonzero(iv(x), im(out))
    }
    fn log_softmax(&self, x: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.inner.log_softmax(iv(x), im(out))
    }
    fn log_softmax_backward(&self, y: View<'_, Self>, gy: View<'_, Self>, out: ViewMut<'_, Self>) -> Result<()> {
        self.inner.log_softmax_backward(iv(y), iv(gy), im(out))
    }
    fn masked_xent(
        &self,
        logits: View<'_, Self>,
        labels: View<'_, Self, u32>,
        mask: Option<View<'_, Self>>,
        loss: ViewMut<'_, Self>,
        probs: ViewMut<'_, Self>,
    ) -> Result<()> {
        self.inner.masked_xent(iv(logits), iv(labels), mask.map(iv), im(loss), im(probs))
    }
    fn masked_xent_backward(
        &self,
        probs: View<'_, Self>,
        labels: View<'_, Self, u32>,
        gy: View<'_, Self>,
        out: ViewMut<'_, Self>,
    ) -> Result<()> {
        self.inner.masked_xent_backward(iv(probs), iv(labels), iv(gy), im(out))
    }
    fn gather_rows<E: Element>(
        &self,
        src: View<'_, Self, E>,
        rows: View<'_, Self, u32>,
        map: PixelMap<'_, Self>,
        out: ViewMut<'_, Self, E>,
    ) -> Result<()> {
        self.inner.gather_rows(iv(src), iv(rows), inner_map(map), im(out))
    }
    fn count_correct(
        &self,
        logits: View<'_, Self>,
        labels: View<'_, Self, u32>,
        mask: Option<View<'_, Self>>,
        out: ViewMut<'_, Self, u32>,
    ) -> Result<()> {
        self.inner.count_correct(iv(logits), iv(labels), mask.map(iv), im(out))
    }
}
