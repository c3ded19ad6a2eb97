//! A block server: holds one span, serves span sessions within a KV-cache
//! budget, and announces itself in the DHT until stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hypertensor_consensus::evidence::{RECEIPT_PURPOSE, ReceiptFields, output_digest};
use hypertensor_model::{
    BatchConfig, BatchStats, Batcher, BlockSpan, DeepPrompts, HiddenStates, SpanCache, StepOutput,
};
use hypertensor_p2p::{Client, Event, PeerId, RpcSession, now_ms};
use hypertensor_primitives::{H256, sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::announce::{ANNOUNCE_MAX_TTL, ServerInfo, ServerState, block_key};
use crate::error::Result;
use crate::train::{TRAIN_METHOD, TrainKind, TrainLimits, TrainRequest, encode_train_reply};
use crate::wire::{
    Dtype, Forward, MAX_SESSION_PROMPT_BYTES, OpenRequest, PUSH_METHOD, PushToken, Refusal,
    SESSION_METHOD, Signed, Step, encode_open_reply, encode_pushed_reply, encode_step_reply,
};

/// How a server behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model's name in DHT keys.
    pub model: String,
    /// Bytes of key/value cache all sessions together may hold.
    pub cache_budget_bytes: usize,
    /// A session with no step for this long is closed and its cache freed.
    pub session_idle_timeout: Duration,
    /// Lifetime of each announcement; refreshed every third of it.
    pub announce_ttl: Duration,
    /// Throughput to announce instead of measuring (decode steps/s).
    pub throughput: Option<f64>,
    /// How the sessions' steps are batched (see `hypertensor_model::batch`).
    pub batch: BatchConfig,
    /// Honest serving (`None`), or a deliberate corruption of what is
    /// served, for tests of verified serving.
    pub fault: Option<ServingFault>,
    /// Bounds on training requests (see [`crate::train`]).
    pub train: TrainLimits,
}

/// A deliberate fault in what a server serves, for tests and benchmarks
/// of verified serving: an adversary whose consensus challenge is computed
/// apart, honestly (the node sketches it on its own span), while sessions
/// get corrupted outputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServingFault {
    /// How outputs are corrupted.
    pub corruption: Corruption,
    /// Share of sessions corrupted (drawn per session from `seed`).
    pub share: f64,
    /// Seed of the draws and the noise.
    pub seed: u64,
    /// Corrupt only what is pushed on to the next server of a route, and
    /// answer the client honestly.
    pub pushed_only: bool,
}

/// How a faulty server corrupts a session's outputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Corruption {
    /// Adds Gaussian noise of `relative` times each row's RMS.
    Noise {
        /// The noise's RMS relative to the row's.
        relative: f32,
    },
    /// Rounds each block of 32 values to `bits`-bit integers of one
    /// scale: the error of computing in a cheaper precision.
    Quantize {
        /// Bits per value.
        bits: u32,
    },
}

impl Corruption {
    /// Corrupts `output` (rows of `width`) with draws from `rng`.
    pub fn apply(self, output: &mut [f32], width: usize, rng: &mut impl rand::Rng) {
        match self {
            Corruption::Noise { relative } => {
                for row in output.chunks_mut(width.max(1)) {
                    let rms = (row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32).sqrt();
                    for v in row.iter_mut() {
                        // Box-Muller.
                        let (u1, u2): (f32, f32) = (rng.random::<f32>().max(1e-7), rng.random());
                        let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
                        *v += z * relative * rms;
                    }
                }
            }
            Corruption::Quantize { bits } => {
                let levels = ((1u32 << bits.clamp(2, 16)) / 2 - 1) as f32;
                for block in output.chunks_mut(32) {
                    let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                    if max > 0.0 {
                        let scale = max / levels;
                        for v in block.iter_mut() {
                            *v = (*v / scale).round() * scale;
                        }
                    }
                }
            }
        }
    }
}

impl ServerConfig {
    /// Defaults: 256 MiB of cache, 5 min idle timeout, 60 s announcements,
    /// the default batching.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            cache_budget_bytes: 256 << 20,
            session_idle_timeout: Duration::from_secs(300),
            announce_ttl: Duration::from_secs(60),
            throughput: None,
            batch: BatchConfig::default(),
            fault: None,
            train: TrainLimits::default(),
        }
    }
}

/// The cache budget: reservations taken at open, returned on drop.
#[derive(Debug)]
struct Budget {
    capacity: usize,
    used: Mutex<usize>,
}

/// Bytes reserved for one session; released when dropped.
#[derive(Debug)]
struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    fn reserve(self: &Arc<Self>, bytes: usize) -> std::result::Result<Reservation, usize> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let free = self.capacity.saturating_sub(*used);
        if bytes > free {
            return Err(free);
        }
        *used += bytes;
        Ok(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    fn free(&self) -> usize {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        self.capacity.saturating_sub(*used)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(self.bytes);
    }
}

/// One span served to many sessions, their steps run in shared batches.
#[derive(Debug)]
pub struct BlockServer {
    span: Arc<BlockSpan>,
    batcher: Batcher,
    config: ServerConfig,
    budget: Arc<Budget>,
    /// Decode steps/s of one session alone, measured at start (or given).
    throughput: f64,
    sessions: Mutex<usize>,
    /// Signalled when a session opens or closes (to re-announce the load),
    /// or when the addresses to announce changed.
    load_changed: tokio::sync::Notify,
    /// Set when the addresses to announce changed: the next announcement
    /// goes at once, even with the load unchanged.
    readdressed: std::sync::atomic::AtomicBool,
    /// This epoch's consensus challenge input, refused as a step's input.
    challenge: RwLock<Option<Arc<Vec<f32>>>>,
    /// Open sessions by push token: where pushed steps are handed over.
    pushes: Mutex<HashMap<PushToken, mpsc::Sender<Vec<u8>>>>,
    /// Steps that arrived pushed by the previous server of a route.
    pushed_steps: std::sync::atomic::AtomicU64,
    /// Sessions opened so far (draws of a [`ServingFault`]).
    faulty_sessions: std::sync::atomic::AtomicU64,
    /// One training request computes at a time (its activations are what
    /// [`TrainLimits::memory_bytes`] bounds).
    training: tokio::sync::Semaphore,
    /// Training requests answered, forward and backward, and refused.
    train_counts: [std::sync::atomic::AtomicU64; 3],
    /// Rows (tokens) of the training requests answered.
    train_rows: std::sync::atomic::AtomicU64,
}

/// Longest a training request waits for the one before it to finish.
const TRAIN_WAIT: Duration = Duration::from_secs(30);

/// Pushed frames a session buffers before its pusher waits.
const PUSH_QUEUE: usize = 8;

/// A session's entry in [`BlockServer::pushes`], removed on drop.
struct PushEntry<'a> {
    server: &'a BlockServer,
    token: PushToken,
}

impl Drop for PushEntry<'_> {
    fn drop(&mut self) {
        self.server
            .pushes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.token);
    }
}

/// The session this server pushes a client session's outputs on: to the
/// next hop of the route, opened at the first pushed step.
struct Onward {
    peer: PeerId,
    token: PushToken,
    session: RpcSession,
}

/// Longest wait for a first peer before announcing anyway.
const JOIN_WAIT: Duration = Duration::from_secs(10);

/// Wait before retrying a failed announcement.
const ANNOUNCE_RETRY: Duration = Duration::from_secs(1);

/// Resolves when the next announcement is due: at `at`, or earlier when
/// `alone` and a first peer joins.
async fn next_attempt(p2p: &Client, at: tokio::time::Instant, alone: bool) {
    if alone {
        let left = at.saturating_duration_since(tokio::time::Instant::now());
        p2p.wait_for_peers(left).await;
    } else {
        tokio::time::sleep_until(at).await;
    }
}

/// Decode steps timed to measure throughput.
const MEASURE_STEPS: usize = 8;

/// Shortest pause between announcements made because the load changed.
const LOAD_REANNOUNCE: Duration = Duration::from_millis(500);

/// Batches older than this no longer describe the server's load.
const LOAD_WINDOW: Duration = Duration::from_secs(10);

impl BlockServer {
    /// Wraps a loaded span; measures its decode throughput unless the
    /// configuration gives one.
    ///
    /// The cache budget is reserved per session at open, and every step is
    /// checked against its session's reservation before it joins a batch,
    /// so no batch grows the caches beyond the budget; a batch's working
    /// memory is bounded apart from it by the batch size
    /// ([`Batcher::batch_bytes`]).
    pub fn new(span: BlockSpan, config: ServerConfig) -> Result<Self> {
        let throughput = match config.throughput {
            Some(t) => t,
            None => measure_throughput(&span)?,
        };
        let span = Arc::new(span);
        let batcher = Batcher::start(span.clone(), None, config.batch.clone());
        Ok(Self {
            budget: Arc::new(Budget {
                capacity: config.cache_budget_bytes,
                used: Mutex::new(0),
            }),
            span,
            batcher,
            config,
            throughput,
            sessions: Mutex::new(0),
            load_changed: tokio::sync::Notify::new(),
            readdressed: std::sync::atomic::AtomicBool::new(false),
            challenge: RwLock::new(None),
            pushes: Mutex::new(HashMap::new()),
            pushed_steps: std::sync::atomic::AtomicU64::new(0),
            faulty_sessions: std::sync::atomic::AtomicU64::new(0),
            training: tokio::sync::Semaphore::new(1),
            train_counts: Default::default(),
            train_rows: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The span served.
    pub fn span(&self) -> &BlockSpan {
        &self.span
    }

    /// The served span, shared (the consensus loop sketches the challenge with it).
    pub fn shared_span(&self) -> Arc<BlockSpan> {
        self.span.clone()
    }

    /// Sets the current epoch's consensus challenge input (`[T, hidden]`
    /// row-major; `None` clears it). While set, a session step whose input is
    /// that challenge is refused, so a hoster cannot buy its answer from
    /// another (SPEC §6).
    ///
    /// A step is refused when it starts at position 0 and its first row is
    /// within wire rounding of the challenge's first row (`|a - b| <= 2e-3 *
    /// |b| + 1e-6`, so an f16 copy is caught too, and so is the challenge
    /// sent token by token); the refusal goes back as the step's error and
    /// the session's cache is left unchanged.
    pub fn set_challenge_input(&self, input: Option<Vec<f32>>) {
        *self.challenge.write().unwrap_or_else(|p| p.into_inner()) = input.map(Arc::new);
    }

    fn challenge_input(&self) -> Option<Arc<Vec<f32>>> {
        self.challenge
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Decode steps per second a session sees now: measured over the
    /// recent batches while the server is busy (so it falls as sessions
    /// share the batches), else the solo figure measured at start. A
    /// configured throughput is announced as it is.
    pub fn throughput(&self) -> f64 {
        if self.config.throughput.is_some() {
            return self.throughput;
        }
        let stats = self.batcher.stats();
        match stats.last_batch {
            Some(at) if at.elapsed() < LOAD_WINDOW && stats.recent_steps_per_sec > 0.0 => {
                stats.recent_steps_per_sec.min(self.throughput)
            }
            _ => self.throughput,
        }
    }

    /// The batching counters (batches, rows, largest batch, recent rates).
    pub fn batch_stats(&self) -> BatchStats {
        self.batcher.stats()
    }

    /// Steps received pushed from the previous server of a route (rather
    /// than from the client), since start.
    pub fn pushed_steps(&self) -> u64 {
        self.pushed_steps.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sessions open now.
    pub fn active_sessions(&self) -> usize {
        *self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Training requests answered (forward, backward) and refused, and
    /// the rows the answered ones held, since start.
    pub fn training_counts(&self) -> ([u64; 3], u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            [
                self.train_counts[0].load(Relaxed),
                self.train_counts[1].load(Relaxed),
                self.train_counts[2].load(Relaxed),
            ],
            self.train_rows.load(Relaxed),
        )
    }

    /// Answers one training request (see [`crate::train`]) and closes the
    /// session.
    async fn serve_training(self: Arc<Self>, body: Vec<u8>, mut session: RpcSession) {
        use std::sync::atomic::Ordering::Relaxed;
        let peer = session.peer();
        let reply = match self.clone().train(body).await {
            Ok((kind, rows, vectors)) => {
                let i = usize::from(kind == TrainKind::Backward);
                self.train_counts[i].fetch_add(1, Relaxed);
                self.train_rows.fetch_add(rows as u64, Relaxed);
                encode_train_reply(Ok(&vectors))
            }
            Err(reason) => {
                tracing::info!(%peer, %reason, "training request refused");
                self.train_counts[2].fetch_add(1, Relaxed);
                encode_train_reply(Err(&reason))
            }
        };
        let _ = session.send(&reply).await;
        let _ = session.close().await;
    }

    /// Checks a training request against this span, its limits and the
    /// consensus challenge, then computes it on a blocking thread, one
    /// request at a time. Returns its kind, rows and answer, or why not.
    async fn train(
        self: Arc<Self>,
        body: Vec<u8>,
    ) -> std::result::Result<(TrainKind, usize, Vec<Vec<f32>>), String> {
        let h = self.span.config().hidden_size;
        let range = self.span.range();
        let limits = &self.config.train;
        let request = TrainRequest::decode(&body, h, limits).map_err(|e| e.to_string())?;
        if request.model != self.config.model {
            return Err(format!(
                "this server serves `{}`, not `{}`",
                self.config.model, request.model
            ));
        }
        if (request.start as usize, request.end as usize) != (range.start, range.end) {
            return Err(format!(
                "this server serves blocks {}..{}, not {}..{}",
                range.start, range.end, request.start, request.end
            ));
        }
        let longest = request
            .inputs
            .iter()
            .map(|v| v.len() / h)
            .max()
            .unwrap_or(0);
        // The f32 weights (made for this request, dropped after it) and
        // one sequence's activations at a time.
        let need = self.span.training_weight_bytes()
            + self.span.tape_len(longest) * std::mem::size_of::<f32>();
        if need > limits.memory_bytes {
            return Err(format!(
                "a sequence of {longest} positions needs {} MiB (f32 weights and activations); this server allows {} MiB for training",
                need >> 20,
                limits.memory_bytes >> 20
            ));
        }
        if let Some(challenge) = self.challenge_input() {
            for input in &request.inputs {
                let mut first = input[..h].to_vec();
                if let Some(prompt) = request.prompts.first() {
                    first.iter_mut().zip(prompt).for_each(|(a, b)| *a += b);
                }
                if is_challenge_input(0, &first, h, &challenge) {
                    return Err(CHALLENGE_REFUSAL.to_string());
                }
            }
        }
        let _permit = tokio::time::timeout(TRAIN_WAIT, self.training.acquire())
            .await
            .map_err(|_| {
                "busy with other training requests; retry or ask another server".to_string()
            })?
            .map_err(|_| "the server is stopping".to_string())?;
        let span = self.span.clone();
        let rows = request.inputs.iter().map(|v| v.len() / h).sum();
        let kind = request.kind;
        let vectors = tokio::task::spawn_blocking(move || run_training(&span, request))
            .await
            .map_err(|e| format!("the training task failed: {e}"))??;
        Ok((kind, rows, vectors))
    }

    /// Bytes of KV cache reserved by open sessions, and the budget's
    /// capacity.
    pub fn cache_bytes(&self) -> (usize, usize) {
        let free = self.budget.free();
        (
            self.budget.capacity.saturating_sub(free),
            self.budget.capacity,
        )
    }

    /// Token positions the budget can still reserve.
    pub fn free_cache_tokens(&self) -> u64 {
        (self.budget.free() / self.span.cache_bytes_per_token().max(1)) as u64
    }

    /// The announcement as of now.
    pub fn info(&self, state: ServerState, addrs: Vec<String>, relayed: bool) -> ServerInfo {
        let range = self.span.range();
        ServerInfo {
            state,
            start: range.start as u32,
            end: range.end as u32,
            throughput: self.throughput(),
            sessions: self.active_sessions() as u32,
            free_cache_tokens: self.free_cache_tokens(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            addrs,
            relayed,
        }
    }

    /// Announces under every block of the span, valid for `announce_ttl`.
    pub async fn announce(&self, p2p: &Client, state: ServerState) -> Result<()> {
        let (addrs, relayed) = hypertensor_p2p::nat::announceable(p2p.listen_addrs().await?);
        let addrs = addrs
            .into_iter()
            .map(|a| a.with_p2p(p2p.peer_id()).unwrap_or_else(|a| a).to_string())
            .collect();
        let value = self.info(state, addrs, relayed).encode();
        let ttl = self.config.announce_ttl.min(ANNOUNCE_MAX_TTL);
        let expiration = now_ms() + ttl.as_millis() as u64;
        let stores = self.span.range().map(|block| {
            let key = block_key(&self.config.model, block);
            let value = value.clone();
            async move { p2p.store(&key, value, expiration).await }
        });
        for outcome in futures::future::join_all(stores).await {
            outcome?;
        }
        Ok(())
    }

    /// Serves sessions arriving on `events` and refreshes the announcement
    /// until `events` closes. Sessions are accepted from the start, while
    /// the announcement waits for a first peer and is retried on its own
    /// (a slow DHT never holds back a session). Cancel-safe: dropping the
    /// future drops every session (their caches and reservations are
    /// freed).
    pub async fn run(self: Arc<Self>, p2p: Client, mut events: mpsc::Receiver<Event>) {
        let mut sessions = JoinSet::new();
        let p2p_sessions = p2p.clone();
        let announcing = self.clone().keep_announced(p2p);
        tokio::pin!(announcing);
        loop {
            tokio::select! {
                () = &mut announcing => {}
                event = events.recv() => match event {
                    Some(Event::InboundSession { method, body, session }) if method == SESSION_METHOD => {
                        sessions.spawn(self.clone().serve_session(body, session, p2p_sessions.clone()));
                    }
                    Some(Event::InboundSession { method, body, session }) if method == PUSH_METHOD => {
                        sessions.spawn(self.clone().accept_pushes(body, session));
                    }
                    Some(Event::InboundSession { method, body, session }) if method == TRAIN_METHOD => {
                        sessions.spawn(self.clone().serve_training(body, session));
                    }
                    Some(Event::InboundSession { method, session, .. }) => {
                        tracing::debug!(%method, peer = %session.peer(), "session for an unknown method closed");
                    }
                    None => break,
                },
                Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                    if let Err(e) = done && e.is_panic() {
                        tracing::error!(error = %e, "a session task panicked");
                    }
                }
            }
        }
    }

    /// Announces the server and refreshes the announcement forever: after
    /// a first peer joins (announcing before would reach no one), then
    /// every third of the announcement's lifetime, and sooner (at most
    /// every [`LOAD_REANNOUNCE`]) when the number of open sessions changed,
    /// so clients route by the load as it is; a failure is retried with a
    /// doubling pause (at once when it failed for want of any peer and one
    /// joins).
    async fn keep_announced(self: Arc<Self>, p2p: Client) {
        let refresh =
            (self.config.announce_ttl.min(ANNOUNCE_MAX_TTL) / 3).max(Duration::from_millis(100));
        p2p.wait_for_peers(JOIN_WAIT).await;
        let mut next_announce = tokio::time::Instant::now();
        let mut retry = ANNOUNCE_RETRY;
        // Set after an announcement failed with no peer known.
        let mut alone = false;
        let mut announced_sessions = None;
        let mut last_announce = tokio::time::Instant::now();
        loop {
            if announced_sessions.is_some() {
                // Refresh when due, or sooner once the load has changed
                // (a session opened or closed), but not more often than
                // every `LOAD_REANNOUNCE`.
                tokio::select! {
                    () = tokio::time::sleep_until(next_announce) => {}
                    () = self.load_changed.notified() => {
                        let readdressed = self.readdressed.swap(false, std::sync::atomic::Ordering::Relaxed);
                        if !readdressed && announced_sessions == Some(self.active_sessions()) {
                            continue;
                        }
                        tokio::time::sleep_until(last_announce + LOAD_REANNOUNCE).await;
                        next_announce = tokio::time::Instant::now();
                    }
                }
            }
            next_attempt(&p2p, next_announce, alone).await;
            let sessions = self.active_sessions();
            last_announce = tokio::time::Instant::now();
            next_announce = match self.announce(&p2p, ServerState::Online).await {
                Ok(()) => {
                    retry = ANNOUNCE_RETRY;
                    alone = false;
                    announced_sessions = Some(sessions);
                    tokio::time::Instant::now() + refresh
                }
                Err(e) => {
                    tracing::info!(error = %e, ?retry, "announcement reached no peer; retrying");
                    alone = p2p.routing_table_size().await.unwrap_or(0) == 0;
                    announced_sessions = None;
                    let next = tokio::time::Instant::now() + retry.min(refresh);
                    retry = (retry * 2).min(refresh);
                    next
                }
            };
        }
    }

    /// Says the node's addresses changed (it listens through another
    /// relay): the announcement is refreshed at once, so clients stop
    /// dialling the old address.
    pub fn addresses_changed(&self) {
        self.readdressed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.load_changed.notify_one();
    }

    fn set_sessions(&self, delta: isize) {
        let mut n = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_add_signed(delta);
        self.load_changed.notify_one();
    }

    /// Opens, runs and closes one session. Its steps come from the client
    /// or, pushed, from the previous server of the client's route; every
    /// answer goes to the client, and a step with a forwarding list is also
    /// pushed on to the next server with this span's output.
    async fn serve_session(self: Arc<Self>, body: Vec<u8>, mut session: RpcSession, p2p: Client) {
        let peer = session.peer();
        let (open, reservation, fresh_cache) = match self.admit(&body) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                tracing::info!(%peer, %refusal, "session refused");
                let _ = session.send(&encode_open_reply(Err(&refusal))).await;
                let _ = session.close().await;
                return;
            }
        };
        let (push_tx, mut pushed) = mpsc::channel(PUSH_QUEUE);
        let registered = {
            let mut pushes = self.pushes.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = !pushes.contains_key(&open.token);
            if fresh {
                pushes.insert(open.token, push_tx);
            }
            fresh
        };
        if !registered {
            let refusal = Refusal::Rejected("push token already in use".into());
            let _ = session.send(&encode_open_reply(Err(&refusal))).await;
            let _ = session.close().await;
            return;
        }
        let _entry = PushEntry {
            server: &self,
            token: open.token,
        };
        self.set_sessions(1);
        if session.send(&encode_open_reply(Ok(()))).await.is_err() {
            self.set_sessions(-1);
            return;
        }
        tracing::debug!(%peer, tokens = open.max_tokens, "session opened");
        // Counted open so batches wait (briefly) for this session's steps.
        let _open = self.batcher.open();
        let mut cache = Some(fresh_cache);
        let mut onward: Option<Onward> = None;
        let mut corrupt = self.config.fault.and_then(|fault| {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(
                fault.seed
                    ^ self
                        .faulty_sessions
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            );
            rng.random_bool(fault.share.clamp(0.0, 1.0))
                .then_some((fault.corruption, rng))
        });
        let mut transcript = open.transcript();
        let receipts = Receipts {
            p2p: &p2p,
            client: crate::peer_id(&peer),
            session: session.nonce(),
            open: &open,
            row_len: self.span.config().hidden_size * open.dtype.size(),
        };
        loop {
            let next = async {
                tokio::select! {
                    frame = session.recv() => frame.map(|f| f.map(|f| (f, false))).map_err(|e| e.to_string()),
                    Some(frame) = pushed.recv() => {
                        self.pushed_steps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Ok(Some((frame, true)))
                    }
                }
            };
            let (frame, was_pushed) =
                match tokio::time::timeout(self.config.session_idle_timeout, next).await {
                    Ok(Ok(Some(frame))) => frame,
                    Ok(Ok(None)) => break,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "session broke");
                        break;
                    }
                    Err(_) => {
                        tracing::info!(%peer, "session idle too long; closed");
                        break;
                    }
                };
            let Some(c) = cache.take() else { break };
            let (c, mut outcome) = self
                .clone()
                .step(c, frame, open.dtype, open.max_tokens)
                .await;
            let reply = match &mut outcome {
                Ok(done) => {
                    let pushed_only = self.config.fault.is_some_and(|f| f.pushed_only);
                    let honest = (corrupt.is_some() && pushed_only).then(|| done.output.clone());
                    if let Some((corruption, rng)) = corrupt.as_mut() {
                        let width = self.span.config().hidden_size;
                        corruption.apply(&mut done.output, width, rng);
                    }
                    if let Some(next) = done.forward.first() {
                        push_onward(&p2p, &mut onward, next, done, open.dtype).await;
                    }
                    if let Some(honest) = honest {
                        done.output = honest;
                    }
                    transcript.step_hashed(done.position, done.n_tokens, done.input_hash);
                    let mut output = Vec::with_capacity(done.output.len() * open.dtype.size());
                    open.dtype.encode_into(&done.output, &mut output);
                    let signature = receipts.sign(done, &transcript.digest(), &output);
                    let signed = Signed {
                        signature: &signature,
                        input: &done.input_hash.0,
                        output: &output,
                    };
                    if was_pushed {
                        Some(encode_pushed_reply(signed))
                    } else {
                        Some(encode_step_reply(Ok(signed)))
                    }
                }
                // A refused push is not answered: the client cannot tell
                // whether this server or the one that pushed is at fault,
                // and relays the step itself.
                Err(refusal) if was_pushed => {
                    tracing::debug!(%peer, %refusal, "pushed step refused");
                    None
                }
                Err(refusal) => Some(encode_step_reply(Err(refusal))),
            };
            if let Some(reply) = reply
                && session.send(&reply).await.is_err()
            {
                break;
            }
            match c {
                Some(c) => cache = Some(c),
                None => break,
            }
        }
        drop(reservation);
        self.set_sessions(-1);
        let _ = session.close().await;
        tracing::debug!(%peer, "session closed");
    }

    /// Hands the steps pushed on `session` (opened with a push token as its
    /// body) to the session holding that token, until either ends. An
    /// unknown token closes the push session at once.
    async fn accept_pushes(self: Arc<Self>, body: Vec<u8>, mut session: RpcSession) {
        let peer = session.peer();
        let target = <PushToken>::try_from(body.as_slice())
            .ok()
            .and_then(|token| {
                self.pushes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&token)
                    .cloned()
            });
        let Some(target) = target else {
            tracing::debug!(%peer, "push for no open session closed");
            let _ = session.close().await;
            return;
        };
        while let Ok(Some(frame)) = session.recv().await {
            if target.send(frame).await.is_err() {
                break;
            }
        }
        let _ = session.close().await;
    }

    fn admit(
        &self,
        body: &[u8],
    ) -> std::result::Result<(OpenRequest, Reservation, SpanCache), Refusal> {
        let open = OpenRequest::decode(body).map_err(|e| Refusal::Rejected(e.to_string()))?;
        let range = self.span.range();
        if open.model != self.config.model
            || open.start as usize != range.start
            || open.end as usize != range.end
        {
            return Err(Refusal::Unserved(format!(
                "this server holds blocks {}..{} of `{}`, not {}..{} of `{}`",
                range.start, range.end, self.config.model, open.start, open.end, open.model
            )));
        }
        let context = self.span.config().context_length;
        if open.max_tokens == 0 || open.max_tokens as usize > context {
            return Err(Refusal::Rejected(format!(
                "cannot reserve {} tokens: the model's context holds {context}",
                open.max_tokens
            )));
        }
        let cache = self.session_cache(&open)?;
        let per_token = self.span.cache_bytes_per_token();
        // The session's deep prompt rows are held as long as its cache.
        let prompt_bytes = open
            .prompts
            .as_ref()
            .map_or(0, |p| p.values.len() * std::mem::size_of::<f32>());
        let bytes = open.max_tokens as usize * per_token + prompt_bytes;
        let reservation = self.budget.reserve(bytes).map_err(|free| Refusal::Full {
            free_tokens: (free / per_token.max(1)) as u64,
        })?;
        Ok((open, reservation, cache))
    }

    /// A new cache for the session `open` asks for, adding its deep prompt
    /// rows if it brings some (no more rows than it reserves, one block of
    /// rows per block of the span, all finite).
    fn session_cache(&self, open: &OpenRequest) -> std::result::Result<SpanCache, Refusal> {
        let Some(prompts) = &open.prompts else {
            return Ok(self.span.new_cache());
        };
        let (width, blocks) = (self.span.config().hidden_size, self.span.range().len());
        let rows = prompts.rows as usize;
        if prompts.values.len() * std::mem::size_of::<f32>() > MAX_SESSION_PROMPT_BYTES
            || rows >= open.max_tokens as usize
            || prompts.values.len() != rows * width * blocks
        {
            return Err(Refusal::Rejected(format!(
                "{} prompt values are not {rows} rows of width {width} for each of {blocks} blocks, within the {} positions reserved",
                prompts.values.len(),
                open.max_tokens
            )));
        }
        let per_block = prompts
            .values
            .chunks_exact(rows * width)
            .map(<[f32]>::to_vec)
            .collect();
        let deep = DeepPrompts::new(rows, width, per_block)
            .map_err(|e| Refusal::Rejected(e.to_string()))?;
        self.span
            .new_cache_with(deep)
            .map_err(|e| Refusal::Rejected(e.to_string()))
    }

    /// Checks one step and runs it in the next batch. Returns the cache
    /// (none if the batching thread is gone) and the output or the reason
    /// for refusing the step (a refused step leaves the cache unchanged).
    async fn step(
        self: Arc<Self>,
        mut cache: SpanCache,
        frame: Vec<u8>,
        dtype: Dtype,
        reserved: u32,
    ) -> (Option<SpanCache>, std::result::Result<StepDone, Refusal>) {
        let width = self.span.config().hidden_size;
        let challenge = self.challenge_input();
        let checked = check_step(
            &self.span,
            &mut cache,
            &frame,
            dtype,
            width,
            reserved,
            challenge.as_deref().map(Vec::as_slice),
        );
        let (hidden, header) = match checked {
            Ok(hidden) => hidden,
            Err(refusal) => return (Some(cache), Err(refusal)),
        };
        // The input rows are the frame's tail, as the client encoded them.
        let input_len = header.n_tokens as usize * width * dtype.size();
        let input_hash = sha256(&[&frame[frame.len().saturating_sub(input_len)..]]);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.batcher.submit(
            cache,
            hidden,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        match rx.await {
            // An honest server never signs a non-finite output (whatever
            // it was sent), so a signed one convicts its server alone.
            Ok((cache, Ok(StepOutput::Hidden(out))))
                if out.as_slice().iter().any(|v| !dtype.carries_finite(*v)) =>
            {
                (
                    Some(cache),
                    Err(Refusal::Failed(
                        "the span's output is not finite; not sent".into(),
                    )),
                )
            }
            Ok((cache, Ok(StepOutput::Hidden(out)))) => (
                Some(cache),
                Ok(StepDone {
                    output: out.into_vec(),
                    position: header.position,
                    n_tokens: header.n_tokens,
                    forward: header.forward,
                    input_hash,
                }),
            ),
            Ok((cache, Ok(StepOutput::Logits(_)))) => (
                Some(cache),
                Err(Refusal::Failed(
                    "the server's batcher returned logits".into(),
                )),
            ),
            Ok((cache, Err(e))) => (Some(cache), Err(Refusal::Failed(e.to_string()))),
            Err(_) => (
                None,
                Err(Refusal::Failed("the batching thread stopped".into())),
            ),
        }
    }
}

/// A step run: its output and where it goes next.
struct StepDone {
    output: Vec<f32>,
    position: u32,
    n_tokens: u32,
    forward: Vec<Forward>,
    /// SHA-256 of the step's input rows as received.
    input_hash: H256,
}

/// What a session's receipts are bound to.
struct Receipts<'a> {
    p2p: &'a Client,
    client: hypertensor_primitives::PeerId,
    session: [u8; 16],
    open: &'a OpenRequest,
    /// Bytes of one encoded output row.
    row_len: usize,
}

impl Receipts<'_> {
    /// The server's receipt signature for `done`, answered with `output`
    /// after inputs of digest `inputs`.
    fn sign(&self, done: &StepDone, inputs: &H256, output: &[u8]) -> [u8; 64] {
        let (_, digest) = output_digest(output, self.row_len);
        let fields = ReceiptFields {
            client: &self.client,
            session: &self.session,
            model: &self.open.model,
            start: self.open.start,
            end: self.open.end,
            encoding: self.open.dtype.encoding(),
            position: done.position,
            n_tokens: done.n_tokens,
            inputs,
            output: &digest,
        };
        self.p2p
            .sign_domain(RECEIPT_PURPOSE, &fields.signed_payload())
            .0
    }
}

/// A step's header: everything but its hidden states.
struct StepHeader {
    position: u32,
    n_tokens: u32,
    forward: Vec<Forward>,
}

/// Pushes `done`'s output to `next` as that session's step, with the rest
/// of the forwarding list, over `onward` (opened, or reopened for another
/// target, as needed). A failure is only logged: the client, waiting for
/// the next server's answer, times out and recovers as from any fault.
async fn push_onward(
    p2p: &Client,
    onward: &mut Option<Onward>,
    next: &Forward,
    done: &StepDone,
    dtype: Dtype,
) {
    if onward
        .as_ref()
        .is_some_and(|o| o.peer != next.peer || o.token != next.token)
    {
        onward.take();
    }
    if onward.is_none() {
        match p2p
            .open_session(next.peer, PUSH_METHOD, next.token.to_vec())
            .await
        {
            Ok(session) => {
                *onward = Some(Onward {
                    peer: next.peer,
                    token: next.token,
                    session,
                })
            }
            Err(e) => {
                tracing::debug!(peer = %next.peer, error = %e, "could not open a push session");
                return;
            }
        }
    }
    let frame = Step {
        position: done.position,
        n_tokens: done.n_tokens,
        forward: done.forward[1..].to_vec(),
        values: done.output.clone(),
    }
    .encode(dtype);
    if let Some(o) = onward.as_mut()
        && let Err(e) = o.session.send(&frame).await
    {
        tracing::debug!(peer = %o.peer, error = %e, "push failed");
        onward.take();
    }
}

/// Runs a checked training request: each sequence forward (and back, for
/// a backward; the forward is recomputed). A backward's answer is every
/// sequence's input gradient, then every block's prompt gradient summed
/// over the sequences.
fn run_training(
    span: &BlockSpan,
    request: TrainRequest,
) -> std::result::Result<Vec<Vec<f32>>, String> {
    let h = span.config().hidden_size;
    let weights = span.training_weights();
    let hidden = |v: Vec<f32>| HiddenStates::new(h, v).map_err(|e| e.to_string());
    let mut out = Vec::with_capacity(request.inputs.len() + request.prompts.len());
    match request.kind {
        TrainKind::Forward => {
            for input in request.inputs {
                let (output, _) = span
                    .forward_train(&weights, &hidden(input)?, &request.prompts)
                    .map_err(|e| e.to_string())?;
                out.push(output.into_vec());
            }
        }
        TrainKind::Backward => {
            let mut prompts: Vec<Vec<f32>> =
                request.prompts.iter().map(|p| vec![0.0; p.len()]).collect();
            for (input, grad) in request.inputs.into_iter().zip(request.grad_outputs) {
                let (_, tape) = span
                    .forward_train(&weights, &hidden(input)?, &request.prompts)
                    .map_err(|e| e.to_string())?;
                let grads = span
                    .backward(&weights, &tape, &hidden(grad)?)
                    .map_err(|e| e.to_string())?;
                for (sum, g) in prompts.iter_mut().zip(&grads.prompts) {
                    sum.iter_mut().zip(g).for_each(|(a, b)| *a += b);
                }
                out.push(grads.input.into_vec());
            }
            out.extend(prompts);
        }
    }
    Ok(out)
}

/// The reason sent back for a step whose input is the consensus challenge.
const CHALLENGE_REFUSAL: &str = "refused: the input is this epoch's consensus challenge";

/// Whether a step's `values` (rows of `width`) at `position` start the
/// consensus `challenge` input: the step starts the sequence (position 0)
/// and its first row is within wire rounding of the challenge's first row,
/// `|a - b| <= 2e-3 * |b| + 1e-6`. Blocks are causal, so matching the
/// first row is what stops a client from getting the challenge's outputs
/// token by token (first row alone, then the rest at positions 1..T). The
/// tolerance covers a client sending f16 (relative error at most 2^-11 ≈
/// 4.9e-4 for normal values, and the absolute term covers values f16
/// flushes to zero), while any genuinely different input differs by far
/// more somewhere in a row of hundreds of random values.
fn is_challenge_input(position: u32, values: &[f32], width: usize, challenge: &[f32]) -> bool {
    position == 0
        && width > 0
        && values.len() >= width
        && challenge.len() >= width
        && values[..width]
            .iter()
            .zip(&challenge[..width])
            .all(|(a, b)| (a - b).abs() <= 2e-3 * b.abs() + 1e-6)
}

/// Decodes and checks a step frame against the session, rewinding the
/// cache to the step's position; returns the step's input rows. A refused
/// step changes nothing.
fn check_step(
    span: &BlockSpan,
    cache: &mut SpanCache,
    frame: &[u8],
    dtype: Dtype,
    width: usize,
    reserved: u32,
    challenge: Option<&[f32]>,
) -> std::result::Result<(HiddenStates, StepHeader), Refusal> {
    let step = Step::decode(frame, dtype, width).map_err(|e| Refusal::Rejected(e.to_string()))?;
    // Before anything touches the cache: a refused step changes nothing.
    // The first block sees the first row plus the session's first deep
    // prompt row, if it has one: that sum is what must not be the
    // challenge.
    if let Some(challenge) = challenge
        && step.position == 0
    {
        let mut first = step.values[..width.min(step.values.len())].to_vec();
        if let Some(prompts) = cache.prompts() {
            prompts.add_to(0, 0, &mut first);
        }
        if is_challenge_input(step.position, &first, width, challenge) {
            return Err(Refusal::Rejected(CHALLENGE_REFUSAL.to_string()));
        }
    }
    let position = step.position as usize;
    if position > cache.positions() {
        return Err(Refusal::Rejected(format!(
            "step at position {position}, but the session holds only {}",
            cache.positions()
        )));
    }
    if position + step.n_tokens as usize > reserved as usize {
        return Err(Refusal::Rejected(format!(
            "step would reach position {}, beyond the {reserved} reserved",
            position + step.n_tokens as usize
        )));
    }
    let header = StepHeader {
        position: step.position,
        n_tokens: step.n_tokens,
        forward: step.forward,
    };
    let hidden =
        HiddenStates::new(width, step.values).map_err(|e| Refusal::Rejected(e.to_string()))?;
    if position < cache.positions() {
        span.truncate(cache, position);
    }
    Ok((hidden, header))
}

fn measure_throughput(span: &BlockSpan) -> Result<f64> {
    let width = span.config().hidden_size;
    let mut cache = span.new_cache();
    let start = Instant::now();
    for i in 0..MEASURE_STEPS {
        let row: Vec<f32> = (0..width)
            .map(|j| ((i * 31 + j) % 17) as f32 * 0.01 - 0.08)
            .collect();
        let mut hidden = HiddenStates::new(width, row)?;
        span.forward(&mut hidden, &mut cache)?;
    }
    let secs = start.elapsed().as_secs_f64().max(1e-6);
    Ok(MEASURE_STEPS as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_matched_by_its_first_row_within_f16_rounding_at_position_zero_only() {
        let width = 16;
        let challenge: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.173).collect();
        assert!(is_challenge_input(0, &challenge, width, &challenge));
        // What a client sending half precision delivers is still the challenge.
        let mut f16 = Vec::new();
        Dtype::F16.encode_into(&challenge, &mut f16);
        let rounded = Dtype::F16.decode(&f16).unwrap();
        assert_ne!(rounded, challenge, "f16 must actually round these values");
        assert!(is_challenge_input(0, &rounded, width, &challenge));
        // Its first row alone (to get the outputs token by token), or its
        // first row followed by anything, is the challenge too.
        assert!(is_challenge_input(
            0,
            &challenge[..width],
            width,
            &challenge
        ));
        let mut tail_changed = challenge.clone();
        tail_changed[40] += 3.0;
        assert!(is_challenge_input(0, &tail_changed, width, &challenge));
        // Not at a later position, not when a value of the first row is off
        // by more than rounding, not with less than a row.
        assert!(!is_challenge_input(1, &challenge, width, &challenge));
        let mut other = challenge.clone();
        other[7] *= 1.01;
        assert!(!is_challenge_input(0, &other, width, &challenge));
        assert!(!is_challenge_input(
            0,
            &challenge[..width - 1],
            width,
            &challenge
        ));
        // Near zero only the absolute slack (1e-6) applies.
        assert!(is_challenge_input(0, &[5e-7, 1.0], 2, &[0.0, 1.0]));
        assert!(!is_challenge_input(0, &[2e-6, 1.0], 2, &[0.0, 1.0]));
    }
}
