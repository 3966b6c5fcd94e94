//! Reading and writing run state through a checkpoint: the typed accessors every part of the run
//! uses for its tensors, with the checks that make a damaged or foreign checkpoint a clear
//! refusal (names, dtypes, lengths, finite values).

use engram_ckpt::{Checkpoint, Data, Tensor};
use engram_tape::{Backend, Element, Result as BackendResult, View};

/// The F32 tensor `name`, which must hold `len` values.
pub fn f32s<'a>(ck: &'a Checkpoint, name: &str, len: usize) -> Result<&'a [f32], String> {
    let t = ck.tensor(name).map_err(|e| e.to_string())?;
    match &t.data {
        Data::F32(v) if v.len() == len && t.shape.len() <= 2 => Ok(v),
        Data::F32(v) if v.len() == len => {
            Err(format!("tensor `{name}` has shape {:?}; this run needs a vector or matrix of {len} values", t.shape))
        }
        Data::F32(v) => Err(format!("tensor `{name}` holds {} values; this run needs {len}", v.len())),
        Data::U32(_) => Err(format!("tensor `{name}` is U32; expected F32")),
    }
}

/// The U32 tensor `name`.
pub fn u32s<'a>(ck: &'a Checkpoint, name: &str) -> Result<&'a [u32], String> {
    match &ck.tensor(name).map_err(|e| e.to_string())?.data {
        Data::U32(v) => Ok(v),
        Data::F32(_) => Err(format!("tensor `{name}` is F32; expected U32")),
    }
}

/// Refuses a tensor holding NaN or an infinity.
pub fn finite(name: &str, v: &[f32]) -> Result<(), String> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(format!("tensor `{name}` holds {} at index {i}: the run had already diverged", v[i])),
        None => Ok(()),
    }
}

/// The F32 tensor `name` of `len` finite values, uploaded to `be`.
pub fn upload_f32<B: Backend>(be: &B, ck: &Checkpoint, name: &str, len: usize) -> Result<B::Buffer<f32>, String> {
    let v = f32s(ck, name, len)?;
    finite(name, v)?;
    be.upload(v).map_err(|e| e.to_string())
}

/// [`upload_f32`] of a tensor that is never negative (an importance, a Fisher sum, Adam's
/// second moment): a negative value is refused as damage, not left to surface later as a
/// diverging run.
pub fn upload_nonnegative_f32<B: Backend>(
    be: &B,
    ck: &Checkpoint,
    name: &str,
    len: usize,
) -> Result<B::Buffer<f32>, String> {
    let v = f32s(ck, name, len)?;
    finite(name, v)?;
    if let Some(i) = v.iter().position(|&x| x < 0.0) {
        return Err(format!("tensor `{name}` holds {} at index {i}; its values are never negative", v[i]));
    }
    be.upload(v).map_err(|e| e.to_string())
}

/// A whole backend buffer as a checkpoint tensor (a download).
pub fn download_f32<B: Backend>(be: &B, buf: &B::Buffer<f32>) -> BackendResult<Tensor> {
    Ok(Tensor::f32(be.download(View::row_of(be, buf))?))
}

/// A whole backend buffer on the host (a download).
pub fn host<B: Backend, E: Element>(be: &B, buf: &B::Buffer<E>) -> BackendResult<Vec<E>> {
    be.download(View::row_of(be, buf))
}
