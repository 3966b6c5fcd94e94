//! Checks made before any work: every file a command will write, the thread count, and the
//! memory a run will need. A run that would fail to write its result, or could not fit in the
//! machine, is refused before it loads data or trains, not after (or with an abort).

use anyhow::{bail, Context, Result};
use engram_cl::footprint::{human, Footprint};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

/// Worker threads allowed per core of the machine (`--threads`).
pub const THREADS_PER_CORE: usize = 4;

/// The cores of this machine (1 when unknown).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Refuses a `--threads` of 0 or more than [`THREADS_PER_CORE`] per core: more threads than that
/// only cost memory and start-up time (a thousand million of them take seconds to refuse).
pub fn check_threads(flag: &str, n: usize) -> Result<()> {
    let most = THREADS_PER_CORE * cores();
    if n == 0 {
        bail!("{flag} must be at least 1");
    }
    if n > most {
        bail!("{flag} {n} is more than {THREADS_PER_CORE} per core of this machine's {} (at most {most})", cores());
    }
    Ok(())
}

/// The machine's memory in bytes, from /proc/meminfo (`None` where it cannot be read).
fn machine_memory() -> Option<u128> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses a run whose estimated memory ([`engram_cl::footprint`]) exceeds the machine's, naming
/// both and where the figure comes from, before anything is loaded or allocated.
pub fn check_memory(what: &str, f: &Footprint) -> Result<()> {
    let Some(total) = machine_memory() else { return Ok(()) };
    if f.total() > total {
        bail!(
            "{what} needs about {} of memory and this machine has {}: {} parameters, {} of parameter \
             vectors (parameters, gradient, optimizer, the method's state), {} of images and memories, \
             {} of activations; reduce --hidden, --layers, --tasks, --batch or --memories",
            human(f.total()),
            human(total),
            if f.params == u128::MAX { "uncountably many".to_string() } else { f.params.to_string() },
            human(f.state),
            human(f.data),
            human(f.work),
        );
    }
    Ok(())
}

/// The folder `path` lives in (`.` for a bare file name).
fn folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks that `path` (given as `flag`) can be written as a file, without changing anything
/// that is there: it is not a folder, nor a FIFO, device or socket (a write would hang or go
/// astray); an existing file can be opened for writing; its folder exists and a file can be
/// created in it (a probe, removed at once: results are written next to their target and
/// renamed over it).
pub fn check_output_file(flag: &str, path: &Path) -> Result<()> {
    let shown = path.display();
    if path.as_os_str().is_empty() {
        bail!("{flag}: the path is empty");
    }
    if path.as_os_str().as_encoded_bytes().ends_with(std::path::MAIN_SEPARATOR_STR.as_bytes()) {
        bail!("{flag} {shown}: ends with {}, so names a folder, not a file", std::path::MAIN_SEPARATOR);
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => bail!("{flag} {shown}: is a folder, not a file"),
        Ok(m) if !m.is_file() => bail!("{flag} {shown}: exists and is not a regular file (a FIFO, device or socket)"),
        Ok(_) => {
            OpenOptions::new()
                .append(true)
                .open(path)
                .with_context(|| format!("{flag} {shown}: the file exists and cannot be written"))?;
        }
        Err(_) => {}
    }
    let dir = folder(path);
    if !dir.is_dir() {
        bail!("{flag} {shown}: the folder {} does not exist", dir.display());
    }
    let name = path.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let probe = dir.join(format!(".{name}.probe{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .with_context(|| format!("{flag} {shown}: cannot create a file in the folder {}", dir.display()))?;
    std::fs::remove_file(&probe).with_context(|| format!("removing the probe {}", probe.display()))?;
    Ok(())
}

/// [`check_output_file`] for each `(flag, path)` given.
pub fn check_output_files<'a>(files: impl IntoIterator<Item = (&'a str, Option<&'a Path>)>) -> Result<()> {
    for (flag, path) in files {
        if let Some(p) = path {
            check_output_file(flag, p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_folders_missing_folders_and_fifos_and_accepts_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = |p: &Path| check_output_file("--out", p).unwrap_err().to_string();
        assert!(err(dir.path()).contains("is a folder"), "{}", err(dir.path()));
        let missing = dir.path().join("no/such/folder/r.json");
        assert!(err(&missing).contains("does not exist"), "{}", err(&missing));
        assert!(err(Path::new("")).contains("empty"));
        let slash = PathBuf::from(format!("{}/r.json/", dir.path().display()));
        assert!(err(&slash).contains("names a folder"), "{}", err(&slash));
        #[cfg(unix)]
        {
            let fifo = dir.path().join("fifo");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            assert!(err(&fifo).contains("not a regular file"), "{}", err(&fifo));
        }
        let new = dir.path().join("r.json");
        check_output_file("--out", &new).unwrap();
        assert!(!new.exists(), "the check created the file");
        std::fs::write(&new, b"kept").unwrap();
        check_output_file("--out", &new).unwrap();
        assert_eq!(std::fs::read(&new).unwrap(), b"kept", "the check changed an existing file");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "the probe was left behind: {left:?}");
    }

    #[test]
    fn a_run_larger_than_the_machine_is_refused_with_the_figures() {
        let small = Footprint { params: 10, state: 40, data: 1 << 20, work: 1 << 10 };
        check_memory("this run", &small).unwrap();
        let huge = Footprint { params: u128::MAX, state: u128::MAX, data: 1 << 30, work: 1 << 20 };
        if machine_memory().is_some() {
            let e = check_memory("this run", &huge).unwrap_err().to_string();
            assert!(e.contains("this machine has") && e.contains("--hidden"), "{e}");
        }
    }

    #[test]
    fn thread_counts_are_bounded_by_the_machine() {
        assert!(check_threads("--threads", 0).unwrap_err().to_string().contains("at least 1"));
        check_threads("--threads", 1).unwrap();
        check_threads("--threads", THREADS_PER_CORE * cores()).unwrap();
        let e = check_threads("--threads", 1_000_000_000).unwrap_err().to_string();
        assert!(e.contains("per core") && e.contains("1000000000"), "{e}");
    }
}
