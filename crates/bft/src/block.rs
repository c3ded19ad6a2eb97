//! The runtime's block as commonware sees it: a digest (the header hash),
//! a height, a parent, and a wire encoding that cannot smuggle extrinsics.
//!
//! On the wire a block is its serde JSON (what the store already keeps),
//! length-prefixed and bounded by [`BlockCodec::max_bytes`]. Marshal
//! identifies blocks by digest alone and checks nothing else when a peer
//! serves one (a backfilled finalized block never passes `verify`), so
//! decoding rejects a block whose extrinsics do not match the root its
//! header commits to.

use std::sync::Arc;

use bytes::BufMut;
use commonware_codec::Buf;
use commonware_codec::{EncodeSize, Error as CodecError, RangeCfg, Read, Write};
use commonware_consensus::Heightable;
use commonware_consensus::types::Height;
use commonware_cryptography::Digestible;
use commonware_cryptography::sha256::Digest;
use hypertensor_primitives::H256;
use hypertensor_runtime::{Block, extrinsics_root};

/// Largest block accepted from the network by default, bytes of JSON.
pub const DEFAULT_MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// A runtime block with its encoding and hash computed once.
#[derive(Clone, Debug)]
pub struct ChainBlock {
    block: Arc<Block>,
    bytes: Arc<[u8]>,
    hash: H256,
}

impl PartialEq for ChainBlock {
    fn eq(&self, other: &ChainBlock) -> bool {
        self.hash == other.hash && self.bytes == other.bytes
    }
}

impl Eq for ChainBlock {}

impl ChainBlock {
    /// Wraps a block (its JSON and hash are computed here, once).
    pub fn new(block: Block) -> ChainBlock {
        // Serializing plain structs of integers, strings and byte arrays
        // cannot fail.
        let bytes = serde_json::to_vec(&block).unwrap_or_default();
        ChainBlock {
            hash: block.hash(),
            bytes: bytes.into(),
            block: Arc::new(block),
        }
    }

    /// The runtime block.
    pub fn block(&self) -> &Block {
        &self.block
    }

    /// The block hash (the header's SHA-256).
    pub fn hash(&self) -> H256 {
        self.hash
    }

    /// The height.
    pub fn number(&self) -> u64 {
        self.block.header.height
    }

    /// Size of the wire encoding's payload (JSON), bytes.
    pub fn json_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Converts a block hash into commonware's digest type.
pub fn digest_of(hash: &H256) -> Digest {
    Digest::from(hash.0)
}

/// Converts commonware's digest into a block hash.
pub fn hash_of(digest: &Digest) -> H256 {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    H256(out)
}

impl Digestible for ChainBlock {
    type Digest = Digest;

    fn digest(&self) -> Digest {
        digest_of(&self.hash)
    }
}

impl Heightable for ChainBlock {
    fn height(&self) -> Height {
        Height::new(self.block.header.height)
    }
}

impl commonware_consensus::Block for ChainBlock {
    fn parent(&self) -> Digest {
        digest_of(&self.block.header.parent_hash)
    }
}

/// Decoding limits of a block from the network.
#[derive(Clone, Copy, Debug)]
pub struct BlockCodec {
    /// Largest JSON payload accepted, bytes.
    pub max_bytes: usize,
}

impl Default for BlockCodec {
    fn default() -> BlockCodec {
        BlockCodec {
            max_bytes: DEFAULT_MAX_BLOCK_BYTES,
        }
    }
}

impl Write for ChainBlock {
    fn write(&self, buf: &mut impl BufMut) {
        self.bytes.to_vec().write(buf);
    }
}

impl EncodeSize for ChainBlock {
    fn encode_size(&self) -> usize {
        self.bytes.len() + commonware_codec::varint::UInt(self.bytes.len() as u64).encode_size()
    }
}

impl Read for ChainBlock {
    type Cfg = BlockCodec;

    fn read_cfg(buf: &mut impl Buf, cfg: &BlockCodec) -> Result<ChainBlock, CodecError> {
        let bytes = Vec::<u8>::read_cfg(buf, &(RangeCfg::new(0..=cfg.max_bytes), ()))?;
        let block: Block = serde_json::from_slice(&bytes)
            .map_err(|_| CodecError::Invalid("ChainBlock", "not a block"))?;
        if extrinsics_root(&block.extrinsics) != block.header.extrinsics_root {
            return Err(CodecError::Invalid(
                "ChainBlock",
                "extrinsics do not match the header's root",
            ));
        }
        let chain_block = ChainBlock::new(block);
        if *chain_block.bytes != *bytes {
            return Err(CodecError::Invalid(
                "ChainBlock",
                "encoding is not canonical",
            ));
        }
        Ok(chain_block)
    }
}

impl commonware_consensus::BoundedBlock for ChainBlock {
    fn max_encode_size(cfg: &BlockCodec) -> usize {
        cfg.max_bytes + 10
    }
}

#[cfg(test)]
mod tests {
    use commonware_codec::{Decode, Encode};
    use hypertensor_runtime::GenesisConfig;

    use super::*;

    fn genesis_block() -> ChainBlock {
        ChainBlock::new(GenesisConfig::dev().build().unwrap().block)
    }

    #[test]
    fn a_block_round_trips_and_keeps_its_digest() {
        let block = genesis_block();
        let bytes = block.encode();
        assert_eq!(bytes.len(), block.encode_size());
        let back = ChainBlock::decode_cfg(bytes, &BlockCodec::default()).unwrap();
        assert_eq!(back, block);
        assert_eq!(back.digest(), block.digest());
        assert_eq!(hash_of(&back.digest()), block.block().hash());
    }

    #[test]
    fn swapped_extrinsics_are_refused() {
        let mut raw = genesis_block().block().clone();
        raw.header.extrinsics_root = H256([7; 32]);
        let bytes = ChainBlock::new(raw).encode();
        let err = ChainBlock::decode_cfg(bytes, &BlockCodec::default()).unwrap_err();
        assert!(err.to_string().contains("root"), "{err}");
    }

    #[test]
    fn an_oversized_block_is_refused() {
        let bytes = genesis_block().encode();
        let err = ChainBlock::decode_cfg(bytes, &BlockCodec { max_bytes: 16 }).unwrap_err();
        assert!(matches!(err, CodecError::InvalidLength(_)), "{err}");
    }
}
