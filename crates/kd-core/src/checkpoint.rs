//! Checkpoint files: written atomically, checked when read.
//!
//! Layout: the magic `KDCKPT02`, a little-endian `u64` header length, a JSON header (metadata,
//! section names and lengths), the sections back to back, and a little-endian `u64` checksum
//! of every byte before it. The checksum covers the header too, so an edited epoch count, history
//! or best accuracy is caught like a damaged tensor. A file is written to a temporary name in
//! the same folder, flushed to disk and renamed, so a reader sees the old file or the new one,
//! never half of one.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{KdError, Result};
use crate::rng::mix64;

const MAGIC: &[u8; 8] = b"KDCKPT02";
/// The magic of the first format, whose checksum left the header out.
const MAGIC_V1: &[u8; 8] = b"KDCKPT01";

pub use crate::atomic::write_atomic;

/// A module's parameters as bytes (burnpack): what a checkpoint's model sections hold.
pub fn module_bytes<M: Module>(module: &M) -> Result<Vec<u8>> {
    module.clone().into_record().into_bytes().map(|b| b.to_vec()).map_err(|e| KdError::Record(format!("{e:?}")))
}

/// Loads parameters written by [`module_bytes`] into `module`.
pub fn load_module<M: Module>(module: M, bytes: &[u8]) -> Result<M> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec())).map_err(|e| KdError::Record(format!("{e:?}")))?;
    module.try_load_record(record).map_err(|e| KdError::Record(format!("{e:?}")))
}

/// Loads the model section of a checkpoint file (best.ckpt or last.ckpt) into `module`.
pub fn load_checkpoint_model<M: Module>(module: M, path: &Path) -> Result<M> {
    let ckpt = Checkpoint::load(path)?;
    load_module(module, ckpt.section("model")?)
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
#[serde(deny_unknown_fields)]
struct Header {
    meta: serde_json::Value,
    sections: Vec<(String, u64)>,
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

    /// The section `name`, or `None` when the checkpoint has none (written before it existed).
    pub fn optional_section(&self, name: &str) -> Option<&[u8]> {
        self.sections.iter().find(|(n, _)| n == name).map(|(_, b)| b.as_slice())
    }

    /// Serialises the checkpoint.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = Header { meta: self.meta.clone(), sections: self.sections.iter().map(|(n, b)| (n.clone(), b.len() as u64)).collect() };
        let header = serde_json::to_vec(&header).map_err(|e| KdError::Record(e.to_string()))?;
        let body_len: usize = self.sections.iter().map(|(_, b)| b.len()).sum();
        let mut out = Vec::with_capacity(24 + header.len() + body_len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for (_, bytes) in &self.sections {
            out.extend_from_slice(bytes);
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        Ok(out)
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Reads a checkpoint file (a regular file only), checking its magic, lengths and checksum.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = crate::files::read_regular(path)?;
        Self::from_bytes(&bytes).map_err(|reason| KdError::Malformed { path: path.to_path_buf(), reason })
    }

    /// Parses checkpoint bytes; the error says what is wrong with them.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() >= 8 && &bytes[..8] == MAGIC_V1 {
            return Err("checkpoint format 1 (its checksum does not cover the header) is no longer read: train again".into());
        }
        if bytes.len() < 24 || &bytes[..8] != MAGIC {
            return Err("not a checkpoint (wrong magic number or too short)".into());
        }
        let (content, trailer) = bytes.split_at(bytes.len() - 8);
        let stored = u64::from_le_bytes(trailer.try_into().map_err(|_| "truncated checksum".to_string())?);
        let header_len = u64::from_le_bytes(content[8..16].try_into().map_err(|_| "truncated header length".to_string())?);
        let header_end = usize::try_from(header_len)
            .ok()
            .and_then(|l| l.checked_add(16))
            .filter(|&e| e <= content.len())
            .ok_or_else(|| "truncated header".to_string())?;
        if checksum(content) != stored {
            return Err("checksum mismatch (the file was truncated, damaged or edited)".into());
        }
        let header: Header = serde_json::from_slice(&content[16..header_end]).map_err(|e| format!("header: {e}"))?;
        let body = &content[header_end..];
        let expected = header.sections.iter().try_fold(0u64, |acc, (_, l)| acc.checked_add(*l));
        if expected != Some(body.len() as u64) {
            return Err(format!("body has {} bytes, the header's sections add up to {expected:?}", body.len()));
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
    use std::fs;

    #[test]
    fn round_trip_and_truncation_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ckpt");
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
        assert!(err.contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn an_edited_header_is_caught_by_the_checksum() {
        let ckpt = Checkpoint { meta: serde_json::json!({"best": 91.5}), sections: vec![("model".into(), vec![7; 10])] };
        let bytes = ckpt.to_bytes().unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let at = text.find("91.5").unwrap();
        let mut edited = bytes.clone();
        edited[at] = b'9';
        edited[at + 1] = b'9';
        assert!(Checkpoint::from_bytes(&edited).unwrap_err().contains("checksum mismatch"));
        assert_eq!(Checkpoint::from_bytes(&bytes).unwrap().meta["best"], 91.5);
        let mut v1 = bytes.clone();
        v1[..8].copy_from_slice(MAGIC_V1);
        assert!(Checkpoint::from_bytes(&v1).unwrap_err().contains("format 1"));
        assert!(Checkpoint::from_bytes(b"KDCKPT02").unwrap_err().contains("too short"));
    }
}
