//! Little-endian encoding of TOAST's checkpointed state, with errors instead of panics on
//! truncated or foreign bytes.

use std::path::PathBuf;

use kd_core::{KdError, Result};

/// Appends `v` as 8 little-endian bytes.
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends `v` as a `u64`.
pub(crate) fn put_usize(out: &mut Vec<u8>, v: usize) {
    put_u64(out, v as u64);
}

/// Appends floats bit for bit (so they round-trip exactly).
pub(crate) fn put_f32s(out: &mut Vec<u8>, values: &[f32]) {
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A cursor over state bytes.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { bytes, pos: 0, what }
    }

    /// A "malformed state" error naming what was being read.
    pub(crate) fn error(&self, reason: impl Into<String>) -> KdError {
        KdError::Malformed { path: PathBuf::from(format!("<toast {} state>", self.what)), reason: reason.into() }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.error(format!("truncated at byte {} (wanted {n} more)", self.pos)));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn magic(&mut self, magic: &[u8]) -> Result<()> {
        if self.take(magic.len())? != magic {
            return Err(self.error("unknown format (bad magic bytes)"));
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.error(format!("bad flag byte {other}"))),
        }
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        Ok(u64::from_le_bytes(word))
    }

    pub(crate) fn usize(&mut self) -> Result<usize> {
        let v = self.u64()?;
        usize::try_from(v).map_err(|_| self.error(format!("value {v} does not fit this platform")))
    }

    pub(crate) fn f32(&mut self) -> Result<f32> {
        let b = self.take(4)?;
        let mut word = [0u8; 4];
        word.copy_from_slice(b);
        Ok(f32::from_le_bytes(word))
    }

    /// `n` floats, refused before allocating when the bytes left cannot hold them.
    pub(crate) fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        if n.checked_mul(4).is_none_or(|b| b > self.remaining()) {
            return Err(self.error(format!("{n} floats do not fit the {} bytes left", self.remaining())));
        }
        (0..n).map(|_| self.f32()).collect()
    }

    /// A count of records of at least `min_record_bytes` each, refused when the bytes left
    /// cannot hold that many (so a corrupt count never triggers a huge allocation).
    pub(crate) fn count(&mut self, min_record_bytes: usize) -> Result<usize> {
        let n = self.usize()?;
        if n.checked_mul(min_record_bytes).is_none_or(|b| b > self.remaining()) {
            return Err(self.error(format!("{n} records do not fit the {} bytes left", self.remaining())));
        }
        Ok(n)
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.error(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}
