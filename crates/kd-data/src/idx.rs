//! The IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed.

use std::io::Read;
use std::path::Path;

use kd_core::{KdError, Result};

/// An IDX file's content: dimensions and bytes.
#[derive(Debug, Clone)]
pub struct IdxArray {
    /// Dimensions (`[n]` for labels, `[n, rows, cols]` for images).
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes (`.gz` or raw, recognised by the gzip magic number).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|e| KdError::io("reading", path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| KdError::Malformed { path: path.into(), reason: format!("corrupt gzip stream: {e}") })?;
        out
    } else {
        raw
    };
    parse_idx(&bytes).map_err(|reason| KdError::Malformed { path: path.into(), reason })
}

/// Parses IDX bytes (ubyte data only).
pub fn parse_idx(bytes: &[u8]) -> std::result::Result<IdxArray, String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    if bytes.len() < 4 {
        return Err(format!("{} bytes is too short for an IDX header", bytes.len()));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format!("wrong IDX magic number {:02x}{:02x}{:02x}{:02x} (expected 0000 08 NN)", bytes[0], bytes[1], bytes[2], bytes[3]));
    }
    if bytes[2] != 0x08 {
        return Err(format!("IDX element type 0x{:02x} is not unsigned byte (0x08)", bytes[2]));
    }
    let rank = bytes[3] as usize;
    if rank == 0 || rank > 4 {
        return Err(format!("IDX rank {rank} is not supported"));
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(format!("truncated header: {} bytes, need {header}", bytes.len()));
    }
    let dims: Vec<usize> = (0..rank).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize).collect();
    let expected = dims.iter().product::<usize>();
    let got = bytes.len() - header;
    if got != expected {
        return Err(format!("dimensions {dims:?} need {expected} data bytes but the file has {got} (truncated or corrupt)"));
    }
    Ok(IdxArray { dims, data: bytes[header..].to_vec() })
}
