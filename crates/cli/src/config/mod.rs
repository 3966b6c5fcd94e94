//! `engram run --config FILE`: flags from a TOML file.
//!
//! Before clap sees the process arguments, [`parse`] hands them to [`expand`]: when the command
//! is `run` and `--config FILE` is among its arguments, each key of FILE becomes the command-line
//! tokens of the flag of the same name, inserted right after `run`, ahead of the user's own
//! tokens. The key set is read from clap's own definition of `engram run`, so every flag (present
//! and future) is a key: the long flag name without its dashes (`lr`, `eval-train`), or the same
//! in snake_case (`eval_train`). `config`, `help` and `version` are not keys.
//!
//! A flag given on the command line overrides the file: the file's tokens for that flag are left
//! out (list flags such as `--angles` would otherwise append to the file's list), and `run`
//! parses last-occurrence-wins (`args_override_self`).
//!
//! Values: a TOML string, integer or float is the flag's value; `true` / `false` switch a plain
//! flag (`eval-train = true`) on or leave it off, and are the value of a BOOL option
//! (`reset-optimizer = false`); an array is a comma-separated list (`angles = [0, 45, 90]`, list
//! flags only). Every value is checked against its flag with clap's own parser, so a file is
//! either refused with a message naming the file, the line and the key, or yields arguments clap
//! accepts value by value. The reader never panics (property tests below).

use crate::Cli;
use clap::error::ErrorKind;
use clap::{Arg, ArgAction, ColorChoice, Command, CommandFactory, FromArgMatches};
use std::any::TypeId;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Long flag names of `engram run` that are not configuration keys.
const NOT_KEYS: [&str; 3] = ["config", "help", "version"];

/// Configuration files larger than this are refused (a guard against `--config /dev/zero`).
const MAX_BYTES: u64 = 1 << 20;

/// The command line with `run` parsing last-occurrence-wins.
pub fn command() -> Command {
    Cli::command().mut_subcommand("run", |c| c.args_override_self(true))
}

/// Parses the process arguments, expanding `engram run --config FILE` first.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
    let args = expand(args.into_iter().collect())?;
    let matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches)
}

/// `args` (the program name first) with the keys of `run --config FILE` inserted as flags right
/// after `run`; unchanged for other commands, without `--config`, or with `--help` / `--version`
/// (help wins). The expanded arguments keep `--config FILE`.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, clap::Error> {
    expand_with(args, read_file)
}

/// What `engram run --config FILE` makes of a file holding `text`, up to the resolved and
/// validated configuration, without the disk: `Ok` when the run would start, the refusal
/// otherwise. The fuzz target of the TOML reader (`fuzz/`, target `toml`) calls it on any text:
/// it must never panic.
pub fn check_config_text(text: &str) -> Result<(), String> {
    let args: Vec<OsString> = ["engram", "run", "--config", "run.toml"].into_iter().map(OsString::from).collect();
    let args = expand_with(args, |_| Ok(text.to_string())).map_err(|e| e.to_string())?;
    let matches = command().try_get_matches_from(args).map_err(|e| e.to_string())?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    match cli.command {
        crate::Command::Run(a) => a.resolve().map(|_| ()).map_err(|e| e.to_string()),
        _ => Err("not a run".into()),
    }
}

/// [`expand`] with the file read by `read` (tests give the text directly).
fn expand_with(
    args: Vec<OsString>,
    read: impl FnOnce(&Path) -> Result<String, clap::Error>,
) -> Result<Vec<OsString>, clap::Error> {
    // `engram` has no top-level option taking a value: the first word is the command.
    let Some(at) = args.iter().skip(1).position(|a| !a.to_string_lossy().starts_with('-')).map(|i| i + 1) else {
        return Ok(args);
    };
    if args[at] != "run" {
        return Ok(args);
    }
    let mut cmd = command();
    cmd.build();
    let Some(run) = cmd.find_subcommand("run") else { return Ok(args) };
    let keys = Keys::of(run);

    let user = &args[at + 1..];
    let mut file: Option<PathBuf> = None;
    let mut i = 0;
    while i < user.len() {
        let tok = user[i].to_string_lossy();
        if tok == "--" {
            break;
        }
        if matches!(tok.as_ref(), "-h" | "--help" | "-V" | "--version") {
            return Ok(args);
        }
        let path = if tok == "--config" {
            match user.get(i + 1) {
                // A missing value (or one that looks like a flag) is clap's to report.
                None => return Ok(args),
                Some(p) if p.to_string_lossy().starts_with('-') && p != "-" => return Ok(args),
                Some(p) => {
                    i += 1;
                    PathBuf::from(p)
                }
            }
        } else if let Some(rest) = tok.strip_prefix("--config=") {
            match user[i].to_str() {
                Some(_) => PathBuf::from(rest),
                None => {
                    return Err(error(
                        ErrorKind::InvalidUtf8,
                        "the --config=FILE path is not valid UTF-8; write `--config FILE` instead",
                    ))
                }
            }
        } else {
            i += 1;
            continue;
        };
        if path.as_os_str().is_empty() {
            return Err(error(ErrorKind::InvalidValue, "--config needs a file name"));
        }
        if let Some(first) = &file {
            return Err(error(
                ErrorKind::ArgumentConflict,
                format!(
                    "--config given twice ({} and {}): one configuration file per run",
                    first.display(),
                    path.display()
                ),
            ));
        }
        file = Some(path);
        i += 1;
    }
    let Some(file) = file else { return Ok(args) };
    let text = read(&file)?;
    let entries = keys.entries(&file.display().to_string(), &text)?;
    let mentioned = keys.mentioned(user);
    let mut out: Vec<OsString> = args[..=at].to_vec();
    for e in entries {
        if !mentioned[e.key] {
            out.extend(e.tokens);
        }
    }
    out.extend(user.iter().cloned());
    Ok(out)
}

fn error(kind: ErrorKind, message: impl std::fmt::Display) -> clap::Error {
    clap::Error::raw(kind, format!("{message}\n"))
}

/// Reads a configuration file as UTF-8 text.
fn read_file(path: &Path) -> Result<String, clap::Error> {
    let io =
        |e: std::io::Error| error(ErrorKind::Io, format!("cannot read the configuration file {}: {e}", path.display()));
    // Only a regular file (a link to one is fine): a FIFO would block the read for ever.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        let what = if meta.is_dir() { "a folder" } else { "not a regular file (a FIFO, device or socket)" };
        return Err(error(ErrorKind::Io, format!("the configuration file {} is {what}", path.display())));
    }
    let f = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    f.take(MAX_BYTES + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(error(
            ErrorKind::Io,
            format!("{}: larger than {} KiB; not a configuration file", path.display(), MAX_BYTES / 1024),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        error(
            ErrorKind::InvalidUtf8,
            format!(
                "{}: not UTF-8 text (TOML files are UTF-8): invalid byte at offset {}",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// clap's message without its "error: " prefix, usage and "--help" lines.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = Vec::new();
    for l in text.lines() {
        if l.starts_with("Usage:") || l.starts_with("For more information") {
            break;
        }
        lines.push(l);
    }
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    let s = lines.join("\n");
    s.strip_prefix("error: ").unwrap_or(&s).to_string()
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

mod keys;
#[cfg(test)]
mod tests;

use keys::*;
