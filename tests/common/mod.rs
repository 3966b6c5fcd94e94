//! Helpers shared by the end-to-end tests (each test file is its own crate and uses a part).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `engram` binary, with ENGRAM_DATA removed (tests pass --data-dir).
pub fn engram() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_engram"));
    c.env_remove("ENGRAM_DATA");
    c
}

/// The real MNIST directory from ENGRAM_DATA, or `None` after printing a SKIP line.
pub fn mnist_dir() -> Option<PathBuf> {
    match std::env::var_os("ENGRAM_DATA") {
        Some(d) if Path::new(&d).is_dir() => Some(PathBuf::from(d)),
        _ => {
            eprintln!("SKIP: ENGRAM_DATA not set or not a directory; this test needs the real MNIST files");
            None
        }
    }
}

/// A finished command's stdout and stderr.
pub fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// A JSON file written by a command.
pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("output written")).expect("valid JSON")
}
