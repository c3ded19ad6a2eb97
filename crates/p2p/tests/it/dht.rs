//! Dictionary records across a network of 20+ real nodes.

use std::time::Duration;

use hypertensor_p2p::{
    P2pError, RejectKind, RejectReason, SignedEntry, now_ms, record::peer_id_of,
};

use crate::harness::{GENESIS, key, network, stake_set, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_get_across_the_network_merge_writers() {
    let stake = stake_set(20, &[]);
    let nodes = network(20, &stake, |_| {}).await;
    let exp = now_ms() + 30_000;
    nodes[3]
        .client
        .store("open/model.0", b"three".to_vec(), exp)
        .await
        .unwrap();
    nodes[5]
        .client
        .store("open/model.0", b"five".to_vec(), exp)
        .await
        .unwrap();
    wait_for(Duration::from_secs(5), || async {
        nodes[7].client.get("open/model.0").await.unwrap().len() == 2
    })
    .await;
    for reader in [7, 15, 19] {
        let dict = nodes[reader].client.get("open/model.0").await.unwrap();
        assert_eq!(dict.len(), 2, "reader {reader} sees both writers");
        assert_eq!(dict.get(&nodes[3].peer_id()).unwrap().value, b"three");
        assert_eq!(dict.get(&nodes[5].peer_id()).unwrap().value, b"five");
        for e in dict.entries() {
            e.verify(&GENESIS, "open/model.0").unwrap();
        }
    }
    assert!(
        nodes[9]
            .client
            .get("open/missing")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_expiration_wins_and_older_writes_never_replace() {
    let stake = stake_set(20, &[]);
    let nodes = network(20, &stake, |_| {}).await;
    let writer = key("node4");
    let k = "open/merge";
    let now = now_ms();
    nodes[4]
        .client
        .store(k, b"v1".to_vec(), now + 10_000)
        .await
        .unwrap();
    nodes[4]
        .client
        .store(k, b"v2".to_vec(), now + 20_000)
        .await
        .unwrap();
    wait_for(Duration::from_secs(5), || async {
        let dict = nodes[11].client.get(k).await.unwrap();
        dict.get(&nodes[4].peer_id())
            .is_some_and(|e| e.value == b"v2")
    })
    .await;
    // A validly signed but older write, and one with an equal expiration,
    // relayed by another node: neither replaces v2 anywhere.
    let older = SignedEntry::sign(&writer, &GENESIS, k, b"old".to_vec(), now + 15_000);
    let equal = SignedEntry::sign(&writer, &GENESIS, k, b"same".to_vec(), now + 20_000);
    nodes[8].client.publish_entry(k, older).await.unwrap();
    nodes[8].client.publish_entry(k, equal).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for reader in [2, 13] {
        let dict = nodes[reader].client.get(k).await.unwrap();
        assert_eq!(dict.get(&nodes[4].peer_id()).unwrap().value, b"v2");
    }
    // A strictly later one does.
    let newer = SignedEntry::sign(&writer, &GENESIS, k, b"v3".to_vec(), now + 25_000);
    nodes[8].client.publish_entry(k, newer).await.unwrap();
    wait_for(Duration::from_secs(5), || async {
        nodes[13]
            .client
            .get(k)
            .await
            .unwrap()
            .get(&nodes[4].peer_id())
            .unwrap()
            .value
            == b"v3"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_entries_are_dropped_and_evicted() {
    let stake = stake_set(20, &[]);
    let nodes = network(20, &stake, |c| {
        c.eviction_interval = Duration::from_millis(100)
    })
    .await;
    let k = "open/short";
    // Long enough for two stores on a loaded machine (a store takes up to
    // ~1 s with several 20-node networks testing at once on 2 cores).
    let brief = now_ms() + 6_000;
    nodes[1]
        .client
        .store(k, b"brief".to_vec(), brief)
        .await
        .unwrap();
    nodes[2]
        .client
        .store(k, b"long".to_vec(), now_ms() + 30_000)
        .await
        .unwrap();
    // A put is acknowledged on delivery; holders validate and merge it a
    // moment later.
    wait_for(Duration::from_secs(5), || async {
        nodes[6].client.get(k).await.unwrap().len() == 2
    })
    .await;
    assert!(
        now_ms() < brief,
        "the machine was too slow for this test's timing"
    );
    let wait = brief.saturating_sub(now_ms()) + 200;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let dict = nodes[6].client.get(k).await.unwrap();
    assert_eq!(dict.len(), 1);
    assert!(dict.get(&nodes[2].peer_id()).is_some());
    // Holders evicted the expired entry from their own stores.
    for node in &nodes {
        if let Some(local) = node.client.local_dictionary(k).await.unwrap() {
            assert!(local.get(&nodes[1].peer_id()).is_none());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_the_departure_of_their_first_holders() {
    let stake = stake_set(24, &[]);
    let nodes = network(24, &stake, |c| {
        c.replication_factor = 4;
        c.republish_interval = Duration::from_millis(300);
    })
    .await;
    let k = "open/durable";
    let writer = 0;
    nodes[writer]
        .client
        .store(k, b"keep".to_vec(), now_ms() + 30_000)
        .await
        .unwrap();
    let mut holders = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if i != writer && node.client.local_dictionary(k).await.unwrap().is_some() {
            holders.push(i);
        }
    }
    assert!(
        !holders.is_empty(),
        "someone besides the writer holds the record"
    );
    for &i in &holders {
        nodes[i].stop();
    }
    let remaining: Vec<usize> = (1..nodes.len()).filter(|i| !holders.contains(i)).collect();
    // The owner re-publishes to the peers now closest to the key.
    wait_for(Duration::from_secs(10), || async {
        let mut new_holders = 0;
        for &i in &remaining {
            if nodes[i].client.local_dictionary(k).await.unwrap().is_some() {
                new_holders += 1;
            }
        }
        new_holders > 0
    })
    .await;
    let reader = *remaining.last().unwrap();
    let dict = nodes[reader].client.get(k).await.unwrap();
    assert_eq!(dict.get(&nodes[writer].peer_id()).unwrap().value, b"keep");
}

/// Sum of one rejection counter over all nodes.
fn rejected(nodes: &[crate::harness::Node], kind: RejectKind) -> u64 {
    nodes
        .iter()
        .map(|n| n.client.metrics().rejected(kind))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_writes_are_rejected_by_holders_and_counted() {
    let stake = stake_set(20, &["writer"]);
    let nodes = network(20, &stake, |c| c.writes_per_epoch = 3).await;
    let relay = &nodes[0].client;
    let alice = key("node1");
    let now = now_ms();
    let sign = |who: &str, k: &str, v: &[u8], exp: u64| {
        SignedEntry::sign(&key(who), &GENESIS, k, v.to_vec(), exp)
    };

    let mut forged = sign("node1", "open/forged", b"real", now + 10_000);
    forged.value = b"fake".to_vec();
    let mut not_owner = sign("node2", "open/owner", b"x", now + 10_000);
    not_owner.subkey = peer_id_of(&alice);
    let cases = [
        ("open/forged", forged, RejectKind::BadSignature),
        ("open/owner", not_owner, RejectKind::BadSignature),
        (
            "open/expired",
            sign("node1", "open/expired", b"x", now - 1_000),
            RejectKind::Expired,
        ),
        (
            "open/ttl",
            sign("node1", "open/ttl", b"x", now + 120_000),
            RejectKind::TtlTooLong,
        ),
        (
            "small/big",
            sign("node1", "small/big", b"123456789", now + 10_000),
            RejectKind::Oversized,
        ),
        (
            "closed/phase",
            sign("node1", "closed/phase", b"x", now + 10_000),
            RejectKind::OutOfPhase,
        ),
        (
            "open/unstaked",
            sign("mallory", "open/unstaked", b"x", now + 10_000),
            RejectKind::NotStaked,
        ),
        (
            "unknown/key",
            sign("node1", "unknown/key", b"x", now + 10_000),
            RejectKind::UnknownKey,
        ),
    ];
    for (k, entry, kind) in cases {
        let before = rejected(&nodes, kind);
        relay.publish_entry(k, entry).await.unwrap();
        wait_for(Duration::from_secs(5), || async {
            rejected(&nodes, kind) > before
        })
        .await;
        assert!(
            nodes[7].client.get(k).await.unwrap().is_empty(),
            "{k} must not be stored"
        );
    }
    assert!(rejected(&nodes, RejectKind::BadSignature) >= 2);

    // Write limit: 3 writes per writer per epoch on each holder.
    for i in 1..=5u64 {
        let entry = sign(
            "writer",
            "open/limit",
            format!("w{i}").as_bytes(),
            now + 10_000 + i,
        );
        relay.publish_entry("open/limit", entry).await.unwrap();
    }
    wait_for(Duration::from_secs(5), || async {
        rejected(&nodes, RejectKind::WriteLimit) > 0
    })
    .await;
    let dict = nodes[9].client.get("open/limit").await.unwrap();
    assert_eq!(dict.get(&peer_id_of(&key("writer"))).unwrap().value, b"w3");

    // The local store API refuses the same writes before sending anything.
    let (n, m) = (&nodes[5].client, nodes[5].client.metrics());
    let before = m.rejected(RejectKind::Oversized);
    match n.store("small/x", vec![0; 9], now_ms() + 1000).await {
        Err(P2pError::Rejected(RejectReason::Oversized { size: 9, limit: 8 })) => {}
        other => panic!("expected oversized rejection, got {other:?}"),
    }
    assert_eq!(m.rejected(RejectKind::Oversized), before + 1);
    assert!(matches!(
        n.store("open/x", vec![1], now_ms() + 600_000).await,
        Err(P2pError::Rejected(RejectReason::TtlTooLong { .. }))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unstaked_node_cannot_write() {
    let stake = stake_set(20, &[]);
    let mut nodes = network(20, &stake, |_| {}).await;
    let mut cfg = crate::harness::config("mallory", stake.clone());
    cfg.bootstrap = vec![nodes[0].addr.clone()];
    let mallory = crate::harness::spawn(cfg).await;
    assert!(matches!(
        mallory
            .client
            .store("open/m", b"x".to_vec(), now_ms() + 5_000)
            .await,
        Err(P2pError::Rejected(RejectReason::NotStaked))
    ));
    nodes.push(mallory);
    let entry = SignedEntry::sign(
        &key("mallory"),
        &GENESIS,
        "open/m",
        b"x".to_vec(),
        now_ms() + 5_000,
    );
    nodes[20]
        .client
        .publish_entry("open/m", entry)
        .await
        .unwrap();
    wait_for(Duration::from_secs(5), || async {
        rejected(&nodes, RejectKind::NotStaked) > 1
    })
    .await;
    assert!(nodes[3].client.get("open/m").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_replicate_records_after_the_writer_and_first_holders_leave() {
    let stake = stake_set(24, &[]);
    let nodes = network(24, &stake, |c| {
        c.replication_factor = 4;
        c.replication_interval = Some(Duration::from_millis(400));
    })
    .await;
    let k = "open/orphan";
    let writer = 0;
    nodes[writer]
        .client
        .store(k, b"orphan".to_vec(), now_ms() + 30_000)
        .await
        .unwrap();
    // A put is acknowledged on delivery, before the holder has validated
    // and stored it: wait until at least two holders have it.
    let holders_of = || async {
        let mut holders = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            if i != writer && node.client.local_dictionary(k).await.unwrap().is_some() {
                holders.push(i);
            }
        }
        holders
    };
    wait_for(Duration::from_secs(10), || async {
        holders_of().await.len() >= 2
    })
    .await;
    let mut holders = holders_of().await;
    assert!(
        holders.len() >= 2,
        "the record has several holders: {holders:?}"
    );
    // The writer and all first holders but one leave.
    let last = holders.pop().unwrap();
    nodes[writer].stop();
    for &i in &holders {
        nodes[i].stop();
    }
    let others: Vec<usize> = (1..nodes.len())
        .filter(|i| !holders.contains(i) && *i != last)
        .collect();
    // The last first holder replicates to the peers now closest to the key.
    wait_for(Duration::from_secs(10), || async {
        let mut n = 0;
        for &i in &others {
            if nodes[i].client.local_dictionary(k).await.unwrap().is_some() {
                n += 1;
            }
        }
        n >= 2
    })
    .await;
    nodes[last].stop();
    let reader = *others.last().unwrap();
    let dict = nodes[reader].client.get(k).await.unwrap();
    assert_eq!(dict.get(&nodes[writer].peer_id()).unwrap().value, b"orphan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_addresses_reach_other_peers() {
    let stake = stake_set(2, &[]);
    let public: hypertensor_p2p::Multiaddr = "/ip4/203.0.113.7/tcp/4001".parse().unwrap();
    let mut cfg = crate::harness::config("node0", stake.clone());
    cfg.announce = vec![public.clone()];
    let announcer = crate::harness::spawn(cfg).await;
    let mut cfg = crate::harness::config("node1", stake);
    cfg.bootstrap = vec![announcer.addr.clone()];
    let other = crate::harness::spawn(cfg).await;
    let public = public.with_p2p(announcer.peer_id()).unwrap();
    wait_for(Duration::from_secs(5), || async {
        other
            .client
            .addresses_of(announcer.peer_id())
            .await
            .unwrap()
            .contains(&public)
    })
    .await;
}
