//! Tests of the run.toml reader: keys, types, errors with file:line, and round trips.
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
    let want = cli_args(&["--scenario", "rotated-mnist", "--method", "si", "--angles=0,45.5,-90", "--config=c.toml"]);
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
    let e = expand(vec!["engram".into(), "run".into(), "--config".into(), p.clone().into()]).unwrap_err().to_string();
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
            Kind::Enum if !key.possible.is_empty() => {
                proptest::sample::select(key.possible.clone()).prop_map(|s| (toml::Value::String(s.clone()), s)).boxed()
            }
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
                (proptest::option::weighted(0.5, v.clone()), proptest::option::weighted(0.2, v), any::<bool>()).boxed()
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

/// `check_config_text` (the TOML fuzz target's entry): a usable file passes, and out-of-range
/// values, unknown keys and huge numbers are refused with a message, not a panic.
#[test]
fn check_config_text_accepts_a_run_and_refuses_hostile_files() {
    check_config_text("scenario = \"split-mnist\"\nmethod = \"si\"\nepochs = 2\n").unwrap();
    for (text, want) in [
        ("scenario = \"split-mnist\"\nmethod = \"si\"\nepochs = 1000000000000\n", "--epochs"),
        ("scenario = \"split-mnist\"\nmethod = \"si\"\nepochs = 1e12\n", "epochs"),
        ("scenario = \"split-mnist\"\nmethod = \"si\"\nlr = -1\n", "--lr"),
        ("scenario = \"split-mnist\"\nmethod = \"si\"\nnope = 1\n", "nope"),
        ("scenario = \"split-mnist\"\n", "method"),
        ("\u{0}\u{ffff}[[[", "run.toml"),
    ] {
        let e = check_config_text(text).unwrap_err();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}
