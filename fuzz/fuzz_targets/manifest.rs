//! `cargo +nightly fuzz run manifest`: the run record of a checkpoint's manifest, as engram reads
//! it before anything resumes (`engram_cl::checkpoint::describe` and `progress`: the record
//! parsed strictly and every value checked). Any bytes that parse as JSON become the `run`
//! object of a checkpoint; the checks must refuse or accept, never panic, overflow or hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| engram_fuzz::manifest::run(data));
