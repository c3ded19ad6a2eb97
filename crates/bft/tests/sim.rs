//! The replicated chain under many schedules: four validators running the
//! real runtime through simplex and marshal, in commonware's deterministic
//! runtime over its simulated network (latency, jitter, loss, partitions),
//! with Byzantine validators. Every scenario runs over many seeds; each
//! checks that honest validators finalize the same blocks with the same
//! state roots, that no invalid block is finalized, and that finality
//! continues (or returns after a partition heals).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use commonware_consensus::simplex::mocks::{conflicter, nuller};
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_cryptography::ed25519::PublicKey;
use commonware_cryptography::{Sha256, Signer as _};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::{Clock, Quota, Runner as _, Supervisor as _, deterministic};
use commonware_utils::{NZU32, NZUsize, probability};
use hypertensor_bft::engine::{
    CHANNEL_BACKFILL, CHANNEL_BLOCKS, CHANNEL_CERTIFICATES, CHANNEL_RESOLVER, CHANNEL_VOTES,
};
use hypertensor_bft::keys::{consensus_key, participants};
use hypertensor_bft::{
    BlockCodec, ChainBlock, Channels, Evidence, EvidenceKind, Executed, FinalityVerifier, Host,
    Timing, ValidatorConfig, namespace, start_validator,
};
use hypertensor_primitives::{AccountId, H256, Keypair, TENSOR};
use hypertensor_runtime::{
    BlockBuilder, BuiltBlock, Call, ChainValidator, Extrinsic, GenesisConfig, State,
};

const VALIDATORS: usize = 4;
/// Seeds per scenario in the default test run (225 in all);
/// `HYPERTENSOR_BFT_SEEDS` sets another count.
fn seeds() -> u64 {
    std::env::var("HYPERTENSOR_BFT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
}

/// What a Byzantine validator does instead of following the protocol.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Sends conflicting notarize and finalize votes (simplex's conflicter).
    Conflicting,
    /// Votes nullify and finalize in one round (simplex's nuller).
    NullifyFinalize,
    /// Runs the real engine but proposes blocks with a wrong state root.
    WrongStateRoot,
}

/// The finalized chain of one validator, in memory.
struct Ledger {
    finalized: Mutex<Arc<State>>,
    committed: Mutex<Vec<(H256, H256, AccountId)>>,
    pool: Vec<Extrinsic>,
    evidence: Mutex<Vec<Evidence>>,
    corrupt: bool,
    proposals: std::sync::atomic::AtomicU64,
    certificates: Mutex<Vec<(H256, Vec<u8>)>>,
}

impl Ledger {
    fn new(genesis: &BuiltBlock, pool: Vec<Extrinsic>, corrupt: bool) -> Arc<Ledger> {
        Arc::new(Ledger {
            finalized: Mutex::new(Arc::new(genesis.state.clone())),
            committed: Mutex::new(Vec::new()),
            pool,
            evidence: Mutex::new(Vec::new()),
            corrupt,
            proposals: Default::default(),
            certificates: Mutex::new(Vec::new()),
        })
    }

    fn height(&self) -> u64 {
        self.finalized.lock().unwrap().height()
    }
}

impl Host for Ledger {
    fn finalized(&self) -> Arc<State> {
        Arc::clone(&self.finalized.lock().unwrap())
    }

    fn build(
        &self,
        parent: &State,
        author: AccountId,
        timestamp_ms: u64,
    ) -> hypertensor_runtime::Result<BuiltBlock> {
        self.proposals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut builder = BlockBuilder::new(parent, author, timestamp_ms)?;
        for xt in &self.pool {
            // Extrinsics already used (stale nonce) are refused and skipped.
            let _ = builder.push(xt.clone());
        }
        let mut built = builder.finish();
        if self.corrupt {
            built.block.header.state_root = H256([0xEE; 32]);
        }
        Ok(built)
    }

    fn commit(&self, block: &ChainBlock, executed: &Executed) -> Result<(), String> {
        let mut finalized = self.finalized.lock().unwrap();
        if block.block().header.parent_hash != finalized.best_hash() {
            return Err(format!(
                "block {} does not extend the finalized tip",
                block.number()
            ));
        }
        *finalized = Arc::clone(&executed.state);
        self.committed.lock().unwrap().push((
            block.hash(),
            block.block().header.state_root,
            block.block().header.author,
        ));
        Ok(())
    }

    fn finalization(&self, hash: H256, certificate: Vec<u8>) {
        self.certificates.lock().unwrap().push((hash, certificate));
    }

    fn evidence(&self, evidence: Evidence) {
        self.evidence.lock().unwrap().push(evidence);
    }
}

struct Setup {
    keys: Vec<Keypair>,
    genesis: BuiltBlock,
    pool: Vec<Extrinsic>,
}

fn setup() -> Setup {
    let keys: Vec<Keypair> = (0..VALIDATORS)
        .map(|i| Keypair::dev(&format!("validator-{i}")))
        .collect();
    let mut config = GenesisConfig::dev();
    config.validators = keys
        .iter()
        .enumerate()
        .map(|(i, k)| ChainValidator {
            account: k.account_id(),
            address: format!("10.0.0.{i}:4000"),
        })
        .collect();
    let genesis = config.build().unwrap();
    let alice = Keypair::dev("alice");
    let bob = Keypair::dev("bob").account_id();
    let pool = (0..12)
        .map(|nonce| {
            Extrinsic::sign(
                &alice,
                nonce,
                Call::Transfer {
                    to: bob,
                    amount: TENSOR,
                },
                &genesis.state.genesis_hash(),
            )
        })
        .collect();
    Setup {
        keys,
        genesis,
        pool,
    }
}

const LINK: Link = Link {
    latency: Duration::from_millis(40),
    jitter: Duration::from_millis(20),
    success_rate: probability!(0.95),
};

async fn link_all(
    oracle: &Oracle<PublicKey, deterministic::Context>,
    peers: &[PublicKey],
    link: Option<Link>,
) {
    for a in peers {
        for b in peers {
            if a == b {
                continue;
            }
            let _ = oracle.remove_link(a.clone(), b.clone()).await;
            if let Some(link) = &link {
                oracle
                    .add_link(a.clone(), b.clone(), link.clone())
                    .await
                    .unwrap();
            }
        }
    }
}

/// Runs one seed: starts the validators (validator 0 faulty if `fault`),
/// drives `schedule`, and returns the honest ledgers.
fn run(
    seed: u64,
    fault: Option<Fault>,
    partition: bool,
) -> (Vec<Arc<Ledger>>, Setup, Option<Arc<Ledger>>) {
    let setup = setup();
    let config = deterministic::Config::new()
        .with_seed(seed)
        .with_timeout(Some(Duration::from_secs(600)));
    let genesis = setup.genesis.clone();
    let pool = setup.pool.clone();
    let keys = setup.keys.clone();
    let ledgers = deterministic::Runner::new(config).start(|context| async move {
        let validators = genesis.state.chain_validators().to_vec();
        let set = participants(&validators).unwrap();
        let peers: Vec<PublicKey> = set.iter().cloned().collect();
        let (network, oracle) = Network::new_with_peers(
            context.child("network"),
            simulated::Config {
                max_size: 8 * 1024 * 1024,
                max_peers_per_set: NZUsize!(VALIDATORS + 1),
                disconnect_on_block: false,
                tracked_peer_sets: NZUsize!(1),
            },
            peers.clone(),
        )
        .await;
        network.start();
        link_all(&oracle, &peers, Some(LINK)).await;
        let quota = Quota::per_second(NZU32!(10_000));
        let namespace = namespace(&genesis.state.genesis_hash());
        let mut honest = Vec::new();
        let mut faulty = None;
        for (i, key) in keys.iter().enumerate() {
            let private = consensus_key(key);
            let public = private.public_key();
            let control = oracle.control(public.clone());
            let register = async |channel| control.register(channel, quota).await.unwrap();
            let channels = Channels {
                votes: register(CHANNEL_VOTES).await,
                certificates: register(CHANNEL_CERTIFICATES).await,
                resolver: register(CHANNEL_RESOLVER).await,
                backfill: register(CHANNEL_BACKFILL).await,
                blocks: register(CHANNEL_BLOCKS).await,
            };
            let context = context.child("validator").with_attribute("index", i);
            let scheme = Scheme::signer(&namespace, set.clone(), private.clone()).unwrap();
            match (i, fault) {
                (0, Some(Fault::Conflicting)) => {
                    conflicter::Conflicter::<_, _, Sha256>::new(
                        context.child("byzantine"),
                        conflicter::Config { scheme },
                    )
                    .start(channels.votes);
                    continue;
                }
                (0, Some(Fault::NullifyFinalize)) => {
                    nuller::Nuller::<_, _, Sha256>::new(
                        context.child("byzantine"),
                        nuller::Config { scheme },
                    )
                    .start(channels.votes);
                    continue;
                }
                _ => {}
            }
            let corrupt = i == 0 && fault == Some(Fault::WrongStateRoot);
            let ledger = Ledger::new(&genesis, pool.clone(), corrupt);
            let config = ValidatorConfig {
                namespace: namespace.clone(),
                participants: set.clone(),
                key: private,
                genesis: ChainBlock::new(genesis.block.clone()),
                partition_prefix: format!("validator-{i}"),
                block_codec: BlockCodec::default(),
                timing: Timing::for_block_time(Duration::from_millis(200)),
            };
            start_validator(
                context.child("engine"),
                config,
                ledger.clone(),
                channels,
                oracle.manager(),
                oracle.control(public),
            )
            .await
            .unwrap();
            if corrupt {
                faulty = Some(ledger);
            } else {
                honest.push(ledger);
            }
        }
        let lowest = |ledgers: &[Arc<Ledger>]| ledgers.iter().map(|l| l.height()).min().unwrap();
        let wait_until = async |context: &deterministic::Context, target: u64, limit: Duration| {
            let start = context.current();
            while lowest(&honest) < target {
                if context.current().duration_since(start).unwrap() > limit {
                    panic!(
                        "seed {seed}: finality stalled at {:?} (target {target})",
                        honest.iter().map(|l| l.height()).collect::<Vec<_>>()
                    );
                }
                context.sleep(Duration::from_millis(50)).await;
            }
        };
        wait_until(&context, 8, Duration::from_secs(120)).await;
        if partition {
            // Two against two: neither side has a quorum.
            let (left, right) = peers.split_at(2);
            for a in left {
                for b in right {
                    oracle.remove_link(a.clone(), b.clone()).await.unwrap();
                    oracle.remove_link(b.clone(), a.clone()).await.unwrap();
                }
            }
            context.sleep(Duration::from_secs(2)).await;
            let stalled = honest.iter().map(|l| l.height()).max().unwrap();
            context.sleep(Duration::from_secs(10)).await;
            let after = honest.iter().map(|l| l.height()).max().unwrap();
            assert_eq!(stalled, after, "seed {seed}: a minority side finalized");
            link_all(&oracle, &peers, Some(LINK)).await;
            wait_until(&context, after + 5, Duration::from_secs(120)).await;
        } else {
            wait_until(&context, 16, Duration::from_secs(120)).await;
        }
        (honest, faulty)
    });
    (ledgers.0, setup, ledgers.1)
}

/// The checks every scenario shares.
fn assert_agreement(
    seed: u64,
    honest: &[Arc<Ledger>],
    setup: &Setup,
    bad_author: Option<AccountId>,
) {
    let chains: Vec<Vec<(H256, H256, AccountId)>> = honest
        .iter()
        .map(|l| l.committed.lock().unwrap().clone())
        .collect();
    let shortest = chains.iter().map(Vec::len).min().unwrap();
    for chain in &chains {
        assert_eq!(
            chain[..shortest],
            chains[0][..shortest],
            "seed {seed}: honest validators finalized different blocks"
        );
    }
    // Same heights, same state roots.
    let roots: BTreeSet<H256> = honest
        .iter()
        .filter(|l| l.height() as usize == shortest)
        .map(|l| l.finalized().state_root())
        .collect();
    assert!(
        roots.len() <= 1,
        "seed {seed}: state roots differ at one height"
    );
    if let Some(bad) = bad_author {
        assert!(
            chains.iter().flatten().all(|(_, _, author)| *author != bad),
            "seed {seed}: a block with a wrong state root was finalized"
        );
    }
    // The transfers were all included, each once.
    let state = honest[0].finalized();
    let bob = Keypair::dev("bob").account_id();
    let expected = 1_000_000 * TENSOR + setup.pool.len() as u128 * TENSOR;
    assert_eq!(
        state.account(&bob).free,
        expected,
        "seed {seed}: transfers lost"
    );
}

#[test]
fn honest_validators_agree_under_latency_jitter_and_loss() {
    for seed in 0..seeds() {
        let (honest, setup, _) = run(seed, None, false);
        assert_eq!(honest.len(), VALIDATORS);
        assert_agreement(seed, &honest, &setup, None);
        // What a full node checks: every certificate verifies against
        // the genesis validators, for its block only.
        let verifier = FinalityVerifier::new(
            &setup.genesis.state.genesis_hash(),
            setup.genesis.state.chain_validators(),
        )
        .unwrap();
        let certificates = honest[0].certificates.lock().unwrap().clone();
        assert!(!certificates.is_empty(), "seed {seed}: no certificates");
        for (hash, certificate) in &certificates {
            verifier.verify(hash, certificate).unwrap();
            assert!(verifier.verify(&H256([1; 32]), certificate).is_err());
            let mut forged = certificate.clone();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            assert!(
                verifier.verify(hash, &forged).is_err(),
                "seed {seed}: a forged signature passed"
            );
        }
    }
}

#[test]
fn finality_stops_in_a_partition_and_returns_when_it_heals() {
    for seed in 0..seeds() {
        let (honest, setup, _) = run(1_000 + seed, None, true);
        assert_agreement(seed, &honest, &setup, None);
    }
}

#[test]
fn a_validator_signing_conflicting_votes_is_recorded_and_the_rest_finalize() {
    for seed in 0..seeds() {
        let (honest, setup, _) = run(2_000 + seed, Some(Fault::Conflicting), false);
        assert_agreement(seed, &honest, &setup, None);
        let byzantine = setup.keys[0].account_id();
        let evidence: Vec<Evidence> = honest
            .iter()
            .flat_map(|l| l.evidence.lock().unwrap().clone())
            .collect();
        assert!(!evidence.is_empty(), "seed {seed}: no evidence recorded");
        assert!(evidence.iter().all(|e| e.validator == byzantine));
    }
}

#[test]
fn a_validator_voting_nullify_and_finalize_is_recorded() {
    for seed in 0..seeds().div_ceil(2) {
        let (honest, setup, _) = run(3_000 + seed, Some(Fault::NullifyFinalize), false);
        assert_agreement(seed, &honest, &setup, None);
        let byzantine = setup.keys[0].account_id();
        let evidence: Vec<Evidence> = honest
            .iter()
            .flat_map(|l| l.evidence.lock().unwrap().clone())
            .collect();
        assert!(
            evidence
                .iter()
                .any(|e| e.kind == EvidenceKind::NullifyFinalize && e.validator == byzantine),
            "seed {seed}: no nullify-finalize evidence"
        );
    }
}

#[test]
fn blocks_with_a_wrong_state_root_are_never_finalized() {
    for seed in 0..seeds() {
        let (honest, setup, faulty) = run(4_000 + seed, Some(Fault::WrongStateRoot), false);
        assert_eq!(honest.len(), VALIDATORS - 1);
        let faulty = faulty.unwrap();
        assert!(
            faulty.proposals.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "seed {seed}: the faulty validator never proposed"
        );
        let bad = setup.keys[0].account_id();
        assert_agreement(seed, &honest, &setup, Some(bad));
    }
}
