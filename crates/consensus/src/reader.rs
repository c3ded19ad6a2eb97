//! Bounded decoding of the canonical encoding (`hypertensor_primitives::codec`).

use crate::{Error, Result};

/// Reads fields from a byte slice, refusing truncation and oversize counts.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub(crate) fn take<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        if self.bytes.len() < N {
            return Err(Error::Truncated { field });
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<Vec<u8>> {
        if self.bytes.len() < n {
            return Err(Error::Truncated { field });
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head.to_vec())
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(field)?))
    }

    /// A finite `f32` stored as its IEEE-754 bits.
    pub(crate) fn f32(&mut self, field: &'static str) -> Result<f32> {
        let v = f32::from_bits(self.u32(field)?);
        finite(f64::from(v), field)?;
        Ok(v)
    }

    /// A finite `f64` stored as its IEEE-754 bits.
    pub(crate) fn f64(&mut self, field: &'static str) -> Result<f64> {
        let v = f64::from_bits(self.u64(field)?);
        finite(v, field)?;
        Ok(v)
    }

    /// A `u32` count, at most `max`.
    pub(crate) fn count(&mut self, field: &'static str, max: usize) -> Result<usize> {
        let n = self.u32(field)?;
        if n as usize > max {
            return Err(Error::TooLarge {
                field,
                value: u64::from(n),
                max: max as u64,
            });
        }
        Ok(n as usize)
    }

    pub(crate) fn finish(self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes {
                count: self.bytes.len(),
            })
        }
    }
}

fn finite(v: f64, field: &'static str) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::Invalid {
            field,
            reason: format!("{v} is not a finite number"),
        })
    }
}
