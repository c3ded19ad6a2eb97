//! The swarm, its owning event loop and the cloneable client handle.
//!
//! Shaped like rust-libp2p's file-sharing example: [`new`] returns a
//! [`Client`] (cheap to clone; sends [`Command`]s with oneshot replies), a
//! bounded stream of [`Event`]s, and the [`EventLoop`] that owns the swarm
//! and must be run (e.g. `tokio::spawn(event_loop.run())`). The loop stops
//! when every client handle is dropped.
//!
//! Records: each DHT key holds one Kademlia record whose value is the
//! encoded [`Dictionary`]. Kademlia routes and replicates it; inbound puts
//! are filtered (`StoreInserts::FilterBoth`), decoded, reduced to the
//! entries that would change our copy, validated ([`Validator`]) and merged
//! into the local [`MemoryStore`] here. A writer puts a record holding only
//! its own entry; holders merge it into their dictionaries. `get` collects
//! the records of up to `get_quorum` peers, validates remote entries and
//! merges them. When the lookup has not ended on its own, it answers once
//! `get_quorum` peers have answered (with or without a record) and half a
//! second has passed, and at the latest 2 s after it started: a key no one
//! holds would otherwise wait for every silent peer of the lookup
//! (Kademlia gives each 10 s), and an empty key is the common case for
//! some keys, such as a quiet epoch's evidence.

/// Longest a `get` waits for its lookup before it answers with the records
/// found so far.
const GET_WAIT: Duration = Duration::from_secs(2);
/// How long a `get` whose lookup is held up by silent peers waits, once
/// `get_quorum` peers have answered without enough records, for closer
/// peers to answer.
const GET_SETTLE: Duration = Duration::from_millis(500);
/// How often a pending `get` looks at how many peers have answered.
const GET_POLL: Duration = Duration::from_millis(50);

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use hypertensor_primitives::{H256, Keypair};
use libp2p::core::transport::ListenerId;
use libp2p::kad::store::{MemoryStore, MemoryStoreConfig, RecordStore};
use libp2p::kad::{self, GetRecordOk, QueryId, QueryResult, Quorum, Record, StoreInserts};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, autonat, dcutr, identify, noise, ping, relay, tcp,
    yamux,
};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, libp2p_identity};
use crate::metrics::DhtOp;
use crate::nat::{self, Reachability};
use crate::record::{Dictionary, SignedEntry, check_key, now_ms, peer_id_of};
use crate::rpc::{
    Outcome, RequestGuard, RpcSession, SignedRequest, SignedResponse, read_frame, write_frame,
};
use crate::server::RpcServer;
use crate::validate::{Metrics, Validator};
use crate::{P2pError, Result};

/// How long a caller waits for an RPC response.
const RPC_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Streams opened again when the peer dropped one before reading it.
const STREAM_DROP_RETRIES: u32 = 4;
/// Pause before the first reopening; the n-th waits n times this.
const STREAM_DROP_PAUSE: Duration = Duration::from_millis(20);
/// Longest wait for a relay to accept a reservation.
const RELAY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(NetworkBehaviour)]
struct Behaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
    autonat: autonat::Behaviour,
    relay: Toggle<relay::Behaviour>,
    relay_client: relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
}

/// Something the application hears from the network.
#[derive(Debug)]
pub enum Event {
    /// A peer opened an admitted session (the handshake's signed acceptance
    /// was already sent).
    InboundSession {
        /// The session method.
        method: String,
        /// The opening request's body.
        body: Vec<u8>,
        /// The session, ready for frames.
        session: RpcSession,
    },
}

/// A request from a [`Client`] to the [`EventLoop`].
#[derive(Debug)]
enum Command {
    Store {
        key: String,
        entry: SignedEntry,
        own: bool,
        reply: oneshot::Sender<Result<()>>,
    },
    Get {
        key: String,
        reply: oneshot::Sender<Result<Dictionary>>,
    },
    LocalDictionary {
        key: String,
        reply: oneshot::Sender<Option<Dictionary>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<()>>,
    },
    Bootstrap {
        reply: oneshot::Sender<Result<()>>,
    },
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    RoutingTableSize {
        reply: oneshot::Sender<usize>,
    },
    AddressesOf {
        peer: PeerId,
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Reachability {
        reply: oneshot::Sender<Reachability>,
    },
    ListenViaRelay {
        relay: Multiaddr,
        reply: oneshot::Sender<Result<Multiaddr>>,
    },
    RelayCandidates {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
}

struct Shared {
    keypair: Keypair,
    peer_id: PeerId,
    genesis: H256,
    validator: Arc<Validator>,
    metrics: Arc<Metrics>,
    control: libp2p_stream::Control,
    rpc_protocol: StreamProtocol,
    session_protocol: StreamProtocol,
    max_frame: usize,
}

/// The cloneable handle to a running node.
#[derive(Clone)]
pub struct Client {
    sender: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer_id", &self.shared.peer_id)
            .finish()
    }
}

impl Client {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.sender
            .send(make(tx))
            .await
            .map_err(|_| P2pError::Stopped)?;
        rx.await.map_err(|_| P2pError::Stopped)
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    /// The validation counters of this node.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Signs and stores our entry `value` under `key` until `expiration`
    /// (Unix ms). The entry is validated locally first (an invalid write
    /// fails here with [`P2pError::Rejected`] and changes nothing), merged
    /// into our copy, sent to the key's closest peers, and re-published
    /// until it expires. `Ok` means at least one remote peer acknowledged
    /// the put; each holder validates it independently.
    pub async fn store(&self, key: &str, value: Vec<u8>, expiration: u64) -> Result<()> {
        check_key(key)?;
        let entry = SignedEntry::sign(
            &self.shared.keypair,
            &self.shared.genesis,
            key,
            value,
            expiration,
        );
        self.shared
            .validator
            .validate_write(key, &entry, now_ms())
            .await
            .map_err(P2pError::Rejected)?;
        let key = key.to_string();
        let stored = self
            .call(|reply| Command::Store {
                key,
                entry,
                own: true,
                reply,
            })
            .await
            .and_then(|r| r);
        self.shared
            .metrics
            .dht_operation(DhtOp::Put, stored.is_ok());
        stored
    }

    /// Sends an entry signed elsewhere to the key's closest peers without
    /// validating or storing it locally: for relays and for testing other
    /// peers' validators. Holders validate it as any inbound write.
    pub async fn publish_entry(&self, key: &str, entry: SignedEntry) -> Result<()> {
        check_key(key)?;
        let key = key.to_string();
        let published = self
            .call(|reply| Command::Store {
                key,
                entry,
                own: false,
                reply,
            })
            .await
            .and_then(|r| r);
        self.shared
            .metrics
            .dht_operation(DhtOp::Publish, published.is_ok());
        published
    }

    /// The merged, validated dictionary of `key` across the network
    /// (expired entries dropped). An unknown key gives an empty dictionary.
    pub async fn get(&self, key: &str) -> Result<Dictionary> {
        check_key(key)?;
        let key = key.to_string();
        let got = self
            .call(|reply| Command::Get { key, reply })
            .await
            .and_then(|r| r);
        self.shared.metrics.dht_operation(DhtOp::Get, got.is_ok());
        got
    }

    /// The dictionary this node itself holds for `key`, if any.
    pub async fn local_dictionary(&self, key: &str) -> Result<Option<Dictionary>> {
        let key = key.to_string();
        self.call(|reply| Command::LocalDictionary { key, reply })
            .await
    }

    /// Dials an address (with or without `/p2p/<id>`) and adds it to the
    /// routing table when it names the peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<()> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// Runs a Kademlia bootstrap (fills the routing table).
    pub async fn bootstrap(&self) -> Result<()> {
        self.call(|reply| Command::Bootstrap { reply }).await?
    }

    /// The addresses we listen on, waiting until there is at least one.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// Connected peers that offer a circuit relay, each as an address
    /// ending in `/p2p/<its id>` ([`Client::listen_via_relay`] takes it).
    pub async fn relay_candidates(&self) -> Result<Vec<Multiaddr>> {
        self.call(|reply| Command::RelayCandidates { reply }).await
    }

    /// Number of peers in the Kademlia routing table.
    pub async fn routing_table_size(&self) -> Result<usize> {
        self.call(|reply| Command::RoutingTableSize { reply }).await
    }

    /// Waits until the routing table knows a peer, for at most `timeout`;
    /// returns whether one is known (a node that reads or announces before
    /// it knows anyone reaches no one).
    pub async fn wait_for_peers(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.routing_table_size().await.unwrap_or(0) > 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The addresses our routing table holds for `peer` (what it announced
    /// through identify, or what we dialled).
    pub async fn addresses_of(&self, peer: PeerId) -> Result<Vec<Multiaddr>> {
        self.call(|reply| Command::AddressesOf { peer, reply })
            .await
    }

    /// Whether others can dial us, as AutoNAT found so far.
    pub async fn reachability(&self) -> Result<Reachability> {
        self.call(|reply| Command::Reachability { reply }).await
    }

    /// Waits until AutoNAT decided whether others can dial us, for at most
    /// `timeout`; [`Reachability::Unknown`] if it has not.
    pub async fn wait_reachability(&self, timeout: Duration) -> Result<Reachability> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = self.reachability().await?;
            if now != Reachability::Unknown || tokio::time::Instant::now() >= deadline {
                return Ok(now);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reserves a slot on `relay` (an address ending in `/p2p/<its id>`)
    /// and listens through it; returns the relayed address others can
    /// dial us at, once the relay accepted. Fails if the relay refuses,
    /// cannot be reached, or does not answer within `RELAY_TIMEOUT`.
    pub async fn listen_via_relay(&self, relay: Multiaddr) -> Result<Multiaddr> {
        let reply = self.call(|reply| Command::ListenViaRelay { relay, reply });
        match tokio::time::timeout(RELAY_TIMEOUT, reply).await {
            Ok(outcome) => outcome?,
            Err(_) => Err(P2pError::Network(
                "the relay did not accept a reservation in time".into(),
            )),
        }
    }

    /// Calls `method` on `peer` with a signed request; returns the body of
    /// its verified, signed answer. Refusals and handler errors come back
    /// as [`P2pError::Refused`] and [`P2pError::Remote`].
    pub async fn request(&self, peer: PeerId, method: &str, body: Vec<u8>) -> Result<Vec<u8>> {
        let req = SignedRequest::new(
            &self.shared.keypair,
            &self.shared.genesis,
            peer,
            method,
            body,
        );
        let started = std::time::Instant::now();
        let resp = self.send_request(peer, &req).await?;
        self.shared.metrics.rpc_answered(method, started.elapsed());
        outcome_to_result(peer, resp.outcome)
    }

    /// Sends a pre-built request envelope and returns the server's signed
    /// response, verified against `peer` and the request's nonce (so it can
    /// be kept as evidence).
    pub async fn send_request(&self, peer: PeerId, req: &SignedRequest) -> Result<SignedResponse> {
        let protocol = self.shared.rpc_protocol.clone();
        let (resp, _) = self.exchange(peer, protocol, req).await?;
        Ok(resp)
    }

    /// The genesis hash of the chain this node's signatures are bound to.
    pub fn genesis(&self) -> H256 {
        self.shared.genesis
    }

    /// Signs `payload` with this node's key for `purpose` in the genesis
    /// domain (what others check with `verify_domain`), e.g. a server's
    /// receipt for an answer.
    pub fn sign_domain(&self, purpose: &str, payload: &[u8]) -> hypertensor_primitives::Signature {
        self.shared
            .keypair
            .sign_domain(purpose, &self.shared.genesis, payload)
    }

    /// Opens a long-lived bidirectional session with `peer` for `method`;
    /// the opening request is signed and checked like any request.
    pub async fn open_session(
        &self,
        peer: PeerId,
        method: &str,
        body: Vec<u8>,
    ) -> Result<RpcSession> {
        let req = SignedRequest::new(
            &self.shared.keypair,
            &self.shared.genesis,
            peer,
            method,
            body,
        );
        let protocol = self.shared.session_protocol.clone();
        let (resp, stream) = self.exchange(peer, protocol, &req).await?;
        outcome_to_result(peer, resp.outcome)?;
        Ok(RpcSession::new(
            peer,
            req.nonce,
            stream,
            self.shared.max_frame,
        ))
    }

    async fn exchange(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
        req: &SignedRequest,
    ) -> Result<(SignedResponse, libp2p::Stream)> {
        let mut control = self.shared.control.clone();
        let encoded = req.encode();
        let max = self.shared.max_frame;
        let bytes = tokio::time::timeout(RPC_RESPONSE_TIMEOUT, async {
            // libp2p-stream hands inbound streams over through a one-slot
            // channel and drops those that arrive while it is taken (a
            // burst of sessions opened at once): the request then cannot
            // be written. Such a stream never reached the peer's handler,
            // so it is safe to open another.
            // The write may also succeed into the dropped stream's
            // buffers: the stream then ends with no byte of answer, which
            // a handler never does (it answers, if only to refuse).
            let mut attempt = 0;
            loop {
                let mut stream = control
                    .open_stream(peer, protocol.clone())
                    .await
                    .map_err(|e| P2pError::Network(e.to_string()))?;
                let dropped = match write_frame(&mut stream, &encoded).await {
                    Ok(()) => match read_frame(&mut stream, max).await? {
                        Some(bytes) => break Ok::<_, P2pError>((Some(bytes), stream)),
                        None if attempt >= STREAM_DROP_RETRIES => return Ok((None, stream)),
                        None => "the stream ended before any answer".to_string(),
                    },
                    Err(e) if attempt >= STREAM_DROP_RETRIES => return Err(P2pError::from(e)),
                    Err(e) => e.to_string(),
                };
                attempt += 1;
                tracing::debug!(%peer, error = %dropped, attempt, "request stream dropped; opening another");
                tokio::time::sleep(STREAM_DROP_PAUSE * attempt).await;
            }
        })
        .await
        .map_err(|_| P2pError::Timeout("rpc response"))??;
        let (bytes, stream) = bytes;
        let bytes = bytes.ok_or_else(|| {
            P2pError::Network(format!("{peer} closed the stream without answering"))
        })?;
        let resp = SignedResponse::decode(&bytes, max)?;
        if resp.client != self.shared.peer_id {
            return Err(P2pError::InvalidResponse {
                peer,
                reason: "response is addressed to another client",
            });
        }
        if !resp.verify(&self.shared.genesis, &peer, req) {
            return Err(P2pError::InvalidResponse {
                peer,
                reason: "signature does not verify against the server and request nonce",
            });
        }
        Ok((resp, stream))
    }
}

fn outcome_to_result(peer: PeerId, outcome: Outcome) -> Result<Vec<u8>> {
    match outcome {
        Outcome::Ok(body) => Ok(body),
        Outcome::Refused(refusal) => Err(P2pError::Refused { peer, refusal }),
        Outcome::Error(message) => Err(P2pError::Remote { peer, message }),
    }
}

/// Puts in flight. A put goes out two ways (see [`EventLoop::send_entry`])
/// and answers its writer with the first acknowledgement, or with the
/// last failure once both failed.
struct PendingPuts<Q = QueryId> {
    next: u64,
    queries: HashMap<Q, u64>,
    writers: HashMap<u64, (oneshot::Sender<Result<()>>, usize)>,
}

impl<Q> Default for PendingPuts<Q> {
    fn default() -> Self {
        PendingPuts {
            next: 0,
            queries: HashMap::new(),
            writers: HashMap::new(),
        }
    }
}

impl<Q: std::hash::Hash + Eq + Copy> PendingPuts<Q> {
    fn insert(&mut self, ids: &[Q], reply: oneshot::Sender<Result<()>>) {
        let put = self.next;
        self.next += 1;
        for id in ids {
            self.queries.insert(*id, put);
        }
        self.writers.insert(put, (reply, ids.len()));
    }

    fn finished(&mut self, id: Q, result: Result<()>) {
        let Some(put) = self.queries.remove(&id) else {
            return;
        };
        let done = match (&result, self.writers.get_mut(&put)) {
            (_, None) => false,
            (Ok(()), Some(_)) => true,
            (Err(_), Some((_, left))) => {
                *left -= 1;
                *left == 0
            }
        };
        if done && let Some((reply, _)) = self.writers.remove(&put) {
            let _ = reply.send(result);
        }
    }
}

/// A `get` collecting records.
struct PendingGet {
    key: String,
    found: Vec<Dictionary>,
    /// Whether our own copy was among the answers.
    local: bool,
    reply: oneshot::Sender<Result<Dictionary>>,
}

/// Work the loop waits on besides the swarm.
enum Done {
    /// Validated entries of an inbound put, to merge.
    Validated {
        key: String,
        entries: Vec<SignedEntry>,
    },
    /// An inbound session to hand to the application.
    Session(Box<Event>),
    /// Nothing to do (a served RPC, a finished get).
    Nothing,
    /// A get's poll: the query, and when it started.
    GetPoll(QueryId, Instant),
}

/// Owns the swarm; run it with [`EventLoop::run`].
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    validator: Arc<Validator>,
    metrics: Arc<Metrics>,
    server: Arc<RpcServer>,
    incoming_rpc: libp2p_stream::IncomingStreams,
    incoming_sessions: libp2p_stream::IncomingStreams,
    work: FuturesUnordered<BoxFuture<'static, Done>>,
    gets: HashMap<QueryId, PendingGet>,
    puts: PendingPuts,
    dials: HashMap<PeerId, Vec<oneshot::Sender<Result<()>>>>,
    bootstraps: HashMap<QueryId, oneshot::Sender<Result<()>>>,
    listen_waiters: Vec<oneshot::Sender<Vec<Multiaddr>>>,
    relay_listens: HashMap<ListenerId, oneshot::Sender<Result<Multiaddr>>>,
    /// Connected peers that said (identify) they offer a circuit relay,
    /// with the addresses they listen on.
    relays: HashMap<PeerId, Vec<Multiaddr>>,
    reachability: Reachability,
    own: HashMap<String, SignedEntry>,
    config: Config,
}

/// Builds a node: listens, announces, dials the bootstrap peers, and
/// returns its handle, its event stream and the loop to run.
pub fn new(config: Config) -> Result<(Client, mpsc::Receiver<Event>, EventLoop)> {
    let identity = libp2p_identity(&config.keypair)?;
    let peer_id = peer_id_of(&config.keypair);
    let kad_protocol = StreamProtocol::try_from_owned(config.kad_protocol())
        .map_err(|e| P2pError::Network(e.to_string()))?;
    let rpc_protocol = StreamProtocol::try_from_owned(config.rpc_protocol())
        .map_err(|e| P2pError::Network(e.to_string()))?;
    let session_protocol = StreamProtocol::try_from_owned(config.session_protocol())
        .map_err(|e| P2pError::Network(e.to_string()))?;
    let replication =
        NonZeroUsize::new(config.replication_factor.max(1)).unwrap_or(NonZeroUsize::MIN);

    let cfg = config.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| P2pError::Network(e.to_string()))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| P2pError::Network(e.to_string()))?
        .with_behaviour(|key, relay_client| {
            let local = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(kad_protocol);
            kad_config
                .set_replication_factor(replication)
                .set_query_timeout(cfg.query_timeout)
                .set_record_filtering(StoreInserts::FilterBoth)
                .set_publication_interval(None)
                .set_replication_interval(cfg.replication_interval)
                .set_record_ttl(None)
                .set_caching(kad::Caching::Disabled)
                .set_max_packet_size(cfg.max_record_bytes + 4096);
            let store = MemoryStore::with_config(
                key.public().to_peer_id(),
                MemoryStoreConfig {
                    max_records: 65_536,
                    max_value_bytes: cfg.max_record_bytes,
                    ..MemoryStoreConfig::default()
                },
            );
            let mut kad = kad::Behaviour::with_config(key.public().to_peer_id(), store, kad_config);
            // Loopback and private addresses are never "confirmed external",
            // so serve the DHT explicitly.
            kad.set_mode(Some(kad::Mode::Server));
            Behaviour {
                kad,
                identify: identify::Behaviour::new(identify::Config::new(
                    format!("/hypertensor/{}/1.0.0", cfg.subnet_id),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
                stream: libp2p_stream::Behaviour::new(),
                autonat: autonat::Behaviour::new(local, nat::autonat_config()),
                relay: Toggle::from(
                    cfg.relay_service
                        .then(|| relay::Behaviour::new(local, nat::relay_config())),
                ),
                relay_client,
                dcutr: dcutr::Behaviour::new(local),
            }
        })
        .map_err(|e| P2pError::Network(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();

    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| P2pError::Address {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
    }
    for addr in &config.announce {
        swarm.add_external_address(addr.clone());
    }
    for addr in &config.bootstrap {
        let Some(peer) = peer_of(addr) else {
            return Err(P2pError::Address {
                addr: addr.to_string(),
                reason: "bootstrap addresses must end in /p2p/<peer id>".into(),
            });
        };
        swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        swarm.dial(addr.clone()).map_err(|e| P2pError::Address {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    }
    if !config.bootstrap.is_empty() {
        // Fails only without known peers, which we just added.
        let _ = swarm.behaviour_mut().kad.bootstrap();
    }

    let mut control = swarm.behaviour().stream.new_control();
    let incoming_rpc = control
        .accept(rpc_protocol.clone())
        .map_err(|_| P2pError::Network("rpc protocol registered twice".into()))?;
    let incoming_sessions = control
        .accept(session_protocol.clone())
        .map_err(|_| P2pError::Network("session protocol registered twice".into()))?;

    let metrics = Arc::new(Metrics::default());
    let validator = Arc::new(Validator::new(
        config.genesis,
        config.schemas.clone(),
        config.phase.clone(),
        config.stake.clone(),
        config.writes_per_epoch,
        metrics.clone(),
    ));
    let server = Arc::new(RpcServer {
        keypair: config.keypair.clone(),
        genesis: config.genesis,
        guard: RequestGuard::new(peer_id, config.genesis, config.admission.clone()),
        stake: config.stake.clone(),
        handler: config.rpc_handler.clone(),
        session_methods: config.session_methods.clone(),
        max_frame: config.max_frame_bytes,
    });
    let (command_tx, command_rx) = mpsc::channel(config.channel_capacity.max(1));
    let (event_tx, event_rx) = mpsc::channel(config.channel_capacity.max(1));
    let client = Client {
        sender: command_tx,
        shared: Arc::new(Shared {
            keypair: config.keypair.clone(),
            peer_id,
            genesis: config.genesis,
            validator: validator.clone(),
            metrics: metrics.clone(),
            control,
            rpc_protocol,
            session_protocol,
            max_frame: config.max_frame_bytes,
        }),
    };
    let event_loop = EventLoop {
        swarm,
        commands: command_rx,
        events: event_tx,
        validator,
        metrics,
        server,
        incoming_rpc,
        incoming_sessions,
        work: FuturesUnordered::new(),
        gets: HashMap::new(),
        puts: PendingPuts::default(),
        dials: HashMap::new(),
        bootstraps: HashMap::new(),
        listen_waiters: Vec::new(),
        relay_listens: HashMap::new(),
        relays: HashMap::new(),
        reachability: Reachability::Unknown,
        own: HashMap::new(),
        config,
    };
    Ok((client, event_rx, event_loop))
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

fn record_key(key: &str) -> kad::RecordKey {
    kad::RecordKey::new(&key.as_bytes())
}

impl EventLoop {
    /// Drives the node until every [`Client`] is dropped. Cancel-safe in the
    /// sense that dropping it stops the node (all pending replies fail with
    /// [`P2pError::Stopped`]).
    pub async fn run(mut self) {
        let mut republish = tokio::time::interval(self.config.republish_interval);
        let mut evict = tokio::time::interval(self.config.eviction_interval);
        republish.tick().await;
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some((peer, stream)) = self.incoming_rpc.next() => {
                    if self.work.len() < self.config.max_inbound_work {
                        let server = self.server.clone();
                        self.work.push(server.serve_unary(peer, stream).map(|()| Done::Nothing).boxed());
                    } else {
                        tracing::debug!(%peer, "dropping rpc stream: overloaded");
                    }
                }
                Some((peer, stream)) = self.incoming_sessions.next() => {
                    if self.work.len() < self.config.max_inbound_work {
                        let server = self.server.clone();
                        self.work.push(server.serve_session(peer, stream)
                            .map(|e| e.map_or(Done::Nothing, |e| Done::Session(Box::new(e)))).boxed());
                    } else {
                        tracing::debug!(%peer, "dropping session stream: overloaded");
                    }
                }
                Some(done) = self.work.next(), if !self.work.is_empty() => self.on_done(done),
                _ = republish.tick() => self.republish(),
                _ = evict.tick() => self.evict_expired(),
            }
        }
    }

    fn local(&mut self, key: &str) -> Option<Dictionary> {
        let record = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .get(&record_key(key))?;
        Dictionary::decode(&record.value).ok()
    }

    fn put_local(&mut self, key: &str, mut dict: Dictionary) {
        dict.evict_expired(now_ms());
        let store = self.swarm.behaviour_mut().kad.store_mut();
        if dict.is_empty() {
            store.remove(&record_key(key));
            return;
        }
        let ttl = Duration::from_millis(dict.latest_expiration().saturating_sub(now_ms()));
        let mut record = Record::new(record_key(key), dict.encode());
        record.expires = Some(Instant::now() + ttl);
        if let Err(e) = store.put(record) {
            tracing::debug!(key, error = %e, "could not store record");
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Store {
                key,
                entry,
                own,
                reply,
            } => {
                let previous = self.local(&key);
                if own {
                    self.own.insert(key.clone(), entry.clone());
                }
                match self.send_entry(&key, entry.clone()) {
                    Ok(ids) => self.puts.insert(&ids, reply),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
                // Kademlia stored the one-entry record locally; restore our
                // merged copy (plus our own entry, never a relayed one).
                let mut dict = previous.unwrap_or_default();
                if own {
                    dict.merge_entry(entry);
                }
                self.put_local(&key, dict);
            }
            Command::Get { key, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_record(record_key(&key));
                self.poll_get(id, Instant::now());
                self.gets.insert(
                    id,
                    PendingGet {
                        key,
                        found: Vec::new(),
                        local: false,
                        reply,
                    },
                );
            }
            Command::LocalDictionary { key, reply } => {
                let mut dict = self.local(&key);
                if let Some(d) = dict.as_mut() {
                    d.evict_expired(now_ms());
                }
                let _ = reply.send(dict.filter(|d| !d.is_empty()));
            }
            Command::Dial { addr, reply } => {
                let peer = peer_of(&addr);
                if let Some(peer) = peer {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                }
                match self.swarm.dial(addr.clone()) {
                    Ok(()) => match peer {
                        Some(peer) => self.dials.entry(peer).or_default().push(reply),
                        None => {
                            let _ = reply.send(Ok(()));
                        }
                    },
                    Err(e) => {
                        let _ = reply.send(Err(P2pError::Address {
                            addr: addr.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::Bootstrap { reply } => match self.swarm.behaviour_mut().kad.bootstrap() {
                Ok(id) => {
                    self.bootstraps.insert(id, reply);
                }
                Err(_) => {
                    let _ = reply.send(Err(P2pError::Network(
                        "no known peers to bootstrap from".into(),
                    )));
                }
            },
            Command::ListenAddrs { reply } => {
                let addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
                if addrs.is_empty() {
                    self.listen_waiters.push(reply);
                } else {
                    let _ = reply.send(addrs);
                }
            }
            Command::AddressesOf { peer, reply } => {
                let mut addrs = Vec::new();
                for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
                    for entry in bucket.iter() {
                        if *entry.node.key.preimage() == peer {
                            addrs.extend(entry.node.value.iter().cloned());
                        }
                    }
                }
                let _ = reply.send(addrs);
            }
            Command::Reachability { reply } => {
                let _ = reply.send(self.reachability.clone());
            }
            Command::ListenViaRelay { relay, reply } => {
                let Some((peer, circuit)) = nat::circuit_through(&relay) else {
                    let _ = reply.send(Err(P2pError::Address {
                        addr: relay.to_string(),
                        reason: "a relay address must end in /p2p/<peer id>".into(),
                    }));
                    return;
                };
                self.swarm.add_peer_address(peer, relay.clone());
                match self.swarm.listen_on(circuit) {
                    Ok(id) => {
                        self.relay_listens.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(P2pError::Address {
                            addr: relay.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Command::RelayCandidates { reply } => {
                let candidates = self
                    .relays
                    .iter()
                    .flat_map(|(peer, addrs)| {
                        addrs
                            .iter()
                            .filter_map(move |a| a.clone().with_p2p(*peer).ok())
                    })
                    .collect();
                let _ = reply.send(candidates);
            }
            Command::RoutingTableSize { reply } => {
                let n = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .kbuckets()
                    .map(|b| b.num_entries())
                    .sum();
                let _ = reply.send(n);
            }
        }
    }

    /// Puts a one-entry record for `key` two ways at once: through
    /// Kademlia's iterative lookup of the closest peers in the whole DHT,
    /// and straight to the closest peers this node is connected to. The
    /// lookup waits out (10 s per peer, not configurable) any peer that
    /// stopped answering without closing its connection, as behind a cut
    /// link; the direct put is acknowledged within a round trip by any
    /// peer still answering, so one silent peer cannot make every write
    /// miss its phase window.
    fn send_entry(&mut self, key: &str, entry: SignedEntry) -> Result<Vec<QueryId>> {
        let dict: Dictionary = std::iter::once(entry).collect();
        let mut record = Record::new(record_key(key), dict.encode());
        record.publisher = None;
        let connected = self.closest_connected(&record.key);
        let kad = &mut self.swarm.behaviour_mut().kad;
        let mut ids = vec![
            kad.put_record(record.clone(), Quorum::One)
                .map_err(|e| P2pError::Network(format!("local store refused the record: {e}")))?,
        ];
        if !connected.is_empty() {
            ids.push(kad.put_record_to(record, connected.into_iter(), Quorum::One));
        }
        Ok(ids)
    }

    /// The peers of the routing table this node is connected to, closest
    /// to `key` first, at most the replication factor.
    fn closest_connected(&mut self, key: &kad::RecordKey) -> Vec<PeerId> {
        let target = kad::KBucketKey::new(key.clone());
        let mut peers: Vec<(kad::KBucketDistance, PeerId)> = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .flat_map(|bucket| {
                bucket
                    .iter()
                    .filter(|e| e.status == kad::NodeStatus::Connected)
                    .map(|e| (target.distance(e.node.key), *e.node.key.preimage()))
                    .collect::<Vec<_>>()
            })
            .collect();
        peers.sort();
        peers.truncate(self.config.replication_factor);
        peers.into_iter().map(|(_, peer)| peer).collect()
    }

    fn republish(&mut self) {
        let now = now_ms();
        self.own.retain(|_, e| e.expiration > now);
        let own: Vec<(String, SignedEntry)> = self
            .own
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        for (key, entry) in own {
            let previous = self.local(&key);
            if let Err(e) = self.send_entry(&key, entry.clone()) {
                tracing::debug!(key, error = %e, "republication failed");
            }
            let mut dict = previous.unwrap_or_default();
            dict.merge_entry(entry);
            self.put_local(&key, dict);
        }
    }

    fn evict_expired(&mut self) {
        let now = now_ms();
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let stale: Vec<(kad::RecordKey, Option<Dictionary>)> = store
            .records()
            .filter_map(|r| {
                let mut dict = Dictionary::decode(&r.value).ok()?;
                (dict.evict_expired(now) > 0).then(|| (r.key.clone(), Some(dict)))
            })
            .collect();
        for (key, dict) in stale {
            match dict.filter(|d| !d.is_empty()) {
                None => store.remove(&key),
                Some(dict) => {
                    let mut record = Record::new(key, dict.encode());
                    let ttl = Duration::from_millis(dict.latest_expiration().saturating_sub(now));
                    record.expires = Some(Instant::now() + ttl);
                    let _ = store.put(record);
                }
            }
        }
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Validated { key, entries } => {
                if entries.is_empty() {
                    return;
                }
                let mut dict = self.local(&key).unwrap_or_default();
                for entry in entries {
                    if dict.merge_entry(entry) {
                        self.metrics.accept();
                    }
                }
                self.put_local(&key, dict);
            }
            Done::Session(event) => {
                if self.events.try_send(*event).is_err() {
                    tracing::debug!("dropping inbound session: event channel full or closed");
                }
            }
            Done::Nothing => {}
            Done::GetPoll(id, started) => {
                if !self.gets.contains_key(&id) {
                    return;
                }
                let quorum = self.config.get_quorum.max(1) as u32;
                let answered = match self.swarm.behaviour_mut().kad.query_mut(&id) {
                    Some(q) => q.stats().num_successes(),
                    None => u32::MAX,
                };
                let waited = started.elapsed();
                if (answered >= quorum && waited >= GET_SETTLE) || waited >= GET_WAIT {
                    if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        q.finish();
                    }
                    self.finish_get(id);
                } else {
                    self.poll_get(id, started);
                }
            }
        }
    }

    /// Looks again at get `id` in [`GET_POLL`].
    fn poll_get(&mut self, id: QueryId, started: Instant) {
        self.work.push(
            async move {
                tokio::time::sleep(GET_POLL).await;
                Done::GetPoll(id, started)
            }
            .boxed(),
        );
    }

    fn on_inbound_put(&mut self, source: PeerId, record: Record) {
        let Ok(key) = String::from_utf8(record.key.to_vec()) else {
            tracing::debug!(%source, "dropping put: key is not UTF-8");
            return;
        };
        if check_key(&key).is_err() {
            tracing::debug!(%source, "dropping put: bad key length");
            return;
        }
        let incoming = match Dictionary::decode(&record.value) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(%source, error = %e, "dropping put: malformed record");
                return;
            }
        };
        let current = self.local(&key).unwrap_or_default();
        let fresh: Vec<SignedEntry> = incoming
            .entries()
            .filter(|e| current.would_change(e))
            .cloned()
            .collect();
        if fresh.is_empty() {
            return;
        }
        if self.work.len() >= self.config.max_inbound_work {
            tracing::debug!(%source, "dropping put: overloaded");
            return;
        }
        let validator = self.validator.clone();
        self.work.push(
            async move {
                let now = now_ms();
                let mut entries = Vec::with_capacity(fresh.len());
                for entry in fresh {
                    match validator.validate_write(&key, &entry, now).await {
                        Ok(()) => entries.push(entry),
                        Err(reason) => {
                            tracing::debug!(%source, writer = %entry.subkey, key, %reason, "record rejected")
                        }
                    }
                }
                Done::Validated { key, entries }
            }
            .boxed(),
        );
    }

    fn finish_get(&mut self, id: QueryId) {
        let Some(get) = self.gets.remove(&id) else {
            return;
        };
        let local = self.local(&get.key);
        let validator = self.validator.clone();
        self.work.push(
            async move {
                let now = now_ms();
                let mut merged = local.unwrap_or_default();
                for dict in get.found {
                    for entry in dict.entries() {
                        if !merged.would_change(entry) {
                            continue;
                        }
                        match validator.validate_read(&get.key, entry, now).await {
                            Ok(()) => {
                                merged.merge_entry(entry.clone());
                            }
                            Err(reason) => {
                                tracing::debug!(writer = %entry.subkey, key = get.key, %reason, "query result entry rejected")
                            }
                        }
                    }
                }
                merged.evict_expired(now);
                let _ = get.reply.send(Ok(merged));
                Done::Nothing
            }
            .boxed(),
        );
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                address,
                listener_id,
            } => {
                tracing::debug!(%address, "listening");
                if let Some(reply) = self.relay_listens.remove(&listener_id) {
                    tracing::info!(%address, "listening through a relay");
                    // Behind NAT our own addresses cannot be dialled: stay
                    // out of others' routing tables.
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .set_mode(Some(kad::Mode::Client));
                    let _ = reply.send(Ok(address));
                }
                let addrs: Vec<Multiaddr> = self.swarm.listeners().cloned().collect();
                for waiter in self.listen_waiters.drain(..) {
                    let _ = waiter.send(addrs.clone());
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.relays.remove(&peer_id);
                self.metrics.set_peers(self.swarm.connected_peers().count());
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.metrics.set_peers(self.swarm.connected_peers().count());
                for reply in self.dials.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Ok(()));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer_id),
                error,
                ..
            } => {
                for reply in self.dials.remove(&peer_id).unwrap_or_default() {
                    let _ = reply.send(Err(P2pError::Network(error.to_string())));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
                    let direct = info.listen_addrs.iter().filter(|a| !nat::is_relayed(a));
                    let mut addrs: Vec<Multiaddr> = direct
                        .clone()
                        .filter(|a| !nat::is_loopback(a))
                        .cloned()
                        .collect();
                    if addrs.is_empty() {
                        addrs = direct.cloned().collect();
                    }
                    self.relays.insert(peer_id, addrs);
                } else {
                    self.relays.remove(&peer_id);
                }
                let kad_protocol = self.config.kad_protocol();
                if info.protocols.iter().any(|p| p.as_ref() == kad_protocol) {
                    for addr in info.listen_addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some(reply) = self.relay_listens.remove(&listener_id) {
                    let reason = match reason {
                        Ok(()) => "the relay closed the reservation".to_string(),
                        Err(e) => e.to_string(),
                    };
                    let _ = reply.send(Err(P2pError::Network(format!(
                        "relay reservation failed: {reason}"
                    ))));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged {
                new,
                ..
            })) => {
                tracing::info!(status = ?new, "reachability");
                self.reachability = new.into();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            })) => match result {
                Ok(_) => {
                    tracing::info!(peer = %remote_peer_id, "direct connection (hole punched)");
                    self.metrics.hole_punched();
                }
                Err(e) => {
                    tracing::debug!(peer = %remote_peer_id, error = %e, "hole punching failed")
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad_event(event),
            _ => {}
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => self.on_inbound_put(source, record),
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(found))) => {
                    let quorum = self.config.get_quorum.max(1);
                    let Some(get) = self.gets.get_mut(&id) else {
                        return;
                    };
                    // Our own copy is read in `finish_get`; only remote
                    // records are collected (and validated) here.
                    if found.peer.is_some() {
                        match Dictionary::decode(&found.record.value) {
                            Ok(dict) => get.found.push(dict),
                            Err(e) => {
                                tracing::debug!(peer = ?found.peer, error = %e, "malformed record in query result")
                            }
                        }
                    }
                    get.local |= found.peer.is_none();
                    let answered = get.found.len() + usize::from(get.local);
                    if answered >= quorum || step.last {
                        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                            q.finish();
                        }
                        self.finish_get(id);
                    }
                }
                QueryResult::GetRecord(_) => self.finish_get(id),
                QueryResult::PutRecord(result) => self.puts.finished(
                    id,
                    result.map(|_| ()).map_err(|e| {
                        P2pError::Network(format!("no peer acknowledged the record: {e}"))
                    }),
                ),
                QueryResult::Bootstrap(result) if step.last || result.is_err() => {
                    if let Some(reply) = self.bootstraps.remove(&id) {
                        let _ = reply.send(
                            result
                                .map(|_| ())
                                .map_err(|e| P2pError::Network(format!("bootstrap: {e}"))),
                        );
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(puts: &mut PendingPuts<u32>, ids: &[u32]) -> oneshot::Receiver<Result<()>> {
        let (tx, rx) = oneshot::channel();
        puts.insert(ids, tx);
        rx
    }

    fn failure() -> Result<()> {
        Err(P2pError::Network("no peer acknowledged".into()))
    }

    #[test]
    fn a_put_sent_two_ways_answers_with_the_first_acknowledgement() {
        let mut puts = PendingPuts::default();
        let mut first = put(&mut puts, &[1, 2]);
        puts.finished(2, Ok(()));
        assert!(matches!(first.try_recv(), Ok(Ok(()))));
        // The slower way finishing later changes nothing.
        puts.finished(1, failure());
        assert!(puts.writers.is_empty() && puts.queries.is_empty());

        // One way failing first still waits for the other.
        let mut second = put(&mut puts, &[3, 4]);
        puts.finished(3, failure());
        assert!(second.try_recv().is_err(), "answered before both ended");
        puts.finished(4, Ok(()));
        assert!(matches!(second.try_recv(), Ok(Ok(()))));
    }

    #[test]
    fn a_put_fails_only_when_every_way_failed() {
        let mut puts = PendingPuts::default();
        let mut rx = put(&mut puts, &[7, 8]);
        puts.finished(8, failure());
        puts.finished(7, failure());
        assert!(matches!(rx.try_recv(), Ok(Err(_))));
        // A put with one way (no connected peer) fails with it.
        let mut lone = put(&mut puts, &[9]);
        puts.finished(9, failure());
        assert!(matches!(lone.try_recv(), Ok(Err(_))));
        assert!(puts.writers.is_empty() && puts.queries.is_empty());
    }
}
