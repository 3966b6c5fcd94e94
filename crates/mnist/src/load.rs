//! Finding, verifying and decoding the four MNIST files.

use crate::error::{Kind, MnistError, Tried};
use crate::idx::{check_labels, decode, MAX_IDX_BYTES};
use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Official name of the training images (60000 x 28 x 28).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// Official name of the training labels (60000).
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// Official name of the test images (10000 x 28 x 28).
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// Official name of the test labels (10000).
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
/// The four files, in the order above. Each may be present as `NAME` (raw) or `NAME.gz`.
pub const FILES: [&str; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

/// Rows of an MNIST image.
pub const ROWS: usize = 28;
/// Columns of an MNIST image.
pub const COLS: usize = 28;
/// Pixels of an MNIST image (`ROWS * COLS`).
pub const DIM: usize = ROWS * COLS;

/// The environment variable naming a directory that holds the MNIST files.
pub const ENV_VAR: &str = "ENGRAM_DATA";

/// `data/SHA256SUMS` of the repository: the sha256 of each official file, decompressed,
/// in `sha256sum` format.
pub const SHA256SUMS: &str = include_str!("../../../data/SHA256SUMS");

/// The official sha256 (lower-case hex) of the decompressed file `name` (e.g.
/// `"train-images-idx3-ubyte"`), from [`SHA256SUMS`]; `None` for any other name.
pub fn official_sha256(name: &str) -> Option<&'static str> {
    SHA256SUMS.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let digest = parts.next()?;
        let file = parts.next()?.trim_start_matches('*');
        (file == name).then_some(digest)
    })
}

/// Whether [`load_dir`] checks the files against the official digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// Compare the sha256 of each decompressed file with [`official_sha256`] (the default).
    #[default]
    Sha256,
    /// Do not check (the CLI's `--no-verify`): any well-formed IDX files of 28x28 images are
    /// accepted.
    Skip,
}

/// One split (train or test) of MNIST, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Number of samples.
    pub n: usize,
    /// Pixels per image ([`DIM`] = 784 for MNIST).
    pub dim: usize,
    /// `n * dim` pixel values `p / 255` in `[0, 1]`, image after image, each row-major.
    pub images: Vec<f32>,
    /// `n` labels, digits 0..=9.
    pub labels: Vec<u8>,
}

impl Split {
    /// The pixels of image `i` (`dim` values). Panics if `i >= n`.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * self.dim..(i + 1) * self.dim]
    }
}

/// The MNIST data set: 60000 training and 10000 test images of 28x28.
#[derive(Debug, Clone, PartialEq)]
pub struct Mnist {
    /// The training split (60000 samples).
    pub train: Split,
    /// The test split (10000 samples).
    pub test: Split,
}

/// The file holding `name` in `dir`: the raw `NAME` if present (faster to load), else `NAME.gz`.
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))].into_iter().find(|p| p.is_file())
}

/// `Ok` when `dir` holds all four files (gzipped or raw), else why not, in words.
fn check_dir(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Err("does not exist".into());
    }
    if !dir.is_dir() {
        return Err("not a directory".into());
    }
    let missing: Vec<String> =
        FILES.iter().filter(|n| find_file(dir, n).is_none()).map(|n| format!("{n}(.gz)")).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing {}", missing.join(", ")))
    }
}

/// Whether `dir` holds all four MNIST files (each as `NAME` or `NAME.gz`). Says nothing about
/// their contents.
pub fn has_files(dir: &Path) -> bool {
    check_dir(dir).is_ok()
}

/// The repository's `data/mnist` (fixed at compile time from this crate's location).
pub fn repo_data_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    match manifest.parent().and_then(Path::parent) {
        Some(root) => root.join("data").join("mnist"),
        None => manifest.join("../../data/mnist"),
    }
}

/// The directories searched after `--data-dir` and `$ENGRAM_DATA`: `data/mnist` under the
/// current directory, then [`repo_data_dir`] (once, if they are the same).
pub fn default_dirs() -> Vec<PathBuf> {
    let cwd = std::env::current_dir().map(|d| d.join("data").join("mnist")).unwrap_or_else(|_| "data/mnist".into());
    let repo = repo_data_dir();
    let same = match (cwd.canonicalize(), repo.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => cwd == repo,
    };
    if same {
        vec![cwd]
    } else {
        vec![cwd, repo]
    }
}

/// Finds the directory holding MNIST. The lookup order:
///
/// 1. `data_dir` (the CLI's `--data-dir`) when given: it must hold the files, otherwise that is
///    an error ([`MnistError::DataDirIncomplete`]); the search does not go on silently;
/// 2. the directory named by the environment variable `ENGRAM_DATA`;
/// 3. `data/mnist` under the current directory;
/// 4. the repository's `data/mnist` ([`repo_data_dir`]).
///
/// A directory qualifies when it holds all four files, each as `NAME.gz` or raw `NAME`.
/// When none does, [`MnistError::NotFound`] lists every place looked and why it did not
/// qualify, and says how to get the files (`data/fetch.sh`, `ENGRAM_DATA`, `--data-dir`).
pub fn locate(data_dir: Option<&Path>) -> Result<PathBuf, MnistError> {
    locate_with(data_dir, std::env::var_os(ENV_VAR).as_deref(), &default_dirs())
}

/// [`locate`] with its inputs made explicit (for tests and embedders): `env_value` stands for
/// the value of `ENGRAM_DATA` and `fallbacks` for the directories tried after it.
pub fn locate_with(
    data_dir: Option<&Path>,
    env_value: Option<&OsStr>,
    fallbacks: &[PathBuf],
) -> Result<PathBuf, MnistError> {
    let mut tried = Vec::new();
    match data_dir {
        Some(dir) => {
            return match check_dir(dir) {
                Ok(()) => Ok(dir.to_path_buf()),
                Err(reason) => Err(MnistError::DataDirIncomplete { dir: dir.display().to_string(), reason }),
            }
        }
        None => tried.push(Tried { place: "--data-dir".into(), reason: "not given".into() }),
    }
    match env_value {
        None => tried.push(Tried { place: format!("${ENV_VAR}"), reason: "not set".into() }),
        Some(v) if v.is_empty() => tried.push(Tried { place: format!("${ENV_VAR}"), reason: "set but empty".into() }),
        Some(v) => {
            let dir = Path::new(v);
            match check_dir(dir) {
                Ok(()) => return Ok(dir.to_path_buf()),
                Err(reason) => tried.push(Tried { place: format!("${ENV_VAR}={}", dir.display()), reason }),
            }
        }
    }
    for dir in fallbacks {
        match check_dir(dir) {
            Ok(()) => return Ok(dir.clone()),
            Err(reason) => tried.push(Tried { place: dir.display().to_string(), reason }),
        }
    }
    Err(MnistError::NotFound { tried })
}

/// Finds MNIST ([`locate`]) and loads it ([`load_dir`]).
pub fn load(data_dir: Option<&Path>, verify: Verify) -> Result<Mnist, MnistError> {
    load_dir(&locate(data_dir)?, verify)
}

/// Reads a file, refusing anything larger than [`MAX_IDX_BYTES`] before reading it.
fn read_file(path: &Path) -> Result<Vec<u8>, MnistError> {
    let file = path.display().to_string();
    let io = |source| MnistError::Io { file: file.clone(), source };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_IDX_BYTES {
        return Err(MnistError::FileTooLarge { file: file.clone(), size, limit: MAX_IDX_BYTES });
    }
    std::fs::read(path).map_err(io)
}

/// Compares the sha256 of `bytes` (a whole decompressed file) with the official digest of `name`.
fn verify_sha256(bytes: &[u8], name: &str, file: &str) -> Result<(), MnistError> {
    let actual = hex::encode(Sha256::digest(bytes));
    let expected = official_sha256(name).unwrap_or("(none: not an official MNIST file name)");
    if actual == expected {
        Ok(())
    } else {
        Err(MnistError::Checksum {
            file: file.to_string(),
            name: name.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Loads one images file: decode, verify, check 28x28, scale to `[0, 1]`.
fn load_images(path: &Path, name: &str, verify: Verify) -> Result<(usize, Vec<f32>), MnistError> {
    let file = path.display().to_string();
    let bytes = read_file(path)?;
    let decoded = decode(&bytes, Kind::Images, &file)?;
    let h = &decoded.header;
    if (h.rows, h.cols) != (ROWS, COLS) {
        return Err(MnistError::WrongImageSize {
            file,
            rows: h.rows,
            cols: h.cols,
            expected_rows: ROWS,
            expected_cols: COLS,
        });
    }
    // Hash on a second thread while converting: two independent passes over 47 MB.
    let (images, verified) = std::thread::scope(|s| {
        let hash = (verify == Verify::Sha256).then(|| s.spawn(|| verify_sha256(&decoded.bytes, name, &file)));
        let images: Vec<f32> = decoded.data().iter().map(|&p| f32::from(p) / 255.0).collect();
        let verified = match hash {
            Some(h) => h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Ok(()),
        };
        (images, verified)
    });
    verified?;
    Ok((h.n, images))
}

/// Loads one labels file: decode, verify, check every label is a digit.
fn load_labels(path: &Path, name: &str, verify: Verify) -> Result<Vec<u8>, MnistError> {
    let file = path.display().to_string();
    let bytes = read_file(path)?;
    let decoded = decode(&bytes, Kind::Labels, &file)?;
    check_labels(decoded.data(), &file)?;
    if verify == Verify::Sha256 {
        verify_sha256(&decoded.bytes, name, &file)?;
    }
    Ok(decoded.data().to_vec())
}

/// Loads one split from its images and labels file names.
fn load_split(dir: &Path, images: &str, labels: &str, verify: Verify) -> Result<Split, MnistError> {
    let missing = |name: &str| MnistError::MissingFile { dir: dir.display().to_string(), name: name.to_string() };
    let images_path = find_file(dir, images).ok_or_else(|| missing(images))?;
    let labels_path = find_file(dir, labels).ok_or_else(|| missing(labels))?;
    let labels_v = load_labels(&labels_path, labels, verify)?;
    let (n, images_v) = load_images(&images_path, images, verify)?;
    if n != labels_v.len() {
        return Err(MnistError::CountMismatch {
            images_file: images_path.display().to_string(),
            images: n,
            labels_file: labels_path.display().to_string(),
            labels: labels_v.len(),
        });
    }
    Ok(Split { n, dim: DIM, images: images_v, labels: labels_v })
}

/// Loads the four MNIST files from `dir`, each as raw `NAME` or `NAME.gz` (gzip is detected
/// from the content, not the name).
///
/// Checks the IDX structure of every file, that images are 28x28, that labels are digits and
/// that images and labels agree in number, and (with [`Verify::Sha256`]) that the sha256 of
/// each decompressed file equals the official one. The two splits are decoded in parallel.
pub fn load_dir(dir: &Path, verify: Verify) -> Result<Mnist, MnistError> {
    let (train, test) = std::thread::scope(|s| {
        let test = s.spawn(|| load_split(dir, TEST_IMAGES, TEST_LABELS, verify));
        let train = load_split(dir, TRAIN_IMAGES, TRAIN_LABELS, verify);
        let test = test.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (train, test)
    });
    Ok(Mnist { train: train?, test: test? })
}
