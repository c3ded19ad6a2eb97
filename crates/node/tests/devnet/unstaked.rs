//! A peer with no stake cannot write any consensus record: its own node
//! refuses the write, and when it sends signed entries to the subnet's
//! nodes anyway, every one of them drops them for want of stake.

use std::collections::BTreeSet;
use std::time::Duration;

use hypertensor_consensus::phase::{PhaseParams, Position, RecordKind, Writer};
use hypertensor_node::{NodeBuilder, NodeOptions, chain_peer_id};
use hypertensor_p2p::{P2pError, RejectKind, RejectReason, SignedEntry, now_ms};
use hypertensor_primitives::Keypair;

use crate::honest::honest;
use crate::scenario::{EPOCH_LENGTH, model_path, record_value};

#[test]
fn a_peer_without_stake_cannot_write_any_consensus_record() {
    let s = honest();
    s.runtime.block_on(async {
        let devnet = &s.devnet;
        let keypair = Keypair::from_secret([0x5a; 32]);
        let mut options = NodeOptions::new(
            keypair.clone(),
            devnet.subnet,
            &devnet.chain_url,
            model_path(),
        );
        options.consensus = false;
        options.bootstrap = devnet.nodes[0].1.dial_addrs().await.unwrap();
        let mut attacker = NodeBuilder::new(options).start().await.unwrap();
        let me = chain_peer_id(&attacker.p2p.peer_id()).unwrap();
        let genesis = devnet.chain.health().await.unwrap().genesis_hash;
        let not_staked_before: u64 = devnet
            .nodes
            .iter()
            .map(|(_, n)| n.p2p.metrics().rejected(RejectKind::NotStaked))
            .sum();

        // Try each kind inside its window (peers a block ahead or behind
        // still see it open, within the phase validator's grace), so only
        // the missing stake can refuse it.
        let phases = PhaseParams::default();
        let mut heads = devnet.chain.subscribe_new_heads().await.unwrap();
        let mut tried: BTreeSet<String> = BTreeSet::new();
        let mut kinds: BTreeSet<&str> = BTreeSet::new();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(crate::scenario::BLOCK_MS * EPOCH_LENGTH * 4);
        while kinds.len() < RecordKind::ALL.len() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "tried only {kinds:?}"
            );
            let height = heads.next().await.unwrap().unwrap().header.height;
            let pos = Position::at(height, EPOCH_LENGTH).unwrap();
            for (kind, epoch) in phases.open_records(pos, Writer::ElectedValidator) {
                let window = phases.window(kind).blocks(epoch, EPOCH_LENGTH);
                if !window.contains(&height) {
                    continue;
                }
                let key = kind.key(epoch);
                if !tried.insert(key.clone()) {
                    continue;
                }
                kinds.insert(kind.prefix());
                let expiration = now_ms() + 60_000;
                let local = attacker
                    .p2p
                    .store(&key, record_value(kind), expiration)
                    .await;
                assert!(
                    matches!(local, Err(P2pError::Rejected(RejectReason::NotStaked))),
                    "{key}: {local:?}"
                );
                let entry =
                    SignedEntry::sign(&keypair, &genesis, &key, record_value(kind), expiration);
                let _ = attacker.p2p.publish_entry(&key, entry).await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for key in &tried {
            for (member, node) in &devnet.nodes {
                let dict = node.p2p.get(key).await.unwrap();
                assert!(
                    dict.entries()
                        .all(|e| chain_peer_id(&e.subkey).unwrap() != me),
                    "{} holds the unstaked peer's {key}",
                    member.name
                );
            }
        }
        let not_staked_after: u64 = devnet
            .nodes
            .iter()
            .map(|(_, n)| n.p2p.metrics().rejected(RejectKind::NotStaked))
            .sum();
        assert!(
            not_staked_after >= not_staked_before + tried.len() as u64,
            "{not_staked_before} -> {not_staked_after} rejections for want of stake"
        );
        attacker.stop().await;
    });
}
