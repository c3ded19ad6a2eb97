//! Evidence of a validator's conflicting votes: two signed messages for
//! one round that an honest validator never sends together.
//!
//! simplex reports `ConflictingNotarize`, `ConflictingFinalize` and
//! `NullifyFinalize`; each is checked against the validator set before
//! it becomes an [`Evidence`] record, so a record always holds both
//! signatures and anyone with the genesis can verify it again.

use std::sync::Arc;

use commonware_actor::Feedback;
use commonware_codec::Encode;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_consensus::simplex::types::Activity;
use commonware_consensus::{Epochable, Reporter, Viewable};
use commonware_cryptography::certificate::Scheme as _;
use commonware_cryptography::sha256::Digest;
use commonware_parallel::Sequential;
use commonware_utils::Participant;
use commonware_utils::ordered::Quorum as _;
use hypertensor_primitives::AccountId;
use serde::Serialize;

use crate::app::{Host, account_of};

/// Which two messages conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// Notarize votes for two different proposals in one round.
    ConflictingNotarize,
    /// Finalize votes for two different proposals in one round.
    ConflictingFinalize,
    /// A nullify and a finalize vote in one round.
    NullifyFinalize,
}

/// A verified record of conflicting votes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// What conflicts.
    pub kind: EvidenceKind,
    /// The validator that signed both.
    pub validator: AccountId,
    /// Consensus epoch of the round.
    pub epoch: u64,
    /// View of the round.
    pub view: u64,
    /// commonware's encoding of the pair (both signed messages), hex.
    pub encoded: String,
}

/// simplex's reporter that turns conflicting-vote activity into
/// [`Evidence`] for the host, and hands it each finalization certificate
/// (what full nodes verify finality with).
#[derive(Clone)]
pub struct EvidenceReporter {
    scheme: Scheme,
    host: Arc<dyn Host>,
}

impl EvidenceReporter {
    /// A reporter that checks evidence against `scheme`'s validator set.
    pub fn new(scheme: Scheme, host: Arc<dyn Host>) -> EvidenceReporter {
        EvidenceReporter { scheme, host }
    }

    fn record(&self, kind: EvidenceKind, signer: Participant, activity: &Activity<Scheme, Digest>) {
        let mut rng = rand::rng();
        if !activity.verify(&mut rng, &self.scheme, &Sequential) {
            tracing::warn!(
                ?kind,
                "conflicting votes whose signatures do not verify: ignored"
            );
            return;
        }
        let Some(key) = self.scheme.participants().key(signer) else {
            return;
        };
        let evidence = Evidence {
            kind,
            validator: account_of(key),
            epoch: activity.epoch().get(),
            view: activity.view().get(),
            encoded: hex::encode(activity.encode()),
        };
        tracing::warn!(
            validator = %evidence.validator,
            view = evidence.view,
            kind = ?kind,
            "validator signed conflicting votes"
        );
        self.host.evidence(evidence);
    }
}

impl Reporter for EvidenceReporter {
    type Activity = Activity<Scheme, Digest>;

    fn report(&mut self, activity: Activity<Scheme, Digest>) -> Feedback {
        use commonware_consensus::simplex::types::Attributable as _;
        match &activity {
            Activity::ConflictingNotarize(c) => {
                self.record(EvidenceKind::ConflictingNotarize, c.signer(), &activity)
            }
            Activity::ConflictingFinalize(c) => {
                self.record(EvidenceKind::ConflictingFinalize, c.signer(), &activity)
            }
            Activity::NullifyFinalize(c) => {
                self.record(EvidenceKind::NullifyFinalize, c.signer(), &activity)
            }
            // Certificates arrive verified; full nodes check them again.
            Activity::Finalization(f) => self.host.finalization(
                crate::block::hash_of(&f.proposal.payload),
                f.encode().to_vec(),
            ),
            _ => {}
        }
        Feedback::Ok
    }
}
