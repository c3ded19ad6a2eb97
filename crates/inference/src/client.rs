//! The client side: embedding and head held locally, blocks run by a chain
//! of servers found in the DHT, with failover.
//!
//! A [`SwarmClient`] is shared by many sequences; each [`SwarmSession`] is
//! one sequence (a [`LanguageModel`]) with one span session per hop. The
//! session keeps every step each hop was sent (in the sizes they were
//! sent), so when a server fails it can ban it, re-route the blocks from
//! that hop on, replay the same steps to rebuild the new servers' caches
//! and go on: the replayed computation is the original one, step for step,
//! so a greedy generation yields exactly the uninterrupted tokens.
//!
//! Admission is not a fault. A server whose cache is full, or that refuses
//! the request itself, is avoided for that sequence only and never banned;
//! [`SwarmSession::open_route`] fits a sequence's reservation to what some
//! route can hold. Only faults (timeouts, broken sessions, malformed or
//! failed answers, hidden states of the wrong size or not finite, wrong
//! spans) ban a server, for a time that doubles with each fault, decays
//! while it behaves, and resets after a success.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use hypertensor_model::{
    ChatTemplate, Embedding, GgufFile, Head, HeadBatcher, HiddenStates, LanguageModel, ModelConfig,
    ModelError, PromptTuning, Tokenizer,
};
use hypertensor_p2p::{Client, Multiaddr, PeerId, RpcSession};
use serde_json::json;
use tokio::runtime::Handle;

use crate::announce::{ServerInfo, ServerState, block_key};
use crate::bans::{BanPolicy, Bans};
use crate::error::{InferenceError, Result};
use crate::routing::{Candidate, largest_reservation, shortest_route};
use crate::spot_check::{CheckJob, Checker};
use crate::wire::{
    Answer, Dtype, Forward, MAX_FORWARD, MAX_SESSION_PROMPT_BYTES, OpenRequest, PING_METHOD,
    PUSHED_REPLY, PushToken, Refusal, SESSION_METHOD, SessionPrompts, Step, decode_open_reply,
    decode_step_reply,
};
use hypertensor_consensus::evidence::Transcript;
use hypertensor_primitives::{H256, sha256};

/// How a client routes and recovers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The model's name in DHT keys.
    pub model: String,
    /// Longest wait for a server's answer to an opening or a step of
    /// several tokens (a prompt).
    pub step_timeout: Duration,
    /// Longest wait for a server's answer to a one-token (decode) step,
    /// which takes milliseconds: a server whose link was cut is given up
    /// after this, not after `step_timeout`.
    pub decode_timeout: Duration,
    /// First ban of a failed server; doubled at each further failure.
    pub ban_base: Duration,
    /// Longest ban.
    pub ban_max: Duration,
    /// A server's strike count drops by one for each such period without
    /// a fault (and resets after a successful step).
    pub ban_decay: Duration,
    /// Failed servers tolerated within one step before giving up.
    pub max_failures: usize,
    /// Most token positions one session reserves on each server (default:
    /// the context). [`SwarmClient::session`] reserves this much; sessions
    /// fitted by [`SwarmSession::open_route`] reserve at most this much.
    pub session_tokens: Option<usize>,
    /// Encoding of hidden states (f32 is lossless).
    pub dtype: Dtype,
    /// Whether each server sends its output straight to the next server
    /// of the route (push), so a step costs one trip through the route
    /// instead of a round trip per server; the client still receives every
    /// server's output, so a failure mid-route replays exactly.
    pub push: bool,
    /// Share of sequences spot-checked after they end: one hop's inputs
    /// are replayed to another server holding the same blocks and the
    /// outputs compared (see [`crate::spot_check`]). 0 turns checks off.
    pub check_rate: f64,
    /// Seed of the draws that pick which sequences and hops are checked
    /// (and the checking servers); `None` seeds from the OS.
    pub check_seed: Option<u64>,
}

impl ClientConfig {
    /// How long a step of `n` tokens may take to be answered.
    fn timeout_for(&self, n: usize) -> Duration {
        if n == 1 {
            self.decode_timeout.min(self.step_timeout)
        } else {
            self.step_timeout
        }
    }

    /// Defaults: 30 s step timeout (5 s for a decode step), bans from 5 s
    /// to 10 min decaying by one strike a minute, 8 failures, f32 hidden
    /// states, push on, [`DEFAULT_CHECK_RATE`] of sequences spot-checked.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            step_timeout: Duration::from_secs(30),
            decode_timeout: Duration::from_secs(5),
            ban_base: Duration::from_secs(5),
            ban_max: Duration::from_secs(600),
            ban_decay: Duration::from_secs(60),
            max_failures: 8,
            session_tokens: None,
            dtype: Dtype::F32,
            push: true,
            check_rate: DEFAULT_CHECK_RATE,
            check_seed: None,
        }
    }
}

/// Share of sequences spot-checked by default: each check costs the
/// swarm one more pass over one hop's inputs, so 5% of sequences on
/// routes of three hops add under 2% to the swarm's work (measured in
/// `docs/benchmarks.md`), while a server cheating on every sequence it
/// serves is checked within about 60 of them in expectation.
pub const DEFAULT_CHECK_RATE: f64 = 0.05;

/// Counters of what the client went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Span sessions opened.
    pub sessions_opened: u64,
    /// Openings or steps servers refused without fault (cache budget
    /// full, the request itself refused).
    pub refusals: u64,
    /// Servers that failed during a session or could not be reached.
    pub failures: u64,
    /// Bans given for faults.
    pub bans: u64,
    /// Hops of a running sequence moved to another server after theirs
    /// failed (the sequence went on with the same tokens).
    pub failovers: u64,
    /// Sequences handed to the spot checker (drawn, and fit to check);
    /// each ends as one of `checks` or `checks_skipped`.
    pub checks_started: u64,
    /// Spot checks that compared a hop's outputs with another server's.
    pub checks: u64,
    /// Spot checks whose outputs agreed.
    pub checks_passed: u64,
    /// Spot checks that found no other server holding the same blocks,
    /// or whose replay failed.
    pub checks_skipped: u64,
    /// Disagreements no third server could settle.
    pub checks_unresolved: u64,
    /// Servers convicted by verified evidence (banned for good).
    pub convictions: u64,
}

/// Announced servers with their announcements.
type Servers = Vec<(PeerId, ServerInfo)>;

/// How long one DHT read of the servers serves every sequence.
const SERVERS_TTL: Duration = Duration::from_secs(1);

/// How long a server's own report of its free cache (in a refusal) is
/// trusted over its announcement, which is refreshed less often.
const REPORTED_FREE_TTL: Duration = Duration::from_secs(5);
/// Longest [`SwarmSession::open_route`] waits for room to free before a
/// request is refused for capacity.
const CAPACITY_WAIT: Duration = Duration::from_secs(2);
/// Times [`SwarmSession::open_route`] plans again after servers turned out
/// fuller than announced.
const PLAN_ATTEMPTS: usize = 4;

/// A server that may carry part of a route, with what it can hold.
#[derive(Debug, Clone)]
struct Offer {
    candidate: Candidate,
    free_tokens: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) bans: Bans,
    /// Free cache tokens servers reported when refusing, and when.
    reported_free: HashMap<PeerId, (u64, Instant)>,
    latencies: HashMap<PeerId, Duration>,
    /// One lock per server being probed, so concurrent probes share one.
    probing: HashMap<PeerId, Arc<tokio::sync::Mutex<()>>>,
    dialed: HashSet<PeerId>,
    pub(crate) stats: ClientStats,
    /// Servers convicted of serving wrong outputs: never routed to again.
    pub(crate) convicted: HashSet<PeerId>,
}

/// The ends of a model plus a P2P node to reach the blocks.
pub struct SwarmClient {
    p2p: Client,
    handle: Handle,
    config: ClientConfig,
    model: ModelConfig,
    embedding: Embedding,
    /// The head, its products combined across concurrent sequences.
    head: HeadBatcher,
    /// Hops this client has open now, per server: load its announcements
    /// may not show yet (see [`Candidate::own_sessions`]).
    open_hops: Arc<Mutex<HashMap<PeerId, u32>>>,
    tokenizer: Tokenizer,
    chat_template: Option<ChatTemplate>,
    shared: Arc<Mutex<Shared>>,
    /// Runs the spot checks.
    checker: Arc<Checker>,
    /// The last DHT read of the servers, and when it finished.
    servers_cache: tokio::sync::Mutex<Option<(Instant, Servers)>>,
}

impl std::fmt::Debug for SwarmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmClient")
            .field("model", &self.config.model)
            .field("peer", &self.p2p.peer_id())
            .finish_non_exhaustive()
    }
}

impl SwarmClient {
    /// Loads the embedding, head, tokenizer and chat template of the GGUF
    /// at `path` (no block is read). `handle` runs the network calls of
    /// [`SwarmSession::forward`], which blocks: call it off the runtime.
    pub fn load(path: &Path, p2p: Client, handle: Handle, config: ClientConfig) -> Result<Self> {
        let gguf = GgufFile::open(path)?;
        let model = gguf.config()?;
        let tokenizer = Tokenizer::from_gguf(gguf.metadata()).map_err(ModelError::from)?;
        let chat_template = ChatTemplate::from_gguf(gguf.metadata()).ok();
        let embedding = Embedding::load(&gguf)?;
        let head = HeadBatcher::new(Arc::new(Head::load(&gguf, Some(&embedding))?));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let open_hops = Arc::default();
        let checker = Arc::new(Checker::new(
            p2p.clone(),
            config.clone(),
            model.hidden_size,
            model.n_blocks,
            shared.clone(),
            Arc::clone(&open_hops),
        ));
        Ok(Self {
            p2p,
            handle,
            config,
            model,
            embedding,
            head,
            open_hops,
            tokenizer,
            chat_template,
            shared,
            checker,
            servers_cache: tokio::sync::Mutex::new(None),
        })
    }

    /// The model hyper-parameters.
    pub fn model_config(&self) -> &ModelConfig {
        &self.model
    }

    /// The client's configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template, if the file has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// The runtime the client's network calls run on.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The P2P node.
    pub fn p2p(&self) -> &Client {
        &self.p2p
    }

    /// What happened so far.
    pub fn stats(&self) -> ClientStats {
        self.lock().stats
    }

    /// A new, empty sequence reserving the configured number of positions
    /// (by default the whole context) on each server.
    pub fn session(&self) -> SwarmSession<'_> {
        self.session_for(self.max_session_tokens())
    }

    /// A new, empty sequence that will hold at most `tokens` positions (so
    /// servers reserve only that much cache for it; at most the configured
    /// [`ClientConfig::session_tokens`]).
    pub fn session_for(&self, tokens: usize) -> SwarmSession<'_> {
        SwarmSession {
            client: self,
            tuning: None,
            hops: Vec::new(),
            inputs: Vec::new(),
            answers: Vec::new(),
            checked: self.checker.draw(),
            positions: 0,
            reserve: tokens.clamp(1, self.max_session_tokens()),
            avoided: HashSet::new(),
            rejection: None,
            relay_only: false,
        }
    }

    /// A new sequence of at most `tokens` positions after a trained
    /// prompt's rows, as [`SwarmClient::session_for`]. The prompt's rows go
    /// before the sequence's first token embeddings here; a deep prompt's
    /// rows for each span go to its server when the session opens there
    /// (and are named in its receipts). Fails on a prompt of another
    /// shape than the model's.
    pub fn tuned_session_for(
        &self,
        tokens: usize,
        tuning: &PromptTuning,
    ) -> std::result::Result<SwarmSession<'_>, ModelError> {
        check_swarm_tuning(tuning, self.model.hidden_size, self.model.n_blocks)?;
        let mut session = self.session_for(tokens.saturating_add(tuning.tokens()));
        session.tuning = Some(tuning.clone());
        Ok(session)
    }

    /// Transformer blocks of the model the swarm serves.
    pub fn block_count(&self) -> usize {
        self.model.n_blocks
    }

    /// The most positions one session may reserve: the context, or less
    /// when [`ClientConfig::session_tokens`] says so.
    pub fn max_session_tokens(&self) -> usize {
        let context = self.model.context_length.max(1);
        self.config
            .session_tokens
            .unwrap_or(context)
            .clamp(1, context)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_banned(&self, peer: &PeerId) -> bool {
        let shared = self.lock();
        shared.convicted.contains(peer) || shared.bans.is_banned(peer, Instant::now())
    }

    /// Bans `peer` for a fault, for a time doubling with each strike; a
    /// strike is forgiven for each [`ClientConfig::ban_decay`] without one.
    fn ban(&self, peer: PeerId, error: &InferenceError) {
        let policy = BanPolicy {
            base: self.config.ban_base,
            max: self.config.ban_max,
            decay: self.config.ban_decay,
        };
        let mut shared = self.lock();
        shared.stats.failures += 1;
        shared.stats.bans += 1;
        let (strikes, length) = shared.bans.fault(peer, Instant::now(), &policy);
        shared.latencies.remove(&peer);
        tracing::info!(%peer, %error, ban = ?length, strikes, "server banned");
    }

    /// Forgets `peer`'s strikes: it just served a step.
    fn served(&self, peer: &PeerId) {
        self.lock().bans.served(peer);
    }

    /// Notes a refusal without fault; a full server's report of its free
    /// cache is trusted over its announcement for a while.
    fn refused(&self, error: &InferenceError) {
        let mut shared = self.lock();
        shared.stats.refusals += 1;
        if let InferenceError::Full { peer, free_tokens } = error {
            shared
                .reported_free
                .insert(*peer, (*free_tokens, Instant::now()));
        }
        tracing::debug!(%error, "server refused without fault");
    }

    /// The strikes `peer` has now (0 when it has none), for tests and
    /// status views.
    pub fn strikes(&self, peer: &PeerId) -> u32 {
        self.lock().bans.strikes(peer)
    }

    /// The free cache of `peer` as best known: its announcement, or its
    /// own fresher report when it refused for capacity recently.
    fn free_tokens(&self, peer: &PeerId, announced: u64) -> u64 {
        match self.lock().reported_free.get(peer) {
            Some((free, at)) if at.elapsed() < REPORTED_FREE_TTL => *free,
            _ => announced,
        }
    }

    /// Every online server announced for blocks `from..`, deduplicated.
    /// The DHT is read at most once per [`SERVERS_TTL`] however many
    /// sequences ask at once (one read is `n_blocks` lookups; a read per
    /// request would flood the peers' connections).
    pub async fn servers(&self, from: usize) -> Result<Vec<(PeerId, ServerInfo)>> {
        self.servers_since(from, false).await
    }

    /// [`SwarmClient::servers`], reading the DHT again when `fresh` or when
    /// the last read is older than [`SERVERS_TTL`].
    async fn servers_since(&self, from: usize, fresh: bool) -> Result<Vec<(PeerId, ServerInfo)>> {
        let asked = Instant::now();
        let mut cache = self.servers_cache.lock().await;
        // A read that finished after this call began is fresh enough.
        let usable = cache.as_ref().filter(|(at, _)| {
            if fresh {
                *at >= asked
            } else {
                at.elapsed() < SERVERS_TTL
            }
        });
        let all = match usable {
            Some((_, all)) => all.clone(),
            None => {
                let all = announced_servers(&self.p2p, &self.config.model, self.model.n_blocks, 0)
                    .await?;
                *cache = Some((Instant::now(), all.clone()));
                all
            }
        };
        Ok(all
            .into_iter()
            .filter(|(_, info)| info.end as usize > from)
            .collect())
    }

    /// Routing candidates from block `from`: announced, not banned, and
    /// answering a latency probe, with the cache each can still reserve.
    /// `fresh` reads the DHT again rather than the last read.
    async fn candidates(&self, from: usize, fresh: bool) -> Result<Vec<Offer>> {
        let servers = self.servers_since(from, fresh).await?;
        let probes = servers
            .into_iter()
            .filter(|(peer, _)| !self.is_banned(peer))
            .map(|(peer, info)| async move {
                let latency = self.latency(peer, &info.addrs).await;
                (peer, info, latency)
            });
        let mut out = Vec::new();
        for (peer, info, latency) in join_all(probes).await {
            let free_tokens = self.free_tokens(&peer, info.free_cache_tokens);
            let own_sessions = self.own_sessions(&peer);
            match latency {
                Ok(latency) => out.push(Offer {
                    free_tokens,
                    candidate: Candidate {
                        peer,
                        start: info.start as usize,
                        end: info.end as usize,
                        throughput: info.throughput,
                        sessions: info.sessions,
                        own_sessions,
                        latency,
                        relayed: info.relayed,
                    },
                }),
                // A server whose probe failed while this one waited is
                // banned already: one fault, one strike.
                Err(_) if self.is_banned(&peer) => {}
                Err(e) => self.ban(peer, &e),
            }
        }
        Ok(out)
    }

    /// Hops this client has open on `peer` now.
    fn own_sessions(&self, peer: &PeerId) -> u32 {
        let open = self.open_hops.lock().unwrap_or_else(|p| p.into_inner());
        open.get(peer).copied().unwrap_or(0)
    }

    /// Counts a hop open on `peer` until the returned guard drops.
    fn hop_opened(&self, peer: PeerId) -> HopLoad {
        HopLoad::new(&self.open_hops, peer)
    }

    /// The measured round trip to `peer` (cached), dialing its announced
    /// addresses the first time. Concurrent sequences asking about the same
    /// server wait for one probe (a burst of first requests would otherwise
    /// probe it over a connection still being dialed, and ban it when those
    /// probes fail).
    async fn latency(&self, peer: PeerId, addrs: &[String]) -> Result<Duration> {
        if let Some(l) = self.lock().latencies.get(&peer) {
            return Ok(*l);
        }
        let probing = self.lock().probing.entry(peer).or_default().clone();
        let _one_at_a_time = probing.lock().await;
        if let Some(l) = self.lock().latencies.get(&peer) {
            return Ok(*l);
        }
        if self.is_banned(&peer) {
            // The probe this one waited for failed.
            return Err(InferenceError::ServerFailed {
                peer,
                reason: "its latency probe failed".into(),
            });
        }
        self.dial(peer, addrs).await;
        // A probe whose connection closed under it (one of two
        // simultaneous dials is dropped) is tried once more before it
        // counts against the server.
        let mut tries = 0;
        loop {
            tries += 1;
            let start = Instant::now();
            let probe = self.p2p.request(peer, PING_METHOD, Vec::new());
            return match tokio::time::timeout(self.config.step_timeout, probe).await {
                Ok(Ok(_)) => {
                    let latency = start.elapsed();
                    self.lock().latencies.insert(peer, latency);
                    Ok(latency)
                }
                Ok(Err(e)) if tries < 2 => {
                    tracing::debug!(%peer, error = %e, "latency probe failed; retrying once");
                    continue;
                }
                Ok(Err(e)) => Err(InferenceError::ServerFailed {
                    peer,
                    reason: format!("latency probe failed: {e}"),
                }),
                Err(_) => Err(InferenceError::ServerFailed {
                    peer,
                    reason: "latency probe timed out".into(),
                }),
            };
        }
    }

    async fn dial(&self, peer: PeerId, addrs: &[String]) {
        if !self.lock().dialed.insert(peer) {
            return;
        }
        for addr in addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
            if self.p2p.dial(addr).await.is_ok() {
                break;
            }
        }
    }

    /// A JSON view of the swarm: servers, spans, throughput, coverage.
    /// Servers this client banned are listed (state `banned`) but cover
    /// nothing: routes never use them.
    pub async fn swarm_json(&self) -> Result<serde_json::Value> {
        let servers = self.servers(0).await?;
        let mut coverage = vec![0usize; self.model.n_blocks];
        for (_, info) in servers.iter().filter(|(peer, _)| !self.is_banned(peer)) {
            for c in &mut coverage[info.start as usize..info.end as usize] {
                *c += 1;
            }
        }
        let latencies = self.lock().latencies.clone();
        Ok(json!({
            "model": self.config.model,
            "blocks": self.model.n_blocks,
            "servers": servers.iter().map(|(peer, info)| json!({
                "peer_id": peer.to_string(),
                "start": info.start,
                "end": info.end,
                "state": if self.is_banned(peer) { "banned" } else { "online" },
                "throughput": info.throughput,
                "latency_ms": latencies.get(peer).map(|l| l.as_secs_f64() * 1e3),
                "free_cache_tokens": info.free_cache_tokens,
                "sessions": info.sessions,
                "version": info.version,
                "relayed": info.relayed,
            })).collect::<Vec<_>>(),
            "coverage": coverage,
            "complete": coverage.iter().all(|c| *c > 0),
        }))
    }
}

/// Every online server of `model` (with `n_blocks` blocks) announced for
/// blocks `from..`, read from the DHT and deduplicated by peer. Entries
/// that do not decode, are not online, or are filed under a block outside
/// their own span are skipped.
pub async fn announced_servers(
    p2p: &Client,
    model: &str,
    n_blocks: usize,
    from: usize,
) -> Result<Vec<(PeerId, ServerInfo)>> {
    let gets = (from..n_blocks).map(|b| {
        let key = block_key(model, b);
        async move { p2p.get(&key).await }
    });
    let mut seen = HashMap::new();
    for (offset, dict) in join_all(gets).await.into_iter().enumerate() {
        let block = from + offset;
        let Ok(dict) = dict else { continue };
        for entry in dict.entries() {
            let Ok(info) = ServerInfo::decode(&entry.value) else {
                continue;
            };
            let (start, end) = (info.start as usize, info.end as usize);
            if info.state != ServerState::Online || end > n_blocks || !(start..end).contains(&block)
            {
                continue;
            }
            seen.entry(entry.subkey).or_insert(info);
        }
    }
    let mut servers: Vec<_> = seen.into_iter().collect();
    servers.sort_by_key(|(_, info)| (info.start, info.end));
    Ok(servers)
}

/// One open span session.
pub(crate) struct Hop {
    pub(crate) peer: PeerId,
    pub(crate) start: usize,
    pub(crate) end: usize,
    session: RpcSession,
    /// The session's push token (given to the previous hop's server).
    token: PushToken,
    /// The digest of every input the session took (what the server's
    /// receipts sign).
    pub(crate) transcript: Transcript,
    /// The deep prompt rows the session's blocks add, if any.
    pub(crate) prompts: Option<SessionPrompts>,
    /// A signed answer that was not `n` finite rows: evidence on its own.
    bad: Option<BadAnswer>,
    _load: HopLoad,
}

/// A signed answer to a step that was malformed or not finite.
pub(crate) struct BadAnswer {
    /// The answer.
    pub(crate) answer: Answer,
    /// The step's position.
    pub(crate) position: u32,
    /// The step's rows.
    pub(crate) n_tokens: u32,
    /// The session's transcript digest after the step.
    pub(crate) inputs: hypertensor_primitives::H256,
}

impl Hop {
    /// The nonce of the request that opened the session.
    pub(crate) fn nonce(&self) -> [u8; 16] {
        self.session.nonce()
    }
}

/// A hop counted in its client's load on a server while it lives.
pub(crate) struct HopLoad {
    open: Arc<Mutex<HashMap<PeerId, u32>>>,
    peer: PeerId,
}

impl HopLoad {
    /// Counts one more hop on `peer` until dropped.
    pub(crate) fn new(open: &Arc<Mutex<HashMap<PeerId, u32>>>, peer: PeerId) -> Self {
        *open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer)
            .or_default() += 1;
        HopLoad {
            open: open.clone(),
            peer,
        }
    }
}

impl Drop for HopLoad {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

/// One sequence generated through the swarm.
pub struct SwarmSession<'a> {
    client: &'a SwarmClient,
    /// The trained prompt whose rows start the sequence, if any.
    tuning: Option<PromptTuning>,
    hops: Vec<Hop>,
    /// `inputs[i]`: every step hop `i` was sent, in order.
    inputs: Vec<Vec<Vec<f32>>>,
    /// `answers[i]`: hop `i`'s signed answers to those steps, kept only
    /// when this sequence is to be spot-checked.
    answers: Vec<Vec<Answer>>,
    /// Whether this sequence is spot-checked when it ends.
    checked: bool,
    positions: usize,
    /// Positions reserved on each server (the sequence's context).
    reserve: usize,
    /// Servers this sequence avoids without banning them: full, or they
    /// refused its request.
    avoided: HashSet<PeerId>,
    /// The last refusal of the request itself, reported if no route is
    /// left (so a refused input is a 400, not a 503).
    rejection: Option<InferenceError>,
    /// Set once a pushed step came back late or wrong from a later hop:
    /// this sequence's steps are relayed by the client from then on.
    relay_only: bool,
}

impl std::fmt::Debug for SwarmSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmSession")
            .field("route", &self.route())
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl SwarmSession<'_> {
    /// The servers of the current route, with their spans.
    pub fn route(&self) -> Vec<(PeerId, std::ops::Range<usize>)> {
        self.hops.iter().map(|h| (h.peer, h.start..h.end)).collect()
    }

    fn reserve(&self) -> usize {
        self.reserve
    }

    /// Opens a route for a new sequence before its first step, fitting the
    /// reservation to what the swarm can hold: the requested positions, or
    /// fewer when no route has room for them, but at least `min_tokens`
    /// (else [`InferenceError::InsufficientCapacity`]). Servers that turn
    /// out fuller than they announced are avoided and the route planned
    /// again. Returns the positions reserved, which
    /// [`LanguageModel::context_length`] reports from then on.
    ///
    /// When no route has room, it waits up to [`CAPACITY_WAIT`] (pauses
    /// doubling from 100 ms) for room to free before giving up: sessions
    /// that just ended (a client's previous request among them) release
    /// their reservations a moment after they close.
    pub async fn open_route(&mut self, min_tokens: usize) -> Result<usize> {
        let deadline = tokio::time::Instant::now() + CAPACITY_WAIT;
        let mut pause = Duration::from_millis(100);
        let wanted = self.reserve;
        loop {
            self.reserve = wanted;
            match self.try_open_route(min_tokens).await {
                Err(
                    e @ (InferenceError::InsufficientCapacity { .. }
                    | InferenceError::NoRoute { .. }),
                ) if tokio::time::Instant::now() + pause <= deadline => {
                    tracing::debug!(error = %e, ?pause, "no room yet; waiting for some to free");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                outcome => return outcome,
            }
        }
    }

    /// One attempt of [`SwarmSession::open_route`], without waiting.
    async fn try_open_route(&mut self, min_tokens: usize) -> Result<usize> {
        let total = self.client.model.n_blocks;
        let wanted = self.reserve;
        let mut failures = 0;
        let mut last = None;
        for attempt in 0..PLAN_ATTEMPTS {
            let mut offers: Vec<Offer> = self
                .client
                .candidates(0, attempt > 0)
                .await?
                .into_iter()
                .filter(|o| !self.avoided.contains(&o.candidate.peer))
                .collect();
            let candidates: Vec<Candidate> = offers.iter().map(|o| o.candidate.clone()).collect();
            let plan = |offers: &[Offer]| {
                let free: Vec<u64> = offers.iter().map(|o| o.free_tokens).collect();
                largest_reservation(&candidates, &free, 0, total, wanted as u64)
            };
            let Some(mut most) = plan(&offers) else {
                if attempt == 0 {
                    // The last read may predate a server that just joined.
                    continue;
                }
                return Err(self.no_route(0));
            };
            if (most as usize) < min_tokens && attempt == 0 {
                // What we know may be seconds old (sessions may have ended
                // since): ask the servers themselves once; a full one
                // answers with its room now, which the next plan uses.
                for offer in &mut offers {
                    offer.free_tokens = wanted as u64;
                }
                most = plan(&offers).unwrap_or(0);
            }
            let most = most as usize;
            if most < min_tokens {
                return Err(InferenceError::InsufficientCapacity {
                    needed: min_tokens,
                    available: most,
                });
            }
            self.reserve = most;
            match self
                .extend_route(0, Vec::new(), &mut failures, Some(offers))
                .await
            {
                Ok(()) => return Ok(self.reserve),
                Err(e @ InferenceError::NoRoute { .. }) => {
                    // Planned on stale figures: the servers that refused
                    // are avoided now; plan again with their reports.
                    self.hops.clear();
                    self.inputs.clear();
                    self.answers.clear();
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| self.no_route(0)))
    }

    /// Why no route is left from `from`: the request's own refusal if a
    /// server refused it, else no route.
    fn no_route(&mut self, from: usize) -> InferenceError {
        self.rejection
            .take()
            .unwrap_or_else(|| InferenceError::NoRoute {
                model: self.client.config.model.clone(),
                from,
                to: self.client.model.n_blocks,
            })
    }

    /// Handles a server's error: a fault bans it; the request refused makes
    /// this sequence avoid it; a full server is only noted (its room is
    /// planned with). Returns whether it was a fault.
    fn on_error(&mut self, peer: PeerId, error: InferenceError) -> bool {
        match error {
            InferenceError::Full { .. } => {
                self.client.refused(&error);
                false
            }
            InferenceError::Rejected { .. } => {
                self.client.refused(&error);
                self.avoided.insert(peer);
                self.rejection = Some(error);
                false
            }
            fault => {
                self.client.ban(peer, &fault);
                true
            }
        }
    }

    /// Sends one step of `n` rows through every hop, recovering from
    /// failed servers.
    async fn step(&mut self, mut x: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let mut failures = 0;
        if self.hops.is_empty() {
            self.extend_route(0, Vec::new(), &mut failures, None)
                .await?;
        }
        let mut i = 0;
        if self.client.config.push
            && !self.relay_only
            && self.hops.len() > 1
            && self.hops.len() <= MAX_FORWARD + 1
        {
            let width = self.client.model.hidden_size;
            let config = &self.client.config;
            let pushed = push_step(&mut self.hops, self.positions, n, width, &x, config).await;
            let (outputs, failure) = match pushed {
                Ok(outputs) => (outputs, None),
                Err((failure, outputs)) => (outputs, Some(failure)),
            };
            for out in outputs {
                self.client.served(&self.hops[i].peer);
                self.keep(i, &mut x, out);
                i += 1;
            }
            match failure {
                None => {}
                Some(PushFailure::First(e)) => {
                    // As a relayed step's failure at hop 0.
                    self.replace_hop(0, e, &mut failures).await?;
                }
                Some(PushFailure::Later) => {
                    // No one is proven at fault. The sessions stay: this
                    // step is sent on by the client from hop `i` (a server
                    // that did get the push rewinds to the step's position
                    // and recomputes it; its late answer, marked as one to
                    // a push, is skipped), and so are this sequence's next
                    // steps, where a dead or wrong server is caught and
                    // banned as usual.
                    tracing::info!(
                        peer = %self.hops[i].peer,
                        "pushed step late or wrong; relaying this sequence from here"
                    );
                    self.report_bad(i);
                    self.relay_only = true;
                }
            }
        }
        while i < self.hops.len() {
            let hop = &mut self.hops[i];
            let width = self.client.model.hidden_size;
            match send_step(hop, self.positions, n, width, &x, &self.client.config).await {
                Ok(out) => {
                    self.client.served(&hop.peer);
                    self.keep(i, &mut x, out);
                    i += 1;
                }
                Err(e) => self.replace_hop(i, e, &mut failures).await?,
            }
        }
        self.positions += n;
        Ok(x)
    }

    /// Keeps hop `i`'s input `x` of this step (for replays) and its answer
    /// (for a spot check), and makes the answer's output the next input.
    fn keep(&mut self, i: usize, x: &mut Vec<f32>, mut answer: Answer) {
        let output = std::mem::take(&mut answer.values);
        self.inputs[i].push(std::mem::replace(x, output));
        if self.checked {
            self.answers[i].push(answer);
        }
    }

    /// Hands the sequence that just ended to the spot checker, if it was
    /// drawn for a check: one hop, drawn at random, with its inputs and
    /// the answers its server signed. A sequence whose push fell back to
    /// relaying is checked too: a step run twice at one position counts
    /// once in both transcripts.
    fn finish(&mut self) {
        let hops = std::mem::take(&mut self.hops);
        let inputs = std::mem::take(&mut self.inputs);
        let answers = std::mem::take(&mut self.answers);
        self.positions = 0;
        if !self.checked || hops.is_empty() {
            return;
        }
        let i = self.client.checker.draw_index(hops.len());
        let (Some(hop), Some(steps), Some(answers)) = (
            hops.get(i),
            inputs.into_iter().nth(i),
            answers.into_iter().nth(i),
        ) else {
            return;
        };
        if steps.is_empty() || steps.len() != answers.len() {
            return;
        }
        let job = CheckJob {
            peer: hop.peer,
            start: hop.start,
            end: hop.end,
            reserve: self.reserve,
            session: hop.nonce(),
            prompts: hop.prompts.clone(),
            steps,
            answers,
        };
        drop(hops);
        self.client.lock().stats.checks_started += 1;
        self.client
            .handle
            .spawn(self.client.checker.clone().check(job));
    }

    /// Hands hop `i`'s malformed or non-finite signed answer, if it gave
    /// one, to the checker: that evidence convicts its server alone.
    fn report_bad(&mut self, i: usize) {
        let Some(hop) = self.hops.get_mut(i) else {
            return;
        };
        if let Some(bad) = hop.bad.take() {
            let (peer, blocks, session) = (hop.peer, hop.start..hop.end, hop.nonce());
            let checker = self.client.checker.clone();
            self.client
                .handle
                .spawn(checker.convict_alone(peer, blocks, session, bad));
        }
    }

    /// Hop `i` failed a step with `error`: the server is handled by the
    /// kind of error, hops `i..` are dropped and the route rebuilt from hop
    /// `i`'s first block with its inputs replayed (more than
    /// `max_failures` in one step gives up).
    async fn replace_hop(
        &mut self,
        i: usize,
        error: InferenceError,
        failures: &mut usize,
    ) -> Result<()> {
        let (peer, start) = (self.hops[i].peer, self.hops[i].start);
        self.report_bad(i);
        let last = error.to_string();
        *failures += 1;
        self.client.lock().stats.failovers += 1;
        self.on_error(peer, error);
        if *failures > self.client.config.max_failures {
            return Err(InferenceError::GaveUp {
                attempts: *failures,
                last,
            });
        }
        self.hops.truncate(i);
        let replay = self.inputs.drain(i..).next().unwrap_or_default();
        self.answers.truncate(i);
        self.extend_route(start, replay, failures, None).await
    }

    /// Opens hops covering `from..n_blocks`, replaying `steps` (the inputs
    /// the old hop at `from` had received) through each new hop in turn.
    /// Only servers with room for the reservation are tried; `offers`, when
    /// given, are used before reading the DHT again.
    async fn extend_route(
        &mut self,
        mut from: usize,
        mut steps: Vec<Vec<f32>>,
        failures: &mut usize,
        offers: Option<Vec<Offer>>,
    ) -> Result<()> {
        let total = self.client.model.n_blocks;
        let mut retried = HashSet::new();
        let mut refreshed = offers.is_none();
        let mut offers = match offers {
            Some(offers) => offers,
            None => self.client.candidates(from, false).await?,
        };
        while from < total {
            let usable: Vec<Candidate> = offers
                .iter()
                .filter(|o| {
                    o.free_tokens >= self.reserve as u64
                        && !self.avoided.contains(&o.candidate.peer)
                        && !self.client.is_banned(&o.candidate.peer)
                })
                .map(|o| o.candidate.clone())
                .collect();
            let Some(route) = shortest_route(&usable, from, total) else {
                if !refreshed {
                    refreshed = true;
                    offers = self.client.candidates(from, true).await?;
                    continue;
                }
                return Err(self.no_route(from));
            };
            let first = route[0].clone();
            match self.open_and_replay(&first, &steps).await {
                Ok((hop, mut answers)) => {
                    from = hop.end;
                    self.hops.push(hop);
                    let outputs = answers
                        .iter_mut()
                        .map(|a| std::mem::take(&mut a.values))
                        .collect();
                    self.inputs.push(std::mem::replace(&mut steps, outputs));
                    self.answers
                        .push(if self.checked { answers } else { Vec::new() });
                }
                // A stream that failed to open (its connection closed under
                // it) says nothing about the server yet: one more try, over
                // a fresh connection, before it counts as a fault.
                Err(InferenceError::P2p(e)) if retried.insert(first.peer) => {
                    tracing::debug!(peer = %first.peer, error = %e, "opening failed; retrying once");
                }
                Err(e) => {
                    if let InferenceError::Full { peer, free_tokens } = e {
                        // No room for this reservation, whatever figure it
                        // gives (a server claiming more room than it
                        // grants must not be tried again and again).
                        let below = (self.reserve as u64).saturating_sub(1);
                        for offer in offers.iter_mut().filter(|o| o.candidate.peer == peer) {
                            offer.free_tokens = free_tokens.min(below);
                        }
                    }
                    let last = e.to_string();
                    if self.on_error(first.peer, e) {
                        *failures += 1;
                    }
                    if *failures > self.client.config.max_failures {
                        return Err(InferenceError::GaveUp {
                            attempts: *failures,
                            last,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    async fn open_and_replay(
        &self,
        target: &Candidate,
        steps: &[Vec<f32>],
    ) -> Result<(Hop, Vec<Answer>)> {
        let load = self.client.hop_opened(target.peer);
        let blocks = target.start..target.end;
        let prompts = session_prompts(self.tuning.as_ref(), blocks.clone());
        let mut hop = open_hop(
            &self.client.p2p,
            &self.client.config,
            target.peer,
            blocks,
            self.reserve(),
            prompts,
            load,
        )
        .await?;
        self.client.lock().stats.sessions_opened += 1;
        let width = self.client.model.hidden_size;
        let answers = replay(&mut hop, steps, width, &self.client.config).await?;
        Ok((hop, answers))
    }
}

impl Drop for SwarmSession<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The deep prompt rows of `tuning` for `blocks`, as a session on them
/// carries them.
fn session_prompts(
    tuning: Option<&PromptTuning>,
    blocks: std::ops::Range<usize>,
) -> Option<SessionPrompts> {
    let deep = tuning?.deep()?;
    if blocks.end > deep.block_count() {
        return None;
    }
    let values = blocks.flat_map(|b| deep.block(b).iter().copied()).collect();
    Some(SessionPrompts {
        rows: deep.rows() as u32,
        values,
    })
}

/// Opens a span session on `peer` for `blocks`, reserving `reserve`
/// positions, whose blocks add `prompts`; `load` counts it in the
/// client's load on the server.
pub(crate) async fn open_hop(
    p2p: &Client,
    config: &ClientConfig,
    peer: PeerId,
    blocks: std::ops::Range<usize>,
    reserve: usize,
    prompts: Option<SessionPrompts>,
    load: HopLoad,
) -> Result<Hop> {
    let open = OpenRequest {
        model: config.model.clone(),
        start: blocks.start as u32,
        end: blocks.end as u32,
        dtype: config.dtype,
        max_tokens: reserve as u32,
        token: rand::random(),
        prompts,
    };
    let opening = async {
        let mut session = p2p
            .open_session(peer, SESSION_METHOD, open.encode())
            .await?;
        let reply = session
            .recv()
            .await?
            .ok_or_else(|| InferenceError::ServerFailed {
                peer,
                reason: "closed the session before answering".into(),
            })?;
        match decode_open_reply(&reply)? {
            Ok(()) => Ok(session),
            Err(refusal) => Err(refused(peer, refusal)),
        }
    };
    let session = tokio::time::timeout(config.step_timeout, opening)
        .await
        .map_err(|_| InferenceError::ServerFailed {
            peer,
            reason: "opening timed out".into(),
        })??;
    Ok(Hop {
        peer,
        start: blocks.start,
        end: blocks.end,
        session,
        token: open.token,
        transcript: open.transcript(),
        prompts: open.prompts,
        bad: None,
        _load: load,
    })
}

/// Sends `steps` (rows of `width`) through a fresh hop in order, from
/// position 0, and returns its answers.
pub(crate) async fn replay(
    hop: &mut Hop,
    steps: &[Vec<f32>],
    width: usize,
    config: &ClientConfig,
) -> Result<Vec<Answer>> {
    let mut answers = Vec::with_capacity(steps.len());
    let mut position = 0;
    for step in steps {
        let n = step.len() / width.max(1);
        answers.push(send_step(hop, position, n, width, step, config).await?);
        position += n;
    }
    Ok(answers)
}

/// The error for `peer`'s refusal, by its kind.
fn refused(peer: PeerId, refusal: Refusal) -> InferenceError {
    match refusal {
        Refusal::Full { free_tokens } => InferenceError::Full { peer, free_tokens },
        Refusal::Rejected(reason) => InferenceError::Rejected { peer, reason },
        Refusal::Unserved(reason) => InferenceError::Refused { peer, reason },
        Refusal::Failed(reason) => InferenceError::ServerFailed { peer, reason },
    }
}

/// Sends one step of `n` rows of `width` to a hop and waits for its
/// output, which must be `n` rows of `width` finite values: anything else
/// is [`InferenceError::BadHiddenStates`], a fault of the server.
pub(crate) async fn send_step(
    hop: &mut Hop,
    position: usize,
    n: usize,
    width: usize,
    values: &[f32],
    config: &ClientConfig,
) -> Result<Answer> {
    let peer = hop.peer;
    let failed = |reason: String| InferenceError::ServerFailed { peer, reason };
    let frame = Step {
        position: position as u32,
        n_tokens: n as u32,
        forward: Vec::new(),
        values: values.to_vec(),
    }
    .encode(config.dtype);
    let sent = take_input(hop, position, n, input_rows(&frame, n, width, config.dtype));
    let exchange = async {
        hop.session.send(&frame).await?;
        loop {
            let reply = hop.session.recv().await?;
            // A late answer to a step pushed before this sequence fell
            // back to relaying: not the answer to this step.
            if reply.as_ref().and_then(|r| r.first()) != Some(&PUSHED_REPLY) {
                return Ok::<_, InferenceError>(reply);
            }
        }
    };
    let reply = tokio::time::timeout(config.timeout_for(n), exchange)
        .await
        .map_err(|_| failed("step timed out".into()))??;
    let answer = read_step_reply(peer, reply.as_deref(), n, width, config);
    keep_bad(hop, &answer, reply.as_deref(), position, n, config.dtype);
    let answer = answer?;
    if answer.input != sent.0 {
        return Err(failed(
            "it computed on other inputs than it was sent".into(),
        ));
    }
    Ok(answer)
}

/// The input rows of a step `frame` of `n` rows of `width` (its tail).
fn input_rows(frame: &[u8], n: usize, width: usize, dtype: Dtype) -> &[u8] {
    &frame[frame.len().saturating_sub(n * width * dtype.size())..]
}

/// Keeps on `hop` a signed answer that failed for its hidden states (not
/// `n` finite rows): it convicts its server on its own.
fn keep_bad(
    hop: &mut Hop,
    outcome: &Result<Answer>,
    reply: Option<&[u8]>,
    position: usize,
    n: usize,
    dtype: Dtype,
) {
    if let (Err(InferenceError::BadHiddenStates { .. }), Some(reply)) = (outcome, reply)
        && let Ok(Ok(answer)) = decode_step_reply(reply, dtype)
    {
        hop.bad = Some(BadAnswer {
            answer,
            position: position as u32,
            n_tokens: n as u32,
            inputs: hop.transcript.digest(),
        });
    }
}

/// Notes in `hop`'s transcript a step's input rows (as encoded on the
/// wire), as its server does when it runs it; returns their SHA-256, which
/// the server's answer must name.
fn take_input(hop: &mut Hop, position: usize, n: usize, input: &[u8]) -> H256 {
    let hash = sha256(&[input]);
    hop.transcript.step_hashed(position as u32, n as u32, hash);
    hash
}

/// Checks a hop's answer to a step of `n` rows of `width`: its output.
fn read_step_reply(
    peer: PeerId,
    reply: Option<&[u8]>,
    n: usize,
    width: usize,
    config: &ClientConfig,
) -> Result<Answer> {
    let reply = reply.ok_or_else(|| InferenceError::ServerFailed {
        peer,
        reason: "closed the session".into(),
    })?;
    let answer = decode_step_reply(reply, config.dtype)?.map_err(|r| refused(peer, r))?;
    check_hidden_states(&answer.values, n, width)
        .map_err(|reason| InferenceError::BadHiddenStates { peer, reason })?;
    Ok(answer)
}

/// How long, beyond the previous hop's answer, a pushed step may take to
/// come back from the next hop before the client stops waiting and relays
/// it itself: a base, plus a little per row (prefill steps compute longer).
const PUSH_GRACE: Duration = Duration::from_secs(2);
/// See [`PUSH_GRACE`].
const PUSH_GRACE_PER_ROW: Duration = Duration::from_millis(10);

/// How a pushed step failed.
enum PushFailure {
    /// The first hop, sent the step by the client itself, failed: a fault
    /// or refusal of that server.
    First(InferenceError),
    /// A later hop's answer did not come within [`PUSH_GRACE`] of the one
    /// before, or was wrong: that server or the one before it (which
    /// pushed it the input) is at fault, and the client cannot tell which.
    Later,
}

/// Sends one step of `n` rows into the first hop with the rest of the
/// route as its forwarding list, then reads every hop's answer in route
/// order (each server pushes its output to the next and answers here).
/// Returns the outputs, or the outputs of the hops before the failure and
/// the failure.
async fn push_step(
    hops: &mut [Hop],
    position: usize,
    n: usize,
    width: usize,
    values: &[f32],
    config: &ClientConfig,
) -> std::result::Result<Vec<Answer>, (PushFailure, Vec<Answer>)> {
    let frame = Step {
        position: position as u32,
        n_tokens: n as u32,
        forward: hops[1..]
            .iter()
            .map(|h| Forward {
                peer: h.peer,
                token: h.token,
            })
            .collect(),
        values: values.to_vec(),
    }
    .encode(config.dtype);
    // What the next hop must have computed on: what the client sent, then
    // each hop's answer.
    let mut expected = take_input(
        &mut hops[0],
        position,
        n,
        input_rows(&frame, n, width, config.dtype),
    );
    let grace = PUSH_GRACE + PUSH_GRACE_PER_ROW * n as u32;
    let mut outputs: Vec<Answer> = Vec::with_capacity(hops.len());
    let mut deadline = tokio::time::Instant::now() + config.timeout_for(n);
    for i in 0..hops.len() {
        let (before, hops_after) = hops.split_at_mut(i + 1);
        let hop = &mut before[i];
        let peer = hop.peer;
        let exchange = async {
            if i == 0 {
                hop.session.send(&frame).await?;
            }
            hop.session.recv().await.map_err(InferenceError::from)
        };
        let answer = match tokio::time::timeout_at(deadline, exchange).await {
            Err(_) => Err(InferenceError::ServerFailed {
                peer,
                reason: "step timed out".into(),
            }),
            Ok(Err(e)) => Err(e),
            Ok(Ok(reply)) => {
                let answer = read_step_reply(peer, reply.as_deref(), n, width, config);
                keep_bad(hop, &answer, reply.as_deref(), position, n, config.dtype);
                // What it computed on must be what the client sent (the
                // first hop) or what the hop before answered: a server
                // pushing on other rows than it answered is caught here,
                // and the step is relayed by the client from this hop.
                answer.and_then(|a| {
                    if a.input == expected.0 {
                        Ok(a)
                    } else {
                        Err(InferenceError::ServerFailed {
                            peer,
                            reason: "it computed on other inputs than the route's".into(),
                        })
                    }
                })
            }
        };
        match answer {
            Ok(out) => {
                // The next server took this output as its input.
                if let Some(next) = hops_after.first_mut() {
                    expected = take_input(next, position, n, &out.bytes);
                }
                outputs.push(out)
            }
            Err(e) if i == 0 => return Err((PushFailure::First(e), outputs)),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "pushed step failed at a later hop");
                return Err((PushFailure::Later, outputs));
            }
        }
        deadline = tokio::time::Instant::now() + grace;
    }
    Ok(outputs)
}

/// Whether a server's answer can be `n` rows of hidden states of `width`:
/// exactly that many values, every one finite. A NaN would spread through
/// every later block and the head, and end as logits with nothing to
/// sample.
fn check_hidden_states(out: &[f32], n: usize, width: usize) -> std::result::Result<(), String> {
    let expected = n.saturating_mul(width);
    if out.len() != expected {
        return Err(format!(
            "{} values for {n} tokens of width {width} ({expected} expected)",
            out.len()
        ));
    }
    if let Some(at) = out.iter().position(|v| !v.is_finite()) {
        let bad = out.iter().filter(|v| !v.is_finite()).count();
        return Err(format!(
            "{bad} of {expected} values are not finite (the first, at {at}, is {})",
            out[at]
        ));
    }
    Ok(())
}

impl LanguageModel for SwarmSession<'_> {
    fn forward(&mut self, tokens: &[u32]) -> hypertensor_model::Result<Vec<f32>> {
        let embedded = self.client.embedding.forward(tokens)?;
        let hidden = match &self.tuning {
            Some(tuning) if self.positions == 0 => tuning.prefixed(&embedded)?,
            _ => embedded,
        };
        let (width, rows) = (hidden.width(), hidden.n_tokens());
        let handle = self.client.handle.clone();
        // A swarm failure keeps its kind: see `From<InferenceError> for
        // ModelError` (the swarm unable to serve is `Unavailable`).
        let out = handle.block_on(self.step(hidden.into_vec(), rows))?;
        let last = HiddenStates::new(width, out)?.last_rows(1)?;
        self.client.head.logits(last.into_vec())
    }

    /// Ends this sequence (spot-checking it if it was drawn) and starts a
    /// new one, drawn afresh.
    fn reset(&mut self) {
        self.finish();
        self.relay_only = false;
        self.checked = self.client.checker.draw();
    }

    fn context_length(&self) -> usize {
        let rows = self.tuning.as_ref().map_or(0, PromptTuning::tokens);
        self.reserve().saturating_sub(rows)
    }
}

/// Why a trained prompt cannot be served through a swarm of a model of
/// width `hidden` and `n_blocks` blocks, if it cannot.
pub(crate) fn check_swarm_tuning(
    tuning: &PromptTuning,
    hidden: usize,
    n_blocks: usize,
) -> std::result::Result<(), ModelError> {
    if let Some(deep) = tuning.deep() {
        if deep.block_count() != n_blocks {
            return Err(ModelError::InvalidInput(format!(
                "the prompt has deep rows for {} blocks, the swarm's model has {n_blocks}",
                deep.block_count()
            )));
        }
        let bytes = deep.rows() * deep.hidden() * n_blocks * std::mem::size_of::<f32>();
        if bytes > MAX_SESSION_PROMPT_BYTES {
            return Err(ModelError::InvalidInput(format!(
                "the prompt's deep rows take {} KiB for the model's blocks, and a session's opening carries at most {} KiB: train fewer rows (`--prompt-tokens`) or serve it locally",
                bytes >> 10,
                MAX_SESSION_PROMPT_BYTES >> 10
            )));
        }
    }
    if tuning.width() != hidden {
        return Err(ModelError::InvalidInput(format!(
            "the prompt's rows have width {}, the swarm's model has hidden size {hidden}",
            tuning.width()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_states_must_be_the_rows_sent_and_finite() {
        let good = vec![0.5f32; 6];
        assert_eq!(check_hidden_states(&good, 2, 3), Ok(()));
        // One row short, one value too many, nothing at all.
        assert!(check_hidden_states(&good[..3], 2, 3).is_err());
        assert!(check_hidden_states(&[good.clone(), vec![1.0]].concat(), 2, 3).is_err());
        assert!(check_hidden_states(&[], 1, 3).is_err());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut out = good.clone();
            out[4] = bad;
            let reason = check_hidden_states(&out, 2, 3).unwrap_err();
            assert!(reason.contains("not finite"), "{reason}");
        }
    }
}
