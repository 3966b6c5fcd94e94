//! The IDX parser on files generated here: valid ones (raw and gzipped) and every kind of
//! malformed one, plus properties: no input of any kind makes it panic.

use engram_mnist::{parse_images, parse_labels, MnistError, MAX_IDX_BYTES};
use flate2::{write::GzEncoder, Compression};
use proptest::prelude::*;
use std::io::Write;

fn header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v
}

fn images_file(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = header(2051, &[n, rows, cols]);
    v.extend_from_slice(pixels);
    v
}

fn labels_file(labels: &[u8]) -> Vec<u8> {
    let mut v = header(2049, &[labels.len() as u32]);
    v.extend_from_slice(labels);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A valid 3-image 4x5 file and its pixels.
fn sample_images() -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| (i * 7 % 256) as u8).collect();
    (images_file(3, 4, 5, &pixels), pixels)
}

#[test]
fn valid_images_raw_and_gzipped() {
    let (file, pixels) = sample_images();
    for bytes in [file.clone(), gz(&file)] {
        let img = parse_images(&bytes, "x").unwrap();
        assert_eq!((img.n, img.rows, img.cols), (3, 4, 5));
        assert_eq!(img.pixels, pixels);
    }
}

#[test]
fn valid_labels_raw_and_gzipped() {
    let labels = [5u8, 0, 4, 1, 9, 2, 1, 3];
    for bytes in [labels_file(&labels), gz(&labels_file(&labels))] {
        assert_eq!(parse_labels(&bytes, "x").unwrap(), labels);
    }
}

#[test]
fn concatenated_gzip_members_are_one_stream() {
    // What `cat a.gz b.gz` produces; gunzip reads it as one file, and so do we.
    let file = labels_file(&[1, 2, 3, 4]);
    let mut bytes = gz(&file[..6]);
    bytes.extend(gz(&file[6..]));
    assert_eq!(parse_labels(&bytes, "x").unwrap(), [1, 2, 3, 4]);
}

#[test]
fn wrong_magic_is_named() {
    let mut file = sample_images().0;
    file[..4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    let err = parse_images(&file, "img.idx").unwrap_err();
    assert!(matches!(err, MnistError::BadMagic { found: 0x1234_5678, expected: 2051, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "img.idx: bad magic number 0x12345678: an IDX images file starts with 0x00000803 (2051)"
    );
    // An IDX file of another data type (0x0D = float) is a bad magic too.
    let err = parse_labels(&header(0x0000_0D01, &[1]), "f").unwrap_err();
    assert!(matches!(err, MnistError::BadMagic { found: 0x0D01, expected: 2049, .. }), "{err:?}");
}

#[test]
fn wrong_rank_says_which_file_it_looks_like() {
    let labels = labels_file(&[1, 2, 3]);
    let err = parse_images(&labels, "a").unwrap_err();
    assert!(matches!(err, MnistError::WrongRank { found: 1, expected: 3, .. }), "{err:?}");
    assert!(err.to_string().contains("is this a labels file?"), "{err}");
    let err = parse_labels(&sample_images().0, "b").unwrap_err();
    assert!(matches!(err, MnistError::WrongRank { found: 3, expected: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("is this an images file?"), "{err}");
    let err = parse_images(&header(0x0000_0802, &[1, 1]), "c").unwrap_err();
    assert!(matches!(err, MnistError::WrongRank { found: 2, expected: 3, hint: "", .. }), "{err:?}");
}

#[test]
fn short_header_is_an_error() {
    for len in 0..16 {
        let file = &sample_images().0[..len];
        let err = parse_images(file, "s").unwrap_err();
        assert!(matches!(err, MnistError::ShortHeader { need: 16, .. }), "len {len}: {err:?}");
    }
    let err = parse_labels(&[0, 0, 8, 1, 0, 0], "s").unwrap_err();
    assert_eq!(err.to_string(), "s: too short for an IDX labels header: need 8 bytes, have 6");
    // Gzipped short header: the decompressed length is what counts.
    let err = parse_labels(&gz(&[0, 0, 8, 1, 0]), "s").unwrap_err();
    assert!(matches!(err, MnistError::ShortHeader { need: 8, have: 5, .. }), "{err:?}");
}

#[test]
fn truncated_file_message_names_sizes() {
    let mut file = header(2051, &[10000, 28, 28]);
    file.extend(vec![0u8; 1234]);
    let err = parse_images(&file, "t10k-images-idx3-ubyte.gz").unwrap_err();
    assert_eq!(
        err.to_string(),
        "t10k-images-idx3-ubyte.gz: truncated: header declares 10000 images of 28x28 (7840000 bytes) \
         but only 1234 bytes follow"
    );
    let err = parse_images(&gz(&file), "g").unwrap_err();
    assert!(matches!(err, MnistError::Truncated { need: 7_840_000, have: 1234, .. }), "{err:?}");
    let err = parse_labels(&labels_file(&[1, 2, 3])[..10], "l").unwrap_err();
    assert!(matches!(err, MnistError::Truncated { need: 3, have: 2, .. }), "{err:?}");
}

#[test]
fn extra_bytes_are_an_error() {
    let mut file = sample_images().0;
    file.extend([1, 2, 3]);
    let err = parse_images(&file, "e").unwrap_err();
    assert_eq!(err.to_string(), "e: 3 unexpected bytes after the 3 images of 4x5 (60 bytes) the header declares");
    let err = parse_images(&gz(&file), "e").unwrap_err();
    assert!(matches!(&err, MnistError::TrailingBytes { extra, .. } if extra == "3"), "{err:?}");
    let mut labels = labels_file(&[1, 2]);
    labels.push(0);
    assert!(matches!(parse_labels(&labels, "l"), Err(MnistError::TrailingBytes { .. })));
}

#[test]
fn zero_dimensions_are_errors() {
    for (dims, what) in [([0, 28, 28], "a count"), ([5, 0, 28], "a row count"), ([5, 28, 0], "a column count")] {
        let err = parse_images(&header(2051, &dims), "z").unwrap_err();
        assert!(matches!(err, MnistError::ZeroDim { what: w, .. } if w == what), "{dims:?}: {err:?}");
        assert!(err.to_string().starts_with("z: header declares "), "{err}");
    }
    assert!(matches!(parse_labels(&header(2049, &[0]), "z"), Err(MnistError::ZeroDim { .. })));
}

#[test]
fn labels_must_be_digits() {
    let err = parse_labels(&labels_file(&[1, 9, 10, 200]), "lab").unwrap_err();
    assert!(matches!(err, MnistError::BadLabel { index: 2, label: 10, .. }), "{err:?}");
    assert_eq!(err.to_string(), "lab: label 10 at index 2 is not a digit (MNIST labels are 0..=9)");
    assert!(matches!(parse_labels(&gz(&labels_file(&[255])), "g"), Err(MnistError::BadLabel { .. })));
}

#[test]
fn huge_headers_are_refused_before_allocating() {
    // 4 billion images of 65535x65535: the product overflows u64.
    let err = parse_images(&header(2051, &[u32::MAX, 65535, 65535]), "big").unwrap_err();
    assert!(matches!(err, MnistError::DeclaredTooLarge { .. }), "{err:?}");
    // 4 billion labels: fits in u64 but not in the limit. Raw and gzipped.
    let file = header(2049, &[4_000_000_000]);
    for bytes in [file.clone(), gz(&file)] {
        let err = parse_labels(&bytes, "big").unwrap_err();
        assert!(matches!(err, MnistError::DeclaredTooLarge { limit: MAX_IDX_BYTES, .. }), "{err:?}");
        assert!(err.to_string().contains("4000000000 labels"), "{err}");
    }
}

#[test]
fn gzip_output_is_capped_by_the_header() {
    // A valid 1-label header followed by 3 MiB of zeros that compress to a few KiB: reading
    // stops at the header's size plus 1 MiB, and the file is refused.
    let mut file = labels_file(&[7]);
    file.extend(vec![0u8; 3 << 20]);
    let bytes = gz(&file);
    assert!(bytes.len() < 64 << 10);
    let err = parse_labels(&bytes, "bomb").unwrap_err();
    match &err {
        MnistError::TrailingBytes { extra, .. } => {
            assert_eq!(extra, &format!("at least {}", 1 << 20))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn broken_gzip_is_an_error() {
    let good = gz(&labels_file(&[1, 2, 3, 4, 5]));
    // Flip a bit of the CRC32 (the 8 trailing bytes are CRC32 and size).
    let mut bad_crc = good.clone();
    let at = bad_crc.len() - 8;
    bad_crc[at] ^= 1;
    // Cut the stream short.
    let cut = &good[..good.len() - 4];
    for bytes in [&bad_crc[..], cut, &[0x1f, 0x8b][..], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff][..]] {
        let err = parse_labels(bytes, "broken.gz").unwrap_err();
        assert!(matches!(err, MnistError::Gzip { .. }), "{err:?}");
        assert!(err.to_string().starts_with("broken.gz: broken gzip data: "), "{err}");
    }
}

/// Runs both parsers; the point is that they return instead of panicking.
fn parse_both(bytes: &[u8]) {
    let _ = parse_images(bytes, "p");
    let _ = parse_labels(bytes, "p");
}

fn valid_files() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (1u32..4, 1u32..5, 1u32..5).prop_flat_map(|(n, r, c)| {
            proptest::collection::vec(any::<u8>(), (n * r * c) as usize).prop_map(move |px| images_file(n, r, c, &px))
        }),
        proptest::collection::vec(0u8..10, 1..20).prop_map(|l| labels_file(&l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128), gzip in any::<bool>()) {
        parse_both(&bytes);
        if gzip {
            parse_both(&gz(&bytes));
        }
        // Random bytes behind the gzip magic as well.
        let mut fake = vec![0x1f, 0x8b];
        fake.extend(&bytes);
        parse_both(&fake);
    }

    #[test]
    fn truncated_valid_files_are_errors(file in valid_files(), cut in any::<prop::sample::Index>()) {
        let len = cut.index(file.len());
        let bytes = &file[..len];
        prop_assert!(parse_images(bytes, "t").is_err());
        prop_assert!(parse_labels(bytes, "t").is_err());
        let gz_full = gz(&file);
        let gz_cut = &gz_full[..cut.index(gz_full.len())];
        prop_assert!(parse_images(gz_cut, "t").is_err());
        prop_assert!(parse_labels(gz_cut, "t").is_err());
        prop_assert!(parse_images(&gz(bytes), "t").is_err());
        prop_assert!(parse_labels(&gz(bytes), "t").is_err());
    }

    #[test]
    fn mutated_valid_files_parse_or_fail_cleanly(
        file in valid_files(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        compress_first in any::<bool>(),
    ) {
        let mutate = |mut v: Vec<u8>| {
            for (at, byte) in &edits {
                let i = at.index(v.len());
                v[i] = *byte;
            }
            v
        };
        let bytes = if compress_first { mutate(gz(&file)) } else { gz(&mutate(file.clone())) };
        let raw = mutate(file);
        for b in [&raw, &bytes] {
            // Whatever parses is consistent with its own header.
            if let Ok(img) = parse_images(b, "m") {
                prop_assert_eq!(img.pixels.len(), img.n * img.rows * img.cols);
            }
            if let Ok(l) = parse_labels(b, "m") {
                prop_assert!(!l.is_empty() && l.iter().all(|&x| x < 10));
            }
        }
    }
}
