//! Loading a directory: file lookup (raw or .gz), sha256 verification, pairing checks, the
//! data lookup order, and the real MNIST when `ENGRAM_DATA` points at it.

use engram_mnist::{
    load, load_dir, locate, locate_with, official_sha256, MnistError, Verify, ENV_VAR, FILES, TEST_IMAGES, TEST_LABELS,
    TRAIN_IMAGES, TRAIN_LABELS,
};
use flate2::{write::GzEncoder, Compression};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Serializes the tests that read or write the process-wide `ENGRAM_DATA`.
static ENV_LOCK: Mutex<()> = Mutex::new(());

fn images_file(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut v = [2051u32, n, rows, cols].iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
    v.extend((0..n * rows * cols).map(|i| (i % 256) as u8));
    v
}

fn labels_file(labels: &[u8]) -> Vec<u8> {
    let mut v = [2049u32, labels.len() as u32].iter().flat_map(|x| x.to_be_bytes()).collect::<Vec<u8>>();
    v.extend_from_slice(labels);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A directory holding a tiny fake MNIST: 3 train and 2 test images of 28x28; the train
/// files gzipped, the test files raw.
fn fake_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join(format!("{TRAIN_IMAGES}.gz")), gz(&images_file(3, 28, 28))).unwrap();
    std::fs::write(p.join(format!("{TRAIN_LABELS}.gz")), gz(&labels_file(&[5, 0, 4]))).unwrap();
    std::fs::write(p.join(TEST_IMAGES), images_file(2, 28, 28)).unwrap();
    std::fs::write(p.join(TEST_LABELS), labels_file(&[7, 2])).unwrap();
    dir
}

#[test]
fn official_digests_are_embedded() {
    for name in FILES {
        let d = official_sha256(name).unwrap_or_else(|| panic!("no digest for {name}"));
        assert_eq!(d.len(), 64);
        assert!(d.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{d}");
    }
    assert_eq!(official_sha256(TRAIN_LABELS), Some("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"));
    assert_eq!(official_sha256("train-images-idx3-ubyte.gz"), None);
}

#[test]
fn load_dir_decodes_gz_and_raw_without_verification() {
    let dir = fake_dir();
    let m = load_dir(dir.path(), Verify::Skip).unwrap();
    assert_eq!((m.train.n, m.train.dim, m.train.labels.as_slice()), (3, 784, &[5u8, 0, 4][..]));
    assert_eq!((m.test.n, m.test.dim, m.test.labels.as_slice()), (2, 784, &[7u8, 2][..]));
    assert_eq!(m.train.images.len(), 3 * 784);
    // Pixel i of the fake file is i % 256, scaled by 1/255.
    assert_eq!(m.train.images[0], 0.0);
    assert_eq!(m.train.images[255], 1.0);
    assert_eq!(m.train.images[256], 0.0);
    assert_eq!(m.train.images[100], 100.0 / 255.0);
    assert_eq!(m.test.image(1)[0], (784 % 256) as f32 / 255.0);
}

#[test]
fn sha256_mismatch_is_detected_and_explained() {
    let dir = fake_dir();
    let err = load_dir(dir.path(), Verify::Sha256).unwrap_err();
    let MnistError::Checksum { file, name, expected, actual } = &err else { panic!("{err:?}") };
    assert!(file.ends_with("-labels-idx1-ubyte") || file.ends_with("-labels-idx1-ubyte.gz"), "{file}");
    assert_eq!(Some(expected.as_str()), official_sha256(name));
    assert_ne!(expected, actual);
    let msg = err.to_string();
    for part in [file.as_str(), expected.as_str(), actual.as_str(), "sha256 mismatch", "--no-verify", "data/fetch.sh"] {
        assert!(msg.contains(part), "{part:?} not in {msg}");
    }
}

#[test]
fn image_and_label_counts_must_agree() {
    let dir = fake_dir();
    std::fs::write(dir.path().join(TEST_LABELS), labels_file(&[7, 2, 1])).unwrap();
    let err = load_dir(dir.path(), Verify::Skip).unwrap_err();
    assert!(matches!(err, MnistError::CountMismatch { images: 2, labels: 3, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(TEST_IMAGES) && msg.contains(TEST_LABELS) && msg.contains("must match"), "{msg}");
}

#[test]
fn images_must_be_28x28() {
    let dir = fake_dir();
    std::fs::write(dir.path().join(TEST_IMAGES), images_file(2, 28, 27)).unwrap();
    let err = load_dir(dir.path(), Verify::Skip).unwrap_err();
    assert!(matches!(err, MnistError::WrongImageSize { rows: 28, cols: 27, .. }), "{err:?}");
}

#[test]
fn errors_name_the_file_with_its_path() {
    let dir = fake_dir();
    std::fs::write(dir.path().join(TEST_LABELS), labels_file(&[7, 12])).unwrap();
    let err = load_dir(dir.path(), Verify::Skip).unwrap_err();
    let expected = format!("{}: label 12 at index 1", dir.path().join(TEST_LABELS).display());
    assert!(err.to_string().starts_with(&expected), "{err}");
}

#[test]
fn raw_file_is_preferred_over_gz_and_missing_file_is_named() {
    let dir = fake_dir();
    // A broken .gz next to a good raw file is ignored.
    std::fs::write(dir.path().join(format!("{TEST_IMAGES}.gz")), b"\x1f\x8bjunk").unwrap();
    assert!(load_dir(dir.path(), Verify::Skip).is_ok());
    std::fs::remove_file(dir.path().join(TEST_IMAGES)).unwrap();
    let err = load_dir(dir.path(), Verify::Skip).unwrap_err();
    assert!(matches!(err, MnistError::Gzip { .. }), "{err:?}");
    std::fs::remove_file(dir.path().join(format!("{TEST_IMAGES}.gz"))).unwrap();
    let err = load_dir(dir.path(), Verify::Skip).unwrap_err();
    assert!(matches!(&err, MnistError::MissingFile { name, .. } if name == TEST_IMAGES), "{err:?}");
}

#[test]
fn locate_order_explicit_env_then_fallbacks() {
    let a = fake_dir();
    let b = fake_dir();
    let c = fake_dir();
    let empty = tempfile::tempdir().unwrap();
    let (a, b, c) = (a.path(), b.path(), c.path());
    let fallbacks = [b.to_path_buf(), c.to_path_buf()];
    // Explicit wins over everything.
    assert_eq!(locate_with(Some(a), Some(b.as_os_str()), &fallbacks).unwrap(), a);
    // Then the environment variable.
    assert_eq!(locate_with(None, Some(c.as_os_str()), &[b.to_path_buf()]).unwrap(), c);
    // Then the fallbacks in order; an unusable env value is skipped.
    assert_eq!(locate_with(None, None, &fallbacks).unwrap(), b);
    assert_eq!(locate_with(None, Some(empty.path().as_os_str()), &fallbacks).unwrap(), b);
    assert_eq!(locate_with(None, Some(OsStr::new("")), &[empty.path().to_path_buf(), c.to_path_buf()]).unwrap(), c);
}

#[test]
fn explicit_data_dir_without_the_files_is_an_error() {
    let good = fake_dir();
    let partial = fake_dir();
    std::fs::remove_file(partial.path().join(format!("{TRAIN_IMAGES}.gz"))).unwrap();
    std::fs::remove_file(partial.path().join(TEST_LABELS)).unwrap();
    let fallbacks = [good.path().to_path_buf()];
    let err = locate_with(Some(partial.path()), Some(good.path().as_os_str()), &fallbacks).unwrap_err();
    assert!(matches!(err, MnistError::DataDirIncomplete { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "--data-dir {}: missing {TRAIN_IMAGES}(.gz), {TEST_LABELS}(.gz)",
            partial.path().display()
        )),
        "{msg}"
    );
    let nowhere = partial.path().join("nope");
    let err = locate_with(Some(&nowhere), None, &fallbacks).unwrap_err();
    assert!(err.to_string().contains(": does not exist"), "{err}");
}

#[test]
fn not_found_lists_every_place_and_how_to_fetch() {
    let empty = tempfile::tempdir().unwrap();
    let partial = fake_dir();
    std::fs::remove_file(partial.path().join(TEST_IMAGES)).unwrap();
    let missing = empty.path().join("missing");
    let file = empty.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let fallbacks = [missing.clone(), partial.path().to_path_buf(), file.clone()];

    let err = locate_with(None, None, &fallbacks).unwrap_err();
    let MnistError::NotFound { tried } = &err else { panic!("{err:?}") };
    let got: Vec<(&str, &str)> = tried.iter().map(|t| (t.place.as_str(), t.reason.as_str())).collect();
    let (m, p, f) = (missing.display().to_string(), partial.path().display().to_string(), file.display().to_string());
    let want_missing = format!("missing {TEST_IMAGES}(.gz)");
    assert_eq!(
        got,
        [
            ("--data-dir", "not given"),
            ("$ENGRAM_DATA", "not set"),
            (m.as_str(), "does not exist"),
            (p.as_str(), want_missing.as_str()),
            (f.as_str(), "not a directory"),
        ]
    );
    let msg = err.to_string();
    for part in [
        "MNIST not found",
        "$ENGRAM_DATA: not set",
        &format!("{m}: does not exist"),
        "data/fetch.sh",
        "ENGRAM_DATA=",
        "--data-dir",
    ] {
        assert!(msg.contains(part), "{part:?} not in:\n{msg}");
    }

    let err = locate_with(None, Some(empty.path().as_os_str()), &[]).unwrap_err();
    let MnistError::NotFound { tried } = &err else { panic!("{err:?}") };
    assert_eq!(tried[1].place, format!("$ENGRAM_DATA={}", empty.path().display()));
    assert!(tried[1].reason.starts_with("missing train-images-idx3-ubyte(.gz), "), "{}", tried[1].reason);
    let err = locate_with(None, Some(OsStr::new("")), &[]).unwrap_err();
    assert!(err.to_string().contains("$ENGRAM_DATA: set but empty"), "{err}");
}

#[test]
fn locate_reads_the_environment_variable() {
    let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let saved = std::env::var_os(ENV_VAR);
    let dir = fake_dir();
    std::env::set_var(ENV_VAR, dir.path());
    let found = locate(None);
    let loaded = load(None, Verify::Skip).map(|m| m.train.n);
    let explicit = locate(Some(Path::new("/nonexistent/engram-mnist")));
    match saved {
        Some(v) => std::env::set_var(ENV_VAR, v),
        None => std::env::remove_var(ENV_VAR),
    }
    assert_eq!(found.unwrap(), dir.path());
    assert_eq!(loaded.unwrap(), 3);
    assert!(matches!(explicit, Err(MnistError::DataDirIncomplete { .. })), "{explicit:?}");
}

#[test]
fn real_mnist_from_engram_data() {
    let dir = {
        let _guard = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        std::env::var_os(ENV_VAR)
    };
    let Some(dir) = dir.map(PathBuf::from) else {
        println!("SKIP: ENGRAM_DATA not set");
        return;
    };
    let start = Instant::now();
    let m = load_dir(&dir, Verify::Sha256).unwrap_or_else(|e| panic!("{e}"));
    println!("loaded and verified MNIST from {} in {:.2?}", dir.display(), start.elapsed());
    assert_eq!((m.train.n, m.test.n), (60000, 10000));
    assert_eq!((m.train.dim, m.test.dim), (784, 784));
    assert_eq!((m.train.images.len(), m.test.images.len()), (60000 * 784, 10000 * 784));
    assert_eq!((m.train.labels.len(), m.test.labels.len()), (60000, 10000));
    assert!(m.train.labels.iter().chain(&m.test.labels).all(|&l| l < 10));
    assert_eq!(&m.train.labels[..5], [5, 0, 4, 1, 9]);
    assert_eq!(&m.test.labels[..3], [7, 2, 1]);
    assert!(m.train.images.iter().chain(&m.test.images).all(|&p| (0.0..=1.0).contains(&p)));
    // Every digit occurs; the class counts of the training set are the well-known ones.
    let mut counts = [0usize; 10];
    for &l in &m.train.labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
}
