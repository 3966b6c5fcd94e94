//! Checkpoints: round trip, atomic writes that survive a full disk, and hostile bytes (truncated,
//! flipped, random) refused with the tensor named and never a panic.

use engram_ckpt::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn sample() -> Checkpoint {
    let mut tensors = BTreeMap::new();
    tensors.insert("theta".to_string(), Tensor::f32((0..1000).map(|i| (i as f32).sin()).collect()));
    tensors.insert("opt.m".to_string(), Tensor::f32(vec![1e-30, -0.0, f32::MIN_POSITIVE, 3.5]));
    tensors.insert("order".to_string(), Tensor::matrix(3, Data::U32(vec![0, 1, 0, 2, 1, 7])));
    tensors.insert("empty".to_string(), Tensor::f32(Vec::new()));
    Checkpoint { run: serde_json::json!({"progress": {"steps": 12}}), tensors }
}

#[test]
fn round_trip_is_exact() {
    let c = sample();
    let (m, t) = c.to_bytes().unwrap();
    let back = Checkpoint::from_bytes(&m, &t).unwrap();
    assert_eq!(back, c);
    // Bit-exact, -0.0 and subnormal-adjacent values included.
    let (Data::F32(a), Data::F32(b)) = (&c.tensors["opt.m"].data, &back.tensors["opt.m"].data) else { panic!() };
    assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
}

#[test]
fn every_truncation_is_refused() {
    let (m, t) = sample().to_bytes().unwrap();
    for cut in 0..t.len() {
        let e = Checkpoint::from_bytes(&m, &t[..cut]).expect_err("a truncated file must be refused");
        let s = e.to_string();
        assert!(
            matches!(e, CkptError::Tensor { .. } | CkptError::TensorFile { .. }),
            "cut at {cut}: unexpected error {s}"
        );
        // Cut in the data: the tensor is named (file order: empty, opt.m, theta as F32, then order).
        let data_start = t.len() - 16 - 4000 - 24;
        let named = if cut >= t.len() - 24 {
            Some("order")
        } else if cut >= data_start + 16 {
            Some("theta")
        } else if cut >= data_start {
            Some("opt.m")
        } else {
            None
        };
        if let Some(n) = named {
            assert!(s.contains(&format!("tensor `{n}`")) && s.contains("truncated"), "cut at {cut}: {s}");
        }
    }
}

#[test]
fn a_flipped_bit_in_a_tensor_names_it() {
    let (m, t) = sample().to_bytes().unwrap();
    let hdr = 8 + u64::from_le_bytes(t[..8].try_into().unwrap()) as usize;
    // The data of F32 tensors in name order: empty (0 bytes), opt.m (16), theta (4000); then U32 order.
    let mut bad = t.clone();
    bad[hdr + 3] ^= 0x10;
    let e = Checkpoint::from_bytes(&m, &bad).unwrap_err().to_string();
    assert!(e.contains("tensor `opt.m`") && e.contains("corrupted"), "{e}");
    let mut bad = t.clone();
    bad[hdr + 16 + 2000] ^= 1;
    let e = Checkpoint::from_bytes(&m, &bad).unwrap_err().to_string();
    assert!(e.contains("tensor `theta`") && e.contains("corrupted"), "{e}");
    let mut bad = t.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x80;
    let e = Checkpoint::from_bytes(&m, &bad).unwrap_err().to_string();
    assert!(e.contains("tensor `order`"), "{e}");
}

#[test]
fn manifest_and_file_must_agree() {
    let (m, t) = sample().to_bytes().unwrap();
    let mut man: serde_json::Value = serde_json::from_slice(&m).unwrap();
    man["tensors"]["theta"]["shape"] = serde_json::json!([999]);
    let e = Checkpoint::from_bytes(&serde_json::to_vec(&man).unwrap(), &t).unwrap_err().to_string();
    assert!(e.contains("tensor `theta`") && e.contains("shape"), "{e}");

    let mut man: serde_json::Value = serde_json::from_slice(&m).unwrap();
    man["tensors"].as_object_mut().unwrap().remove("order");
    let e = Checkpoint::from_bytes(&serde_json::to_vec(&man).unwrap(), &t).unwrap_err().to_string();
    assert!(e.contains("tensor `order`") && e.contains("not in the manifest"), "{e}");

    let mut man: serde_json::Value = serde_json::from_slice(&m).unwrap();
    man["tensors"]["ghost"] = man["tensors"]["theta"].clone();
    let e = Checkpoint::from_bytes(&serde_json::to_vec(&man).unwrap(), &t).unwrap_err().to_string();
    assert!(e.contains("tensor `ghost`") && e.contains("missing"), "{e}");

    let mut man: serde_json::Value = serde_json::from_slice(&m).unwrap();
    man["version"] = serde_json::json!(99);
    let e = Checkpoint::from_bytes(&serde_json::to_vec(&man).unwrap(), &t).unwrap_err().to_string();
    assert!(e.contains("version 99"), "{e}");

    let mut man: serde_json::Value = serde_json::from_slice(&m).unwrap();
    man["surprise"] = serde_json::json!(1);
    let e = Checkpoint::from_bytes(&serde_json::to_vec(&man).unwrap(), &t).unwrap_err().to_string();
    assert!(e.contains("surprise"), "{e}");
}

#[test]
fn write_read_list_prune_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let c = sample();
    for steps in [5u64, 10, 15] {
        write_atomic(dir.path(), &name_for(steps), &c).unwrap();
    }
    // A leftover of an interrupted write is not a checkpoint.
    std::fs::create_dir(dir.path().join(".tmp-ckpt-0000000020-1")).unwrap();
    let all = list(dir.path()).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(resolve(dir.path()).unwrap(), dir.path().join(name_for(15)));
    assert_eq!(Checkpoint::read(&resolve(dir.path()).unwrap()).unwrap(), c);
    // Rewriting the same name replaces it.
    write_atomic(dir.path(), &name_for(15), &c).unwrap();
    let removed = prune(dir.path(), 2).unwrap();
    assert_eq!(removed, vec![dir.path().join(name_for(5))]);
    assert_eq!(list(dir.path()).unwrap().len(), 2);
    // The killed writer's leftover went with the pruning.
    assert!(!dir.path().join(".tmp-ckpt-0000000020-1").exists());
    assert!(resolve(&dir.path().join("nope")).unwrap_err().to_string().contains("does not exist"));
    let empty = tempfile::tempdir().unwrap();
    assert!(resolve(empty.path()).unwrap_err().to_string().contains("no checkpoint"));
}

/// A full disk in the middle of a write: a clear error, no temporary left, the previous
/// checkpoint intact and still the newest.
#[test]
fn a_full_disk_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let c = sample();
    let first = write_atomic(dir.path(), &name_for(1), &c).unwrap();
    let before = std::fs::read(first.join(TENSORS_FILE)).unwrap();
    let full = |p: &std::path::Path, bytes: &[u8]| -> std::io::Result<()> {
        // Half the bytes land, then ENOSPC.
        std::fs::write(p, &bytes[..bytes.len() / 2])?;
        Err(std::io::Error::from_raw_os_error(28))
    };
    let e = write_atomic_with(dir.path(), &name_for(2), &c, full).unwrap_err().to_string();
    assert!(e.contains("No space left on device") && e.contains(TENSORS_FILE), "{e}");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from(name_for(1))], "leftovers: {names:?}");
    assert_eq!(latest(dir.path()).unwrap(), Some(first.clone()));
    assert_eq!(std::fs::read(first.join(TENSORS_FILE)).unwrap(), before);
    assert_eq!(Checkpoint::read(&first).unwrap(), c);
}

/// A checkpoint location that is a file, not a directory: a clear error.
#[test]
fn an_unwritable_location_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let e = write_atomic(&file, &name_for(1), &sample()).unwrap_err().to_string();
    assert!(e.contains("cannot create checkpoint directory") && e.contains("plain-file"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random bytes in either file: an error, never a panic.
    #[test]
    fn random_bytes_never_panic(m in proptest::collection::vec(any::<u8>(), 0..300),
                                t in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (good_m, good_t) = sample().to_bytes().unwrap();
        prop_assert!(Checkpoint::from_bytes(&m, &t).is_err());
        prop_assert!(Checkpoint::from_bytes(&good_m, &t).is_err());
        let _ = Checkpoint::from_bytes(&m, &good_t);
    }

    /// A valid checkpoint with a few bytes changed anywhere in either file: read back exactly, or
    /// refused; never garbage, never a panic.
    #[test]
    fn mutated_checkpoints_are_exact_or_refused(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 1..4)
    ) {
        let c = sample();
        let (mut m, mut t) = c.to_bytes().unwrap();
        for (ix, byte, in_manifest) in edits {
            let buf = if in_manifest { &mut m } else { &mut t };
            let i = ix.index(buf.len());
            buf[i] = byte;
        }
        if let Ok(back) = Checkpoint::from_bytes(&m, &t) {
            // Only harmless edits (JSON whitespace, an unchanged byte) may pass.
            prop_assert_eq!(back.tensors, c.tensors);
        }
    }
}
