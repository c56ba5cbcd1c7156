//! Opening input files safely: only regular files are read.
//!
//! Opening a named pipe (FIFO) for reading blocks until a writer appears, and reading a device
//! or `/dev/zero` never ends; a folder gives an obscure error. Every reader of the workspace
//! (data, checkpoints, teacher caches, experiment files, imported weights) goes through these
//! functions, so such a path is an error that names it instead of a hang.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{KdError, Result};

/// Checks that `path` names a regular file (symbolic links are followed).
pub fn check_regular(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| KdError::io("reading", path, e))?;
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() { "a folder" } else { "not a regular file (a named pipe, socket or device)" };
    Err(KdError::Malformed { path: path.into(), reason: format!("{kind}: only regular files are read") })
}

/// Opens a regular file for reading.
pub fn open_regular(path: &Path) -> Result<File> {
    check_regular(path)?;
    File::open(path).map_err(|e| KdError::io("opening", path, e))
}

/// Reads a whole regular file.
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    check_regular(path)?;
    fs::read(path).map_err(|e| KdError::io("reading", path, e))
}

/// Reads a whole regular file as UTF-8 text.
pub fn read_regular_text(path: &Path) -> Result<String> {
    let bytes = read_regular(path)?;
    String::from_utf8(bytes).map_err(|e| KdError::Malformed { path: path.into(), reason: format!("not UTF-8 text ({e})") })
}

/// What a data file was when a run read it: its path, size, modification time and a hash of
/// its content (not cryptographic: it tells a replaced or edited file from the one a run
/// started on). Runs record them ([`fingerprint_paths`]) and refuse to continue on other
/// content ([`changed_file`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFingerprint {
    /// The file, as the dataset's name or folder reached it.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch (0 where the system gives none). Not
    /// compared: a file touched without a change is the same data.
    pub modified: u64,
    /// A hash of the content, 16 hex digits.
    pub hash: String,
}

/// Fingerprints one regular file, reading it whole.
pub fn fingerprint_file(path: &Path) -> Result<FileFingerprint> {
    let mut file = open_regular(path)?;
    let meta = file.metadata().map_err(|e| KdError::io("reading", path, e))?;
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
    // SipHash-2-4 with zero keys: a fixed algorithm (std's deprecated `SipHasher`, unlike
    // `DefaultHasher`, never changes between Rust versions, so a recorded hash stays valid), and
    // std's optimised code hashes at memory speed even in this workspace's unoptimised dev builds.
    #[allow(deprecated)]
    let mut hasher = std::hash::SipHasher::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(|e| KdError::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        std::hash::Hasher::write(&mut hasher, &buffer[..n]);
    }
    let hash = std::hash::Hasher::finish(&hasher);
    Ok(FileFingerprint { path: path.display().to_string(), size, modified, hash: format!("{hash:016x}") })
}

/// Fingerprints every regular file of `roots` (a file itself; a folder: every file under it,
/// in name order, hidden entries such as temporary and lock files left out).
pub fn fingerprint_paths(roots: &[PathBuf]) -> Result<Vec<FileFingerprint>> {
    fn walk(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let meta = fs::metadata(path).map_err(|e| KdError::io("reading", path, e))?;
        if !meta.is_dir() {
            out.push(path.to_path_buf());
            return Ok(());
        }
        let mut entries: Vec<PathBuf> = fs::read_dir(path)
            .map_err(|e| KdError::io("reading folder", path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        entries.sort();
        entries.iter().try_for_each(|p| walk(p, out))
    }
    let mut files = Vec::new();
    for root in roots {
        walk(root, &mut files)?;
    }
    files.iter().map(|f| fingerprint_file(f)).collect()
}

/// The first difference between the data files a run `recorded` and those it would read `now`,
/// in words naming the file (a changed size or content, a file gone or new); `None` when the
/// content is the same. An empty record (written before runs recorded their files) says
/// nothing.
pub fn changed_file(recorded: &[FileFingerprint], now: &[FileFingerprint]) -> Option<String> {
    if recorded.is_empty() {
        return None;
    }
    for old in recorded {
        match now.iter().find(|f| f.path == old.path) {
            None => return Some(format!("{} is gone", old.path)),
            Some(new) if new.size != old.size => {
                return Some(format!("{} changed: {} bytes then, {} bytes now", old.path, old.size, new.size));
            }
            Some(new) if new.hash != old.hash => {
                return Some(format!("{} changed: same size, other content (hash {} then, {} now)", old.path, old.hash, new.hash));
            }
            Some(_) => {}
        }
    }
    now.iter().find(|f| !recorded.iter().any(|o| o.path == f.path)).map(|f| format!("{} is new", f.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_pipes_are_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let err = read_regular(dir).unwrap_err().to_string();
        assert!(err.contains("a folder: only regular files are read"), "{err}");
        #[cfg(unix)]
        {
            let fifo = dir.join("pipe");
            let status = std::process::Command::new("mkfifo").arg(&fifo).status();
            if status.is_ok_and(|s| s.success()) {
                let err = read_regular(&fifo).unwrap_err().to_string();
                assert!(err.contains("not a regular file"), "{err}");
            }
        }
        let file = dir.join("a.txt");
        fs::write(&file, "x").unwrap();
        assert_eq!(read_regular_text(&file).unwrap(), "x");
    }

    #[test]
    fn a_changed_data_file_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("a.csv"), "x,label\n1,0\n").unwrap();
        fs::write(dir.join("b.csv"), "x,label\n2,1\n").unwrap();
        fs::write(dir.join(".a.csv.tmp-1"), "a leftover").unwrap();
        let before = fingerprint_paths(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(before.len(), 2, "hidden files are left out");
        assert_eq!(changed_file(&before, &fingerprint_paths(std::slice::from_ref(&dir)).unwrap()), None);
        // The same size, other content.
        fs::write(dir.join("b.csv"), "x,label\n3,1\n").unwrap();
        let after = fingerprint_paths(std::slice::from_ref(&dir)).unwrap();
        let said = changed_file(&before, &after).unwrap();
        assert!(said.contains("b.csv changed: same size, other content"), "{said}");
        fs::write(dir.join("b.csv"), "x,label\n3,1\n4,0\n").unwrap();
        let said = changed_file(&before, &fingerprint_paths(std::slice::from_ref(&dir)).unwrap()).unwrap();
        assert!(said.contains("b.csv changed: 12 bytes then, 16 bytes now"), "{said}");
        fs::remove_file(dir.join("b.csv")).unwrap();
        assert!(changed_file(&before, &fingerprint_paths(std::slice::from_ref(&dir)).unwrap()).unwrap().contains("b.csv is gone"));
        assert_eq!(changed_file(&[], &before), None);
    }

    #[test]
    fn the_content_hash_is_fixed_sip_hash() {
        // SipHash-2-4 with zero keys of the 3 bytes "abc", as every Rust version computes it.
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("abc");
        fs::write(&file, "abc").unwrap();
        // Pinned: recorded fingerprints must stay valid across Rust versions.
        assert_eq!(fingerprint_file(&file).unwrap().hash, "3fc884964770eede");
        assert_eq!(fingerprint_file(&file).unwrap().size, 3);
    }
}
