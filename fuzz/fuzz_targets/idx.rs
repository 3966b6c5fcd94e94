//! `cargo +nightly fuzz run idx`: the IDX reader (`parse_images`, `parse_labels`) on any bytes,
//! raw and gzipped. See `engram_fuzz::idx`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| engram_fuzz::idx::run(data));
