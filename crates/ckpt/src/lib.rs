//! engram-ckpt: checkpoints on disk.
//!
//! A checkpoint is a directory `ckpt-<steps>` holding two files:
//!
//! * `tensors.safetensors`: every tensor (parameters, optimizer moments, importances, episodic
//!   memories, the current epoch's sample order), little-endian, in the
//!   [safetensors](https://huggingface.co/docs/safetensors) format: Python's
//!   `safetensors.numpy.load_file` and NumPy read it as they read any model file.
//! * `manifest.json`: the format and its version, each tensor's dtype, shape and the sha256 of
//!   its bytes, and a free-form `run` object (for engram: the scenario, every hyperparameter, the
//!   progress, the random streams' states, the accuracy matrix so far) with the sha256 of that
//!   object (`run_sha256`, [`run_digest`]): a changed byte of a hyperparameter is refused like a
//!   changed tensor.
//!
//! Writing is atomic: both files go to a temporary directory beside the target, each is
//! fsynced, the directory is fsynced and renamed into place, and the parent directory is
//! fsynced. A crash (or a full disk) at any point leaves either the old checkpoints alone or the
//! new one complete; a failed write removes its temporary directory and says why.
//!
//! Reading trusts nothing: only regular files are read (not a FIFO, a device or a link), the
//! manifest is parsed strictly and its run record checked against its digest, every size is
//! checked before it is used, the safetensors header is validated, and each tensor's dtype, shape and sha256 must
//! match the manifest. A truncated or corrupted checkpoint is refused with an error that names
//! the tensor (or the file) at fault. Reading never panics, whatever the bytes (property tests in
//! `tests/`, and the `checkpoint` target under `fuzz/`).
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod disk;
use disk::read_capped;
pub use disk::{latest, list, name_for, prune, resolve, write_atomic, write_atomic_with, write_file_synced};

/// The manifest's `format` field.
pub const FORMAT: &str = "engram-checkpoint";
/// The version of the layout this crate writes and reads.
pub const VERSION: u32 = 1;
/// The tensor file inside a checkpoint directory.
pub const TENSORS_FILE: &str = "tensors.safetensors";
/// The manifest inside a checkpoint directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Checkpoint directories are named `ckpt-<10-digit steps>`.
pub const PREFIX: &str = "ckpt-";
/// Largest file this crate reads (a guard against nonsense, far above any engram model).
pub const MAX_FILE_BYTES: u64 = 16 << 30;

/// A tensor's elements.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// 32-bit floats (safetensors `F32`).
    F32(Vec<f32>),
    /// 32-bit unsigned integers (safetensors `U32`).
    U32(Vec<u32>),
}

impl Data {
    /// The safetensors dtype name.
    pub fn dtype(&self) -> &'static str {
        match self {
            Data::F32(_) => "F32",
            Data::U32(_) => "U32",
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::U32(v) => v.len(),
        }
    }

    /// Whether there is no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The little-endian bytes, as stored.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// One tensor: a shape (row-major) and its elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The shape; the product of its entries is the number of elements.
    pub shape: Vec<usize>,
    /// The elements.
    pub data: Data,
}

impl Tensor {
    /// A 1-D `f32` tensor.
    pub fn f32(v: Vec<f32>) -> Self {
        Self { shape: vec![v.len()], data: Data::F32(v) }
    }

    /// A 1-D `u32` tensor.
    pub fn u32(v: Vec<u32>) -> Self {
        Self { shape: vec![v.len()], data: Data::U32(v) }
    }

    /// A 2-D tensor of `rows` rows (the columns follow from the length).
    ///
    /// # Panics
    /// If `rows` does not divide the number of elements (a programming error).
    pub fn matrix(rows: usize, data: Data) -> Self {
        let n = data.len();
        let cols = n.checked_div(rows).unwrap_or(0);
        assert_eq!(rows * cols, n, "{n} elements do not make {rows} rows");
        Self { shape: vec![rows, cols], data }
    }
}

/// The record of one tensor in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorEntry {
    /// `F32` or `U32`.
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// sha256 of the tensor's little-endian bytes, lower-case hex.
    pub sha256: String,
}

/// The manifest file, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The layout version ([`VERSION`]).
    pub version: u32,
    /// The engram version that wrote it.
    pub engram_version: String,
    /// The tensor file's name ([`TENSORS_FILE`]).
    pub tensors_file: String,
    /// Every tensor, by name.
    pub tensors: BTreeMap<String, TensorEntry>,
    /// What the writer wants to remember (engram: the run).
    pub run: serde_json::Value,
    /// sha256 of `run` as compact JSON ([`run_digest`]), lower-case hex: a changed byte of the
    /// run record (a hyperparameter, a count) is refused like a changed tensor. Absent only in
    /// checkpoints written before engram 0.1 recorded it, which are read as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_sha256: Option<String>,
}

/// The digest [`Manifest::run_sha256`] holds: sha256 of `run` serialized as compact JSON
/// (object keys sorted, numbers in their shortest exact form, as serde_json writes them).
pub fn run_digest(run: &serde_json::Value) -> String {
    sha256_hex(&serde_json::to_vec(run).expect("a JSON value always serializes"))
}

/// A checkpoint in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The manifest's `run` object.
    pub run: serde_json::Value,
    /// The tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CkptError {
    /// A file-system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest is not a valid engram manifest.
    #[error("manifest {path}: {problem}")]
    Manifest {
        /// The file (or `<bytes>`).
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// The tensor file as a whole is unreadable (its header is cut or malformed).
    #[error("tensor file {path}: {problem}")]
    TensorFile {
        /// The file (or `<bytes>`).
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// One tensor is missing, truncated, of the wrong type or shape, or corrupted.
    #[error("tensor `{name}`: {problem}")]
    Tensor {
        /// The tensor's name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// No checkpoint where one was expected.
    #[error("{0}")]
    NotFound(String),
}

pub(crate) fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CkptError + 'a {
    move |source| CkptError::Io { what, path: path.to_path_buf(), source }
}

/// sha256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct View<'a> {
    dtype: safetensors::Dtype,
    shape: &'a [usize],
    bytes: Vec<u8>,
}

impl safetensors::View for &View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

impl Checkpoint {
    /// Encodes the checkpoint: `(manifest.json bytes, tensors.safetensors bytes)`.
    pub fn to_bytes(&self) -> Result<(Vec<u8>, Vec<u8>), CkptError> {
        let mut views = Vec::with_capacity(self.tensors.len());
        let mut entries = BTreeMap::new();
        for (name, t) in &self.tensors {
            if element_count(&t.shape) != Some(t.data.len()) {
                return Err(CkptError::Tensor {
                    name: name.clone(),
                    problem: format!("shape {:?} does not hold {} elements", t.shape, t.data.len()),
                });
            }
            let bytes = t.data.to_le_bytes();
            entries.insert(
                name.clone(),
                TensorEntry { dtype: t.data.dtype().into(), shape: t.shape.clone(), sha256: sha256_hex(&bytes) },
            );
            let dtype = match t.data {
                Data::F32(_) => safetensors::Dtype::F32,
                Data::U32(_) => safetensors::Dtype::U32,
            };
            views.push((name.clone(), View { dtype, shape: &t.shape, bytes }));
        }
        let st = safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), None)
            .map_err(|e| CkptError::TensorFile { path: "<bytes>".into(), problem: e.to_string() })?;
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            engram_version: env!("CARGO_PKG_VERSION").into(),
            tensors_file: TENSORS_FILE.into(),
            tensors: entries,
            run: self.run.clone(),
            run_sha256: Some(run_digest(&self.run)),
        };
        let mut m = serde_json::to_vec_pretty(&manifest).expect("a manifest always serializes");
        m.push(b'\n');
        Ok((m, st))
    }

    /// Decodes and verifies a checkpoint from its two files' bytes (never panics).
    pub fn from_bytes(manifest: &[u8], tensors: &[u8]) -> Result<Self, CkptError> {
        Self::decode(manifest, tensors, "<bytes>", "<bytes>")
    }

    fn decode(manifest: &[u8], st: &[u8], mpath: &str, tpath: &str) -> Result<Self, CkptError> {
        let m = parse_manifest(manifest, mpath)?;
        let header = check_header(st, &m, tpath)?;
        let file = safetensors::SafeTensors::deserialize(st)
            .map_err(|e| CkptError::TensorFile { path: tpath.into(), problem: e.to_string() })?;
        let mut out = BTreeMap::new();
        for (name, entry) in &m.tensors {
            let bad = |problem: String| CkptError::Tensor { name: name.clone(), problem };
            let view = file.tensor(name).map_err(|_| bad(format!("missing from {tpath}")))?;
            let dtype = match view.dtype() {
                safetensors::Dtype::F32 => "F32",
                safetensors::Dtype::U32 => "U32",
                other => return Err(bad(format!("has dtype {other:?}; engram stores only F32 and U32"))),
            };
            if dtype != entry.dtype {
                return Err(bad(format!("has dtype {dtype} in {tpath}, the manifest says {}", entry.dtype)));
            }
            if view.shape() != entry.shape.as_slice() {
                return Err(bad(format!(
                    "has shape {:?} in {tpath}, the manifest says {:?}",
                    view.shape(),
                    entry.shape
                )));
            }
            let bytes = view.data();
            let n = element_count(&entry.shape).ok_or_else(|| bad("its shape overflows".into()))?;
            if n.checked_mul(4) != Some(bytes.len()) {
                return Err(bad(format!("holds {} bytes for {n} elements of 4 bytes", bytes.len())));
            }
            let sum = sha256_hex(bytes);
            if sum != entry.sha256 {
                return Err(bad(format!(
                    "is corrupted: its bytes hash to sha256 {sum}, the manifest recorded {}",
                    entry.sha256
                )));
            }
            let data = match dtype {
                "F32" => {
                    Data::F32(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
                }
                _ => Data::U32(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            };
            out.insert(name.clone(), Tensor { shape: entry.shape.clone(), data });
        }
        for name in header.keys() {
            if !m.tensors.contains_key(name) {
                return Err(CkptError::Tensor {
                    name: name.clone(),
                    problem: format!("is in {tpath} but not in the manifest"),
                });
            }
        }
        Ok(Self { run: m.run, tensors: out })
    }

    /// Reads and verifies the checkpoint in directory `dir`.
    pub fn read(dir: &Path) -> Result<Self, CkptError> {
        let mp = dir.join(MANIFEST_FILE);
        let tp = dir.join(TENSORS_FILE);
        let m = read_capped(&mp)?;
        let t = read_capped(&tp)?;
        Self::decode(&m, &t, &mp.display().to_string(), &tp.display().to_string())
    }

    /// A tensor by name, or an error naming it.
    pub fn tensor(&self, name: &str) -> Result<&Tensor, CkptError> {
        self.tensors
            .get(name)
            .ok_or_else(|| CkptError::Tensor { name: name.into(), problem: "is missing from the checkpoint".into() })
    }
}

/// Parses and checks a manifest (format, version, names, dtypes, shapes, digests).
pub fn parse_manifest(bytes: &[u8], path: &str) -> Result<Manifest, CkptError> {
    let bad = |problem: String| CkptError::Manifest { path: path.into(), problem };
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(format!("not an engram manifest: {e}")))?;
    if m.format != FORMAT {
        return Err(bad(format!("format is {:?}, expected {FORMAT:?}", m.format)));
    }
    if m.version != VERSION {
        return Err(bad(format!("layout version {} (this engram reads version {VERSION})", m.version)));
    }
    if m.tensors_file != TENSORS_FILE {
        return Err(bad(format!("tensors_file is {:?}, expected {TENSORS_FILE:?}", m.tensors_file)));
    }
    if let Some(want) = &m.run_sha256 {
        let got = run_digest(&m.run);
        if *want != got {
            return Err(bad(format!(
                "the run record does not match its digest (run_sha256 {want}, the record hashes to {got}): \
                 it was edited or damaged after it was written"
            )));
        }
    }
    for (name, e) in &m.tensors {
        let tbad = |problem: String| CkptError::Tensor { name: name.clone(), problem };
        if name.is_empty() || name == "__metadata__" {
            return Err(bad(format!("invalid tensor name {name:?}")));
        }
        if e.dtype != "F32" && e.dtype != "U32" {
            return Err(tbad(format!("the manifest gives dtype {:?}; engram stores F32 and U32", e.dtype)));
        }
        if element_count(&e.shape).and_then(|n| n.checked_mul(4)).is_none() {
            return Err(tbad(format!("the manifest gives shape {:?}, which overflows", e.shape)));
        }
        if e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(tbad(format!("the manifest's sha256 {:?} is not 64 lower-case hex digits", e.sha256)));
        }
    }
    Ok(m)
}

/// Reads the safetensors header far enough to tell which tensor a short file cuts.
fn check_header(st: &[u8], m: &Manifest, tpath: &str) -> Result<BTreeMap<String, (usize, usize)>, CkptError> {
    let file_bad = |problem: String| CkptError::TensorFile { path: tpath.into(), problem };
    let names = || m.tensors.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
    let Some(len_bytes) = st.get(..8) else {
        return Err(file_bad(format!(
            "{} bytes: too short for a safetensors header, so none of its tensors ({}) can be read",
            st.len(),
            names()
        )));
    };
    let n = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    let Some(header) = usize::try_from(n).ok().and_then(|n| st.get(8..8usize.checked_add(n)?)) else {
        return Err(file_bad(format!(
            "its header claims {n} bytes but the file has {}: the file is truncated or not a safetensors \
             file, so none of its tensors ({}) can be read",
            st.len(),
            names()
        )));
    };
    let parsed: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| file_bad(format!("its header is not valid JSON: {e}")))?;
    let data_len = st.len() - 8 - header.len();
    let mut offsets = BTreeMap::new();
    for (name, v) in parsed {
        if name == "__metadata__" {
            continue;
        }
        let off = v.get("data_offsets").and_then(|o| o.as_array()).and_then(|a| match a.as_slice() {
            [b, e] => Some((usize::try_from(b.as_u64()?).ok()?, usize::try_from(e.as_u64()?).ok()?)),
            _ => None,
        });
        let Some((b, e)) = off else {
            return Err(CkptError::Tensor { name, problem: format!("has no valid data_offsets in {tpath}") });
        };
        offsets.insert(name, (b, e));
    }
    // The first tensor (in file order) whose bytes run past the end of the file.
    let cut = offsets.iter().filter(|(_, &(_, e))| e > data_len).min_by_key(|(_, &(b, _))| b);
    if let Some((name, &(_, e))) = cut {
        let more = offsets.values().filter(|&&(_, e)| e > data_len).count() - 1;
        return Err(CkptError::Tensor {
            name: name.clone(),
            problem: format!(
                "is truncated: its bytes end at offset {e} of the data, but {tpath} holds only {data_len} bytes \
                 of data{}",
                if more > 0 { format!(" ({more} more tensor(s) after it are cut too)") } else { String::new() }
            ),
        });
    }
    Ok(offsets)
}
