//! What the fuzz targets run, and the inputs the seed generator writes.
//!
//! Each target feeds the fuzzer's bytes to a reader and checks, besides "no panic", that whatever
//! the reader accepts is exactly what the bytes hold ("no garbage"). A failed check is a bug in
//! the reader: every assertion here holds for a correct reader whatever the input.
//!
//! * [`idx`]: the bytes go to `parse_images` and `parse_labels` as they are (raw or, when they
//!   start with `1f 8b`, gzipped), then wrapped in a valid gzip stream (the decompression path on
//!   every input).
//! * [`checkpoint`]: the first byte picks the mode. Even: the rest is `[u32 LE manifest length]
//!   [manifest.json][tensors.safetensors]` and goes to `Checkpoint::from_bytes` as it is. Odd:
//!   the rest is a list of 4-byte edits (flip, set, truncate, insert, delete a byte in either
//!   file) applied to a valid checkpoint from `to_bytes`, so the fuzzer starts deep; an untouched
//!   checkpoint must read back exactly, a truncated tensor file must be refused naming the
//!   truncated tensor, a changed data byte must be refused naming the tensor that holds it.
//! * [`manifest`]: bytes that parse as JSON become a checkpoint's run record, checked as
//!   `engram resume` checks it (`describe`, `progress`); a refusal must carry a message.
//! * [`toml`]: the bytes (as text) are a `run.toml`, read and validated as `engram run --config`
//!   does; a refusal must carry a message.

use flate2::{read::MultiGzDecoder, write::GzEncoder, Compression};
use std::io::{Read, Write};

/// An IDX images file (magic 2051): header, then `pixels`.
pub fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + pixels.len());
    for x in [0x0803, n, rows, cols] {
        v.extend(x.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

/// An IDX labels file (magic 2049).
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + labels.len());
    for x in [0x0801, labels.len() as u32] {
        v.extend(x.to_be_bytes());
    }
    v.extend_from_slice(labels);
    v
}

/// `bytes` as one gzip member.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).expect("writing to a Vec");
    e.finish().expect("writing to a Vec")
}

/// The IDX target.
pub mod idx {
    use super::*;
    use engram_mnist::{parse_images, parse_labels};

    fn be_u32(b: &[u8], at: usize) -> usize {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
    }

    /// Checks an accepted images file against `plain`, the file as the reader should have seen
    /// it after decompression.
    fn check_images(img: &engram_mnist::IdxImages, plain: &[u8]) {
        assert!(
            img.n > 0 && img.rows > 0 && img.cols > 0,
            "zero dimension accepted: {}x{}x{}",
            img.n,
            img.rows,
            img.cols
        );
        assert_eq!(Some(img.pixels.len()), img.n.checked_mul(img.rows).and_then(|x| x.checked_mul(img.cols)));
        assert_eq!(plain.len(), 16 + img.pixels.len(), "accepted with trailing or missing bytes");
        assert_eq!(be_u32(plain, 0), 0x0803);
        assert_eq!((be_u32(plain, 4), be_u32(plain, 8), be_u32(plain, 12)), (img.n, img.rows, img.cols));
        assert!(img.pixels == plain[16..], "pixels differ from the file's bytes");
    }

    fn check_labels(labels: &[u8], plain: &[u8]) {
        assert!(!labels.is_empty(), "zero labels accepted");
        assert!(labels.iter().all(|&l| l < 10), "a label >= 10 accepted");
        assert_eq!(plain.len(), 8 + labels.len(), "accepted with trailing or missing bytes");
        assert_eq!((be_u32(plain, 0), be_u32(plain, 4)), (0x0801, labels.len()));
        assert!(labels == &plain[8..], "labels differ from the file's bytes");
    }

    /// The whole decompressed stream, read independently of the reader (at most `cap` bytes);
    /// `None` when it is not a valid gzip stream.
    fn gunzip(bytes: &[u8], cap: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        MultiGzDecoder::new(bytes).take(cap as u64).read_to_end(&mut out).ok()?;
        Some(out)
    }

    /// Parses `input` both ways; on acceptance checks against the decompressed (or raw) bytes.
    fn check_as_given(input: &[u8]) {
        let gz = input.starts_with(&[0x1f, 0x8b]);
        match parse_images(input, "fuzz") {
            Ok(img) => {
                let plain = if gz {
                    gunzip(input, 16 + img.pixels.len() + 1).expect("accepted an invalid gzip stream")
                } else {
                    input.to_vec()
                };
                check_images(&img, &plain);
            }
            Err(e) => drop(e.to_string()),
        }
        match parse_labels(input, "fuzz") {
            Ok(labels) => {
                let plain = if gz {
                    gunzip(input, 8 + labels.len() + 1).expect("accepted an invalid gzip stream")
                } else {
                    input.to_vec()
                };
                check_labels(&labels, &plain);
            }
            Err(e) => drop(e.to_string()),
        }
    }

    /// The target: `data` as given, then `data` wrapped in gzip (which must read as the raw
    /// bytes do, unless those are themselves gzipped).
    pub fn run(data: &[u8]) {
        check_as_given(data);
        if data.len() > 1 << 16 {
            return;
        }
        let wrapped = gzip(data);
        check_as_given(&wrapped);
        if !data.starts_with(&[0x1f, 0x8b]) {
            let (a, b) = (parse_images(data, "fuzz"), parse_images(&wrapped, "fuzz"));
            match (&a, &b) {
                (Ok(x), Ok(y)) => assert_eq!(x, y),
                (Err(x), Err(y)) => {
                    assert_eq!(std::mem::discriminant(x), std::mem::discriminant(y), "raw: {x}; gzipped: {y}")
                }
                _ => panic!("raw and gzipped disagree: {a:?} vs {b:?}"),
            }
            let (a, b) = (parse_labels(data, "fuzz"), parse_labels(&wrapped, "fuzz"));
            match (&a, &b) {
                (Ok(x), Ok(y)) => assert_eq!(x, y),
                (Err(x), Err(y)) => {
                    assert_eq!(std::mem::discriminant(x), std::mem::discriminant(y), "raw: {x}; gzipped: {y}")
                }
                _ => panic!("raw and gzipped disagree: {a:?} vs {b:?}"),
            }
        }
    }
}

/// The checkpoint target.
pub mod checkpoint {
    use engram_ckpt::{parse_manifest, sha256_hex, Checkpoint, CkptError, Data, Tensor};
    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    /// A small checkpoint with both dtypes, a matrix, an empty tensor and a nested `run`.
    pub fn sample() -> Checkpoint {
        let mut tensors = BTreeMap::new();
        tensors.insert("theta".to_string(), Tensor::f32((0..12).map(|i| (i as f32 * 0.7).sin()).collect()));
        tensors.insert("opt.m".to_string(), Tensor::f32(vec![1e-30, -0.0, f32::MIN_POSITIVE, 3.5]));
        tensors.insert("order".to_string(), Tensor::matrix(3, Data::U32(vec![0, 1, 0, 2, 1, 7])));
        tensors.insert("empty".to_string(), Tensor::f32(Vec::new()));
        let run = serde_json::json!({
            "scenario": "split", "lr": 0.001, "steps": 12, "seed": 18446744073709551615u64,
            "acc": [[0.98, null], [0.5, 0.97]], "ok": true
        });
        Checkpoint { run, tensors }
    }

    /// A second, different valid checkpoint: one U32 tensor, a scalar `run`.
    pub fn sample_small() -> Checkpoint {
        let mut tensors = BTreeMap::new();
        tensors.insert("rng".to_string(), Tensor::u32(vec![u32::MAX, 0, 42]));
        Checkpoint { run: serde_json::json!(null), tensors }
    }

    /// The raw-mode input for a pair of files.
    pub fn raw_input(manifest: &[u8], tensors: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8];
        v.extend((manifest.len() as u32).to_le_bytes());
        v.extend_from_slice(manifest);
        v.extend_from_slice(tensors);
        v
    }

    struct Base {
        manifest: Vec<u8>,
        tensors: Vec<u8>,
        ckpt: Checkpoint,
        /// Length of the safetensors header (8 + its JSON).
        header_end: usize,
        /// Each tensor's data offsets (relative to the data start).
        offsets: BTreeMap<String, (usize, usize)>,
    }

    fn base() -> &'static Base {
        static BASE: OnceLock<Base> = OnceLock::new();
        BASE.get_or_init(|| {
            let ckpt = sample();
            let (manifest, tensors) = ckpt.to_bytes().expect("sample encodes");
            let n = u64::from_le_bytes(tensors[..8].try_into().unwrap()) as usize;
            let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&tensors[8..8 + n]).unwrap();
            let offsets = header
                .iter()
                .filter(|(k, _)| *k != "__metadata__")
                .map(|(k, v)| {
                    let o = v["data_offsets"].as_array().unwrap();
                    (k.clone(), (o[0].as_u64().unwrap() as usize, o[1].as_u64().unwrap() as usize))
                })
                .collect();
            Base { manifest, tensors, ckpt, header_end: 8 + n, offsets }
        })
    }

    fn bits(t: &Tensor) -> (&[usize], &'static str, Vec<u8>) {
        (&t.shape, t.data.dtype(), t.data.to_le_bytes())
    }

    fn same(a: &Checkpoint, b: &Checkpoint) -> bool {
        a.run == b.run
            && a.tensors.len() == b.tensors.len()
            && a.tensors.iter().zip(&b.tensors).all(|((na, ta), (nb, tb))| na == nb && bits(ta) == bits(tb))
    }

    /// An accepted checkpoint is what its manifest certifies, and re-encodes and decodes to itself.
    fn check_ok(c: &Checkpoint, manifest: &[u8]) {
        let m = parse_manifest(manifest, "fuzz").expect("from_bytes accepted a manifest parse_manifest refuses");
        assert_eq!(c.run, m.run, "run differs from the manifest's");
        assert!(c.tensors.keys().eq(m.tensors.keys()), "tensor names differ from the manifest's");
        for (name, t) in &c.tensors {
            let e = &m.tensors[name];
            assert_eq!(t.data.dtype(), e.dtype, "{name}: dtype");
            assert_eq!(t.shape, e.shape, "{name}: shape");
            assert_eq!(Some(t.data.len()), t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)), "{name}: size");
            assert_eq!(
                sha256_hex(&t.data.to_le_bytes()),
                e.sha256,
                "{name}: loaded bytes do not hash to the manifest's sha256"
            );
        }
        let (m1, t1) = c.to_bytes().expect("an accepted checkpoint re-encodes");
        let c2 = Checkpoint::from_bytes(&m1, &t1).expect("a re-encoded checkpoint decodes");
        assert!(same(c, &c2), "re-encoding changed the checkpoint");
        let (m2, t2) = c2.to_bytes().expect("re-encodes");
        assert!(m1 == m2 && t1 == t2, "re-encoding is not stable");
    }

    fn read(manifest: &[u8], tensors: &[u8]) -> Result<Checkpoint, CkptError> {
        let r = Checkpoint::from_bytes(manifest, tensors);
        match &r {
            Ok(c) => check_ok(c, manifest),
            Err(e) => drop(e.to_string()),
        }
        r
    }

    /// Applies 4-byte edits `[op, pos lo, pos hi, value]` to the two files. Bit 0 of `op` picks
    /// the file (0: manifest, 1: tensors), the rest the edit.
    pub fn apply_edits(manifest: &mut Vec<u8>, tensors: &mut Vec<u8>, ops: &[u8]) {
        for op in ops.chunks_exact(4) {
            let buf = if op[0] & 1 == 0 { &mut *manifest } else { &mut *tensors };
            let pos = usize::from(u16::from_le_bytes([op[1], op[2]]));
            let v = op[3];
            let len = buf.len();
            match (op[0] >> 1) % 5 {
                0 if len > 0 => buf[pos % len] ^= v.max(1),
                1 if len > 0 => buf[pos % len] = v,
                2 => buf.truncate(pos % (len + 1)),
                3 => buf.insert(pos % (len + 1), v),
                4 if len > 0 => {
                    buf.remove(pos % len);
                }
                _ => {}
            }
        }
    }

    fn structured(ops: &[u8]) {
        let b = base();
        let (mut m, mut t) = (b.manifest.clone(), b.tensors.clone());
        apply_edits(&mut m, &mut t, ops);
        let r = read(&m, &t);
        if m != b.manifest {
            return;
        }
        let data_len = b.tensors.len() - b.header_end;
        if t == b.tensors {
            let c = r.expect("an untouched checkpoint must read");
            assert!(same(&c, &b.ckpt), "an untouched checkpoint read back different");
        } else if t.len() < b.tensors.len() && b.tensors.starts_with(&t) {
            // Truncated, nothing else changed.
            let e = r.expect_err("a truncated tensor file was accepted");
            if t.len() < b.header_end {
                assert!(matches!(e, CkptError::TensorFile { .. }), "cut in the header: {e}");
            } else {
                let have = t.len() - b.header_end;
                let cut = b.offsets.iter().filter(|(_, &(_, end))| end > have);
                let first = cut.clone().map(|(_, &(begin, _))| begin).min().expect("something is cut");
                let CkptError::Tensor { name, problem } = &e else {
                    panic!("cut at {}: not a tensor error: {e}", t.len())
                };
                assert!(
                    cut.filter(|(_, &(begin, _))| begin == first).any(|(n, _)| n == name),
                    "cut at {}: names `{name}`, not the first tensor cut: {e}",
                    t.len()
                );
                assert!(problem.contains("truncated"), "{e}");
            }
        } else if t.len() == b.tensors.len() && t[..b.header_end] == b.tensors[..b.header_end] {
            // Only data bytes changed: the first tensor (in name order) holding a changed byte is
            // named as corrupted.
            let changed: Vec<usize> = (b.header_end..t.len()).filter(|&i| t[i] != b.tensors[i]).collect();
            let holds =
                |&(begin, end): &(usize, usize)| changed.iter().any(|&i| (begin..end).contains(&(i - b.header_end)));
            let expected = b.offsets.iter().find(|(_, o)| holds(o)).map(|(n, _)| n.clone());
            let expected = expected
                .unwrap_or_else(|| panic!("changed bytes {changed:?} outside every tensor ({data_len} data bytes)"));
            let e = r.expect_err("a checkpoint with changed data bytes was accepted");
            let CkptError::Tensor { name, problem } = &e else { panic!("not a tensor error: {e}") };
            assert_eq!(name, &expected, "{e}");
            assert!(problem.contains("corrupted"), "{e}");
        }
    }

    /// The target.
    pub fn run(data: &[u8]) {
        let Some((&mode, rest)) = data.split_first() else { return };
        if mode & 1 == 1 {
            return structured(rest);
        }
        let (len, rest) = match rest.split_first_chunk::<4>() {
            Some((len, rest)) => (u32::from_le_bytes(*len) as usize, rest),
            None => (0, rest),
        };
        let (m, t) = rest.split_at(len.min(rest.len()));
        let _ = read(m, t);
    }
}

/// The `manifest` target.
pub mod manifest {
    /// One input: refused with a message, or accepted (see the module comment).
    pub fn run(data: &[u8]) {
        let Ok(run) = serde_json::from_slice::<serde_json::Value>(data) else { return };
        let ck = engram_ckpt::Checkpoint { run, tensors: Default::default() };
        if let Err(e) = engram_cl::checkpoint::describe(&ck) {
            assert!(!e.is_empty(), "a refusal without a message");
        }
        if let Err(e) = engram_cl::checkpoint::progress(&ck) {
            assert!(!e.is_empty(), "a refusal without a message");
        }
    }
}

/// The `toml` target.
pub mod toml {
    /// One input: refused with a message, or accepted (see the module comment).
    pub fn run(data: &[u8]) {
        if let Err(e) = engram_cli::check_config_text(&String::from_utf8_lossy(data)) {
            assert!(!e.is_empty(), "a refusal without a message");
        }
    }
}
