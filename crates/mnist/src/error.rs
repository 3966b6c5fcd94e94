//! The one error type of this crate. Every variant names the file (or directory) it is about
//! and says what is wrong in words, so that the message alone is enough to fix the problem.

use std::fmt;

/// Everything that can go wrong while finding, reading, verifying or decoding MNIST.
#[derive(Debug, thiserror::Error)]
pub enum MnistError {
    /// The file could not be read from disk.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The file.
        file: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },

    /// The file is larger than any MNIST file can be; it is refused before being read.
    #[error("{file}: {size} bytes on disk, more than the {limit}-byte limit for an IDX file")]
    FileTooLarge {
        /// The file.
        file: String,
        /// Its size in bytes.
        size: u64,
        /// The limit ([`crate::MAX_IDX_BYTES`]).
        limit: u64,
    },

    /// The data starts with the gzip magic but does not decompress.
    #[error("{file}: broken gzip data: {reason}")]
    Gzip {
        /// The file.
        file: String,
        /// What the decompressor reported.
        reason: String,
    },

    /// Fewer bytes than an IDX header needs.
    #[error("{file}: too short for an IDX {kind} header: need {need} bytes, have {have}")]
    ShortHeader {
        /// The file.
        file: String,
        /// "images" or "labels".
        kind: Kind,
        /// Header length in bytes.
        need: usize,
        /// Bytes available.
        have: usize,
    },

    /// The first four bytes are not an IDX magic number at all, or not the one expected.
    #[error("{file}: bad magic number 0x{found:08x}: an IDX {kind} file starts with 0x{expected:08x} ({expected})")]
    BadMagic {
        /// The file.
        file: String,
        /// "images" or "labels".
        kind: Kind,
        /// The magic found.
        found: u32,
        /// The magic expected (2051 images, 2049 labels).
        expected: u32,
    },

    /// A valid-looking IDX u8 magic with the wrong number of dimensions (e.g. a labels file
    /// passed where images were expected).
    #[error(
        "{file}: IDX file of rank {found} (magic 0x{magic:08x}), but an IDX {kind} file has rank {expected}{hint}"
    )]
    WrongRank {
        /// The file.
        file: String,
        /// "images" or "labels".
        kind: Kind,
        /// The magic found.
        magic: u32,
        /// The rank found (the magic's last byte).
        found: u8,
        /// The rank expected (3 images, 1 labels).
        expected: u8,
        /// A hint such as " (is this a labels file?)", or empty.
        hint: &'static str,
    },

    /// A dimension in the header is zero.
    #[error("{file}: header declares {what} of 0: the file holds no data")]
    ZeroDim {
        /// The file.
        file: String,
        /// Which dimension ("a count", "a row count", "a column count").
        what: &'static str,
    },

    /// The declared payload size does not fit in memory arithmetic, or exceeds the size limit.
    #[error("{file}: header declares {declared}: more than the {limit}-byte limit for an IDX file")]
    DeclaredTooLarge {
        /// The file.
        file: String,
        /// The declared contents in words.
        declared: String,
        /// The limit ([`crate::MAX_IDX_BYTES`]).
        limit: u64,
    },

    /// Fewer payload bytes than the header declares.
    #[error("{file}: truncated: header declares {declared} ({need} bytes) but only {have} bytes follow")]
    Truncated {
        /// The file.
        file: String,
        /// The declared contents in words, e.g. "10000 images of 28x28".
        declared: String,
        /// Bytes the header declares.
        need: u64,
        /// Bytes present after the header.
        have: u64,
    },

    /// More payload bytes than the header declares.
    #[error("{file}: {extra} unexpected bytes after the {declared} ({need} bytes) the header declares")]
    TrailingBytes {
        /// The file.
        file: String,
        /// The declared contents in words.
        declared: String,
        /// Bytes the header declares.
        need: u64,
        /// How many bytes follow, in words ("12", "at least 1048576").
        extra: String,
    },

    /// A label is not a digit 0..=9.
    #[error("{file}: label {label} at index {index} is not a digit (MNIST labels are 0..=9)")]
    BadLabel {
        /// The file.
        file: String,
        /// Position of the first bad label.
        index: usize,
        /// Its value.
        label: u8,
    },

    /// The images and labels of one split have different counts.
    #[error("{images_file} holds {images} images but {labels_file} holds {labels} labels: they must match")]
    CountMismatch {
        /// The images file.
        images_file: String,
        /// Its image count.
        images: usize,
        /// The labels file.
        labels_file: String,
        /// Its label count.
        labels: usize,
    },

    /// Images of a size other than MNIST's 28x28 in a directory loaded as MNIST.
    #[error("{file}: images are {rows}x{cols}, but MNIST images are {expected_rows}x{expected_cols}")]
    WrongImageSize {
        /// The file.
        file: String,
        /// Rows found.
        rows: usize,
        /// Columns found.
        cols: usize,
        /// Rows expected.
        expected_rows: usize,
        /// Columns expected.
        expected_cols: usize,
    },

    /// The sha256 of the decompressed file is not the official one.
    #[error(
        "{file}: sha256 mismatch: expected {expected} (official {name}), got {actual}. \
         The file is corrupt or not the official MNIST file: delete it and run data/fetch.sh, \
         or skip the check with --no-verify (Verify::Skip)"
    )]
    Checksum {
        /// The file.
        file: String,
        /// The official file name the digest belongs to.
        name: String,
        /// The official digest (hex).
        expected: String,
        /// The digest of the decompressed contents (hex).
        actual: String,
    },

    /// A directory passed to [`crate::load_dir`] lacks one of the four files.
    #[error("{dir}: missing {name} (looked for {name}.gz and {name})")]
    MissingFile {
        /// The directory.
        dir: String,
        /// The official file name.
        name: String,
    },

    /// `--data-dir` was given but does not hold the four files.
    #[error(
        "--data-dir {dir}: {reason}. It must hold the four MNIST files \
         (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, \
         t10k-labels-idx1-ubyte; each gzipped as NAME.gz or raw). Run data/fetch.sh to download them"
    )]
    DataDirIncomplete {
        /// The directory given.
        dir: String,
        /// Why it does not qualify.
        reason: String,
    },

    /// No directory in the lookup order holds the files.
    #[error("{}", NotFoundMessage(.tried))]
    NotFound {
        /// Every place looked, in order, with the reason it did not qualify.
        tried: Vec<Tried>,
    },
}

/// Which kind of IDX file: images (rank 3) or labels (rank 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `idx3-ubyte`: magic 2051, dimensions count x rows x cols.
    Images,
    /// `idx1-ubyte`: magic 2049, dimension count.
    Labels,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Images => "images",
            Kind::Labels => "labels",
        })
    }
}

/// One place [`crate::locate`] looked at, and why it did not qualify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    /// What the place is, e.g. "$ENGRAM_DATA" or "/repo/data/mnist (the repository's data folder)".
    pub place: String,
    /// Why it was not used, e.g. "not set" or "missing train-images-idx3-ubyte(.gz)".
    pub reason: String,
}

struct NotFoundMessage<'a>(&'a [Tried]);

impl fmt::Display for NotFoundMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "MNIST not found: no directory holds the four files \
             (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, \
             t10k-labels-idx1-ubyte; each as NAME.gz or raw). Looked in:"
        )?;
        for t in self.0 {
            writeln!(f, "  - {}: {}", t.place, t.reason)?;
        }
        write!(
            f,
            "To get the files, run data/fetch.sh (downloads them into data/mnist and checks their sha256), \
             or point engram at a directory that holds them: set ENGRAM_DATA=/path/to/mnist \
             or pass --data-dir /path/to/mnist"
        )
    }
}
