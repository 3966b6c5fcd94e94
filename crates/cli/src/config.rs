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

/// What a key's value may be, from the type clap parses the flag into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    /// A string or a path.
    Str,
    /// One of the flag's possible values.
    Enum,
    /// Any other type: a string or a number, checked by clap.
    Other,
}

impl Kind {
    fn of(arg: &Arg) -> Kind {
        let vp = arg.get_value_parser();
        let t = vp.type_id();
        let is = |ids: &[TypeId]| ids.iter().any(|id| t == *id);
        if is(&[TypeId::of::<bool>()]) {
            Kind::Bool
        } else if is(&[
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<u128>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<i128>(),
            TypeId::of::<isize>(),
        ]) {
            Kind::Int
        } else if is(&[TypeId::of::<f32>(), TypeId::of::<f64>()]) {
            Kind::Float
        } else if is(&[TypeId::of::<String>(), TypeId::of::<PathBuf>(), TypeId::of::<OsString>()]) {
            Kind::Str
        } else if vp.possible_values().is_some() {
            Kind::Enum
        } else {
            Kind::Other
        }
    }

    /// "an integer", as in "expected an integer".
    fn describe(self, possible: &[String]) -> String {
        match self {
            Kind::Bool => "true or false".into(),
            Kind::Int => "an integer".into(),
            Kind::Float => "a number".into(),
            Kind::Str => "a string (in quotes)".into(),
            Kind::Enum if possible.is_empty() => "a string (in quotes)".into(),
            Kind::Enum => format!("a string, one of {}", possible.join(", ")),
            Kind::Other => "a string or a number".into(),
        }
    }
}

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A plain flag (no value): given when the key's boolean equals this.
    Flag(bool),
    /// A counted flag (`-vvv`): an integer.
    Count,
    /// One value.
    Value,
    /// A list, joined with this delimiter.
    List(char),
}

/// One configuration key: a long flag of `engram run`.
#[derive(Debug)]
struct Key {
    name: String,
    aliases: Vec<String>,
    short: Option<char>,
    kind: Kind,
    shape: Shape,
    /// The flag needs a value: on the command line, the next word is its value.
    needs_value: bool,
    /// The possible values (enums), for messages.
    possible: Vec<String>,
}

impl Key {
    fn of(arg: &Arg, name: &str) -> Key {
        let kind = Kind::of(arg);
        let shape = match arg.get_action() {
            ArgAction::SetTrue => Shape::Flag(true),
            ArgAction::SetFalse => Shape::Flag(false),
            ArgAction::Count => Shape::Count,
            _ => match arg.get_value_delimiter() {
                Some(d) => Shape::List(d),
                None => Shape::Value,
            },
        };
        let takes_values = arg.get_action().takes_values();
        let needs_value = takes_values && arg.get_num_args().is_some_and(|n| n.min_values() > 0);
        let possible = arg
            .get_value_parser()
            .possible_values()
            .map(|pv| pv.filter(|p| !p.is_hide_set()).map(|p| p.get_name().to_string()).collect())
            .unwrap_or_default();
        Key {
            name: name.to_string(),
            aliases: arg.get_all_aliases().unwrap_or_default().into_iter().map(str::to_string).collect(),
            short: arg.get_short(),
            kind,
            shape,
            needs_value,
            possible,
        }
    }

    /// The command-line tokens for `value`, or what was expected instead.
    fn tokens(&self, value: &toml::Value) -> Result<Vec<OsString>, String> {
        let flag = format!("--{}", self.name);
        match self.shape {
            Shape::Flag(on) => match value {
                toml::Value::Boolean(b) => Ok(if *b == on { vec![flag.into()] } else { vec![] }),
                v => Err(format!(
                    "expected true or false (`{}` is a flag without a value), found {}{}",
                    self.name,
                    found(v),
                    unquote_hint(v, Kind::Bool)
                )),
            },
            Shape::Count => match value {
                toml::Value::Integer(n) if (0..=255).contains(n) => Ok(vec![flag.into(); *n as usize]),
                v => Err(format!("expected an integer from 0 to 255 (a count), found {}", found(v))),
            },
            Shape::Value => {
                let s = self.scalar(value)?;
                Ok(vec![format!("{flag}={s}").into()])
            }
            Shape::List(d) => {
                let toml::Value::Array(items) = value else {
                    return Err(format!(
                        "expected an array of {} (e.g. {} = [{}]), found {}",
                        self.plural(),
                        self.name,
                        self.example(),
                        found(value)
                    ));
                };
                if items.is_empty() {
                    return Err("the array is empty; leave the key out instead".into());
                }
                let mut parts = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let s = self.scalar(item).map_err(|e| format!("element {} of the array: {e}", i + 1))?;
                    if s.contains(d) {
                        return Err(format!("element {} of the array contains the separator '{d}'", i + 1));
                    }
                    parts.push(s);
                }
                Ok(vec![format!("{flag}={}", parts.join(&d.to_string())).into()])
            }
        }
    }

    /// One value as the text of a command-line value.
    fn scalar(&self, value: &toml::Value) -> Result<String, String> {
        use toml::Value as V;
        let s = match (self.kind, value) {
            (Kind::Bool, V::Boolean(b)) => b.to_string(),
            (Kind::Int | Kind::Float | Kind::Other, V::Integer(i)) => i.to_string(),
            // Debug is Rust's shortest round-trip form (0.001, 1e-7, inf, NaN).
            (Kind::Float | Kind::Other, V::Float(f)) => format!("{f:?}"),
            (Kind::Str | Kind::Enum | Kind::Other, V::String(s)) => s.clone(),
            (kind, v) => {
                return Err(format!(
                    "expected {}, found {}{}",
                    kind.describe(&self.possible),
                    found(v),
                    unquote_hint(v, kind)
                ))
            }
        };
        Ok(s)
    }

    fn plural(&self) -> &'static str {
        match self.kind {
            Kind::Bool => "booleans",
            Kind::Int => "integers",
            Kind::Float => "numbers",
            Kind::Str | Kind::Enum => "strings",
            Kind::Other => "values",
        }
    }

    fn example(&self) -> String {
        match self.kind {
            Kind::Bool => "true, false".into(),
            Kind::Int | Kind::Float => "0, 10, 20".into(),
            _ => match self.possible.as_slice() {
                [a, b, ..] => format!("\"{a}\", \"{b}\""),
                _ => "\"a\", \"b\"".into(),
            },
        }
    }
}

/// A TOML value as a message shows it: its type, and the value when short.
fn found(v: &toml::Value) -> String {
    match v {
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table".into(),
        v => {
            let shown = v.to_string();
            if shown.chars().count() <= 40 {
                format!("{} {shown}", v.type_str())
            } else {
                format!("a {}", v.type_str())
            }
        }
    }
}

/// "; write it without quotes" when a string holds what the key wants.
fn unquote_hint(v: &toml::Value, kind: Kind) -> &'static str {
    let toml::Value::String(s) = v else { return "" };
    let fits = match kind {
        Kind::Bool => s == "true" || s == "false",
        Kind::Int => s.parse::<i64>().is_ok(),
        Kind::Float => s.trim().parse::<f64>().is_ok(),
        _ => false,
    };
    if fits {
        " (write it without quotes)"
    } else {
        ""
    }
}

/// A key of the file and the tokens it stands for.
#[derive(Debug)]
struct Entry {
    /// Index into [`Keys::keys`].
    key: usize,
    tokens: Vec<OsString>,
}

/// The configuration keys of `engram run`.
#[derive(Debug)]
struct Keys {
    keys: Vec<Key>,
    /// `run` with no flag required: parses one key's tokens as the command line would.
    validator: Command,
}

impl Keys {
    /// The long flags of `run` (a built command: clap fills in value counts when building).
    fn of(run: &Command) -> Keys {
        let keys = run
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| (a, l)))
            .filter(|(_, l)| !NOT_KEYS.contains(l))
            .map(|(a, l)| Key::of(a, l))
            .collect();
        let validator = run.clone().color(ColorChoice::Never).mut_args(|a| a.required(false));
        Keys { keys, validator }
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.name == name || k.aliases.iter().any(|a| a == name))
    }

    /// The keys a TOML document sets, in the order of the file, with their tokens; or the first
    /// problem, naming `source` (the file), the line and the key.
    fn entries(&self, source: &str, text: &str) -> Result<Vec<Entry>, clap::Error> {
        type Doc = BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>>;
        let doc: Doc = toml::from_str(text)
            .map_err(|e| error(ErrorKind::InvalidValue, format!("{source}: {}", e.to_string().trim_end())))?;
        let mut items: Vec<_> = doc.iter().collect();
        items.sort_by_key(|(k, _)| k.span().start);
        let line = |at: usize| text.as_bytes().iter().take(at).filter(|&&b| b == b'\n').count() + 1;
        let mut seen: Vec<Option<(&str, usize)>> = vec![None; self.keys.len()];
        let mut out = Vec::new();
        for (k, v) in items {
            let raw: &str = k.get_ref();
            let at = format!("{source}:{}", line(k.span().start));
            let name = raw.replace('_', "-");
            if NOT_KEYS.contains(&name.as_str()) {
                return Err(error(
                    ErrorKind::UnknownArgument,
                    format!("{at}: `{raw}` is not a key of a configuration file (give --{name} on the command line)"),
                ));
            }
            let Some(ki) = self.find(&name) else {
                return Err(error(ErrorKind::UnknownArgument, self.unknown(&at, raw, v.get_ref())));
            };
            let key = &self.keys[ki];
            if let Some((other, other_line)) = seen[ki] {
                return Err(error(
                    ErrorKind::ArgumentConflict,
                    format!("{at}: keys `{other}` (line {other_line}) and `{raw}` both set --{}", key.name),
                ));
            }
            seen[ki] = Some((raw, line(k.span().start)));
            let tokens = key
                .tokens(v.get_ref())
                .map_err(|m| error(ErrorKind::InvalidValue, format!("{at}: key `{raw}`: {m}")))?;
            if !tokens.is_empty() && !matches!(key.shape, Shape::Flag(_) | Shape::Count) {
                let argv = std::iter::once(OsString::from("run")).chain(tokens.iter().cloned());
                if let Err(e) = self.validator.clone().try_get_matches_from(argv) {
                    // Values are parsed before requirements between flags are checked: only
                    // the latter may fail for a good value, and are left to the whole command.
                    if !matches!(e.kind(), ErrorKind::MissingRequiredArgument | ErrorKind::ArgumentConflict) {
                        return Err(error(e.kind(), format!("{at}: key `{raw}`: {}", clap_message(&e))));
                    }
                }
            }
            out.push(Entry { key: ki, tokens });
        }
        Ok(out)
    }

    /// The message for an unknown key, with the closest key when one is close.
    fn unknown(&self, at: &str, raw: &str, value: &toml::Value) -> String {
        let mut m = format!("{at}: unknown key `{raw}`");
        if let Some(s) = self.suggest(raw) {
            m.push_str(&format!(" (did you mean `{s}`?)"));
        }
        m.push_str("; keys are the long flag names of `engram run --help` without the dashes, e.g. `epochs = 5`");
        if matches!(value, toml::Value::Table(_)) {
            m.push_str(" (tables such as [section] are not used: write every key at the top level)");
        }
        m
    }

    fn suggest(&self, raw: &str) -> Option<&str> {
        let q = raw.trim().trim_start_matches('-').to_lowercase().replace(['_', ' '], "-");
        if q.is_empty() {
            return None;
        }
        if let Some(i) = self.find(&q) {
            return Some(&self.keys[i].name);
        }
        const SYNONYMS: [(&str, &str); 10] = [
            ("learning-rate", "lr"),
            ("batch-size", "batch"),
            ("num-tasks", "tasks"),
            ("n-tasks", "tasks"),
            ("hidden-size", "hidden"),
            ("num-layers", "layers"),
            ("output", "out"),
            ("data", "data-dir"),
            ("strategy", "method"),
            ("benchmark", "scenario"),
        ];
        if let Some((_, s)) = SYNONYMS.iter().find(|(syn, s)| *syn == q && self.find(s).is_some()) {
            return Some(s);
        }
        let limit = match q.chars().count() {
            0..=3 => 1,
            4..=8 => 2,
            _ => 3,
        };
        let best = self.keys.iter().map(|k| (distance(&q, &k.name), &k.name)).min_by_key(|(d, _)| *d);
        if let Some((d, name)) = best {
            if d <= limit {
                return Some(name);
            }
        }
        // A prefix either way: `samples` for `samples-per-task`, `batch-size` for `batch`.
        if q.len() >= 3 {
            return self
                .keys
                .iter()
                .filter(|k| k.name.starts_with(&q) || q.starts_with(&format!("{}-", k.name)))
                .map(|k| k.name.as_str())
                .min_by_key(|n| n.len());
        }
        None
    }

    /// For each key, whether the user's own tokens (after `run`) give its flag.
    fn mentioned(&self, user: &[OsString]) -> Vec<bool> {
        let mut on = vec![false; self.keys.len()];
        let mut i = 0;
        while i < user.len() {
            let tok = user[i].to_string_lossy();
            i += 1;
            if tok == "--" {
                break;
            }
            if let Some(long) = tok.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, _)) => (n, true),
                    None => (long, false),
                };
                if let Some(k) = self.find(name) {
                    on[k] = true;
                    if !inline && self.keys[k].needs_value {
                        i += 1; // its value, whatever it looks like
                    }
                }
            } else if let Some(shorts) = tok.strip_prefix('-') {
                for c in shorts.chars() {
                    let Some(k) = self.keys.iter().position(|k| k.short == Some(c)) else { break };
                    on[k] = true;
                    if self.keys[k].needs_value {
                        if shorts.ends_with(c) && !shorts.contains('=') {
                            i += 1;
                        }
                        break;
                    }
                }
            }
        }
        on
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    /// Expands `engram run <user>` with `text` as the configuration file's content.
    fn expand_text(text: &str, user: &[&str]) -> Result<Vec<OsString>, clap::Error> {
        let mut args = os(&["engram", "run"]);
        args.extend(os(user));
        let text = text.to_string();
        expand_with(args, move |_| Ok(text))
    }

    /// The `run` arguments (Debug text) of `engram run <user>` with `text` as the config file.
    fn run_args(text: &str, user: &[&str]) -> Result<String, String> {
        let args = expand_text(text, user).map_err(|e| e.to_string())?;
        let m = command().try_get_matches_from(args).map_err(|e| e.to_string())?;
        let cli = Cli::from_arg_matches(&m).map_err(|e| e.to_string())?;
        match cli.command {
            crate::Command::Run(a) => Ok(format!("{a:?}")),
            other => Err(format!("not run: {other:?}")),
        }
    }

    /// The `run` arguments (Debug text) of a plain command line.
    fn cli_args(user: &[&str]) -> String {
        let mut args = os(&["engram", "run"]);
        args.extend(os(user));
        let m = command().try_get_matches_from(args).unwrap_or_else(|e| panic!("{e}"));
        match Cli::from_arg_matches(&m).unwrap().command {
            crate::Command::Run(a) => format!("{a:?}"),
            _ => unreachable!(),
        }
    }

    fn err(text: &str) -> String {
        match expand_text(text, &["--config", "run.toml"]) {
            Ok(a) => panic!("accepted: {a:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn keys() -> Keys {
        let mut cmd = command();
        cmd.build();
        Keys::of(cmd.find_subcommand("run").unwrap())
    }

    const BASE: &str = "scenario = \"split-mnist\"\nmethod = \"si\"\n";

    #[test]
    fn every_long_flag_of_run_is_a_key() {
        let mut cmd = command();
        cmd.build();
        let run = cmd.find_subcommand("run").unwrap();
        let keys = Keys::of(run);
        let longs: Vec<&str> = run.get_arguments().filter_map(|a| a.get_long()).collect();
        for l in &longs {
            assert_eq!(keys.find(l).is_some(), !NOT_KEYS.contains(l), "{l}");
        }
        for k in ["lr", "eval-train", "samples-per-task", "data-dir", "no-verify", "threads", "angles", "quiet"] {
            assert!(keys.find(k).is_some(), "{k}");
        }
        assert!(keys.find("config").is_none());
    }

    #[test]
    fn each_kind_of_value_becomes_its_flag() {
        let text = format!(
            "{BASE}lr = 0.002\nepochs = 3\nout = \"r.json\"\noptimizer = \"sgd\"\neval-train = true\n\
             profile = false\nreset-optimizer = false\nzero_output = true\nc = -1\ngamma = 1e-3\n"
        );
        let got = run_args(&text, &["--config", "run.toml"]).unwrap();
        let want = cli_args(&[
            "--scenario",
            "split-mnist",
            "--method",
            "si",
            "--lr",
            "0.002",
            "--epochs",
            "3",
            "--out",
            "r.json",
            "--optimizer",
            "sgd",
            "--eval-train",
            "--reset-optimizer",
            "false",
            "--zero-output",
            "--c=-1",
            "--gamma",
            "0.001",
            "--config",
            "run.toml",
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn arrays_become_lists() {
        let text = "scenario = \"rotated-mnist\"\nmethod = \"si\"\nangles = [0, 45.5, -90]\n";
        let got = run_args(text, &["--config=c.toml"]).unwrap();
        let want =
            cli_args(&["--scenario", "rotated-mnist", "--method", "si", "--angles=0,45.5,-90", "--config=c.toml"]);
        assert_eq!(got, want);
        assert!(got.contains("angles: Some([0.0, 45.5, -90.0])"), "{got}");
        let e = err("angles = 5\n");
        assert!(e.contains("key `angles`") && e.contains("expected an array of numbers"), "{e}");
        let e = err("angles = []\n");
        assert!(e.contains("key `angles`") && e.contains("empty"), "{e}");
        let e = err("angles = [1, \"x\"]\n");
        assert!(e.contains("key `angles`") && e.contains("element 2"), "{e}");
        let e = err("lr = [1, 2]\n");
        assert!(e.contains("key `lr`") && e.contains("expected a number, found an array"), "{e}");
    }

    /// The command line overrides the file, for every kind of flag.
    #[test]
    fn command_line_overrides_the_file() {
        let text = format!(
            "{BASE}lr = 0.5\nreset-optimizer = false\nangles = [1, 2, 3]\nquiet = true\nseed = 4\nout = \"a.json\"\n"
        );
        let user = [
            "--config",
            "run.toml",
            "--lr=0.25",
            "--reset-optimizer",
            "--angles",
            "7,8",
            "-q",
            "--seed",
            "9",
            "--out",
            "b.json",
            "--method",
            "ewc",
        ];
        let got = run_args(&text, &user).unwrap();
        let mut want = vec!["--scenario", "split-mnist"];
        want.extend(user);
        assert_eq!(got, cli_args(&want));
        assert!(got.contains("lr: Some(0.25)") && got.contains("angles: Some([7.0, 8.0])"), "{got}");
        assert!(got.contains("reset_optimizer: Some(true)") && got.contains("seed: 9"), "{got}");
        assert!(got.contains("method: Ewc") && got.contains("\"b.json\""), "{got}");
        // the override also holds when the flag is given twice on the command line itself
        let got = run_args(
            &text,
            &["--config", "run.toml", "--eval-train", "--eval-train", "--zero-output=false", "--zero-output"],
        )
        .unwrap();
        assert!(got.contains("eval_train: true") && got.contains("zero_output: Some(true)"), "{got}");
    }

    #[test]
    fn file_tokens_come_before_the_users() {
        let a = expand_text("lr = 0.1\n", &["--config", "x.toml", "--epochs", "2"]).unwrap();
        assert_eq!(a, os(&["engram", "run", "--lr=0.1", "--config", "x.toml", "--epochs", "2"]));
    }

    #[test]
    fn snake_case_keys_and_duplicates() {
        let got = run_args(&format!("{BASE}eval_train = true\nsamples_per_task = 100\n"), &["--config", "f"]).unwrap();
        assert!(got.contains("eval_train: true") && got.contains("samples_per_task: Some(100)"), "{got}");
        let e = err("eval_train = true\neval-train = false\n");
        assert!(e.contains("`eval_train` (line 1) and `eval-train` both set --eval-train"), "{e}");
        assert!(e.contains("run.toml:2"), "{e}");
    }

    #[test]
    fn unknown_key_is_named_with_a_suggestion() {
        let e = err("epochs = 1\nlrr = 0.1\n");
        assert!(e.contains("run.toml:2: unknown key `lrr` (did you mean `lr`?)"), "{e}");
        assert!(e.contains("engram run --help"), "{e}");
        let e = err("learning_rate = 0.1\n");
        assert!(e.contains("unknown key `learning_rate` (did you mean `lr`?)"), "{e}");
        let e = err("batch-size = 3\n");
        assert!(e.contains("did you mean `batch`?"), "{e}");
        let e = err("Samples = 3\n");
        assert!(e.contains("did you mean `samples-per-task`?"), "{e}");
        let e = err("zzzzzzzzzz = 3\n");
        assert!(e.contains("unknown key `zzzzzzzzzz`;") && !e.contains("did you mean"), "{e}");
        let e = err("[run]\nlr = 1\n");
        assert!(e.contains("unknown key `run`") && e.contains("top level"), "{e}");
        let e = err("config = \"other.toml\"\n");
        assert!(e.contains("`config` is not a key"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_key_and_the_expected_kind() {
        let cases = [
            ("epochs = \"3\"", "key `epochs`: expected an integer, found string \"3\" (write it without quotes)"),
            ("epochs = 2.5", "key `epochs`: expected an integer, found float 2.5"),
            ("lr = true", "key `lr`: expected a number, found boolean true"),
            ("out = 3", "key `out`: expected a string (in quotes), found integer 3"),
            ("eval-train = \"yes\"", "key `eval-train`: expected true or false"),
            ("eval-train = 1", "key `eval-train`: expected true or false"),
            ("reset-optimizer = \"false\"", "expected true or false, found string \"false\" (write it without quotes)"),
            ("method = 3", "key `method`: expected a string, one of "),
            ("seed = 1979-05-27", "key `seed`: expected an integer, found datetime"),
            ("lr = { a = 1 }", "key `lr`: expected a number, found a table"),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.contains("run.toml:1:"), "{text}: {e}");
        }
    }

    #[test]
    fn bad_values_name_the_file_and_key() {
        let e = err("epochs = 1\nmethod = \"sii\"\n");
        assert!(e.starts_with("error: run.toml:2: key `method`: invalid value 'sii' for '--method <METHOD>'"), "{e}");
        assert!(e.contains("possible values:") && e.contains("si"), "{e}");
        assert!(!e.contains("Usage:") && !e.contains("For more information"), "{e}");
        let e = err("seed = -1\n");
        assert!(e.contains("key `seed`: invalid value '-1'"), "{e}");
        let e = err("out = \"\"\n");
        assert!(e.contains("key `out`"), "{e}");
    }

    #[test]
    fn syntax_errors_give_the_position() {
        let e = err("lr = 0.1\nepochs = \n");
        assert!(e.contains("run.toml: TOML parse error at line 2"), "{e}");
        let e = err("lr = 1\nlr = 2\n");
        assert!(e.contains("run.toml") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn config_twice_help_and_other_commands() {
        let e = expand_text("", &["--config", "a", "--config=b"]).unwrap_err().to_string();
        assert!(e.contains("--config given twice (a and b)"), "{e}");
        // help wins, the file is not read
        let args = os(&["engram", "run", "--config", "missing.toml", "--help"]);
        assert_eq!(expand(args.clone()).unwrap(), args);
        // other commands are left to clap, which refuses --config there
        let args = os(&["engram", "train", "--config", "missing.toml"]);
        assert_eq!(expand(args.clone()).unwrap(), args);
        assert!(command().try_get_matches_from(args).is_err());
        // a missing value is clap's to report
        let args = os(&["engram", "run", "--config"]);
        assert_eq!(expand(args.clone()).unwrap(), args);
        let e = expand_text("", &["--config="]).unwrap_err().to_string();
        assert!(e.contains("--config needs a file name"), "{e}");
    }

    #[test]
    fn unreadable_files_are_named() {
        let e = expand(os(&["engram", "run", "--config", "/nonexistent/run.toml"])).unwrap_err().to_string();
        assert!(e.contains("cannot read the configuration file /nonexistent/run.toml"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, b"lr = \"\xff\"\n").unwrap();
        let e =
            expand(vec!["engram".into(), "run".into(), "--config".into(), p.clone().into()]).unwrap_err().to_string();
        assert!(e.contains("bad.toml: not UTF-8"), "{e}");
        std::fs::write(&p, format!("{BASE}epochs = 2\n")).unwrap();
        let a = expand(vec!["engram".into(), "run".into(), "--config".into(), p.clone().into()]).unwrap();
        assert!(a.contains(&OsString::from("--epochs=2")), "{a:?}");
    }

    #[test]
    fn suggestions_and_distance() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "ab"), 2);
        let k = keys();
        assert_eq!(k.suggest("--LR"), Some("lr"));
        assert_eq!(k.suggest("epoch"), Some("epochs"));
        assert_eq!(k.suggest(""), None);
    }

    /// A value of the right kind for `key`, as (TOML value, command-line text).
    fn value_for(key: &Key) -> Option<BoxedStrategy<(toml::Value, String)>> {
        fn one(key: &Key) -> Option<BoxedStrategy<(toml::Value, String)>> {
            Some(match key.kind {
                Kind::Bool => any::<bool>().prop_map(|b| (toml::Value::Boolean(b), b.to_string())).boxed(),
                Kind::Int => (1i64..300).prop_map(|i| (toml::Value::Integer(i), i.to_string())).boxed(),
                Kind::Float => prop_oneof![
                    any::<f32>().prop_filter("finite", |f| f.is_finite()),
                    (-1000i32..1000).prop_map(|i| i as f32 / 8.0),
                ]
                .prop_map(|f| (toml::Value::Float(f as f64), f.to_string()))
                .boxed(),
                Kind::Str => "\\PC{1,12}".prop_map(|s| (toml::Value::String(s.clone()), s)).boxed(),
                Kind::Enum if !key.possible.is_empty() => proptest::sample::select(key.possible.clone())
                    .prop_map(|s| (toml::Value::String(s.clone()), s))
                    .boxed(),
                Kind::Enum | Kind::Other => return None,
            })
        }
        match key.shape {
            Shape::Flag(_) => Some(any::<bool>().prop_map(|b| (toml::Value::Boolean(b), String::new())).boxed()),
            Shape::Count => None,
            Shape::Value => one(key),
            Shape::List(d) => {
                if key.kind == Kind::Str {
                    return None; // strings may hold the separator
                }
                Some(
                    proptest::collection::vec(one(key)?, 1..5)
                        .prop_map(move |v| {
                            let (t, c): (Vec<_>, Vec<_>) = v.into_iter().unzip();
                            (toml::Value::Array(t), c.join(&d.to_string()))
                        })
                        .boxed(),
                )
            }
        }
    }

    /// Per key: maybe a value in the file, maybe one on the command line, and snake_case or not.
    type Setting = (Option<(toml::Value, String)>, Option<(toml::Value, String)>, bool);

    fn settings() -> impl Strategy<Value = Vec<Setting>> {
        let k = keys();
        let per_key: Vec<BoxedStrategy<Setting>> = k
            .keys
            .iter()
            .map(|key| match value_for(key) {
                Some(v) => {
                    (proptest::option::weighted(0.5, v.clone()), proptest::option::weighted(0.2, v), any::<bool>())
                        .boxed()
                }
                None => Just((None, None, false)).boxed(),
            })
            .collect();
        per_key
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any text: the reader returns (Ok or an error), never panics.
        #[test]
        fn any_text_never_panics(text in any::<String>()) {
            let k = keys();
            let _ = k.entries("f.toml", &text);
        }

        /// TOML-ish documents: never a panic, and whatever is accepted parses value by value.
        #[test]
        fn tomlish_documents_never_panic_nor_load_garbage(
            lines in proptest::collection::vec((key_text(), value_text()), 0..8),
            header in proptest::option::of("\\[[a-z.]{1,6}\\]"),
        ) {
            let mut text = String::new();
            if let Some(h) = header { text.push_str(&h); text.push('\n'); }
            for (k, v) in &lines { text.push_str(&format!("{k} = {v}\n")); }
            let user = ["--scenario", "split-mnist", "--method", "si", "--config", "f.toml"];
            if let Ok(args) = expand_text(&text, &user) {
                if let Err(e) = command().try_get_matches_from(args.clone()) {
                    prop_assert!(
                        matches!(e.kind(), ErrorKind::ArgumentConflict | ErrorKind::MissingRequiredArgument),
                        "accepted {text:?} -> {args:?}, then clap said {e}"
                    );
                }
            }
        }

        /// Valid tables over the real flags: expansion then clap gives what the command line gives,
        /// command-line values winning.
        #[test]
        fn valid_tables_round_trip(settings in settings()) {
            let k = keys();
            let mut table = toml::Table::new();
            let mut user: Vec<String> = vec!["--config".into(), "run.toml".into()];
            let mut want: Vec<String> = user.clone();
            for (key, (file, cli, snake)) in k.keys.iter().zip(&settings) {
                let flag = format!("--{}", key.name);
                // a plain flag is given when on; off, it is simply absent
                let given = |v: &&(toml::Value, String)| match key.shape {
                    Shape::Flag(on) => v.0 == toml::Value::Boolean(on),
                    _ => true,
                };
                let cli_given = cli.as_ref().filter(given);
                let token = |text: &str| if matches!(key.shape, Shape::Flag(_)) { flag.clone() } else { format!("{flag}={text}") };
                if let Some((v, _)) = file {
                    let name = if *snake { key.name.replace('-', "_") } else { key.name.clone() };
                    table.insert(name, v.clone());
                }
                if let Some((_, text)) = cli_given {
                    user.push(token(text));
                }
                if let Some((_, text)) = cli_given.or(file.as_ref().filter(given)) {
                    want.push(token(text));
                }
            }
            for (key, value) in [("scenario", "split-mnist"), ("method", "si")] {
                let i = k.find(key).unwrap();
                if settings[i].0.is_none() && settings[i].1.is_none() {
                    table.insert(key.into(), toml::Value::String(value.into()));
                    want.push(format!("--{key}={value}"));
                }
            }
            let text = toml::to_string(&table).unwrap();
            let user: Vec<&str> = user.iter().map(String::as_str).collect();
            let got = run_args(&text, &user);
            let want: Vec<&str> = want.iter().map(String::as_str).collect();
            let mut args = os(&["engram", "run"]);
            args.extend(os(&want));
            match command().try_get_matches_from(args) {
                Ok(m) => {
                    let crate::Command::Run(a) = Cli::from_arg_matches(&m).unwrap().command else { unreachable!() };
                    prop_assert_eq!(got, Ok(format!("{a:?}")), "file:\n{}", text);
                }
                // a combination clap itself refuses (a flag's requirements): refused either way
                Err(_) => prop_assert!(got.is_err(), "file:\n{text}"),
            }
        }
    }

    fn key_text() -> impl Strategy<Value = String> {
        let names: Vec<String> = keys().keys.iter().map(|k| k.name.clone()).collect();
        let snake: Vec<String> = names.iter().map(|n| n.replace('-', "_")).collect();
        prop_oneof![
            4 => proptest::sample::select(names),
            1 => proptest::sample::select(snake),
            1 => proptest::sample::select(vec!["config".to_string(), "help".into(), "lrr".into(), "\"lr\"".into(), "a.b".into()]),
            1 => "[a-z_-]{1,10}",
            1 => any::<String>(),
        ]
    }

    fn value_text() -> impl Strategy<Value = String> {
        let fixed: Vec<String> = [
            "0",
            "1",
            "-1",
            "3",
            "200",
            "9223372036854775807",
            "0.5",
            "-0.0",
            "1e-3",
            "inf",
            "-inf",
            "nan",
            "1_000",
            "0x10",
            "true",
            "false",
            "\"si\"",
            "\"split-mnist\"",
            "\"x.json\"",
            "\"\"",
            "\"sii\"",
            "'lit'",
            "[]",
            "[1, 2]",
            "[0.5, \"a\"]",
            "[[1]]",
            "{ a = 1 }",
            "{}",
            "1979-05-27",
            "07:32:00",
            "1979-05-27T07:32:00Z",
            "\"unterminated",
            "[1,",
            "\"\\u0000\"",
            "\"a,b\"",
            "\"-q\"",
            "\"--lr=1\"",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        prop_oneof![
            4 => proptest::sample::select(fixed),
            1 => any::<i64>().prop_map(|i| i.to_string()),
            1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:?}")),
            1 => "\\PC{0,10}".prop_map(|s| format!("{s:?}")),
            1 => any::<String>(),
        ]
    }
}
