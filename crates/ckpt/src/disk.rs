//! The checkpoint directories on disk: reading a file safely, writing a checkpoint atomically
//! (see the crate docs), and finding, listing and pruning a run's checkpoints.

use crate::{io, Checkpoint, CkptError, MANIFEST_FILE, MAX_FILE_BYTES, PREFIX, TENSORS_FILE};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The bytes of the regular file `path`, refused when it is anything else or too large.
pub(crate) fn read_capped(path: &Path) -> Result<Vec<u8>, CkptError> {
    let refuse = |problem: String| CkptError::TensorFile { path: path.display().to_string(), problem };
    // Only a regular file inside the checkpoint's directory: a FIFO would block the read for
    // ever, a device (a link to /dev/zero) would never end, a link may point anywhere.
    let link = std::fs::symlink_metadata(path).map_err(io("cannot read", path))?;
    if link.file_type().is_symlink() {
        return Err(refuse("is a symbolic link; a checkpoint holds its files itself".into()));
    }
    if !link.is_file() {
        return Err(refuse("is not a regular file (a folder, FIFO, device or socket)".into()));
    }
    if link.len() > MAX_FILE_BYTES {
        return Err(refuse(format!("{} bytes is more than engram ever writes ({MAX_FILE_BYTES})", link.len())));
    }
    // Read at most what the size said (a file growing meanwhile is cut, and then refused by
    // its digests).
    let mut bytes = Vec::with_capacity(link.len() as usize);
    File::open(path).and_then(|f| f.take(link.len()).read_to_end(&mut bytes)).map_err(io("cannot read", path))?;
    Ok(bytes)
}

fn sync_dir(dir: &Path) -> Result<(), CkptError> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(io("cannot sync directory", dir))
}

/// Writes `bytes` to a new file at `path` and fsyncs it.
pub fn write_file_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Writes `ckpt` as directory `parent/name`, atomically (see the crate docs). An existing
/// checkpoint of the same name is replaced only once the new one is complete.
pub fn write_atomic(parent: &Path, name: &str, ckpt: &Checkpoint) -> Result<PathBuf, CkptError> {
    write_atomic_with(parent, name, ckpt, write_file_synced)
}

/// [`write_atomic`] with the function that writes (and syncs) one file: tests pass one that fails
/// (a full disk) to check that nothing is lost.
pub fn write_atomic_with(
    parent: &Path,
    name: &str,
    ckpt: &Checkpoint,
    write_file: impl Fn(&Path, &[u8]) -> std::io::Result<()>,
) -> Result<PathBuf, CkptError> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(CkptError::NotFound(format!("invalid checkpoint name {name:?}")));
    }
    let (manifest, tensors) = ckpt.to_bytes()?;
    let target = parent.join(name);
    let tmp = parent.join(format!(".tmp-{name}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io("cannot remove stale temporary directory", &tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io("cannot create checkpoint directory", &tmp))?;
    let result = (|| {
        let tp = tmp.join(TENSORS_FILE);
        write_file(&tp, &tensors).map_err(io("cannot write", &tp))?;
        let mp = tmp.join(MANIFEST_FILE);
        write_file(&mp, &manifest).map_err(io("cannot write", &mp))?;
        sync_dir(&tmp)?;
        if target.exists() {
            // Same name (a resumed run reaching the same step): swap, then drop the old one.
            let old = parent.join(format!(".old-{name}-{}", std::process::id()));
            std::fs::rename(&target, &old).map_err(io("cannot move aside", &target))?;
            std::fs::rename(&tmp, &target).map_err(io("cannot rename into place", &target))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&tmp, &target).map_err(io("cannot rename into place", &target))?;
        }
        sync_dir(parent)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map(|()| target)
}

/// The checkpoint directory name for `steps` training steps done.
pub fn name_for(steps: u64) -> String {
    format!("{PREFIX}{steps:010}")
}

/// The complete checkpoints in `parent` (directories named `ckpt-<digits>` holding a manifest),
/// oldest first. Temporary directories of interrupted writes are ignored.
pub fn list(parent: &Path) -> Result<Vec<PathBuf>, CkptError> {
    let rd = std::fs::read_dir(parent).map_err(io("cannot list checkpoint directory", parent))?;
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name.strip_prefix(PREFIX) else { continue };
        let Ok(steps) = digits.parse::<u64>() else { continue };
        let p = e.path();
        if p.join(MANIFEST_FILE).is_file() {
            found.push((steps, p));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// The newest complete checkpoint in `parent`, if any.
pub fn latest(parent: &Path) -> Result<Option<PathBuf>, CkptError> {
    Ok(list(parent)?.pop())
}

/// Removes all but the newest `keep` checkpoints in `parent`, and the temporary directories
/// that interrupted writes of other processes left (`.tmp-ckpt-*`, `.old-ckpt-*`). Returns the
/// removed checkpoints.
pub fn prune(parent: &Path, keep: usize) -> Result<Vec<PathBuf>, CkptError> {
    let all = list(parent)?;
    let drop = all.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for p in all.into_iter().take(drop) {
        std::fs::remove_dir_all(&p).map_err(io("cannot remove old checkpoint", &p))?;
        removed.push(p);
    }
    let mine = format!("-{}", std::process::id());
    for e in std::fs::read_dir(parent).map_err(io("cannot list checkpoint directory", parent))?.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let leftover = name.starts_with(&format!(".tmp-{PREFIX}")) || name.starts_with(&format!(".old-{PREFIX}"));
        if leftover && !name.ends_with(&mine) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(removed)
}

/// A checkpoint path as a user gives it: a checkpoint directory (holding `manifest.json`), or a
/// run's checkpoint directory (its newest checkpoint is taken).
pub fn resolve(path: &Path) -> Result<PathBuf, CkptError> {
    if path.join(MANIFEST_FILE).is_file() {
        return Ok(path.to_path_buf());
    }
    if path.file_name().is_some_and(|n| n == MANIFEST_FILE) && path.is_file() {
        return Ok(path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf));
    }
    if !path.exists() {
        return Err(CkptError::NotFound(format!("{} does not exist", path.display())));
    }
    if !path.is_dir() {
        return Err(CkptError::NotFound(format!(
            "{} is not a checkpoint: give a checkpoint directory (holding {MANIFEST_FILE}) or a run's \
             --checkpoint-dir",
            path.display()
        )));
    }
    latest(path)?.ok_or_else(|| {
        CkptError::NotFound(format!(
            "no checkpoint in {}: it holds no {PREFIX}* directory with a {MANIFEST_FILE}",
            path.display()
        ))
    })
}
