//! Opening input files safely: only regular files are read.
//!
//! Opening a named pipe (FIFO) for reading blocks until a writer appears, and reading a device
//! or `/dev/zero` never ends; a folder gives an obscure error. Every reader of the workspace
//! (data, checkpoints, teacher caches, experiment files, imported weights) goes through these
//! functions, so such a path is an error that names it instead of a hang.

use std::fs::{self, File};
use std::path::Path;

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
}
