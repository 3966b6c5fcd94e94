//! Helpers shared by the end-to-end tests (each test file is its own crate and uses a part).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// The longest a case may take (an accepted case trains the rest of a short run).
pub const CASE_LIMIT: Duration = Duration::from_secs(120);

/// How a case ended.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Accepted,
    /// Exit status 1 (or 2, a usage error: a bad flag or configuration file) with an `error:`
    /// message (its first line).
    Refused(String),
    /// A panic, a signal, a hang, or a failure without a message.
    Bad(String),
}

/// Runs `cmd` with [`CASE_LIMIT`], killing it past that.
pub fn run_limited(mut cmd: Command) -> Outcome {
    let mut child =
        cmd.env("RUST_BACKTRACE", "0").stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("engram starts");
    let t0 = Instant::now();
    loop {
        match child.try_wait().expect("wait") {
            Some(status) => {
                let out = child.wait_with_output().expect("output");
                let err = text(&out).1;
                let brief: String = err.trim().chars().take(300).collect();
                return match status.code() {
                    Some(0) => Outcome::Accepted,
                    Some(1 | 2) if err.contains("error:") => {
                        Outcome::Refused(err.lines().find(|l| l.contains("error:")).unwrap_or("").to_string())
                    }
                    Some(c) => Outcome::Bad(format!("exit {c}: {brief}")),
                    None => Outcome::Bad(format!("killed by a signal: {brief}")),
                };
            }
            None if t0.elapsed() > CASE_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Outcome::Bad(format!("still running after {CASE_LIMIT:?}"));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// `f` of each item, on two threads (the machine's cores), in the items' order.
pub fn map_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(item) = items.get(i) else { return };
                let r = f(item);
                done.lock().unwrap().push((i, r));
            });
        }
    });
    let mut done = done.into_inner().unwrap();
    done.sort_by_key(|d| d.0);
    done.into_iter().map(|d| d.1).collect()
}
