//! Checkpoint files: written atomically, checked when read.
//!
//! Layout: the magic `KDCKPT01`, a little-endian `u64` header length, a JSON header (metadata,
//! section names and lengths, a checksum of the body), then the sections back to back. A file
//! is written to a temporary name in the same folder, flushed to disk and renamed, so a reader
//! sees the old file or the new one, never half of one.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{KdError, Result};
use crate::rng::mix64;

const MAGIC: &[u8; 8] = b"KDCKPT01";

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| KdError::io("creating folder", dir, e))?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "checkpoint".into());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    {
        let mut file = fs::File::create(&tmp).map_err(|e| KdError::io("creating", &tmp, e))?;
        file.write_all(bytes).map_err(|e| KdError::io("writing", &tmp, e))?;
        file.sync_all().map_err(|e| KdError::io("syncing", &tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| KdError::io("renaming into place", path, e))?;
    Ok(())
}

/// A checksum of bytes (not cryptographic: it catches truncation and corruption).
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut acc = 0xC0FFEE_u64 ^ bytes.len() as u64;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        acc = mix64(acc ^ u64::from_le_bytes(word));
    }
    acc
}

#[derive(Serialize, Deserialize)]
struct Header {
    meta: serde_json::Value,
    sections: Vec<(String, u64)>,
    body_checksum: u64,
}

/// A checkpoint: JSON metadata plus named binary sections (model, optimiser, method state).
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// Free-form metadata (epoch, history, configuration).
    pub meta: serde_json::Value,
    /// Named binary sections.
    pub sections: Vec<(String, Vec<u8>)>,
}

impl Checkpoint {
    /// The bytes of the named section.
    pub fn section(&self, name: &str) -> Result<&[u8]> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
            .ok_or_else(|| KdError::Record(format!("checkpoint has no `{name}` section")))
    }

    /// Serialises the checkpoint.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let body: Vec<u8> = self.sections.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        let header = Header {
            meta: self.meta.clone(),
            sections: self.sections.iter().map(|(n, b)| (n.clone(), b.len() as u64)).collect(),
            body_checksum: checksum(&body),
        };
        let header = serde_json::to_vec(&header).map_err(|e| KdError::Record(e.to_string()))?;
        let mut out = Vec::with_capacity(16 + header.len() + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Reads a checkpoint, checking its magic, lengths and checksum.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| KdError::io("reading", path, e))?;
        let bad = |reason: String| KdError::Malformed { path: path.to_path_buf(), reason };
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(bad("not a checkpoint (wrong magic number or too short)".into()));
        }
        let header_len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
        let header_end = 16usize.checked_add(header_len).filter(|&e| e <= bytes.len()).ok_or_else(|| bad("truncated header".into()))?;
        let header: Header = serde_json::from_slice(&bytes[16..header_end]).map_err(|e| bad(format!("header: {e}")))?;
        let body = &bytes[header_end..];
        let expected: u64 = header.sections.iter().map(|(_, l)| *l).sum();
        if body.len() as u64 != expected {
            return Err(bad(format!("body has {} bytes, header says {expected} (truncated?)", body.len())));
        }
        if checksum(body) != header.body_checksum {
            return Err(bad("checksum mismatch (corrupt file)".into()));
        }
        let mut sections = Vec::with_capacity(header.sections.len());
        let mut offset = 0usize;
        for (name, len) in header.sections {
            let len = len as usize;
            sections.push((name, body[offset..offset + len].to_vec()));
            offset += len;
        }
        Ok(Checkpoint { meta: header.meta, sections })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation_is_detected() {
        let dir = std::env::temp_dir().join(format!("kd-ckpt-test-{}", std::process::id()));
        let path = dir.join("a.ckpt");
        let ckpt = Checkpoint {
            meta: serde_json::json!({"epoch": 3}),
            sections: vec![("model".into(), vec![1, 2, 3]), ("optim".into(), vec![9; 100])],
        };
        ckpt.save(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back.meta["epoch"], 3);
        assert_eq!(back.section("optim").unwrap(), &[9; 100][..]);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        fs::remove_dir_all(&dir).ok();
    }
}
