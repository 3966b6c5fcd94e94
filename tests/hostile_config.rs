//! The hostile-input suite, second half (issue 17): configurations and output paths. Every case
//! must end cleanly: a refusal (exit 1 with a message) or an acceptance (exit 0), never a panic,
//! a signal or a hang (`tests/hostile.rs` does the same for checkpoints).
//!
//! * run.toml: each key of three valid files (split-mnist SI, rotated-mnist GEM, permuted-mnist
//!   online EWC) replaced, one at a time, by values chosen to hurt (0, -1, the largest TOML
//!   integer, 2^64, 1e300, NaN, infinities, a fraction, the wrong type, an empty or a 5,000-character
//!   string, an array), plus damaged files (unknown, duplicate and reserved keys, tables, invalid
//!   UTF-8, a byte-order mark, 2 MiB, a FIFO, a folder, /dev/zero). Each goes to
//!   `engram run --config FILE --check`, which stops where training would begin.
//! * Output paths: --out, --csv, --plot and --checkpoint-dir of `engram run`, and --out of
//!   `engram resume`, given folders, FIFOs, devices, missing or unwritable folders, paths through
//!   a file, names too long, unknown figure formats, and usable paths. These cases run for real
//!   (a short run): a refusal must come before any work (no checkpoint written), an acceptance
//!   must write the file where it was asked.
//!
//! Prints a table per part (category, cases, refused, accepted, and the accepted cases).
//! Needs MNIST (ENGRAM_DATA; a SKIP line without it). About a minute on 2 cores.

mod common;

use common::{engram, map_parallel, mnist_dir, run_limited, Outcome};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A valid run.toml: (name, keys and values as TOML).
type Base = (&'static str, &'static [(&'static str, &'static str)]);

const BASES: [Base; 3] = [
    (
        "split SI",
        &[
            ("scenario", "\"split-mnist\""),
            ("method", "\"si\""),
            ("setting", "\"task\""),
            ("c", "0.5"),
            ("xi", "0.1"),
            ("lr", "0.001"),
            ("optimizer", "\"adam\""),
            ("epochs", "2"),
            ("batch", "64"),
            ("hidden", "100"),
            ("layers", "2"),
            ("samples-per-task", "200"),
            ("reset-optimizer", "true"),
            ("zero-output", "true"),
            ("init", "\"xavier-uniform\""),
            ("si-relu", "\"official\""),
            ("seed", "3"),
            ("eval-train", "true"),
            ("threads", "1"),
            ("keep-checkpoints", "2"),
            ("out", "\"r.json\""),
            ("csv", "\"r.csv\""),
            ("plot", "\"r.svg\""),
        ],
    ),
    (
        "rotated GEM",
        &[
            ("scenario", "\"rotated-mnist\""),
            ("method", "\"gem\""),
            ("tasks", "3"),
            ("rotation-step", "9.0"),
            ("memories", "50"),
            ("memory-strength", "0.5"),
            ("optimizer", "\"sgd\""),
            ("lr", "0.1"),
            ("batch", "10"),
            ("samples-per-task", "100"),
            ("checkpoint-dir", "\"ck\""),
            ("checkpoint-every", "100"),
            ("device", "\"cpu\""),
        ],
    ),
    (
        "permuted EWC",
        &[
            ("scenario", "\"permuted-mnist\""),
            ("method", "\"ewc\""),
            ("tasks", "3"),
            ("permute-first", "false"),
            ("lambda", "100.0"),
            ("ewc-mode", "\"online\""),
            ("gamma", "0.9"),
            ("fisher", "\"true\""),
            ("importance-samples", "200"),
            ("epochs", "1"),
            ("no-verify", "true"),
        ],
    ),
];

/// The hostile replacements of a TOML value (label, TOML text).
fn mutations(value: &str) -> Vec<(String, String)> {
    let mut m: Vec<(&str, String)> = vec![
        ("0", "0".into()),
        ("-1", "-1".into()),
        ("i64 max", i64::MAX.to_string()),
        ("2^64", "18446744073709551616".into()),
        ("1e300", "1e300".into()),
        ("-1e300", "-1e300".into()),
        ("nan", "nan".into()),
        ("inf", "inf".into()),
        ("-inf", "-inf".into()),
        ("0.5", "0.5".into()),
        ("-0.0", "-0.0".into()),
        ("1e-45", "1e-45".into()),
        ("empty string", "\"\"".into()),
        ("other string", "\"zzz\"".into()),
        ("long string", format!("\"{}\"", "a".repeat(5000))),
        ("flipped bool", if value == "true" { "false" } else { "true" }.into()),
        ("array", "[1, 2]".into()),
        ("table", "{ a = 1 }".into()),
    ];
    // Numbers written as strings, and a number's neighbours in type.
    if value.parse::<f64>().is_ok() {
        m.push(("as a string", format!("\"{value}\"")));
    }
    m.into_iter().filter(|(_, v)| v != value).map(|(l, v)| (l.to_string(), v)).collect()
}

/// One run.toml case: the file's bytes, or a special file.
enum File {
    Text(Vec<u8>),
    Fifo,
    Folder,
    DevZero,
    Missing,
}

struct ConfigCase {
    category: String,
    label: String,
    file: File,
}

fn toml_of(keys: &[(&str, &str)]) -> Vec<u8> {
    keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect::<String>().into_bytes()
}

fn config_cases() -> Vec<ConfigCase> {
    let mut cases = Vec::new();
    for (name, keys) in BASES {
        cases.push(ConfigCase {
            category: format!("{name}: as written"),
            label: "as written".into(),
            file: File::Text(toml_of(keys)),
        });
        for (i, (key, value)) in keys.iter().enumerate() {
            for (what, hostile) in mutations(value) {
                let mut k = keys.to_vec();
                k[i].1 = &hostile;
                cases.push(ConfigCase {
                    category: format!("{name}: a value"),
                    label: format!("{key} = {what}"),
                    file: File::Text(toml_of(&k)),
                });
            }
        }
    }
    let base = toml_of(BASES[0].1);
    let with = |extra: &str| [base.as_slice(), extra.as_bytes()].concat();
    let structure: Vec<(&str, Vec<u8>)> = vec![
        ("empty file", Vec::new()),
        ("only comments", b"# nothing\n".to_vec()),
        ("unknown key", with("learning-rate = 0.1\n")),
        ("duplicate key", with("epochs = 3\n")),
        ("both spellings of a key", with("eval_train = true\n")),
        ("reserved key config", with("config = \"other.toml\"\n")),
        ("reserved key help", with("help = true\n")),
        ("a table", with("[run]\nepochs = 1\n")),
        ("an array of tables", with("[[run]]\nepochs = 1\n")),
        ("a dotted key", with("si.c = 1\n")),
        ("unterminated string", with("out = \"r.json\n")),
        ("no value", with("epochs =\n")),
        ("invalid UTF-8", [base.as_slice(), b"out = \"\xff\xfe\"\n"].concat()),
        ("a byte-order mark", [b"\xef\xbb\xbf".as_slice(), base.as_slice()].concat()),
        ("CRLF line ends", String::from_utf8(base.clone()).unwrap().replace('\n', "\r\n").into_bytes()),
        ("NUL bytes", with("\0\0\0")),
        ("2 MiB of comments", with(&format!("# {}\n", "x".repeat(2 << 20)))),
        ("angles on split-mnist", with("angles = [0, 45]\n")),
        ("lambda with SI", with("lambda = 1.0\n")),
        ("memories with SI", with("memories = 10\n")),
        ("a deep array", with("angles = [[[[[[[[[[1]]]]]]]]]]\n")),
        ("angles of 10,000 entries", {
            let mut k = BASES[1].1.to_vec();
            k.retain(|(n, _)| *n != "tasks");
            let angles = format!("[{}]", vec!["1.5"; 10_000].join(", "));
            k.push(("angles", &angles));
            toml_of(&k)
        }),
    ];
    for (label, bytes) in structure {
        cases.push(ConfigCase { category: "file contents".into(), label: label.into(), file: File::Text(bytes) });
    }
    for (label, file) in [
        ("a FIFO", File::Fifo),
        ("a folder", File::Folder),
        ("a link to /dev/zero", File::DevZero),
        ("missing", File::Missing),
    ] {
        cases.push(ConfigCase { category: "file type".into(), label: label.into(), file });
    }
    cases
}

/// Writes the case's file in `dir` and returns its path.
fn place(file: &File, dir: &Path) -> PathBuf {
    let p = dir.join("run.toml");
    match file {
        File::Text(b) => std::fs::write(&p, b).unwrap(),
        File::Fifo => mkfifo(&p),
        File::Folder => std::fs::create_dir(&p).unwrap(),
        File::DevZero => std::os::unix::fs::symlink("/dev/zero", &p).unwrap(),
        File::Missing => {}
    }
    p
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// category -> (cases, refused, accepted, accepted labels)
type Table = BTreeMap<String, (usize, usize, usize, Vec<String>)>;

fn print_table(title: &str, table: &Table) {
    println!("{title:<44} {:>6} {:>8} {:>9}  accepted", "cases", "refused", "accepted");
    for (cat, (n, refused, accepted, labels)) in table {
        println!("{cat:<44} {n:>6} {refused:>8} {accepted:>9}  {}", labels.join("; "));
    }
}

#[test]
fn hostile_run_configurations_are_refused_or_checked_cleanly() {
    let Some(data) = mnist_dir() else { return };
    let root = tempfile::tempdir().unwrap();
    let cases = config_cases();
    let results = map_parallel(&cases.iter().enumerate().collect::<Vec<_>>(), |(i, c)| {
        let dir = root.path().join(format!("case-{i}"));
        std::fs::create_dir(&dir).unwrap();
        let file = place(&c.file, &dir);
        let mut cmd = engram();
        cmd.arg("run").arg("--config").arg(&file).args(["--check", "--quiet", "--data-dir"]).arg(&data);
        cmd.current_dir(&dir);
        let outcome = run_limited(cmd);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        (outcome, left.len())
    });
    let mut table = Table::new();
    let mut bad = Vec::new();
    let mut refusals = BTreeMap::new();
    for (c, (outcome, left)) in cases.iter().zip(&results) {
        let row = table.entry(c.category.clone()).or_default();
        row.0 += 1;
        match outcome {
            Outcome::Refused(why) => {
                row.1 += 1;
                refusals.insert(c.label.clone(), why.clone());
            }
            Outcome::Accepted => {
                row.2 += 1;
                row.3.push(c.label.clone());
            }
            Outcome::Bad(why) => bad.push(format!("{}: {why}", c.label)),
        }
        // `--check` creates and changes nothing: the case's folder holds its run.toml only.
        let expected = usize::from(!matches!(c.file, File::Missing));
        if *left != expected {
            bad.push(format!("{}: --check left {left} entries in the folder (expected {expected})", c.label));
        }
    }
    print_table("run.toml (engram run --config F --check)", &table);
    println!("{} cases, {} bad", cases.len(), bad.len());
    assert!(bad.is_empty(), "{} cases ended badly:\n{}", bad.len(), bad.join("\n"));
    assert!(cases.len() >= 300, "only {} cases", cases.len());
    for (name, _) in BASES {
        let (n, _, accepted, _) = &table[&format!("{name}: as written")];
        assert_eq!((n, accepted), (&1, &1), "the valid {name} file was refused: {refusals:?}");
    }
    // What must never get through, with the message that says why.
    for (label, says) in [
        ("epochs = i64 max", "epochs"),
        ("hidden = i64 max", "memory"),
        ("threads = i64 max", "per core"),
        ("c = nan", "--c"),
        ("lr = inf", "--lr"),
        ("samples-per-task = 0", "samples"),
        ("unknown key", "learning-rate"),
        ("invalid UTF-8", "UTF-8"),
        ("a FIFO", "run.toml"),
        ("2 MiB of comments", "run.toml"),
    ] {
        let why = refusals.get(label).unwrap_or_else(|| panic!("{label} was not refused"));
        assert!(why.contains(says), "{label}: the refusal does not say {says:?}: {why}");
    }
}

/// An output-path case: the flag, what the path is, and how to make it under a case folder.
struct PathCase {
    command: &'static str,
    flag: &'static str,
    kind: &'static str,
}

const PATH_KINDS: [&str; 13] = [
    "a new file",
    "an existing file",
    "a dangling link",
    "a folder",
    "a FIFO",
    "/dev/null",
    "a missing folder",
    "through a file",
    "an unwritable folder (/sys)",
    "a name too long",
    "empty",
    "a trailing slash",
    "an unknown extension",
];

/// The path of `kind` for `flag` under `dir` (created as the kind needs).
fn make_path(kind: &str, flag: &str, dir: &Path) -> PathBuf {
    let ext = match flag {
        "--csv" => "csv",
        "--plot" => "svg",
        "--checkpoint-dir" => "d",
        _ => "json",
    };
    let p = dir.join(format!("target.{ext}"));
    match kind {
        "a new file" => p,
        "an existing file" => {
            std::fs::write(&p, b"old").unwrap();
            p
        }
        "a dangling link" => {
            std::os::unix::fs::symlink(dir.join("nowhere"), &p).unwrap();
            p
        }
        "a folder" => {
            std::fs::create_dir(&p).unwrap();
            p
        }
        "a FIFO" => {
            mkfifo(&p);
            p
        }
        "/dev/null" => PathBuf::from("/dev/null"),
        "a missing folder" => dir.join("no/such/folder").join(p.file_name().unwrap()),
        "through a file" => {
            std::fs::write(dir.join("file"), b"x").unwrap();
            dir.join("file").join(p.file_name().unwrap())
        }
        "an unwritable folder (/sys)" => Path::new("/sys").join(p.file_name().unwrap()),
        "a name too long" => dir.join(format!("{}.{ext}", "n".repeat(300))),
        "empty" => PathBuf::new(),
        "a trailing slash" => PathBuf::from(format!("{}/", p.display())),
        _ => dir.join("target.jpeg"),
    }
}

/// Kinds a flag accepts: a usable file (or directory for --checkpoint-dir).
fn should_accept(flag: &str, kind: &str) -> bool {
    match flag {
        // A missing folder is created (as `mkdir -p`).
        "--checkpoint-dir" => {
            matches!(kind, "a new file" | "a folder" | "a missing folder" | "a trailing slash" | "an unknown extension")
        }
        "--plot" => matches!(kind, "a new file" | "an existing file" | "a dangling link"),
        _ => matches!(kind, "a new file" | "an existing file" | "a dangling link" | "an unknown extension"),
    }
}

#[test]
fn hostile_output_paths_are_refused_before_any_work() {
    let Some(data) = mnist_dir() else { return };
    let root = tempfile::tempdir().unwrap();
    let short = [
        "--scenario",
        "split-mnist",
        "--method",
        "si",
        "--samples-per-task",
        "100",
        "--epochs",
        "1",
        "--quiet",
        "--no-verify",
        "--threads",
        "1",
    ];
    // A mid-task checkpoint to resume from.
    let source = root.path().join("source");
    let o = engram()
        .arg("run")
        .args(short)
        .args(["--checkpoint-every", "3", "--keep-checkpoints", "100", "--data-dir"])
        .arg(&data)
        .arg("--checkpoint-dir")
        .arg(&source)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o).1);
    let mid = engram_ckpt::list(&source)
        .unwrap()
        .into_iter()
        .find(|d| {
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap()).unwrap();
            m["run"]["at_task_boundary"] == false
        })
        .expect("a mid-task checkpoint");

    let mut cases = Vec::new();
    for (command, flag) in
        [("run", "--out"), ("run", "--csv"), ("run", "--plot"), ("run", "--checkpoint-dir"), ("resume", "--out")]
    {
        for kind in PATH_KINDS {
            cases.push(PathCase { command, flag, kind });
        }
    }
    let results = map_parallel(&cases.iter().enumerate().collect::<Vec<_>>(), |(i, c)| {
        let dir = root.path().join(format!("case-{i}"));
        std::fs::create_dir(&dir).unwrap();
        let path = make_path(c.kind, c.flag, &dir);
        // Where work would show: the checkpoints of the run (or the resumed run).
        let work = dir.join("work");
        let mut cmd = engram();
        if c.command == "run" {
            cmd.arg("run").args(short);
            if c.flag != "--checkpoint-dir" {
                cmd.arg("--checkpoint-dir").arg(&work);
            }
        } else {
            let copy = work.join(mid.file_name().unwrap());
            std::fs::create_dir_all(&copy).unwrap();
            for f in ["manifest.json", "tensors.safetensors"] {
                std::fs::copy(mid.join(f), copy.join(f)).unwrap();
            }
            cmd.arg("resume").arg(&work).args(["--quiet", "--no-verify", "--threads", "1"]);
        }
        cmd.arg("--data-dir").arg(&data).arg(c.flag).arg(&path);
        let outcome = run_limited(cmd);
        let checkpoints = |d: &Path| engram_ckpt::list(d).map_or(0, |l| l.len());
        let wrote = if c.flag == "--checkpoint-dir" { checkpoints(&path) } else { checkpoints(&work) };
        (outcome, path, wrote)
    });
    let mut table = Table::new();
    let mut bad = Vec::new();
    for (c, (outcome, path, wrote)) in cases.iter().zip(&results) {
        let label = format!("{} {} {}", c.command, c.flag, c.kind);
        let row = table.entry(format!("{} {}", c.command, c.flag)).or_default();
        row.0 += 1;
        let before = usize::from(c.command == "resume");
        match outcome {
            Outcome::Refused(_) => {
                row.1 += 1;
                if *wrote != before {
                    bad.push(format!("{label}: refused after work was done ({wrote} checkpoints)"));
                }
            }
            Outcome::Accepted => {
                row.2 += 1;
                row.3.push(c.kind.to_string());
                let written = if c.flag == "--checkpoint-dir" { *wrote > 0 } else { path.is_file() };
                if !written {
                    bad.push(format!("{label}: accepted but {} was not written", path.display()));
                }
            }
            Outcome::Bad(why) => bad.push(format!("{label}: {why}")),
        }
        if matches!(outcome, Outcome::Accepted) != should_accept(c.flag, c.kind) {
            bad.push(format!(
                "{label}: {outcome:?}, expected {}",
                if should_accept(c.flag, c.kind) { "acceptance" } else { "a refusal" }
            ));
        }
    }
    print_table("output paths (a short run, for real)", &table);
    println!("{} cases, {} bad", cases.len(), bad.len());
    assert!(bad.is_empty(), "{} cases ended badly:\n{}", bad.len(), bad.join("\n"));
}
