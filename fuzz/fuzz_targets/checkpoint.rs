//! `cargo +nightly fuzz run checkpoint`: the checkpoint reader (`Checkpoint::from_bytes`) on any
//! pair of files, and on edits of a valid checkpoint. See `engram_fuzz::checkpoint`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| engram_fuzz::checkpoint::run(data));
