//! The DHT schemas of the consensus records (SPEC §6).

use std::time::Duration;

use hypertensor_consensus::evidence::{MAX_EVIDENCE_BYTES, verify_evidence_record};
use hypertensor_consensus::phase::RecordKind;
use hypertensor_consensus::records::{
    Challenge, HosterReveal, MAX_REVEAL_BLOCKS, MAX_REVEAL_SCORES, SKETCH_LEN, ValidatorReveal,
    decode_commit,
};
use hypertensor_p2p::{KeySchema, SchemaRegistry};
use hypertensor_primitives::H256;

/// Largest hoster reveal: salt, span, count and every sketch of the
/// largest span.
const MAX_HOSTER_REVEAL_BYTES: usize = 16 + 4 + 4 + 4 + MAX_REVEAL_BLOCKS * SKETCH_LEN * 4;
/// Largest validator reveal: salt, count and `(u32, f64)` per node.
const MAX_VALIDATOR_REVEAL_BYTES: usize = 16 + 4 + MAX_REVEAL_SCORES * 12;

/// Adds the six consensus key prefixes to `registry`, each value checked
/// by the consensus crate's bounded decoder, living at most `max_ttl`
/// (a few epochs: records are read in their epoch and the next). Evidence
/// (`evidence/<e>`) is verified in full: every receipt's signature in
/// `genesis`'s domain and the disagreement it claims, for `model`'s
/// outputs of `hidden_size`, so no peer stores or serves an accusation
/// that does not hold (whether its servers are the subnet's scored nodes
/// is judged when scoring).
pub fn with_consensus_schemas(
    registry: SchemaRegistry,
    max_ttl: Duration,
    genesis: H256,
    model: &str,
    hidden_size: usize,
) -> SchemaRegistry {
    let model = model.to_string();
    fn check<T: 'static, E: std::fmt::Display + 'static>(
        decode: fn(&[u8]) -> Result<T, E>,
    ) -> impl Fn(&[u8]) -> Result<(), String> + Send + Sync + 'static {
        move |bytes| decode(bytes).map(|_| ()).map_err(|e| e.to_string())
    }
    let prefix = |kind: RecordKind| format!("{}/", kind.prefix());
    registry
        .register(KeySchema::typed(
            &prefix(RecordKind::Challenge),
            "challenge",
            36,
            max_ttl,
            check(Challenge::decode),
        ))
        .register(KeySchema::typed(
            &prefix(RecordKind::HosterCommit),
            "hoster commit",
            32,
            max_ttl,
            check(decode_commit),
        ))
        .register(KeySchema::typed(
            &prefix(RecordKind::HosterReveal),
            "hoster reveal",
            MAX_HOSTER_REVEAL_BYTES,
            max_ttl,
            check(HosterReveal::decode),
        ))
        .register(KeySchema::typed(
            &prefix(RecordKind::ValidatorCommit),
            "validator commit",
            32,
            max_ttl,
            check(decode_commit),
        ))
        .register(KeySchema::typed(
            &prefix(RecordKind::ValidatorReveal),
            "validator reveal",
            MAX_VALIDATOR_REVEAL_BYTES,
            max_ttl,
            check(ValidatorReveal::decode),
        ))
        .register(KeySchema::typed(
            &prefix(RecordKind::Evidence),
            "evidence",
            MAX_EVIDENCE_BYTES,
            max_ttl,
            move |bytes| {
                verify_evidence_record(bytes, &genesis, &model, hidden_size)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        ))
}
