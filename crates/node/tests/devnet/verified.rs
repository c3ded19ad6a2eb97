//! Verified serving end to end (2 validators, 3 hosters of the whole
//! model, the real chain): a hoster that answers the consensus challenge
//! honestly but adds noise to what it serves is caught by the gateway's
//! spot checks, the evidence is filed in the DHT by the witnesses, and the
//! hoster scores 0 and is paid nothing for that epoch while the honest
//! hosters are paid. Forged evidence is refused by every peer.

use std::time::Duration;

use hypertensor_consensus::evidence::{Evidence, decode_evidence_record, encode_evidence_record};
use hypertensor_consensus::phase::RecordKind;
use hypertensor_inference::spot_check::Draws;
use hypertensor_inference::{Corruption, ServingFault};
use hypertensor_p2p::{RejectKind, SignedEntry, now_ms};

use crate::scenario::{BLOCK_MS, EPOCH_LENGTH, config, node_rewards, post, run};

/// The gateway's check rate and seed (the first sequence the draws pick
/// is the fourth).
const RATE: f64 = 0.3;
const SEED: u64 = 16;

/// One completion through the gateway's API; the status.
async fn complete(addr: std::net::SocketAddr, prompt: &str) -> u16 {
    let body = format!(r#"{{"model":"smollm2","prompt":"{prompt}","max_tokens":4}}"#);
    let reply = post(addr, "/v1/completions", &body).await;
    reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_hoster_corrupting_what_it_serves_is_caught_and_scores_zero() {
    let mut config = config("verified");
    config.validators = 2;
    config.hosters = Some(3);
    config.blocks_per_hoster = 30;
    // hoster-1 (Included after two epochs, scored as a hoster only)
    // cheats on every session and announces itself fastest, so the
    // gateway routes every request to it.
    config.throughputs.insert("hoster-1".into(), 1000.0);
    config.serving_faults.insert(
        "hoster-1".into(),
        ServingFault {
            corruption: Corruption::Noise { relative: 0.05 },
            share: 1.0,
            seed: 5,
            pushed_only: false,
        },
    );
    config.check_rate = RATE;
    config.check_seed = Some(SEED);
    // Three epochs: hosters are Included (scored) in the third.
    let s = run(config, 3);
    let devnet = &s.devnet;
    let cheater = s.node_id("hoster-1");
    let honest = s.node_id("hoster-2");
    let gateway = devnet
        .gateway
        .swarm
        .clone()
        .expect("the gateway has a client");
    let epoch = s.runtime.block_on(async {
        // Requests until the cheater is convicted; each sequence the
        // draws pick is checked before the next request.
        let mut draws = Draws::new(RATE, Some(SEED));
        let (mut requests, mut checked) = (0, 0);
        while gateway.stats().convictions == 0 {
            requests += 1;
            assert!(requests <= 20, "never caught: {:?}", gateway.stats());
            assert_eq!(
                complete(devnet.api_addr, "The capital of France is").await,
                200
            );
            if draws.next_is_checked() {
                draws.hop(1);
                checked += 1;
                let start = tokio::time::Instant::now();
                while gateway.stats().checks + gateway.stats().checks_skipped < checked {
                    assert!(start.elapsed() < Duration::from_secs(60));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        assert_eq!(requests, 4, "the fourth request is the first checked");
        let stats = gateway.stats();
        assert_eq!((stats.checks, stats.convictions), (1, 1), "{stats:?}");

        // The witnesses file the evidence in this epoch or the next.
        let reader = &devnet.nodes[0].1.p2p;
        let now = devnet.chain.epoch_info().await.unwrap().epoch;
        let start = tokio::time::Instant::now();
        let (epoch, filed) = loop {
            let mut found = None;
            for e in [now, now + 1] {
                let dict = reader.get(&RecordKind::Evidence.key(e)).await.unwrap();
                if let Some(entry) = dict.entries().next() {
                    found = Some((e, entry.value.clone()));
                }
            }
            if let Some(found) = found {
                break found;
            }
            assert!(
                start.elapsed() < Duration::from_millis(BLOCK_MS * EPOCH_LENGTH * 2),
                "no evidence filed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let pieces = decode_evidence_record(&filed).unwrap();
        let cheater_peer = devnet.node("hoster-1").unwrap().1.p2p.peer_id();
        assert_eq!(
            pieces[0].accused.server.as_bytes(),
            cheater_peer.to_bytes().as_slice()
        );

        // Forged evidence, published by a staked validator that is no
        // witness, is refused by every peer's record validator.
        let (forger, forger_node) = devnet.node("validator-0").unwrap();
        let genesis = devnet.chain.health().await.unwrap().genesis_hash;
        let innocent = devnet.node("hoster-2").unwrap().1.p2p.peer_id();
        let forgeries: Vec<Evidence> = vec![
            {
                let mut f = pieces[0].clone();
                f.accused.signature.0[0] ^= 1;
                f
            },
            {
                let mut f = pieces[0].clone();
                f.witnesses[0].session[0] ^= 1;
                f
            },
            {
                let mut f = pieces[0].clone();
                f.accused.server =
                    hypertensor_primitives::PeerId::from_bytes(&innocent.to_bytes()).unwrap();
                f
            },
        ];
        let before: u64 = devnet
            .nodes
            .iter()
            .map(|(_, n)| n.p2p.metrics().rejected(RejectKind::BadValue))
            .sum();
        let key = RecordKind::Evidence.key(epoch);
        for forged in &forgeries {
            let value = encode_evidence_record(std::slice::from_ref(forged));
            let entry =
                SignedEntry::sign(&forger.identity, &genesis, &key, value, now_ms() + 60_000);
            let _ = forger_node.p2p.publish_entry(&key, entry).await;
        }
        tokio::time::sleep(Duration::from_millis(BLOCK_MS * 3)).await;
        let forger_peer = forger_node.p2p.peer_id();
        for (member, node) in &devnet.nodes {
            let dict = node.p2p.get(&key).await.unwrap();
            assert!(
                dict.get(&forger_peer).is_none(),
                "{} holds forged evidence",
                member.name
            );
        }
        let after: u64 = devnet
            .nodes
            .iter()
            .map(|(_, n)| n.p2p.metrics().rejected(RejectKind::BadValue))
            .sum();
        assert!(
            after > before,
            "forgeries refused as bad values: {before} -> {after}"
        );

        // The epoch the evidence counts for settles with the cheater at 0.
        let mut heads = devnet.chain.subscribe_new_heads().await.unwrap();
        let budget = Duration::from_millis(BLOCK_MS * EPOCH_LENGTH * 4);
        tokio::time::timeout(budget, async {
            while heads.next().await.unwrap().unwrap().header.height <= (epoch + 1) * EPOCH_LENGTH {
            }
        })
        .await
        .expect("the epoch settles");
        let report = devnet.epoch_report(epoch).await.unwrap();
        eprintln!("{report:?}");
        let score = |name: &str| {
            report
                .nodes
                .iter()
                .find(|n| n.name == name)
                .and_then(|n| n.score)
        };
        assert_eq!(score("hoster-1"), Some(0), "the convicted hoster scores 0");
        assert!(
            score("hoster-2").is_some_and(|s| s > 0),
            "the honest hoster is scored"
        );
        epoch
    });
    let rewards = node_rewards(&s.settlement_events(epoch));
    assert_eq!(
        rewards.get(&cheater).copied().unwrap_or(0),
        0,
        "{rewards:?}"
    );
    assert!(
        rewards.get(&honest).copied().unwrap_or(0) > 0,
        "{rewards:?}"
    );
    // Before it was caught, the cheater scored as an honest hoster: it
    // answered every challenge exactly.
    let last = s.reports.last().unwrap();
    let before = |name: &str| {
        last.nodes
            .iter()
            .find(|n| n.name == name)
            .and_then(|n| n.score)
    };
    assert!(before("hoster-1").is_some_and(|c| c > 0), "{last:?}");
}
