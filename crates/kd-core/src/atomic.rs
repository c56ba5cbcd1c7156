//! Atomic outputs: every file the workspace writes goes to a temporary file in the same folder,
//! is flushed to disk and renamed into place, so a reader (or a crash, or a full disk) sees the
//! old file or the new one, never half of one.
//!
//! Temporary files are named `.NAME.tmp-PID` beside their target. One left by a process that
//! was killed mid-write is removed by the next write of the same target (its process is gone),
//! so they never accumulate; one of a live process is left alone.
//!
//! An output path that names one of the command's inputs is refused before anything is written
//! ([`refuse_overwriting_input`]): the rename would replace the input even though the write is
//! atomic.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{KdError, Result};

/// The folder `path` is in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// The prefix of the temporary files of `path`: `.NAME.tmp-`.
fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "output".into());
    format!(".{name}.tmp-")
}

/// The temporary file this process writes `path` through.
pub fn temp_path(path: &Path) -> PathBuf {
    folder_of(path).join(format!("{}{}", temp_prefix(path), std::process::id()))
}

/// Whether the process `pid` is running. Where that cannot be told (no `/proc`), it counts as
/// running, so that nothing of a live process is ever removed.
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc_root = Path::new("/proc");
    if !proc_root.join("self").exists() {
        return true;
    }
    proc_root.join(pid.to_string()).exists()
}

/// Removes the temporary files of `path` left by processes that are no longer running (a kill
/// during a write); returns how many were removed. Errors are ignored: the leftovers are
/// harmless to the write itself.
pub fn remove_stale_temps(path: &Path) -> usize {
    let prefix = temp_prefix(path);
    let Ok(entries) = fs::read_dir(folder_of(path)) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if process_alive(pid) {
            continue;
        }
        // A folder written whole (a student folder) is a temporary folder.
        let gone =
            if entry.file_type().is_ok_and(|t| t.is_dir()) { fs::remove_dir_all(entry.path()) } else { fs::remove_file(entry.path()) };
        if gone.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Removes every temporary file or folder in `dir` (`.NAME.tmp-PID`, any target) whose process
/// is no longer running; returns how many. The holder of a folder's lock calls it, so that the
/// leftovers of a target that is never written again (a `best.ckpt` whose epoch never comes
/// back) do not stay either.
pub fn remove_dead_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((target, _pid)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp-")) else { continue };
        if !target.is_empty() {
            removed += remove_stale_temps(&dir.join(target));
        }
    }
    removed
}

/// Writes `bytes` to `path` atomically (temporary file in the same folder, fsync, rename),
/// creating the folder, and removes the target's temporary files of dead processes.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).map_err(|e| KdError::io("writing", &file.tmp, e))?;
    file.commit()
}

/// A file being written atomically: [`Write`] into its temporary file, then
/// [`AtomicFile::commit`] renames it into place. Dropped without a commit (an error on the way),
/// the temporary file is removed and the target is untouched.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<io::BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `path` (its folder is created; stale temporary files of the target are
    /// removed).
    pub fn create(path: &Path) -> Result<Self> {
        let dir = folder_of(path);
        fs::create_dir_all(dir).map_err(|e| KdError::io("creating folder", dir, e))?;
        remove_stale_temps(path);
        let tmp = temp_path(path);
        let file = File::create(&tmp).map_err(|e| KdError::io("creating", &tmp, e))?;
        Ok(AtomicFile { path: path.to_path_buf(), tmp, file: Some(io::BufWriter::new(file)) })
    }

    /// The file the writes land in until the commit.
    pub fn temp(&self) -> &Path {
        &self.tmp
    }

    /// Flushes the data to disk and renames the temporary file into place.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.file.take().ok_or_else(|| KdError::io("writing", &self.tmp, io::Error::other("already committed")))?;
        let file = writer.into_inner().map_err(|e| KdError::io("writing", &self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| KdError::io("syncing", &self.tmp, e))?;
        drop(file);
        fs::rename(&self.tmp, &self.path).map_err(|e| KdError::io("renaming into place", &self.path, e))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().ok_or_else(|| io::Error::other("already committed"))?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().ok_or_else(|| io::Error::other("already committed"))?.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes the folder `dir` whole: `fill` writes its files into a temporary folder beside it,
/// which then replaces `dir` (the old folder is moved aside, the new one renamed into place, the
/// old one removed), so that a folder never mixes files of two writes. A temporary folder of a
/// dead process is removed by the next write of the same folder.
pub fn write_folder_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = folder_of(dir);
    fs::create_dir_all(parent).map_err(|e| KdError::io("creating folder", parent, e))?;
    remove_stale_temps(dir);
    let tmp = temp_path(dir);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| KdError::io("removing", &tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| KdError::io("creating folder", &tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = folder_of(dir).join(format!("{}old-{}", temp_prefix(dir), std::process::id()));
    let had_old = dir.exists();
    if had_old {
        fs::rename(dir, &old).map_err(|e| KdError::io("moving aside", dir, e))?;
    }
    fs::rename(&tmp, dir).map_err(|e| KdError::io("renaming into place", dir, e))?;
    if had_old {
        let _ = fs::remove_dir_all(&old);
    }
    Ok(())
}

/// Whether `a` and `b` name the same existing file (the same inode on Unix, through links and
/// `..`; the same canonical path elsewhere).
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (fs::metadata(a), fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
        false
    }
    #[cfg(not(unix))]
    {
        matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y)
    }
}

/// Refuses an `output` that is one of the command's `inputs` (`(what, path)` pairs), naming it:
/// the output would replace the input it is computed from.
pub fn refuse_overwriting_input<'a>(output: &Path, inputs: impl IntoIterator<Item = (&'a str, &'a Path)>) -> Result<()> {
    for (what, input) in inputs {
        if same_file(output, input) {
            return Err(KdError::InvalidConfig(format!(
                "the output {} is the {what} {}: it would be overwritten by what is computed from it; write elsewhere",
                output.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_all_or_nothing_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_atomic(&path, b"first").unwrap();
        // An interrupted write (dropped before its commit) leaves the old file as it was.
        {
            let mut file = AtomicFile::create(&path).unwrap();
            file.write_all(b"half of a second").unwrap();
            assert!(file.temp().exists());
        }
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<String> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["out.json"]);
    }

    #[test]
    fn temporary_files_of_dead_processes_are_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.ckpt");
        // A process id that is not running (ids are below 2^22 on Linux), and another target's
        // leftover.
        let dead = dir.path().join(".last.ckpt.tmp-4194999");
        let other = dir.path().join(".best.ckpt.tmp-4194999");
        for f in [&dead, &other] {
            fs::write(f, vec![0u8; 1000]).unwrap();
        }
        if Path::new("/proc/self").exists() {
            write_atomic(&path, b"x").unwrap();
            assert!(!dead.exists(), "the dead process's temporary file is removed");
            assert!(other.exists(), "another target's is left to its own writes");
        }
        assert!(process_alive(std::process::id()));
    }

    #[test]
    fn an_output_that_is_an_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("x.npy");
        fs::write(&input, b"data").unwrap();
        let same = dir.path().join(".").join("x.npy");
        let err = refuse_overwriting_input(&same, [("input", input.as_path())]).unwrap_err().to_string();
        assert!(err.contains("is the input"), "{err}");
        #[cfg(unix)]
        {
            let link = dir.path().join("link.npy");
            std::os::unix::fs::symlink(&input, &link).unwrap();
            assert!(refuse_overwriting_input(&link, [("input", input.as_path())]).is_err());
        }
        assert!(refuse_overwriting_input(&dir.path().join("y.npy"), [("input", input.as_path())]).is_ok());
    }

    #[test]
    fn a_folder_is_replaced_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("student");
        write_folder_atomic(&dir, |d| {
            fs::write(d.join("a"), "1").unwrap();
            fs::write(d.join("old-only"), "x").unwrap();
            Ok(())
        })
        .unwrap();
        // A failed write leaves the folder as it was.
        let failed = write_folder_atomic(&dir, |d| {
            fs::write(d.join("a"), "2").unwrap();
            Err(KdError::InvalidConfig("disk full".into()))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "1");
        write_folder_atomic(&dir, |d| {
            fs::write(d.join("a"), "3").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(!dir.join("old-only").exists(), "nothing of the previous write is mixed in");
        let names: Vec<String> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["student"]);
    }

    #[test]
    fn the_lock_holder_removes_every_dead_leftover_of_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        for name in [".best.ckpt.tmp-4194999", ".log.jsonl.tmp-4194998"] {
            fs::write(dir.path().join(name), "left by a kill").unwrap();
        }
        let live = dir.path().join(format!(".last.ckpt.tmp-{}", std::process::id()));
        fs::write(&live, "being written").unwrap();
        fs::write(dir.path().join("best.ckpt"), "kept").unwrap();
        if Path::new("/proc/self").exists() {
            assert_eq!(remove_dead_temps(dir.path()), 2);
            let names: Vec<String> =
                fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            assert_eq!(names.len(), 2, "{names:?}");
            assert!(dir.path().join("best.ckpt").exists() && live.exists(), "{names:?}");
        }
    }
}
