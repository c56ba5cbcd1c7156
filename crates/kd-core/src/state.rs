//! Little-endian encoding of methods' checkpointed state (tables, buffers, banks), with errors
//! instead of panics on truncated or foreign bytes. Floats are written bit for bit, so state
//! round-trips exactly.

use std::path::PathBuf;

use crate::error::{KdError, Result};

/// Appends `v` as 8 little-endian bytes.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends `v` as a `u64`.
pub fn put_usize(out: &mut Vec<u8>, v: usize) {
    put_u64(out, v as u64);
}

/// Appends floats bit for bit (so they round-trip exactly).
pub fn put_f32s(out: &mut Vec<u8>, values: &[f32]) {
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A cursor over state bytes.
pub struct StateReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> StateReader<'a> {
    /// A reader of `bytes`; `what` names the state in error messages.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        StateReader { bytes, pos: 0, what }
    }

    /// A "malformed state" error naming what was being read.
    pub fn error(&self, reason: impl Into<String>) -> KdError {
        KdError::Malformed { path: PathBuf::from(format!("<{} state>", self.what)), reason: reason.into() }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.error(format!("truncated at byte {} (wanted {n} more)", self.pos)));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Checks the format's magic bytes.
    pub fn magic(&mut self, magic: &[u8]) -> Result<()> {
        if self.take(magic.len())? != magic {
            return Err(self.error("unknown format (bad magic bytes)"));
        }
        Ok(())
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// A flag byte (0 or 1).
    pub fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.error(format!("bad flag byte {other}"))),
        }
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        Ok(u64::from_le_bytes(word))
    }

    /// A `u64` that must fit a `usize`.
    pub fn usize(&mut self) -> Result<usize> {
        let v = self.u64()?;
        usize::try_from(v).map_err(|_| self.error(format!("value {v} does not fit this platform")))
    }

    /// A little-endian `f32`.
    pub fn f32(&mut self) -> Result<f32> {
        let b = self.take(4)?;
        let mut word = [0u8; 4];
        word.copy_from_slice(b);
        Ok(f32::from_le_bytes(word))
    }

    /// `n` floats, refused before allocating when the bytes left cannot hold them.
    pub fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        if n.checked_mul(4).is_none_or(|b| b > self.remaining()) {
            return Err(self.error(format!("{n} floats do not fit the {} bytes left", self.remaining())));
        }
        (0..n).map(|_| self.f32()).collect()
    }

    /// A count of records of at least `min_record_bytes` each, refused when the bytes left
    /// cannot hold that many (so a corrupt count never triggers a huge allocation).
    pub fn count(&mut self, min_record_bytes: usize) -> Result<usize> {
        let n = self.usize()?;
        if n.checked_mul(min_record_bytes).is_none_or(|b| b > self.remaining()) {
            return Err(self.error(format!("{n} records do not fit the {} bytes left", self.remaining())));
        }
        Ok(n)
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.error(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}
