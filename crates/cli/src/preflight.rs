//! Checks made before any work: every file a command will write, and the thread count. A run
//! that would fail to write its result is refused before it loads data or trains, not after.

use anyhow::{bail, Context, Result};
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
    fn thread_counts_are_bounded_by_the_machine() {
        assert!(check_threads("--threads", 0).unwrap_err().to_string().contains("at least 1"));
        check_threads("--threads", 1).unwrap();
        check_threads("--threads", THREADS_PER_CORE * cores()).unwrap();
        let e = check_threads("--threads", 1_000_000_000).unwrap_err().to_string();
        assert!(e.contains("per core") && e.contains("1000000000"), "{e}");
    }
}
