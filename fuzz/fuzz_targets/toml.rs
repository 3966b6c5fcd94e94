//! `cargo +nightly fuzz run toml`: `engram run --config FILE` on any text, up to the resolved and
//! validated configuration (`engram_cli::check_config_text`): refused with a message or
//! accepted, never a panic, an overflow or a hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| engram_fuzz::toml::run(data));
