//! Copying bytes while hashing and counting them, with a size cap.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

/// Buffer size for streaming copies and hashing.
const CHUNK: usize = 1 << 20;

/// What a capped, hashed copy produced (its length is known to be within the cap).
#[derive(Debug)]
pub(crate) struct Copied {
    /// Their sha256, lowercase hex.
    pub(crate) sha256: String,
}

/// Why a capped, hashed copy stopped.
#[derive(Debug)]
pub(crate) enum CopyError {
    /// Reading the source failed.
    Read(io::Error),
    /// Writing the destination failed.
    Write(io::Error),
    /// The source holds more than the cap.
    TooLarge,
}

/// Copies `reader` into `writer`, hashing the bytes and advancing `bar`;
/// fails with [`CopyError::TooLarge`] as soon as more than `cap` bytes arrive.
pub(crate) fn copy_hashed(
    mut reader: impl Read,
    mut writer: impl Write,
    cap: u64,
    bar: &ProgressBar,
) -> Result<Copied, CopyError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        len += n as u64;
        if len > cap {
            return Err(CopyError::TooLarge);
        }
        let chunk = &buf[..n];
        hasher.update(chunk);
        writer.write_all(chunk).map_err(CopyError::Write)?;
        bar.inc(n as u64);
    }
    writer.flush().map_err(CopyError::Write)?;
    Ok(Copied {
        sha256: hex::encode(hasher.finalize()),
    })
}

/// The sha256 (lowercase hex) of the file at `path`.
pub(crate) fn sha256_file(path: &Path) -> io::Result<String> {
    let file = File::open(path)?;
    match copy_hashed(file, io::sink(), u64::MAX, &ProgressBar::hidden()) {
        Ok(copied) => Ok(copied.sha256),
        Err(CopyError::Read(e) | CopyError::Write(e)) => Err(e),
        Err(CopyError::TooLarge) => Err(io::Error::other("file larger than u64::MAX bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_hashes_known_vector() {
        let mut out = Vec::new();
        let copied = copy_hashed(&b"abc"[..], &mut out, 3, &ProgressBar::hidden()).unwrap();
        assert_eq!(out, b"abc");
        assert_eq!(
            copied.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn stops_beyond_the_cap() {
        let result = copy_hashed(&b"abcd"[..], io::sink(), 3, &ProgressBar::hidden());
        assert!(matches!(result, Err(CopyError::TooLarge)));
    }
}
