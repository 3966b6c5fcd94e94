//! Tensors on a backend: an owned dense matrix ([`Tensor`]) and borrowed windows into any flat
//! buffer ([`View`], [`ViewMut`]).
//!
//! Every tensor is a dense, row-major `rows x cols` matrix; a scalar is `1 x 1`, a bias `1 x cols`.
//! A view is a buffer, an element offset and a shape: the model's ONE parameter vector serves as
//! every layer's weight and bias tensors (a view each, no copy), and ONE gradient vector receives
//! every layer's gradients in place (a mutable view each).

use crate::{Backend, Element, Result};
use std::fmt;

/// A read-only `rows x cols` window of a backend buffer, starting `offset` elements in.
pub struct View<'a, B: Backend, E: Element = <B as Backend>::T> {
    /// The buffer.
    pub buf: &'a B::Buffer<E>,
    /// Index of the first element.
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl<B: Backend, E: Element> Clone for View<'_, B, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend, E: Element> Copy for View<'_, B, E> {}

impl<B: Backend, E: Element> fmt::Debug for View<'_, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "View<{}>({}x{} at {})", E::NAME, self.rows, self.cols, self.offset)
    }
}

impl<'a, B: Backend, E: Element> View<'a, B, E> {
    /// The window `rows x cols` of `buf` starting at `offset`.
    pub fn new(buf: &'a B::Buffer<E>, offset: usize, rows: usize, cols: usize) -> Self {
        Self { buf, offset, rows, cols }
    }

    /// The whole buffer as one row.
    pub fn row_of(be: &B, buf: &'a B::Buffer<E>) -> Self {
        Self { buf, offset: 0, rows: 1, cols: be.buffer_len(buf) }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// True when the view holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Rows `start..end` of this view.
    pub fn rows(&self, start: usize, end: usize) -> Self {
        assert!(start <= end && end <= self.rows, "rows {start}..{end} of a {}-row view", self.rows);
        Self { buf: self.buf, offset: self.offset + start * self.cols, rows: end - start, cols: self.cols }
    }

    /// Elements `start..end` (in row-major order) as one row.
    pub fn range(&self, start: usize, end: usize) -> Self {
        assert!(start <= end && end <= self.len(), "elements {start}..{end} of a view of {}", self.len());
        Self { buf: self.buf, offset: self.offset + start, rows: 1, cols: end - start }
    }

    /// The same elements as `rows x cols`.
    pub fn reshape(&self, rows: usize, cols: usize) -> Self {
        assert_eq!(rows * cols, self.len(), "reshape {}x{} to {rows}x{cols}", self.rows, self.cols);
        Self { buf: self.buf, offset: self.offset, rows, cols }
    }
}

/// A writable `rows x cols` window of a backend buffer, starting `offset` elements in.
pub struct ViewMut<'a, B: Backend, E: Element = <B as Backend>::T> {
    /// The buffer.
    pub buf: &'a mut B::Buffer<E>,
    /// Index of the first element.
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl<B: Backend, E: Element> fmt::Debug for ViewMut<'_, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ViewMut<{}>({}x{} at {})", E::NAME, self.rows, self.cols, self.offset)
    }
}

impl<'a, B: Backend, E: Element> ViewMut<'a, B, E> {
    /// The window `rows x cols` of `buf` starting at `offset`.
    pub fn new(buf: &'a mut B::Buffer<E>, offset: usize, rows: usize, cols: usize) -> Self {
        Self { buf, offset, rows, cols }
    }

    /// The whole buffer as one row.
    pub fn row_of(be: &B, buf: &'a mut B::Buffer<E>) -> Self {
        let cols = be.buffer_len(buf);
        Self { buf, offset: 0, rows: 1, cols }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// True when the view holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// A shorter-lived copy of this view (to pass it on and keep it).
    pub fn reborrow(&mut self) -> ViewMut<'_, B, E> {
        ViewMut { buf: self.buf, offset: self.offset, rows: self.rows, cols: self.cols }
    }

    /// The same window, read-only.
    pub fn as_view(&self) -> View<'_, B, E> {
        View { buf: self.buf, offset: self.offset, rows: self.rows, cols: self.cols }
    }

    /// Rows `start..end` of this view.
    pub fn rows(self, start: usize, end: usize) -> Self {
        assert!(start <= end && end <= self.rows, "rows {start}..{end} of a {}-row view", self.rows);
        Self { buf: self.buf, offset: self.offset + start * self.cols, rows: end - start, cols: self.cols }
    }

    /// Elements `start..end` (in row-major order) as one row.
    pub fn range(self, start: usize, end: usize) -> Self {
        assert!(start <= end && end <= self.len(), "elements {start}..{end} of a view of {}", self.len());
        Self { buf: self.buf, offset: self.offset + start, rows: 1, cols: end - start }
    }

    /// The same elements as `rows x cols`.
    pub fn reshape(self, rows: usize, cols: usize) -> Self {
        assert_eq!(rows * cols, self.len(), "reshape {}x{} to {rows}x{cols}", self.rows, self.cols);
        Self { buf: self.buf, offset: self.offset, rows, cols }
    }
}

/// An owned dense `rows x cols` matrix in a backend's memory (a buffer of exactly `rows * cols`).
pub struct Tensor<B: Backend, E: Element = <B as Backend>::T> {
    /// The elements, row-major.
    pub buf: B::Buffer<E>,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl<B: Backend, E: Element> fmt::Debug for Tensor<B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}>({}x{})", E::NAME, self.rows, self.cols)
    }
}

impl<B: Backend, E: Element> Tensor<B, E> {
    /// A zero-filled `rows x cols` tensor.
    pub fn zeros(be: &B, rows: usize, cols: usize) -> Result<Self> {
        Ok(Self { buf: be.alloc(rows * cols)?, rows, cols })
    }

    /// A tensor from row-major host data (`data.len() == rows * cols`): an upload.
    pub fn from_host(be: &B, rows: usize, cols: usize, data: &[E]) -> Result<Self> {
        assert_eq!(data.len(), rows * cols, "{} values for a {rows}x{cols} tensor", data.len());
        Ok(Self { buf: be.upload(data)?, rows, cols })
    }

    /// The elements, row-major, on the host: a download.
    pub fn to_host(&self, be: &B) -> Result<Vec<E>> {
        be.download(self.view())
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// True when the tensor holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole tensor, read-only.
    pub fn view(&self) -> View<'_, B, E> {
        View { buf: &self.buf, offset: 0, rows: self.rows, cols: self.cols }
    }

    /// The whole tensor, writable.
    pub fn view_mut(&mut self) -> ViewMut<'_, B, E> {
        ViewMut { buf: &mut self.buf, offset: 0, rows: self.rows, cols: self.cols }
    }
}
