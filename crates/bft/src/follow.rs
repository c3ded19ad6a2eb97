//! Checking finality without voting: a full node verifies a finalization
//! certificate against the genesis validator set, then accepts the blocks
//! that hash-link its last block to the certified one.

use bytes::Bytes;
use commonware_codec::Decode as _;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::simplex::types::Finalization;
use commonware_cryptography::certificate::Verifier as _;
use commonware_cryptography::sha256::Digest;
use commonware_parallel::Sequential;
use hypertensor_primitives::H256;
use hypertensor_runtime::ChainValidator;

use crate::block::digest_of;
use crate::keys::{BadValidatorKey, participants};

/// Why a certificate is not accepted.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// The bytes are not a finalization.
    #[error("not a finalization certificate: {0}")]
    Malformed(String),
    /// It certifies another block.
    #[error("the certificate is for another block")]
    WrongBlock,
    /// Its signatures are not a quorum of the validator set.
    #[error("the certificate's signatures are not a quorum of the genesis validators")]
    BadSignatures,
}

/// Verifies finalization certificates of one chain.
#[derive(Clone, Debug)]
pub struct FinalityVerifier {
    scheme: Scheme,
}

impl FinalityVerifier {
    /// A verifier for the chain of `genesis` with these validators.
    pub fn new(
        genesis: &H256,
        validators: &[ChainValidator],
    ) -> Result<FinalityVerifier, BadValidatorKey> {
        let set = participants(validators)?;
        Ok(FinalityVerifier {
            scheme: Scheme::verifier(&crate::engine::namespace(genesis), set),
        })
    }

    /// Checks that `certificate` finalizes the block `hash`.
    pub fn verify(&self, hash: &H256, certificate: &[u8]) -> Result<(), CertificateError> {
        let finalization = Finalization::<Scheme, Digest>::decode_cfg(
            Bytes::copy_from_slice(certificate),
            &self.scheme.certificate_codec_config(),
        )
        .map_err(|e| CertificateError::Malformed(e.to_string()))?;
        if finalization.proposal.payload != digest_of(hash) {
            return Err(CertificateError::WrongBlock);
        }
        if !finalization.verify(&mut rand::rng(), &self.scheme, &Sequential) {
            return Err(CertificateError::BadSignatures);
        }
        Ok(())
    }
}
