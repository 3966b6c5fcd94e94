//! The IDX file format (gzipped or raw), as used by MNIST.
//!
//! An IDX file is a big-endian header followed by the data:
//!
//! | offset | type | value                                                          |
//! |--------|------|----------------------------------------------------------------|
//! | 0      | u32  | magic `0x0000TTRR`: TT = data type (0x08 = unsigned byte), RR = rank |
//! | 4      | u32  | size of dimension 0 (the item count)                           |
//! | 8..    | u32  | sizes of the other dimensions (rows, cols for images)          |
//! | then   | u8   | the items, row-major                                           |
//!
//! MNIST images are magic 2051 (`0x00000803`, rank 3: count x rows x cols); labels are magic
//! 2049 (`0x00000801`, rank 1: count). Data that starts with the gzip magic `1f 8b` is
//! decompressed first.
//!
//! The parser never panics and never trusts the header: the declared size is computed with
//! checked arithmetic, compared with [`MAX_IDX_BYTES`] and with the bytes actually present
//! before anything of that size is allocated, and gzip output is read through a limit derived
//! from the header.

use crate::error::{Kind, MnistError};
use flate2::read::MultiGzDecoder;
use std::borrow::Cow;
use std::io::Read;

/// The largest IDX file (header + data, decompressed) this crate accepts: 256 MiB.
/// The MNIST training images are 47 MB. Headers declaring more are refused before any
/// allocation or decompression of that size.
pub const MAX_IDX_BYTES: u64 = 256 << 20;

/// Magic number of an IDX unsigned-byte rank-3 file (MNIST images): 2051.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;

/// Magic number of an IDX unsigned-byte rank-1 file (MNIST labels): 2049.
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// How much decompressed data beyond the declared size is read before giving up on counting
/// trailing bytes exactly (the file is refused either way).
const GZIP_SLACK: u64 = 1 << 20;

/// The highest compression ratio deflate can reach (about 1032:1), used to bound the
/// up-front allocation for gzip output by the size of the input.
const DEFLATE_MAX_RATIO: u64 = 1032;

/// A decoded IDX images file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub n: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `n * rows * cols` pixels, image after image, each row-major, 0 (background) to 255.
    pub pixels: Vec<u8>,
}

/// A parsed, validated IDX header.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    /// Item count.
    pub n: usize,
    /// Rows per item (1 for labels).
    pub rows: usize,
    /// Columns per item (1 for labels).
    pub cols: usize,
    /// Header length in bytes.
    pub len: usize,
    /// Declared data length in bytes (`n * rows * cols`).
    pub payload: u64,
}

impl Header {
    /// The declared contents in words, for messages: "10000 images of 28x28".
    fn declared(&self, kind: Kind) -> String {
        match kind {
            Kind::Images => format!("{} images of {}x{}", self.n, self.rows, self.cols),
            Kind::Labels => format!("{} labels", self.n),
        }
    }
}

/// Header length of each kind: magic + one u32 per dimension.
fn header_len(kind: Kind) -> usize {
    match kind {
        Kind::Images => 16,
        Kind::Labels => 8,
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Parses and validates the header at the start of `bytes` (which may be only a prefix of
/// the file). Checks magic, rank, non-zero dimensions and the size limit; does not look at
/// the data.
pub(crate) fn parse_header(bytes: &[u8], kind: Kind, name: &str) -> Result<Header, MnistError> {
    let len = header_len(kind);
    let short = || MnistError::ShortHeader { file: name.to_string(), kind, need: len, have: bytes.len() };
    if bytes.len() < 4 {
        return Err(short());
    }
    let magic = be_u32(bytes, 0);
    let (expected, expected_rank) = match kind {
        Kind::Images => (IMAGES_MAGIC, 3u8),
        Kind::Labels => (LABELS_MAGIC, 1u8),
    };
    if magic != expected {
        // 0x000008RR: an unsigned-byte IDX file, just not of the rank we want.
        if magic >> 8 == 0x08 {
            let found = (magic & 0xff) as u8;
            let hint = match (kind, found) {
                (Kind::Images, 1) => " (is this a labels file?)",
                (Kind::Labels, 3) => " (is this an images file?)",
                _ => "",
            };
            return Err(MnistError::WrongRank {
                file: name.to_string(),
                kind,
                magic,
                found,
                expected: expected_rank,
                hint,
            });
        }
        return Err(MnistError::BadMagic { file: name.to_string(), kind, found: magic, expected });
    }
    if bytes.len() < len {
        return Err(short());
    }
    let n = be_u32(bytes, 4);
    let (rows, cols) = match kind {
        Kind::Images => (be_u32(bytes, 8), be_u32(bytes, 12)),
        Kind::Labels => (1, 1),
    };
    for (value, what) in [(n, "a count"), (rows, "a row count"), (cols, "a column count")] {
        if value == 0 {
            return Err(MnistError::ZeroDim { file: name.to_string(), what });
        }
    }
    let payload = u64::from(n).checked_mul(u64::from(rows)).and_then(|x| x.checked_mul(u64::from(cols)));
    let header =
        Header { n: n as usize, rows: rows as usize, cols: cols as usize, len, payload: payload.unwrap_or(u64::MAX) };
    match payload {
        Some(p) if p <= MAX_IDX_BYTES - len as u64 => Ok(header),
        _ => Err(MnistError::DeclaredTooLarge {
            file: name.to_string(),
            declared: header.declared(kind),
            limit: MAX_IDX_BYTES,
        }),
    }
}

/// Whether `bytes` starts with the gzip magic `1f 8b`.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// Decompresses a gzip stream holding an IDX file. The header is decompressed and validated
/// first; the rest is read through a limit of the declared size plus [`GZIP_SLACK`], so a
/// small file cannot expand into unbounded memory.
fn gunzip(bytes: &[u8], kind: Kind, name: &str) -> Result<Vec<u8>, MnistError> {
    let gz_err = |e: std::io::Error| MnistError::Gzip { file: name.to_string(), reason: e.to_string() };
    let mut decoder = MultiGzDecoder::new(bytes);
    let mut out = Vec::new();
    (&mut decoder).take(header_len(kind) as u64).read_to_end(&mut out).map_err(gz_err)?;
    let header = parse_header(&out, kind, name)?;
    let want = header.len as u64 + header.payload;
    let bound = (bytes.len() as u64).saturating_mul(DEFLATE_MAX_RATIO);
    out.reserve_exact(want.min(bound).saturating_sub(out.len() as u64) as usize);
    let limit = want + GZIP_SLACK;
    (&mut decoder).take(limit - out.len() as u64).read_to_end(&mut out).map_err(gz_err)?;
    if out.len() as u64 >= limit {
        return Err(MnistError::TrailingBytes {
            file: name.to_string(),
            declared: header.declared(kind),
            need: header.payload,
            extra: format!("at least {}", out.len() as u64 - want),
        });
    }
    Ok(out)
}

/// The decompressed bytes of an IDX file, its header, checked for size.
pub(crate) struct Decoded<'a> {
    /// The whole decompressed file (header included).
    pub bytes: Cow<'a, [u8]>,
    /// Its header.
    pub header: Header,
}

impl Decoded<'_> {
    /// The data after the header.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.header.len..]
    }
}

/// Decompresses (if gzipped) and validates header and length. Everything but label values.
pub(crate) fn decode<'a>(bytes: &'a [u8], kind: Kind, name: &str) -> Result<Decoded<'a>, MnistError> {
    let bytes: Cow<'a, [u8]> =
        if is_gzip(bytes) { Cow::Owned(gunzip(bytes, kind, name)?) } else { Cow::Borrowed(bytes) };
    let header = parse_header(&bytes, kind, name)?;
    let have = (bytes.len() - header.len) as u64;
    if have < header.payload {
        return Err(MnistError::Truncated {
            file: name.to_string(),
            declared: header.declared(kind),
            need: header.payload,
            have,
        });
    }
    if have > header.payload {
        return Err(MnistError::TrailingBytes {
            file: name.to_string(),
            declared: header.declared(kind),
            need: header.payload,
            extra: (have - header.payload).to_string(),
        });
    }
    Ok(Decoded { bytes, header })
}

/// Checks that every label is a digit 0..=9.
pub(crate) fn check_labels(labels: &[u8], name: &str) -> Result<(), MnistError> {
    match labels.iter().position(|&l| l >= 10) {
        Some(index) => Err(MnistError::BadLabel { file: name.to_string(), index, label: labels[index] }),
        None => Ok(()),
    }
}

/// Parses an IDX images file (magic 2051), gzipped or raw.
///
/// `name` is only used in error messages (pass the file name or path). Any positive number of
/// rows and columns is accepted. Never panics: malformed input of any kind is an error.
///
/// ```
/// let mut file = vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2];
/// file.extend([0, 64, 128, 255]);
/// let img = engram_mnist::parse_images(&file, "tiny").unwrap();
/// assert_eq!((img.n, img.rows, img.cols), (1, 2, 2));
/// assert_eq!(img.pixels, [0, 64, 128, 255]);
/// ```
pub fn parse_images(bytes: &[u8], name: &str) -> Result<IdxImages, MnistError> {
    let decoded = decode(bytes, Kind::Images, name)?;
    let Header { n, rows, cols, len, .. } = decoded.header;
    let pixels = match decoded.bytes {
        Cow::Owned(mut v) => {
            v.drain(..len);
            v
        }
        Cow::Borrowed(b) => b[len..].to_vec(),
    };
    Ok(IdxImages { n, rows, cols, pixels })
}

/// Parses an IDX labels file (magic 2049), gzipped or raw, and checks every label is a digit
/// 0..=9 (MNIST's classes).
///
/// `name` is only used in error messages. Never panics: malformed input of any kind is an error.
///
/// ```
/// let file = [0, 0, 8, 1, 0, 0, 0, 3, 5, 0, 4];
/// assert_eq!(engram_mnist::parse_labels(&file, "tiny").unwrap(), [5, 0, 4]);
/// ```
pub fn parse_labels(bytes: &[u8], name: &str) -> Result<Vec<u8>, MnistError> {
    let decoded = decode(bytes, Kind::Labels, name)?;
    check_labels(decoded.data(), name)?;
    Ok(decoded.data().to_vec())
}
