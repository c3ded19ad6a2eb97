//! The executor of a node's consensus duties (SPEC §6): it feeds the pure
//! state machine of `hypertensor-duties` with the chain's heads and the
//! outcomes of what it asked for, and carries out its actions over the
//! real chain RPC, the DHT and the model.
//!
//! Every action runs as its own task, so a slow read or a write no peer
//! acknowledges never holds back another duty; each is bounded by a
//! timeout and answered to the machine, which decides what to retry.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypertensor_chain_client::{BlockId, Error as ChainError};
use hypertensor_consensus::phase::PhaseParams;
use hypertensor_consensus::records::{Challenge, Sketch};
use hypertensor_consensus::scores::ScoreParams;
use hypertensor_duties::{
    Action, Answer, Duties, DutyConfig, DutyMachine, EpochChain, EpochScores, Input, Notice, Query,
    Sketches, SubmitError,
};
use hypertensor_inference::BlockServer;
use hypertensor_model::{BlockSpan, HiddenStates};
use hypertensor_p2p::Client;
use hypertensor_primitives::Keypair;
use hypertensor_runtime::{Call, Event, SubnetId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::chain::ChainConnection;
use crate::clock::{ChainClock, PHASE_GRACE_BLOCKS};
use crate::dht::{ConsensusDht, LoopMetrics};
use crate::error::{NodeError, NodeResult};

/// Wraps a node's honest duty machine in another (tests use it to make a
/// node faulty, see `hypertensor_duties::byzantine`).
#[derive(Clone)]
pub struct DutiesWrapper(Arc<dyn Fn(Duties) -> Box<dyn DutyMachine> + Send + Sync>);

impl DutiesWrapper {
    /// A wrapper applying `wrap` to the node's honest machine.
    pub fn new(wrap: impl Fn(Duties) -> Box<dyn DutyMachine> + Send + Sync + 'static) -> Self {
        DutiesWrapper(Arc::new(wrap))
    }
}

impl std::fmt::Debug for DutiesWrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DutiesWrapper")
    }
}

/// What a node's consensus loop needs besides its connections.
#[derive(Clone)]
pub struct ConsensusConfig {
    /// The subnet.
    pub subnet: SubnetId,
    /// The key the node signs `propose_attestation` and `attest` with (its
    /// registered hotkey).
    pub hotkey: Keypair,
    /// Transformer blocks of the subnet's model.
    pub n_blocks: u32,
    /// Hidden size of the model.
    pub hidden: usize,
    /// L2 norm of each challenge input row.
    pub target_norm: f64,
    /// Tokens `T` of the challenge this node writes.
    pub challenge_tokens: u32,
    /// The windows.
    pub phases: PhaseParams,
    /// The score parameters.
    pub scores: ScoreParams,
    /// Lifetime of the records written.
    pub record_ttl: Duration,
    /// Honest (`None`), or a wrapper making the node faulty, for tests.
    pub wrap: Option<DutiesWrapper>,
    /// The model's name in DHT keys (evidence's receipts name it).
    pub model: String,
    /// Where records written and calls landed are counted.
    pub metrics: crate::overview::ConsensusMetrics,
}

impl ConsensusConfig {
    /// The defaults of SPEC §6 for a model of `n_blocks` blocks of width
    /// `hidden`; the challenge rows have norm `sqrt(hidden)` (unit RMS,
    /// the scale the blocks' RMS norms work at).
    pub fn new(subnet: SubnetId, hotkey: Keypair, n_blocks: u32, hidden: usize) -> Self {
        ConsensusConfig {
            subnet,
            hotkey,
            n_blocks,
            hidden,
            target_norm: (hidden as f64).sqrt(),
            challenge_tokens: hypertensor_consensus::records::DEFAULT_CHALLENGE_TOKENS,
            phases: PhaseParams::default(),
            scores: ScoreParams::default(),
            record_ttl: Duration::from_secs(600),
            wrap: None,
            model: String::new(),
            metrics: crate::overview::ConsensusMetrics::default(),
        }
    }
}

/// A hoster's part: the span it sketches and the server that must refuse
/// the challenge input.
#[derive(Clone)]
pub struct Hosting {
    /// The served blocks.
    pub span: Arc<BlockSpan>,
    /// The server of those blocks, told each epoch's challenge input.
    pub server: Option<Arc<BlockServer>>,
}

/// What the loop did lately, for status displays and tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoopStatus {
    /// The chain height last handled.
    pub height: u64,
    /// This node's id on chain, once registered.
    pub node: Option<hypertensor_consensus::NodeId>,
    /// Scores this node computed for the latest epoch it scored.
    pub scores: Option<(u64, EpochScores)>,
    /// The latest epochs (up to [`STATUS_EPOCHS`]) this node proposed in.
    pub proposed: Vec<u64>,
    /// The latest epochs (up to [`STATUS_EPOCHS`]) this node attested in.
    pub attested: Vec<u64>,
}

/// Epochs a [`LoopStatus`] remembers.
pub const STATUS_EPOCHS: usize = 64;

fn push_recent(epochs: &mut Vec<u64>, epoch: u64) {
    if epochs.last() == Some(&epoch) {
        return;
    }
    epochs.push(epoch);
    if epochs.len() > STATUS_EPOCHS {
        epochs.remove(0);
    }
}

/// Longest a chain read or a DHT read or write may take before it counts
/// as failed (the machine tries again).
const ACTION_LIMIT: Duration = Duration::from_secs(20);

/// Longest a submission is watched for its block.
const INCLUSION_LIMIT: Duration = Duration::from_secs(30);

/// The actions running, each with the input that tells the machine it
/// failed should its task panic (so no duty waits forever for it).
#[derive(Default)]
struct Actions {
    tasks: JoinSet<()>,
    failures: HashMap<tokio::task::Id, Input>,
}

impl Actions {
    fn spawn(&mut self, failed: Input, task: impl Future<Output = ()> + Send + 'static) {
        let id = self.tasks.spawn(task).id();
        self.failures.insert(id, failed);
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits for the next action to end; the failure input of one that
    /// panicked or was cancelled (the others answered themselves).
    async fn next_failure(&mut self) -> Option<Input> {
        loop {
            match self.tasks.join_next_with_id().await? {
                Ok((id, ())) => {
                    self.failures.remove(&id);
                }
                Err(e) => {
                    if let Some(failed) = self.failures.remove(&e.id()) {
                        tracing::warn!(error = %e, "a consensus action's task failed");
                        return Some(failed);
                    }
                }
            }
        }
    }
}

/// One node's consensus loop. Build with [`ConsensusLoop::new`], then
/// [`ConsensusLoop::run`] it.
pub struct ConsensusLoop {
    machine: Box<dyn DutyMachine>,
    shared: Arc<Shared>,
    status: watch::Sender<LoopStatus>,
    /// The node's shared head follower (see [`crate::HeadFollower`]):
    /// the loop is fed its heads, and submissions look for their blocks
    /// in them.
    heads: watch::Receiver<u64>,
}

/// What every action's task needs.
struct Shared {
    config: ConsensusConfig,
    connection: Arc<ChainConnection>,
    dht: ConsensusDht,
    hosting: Option<Hosting>,
}

impl ConsensusLoop {
    /// A loop for the node behind `p2p`, reading the chain through
    /// `connection` and following `heads`; `clock` (the DHT's phase clock,
    /// moved by the head follower) gives the epoch length.
    pub async fn new(
        config: ConsensusConfig,
        p2p: Client,
        connection: Arc<ChainConnection>,
        clock: Arc<ChainClock>,
        heads: watch::Receiver<u64>,
        hosting: Option<Hosting>,
    ) -> NodeResult<Self> {
        let me = crate::stake::chain_peer_id(&p2p.peer_id()).map_err(NodeError::Consensus)?;
        let mut duty_config = DutyConfig::new(
            config.subnet,
            clock.epoch_length(),
            config.n_blocks,
            hosting.is_some(),
        );
        duty_config.challenge_tokens = config.challenge_tokens;
        duty_config.phases = config.phases;
        duty_config.scores = config.scores;
        duty_config.grace_blocks = PHASE_GRACE_BLOCKS;
        duty_config.genesis = p2p.genesis();
        duty_config.hidden_size = config.hidden;
        duty_config.model = config.model.clone();
        // The machine's only randomness (challenge seeds, salts): handed in.
        let duties = Duties::new(duty_config, me, rand::random());
        let machine = match &config.wrap {
            Some(wrap) => (wrap.0)(duties),
            None => Box::new(duties),
        };
        let dht = ConsensusDht {
            p2p,
            metrics: Arc::new(LoopMetrics::default()),
            ttl: config.record_ttl,
        };
        Ok(ConsensusLoop {
            machine,
            shared: Arc::new(Shared {
                config,
                connection,
                dht,
                hosting,
            }),
            status: watch::Sender::new(LoopStatus::default()),
            heads,
        })
    }

    /// The loop's byte and compute counters.
    pub fn metrics(&self) -> Arc<LoopMetrics> {
        self.shared.dht.metrics.clone()
    }

    /// Follows what the loop does.
    pub fn status(&self) -> watch::Receiver<LoopStatus> {
        self.status.subscribe()
    }

    /// Runs until the heads it was built with close, feeding the machine
    /// every new head and every action's outcome. Actions still running
    /// when it returns are cancelled.
    pub async fn run(mut self) {
        let (tx, mut outcomes) = mpsc::unbounded_channel::<Input>();
        let mut tasks = Actions::default();
        let mut heads = self.heads.clone();
        let first = *heads.borrow_and_update();
        if first > 0 {
            self.feed(Input::Head(first), &tx, &mut tasks);
        }
        loop {
            tokio::select! {
                changed = heads.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let height = *heads.borrow_and_update();
                    self.feed(Input::Head(height), &tx, &mut tasks);
                }
                Some(outcome) = outcomes.recv() => self.feed(outcome, &tx, &mut tasks),
                Some(failed) = tasks.next_failure(), if !tasks.is_empty() => {
                    self.feed(failed, &tx, &mut tasks);
                }
            }
        }
        tracing::warn!("the head follower stopped; the consensus loop stops");
    }

    fn feed(&mut self, input: Input, tx: &mpsc::UnboundedSender<Input>, tasks: &mut Actions) {
        if let Input::Head(height) = input {
            self.status.send_modify(|s| s.height = height);
        }
        // The machine scores inline: its time counts as the loop's compute.
        let started = Instant::now();
        let actions = self.machine.handle(input);
        self.shared.dht.metrics.add_compute(started.elapsed());
        for action in actions {
            self.execute(action, tx, tasks);
        }
    }

    fn execute(&mut self, action: Action, tx: &mpsc::UnboundedSender<Input>, tasks: &mut Actions) {
        let shared = self.shared.clone();
        let tx = tx.clone();
        match action {
            Action::Read { query, asked_at } => {
                let failed = Input::Read {
                    query: query.clone(),
                    asked_at,
                    result: Err("the read task failed".into()),
                };
                tasks.spawn(failed, async move {
                    let result = match tokio::time::timeout(ACTION_LIMIT, shared.read(&query)).await
                    {
                        Ok(result) => result,
                        Err(_) => Err(format!("no answer in {ACTION_LIMIT:?}")),
                    };
                    let _ = tx.send(Input::Read {
                        query,
                        asked_at,
                        result,
                    });
                });
            }
            Action::Write { key, bytes } => {
                let failed = Input::Written {
                    key: key.clone(),
                    result: Err("the write task failed".into()),
                };
                tasks.spawn(failed, async move {
                    let written = tokio::time::timeout(ACTION_LIMIT, shared.dht.write(&key, bytes));
                    let result = match written.await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no acknowledgement in {ACTION_LIMIT:?}")),
                    };
                    let _ = tx.send(Input::Written { key, result });
                });
            }
            Action::Submit { epoch, call } => {
                let failed = Input::Submitted {
                    epoch,
                    result: Err(SubmitError::Lost("the submission task failed".into())),
                };
                let heads = self.heads.clone();
                tasks.spawn(failed, async move {
                    let result = shared.submit(call, heads).await;
                    let _ = tx.send(Input::Submitted { epoch, result });
                });
            }
            Action::Sketch { epoch, challenge } => {
                let failed = Input::Sketched {
                    epoch,
                    result: Err("the sketch task failed".into()),
                };
                tasks.spawn(failed, async move {
                    let started = Instant::now();
                    let metrics = shared.dht.metrics.clone();
                    let result = tokio::task::spawn_blocking(move || shared.sketch(&challenge))
                        .await
                        .unwrap_or_else(|e| Err(format!("the sketch task failed: {e}")));
                    metrics.add_compute(started.elapsed());
                    let _ = tx.send(Input::Sketched { epoch, result });
                });
            }
            Action::Guard { epoch, challenge } => {
                if let Err(e) = shared.guard(&challenge) {
                    tracing::warn!(epoch, error = %e, "cannot guard the challenge input");
                }
            }
            Action::Notice(notice) => self.notice(notice),
        }
    }

    /// Logs what the machine noticed and keeps the status.
    fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::Registered { node } => {
                tracing::info!(node, "the chain lists this node");
                self.status.send_modify(|s| s.node = Some(node));
            }
            Notice::Written { duty, epoch } => {
                tracing::info!(epoch, ?duty, "record written");
                self.shared.config.metrics.record_written(duty);
            }
            Notice::ChallengeFound { epoch } => {
                tracing::debug!(epoch, "another validator wrote the challenge");
            }
            Notice::Scored { epoch, scores } => {
                self.status
                    .send_modify(|s| s.scores = Some((epoch, scores)));
            }
            Notice::Submitted { duty, epoch } => {
                tracing::info!(epoch, ?duty, "submitted");
            }
            Notice::OnChain { duty, epoch } => {
                tracing::info!(epoch, ?duty, "on chain");
                self.shared.config.metrics.call_on_chain(duty);
                self.status.send_modify(|s| match duty {
                    hypertensor_duties::Duty::Proposal => push_recent(&mut s.proposed, epoch),
                    _ => push_recent(&mut s.attested, epoch),
                });
            }
            Notice::Disagreed { epoch, reason } => {
                tracing::warn!(epoch, %reason, "not attesting: the proposal differs from my scores");
            }
            Notice::Failed { duty, epoch, error } => {
                tracing::info!(epoch, ?duty, %error, "failed; retrying while its window is open");
            }
        }
    }
}

impl Shared {
    /// Answers a query from the chain or the DHT.
    async fn read(&self, query: &Query) -> Result<Answer, String> {
        let subnet = self.config.subnet;
        let client = self.connection.client().await;
        let chain_error = |e: ChainError| {
            if matches!(e, ChainError::Closed) {
                self.connection.reconnect_in_background(client.clone());
            }
            e.to_string()
        };
        match query {
            Query::Epoch(e) => {
                let nodes = client.subnet_nodes(subnet).await.map_err(chain_error)?;
                let consensus = client
                    .consensus_data(subnet, Some(*e))
                    .await
                    .map_err(chain_error)?;
                let prev_snapshot = match e.checked_sub(1) {
                    Some(prev) => client
                        .consensus_data(subnet, Some(prev))
                        .await
                        .map_err(chain_error)?
                        .map(|c| c.snapshot)
                        .unwrap_or_default(),
                    None => Vec::new(),
                };
                Ok(Answer::Epoch(EpochChain {
                    epoch: *e,
                    nodes,
                    consensus,
                    prev_snapshot,
                }))
            }
            Query::Nodes => Ok(Answer::Nodes(
                client.subnet_nodes(subnet).await.map_err(chain_error)?,
            )),
            Query::Consensus(e) => Ok(Answer::Consensus(
                client
                    .consensus_data(subnet, Some(*e))
                    .await
                    .map_err(chain_error)?,
            )),
            Query::Key(key) => self
                .dht
                .read(key)
                .await
                .map(Answer::Key)
                .map_err(|e| e.to_string()),
        }
    }

    /// Signs and submits `call`, then looks for it in each block the
    /// node's head follower reports (`heads`), so a submission opens no
    /// head subscription of its own: a refusal of the pool or a failure in
    /// the block is `Refused`, anything else that keeps the outcome unknown
    /// is `Lost`.
    async fn submit(&self, call: Call, mut heads: watch::Receiver<u64>) -> Result<(), SubmitError> {
        let client = self.connection.client().await;
        // Blocks up to this height were built before the submission.
        let mut checked = *heads.borrow_and_update();
        let xt = match client.sign_and_submit(&self.config.hotkey, call).await {
            Ok(xt) => xt,
            Err(ChainError::Rpc(e)) => return Err(SubmitError::Refused(e.to_string())),
            Err(e) => return Err(SubmitError::Lost(e.to_string())),
        };
        let hash = xt.hash();
        let included = async {
            loop {
                if heads.changed().await.is_err() {
                    return Err(SubmitError::Lost("the head follower stopped".into()));
                }
                let top = *heads.borrow_and_update();
                // The follower may skip heights (it reports the latest):
                // every block since the last one looked at is searched.
                while checked < top {
                    checked += 1;
                    match client.find_in_block(BlockId::Height(checked), hash).await {
                        Ok(Some(inclusion)) => return Ok(inclusion),
                        Ok(None) => {}
                        Err(e) => return Err(SubmitError::Lost(e.to_string())),
                    }
                }
            }
        };
        let inclusion = match tokio::time::timeout(INCLUSION_LIMIT, included).await {
            Err(_) => {
                return Err(SubmitError::Lost(format!(
                    "not seen in a block within {INCLUSION_LIMIT:?}"
                )));
            }
            Ok(result) => result?,
        };
        match inclusion.events.iter().find_map(|r| match &r.event {
            Event::ExtrinsicFailed { error } => Some(error.to_string()),
            _ => None,
        }) {
            Some(error) => Err(SubmitError::Refused(format!(
                "failed in block {}: {error}",
                inclusion.height
            ))),
            None => Ok(()),
        }
    }

    /// Runs the challenge input through each block of the hoster's span
    /// and sketches every output.
    fn sketch(&self, challenge: &Challenge) -> Result<Sketches, String> {
        let hosting = self
            .hosting
            .as_ref()
            .ok_or_else(|| "this node hosts no span".to_string())?;
        let hidden = self.config.hidden;
        let input = challenge
            .input(hidden, self.config.target_norm)
            .map_err(|e| e.to_string())?;
        if let Some(server) = &hosting.server {
            server.set_challenge_input(Some(input.clone()));
        }
        let matrix = challenge.sketch_matrix(hidden).map_err(|e| e.to_string())?;
        let states = HiddenStates::new(hidden, input).map_err(|e| e.to_string())?;
        let outputs = hosting
            .span
            .forward_each_block(&states)
            .map_err(|e| e.to_string())?;
        let sketches: Vec<Sketch> = outputs
            .into_iter()
            .map(|output| matrix.sketch(&output.into_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let span_start = u32::try_from(hosting.span.range().start)
            .map_err(|_| "the span starts past u32".to_string())?;
        Ok(Sketches {
            span_start,
            sketches,
        })
    }

    /// Tells the block server the challenge input, so no one can buy its
    /// outputs from this server.
    fn guard(&self, challenge: &Challenge) -> Result<(), String> {
        let Some(server) = self.hosting.as_ref().and_then(|h| h.server.clone()) else {
            return Ok(());
        };
        let input = challenge
            .input(self.config.hidden, self.config.target_norm)
            .map_err(|e| e.to_string())?;
        server.set_challenge_input(Some(input));
        Ok(())
    }
}
