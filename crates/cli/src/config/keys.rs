//! The keys of a run.toml: one per long flag of `engram run`, typed from clap's definition
//! (booleans, integers, floats, strings, lists), and how each TOML value becomes flags.

use super::*;

/// What a key's value may be, from the type clap parses the flag into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
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
    pub(super) fn of(arg: &Arg) -> Kind {
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
    pub(super) fn describe(self, possible: &[String]) -> String {
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
pub(super) enum Shape {
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
pub(super) struct Key {
    pub(super) name: String,
    pub(super) aliases: Vec<String>,
    pub(super) short: Option<char>,
    pub(super) kind: Kind,
    pub(super) shape: Shape,
    /// The flag needs a value: on the command line, the next word is its value.
    pub(super) needs_value: bool,
    /// The possible values (enums), for messages.
    pub(super) possible: Vec<String>,
}

impl Key {
    pub(super) fn of(arg: &Arg, name: &str) -> Key {
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
    pub(super) fn tokens(&self, value: &toml::Value) -> Result<Vec<OsString>, String> {
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
    pub(super) fn scalar(&self, value: &toml::Value) -> Result<String, String> {
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

    pub(super) fn plural(&self) -> &'static str {
        match self.kind {
            Kind::Bool => "booleans",
            Kind::Int => "integers",
            Kind::Float => "numbers",
            Kind::Str | Kind::Enum => "strings",
            Kind::Other => "values",
        }
    }

    pub(super) fn example(&self) -> String {
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
pub(super) fn found(v: &toml::Value) -> String {
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
pub(super) fn unquote_hint(v: &toml::Value, kind: Kind) -> &'static str {
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
pub(super) struct Entry {
    /// Index into [`Keys::keys`].
    pub(super) key: usize,
    pub(super) tokens: Vec<OsString>,
}

/// The configuration keys of `engram run`.
#[derive(Debug)]
pub(super) struct Keys {
    pub(super) keys: Vec<Key>,
    /// `run` with no flag required: parses one key's tokens as the command line would.
    pub(super) validator: Command,
}

impl Keys {
    /// The long flags of `run` (a built command: clap fills in value counts when building).
    pub(super) fn of(run: &Command) -> Keys {
        let keys = run
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| (a, l)))
            .filter(|(_, l)| !NOT_KEYS.contains(l))
            .map(|(a, l)| Key::of(a, l))
            .collect();
        let validator = run.clone().color(ColorChoice::Never).mut_args(|a| a.required(false));
        Keys { keys, validator }
    }

    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.name == name || k.aliases.iter().any(|a| a == name))
    }

    /// The keys a TOML document sets, in the order of the file, with their tokens; or the first
    /// problem, naming `source` (the file), the line and the key.
    pub(super) fn entries(&self, source: &str, text: &str) -> Result<Vec<Entry>, clap::Error> {
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
    pub(super) fn unknown(&self, at: &str, raw: &str, value: &toml::Value) -> String {
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

    pub(super) fn suggest(&self, raw: &str) -> Option<&str> {
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
    pub(super) fn mentioned(&self, user: &[OsString]) -> Vec<bool> {
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
