//! A validator in a real process: commonware's tokio runtime on a thread
//! of its own (it builds and owns its runtime, so it cannot share the
//! node's), `p2p::authenticated::lookup` between the genesis validators'
//! addresses, and the consensus store in a directory.
//!
//! The node talks to it only through the [`Host`] it hands in and the
//! [`ConsensusThread`] handle (stop, wait).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use commonware_consensus::simplex;
use commonware_consensus::simplex::scheme::ed25519::Scheme;
use commonware_cryptography::sha256::Digest;
use commonware_cryptography::{ChaCha20Poly1305, Signer as _};
use commonware_p2p::authenticated::lookup;
use commonware_p2p::{Address, AddressableManager as _};
use commonware_runtime::{Quota, Runner as _, Spawner as _, Supervisor as _};
use commonware_stream::cups::{self, Cups};
use commonware_stream::sake::{self, Sake};
use commonware_utils::channel::{mpsc, oneshot};
use commonware_utils::ordered::Map;
use commonware_utils::{NZU32, NZUsize};
use hypertensor_primitives::{AccountId, Keypair};
use hypertensor_runtime::ChainValidator;

use crate::app::Host;
use crate::block::{BlockCodec, ChainBlock};
use crate::engine::{
    CHANNEL_BACKFILL, CHANNEL_BLOCKS, CHANNEL_CERTIFICATES, CHANNEL_HELLO, CHANNEL_RESOLVER,
    CHANNEL_TRANSACTIONS, CHANNEL_VOTES, Channels, StartError, Timing, ValidatorConfig, namespace,
    start_validator,
};
use crate::finalizer::FinalizerError;
use crate::keys::{BadValidatorKey, consensus_key, participants, public_key};

/// How one validator process runs.
#[derive(Clone, Debug)]
pub struct ProcessConfig {
    /// This validator's key (its account in the genesis validator set).
    pub key: Keypair,
    /// The genesis validator set.
    pub validators: Vec<ChainValidator>,
    /// The genesis block.
    pub genesis: ChainBlock,
    /// The P2P socket to listen on; `None` listens on this validator's
    /// genesis address.
    pub listen: Option<SocketAddr>,
    /// Directory of the consensus store (votes, finalized blocks and
    /// certificates).
    pub storage_dir: PathBuf,
    /// Least time between blocks.
    pub block_time: Duration,
    /// Limits of blocks from the network.
    pub block_codec: BlockCodec,
}

/// Why consensus could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// The key is not in the genesis validator set.
    #[error("account {account} is not one of the genesis validators; a validator key must be")]
    NotAValidator {
        /// The key's account.
        account: AccountId,
    },
    /// A genesis validator's account is not a usable key.
    #[error(transparent)]
    BadKey(#[from] BadValidatorKey),
    /// A genesis validator's address is not `ip:port`.
    #[error("validator {account}: address `{address}` is not ip:port")]
    BadAddress {
        /// The validator.
        account: AccountId,
        /// Its address.
        address: String,
    },
    /// The engine would not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Finalization stopped.
    #[error(transparent)]
    Finalizer(#[from] FinalizerError),
    /// An engine task ended.
    #[error("the consensus engine stopped: {0}")]
    Stopped(String),
    /// The thread could not be started.
    #[error("cannot start the consensus thread: {0}")]
    Thread(String),
    /// The other validators run another chain.
    #[error(
        "genesis mismatch: this node's genesis is {ours}, but validators {peers} run genesis {theirs}; \
         refusing to join (use the network's genesis file)"
    )]
    GenesisMismatch {
        /// This node's genesis hash.
        ours: hypertensor_primitives::H256,
        /// Theirs.
        theirs: hypertensor_primitives::H256,
        /// Who said so.
        peers: String,
    },
}

/// Handle of the consensus thread.
pub struct ConsensusThread {
    stop: Option<oneshot::Sender<()>>,
    done: oneshot::Receiver<Result<(), ConsensusError>>,
    thread: Option<std::thread::JoinHandle<()>>,
    listen: SocketAddr,
}

impl std::fmt::Debug for ConsensusThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsensusThread")
            .field("listen", &self.listen)
            .finish()
    }
}

fn socket_of(v: &ChainValidator) -> Result<SocketAddr, ConsensusError> {
    v.address.parse().map_err(|_| ConsensusError::BadAddress {
        account: v.account,
        address: v.address.clone(),
    })
}

impl ConsensusThread {
    /// Checks the configuration and starts the validator on its own
    /// thread. Transactions received on `outgoing` (submitted here) are
    /// sent to every other validator; theirs reach [`Host::gossiped`].
    pub fn spawn(
        config: ProcessConfig,
        host: Arc<dyn Host>,
        outgoing: mpsc::Receiver<Vec<u8>>,
    ) -> Result<ConsensusThread, ConsensusError> {
        let me = config.key.account_id();
        let own = config
            .validators
            .iter()
            .find(|v| v.account == me)
            .ok_or(ConsensusError::NotAValidator { account: me })?;
        let listen = match config.listen {
            Some(listen) => listen,
            None => socket_of(own)?,
        };
        let mut peers = Vec::with_capacity(config.validators.len());
        for v in &config.validators {
            peers.push((public_key(&v.account)?, Address::Symmetric(socket_of(v)?)));
        }
        let set = participants(&config.validators)?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let storage = config.storage_dir.clone();
        let thread = std::thread::Builder::new()
            .name("consensus".into())
            .spawn(move || {
                let runtime = commonware_runtime::tokio::Config::new()
                    .with_worker_threads(2)
                    .with_storage_directory(storage)
                    .with_catch_panics(false);
                commonware_runtime::tokio::Runner::new(runtime).start(|context| async move {
                    let wiring = Wiring { set, peers, listen };
                    let result = run(context, config, wiring, host, outgoing, stop_rx).await;
                    let _ = done_tx.send(result);
                });
            })
            .map_err(|e| ConsensusError::Thread(e.to_string()))?;
        Ok(ConsensusThread {
            stop: Some(stop_tx),
            done: done_rx,
            thread: Some(thread),
            listen,
        })
    }

    /// The P2P socket it listens on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Resolves when consensus stops on its own (always an error: it runs
    /// until told to stop). Cancel-safe.
    pub async fn wait(&mut self) -> ConsensusError {
        match (&mut self.done).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => ConsensusError::Stopped("it returned".into()),
            Err(_) => ConsensusError::Stopped("its thread panicked".into()),
        }
    }

    /// Stops consensus and waits for its thread (its store is closed when
    /// this returns).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// The validator set and sockets, checked before the thread starts.
struct Wiring {
    set: commonware_utils::ordered::Set<commonware_cryptography::ed25519::PublicKey>,
    peers: Vec<(commonware_cryptography::ed25519::PublicKey, Address)>,
    listen: SocketAddr,
}

async fn run(
    context: commonware_runtime::tokio::Context,
    config: ProcessConfig,
    Wiring { set, peers, listen }: Wiring,
    host: Arc<dyn Host>,
    outgoing: mpsc::Receiver<Vec<u8>>,
    stop: oneshot::Receiver<()>,
) -> Result<(), ConsensusError> {
    let set_len = set.len();
    let private = consensus_key(&config.key);
    let me = private.public_key();
    let genesis_hash = config.genesis.hash();
    let namespace = namespace(&genesis_hash);
    let handshake = Cups::<_, ChaCha20Poly1305>::new(
        Sake {
            signer: private.clone(),
            synchrony_bound: Duration::from_secs(5),
            max_handshake_age: Duration::from_secs(10),
            version: sake::Version::V1,
        },
        cups::Version::V1,
    );
    let max_message = commonware_p2p::max_message_size(&[
        simplex::max_payload_size::<Scheme, Digest>(set.len() as u32),
        commonware_consensus::marshal::max_payload_size::<
            commonware_consensus::marshal::standard::Standard<ChainBlock>,
            Scheme,
        >(set.len() as u32, &config.block_codec),
    ]);
    let mut p2p = lookup::Config::local(
        handshake,
        // Not bound to the genesis (votes are): a validator of another
        // genesis still connects, so it can be told so by name.
        P2P_NAMESPACE,
        listen,
        commonware_p2p::authenticated::peer_set_limit(set.iter(), &me),
        max_message,
        NZUsize!(1024),
    );
    p2p.dial_frequency = Duration::from_millis(250);
    let (mut network, mut oracle) = lookup::Network::new(context.child("network"), p2p);
    let map = Map::from_iter_dedup(peers);
    let _ = oracle.track(0, map);
    let quota = Quota::per_second(NZU32!(1_000));
    let channels = Channels {
        votes: network.register(CHANNEL_VOTES, quota),
        certificates: network.register(CHANNEL_CERTIFICATES, quota),
        resolver: network.register(CHANNEL_RESOLVER, quota),
        backfill: network.register(CHANNEL_BACKFILL, quota),
        blocks: network.register(CHANNEL_BLOCKS, quota),
    };
    let transactions = network.register(CHANNEL_TRANSACTIONS, Quota::per_second(NZU32!(10_000)));
    let hello = network.register(CHANNEL_HELLO, Quota::per_second(NZU32!(16)));
    let network = network.start();
    let validator = start_validator(
        context.child("validator"),
        ValidatorConfig {
            namespace,
            participants: set,
            key: private,
            genesis: config.genesis.clone(),
            partition_prefix: "chain".into(),
            block_codec: config.block_codec,
            timing: Timing::for_block_time(config.block_time),
        },
        Arc::clone(&host),
        channels,
        oracle.clone(),
        oracle,
    )
    .await?;
    let gossip = context
        .child("transactions")
        .spawn(move |_| gossip_transactions(transactions, outgoing, host));
    let quorum_others = (set_len - set_len.saturating_sub(1) / 3).saturating_sub(1);
    let hellos = context
        .child("hello")
        .spawn(move |context| exchange_genesis(context, hello, genesis_hash, quorum_others.max(1)));
    tracing::info!(%listen, genesis = %genesis_hash, "consensus started");
    let mut engines = validator.engines;
    engines.push(network);
    engines.push(gossip);
    let engines = futures::future::select_all(engines);
    let finalizer = validator.finalizer;
    futures::pin_mut!(finalizer);
    tokio::select! {
        _ = stop => Ok(()),
        mismatch = hellos => match mismatch {
            Ok(e) => Err(e),
            Err(e) => Err(ConsensusError::Stopped(format!("the genesis check failed: {e:?}"))),
        },
        r = finalizer => match r {
            Ok(Ok(())) => Err(ConsensusError::Stopped("marshal closed its queue".into())),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(ConsensusError::Stopped(format!("the finalizer failed: {e:?}"))),
        },
        (r, index, _) = engines => Err(ConsensusError::Stopped(format!(
            "engine {index} ended: {r:?}"
        ))),
    }
}

/// The P2P handshake namespace of every Hypertensor chain.
const P2P_NAMESPACE: &[u8] = b"hypertensor/p2p/v1";

/// Tells every validator this node's genesis hash, every second, and
/// checks theirs. A validator on another genesis is named once (with
/// both hashes); when as many validators as a quorum needs besides this
/// one all run one other genesis and none runs ours, this node is the
/// odd one out: it resolves with [`ConsensusError::GenesisMismatch`].
/// Otherwise it runs for ever.
async fn exchange_genesis<S, R>(
    context: commonware_runtime::tokio::Context,
    (mut sender, mut receiver): (S, R),
    ours: hypertensor_primitives::H256,
    quorum_others: usize,
) -> ConsensusError
where
    S: commonware_p2p::Sender<PublicKey = commonware_cryptography::ed25519::PublicKey>,
    R: commonware_p2p::Receiver<PublicKey = commonware_cryptography::ed25519::PublicKey>,
{
    use commonware_runtime::Clock as _;
    use std::collections::{BTreeMap, BTreeSet};
    let mut agree = BTreeSet::new();
    let mut other: BTreeMap<AccountId, hypertensor_primitives::H256> = BTreeMap::new();
    loop {
        sender.send(commonware_p2p::Recipients::All, ours.0.to_vec(), false);
        let tick = context.sleep(Duration::from_secs(1));
        futures::pin_mut!(tick);
        loop {
            tokio::select! {
                () = &mut tick => break,
                message = receiver.recv() => {
                    let Ok((peer, bytes)) = message else {
                        return ConsensusError::Stopped("the hello channel closed".into());
                    };
                    let peer = crate::app::account_of(&peer);
                    let Ok(hash) = <[u8; 32]>::try_from(bytes.as_ref()) else {
                        continue;
                    };
                    let theirs = hypertensor_primitives::H256(hash);
                    if theirs == ours {
                        agree.insert(peer);
                        continue;
                    }
                    if other.insert(peer, theirs).is_none() {
                        tracing::error!(
                            validator = %peer,
                            %theirs,
                            %ours,
                            "a validator runs another genesis; its votes do not count here"
                        );
                    }
                    let distinct: BTreeSet<_> = other.values().collect();
                    if agree.is_empty() && other.len() >= quorum_others && distinct.len() == 1 {
                        return ConsensusError::GenesisMismatch {
                            ours,
                            theirs,
                            peers: other.keys().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
                        };
                    }
                }
            }
        }
    }
}

/// Sends this node's submitted transactions to every validator, and hands
/// theirs to the host (which checks and pools them like a submission).
/// Only locally submitted transactions are sent, so nothing loops.
async fn gossip_transactions<S, R>(
    (mut sender, mut receiver): (S, R),
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    host: Arc<dyn Host>,
) where
    S: commonware_p2p::Sender<PublicKey = commonware_cryptography::ed25519::PublicKey>,
    R: commonware_p2p::Receiver<PublicKey = commonware_cryptography::ed25519::PublicKey>,
{
    loop {
        tokio::select! {
            next = outgoing.recv() => match next {
                Some(bytes) => {
                    sender.send(commonware_p2p::Recipients::All, bytes, false);
                }
                None => return,
            },
            message = receiver.recv() => match message {
                Ok((peer, bytes)) => host.gossiped(&crate::app::account_of(&peer), bytes.as_ref()),
                Err(_) => return,
            },
        }
    }
}
