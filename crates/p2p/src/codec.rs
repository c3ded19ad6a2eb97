//! A small canonical binary encoding for signed bytes and wire messages.
//!
//! Integers are big-endian; byte strings carry a `u32` length prefix. The
//! reader is bounded by its input: every length is checked against what is
//! left, and trailing bytes are an error, so a peer cannot make us allocate
//! more than it sent.

use crate::{P2pError, Result};

/// Appends values to a buffer.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        // Every length we encode is bounded far below 4 GiB by the callers.
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.raw(v)
    }
}

/// Reads values from a byte slice, naming `what` in its errors.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { bytes, what }
    }
    fn err(&self, reason: &str) -> P2pError {
        P2pError::Malformed {
            what: self.what,
            reason: reason.to_string(),
        }
    }
    pub(crate) fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(self.err("truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.raw(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn bytes(&mut self, max: usize) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(self.err(&format!("field of {len} bytes exceeds the limit of {max}")));
        }
        self.raw(len)
    }
    pub(crate) fn peer_id(&mut self) -> Result<libp2p::PeerId> {
        let bytes = self.bytes(64)?;
        libp2p::PeerId::from_bytes(bytes).map_err(|e| self.err(&format!("bad peer id: {e}")))
    }
    pub(crate) fn finish(self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.err(&format!("{} trailing bytes", self.bytes.len())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let mut w = Writer::default();
        w.u8(7).u32(9).u64(11).bytes(b"abc");
        let mut r = Reader::new(&w.0, "test");
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 9);
        assert_eq!(r.u64().unwrap(), 11);
        assert_eq!(r.bytes(3).unwrap(), b"abc");
        r.finish().unwrap();

        let mut r = Reader::new(&w.0[..w.0.len() - 1], "test");
        r.raw(13).unwrap();
        assert!(r.bytes(10).is_err(), "truncated field must fail");
        let mut r = Reader::new(&w.0, "test");
        r.raw(13).unwrap();
        assert!(r.bytes(2).is_err(), "over-limit field must fail");
    }
}
