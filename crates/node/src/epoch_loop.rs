//! The per-epoch consensus loop of a subnet node (SPEC §6), driven by the
//! chain's new heads.
//!
//! On every head the loop asks itself, in table order, which of its duties
//! are open and not yet done, and does them:
//!
//! * **Validator-class nodes of the epoch's snapshot**: write the
//!   challenge (the elected validator; any of them as a fallback after
//!   p = 0.10 if none is found), commit their hoster scores in [0.60, 1.00),
//!   reveal them in the next epoch's [0.50, 0.60), propose (the elected one,
//!   in [0.60, 0.90)) or attest (the others, once the proposal matches what
//!   they compute themselves).
//! * **Hosters**: run the challenge input through each of their blocks,
//!   sketch the outputs, commit in [0.15, 0.50) and reveal in [0.50, 0.60).
//!
//! Reads that feed a score wait one block into their window (the grace the
//! DHT's phase validator allows late writers), so every node reads after
//! the last accepted write. Every duty is retried on the next head until
//! its window closes; failures are logged, never fatal.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hypertensor_chain_client::Client as ChainClient;
use hypertensor_consensus::NodeId;
use hypertensor_consensus::phase::{PhaseParams, Position, RecordKind, Writer};
use hypertensor_consensus::records::{
    Challenge, HosterReveal, Salt, Sketch, ValidatorReveal, select_challenge,
};
use hypertensor_consensus::scores::{ScoreParams, check_attestation};
use hypertensor_inference::BlockServer;
use hypertensor_model::{BlockSpan, HiddenStates};
use hypertensor_p2p::Client;
use hypertensor_primitives::codec::Encode;
use hypertensor_primitives::{Keypair, PeerId};
use hypertensor_runtime::{Call, EpochConsensus, SubnetId, SubnetNode};
use rand::Rng;
use tokio::sync::watch;

use crate::chain::ChainConnection;
use crate::clock::{ChainClock, PHASE_GRACE_BLOCKS};
use crate::dht::{ConsensusDht, LoopMetrics};
use crate::view::{EpochScores, EpochView, score_epoch};

/// How a node behaves in consensus. Everything but [`Behaviour::Honest`]
/// is fault injection, for the adversary tests and for demonstrating what
/// the scores catch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Behaviour {
    /// Follows the protocol.
    #[default]
    Honest,
    /// A hoster whose block outputs carry Gaussian noise of this standard
    /// deviation relative to each output's RMS.
    NoisyHoster {
        /// Noise RMS / output RMS.
        relative_noise: f32,
    },
    /// A hoster that publishes another hoster's commit (and later its
    /// reveal) instead of doing the work.
    CopyCommit,
    /// A validator whose reveal does not match its commit.
    LyingReveal,
    /// A validator that does nothing when it is the elected one.
    SilentWhenElected,
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
    /// Honest, or a fault to inject.
    pub behaviour: Behaviour,
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
            behaviour: Behaviour::Honest,
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

/// What the loop did in the latest epoch, for status displays and tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoopStatus {
    /// The chain height last handled.
    pub height: u64,
    /// This node's id on chain, once registered.
    pub node: Option<NodeId>,
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
    epochs.push(epoch);
    if epochs.len() > STATUS_EPOCHS {
        epochs.remove(0);
    }
}

/// A record built once for an epoch, so that a retried write sends the
/// same bytes (peers that kept the first copy must not see another).
struct Outgoing {
    bytes: Vec<u8>,
    written: bool,
}

impl Outgoing {
    fn new(bytes: Vec<u8>) -> Self {
        Outgoing {
            bytes,
            written: false,
        }
    }
}

/// What this node built and did, per epoch.
#[derive(Default)]
struct Done {
    /// `challenge/<e>`, or `None` once a fallback writer found one.
    challenge: BTreeMap<u64, Option<Outgoing>>,
    /// The hoster reveal of `e` and its commit record.
    hoster_commit: BTreeMap<u64, (Outgoing, Outgoing)>,
    /// The validator reveal of `e` and its commit record.
    validator_commit: BTreeMap<u64, (Outgoing, Outgoing)>,
    /// Epochs whose proposal or attestation the chain shows, and the height
    /// of the last submission of those still pending.
    on_chain: BTreeSet<u64>,
    submitted: BTreeMap<u64, u64>,
    disagreed: BTreeSet<u64>,
    /// Fault injection: whose commit was copied.
    copied_from: BTreeMap<u64, PeerId>,
}

impl Done {
    fn prune(&mut self, keep_from: u64) {
        self.challenge.retain(|e, _| *e >= keep_from);
        self.hoster_commit.retain(|e, _| *e >= keep_from);
        self.validator_commit.retain(|e, _| *e >= keep_from);
        self.on_chain.retain(|e| *e >= keep_from);
        self.submitted.retain(|e, _| *e >= keep_from);
        self.disagreed.retain(|e| *e >= keep_from);
        self.copied_from.retain(|e, _| *e >= keep_from);
    }
}

/// Longest the work of one head may take (chain RPC, DHT reads and
/// writes, sketching); past it the head is abandoned for the next.
const HEAD_WORK_LIMIT: Duration = Duration::from_secs(60);

/// Blocks to wait for a submitted proposal or attestation to show on chain
/// before submitting it again.
const RESUBMIT_AFTER_BLOCKS: u64 = 3;

/// The chain's view of one epoch, read once per epoch.
struct EpochChain {
    epoch: u64,
    nodes: Vec<SubnetNode>,
    consensus: Option<EpochConsensus>,
    prev_snapshot: Vec<NodeId>,
}

/// One node's consensus loop. Build with [`ConsensusLoop::new`], then
/// [`ConsensusLoop::run`] it.
pub struct ConsensusLoop {
    config: ConsensusConfig,
    connection: Arc<ChainConnection>,
    /// The connection's client, taken afresh for every head.
    chain: Arc<ChainClient>,
    clock: Arc<ChainClock>,
    dht: ConsensusDht,
    hosting: Option<Hosting>,
    me: PeerId,
    done: Done,
    epoch: Option<EpochChain>,
    status: watch::Sender<LoopStatus>,
    /// The epoch whose challenge input the block server refuses.
    guarded: Option<u64>,
}

impl ConsensusLoop {
    /// A loop for the node behind `p2p`, reading the chain through
    /// `connection`; `clock` (the DHT's phase clock, moved by the head
    /// follower) places heights in their epochs.
    pub async fn new(
        config: ConsensusConfig,
        p2p: Client,
        connection: Arc<ChainConnection>,
        clock: Arc<ChainClock>,
        hosting: Option<Hosting>,
    ) -> Result<Self> {
        let me = crate::stake::chain_peer_id(&p2p.peer_id()).map_err(anyhow::Error::msg)?;
        let dht = ConsensusDht {
            p2p,
            metrics: Arc::new(LoopMetrics::default()),
            ttl: config.record_ttl,
        };
        let chain = connection.client().await;
        Ok(ConsensusLoop {
            config,
            connection,
            chain,
            clock,
            dht,
            hosting,
            me,
            done: Done::default(),
            epoch: None,
            status: watch::Sender::new(LoopStatus::default()),
            guarded: None,
        })
    }

    /// The loop's byte and compute counters.
    pub fn metrics(&self) -> Arc<LoopMetrics> {
        self.dht.metrics.clone()
    }

    /// Follows what the loop does.
    pub fn status(&self) -> watch::Receiver<LoopStatus> {
        self.status.subscribe()
    }

    /// Runs until `heads` (the node's shared head follower, see
    /// [`crate::HeadFollower`]) closes, handling the newest head each time
    /// it moves: heads that arrive while one is handled are skipped, only
    /// the newest matters. The follower reconnects when the chain goes
    /// away; each head is handled with the connection's current client, so
    /// the loop carries on where the chain is.
    pub async fn run(mut self, mut heads: watch::Receiver<u64>) {
        while heads.changed().await.is_ok() {
            let height = *heads.borrow_and_update();
            self.chain = self.connection.client().await;
            match tokio::time::timeout(HEAD_WORK_LIMIT, self.on_head(height)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::info!(height, error = %format!("{e:#}"), "consensus step failed; retrying at the next head");
                }
                Err(_) => tracing::warn!(height, ?HEAD_WORK_LIMIT, "consensus step timed out"),
            }
        }
        tracing::warn!("the head follower stopped; the consensus loop stops");
    }

    /// Whether reads for a window starting at `window_start_bp` see every
    /// write: past the window's first block plus the grace the DHT's phase
    /// validator allows late writers.
    fn settled(&self, window_start_bp: u32, pos: Position) -> bool {
        let start = (u128::from(window_start_bp) * u128::from(pos.length))
            .div_ceil(u128::from(hypertensor_consensus::phase::BASIS_POINTS));
        u128::from(pos.offset) > start + u128::from(PHASE_GRACE_BLOCKS)
    }

    async fn on_head(&mut self, height: u64) -> Result<()> {
        let pos = self.clock.position_at(height);
        if self.epoch.as_ref().map(|c| c.epoch) != Some(pos.epoch) {
            self.epoch = Some(self.read_epoch(pos.epoch).await?);
            self.done.prune(pos.epoch.saturating_sub(2));
        } else if self.me_node().is_none() {
            // Not registered yet (or just now): look again.
            self.epoch = Some(self.read_epoch(pos.epoch).await?);
        }
        self.status.send_modify(|s| {
            s.height = height;
        });
        let Some(me) = self.me_node().cloned() else {
            return Ok(());
        };
        self.status.send_modify(|s| s.node = Some(me.id));
        let (is_validator, elected) = match self.epoch.as_ref().and_then(|c| c.consensus.as_ref()) {
            Some(c) => (c.snapshot.contains(&me.id), c.validator == me.id),
            None => (false, false),
        };
        let silent = elected && self.config.behaviour == Behaviour::SilentWhenElected;
        // Each duty on its own: one failing (a write no peer acknowledged)
        // must not skip the others of the same head.
        let mut failures = Vec::new();
        let mut note = |duty: &'static str, outcome: Result<()>| {
            if let Err(e) = outcome {
                failures.push(format!("{duty}: {e:#}"));
            }
        };
        if is_validator && !silent {
            note("challenge", self.challenge_duty(pos, elected).await);
        }
        if self.hosting.is_some() {
            note("challenge guard", self.guard_challenge(pos).await);
            note("hoster commit", self.hoster_commit_duty(pos).await);
            note("hoster reveal", self.hoster_reveal_duty(pos).await);
        }
        if is_validator {
            note("validator commit", self.validator_commit_duty(pos).await);
            if elected && !silent {
                note("proposal", self.propose_duty(pos, me.id).await);
            } else if !elected {
                note("attestation", self.attest_duty(pos, me.id).await);
            }
        }
        note("validator reveal", self.validator_reveal_duty(pos).await);
        match failures.is_empty() {
            true => Ok(()),
            false => Err(anyhow::anyhow!(failures.join("; "))),
        }
    }

    fn me_node(&self) -> Option<&SubnetNode> {
        self.epoch
            .as_ref()?
            .nodes
            .iter()
            .find(|n| n.peer_id == self.me)
    }

    async fn read_epoch(&self, epoch: u64) -> Result<EpochChain> {
        let subnet = self.config.subnet;
        let nodes = self.chain.subnet_nodes(subnet).await?;
        let consensus = self.chain.consensus_data(subnet, Some(epoch)).await?;
        let prev_snapshot = match epoch.checked_sub(1) {
            Some(prev) => self
                .chain
                .consensus_data(subnet, Some(prev))
                .await?
                .map(|c| c.snapshot)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(EpochChain {
            epoch,
            nodes,
            consensus,
            prev_snapshot,
        })
    }

    fn chain_epoch(&self) -> Result<&EpochChain> {
        self.epoch
            .as_ref()
            .context("the epoch's chain data is not read yet")
    }

    /// Writes `challenge/<e>`: the elected validator in its window, any
    /// other snapshot validator in the fallback window when no snapshot
    /// validator's challenge is found.
    async fn challenge_duty(&mut self, pos: Position, elected: bool) -> Result<()> {
        let e = pos.epoch;
        let writer = if elected {
            Writer::ElectedValidator
        } else {
            Writer::Validator
        };
        if !self
            .config
            .phases
            .may_write(RecordKind::Challenge, e, pos, writer)
        {
            return Ok(());
        }
        if !self.done.challenge.contains_key(&e) {
            let outgoing = if !elected && self.read_challenge(e).await?.is_some() {
                None
            } else {
                let challenge = Challenge {
                    seed: rand::rng().random(),
                    tokens: self.config.challenge_tokens,
                };
                Some(Outgoing::new(challenge.encode()))
            };
            self.done.challenge.insert(e, outgoing);
        }
        let key = RecordKind::Challenge.key(e);
        if let Some(Some(out)) = self.done.challenge.get_mut(&e)
            && !out.written
        {
            self.dht.write(&key, out.bytes.clone()).await?;
            out.written = true;
            tracing::info!(epoch = e, fallback = !elected, "challenge written");
        }
        Ok(())
    }

    /// The epoch's challenge: the elected validator's record, else the
    /// fallback of the lowest snapshot node id.
    async fn read_challenge(&self, e: u64) -> Result<Option<Challenge>> {
        let chain = self.chain_epoch()?;
        let Some(consensus) = chain.consensus.as_ref() else {
            return Ok(None);
        };
        let entries = self.dht.read(&RecordKind::Challenge.key(e)).await?;
        let candidates: Vec<(NodeId, bool, Challenge)> = chain
            .nodes
            .iter()
            .filter(|n| consensus.snapshot.contains(&n.id))
            .filter_map(|n| {
                let challenge = Challenge::decode(entries.get(&n.peer_id)?).ok()?;
                Some((n.id, n.id == consensus.validator, challenge))
            })
            .collect();
        Ok(select_challenge(&candidates).cloned())
    }

    /// Tells the block server this epoch's challenge input as soon as it
    /// can be read, so no one can buy its outputs from this server.
    async fn guard_challenge(&mut self, pos: Position) -> Result<()> {
        let Some(server) = self.hosting.as_ref().and_then(|h| h.server.clone()) else {
            return Ok(());
        };
        let e = pos.epoch;
        // Once guarded, the commit duty's own read settles which challenge
        // counts (and sets it again when it sketches).
        if self.guarded == Some(e) {
            return Ok(());
        }
        if let Some(challenge) = self.read_challenge(e).await? {
            let input = challenge.input(self.config.hidden, self.config.target_norm)?;
            server.set_challenge_input(Some(input));
            self.guarded = Some(e);
        }
        Ok(())
    }

    async fn hoster_commit_duty(&mut self, pos: Position) -> Result<()> {
        let e = pos.epoch;
        let open = self
            .config
            .phases
            .may_write(RecordKind::HosterCommit, e, pos, Writer::Other);
        // The challenge may still arrive within the grace: read it after.
        if !open || !self.settled(self.config.phases.hoster_commit.start, pos) {
            return Ok(());
        }
        let key = RecordKind::HosterCommit.key(e);
        if !self.done.hoster_commit.contains_key(&e) {
            let Some(hosting) = self.hosting.clone() else {
                return Ok(());
            };
            let Some(challenge) = self.read_challenge(e).await? else {
                tracing::debug!(epoch = e, "no challenge yet");
                return Ok(());
            };
            let built = if self.config.behaviour == Behaviour::CopyCommit {
                let commits = self.dht.read(&key).await?;
                let Some((victim, commit)) = commits.into_iter().find(|(w, _)| *w != self.me)
                else {
                    return Ok(());
                };
                tracing::info!(epoch = e, %victim, "copying another hoster's commit (fault injection)");
                self.done.copied_from.insert(e, victim);
                (Outgoing::new(Vec::new()), Outgoing::new(commit))
            } else {
                let config = self.config.clone();
                let started = Instant::now();
                let reveal = tokio::task::spawn_blocking(move || {
                    sketch_challenge(&config, &hosting, &challenge)
                })
                .await
                .context("the sketch task failed")??;
                self.dht.metrics.add_compute(started.elapsed());
                let commit = reveal.commit(e, &self.me);
                (
                    Outgoing::new(reveal.encode()),
                    Outgoing::new(commit.0.to_vec()),
                )
            };
            self.done.hoster_commit.insert(e, built);
        }
        if let Some((_, commit)) = self.done.hoster_commit.get_mut(&e)
            && !commit.written
        {
            self.dht.write(&key, commit.bytes.clone()).await?;
            commit.written = true;
            tracing::info!(epoch = e, "hoster commit written");
        }
        Ok(())
    }

    async fn hoster_reveal_duty(&mut self, pos: Position) -> Result<()> {
        let e = pos.epoch;
        if !self
            .config
            .phases
            .may_write(RecordKind::HosterReveal, e, pos, Writer::Other)
        {
            return Ok(());
        }
        let key = RecordKind::HosterReveal.key(e);
        if let Some(victim) = self.done.copied_from.get(&e).cloned()
            && let Some((reveal, _)) = self.done.hoster_commit.get_mut(&e)
            && reveal.bytes.is_empty()
        {
            // The victim has to reveal first: try again next block.
            let Some(copied) = self.dht.read(&key).await?.remove(&victim) else {
                return Ok(());
            };
            reveal.bytes = copied;
        }
        let Some((reveal, commit)) = self.done.hoster_commit.get_mut(&e) else {
            return Ok(());
        };
        if !commit.written || reveal.written {
            return Ok(());
        }
        self.dht.write(&key, reveal.bytes.clone()).await?;
        reveal.written = true;
        tracing::info!(epoch = e, "hoster reveal written");
        Ok(())
    }

    /// Reads what scoring epoch `e` needs and scores it. The node list is
    /// read afresh: a node removed during the epoch must not be proposed.
    async fn score(&self, e: u64) -> Result<EpochScores> {
        let chain = self.chain_epoch()?;
        let nodes = self.chain.subnet_nodes(self.config.subnet).await?;
        let hoster_commits = self.dht.read(&RecordKind::HosterCommit.key(e)).await?;
        let hoster_reveals = self.dht.read(&RecordKind::HosterReveal.key(e)).await?;
        let (validator_commits, validator_reveals) = match e.checked_sub(1) {
            Some(prev) if !chain.prev_snapshot.is_empty() => (
                self.dht
                    .read(&RecordKind::ValidatorCommit.key(prev))
                    .await?,
                self.dht
                    .read(&RecordKind::ValidatorReveal.key(prev))
                    .await?,
            ),
            _ => Default::default(),
        };
        let view = EpochView {
            nodes,
            hoster_commits,
            hoster_reveals,
            prev_validators: chain.prev_snapshot.clone(),
            validator_commits,
            validator_reveals,
        };
        let (params, n_blocks) = (self.config.scores, self.config.n_blocks);
        let started = Instant::now();
        let scores = tokio::task::spawn_blocking(move || score_epoch(&params, e, n_blocks, &view))
            .await
            .context("the scoring task failed")??;
        self.dht.metrics.add_compute(started.elapsed());
        self.status
            .send_modify(|s| s.scores = Some((e, scores.clone())));
        Ok(scores)
    }

    async fn validator_commit_duty(&mut self, pos: Position) -> Result<()> {
        let e = pos.epoch;
        let window = self.config.phases.validator_commit;
        if !self
            .config
            .phases
            .may_write(RecordKind::ValidatorCommit, e, pos, Writer::Validator)
            || !self.settled(window.start, pos)
        {
            return Ok(());
        }
        if !self.done.validator_commit.contains_key(&e) {
            let scores = self.score(e).await?;
            let mut reveal = ValidatorReveal::new(rand::rng().random::<Salt>(), &scores.hosters)?;
            let commit = reveal.commit(e, &self.me);
            if self.config.behaviour == Behaviour::LyingReveal {
                // Reveal other scores than committed: every hoster the same.
                let n = reveal.scores.len().max(1) as f64;
                for (_, s) in &mut reveal.scores {
                    *s = 0.4 / n;
                }
                reveal.salt[0] ^= 1;
            }
            self.done.validator_commit.insert(
                e,
                (
                    Outgoing::new(reveal.encode()),
                    Outgoing::new(commit.0.to_vec()),
                ),
            );
        }
        if let Some((_, commit)) = self.done.validator_commit.get_mut(&e)
            && !commit.written
        {
            self.dht
                .write(&RecordKind::ValidatorCommit.key(e), commit.bytes.clone())
                .await?;
            commit.written = true;
            tracing::info!(epoch = e, "validator commit written");
        }
        Ok(())
    }

    async fn validator_reveal_duty(&mut self, pos: Position) -> Result<()> {
        let Some(e) = pos.epoch.checked_sub(1) else {
            return Ok(());
        };
        if !self
            .config
            .phases
            .may_write(RecordKind::ValidatorReveal, e, pos, Writer::Validator)
        {
            return Ok(());
        }
        let Some((reveal, commit)) = self.done.validator_commit.get_mut(&e) else {
            return Ok(());
        };
        if !commit.written || reveal.written {
            return Ok(());
        }
        self.dht
            .write(&RecordKind::ValidatorReveal.key(e), reveal.bytes.clone())
            .await?;
        reveal.written = true;
        tracing::info!(epoch = e, "validator reveal written");
        Ok(())
    }

    /// Whether `e`'s proposal or attestation should be (re)submitted now:
    /// not yet seen on chain, and none submitted in the last few blocks.
    fn due(&self, e: u64, height: u64) -> bool {
        !self.done.on_chain.contains(&e)
            && self
                .done
                .submitted
                .get(&e)
                .is_none_or(|at| height >= at + RESUBMIT_AFTER_BLOCKS)
    }

    async fn propose_duty(&mut self, pos: Position, me: NodeId) -> Result<()> {
        let e = pos.epoch;
        let window = self.config.phases.proposal;
        let height = e * pos.length + pos.offset;
        if !self.config.phases.proposal_open(pos)
            || !self.settled(window.start, pos)
            || !self.due(e, height)
        {
            return Ok(());
        }
        let consensus = self
            .chain
            .consensus_data(self.config.subnet, Some(e))
            .await?;
        if consensus.as_ref().is_some_and(|c| c.proposal.is_some()) {
            self.done.on_chain.insert(e);
            self.status.send_modify(|s| push_recent(&mut s.proposed, e));
            return Ok(());
        }
        let scores = self.score(e).await?;
        let call = Call::ProposeAttestation {
            subnet: self.config.subnet,
            epoch: e,
            scores: scores.proposal.clone(),
        };
        self.done.submitted.insert(e, height);
        self.chain
            .sign_and_submit(&self.config.hotkey, call)
            .await
            .context("propose_attestation was refused")?;
        tracing::info!(
            epoch = e,
            node = me,
            nodes = scores.proposal.len(),
            "proposal submitted"
        );
        Ok(())
    }

    async fn attest_duty(&mut self, pos: Position, me: NodeId) -> Result<()> {
        let e = pos.epoch;
        let window = self.config.phases.proposal;
        let height = e * pos.length + pos.offset;
        if !self.settled(window.start, pos) || !self.due(e, height) {
            return Ok(());
        }
        let Some(consensus) = self
            .chain
            .consensus_data(self.config.subnet, Some(e))
            .await?
        else {
            return Ok(());
        };
        if consensus.attestations.contains(&me) {
            self.done.on_chain.insert(e);
            self.status.send_modify(|s| push_recent(&mut s.attested, e));
            return Ok(());
        }
        let Some(proposed) = consensus.proposal else {
            return Ok(());
        };
        let scores = self.score(e).await?;
        if let Err(e_) = check_attestation(&scores.proposal, &proposed) {
            if self.done.disagreed.insert(e) {
                tracing::warn!(epoch = e, reason = %e_, "not attesting: the proposal differs from my scores");
            }
            return Ok(());
        }
        let call = Call::Attest {
            subnet: self.config.subnet,
            epoch: e,
        };
        self.done.submitted.insert(e, height);
        self.chain
            .sign_and_submit(&self.config.hotkey, call)
            .await
            .context("attest was refused")?;
        tracing::info!(epoch = e, "attestation submitted");
        Ok(())
    }
}

/// Runs the challenge input through each block of the hoster's span,
/// sketches every output and builds the reveal (with a fresh salt).
fn sketch_challenge(
    config: &ConsensusConfig,
    hosting: &Hosting,
    challenge: &Challenge,
) -> Result<HosterReveal> {
    let input = challenge.input(config.hidden, config.target_norm)?;
    if let Some(server) = &hosting.server {
        server.set_challenge_input(Some(input.clone()));
    }
    let matrix = challenge.sketch_matrix(config.hidden)?;
    let outputs = hosting
        .span
        .forward_each_block(&HiddenStates::new(config.hidden, input)?)?;
    let mut rng = rand::rng();
    let mut sketches: Vec<Sketch> = Vec::with_capacity(outputs.len());
    for output in outputs {
        let mut values = output.into_vec();
        if let Behaviour::NoisyHoster { relative_noise } = config.behaviour {
            add_noise(&mut values, relative_noise, &mut rng);
        }
        sketches.push(matrix.sketch(&values)?);
    }
    let start = u32::try_from(hosting.span.range().start).context("span start")?;
    Ok(HosterReveal::new(rng.random(), start, sketches)?)
}

/// Adds Gaussian noise of `relative` times the values' RMS.
fn add_noise(values: &mut [f32], relative: f32, rng: &mut impl Rng) {
    let rms = (values.iter().map(|v| v * v).sum::<f32>() / values.len().max(1) as f32).sqrt();
    for v in values {
        // Box-Muller; one normal per pair of uniforms is enough here.
        let u1: f32 = rng.random_range(f32::EPSILON..1.0);
        let u2: f32 = rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
        *v += z * relative * rms;
    }
}
