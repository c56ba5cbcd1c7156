//! One writer per folder: an exclusive lock file holding the owner's process id.
//!
//! [`FolderLock::acquire`] opens `DIR/.kd-lock` and takes the operating system's exclusive
//! advisory lock on it without waiting (`flock` on Unix, `LockFileEx` on Windows, through
//! `std::fs::File::try_lock`): taking it is atomic, and the system releases it when the process
//! ends, however it ends. The file then holds the owner's pid and command, so that a second
//! writer fails at once naming the folder and the holder. Dropping the lock removes the file.
//!
//! [`FolderLock::for_file`] guards one file the same way (a teacher-cache entry that several
//! benches may ask for): its lock file is `.NAME.kd-lock` beside it.
//!
//! A lock file that exists while nobody holds the lock was left by a process that died before
//! removing it (a kill, a crash): it is stale, taken over, and said on stderr.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{KdError, Result};

/// The lock file's name inside the folder it guards.
pub const LOCK_FILE: &str = ".kd-lock";

/// An exclusive hold on a folder, released (and its file removed) on drop.
#[derive(Debug)]
pub struct FolderLock {
    path: PathBuf,
    file: Option<File>,
}

/// What a lock file says of its holder.
fn holder(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() { "a process that left no id".into() } else { format!("process {text}") }
}

/// Whether the open `file` is the one at `path` (not one removed since it was opened).
fn still_at(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

impl FolderLock {
    /// Takes the lock of `dir` (created if needed) for `purpose` (`train`, `bench`...: written
    /// into the file beside the pid), or fails at once naming the folder and the holder.
    pub fn acquire(dir: &Path, purpose: &str) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| KdError::io("creating folder", dir, e))?;
        Self::take(dir, dir.join(LOCK_FILE), purpose)
    }

    /// Takes the lock of one file that may be written by several processes (a teacher-cache
    /// entry): `.NAME.kd-lock` beside it.
    pub fn for_file(target: &Path, purpose: &str) -> Result<Self> {
        let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| KdError::io("creating folder", dir, e))?;
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Self::take(target, dir.join(format!(".{name}.kd-lock")), purpose)
    }

    fn take(guarded: &Path, path: PathBuf, purpose: &str) -> Result<Self> {
        // A holder removes the file when it lets go: a lock taken on a file that was removed
        // meanwhile guards nothing, so it is taken again on the file now at the path.
        let mut tries = 0;
        let mut file = loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| KdError::io("opening lock file", &path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    let _ = (&file).read_to_string(&mut text);
                    return Err(KdError::Locked { path: guarded.to_path_buf(), holder: holder(&text), lock: path });
                }
                Err(TryLockError::Error(e)) => return Err(KdError::io("locking", &path, e)),
            }
            tries += 1;
            if still_at(&file, &path) || tries >= 100 {
                break file;
            }
        };
        // Ours now. Anything in the file is a holder that died without removing it.
        let mut previous = String::new();
        let _ = file.read_to_string(&mut previous);
        if !previous.trim().is_empty() {
            eprintln!("{}: took over a stale lock of {}, which is no longer running", guarded.display(), holder(&previous));
        }
        let command: Vec<String> = std::env::args().take(3).collect();
        let line = format!("{} ({purpose}: {})\n", std::process::id(), command.join(" "));
        let written = file
            .set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(line.as_bytes()))
            .and_then(|_| file.sync_all());
        written.map_err(|e| KdError::io("writing lock file", &path, e))?;
        // The folder is ours: leftovers of killed writers go.
        if guarded.is_dir() {
            crate::atomic::remove_dead_temps(guarded);
        }
        Ok(FolderLock { path, file: Some(file) })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        // Removed while still held, then released: a writer that opens the path meanwhile finds
        // the lock taken, or a new file.
        let _ = fs::remove_file(&self.path);
        if let Some(file) = self.file.take() {
            let _ = file.unlock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_fails_naming_the_folder_and_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = FolderLock::acquire(dir.path(), "train").unwrap();
        let text = fs::read_to_string(first.path()).unwrap();
        assert!(text.starts_with(&format!("{} (train", std::process::id())), "{text}");
        // A second hold (another open file description: what another process has) is refused.
        let err = FolderLock::acquire(dir.path(), "bench").unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains(&format!("is in use by another writer: process {} (train", std::process::id())), "{err}");
        drop(first);
        assert!(!dir.path().join(LOCK_FILE).exists(), "released and removed on drop");
        let again = FolderLock::acquire(dir.path(), "bench").unwrap();
        drop(again);

        // A file's lock sits beside it.
        let entry = dir.path().join("teacher.ckpt");
        let held = FolderLock::for_file(&entry, "teacher cache").unwrap();
        assert!(held.path().ends_with(".teacher.ckpt.kd-lock"));
        let err = FolderLock::for_file(&entry, "teacher cache").unwrap_err().to_string();
        assert!(err.contains("teacher.ckpt is in use by another writer"), "{err}");
    }

    #[test]
    fn a_stale_lock_file_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // What a killed holder leaves: the file with its pid, and no lock held.
        fs::write(dir.path().join(LOCK_FILE), "4194999 (train: xtask train)\n").unwrap();
        let lock = FolderLock::acquire(dir.path(), "train").unwrap();
        let text = fs::read_to_string(lock.path()).unwrap();
        assert!(text.starts_with(&std::process::id().to_string()) && !text.contains("4194999"), "{text}");
    }
}
