//! Key files in libp2p's protobuf private-key encoding.
//!
//! libp2p encodes a private key as the protobuf message
//! `PrivateKey { KeyType Type = 1; bytes Data = 2; }` with `Ed25519 = 1`, and
//! for Ed25519 the data is the 64-byte keypair `secret || public`. Writing
//! our keys the same way makes one file both a chain key and a libp2p
//! identity (`libp2p_identity::Keypair::from_protobuf_encoding` reads it).
//!
//! The decoder is a small, bounded protobuf reader: it accepts the two fields
//! in any order, skips unknown fields as protobuf requires, and rejects
//! truncated input, other key types and inconsistent keypairs.
//!
//! A key file is a secret: [`KEY_FILE_MODE`] is the Unix mode it is written
//! with, and [`check_permissions`] turns the mode bits a caller read from the
//! file system into a warning, with the command that fixes it, when group or
//! others have any access. (This crate does no I/O; callers stat the file.)

use std::fmt;
use std::path::{Path, PathBuf};

use crate::{Error, Keypair, Result};

/// protobuf tag of field 1 (`Type`) with wire type varint.
const TAG_TYPE: u64 = 1 << 3;
/// protobuf tag of field 2 (`Data`) with wire type length-delimited.
const TAG_DATA: u64 = (2 << 3) | 2;
/// libp2p `KeyType::Ed25519`.
const KEY_TYPE_ED25519: u64 = 1;
/// Key files longer than this are refused before parsing.
pub const MAX_KEY_FILE_LENGTH: usize = 4096;

/// Unix permission bits of a key file: read and write by its owner only.
pub const KEY_FILE_MODE: u32 = 0o600;

/// A key file that users other than its owner can access: anyone who can
/// read it can sign as its key (move its funds, impersonate its node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoosePermissions {
    /// The key file.
    pub path: PathBuf,
    /// Its permission bits (`st_mode & 0o777`).
    pub mode: u32,
}

impl fmt::Display for LoosePermissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display().to_string();
        let safe = path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c));
        let quoted = if safe {
            path.clone()
        } else {
            format!("'{}'", path.replace('\'', r"'\''"))
        };
        write!(
            f,
            "key file {path} is accessible by group or others (mode {:03o}); \
             anyone who can read it can sign with its key. Fix it with: chmod 600 {quoted}",
            self.mode
        )
    }
}

/// Checks a key file's Unix mode bits, as read from the file system.
///
/// Returns a warning when any group or other bit is set (mode `& 0o077`);
/// `None` for owner-only modes such as `0600` or `0400`.
pub fn check_permissions(path: &Path, mode: u32) -> Option<LoosePermissions> {
    let mode = mode & 0o777;
    (mode & 0o077 != 0).then(|| LoosePermissions {
        path: path.to_path_buf(),
        mode,
    })
}

impl Keypair {
    /// The libp2p protobuf encoding of this keypair (68 bytes).
    pub fn to_protobuf_encoding(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(68);
        out.extend_from_slice(&[0x08, KEY_TYPE_ED25519 as u8, 0x12, 64]);
        out.extend_from_slice(&self.to_keypair_bytes());
        out
    }

    /// Reads a keypair from libp2p's protobuf private-key encoding.
    pub fn from_protobuf_encoding(bytes: &[u8]) -> Result<Keypair> {
        if bytes.len() > MAX_KEY_FILE_LENGTH {
            return Err(Error::KeyFileMalformed("longer than any key file"));
        }
        let mut reader = Reader { bytes, pos: 0 };
        let mut key_type = None;
        let mut data = None;
        while !reader.done() {
            let tag = reader.varint()?;
            match tag {
                TAG_TYPE => key_type = Some(reader.varint()?),
                TAG_DATA => data = Some(reader.length_delimited()?),
                other => reader.skip(other)?,
            }
        }
        match key_type {
            None => return Err(Error::KeyFileMalformed("missing key type")),
            Some(KEY_TYPE_ED25519) => {}
            Some(other) => return Err(Error::UnsupportedKeyType(other)),
        }
        let data = data.ok_or(Error::KeyFileMalformed("missing key data"))?;
        let keypair: &[u8; 64] = data.try_into().map_err(|_| Error::InvalidLength {
            what: "Ed25519 keypair in key file",
            expected: 64,
            got: data.len(),
        })?;
        Keypair::from_keypair_bytes(keypair)
    }
}

/// A cursor over protobuf bytes that never reads past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or(Error::KeyFileMalformed("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error::KeyFileMalformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(Error::KeyFileMalformed("truncated"))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn length_delimited(&mut self) -> Result<&'a [u8]> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| Error::KeyFileMalformed("length too large"))?;
        self.take(len)
    }

    /// Skips one field of an unknown tag.
    fn skip(&mut self, tag: u64) -> Result<()> {
        match tag & 7 {
            0 => self.varint().map(drop),
            1 => self.take(8).map(drop),
            2 => self.length_delimited().map(drop),
            5 => self.take(4).map(drop),
            _ => Err(Error::KeyFileMalformed("unsupported protobuf wire type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_only_modes_pass_and_others_get_a_fix() {
        let path = Path::new("/home/op/node.key");
        assert_eq!(check_permissions(path, 0o100600), None);
        assert_eq!(check_permissions(path, 0o400), None);
        assert_eq!(check_permissions(path, KEY_FILE_MODE), None);
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602, 0o777, 0o100644] {
            let warning = check_permissions(path, mode).expect("loose mode");
            assert_eq!(warning.mode, mode & 0o777);
            let text = warning.to_string();
            assert!(text.contains("/home/op/node.key"), "{text}");
            assert!(text.contains(&format!("{:03o}", mode & 0o777)), "{text}");
            assert!(text.ends_with("chmod 600 /home/op/node.key"), "{text}");
        }
        let spaced = check_permissions(Path::new("my keys/it's.key"), 0o644).unwrap();
        assert!(
            spaced
                .to_string()
                .ends_with(r"chmod 600 'my keys/it'\''s.key'"),
            "{spaced}"
        );
    }

    #[test]
    fn round_trips_and_has_libp2p_layout() {
        let key = Keypair::dev("alice");
        let bytes = key.to_protobuf_encoding();
        assert_eq!(bytes.len(), 68);
        assert_eq!(&bytes[..4], &[0x08, 0x01, 0x12, 0x40]);
        assert_eq!(&bytes[4..36], &key.secret_bytes());
        let back = Keypair::from_protobuf_encoding(&bytes).unwrap();
        assert_eq!(back.account_id(), key.account_id());
    }

    #[test]
    fn fields_in_any_order_and_unknown_fields_are_accepted() {
        let key = Keypair::dev("bob");
        let mut bytes = vec![0x12, 64];
        bytes.extend_from_slice(&key.to_keypair_bytes());
        bytes.extend_from_slice(&[0x18, 0x96, 0x01]); // field 3, varint 150
        bytes.extend_from_slice(&[0x08, 0x01]);
        assert_eq!(
            Keypair::from_protobuf_encoding(&bytes)
                .unwrap()
                .account_id(),
            key.account_id()
        );
    }

    #[test]
    fn bad_key_files_get_named_errors() {
        let good = Keypair::dev("carol").to_protobuf_encoding();
        assert_eq!(
            Keypair::from_protobuf_encoding(&good[..40]).unwrap_err(),
            Error::KeyFileMalformed("truncated")
        );
        let mut secp = good.clone();
        secp[1] = 2;
        assert_eq!(
            Keypair::from_protobuf_encoding(&secp).unwrap_err(),
            Error::UnsupportedKeyType(2)
        );
        let mut mismatched = good.clone();
        mismatched[40] ^= 1; // flip a bit of the public half
        assert_eq!(
            Keypair::from_protobuf_encoding(&mismatched).unwrap_err(),
            Error::KeyFileInvalidKeypair
        );
        assert_eq!(
            Keypair::from_protobuf_encoding(&good[2..]).unwrap_err(),
            Error::KeyFileMalformed("missing key type")
        );
        assert!(matches!(
            Keypair::from_protobuf_encoding(&[0x08, 0x01, 0x12, 0x02, 1, 2]).unwrap_err(),
            Error::InvalidLength {
                expected: 64,
                got: 2,
                ..
            }
        ));
        assert_eq!(
            Keypair::from_protobuf_encoding(&[0x08, 0x01]).unwrap_err(),
            Error::KeyFileMalformed("missing key data")
        );
        assert!(Keypair::from_protobuf_encoding(&vec![0u8; 5000]).is_err());
        assert_eq!(
            Keypair::from_protobuf_encoding(&[0x0f]).unwrap_err(),
            Error::KeyFileMalformed("unsupported protobuf wire type")
        );
    }
}
