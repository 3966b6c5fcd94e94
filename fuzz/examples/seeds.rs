//! Writes the seed inputs of both fuzz targets: `cargo run --example seeds` from `fuzz/`.
//!
//! Everything is synthetic (a few bytes each, no MNIST data): valid IDX images and labels files,
//! raw, gzipped and as two gzip members, into `corpus/idx/`; valid checkpoints from
//! `Checkpoint::to_bytes` (as raw pairs and as a few edits of the built-in one) into
//! `corpus/checkpoint/`. An optional argument replaces `corpus` as the directory written to.

use engram_fuzz::{checkpoint, gzip, idx_images, idx_labels};
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut idx: Vec<(&str, Vec<u8>)> = Vec::new();
    let pixels: Vec<u8> = (0..2 * 3 * 2).map(|i| (i * 37 % 256) as u8).collect();
    let images = idx_images(2, 3, 2, &pixels);
    let one = idx_images(1, 1, 1, &[255]);
    let labels = idx_labels(&[5, 0, 4, 1, 9, 2]);
    let mut two_members = gzip(&images[..10]);
    two_members.extend(gzip(&images[10..]));
    idx.push(("images", images.clone()));
    idx.push(("images-1x1x1", one.clone()));
    idx.push(("images.gz", gzip(&images)));
    idx.push(("images-1x1x1.gz", gzip(&one)));
    idx.push(("images-two-members.gz", two_members));
    idx.push(("labels", labels.clone()));
    idx.push(("labels.gz", gzip(&labels)));

    let mut ck: Vec<(&str, Vec<u8>)> = Vec::new();
    for (name, c) in [("raw-sample", checkpoint::sample()), ("raw-small", checkpoint::sample_small())] {
        let (m, t) = c.to_bytes().expect("sample encodes");
        ck.push((name, checkpoint::raw_input(&m, &t)));
    }
    // Structured mode (odd first byte): no edit, a truncation of the tensor file, a flipped
    // data byte, an edited manifest byte.
    ck.push(("edit-none", vec![1]));
    ck.push(("edit-truncate", vec![1, 5, 0xf0, 0x00, 0]));
    ck.push(("edit-flip", vec![1, 1, 0xfe, 0xff, 0x10]));
    ck.push(("edit-manifest", vec![1, 2, 40, 0, b'7']));

    for (dir, files) in [("idx", idx), ("checkpoint", ck)] {
        let d = root.join(dir);
        std::fs::create_dir_all(&d)?;
        for (name, bytes) in files {
            std::fs::write(d.join(format!("seed-{name}")), &bytes)?;
        }
        println!("wrote seeds to {}", d.display());
    }
    Ok(())
}
