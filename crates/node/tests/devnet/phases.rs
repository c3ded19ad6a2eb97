//! The DHT's phase validator, driven by the chain's heads, enforces every
//! window: a staked node cannot write a consensus record outside it.

use std::time::Duration;

use hypertensor_consensus::phase::RecordKind;
use hypertensor_p2p::{P2pError, RejectKind, RejectReason, SignedEntry, now_ms};

use crate::honest::honest;
use crate::scenario::record_value;

#[test]
fn a_staked_node_cannot_write_a_consensus_record_outside_its_window() {
    let s = honest();
    s.runtime.block_on(async {
        let devnet = &s.devnet;
        let (member, node) = &devnet.nodes[0];
        let epoch = devnet.chain.epoch_info().await.unwrap().epoch;
        let genesis = devnet.chain.health().await.unwrap().genesis_hash;
        let before: u64 = devnet
            .nodes
            .iter()
            .map(|(_, n)| n.p2p.metrics().rejected(RejectKind::OutOfPhase))
            .sum();
        // Records of an epoch five epochs ahead are never open now, nor are
        // those of an epoch long past.
        let mut keys = Vec::new();
        for kind in RecordKind::ALL {
            for e in [epoch + 5, epoch.saturating_sub(5)] {
                let key = kind.key(e);
                let value = record_value(kind);
                let local = node.p2p.store(&key, value.clone(), now_ms() + 60_000).await;
                assert!(
                    matches!(local, Err(P2pError::Rejected(RejectReason::OutOfPhase))),
                    "{}: {key}: {local:?}",
                    member.name
                );
                let entry =
                    SignedEntry::sign(&member.identity, &genesis, &key, value, now_ms() + 60_000);
                let _ = node.p2p.publish_entry(&key, entry).await;
                keys.push(key);
            }
        }
        tokio::time::sleep(Duration::from_millis(crate::scenario::BLOCK_MS * 3)).await;
        for key in &keys {
            let dict = devnet.nodes[1].1.p2p.get(key).await.unwrap();
            assert!(dict.is_empty(), "{key} was stored out of its window");
        }
        let after: u64 = devnet
            .nodes
            .iter()
            .map(|(_, n)| n.p2p.metrics().rejected(RejectKind::OutOfPhase))
            .sum();
        assert!(after >= before + keys.len() as u64, "{before} -> {after}");
    });
}
