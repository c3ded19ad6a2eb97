//! The honest duty state machine: what a node must do at each head, and
//! what it needs read first.
//!
//! On every input the machine asks itself, in table order, which duties
//! are open and not yet done:
//!
//! * **Validator-class nodes of the epoch's snapshot**: write the
//!   challenge (the elected validator; any of them in the fallback window
//!   if none is found), commit their hoster scores in [0.60, 1.00), reveal
//!   them in the next epoch's [0.50, 0.60), propose (the elected one, in
//!   [0.60, 0.90)) or attest (the others, once the proposal matches what
//!   they compute themselves).
//! * **Hosters**: have the challenge sketched, commit in [0.15, 0.50) and
//!   reveal in [0.50, 0.60).
//!
//! A duty that needs something it does not know asks for it (a read) and
//! waits for the answer; answers are stamped with the head they were asked
//! at, and a duty that needs a fresh view accepts only answers asked after
//! its own threshold (reads that feed a score wait one block plus the DHT's
//! grace into their window, so they see every accepted write). Reads,
//! writes, sketches and submissions in flight are never asked twice; a
//! failed one is tried again at the next head while its window is open.

use std::collections::{BTreeMap, BTreeSet};

use hypertensor_consensus::NodeId;
use hypertensor_consensus::phase::{BASIS_POINTS, Position, RecordKind, Writer};
use hypertensor_consensus::records::{
    Challenge, HosterReveal, Salt, ValidatorReveal, select_challenge,
};
use hypertensor_consensus::scores::check_attestation;
use hypertensor_primitives::PeerId;
use hypertensor_primitives::codec::Encode;
use hypertensor_runtime::{Call, EpochConsensus, SubnetNode};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::config::DutyConfig;
use crate::io::{
    Action, Answer, Duty, DutyMachine, EpochChain, Input, Notice, Query, Sketches, SubmitError,
};
use crate::retry::Failures;
use crate::view::{Entries, EpochScores, EpochView, score_epoch};

/// An answer and the head it was asked at.
struct Known {
    asked_at: u64,
    answer: Answer,
}

/// A record built once for an epoch, so that a retried write sends the
/// same bytes (peers that kept the first copy must not see another).
struct Record {
    bytes: Vec<u8>,
    written: bool,
}

/// What this node built and did, by epoch.
#[derive(Default)]
struct Done {
    /// This node's records by DHT key.
    records: BTreeMap<String, Record>,
    /// Epochs whose challenge another validator wrote in the fallback
    /// window.
    challenge_found: BTreeSet<u64>,
    /// Epochs whose proposal or attestation the chain shows.
    on_chain: BTreeSet<u64>,
    /// The head of the last submission of those still pending.
    submitted: BTreeMap<u64, u64>,
    /// Epochs whose last submission was refused (made again at the next
    /// head, from reads asked after it).
    refused: BTreeSet<u64>,
    /// The last call submitted, by epoch.
    calls: BTreeMap<u64, Call>,
    /// Calls whose submission was lost: sent again as they are.
    resend: BTreeMap<u64, Call>,
    /// Epochs whose proposal this node disagreed with (noticed once).
    disagreed: BTreeSet<u64>,
    /// The scores last noticed, by epoch.
    scored: BTreeMap<u64, EpochScores>,
}

/// The height of a position.
fn height_of(pos: Position) -> u64 {
    pos.epoch
        .saturating_mul(pos.length)
        .saturating_add(pos.offset)
}

/// What a score was computed from: the heads its answers were asked at.
#[derive(Clone, Debug, PartialEq)]
struct ScoreKey {
    stamps: Vec<u64>,
    proposed: Option<Vec<NodeId>>,
    prev_snapshot: Vec<NodeId>,
}

/// One node's consensus duties. Feed it with [`DutyMachine::handle`].
pub struct Duties {
    config: DutyConfig,
    me: PeerId,
    rng: ChaCha20Rng,
    height: Option<u64>,
    node: Option<NodeId>,
    known: BTreeMap<Query, Known>,
    asking: BTreeSet<Query>,
    failed_reads: Failures<Query>,
    /// Writes in flight, with the head each was asked at.
    writing: BTreeMap<String, u64>,
    failed_writes: Failures<String>,
    /// Sketches in flight, with the head each was asked at.
    sketching: BTreeMap<u64, u64>,
    failed_sketches: Failures<u64>,
    failed_submits: Failures<u64>,
    submitting: BTreeMap<u64, Duty>,
    guarded: Option<u64>,
    score_cache: BTreeMap<u64, (ScoreKey, EpochScores)>,
    done: Done,
    out: Vec<Action>,
}

impl Duties {
    /// The duties of the node whose chain peer id is `me`; challenge seeds
    /// and salts are drawn from `seed` (hand in fresh randomness).
    pub fn new(config: DutyConfig, me: PeerId, seed: [u8; 32]) -> Self {
        Duties {
            config,
            me,
            rng: ChaCha20Rng::from_seed(seed),
            height: None,
            node: None,
            known: BTreeMap::new(),
            asking: BTreeSet::new(),
            failed_reads: Failures::default(),
            writing: BTreeMap::new(),
            failed_writes: Failures::default(),
            sketching: BTreeMap::new(),
            failed_sketches: Failures::default(),
            failed_submits: Failures::default(),
            submitting: BTreeMap::new(),
            guarded: None,
            score_cache: BTreeMap::new(),
            done: Done::default(),
            out: Vec::new(),
        }
    }

    /// The node's settings.
    pub fn config(&self) -> &DutyConfig {
        &self.config
    }

    /// The chain peer id the duties are for.
    pub fn me(&self) -> &PeerId {
        &self.me
    }

    /// The latest head handled.
    pub fn height(&self) -> Option<u64> {
        self.height
    }

    /// This node's id on chain, once the chain lists it.
    pub fn node(&self) -> Option<NodeId> {
        self.node
    }

    fn position(&self, height: u64) -> Position {
        let length = self.config.epoch_length.max(1);
        Position {
            epoch: height / length,
            offset: height % length,
            length,
        }
    }

    /// The first block of a window starting at `start_bp` in epoch `e`.
    fn window_start(&self, e: u64, start_bp: u32) -> u64 {
        let length = self.config.epoch_length.max(1);
        let offset = (u128::from(start_bp) * u128::from(length)).div_ceil(u128::from(BASIS_POINTS));
        e.saturating_mul(length)
            .saturating_add(u64::try_from(offset).unwrap_or(length))
    }

    /// The first head at which reads for a window starting at `start_bp`
    /// of epoch `e` see every write: past the window's first block plus
    /// the grace the DHT's phase validator allows late writers.
    fn settle_height(&self, e: u64, start_bp: u32) -> u64 {
        self.window_start(e, start_bp)
            .saturating_add(self.config.grace_blocks)
            .saturating_add(1)
    }

    fn settled(&self, start_bp: u32, pos: Position) -> bool {
        height_of(pos) >= self.settle_height(pos.epoch, start_bp)
    }

    fn notice(&mut self, notice: Notice) {
        self.out.push(Action::Notice(notice));
    }

    /// The latest answer to `query` asked at `min_asked` or later, asking
    /// for one if there is none (or, with `refresh`, if the latest was
    /// asked before the current head) and none is in flight.
    fn ask(&mut self, query: Query, min_asked: u64, refresh: bool) -> Option<Answer> {
        self.request(query.clone(), min_asked, refresh)?;
        self.known.get(&query).map(|k| k.answer.clone())
    }

    /// [`Duties::ask`] without the answer: the head the usable answer was
    /// asked at.
    fn request(&mut self, query: Query, min_asked: u64, refresh: bool) -> Option<u64> {
        let height = self.height?;
        let known = self.known.get(&query);
        let usable = known
            .filter(|k| k.asked_at >= min_asked)
            .map(|k| k.asked_at);
        let stale =
            known.is_none_or(|k| k.asked_at < min_asked || (refresh && k.asked_at < height));
        if stale && !self.asking.contains(&query) && !self.failed_reads.blocked(&query, height) {
            self.asking.insert(query.clone());
            self.out.push(Action::Read {
                query,
                asked_at: height,
            });
        }
        usable
    }

    fn epoch_chain(&mut self, e: u64, min_asked: u64, refresh: bool) -> Option<EpochChain> {
        match self.ask(Query::Epoch(e), min_asked, refresh)? {
            Answer::Epoch(chain) => Some(chain),
            _ => None,
        }
    }

    fn nodes(&mut self, min_asked: u64, refresh: bool) -> Option<Vec<SubnetNode>> {
        match self.ask(Query::Nodes, min_asked, refresh)? {
            Answer::Nodes(nodes) => Some(nodes),
            _ => None,
        }
    }

    fn consensus(
        &mut self,
        e: u64,
        min_asked: u64,
        refresh: bool,
    ) -> Option<Option<EpochConsensus>> {
        match self.ask(Query::Consensus(e), min_asked, refresh)? {
            Answer::Consensus(c) => Some(c),
            _ => None,
        }
    }

    fn entries(&mut self, key: String, min_asked: u64, refresh: bool) -> Option<Entries> {
        match self.ask(Query::Key(key), min_asked, refresh)? {
            Answer::Key(entries) => Some(entries),
            _ => None,
        }
    }

    /// Asks for the write of this node's record under `key` unless it is
    /// written, being written, or failed at this head.
    fn write(&mut self, key: String) {
        let Some(height) = self.height else { return };
        let Some(record) = self.done.records.get(&key) else {
            return;
        };
        if record.written
            || self.writing.contains_key(&key)
            || self.failed_writes.blocked(&key, height)
        {
            return;
        }
        let bytes = record.bytes.clone();
        self.writing.insert(key.clone(), height);
        self.out.push(Action::Write { key, bytes });
    }

    fn written(&self, key: &str) -> bool {
        self.done.records.get(key).is_some_and(|r| r.written)
    }

    fn salt(&mut self) -> Salt {
        let mut salt = Salt::default();
        self.rng.fill_bytes(&mut salt);
        salt
    }

    /// The epoch's challenge as read at `min_asked` or later: the elected
    /// validator's record, else the fallback of the lowest snapshot node
    /// id. `Some(None)`: read, and there is none (asked again at the next
    /// head with `refresh`).
    fn read_challenge(
        &mut self,
        e: u64,
        chain: &EpochChain,
        min_asked: u64,
        refresh: bool,
    ) -> Option<Option<Challenge>> {
        let Some(consensus) = chain.consensus.as_ref() else {
            return Some(None);
        };
        let key = RecordKind::Challenge.key(e);
        let entries = self.entries(key.clone(), min_asked, false)?;
        let candidates: Vec<(NodeId, bool, Challenge)> = chain
            .nodes
            .iter()
            .filter(|n| consensus.snapshot.contains(&n.id))
            .filter_map(|n| {
                let challenge = Challenge::decode(entries.get(&n.peer_id)?).ok()?;
                Some((n.id, n.id == consensus.validator, challenge))
            })
            .collect();
        let found = select_challenge(&candidates).cloned();
        if found.is_none() && refresh {
            self.entries(key, min_asked, true);
        }
        Some(found)
    }

    /// Runs every open duty as far as what is known allows.
    fn evaluate(&mut self) {
        let Some(height) = self.height else { return };
        let pos = self.position(height);
        let e = pos.epoch;
        let registered = match self.known.get(&Query::Epoch(e)) {
            Some(Known {
                answer: Answer::Epoch(chain),
                ..
            }) => chain.nodes.iter().any(|n| n.peer_id == self.me),
            _ => false,
        };
        // Not registered yet (or just now): look again at every head.
        let Some(chain) = self.epoch_chain(e, e.saturating_mul(pos.length), !registered) else {
            return;
        };
        let Some(me) = chain.nodes.iter().find(|n| n.peer_id == self.me).cloned() else {
            return;
        };
        if self.node != Some(me.id) {
            self.node = Some(me.id);
            self.notice(Notice::Registered { node: me.id });
        }
        let (is_validator, elected) = match chain.consensus.as_ref() {
            Some(c) => (c.snapshot.contains(&me.id), c.validator == me.id),
            None => (false, false),
        };
        if is_validator {
            self.challenge_duty(pos, elected, &chain);
        }
        if self.config.hosts {
            self.guard_duty(pos, &chain);
            self.hoster_commit_duty(pos, &chain);
            self.hoster_reveal_duty(pos);
        }
        if is_validator {
            self.validator_commit_duty(pos, &chain);
            if elected {
                self.propose_duty(pos, &chain);
            } else {
                self.attest_duty(pos, me.id, &chain);
            }
        }
        self.validator_reveal_duty(pos);
    }

    /// Writes `challenge/<e>`: the elected validator in its window, any
    /// other snapshot validator in the fallback window when no snapshot
    /// validator's challenge is found.
    fn challenge_duty(&mut self, pos: Position, elected: bool, chain: &EpochChain) {
        let e = pos.epoch;
        let writer = if elected {
            Writer::ElectedValidator
        } else {
            Writer::Validator
        };
        let phases = self.config.phases;
        // The fallback window can be one block: a read asked in it may
        // answer after it, so the fallback writer may still decide and
        // write within the grace the DHT allows late writers.
        let late_fallback = !elected
            && height_of(pos) >= self.window_start(e, phases.challenge_fallback.start)
            && height_of(pos)
                < self
                    .window_start(e, phases.challenge_fallback.end)
                    .saturating_add(self.config.grace_blocks);
        if !(phases.may_write(RecordKind::Challenge, e, pos, writer) || late_fallback)
            || self.done.challenge_found.contains(&e)
        {
            return;
        }
        let key = RecordKind::Challenge.key(e);
        if !self.done.records.contains_key(&key) {
            if !elected {
                let opened = self.window_start(e, phases.challenge_fallback.start);
                match self.read_challenge(e, chain, opened, false) {
                    None => return,
                    Some(Some(_)) => {
                        self.done.challenge_found.insert(e);
                        self.notice(Notice::ChallengeFound { epoch: e });
                        return;
                    }
                    Some(None) => {}
                }
            }
            let mut seed = [0u8; 32];
            self.rng.fill_bytes(&mut seed);
            let challenge = Challenge {
                seed,
                tokens: self.config.challenge_tokens,
            };
            self.done.records.insert(
                key.clone(),
                Record {
                    bytes: challenge.encode(),
                    written: false,
                },
            );
        }
        self.write(key);
    }

    /// Tells the block server the epoch's challenge as soon as it can be
    /// read.
    fn guard_duty(&mut self, pos: Position, chain: &EpochChain) {
        let e = pos.epoch;
        if self.guarded == Some(e) {
            return;
        }
        if let Some(Some(challenge)) =
            self.read_challenge(e, chain, e.saturating_mul(pos.length), true)
        {
            self.guarded = Some(e);
            self.out.push(Action::Guard {
                epoch: e,
                challenge,
            });
        }
    }

    fn hoster_commit_duty(&mut self, pos: Position, chain: &EpochChain) {
        let e = pos.epoch;
        let start = self.config.phases.hoster_commit.start;
        let open = self
            .config
            .phases
            .may_write(RecordKind::HosterCommit, e, pos, Writer::Other);
        // The challenge may still arrive within the grace: read it after.
        if !open || !self.settled(start, pos) {
            return;
        }
        let key = RecordKind::HosterCommit.key(e);
        if !self.done.records.contains_key(&key) {
            let height = height_of(pos);
            if self.sketching.contains_key(&e) || self.failed_sketches.blocked(&e, height) {
                return;
            }
            let settle = self.settle_height(e, start);
            if let Some(Some(challenge)) = self.read_challenge(e, chain, settle, true) {
                self.sketching.insert(e, height);
                self.out.push(Action::Sketch {
                    epoch: e,
                    challenge,
                });
            }
            return;
        }
        self.write(key);
    }

    /// Builds the hoster reveal of `e` and its commit from the sketches.
    fn on_sketched(&mut self, e: u64, sketches: Sketches) {
        let salt = self.salt();
        match HosterReveal::new(salt, sketches.span_start, sketches.sketches) {
            Ok(reveal) => {
                let commit = reveal.commit(e, &self.me);
                self.done.records.insert(
                    RecordKind::HosterCommit.key(e),
                    Record {
                        bytes: commit.0.to_vec(),
                        written: false,
                    },
                );
                self.done.records.insert(
                    RecordKind::HosterReveal.key(e),
                    Record {
                        bytes: reveal.encode(),
                        written: false,
                    },
                );
            }
            Err(error) => {
                let asked_at = self.height.unwrap_or(0);
                self.sketch_failed(e, asked_at, error.to_string());
            }
        }
    }

    /// Notes a failed sketch of `e`, asked at `asked_at`: it is asked again
    /// at any later head.
    fn sketch_failed(&mut self, e: u64, asked_at: u64, error: String) {
        // A forward pass is costly and a failed one usually fails again:
        // wait for the next head (counted as both attempts of this one).
        self.failed_sketches.record(e, asked_at);
        self.failed_sketches.record(e, asked_at);
        self.notice(Notice::Failed {
            duty: Duty::HosterCommit,
            epoch: e,
            error,
        });
    }

    fn hoster_reveal_duty(&mut self, pos: Position) {
        let e = pos.epoch;
        let open = self
            .config
            .phases
            .may_write(RecordKind::HosterReveal, e, pos, Writer::Other);
        if open && self.written(&RecordKind::HosterCommit.key(e)) {
            self.write(RecordKind::HosterReveal.key(e));
        }
    }

    /// Scores epoch `e` from reads asked at `min_asked` or later. The node
    /// list is read afresh: a node removed during the epoch must not be
    /// proposed (the chain refuses a proposal naming an unknown node).
    ///
    /// An attester passes the proposal as `proposed`: a node it names that
    /// the chain listed at the epoch's start but no longer lists was
    /// removed after the proposal, and is scored as the proposer saw it, so
    /// honest validators still agree (the chain pays a removed node
    /// nothing either way). Every read is asked at once.
    fn score(
        &mut self,
        e: u64,
        chain: &EpochChain,
        min_asked: u64,
        refresh: bool,
        duty: Duty,
        proposed: Option<&[(NodeId, u128)]>,
    ) -> Option<EpochScores> {
        // Scoring is the machine's costliest step: score again only when
        // an answer it reads has changed.
        let mut queries = vec![
            Query::Nodes,
            Query::Key(RecordKind::HosterCommit.key(e)),
            Query::Key(RecordKind::HosterReveal.key(e)),
            Query::Key(RecordKind::Evidence.key(e)),
        ];
        if let Some(prev) = e.checked_sub(1)
            && !chain.prev_snapshot.is_empty()
        {
            queries.push(Query::Key(RecordKind::ValidatorCommit.key(prev)));
            queries.push(Query::Key(RecordKind::ValidatorReveal.key(prev)));
        }
        let stamps: Vec<Option<u64>> = queries
            .into_iter()
            .map(|q| self.request(q, min_asked, refresh))
            .collect();
        let stamps: Vec<u64> = stamps.into_iter().collect::<Option<_>>()?;
        let key = ScoreKey {
            stamps,
            proposed: proposed.map(|p| p.iter().map(|(id, _)| *id).collect()),
            prev_snapshot: chain.prev_snapshot.clone(),
        };
        if let Some((cached, scores)) = self.score_cache.get(&e)
            && *cached == key
        {
            return Some(scores.clone());
        }
        let nodes = self.nodes(min_asked, refresh).map(|mut nodes| {
            for (id, _) in proposed.unwrap_or_default() {
                if nodes.iter().all(|n| n.id != *id)
                    && let Some(removed) = chain.nodes.iter().find(|n| n.id == *id)
                {
                    nodes.push(removed.clone());
                }
            }
            nodes
        });
        let hoster_commits = self.entries(RecordKind::HosterCommit.key(e), min_asked, refresh);
        let hoster_reveals = self.entries(RecordKind::HosterReveal.key(e), min_asked, refresh);
        let evidence = self.entries(RecordKind::Evidence.key(e), min_asked, refresh);
        let (validator_commits, validator_reveals) = match e.checked_sub(1) {
            Some(prev) if !chain.prev_snapshot.is_empty() => (
                self.entries(RecordKind::ValidatorCommit.key(prev), min_asked, refresh),
                self.entries(RecordKind::ValidatorReveal.key(prev), min_asked, refresh),
            ),
            _ => (Some(Entries::new()), Some(Entries::new())),
        };
        let view = EpochView {
            nodes: nodes?,
            hoster_commits: hoster_commits?,
            hoster_reveals: hoster_reveals?,
            prev_validators: chain.prev_snapshot.clone(),
            validator_commits: validator_commits?,
            validator_reveals: validator_reveals?,
            evidence: evidence?,
            genesis: self.config.genesis,
            hidden_size: self.config.hidden_size,
            model: self.config.model.clone(),
        };
        match score_epoch(&self.config.scores, e, self.config.n_blocks, &view) {
            Ok(scores) => {
                self.score_cache.insert(e, (key, scores.clone()));
                if self.done.scored.get(&e) != Some(&scores) {
                    self.done.scored.insert(e, scores.clone());
                    self.notice(Notice::Scored {
                        epoch: e,
                        scores: scores.clone(),
                    });
                }
                Some(scores)
            }
            Err(error) => {
                self.notice(Notice::Failed {
                    duty,
                    epoch: e,
                    error: error.to_string(),
                });
                None
            }
        }
    }

    fn validator_commit_duty(&mut self, pos: Position, chain: &EpochChain) {
        let e = pos.epoch;
        let start = self.config.phases.validator_commit.start;
        let open =
            self.config
                .phases
                .may_write(RecordKind::ValidatorCommit, e, pos, Writer::Validator);
        if !open || !self.settled(start, pos) {
            return;
        }
        let key = RecordKind::ValidatorCommit.key(e);
        if !self.done.records.contains_key(&key) {
            let settle = self.settle_height(e, start);
            let Some(scores) = self.score(e, chain, settle, false, Duty::ValidatorCommit, None)
            else {
                return;
            };
            let salt = self.salt();
            match ValidatorReveal::new(salt, &scores.hosters) {
                Ok(reveal) => {
                    let commit = reveal.commit(e, &self.me);
                    self.done.records.insert(
                        key.clone(),
                        Record {
                            bytes: commit.0.to_vec(),
                            written: false,
                        },
                    );
                    self.done.records.insert(
                        RecordKind::ValidatorReveal.key(e),
                        Record {
                            bytes: reveal.encode(),
                            written: false,
                        },
                    );
                }
                Err(error) => {
                    self.notice(Notice::Failed {
                        duty: Duty::ValidatorCommit,
                        epoch: e,
                        error: error.to_string(),
                    });
                    return;
                }
            }
        }
        self.write(key);
    }

    fn validator_reveal_duty(&mut self, pos: Position) {
        let Some(e) = pos.epoch.checked_sub(1) else {
            return;
        };
        let open =
            self.config
                .phases
                .may_write(RecordKind::ValidatorReveal, e, pos, Writer::Validator);
        if open && self.written(&RecordKind::ValidatorCommit.key(e)) {
            self.write(RecordKind::ValidatorReveal.key(e));
        }
    }

    /// Whether `e`'s proposal or attestation should be (re)submitted at
    /// `height`: not seen on chain, none in flight, and none submitted in
    /// the last few blocks.
    fn due(&self, e: u64, height: u64) -> bool {
        // Refused: at the next head. Otherwise after a few blocks without
        // the chain showing it, even while its watch has not answered (the
        // consensus read then says whether the first one landed).
        let retry = |at: &u64| match self.done.refused.contains(&e) {
            true => height > *at && !self.submitting.contains_key(&e),
            false => height >= at.saturating_add(self.config.resubmit_after_blocks),
        };
        !self.done.on_chain.contains(&e) && self.done.submitted.get(&e).is_none_or(retry)
    }

    /// The oldest head a consensus read may be asked at to say whether a
    /// submission of `e` is on chain: after the last submission.
    fn consensus_threshold(&self, e: u64, settle: u64) -> u64 {
        match self.done.submitted.get(&e) {
            Some(at) => settle.max(at.saturating_add(1)),
            None => settle,
        }
    }

    fn submit(&mut self, e: u64, height: u64, duty: Duty, call: Call) {
        self.done.submitted.insert(e, height);
        self.done.refused.remove(&e);
        self.done.resend.remove(&e);
        self.done.calls.insert(e, call.clone());
        self.submitting.insert(e, duty);
        self.out.push(Action::Submit { epoch: e, call });
        self.notice(Notice::Submitted { duty, epoch: e });
    }

    /// Sends a lost submission of `e` again as it was, if there is one;
    /// whether there was.
    fn resend(&mut self, e: u64, height: u64, duty: Duty) -> bool {
        if self.done.on_chain.contains(&e) || self.submitting.contains_key(&e) {
            return self.done.resend.contains_key(&e);
        }
        if self.failed_submits.blocked(&e, height) {
            return self.done.resend.contains_key(&e);
        }
        let Some(call) = self.done.resend.remove(&e) else {
            return false;
        };
        self.submit(e, height, duty, call);
        true
    }

    fn propose_duty(&mut self, pos: Position, chain: &EpochChain) {
        let e = pos.epoch;
        let start = self.config.phases.proposal.start;
        let height = height_of(pos);
        if !self.config.phases.proposal_open(pos) || self.resend(e, height, Duty::Proposal) {
            return;
        }
        if !self.settled(start, pos) || !self.due(e, height) {
            return;
        }
        let settle = self.settle_height(e, start);
        let threshold = self.consensus_threshold(e, settle);
        let Some(consensus) = self.consensus(e, threshold, true) else {
            return;
        };
        if consensus.as_ref().is_some_and(|c| c.proposal.is_some()) {
            self.done.on_chain.insert(e);
            self.notice(Notice::OnChain {
                duty: Duty::Proposal,
                epoch: e,
            });
            return;
        }
        let Some(scores) = self.score(e, chain, threshold, true, Duty::Proposal, None) else {
            return;
        };
        let call = Call::ProposeAttestation {
            subnet: self.config.subnet,
            epoch: e,
            scores: scores.proposal,
        };
        self.submit(e, height, Duty::Proposal, call);
    }

    fn attest_duty(&mut self, pos: Position, me: NodeId, chain: &EpochChain) {
        let e = pos.epoch;
        let start = self.config.phases.proposal.start;
        let height = height_of(pos);
        if self.resend(e, height, Duty::Attestation) {
            return;
        }
        if !self.settled(start, pos) || !self.due(e, height) {
            return;
        }
        let settle = self.settle_height(e, start);
        let threshold = self.consensus_threshold(e, settle);
        let Some(Some(consensus)) = self.consensus(e, threshold, true) else {
            return;
        };
        if consensus.attestations.contains(&me) {
            self.done.on_chain.insert(e);
            self.notice(Notice::OnChain {
                duty: Duty::Attestation,
                epoch: e,
            });
            return;
        }
        let Some(proposed) = consensus.proposal else {
            return;
        };
        let Some(scores) = self.score(
            e,
            chain,
            threshold,
            true,
            Duty::Attestation,
            Some(&proposed),
        ) else {
            return;
        };
        if let Err(reason) = check_attestation(&scores.proposal, &proposed) {
            // The node list may have changed since it was read (a node
            // removed as the proposal was made): read it again at once.
            let height = self.height.unwrap_or(0);
            if self
                .known
                .get(&Query::Nodes)
                .is_some_and(|k| k.asked_at < height)
            {
                self.known.remove(&Query::Nodes);
                self.nodes(height, true);
            }
            if self.done.disagreed.insert(e) {
                self.notice(Notice::Disagreed {
                    epoch: e,
                    reason: reason.to_string(),
                });
            }
            return;
        }
        let call = Call::Attest {
            subnet: self.config.subnet,
            epoch: e,
        };
        self.submit(e, height, Duty::Attestation, call);
    }

    /// Forgets what concerns epochs before `keep_from`.
    fn prune(&mut self, keep_from: u64) {
        let keep = |q: &Query| q.epoch().is_none_or(|e| e >= keep_from);
        let keep_key = |k: &String| {
            RecordKind::parse_key(k)
                .map(|(_, e)| e >= keep_from)
                .unwrap_or(false)
        };
        self.known.retain(|q, _| keep(q));
        self.failed_reads.retain(keep);
        self.failed_writes.retain(keep_key);
        self.failed_sketches.retain(|e| *e >= keep_from);
        self.done.records.retain(|k, _| keep_key(k));
        self.done.challenge_found.retain(|e| *e >= keep_from);
        self.done.on_chain.retain(|e| *e >= keep_from);
        self.done.submitted.retain(|e, _| *e >= keep_from);
        self.done.refused.retain(|e| *e >= keep_from);
        self.done.calls.retain(|e, _| *e >= keep_from);
        self.done.resend.retain(|e, _| *e >= keep_from);
        self.failed_submits.retain(|e| *e >= keep_from);
        self.done.disagreed.retain(|e| *e >= keep_from);
        self.done.scored.retain(|e, _| *e >= keep_from);
        self.score_cache.retain(|e, _| *e >= keep_from);
    }

    fn duty_of_key(key: &str) -> (Duty, u64) {
        match RecordKind::parse_key(key) {
            Ok((kind, e)) => (
                match kind {
                    RecordKind::Challenge => Duty::Challenge,
                    RecordKind::HosterCommit => Duty::HosterCommit,
                    RecordKind::HosterReveal => Duty::HosterReveal,
                    RecordKind::ValidatorCommit => Duty::ValidatorCommit,
                    RecordKind::ValidatorReveal => Duty::ValidatorReveal,
                    RecordKind::Evidence => Duty::Read,
                },
                e,
            ),
            Err(_) => (Duty::Read, 0),
        }
    }

    fn take_input(&mut self, input: Input) {
        let height = self.height.unwrap_or(0);
        match input {
            Input::Head(h) => {
                if self.height.is_some_and(|current| h <= current) {
                    return;
                }
                let new_epoch = self
                    .height
                    .is_none_or(|current| self.position(current).epoch != self.position(h).epoch);
                self.height = Some(h);
                if new_epoch {
                    self.prune(self.position(h).epoch.saturating_sub(2));
                }
            }
            Input::Read {
                query,
                asked_at,
                result,
            } => {
                self.asking.remove(&query);
                match result {
                    Ok(answer) => {
                        let keep_from = self.position(height).epoch.saturating_sub(2);
                        let current = query.epoch().is_none_or(|e| e >= keep_from);
                        let newer = self
                            .known
                            .get(&query)
                            .is_none_or(|k| k.asked_at <= asked_at);
                        if current && newer {
                            self.known.insert(query, Known { asked_at, answer });
                        }
                    }
                    Err(error) => {
                        let epoch = query.epoch().unwrap_or(self.position(height).epoch);
                        self.failed_reads.record(query, asked_at);
                        self.notice(Notice::Failed {
                            duty: Duty::Read,
                            epoch,
                            error,
                        });
                    }
                }
            }
            Input::Written { key, result } => {
                // A failure counts against the head the write was asked at:
                // asked again at the next head, or now if that has passed.
                let asked_at = self.writing.remove(&key).unwrap_or(height);
                let (duty, epoch) = Self::duty_of_key(&key);
                match result {
                    Ok(()) => {
                        if let Some(record) = self.done.records.get_mut(&key) {
                            record.written = true;
                            self.notice(Notice::Written { duty, epoch });
                        }
                    }
                    Err(error) => {
                        self.failed_writes.record(key, asked_at);
                        self.notice(Notice::Failed { duty, epoch, error });
                    }
                }
            }
            Input::Submitted { epoch, result } => {
                let duty = self.submitting.remove(&epoch).unwrap_or(Duty::Attestation);
                if result.is_ok() && self.done.on_chain.insert(epoch) {
                    self.notice(Notice::OnChain { duty, epoch });
                }
                match result {
                    Ok(()) => {}
                    // Never reached the chain, perhaps: the same call again.
                    Err(SubmitError::Lost(error)) => {
                        let asked_at = self.done.submitted.get(&epoch).copied().unwrap_or(height);
                        self.failed_submits.record(epoch, asked_at);
                        if let Some(call) = self.done.calls.get(&epoch).cloned() {
                            self.done.resend.insert(epoch, call);
                        }
                        self.notice(Notice::Failed { duty, epoch, error });
                    }
                    // Refused: made again at the next head from fresh reads.
                    Err(SubmitError::Refused(error)) => {
                        self.done.refused.insert(epoch);
                        self.notice(Notice::Failed { duty, epoch, error });
                    }
                }
            }
            Input::Sketched { epoch, result } => {
                let asked_at = self.sketching.remove(&epoch).unwrap_or(height);
                match result {
                    Ok(sketches) => self.on_sketched(epoch, sketches),
                    Err(error) => self.sketch_failed(epoch, asked_at, error),
                }
            }
        }
    }
}

impl DutyMachine for Duties {
    fn handle(&mut self, input: Input) -> Vec<Action> {
        self.take_input(input);
        self.evaluate();
        std::mem::take(&mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use hypertensor_primitives::Keypair;
    use hypertensor_runtime::{EpochConsensus, NodeClass, SubnetNode};

    use super::*;

    fn node(id: NodeId, key: &Keypair) -> SubnetNode {
        SubnetNode {
            id,
            owner: key.account_id(),
            hotkey: key.account_id(),
            peer_id: key.peer_id(),
            client_peer_id: None,
            stake: 1,
            class: NodeClass::Validator,
            class_start_epoch: 0,
            start_epoch: 0,
            penalties: 0,
            promotion_progress: 0,
        }
    }

    /// Answers every read the machine asks for with a chain where this
    /// node is a non-elected validator of every epoch, for a few rounds.
    fn drive(machine: &mut Duties, heads: &[u64], me: &SubnetNode, other: &SubnetNode) {
        for &head in heads {
            let mut inputs = vec![Input::Head(head)];
            for _ in 0..8 {
                let mut next = Vec::new();
                for input in inputs.drain(..) {
                    for action in machine.handle(input) {
                        if let Action::Read { query, asked_at } = action {
                            let e = query.epoch().unwrap_or(0);
                            let consensus = EpochConsensus {
                                subnet: 1,
                                epoch: e,
                                validator: other.id,
                                snapshot: vec![me.id, other.id],
                                proposal: Some(vec![(me.id, 1), (other.id, 1)]),
                                attestations: Default::default(),
                                outcome: None,
                            };
                            let answer = match &query {
                                Query::Epoch(e) => Answer::Epoch(EpochChain {
                                    epoch: *e,
                                    nodes: vec![me.clone(), other.clone()],
                                    consensus: Some(consensus),
                                    prev_snapshot: vec![me.id, other.id],
                                }),
                                Query::Nodes => Answer::Nodes(vec![me.clone(), other.clone()]),
                                Query::Consensus(_) => Answer::Consensus(Some(consensus)),
                                Query::Key(_) => Answer::Key(Entries::new()),
                            };
                            next.push(Input::Read {
                                query,
                                asked_at,
                                result: Ok(answer),
                            });
                        }
                    }
                }
                inputs = next;
            }
        }
    }

    #[test]
    fn heads_at_the_end_of_u64_and_odd_epoch_lengths_never_panic() {
        let (a, b) = (Keypair::dev("alice"), Keypair::dev("bob"));
        let (me, other) = (node(1, &a), node(2, &b));
        for length in [0, 1, 7, 10, 20, 600] {
            let mut config = DutyConfig::new(1, length, 4, true);
            config.epoch_length = length;
            let mut machine = Duties::new(config, a.peer_id(), [7; 32]);
            drive(
                &mut machine,
                &[5, 19, u64::MAX - 20, u64::MAX - 3, u64::MAX - 1, u64::MAX],
                &me,
                &other,
            );
            assert_eq!(machine.height(), Some(u64::MAX));
        }
    }

    #[test]
    fn a_registered_validator_asks_to_read_its_epoch_and_scores() {
        let (a, b) = (Keypair::dev("alice"), Keypair::dev("bob"));
        let (me, other) = (node(1, &a), node(2, &b));
        let mut machine = Duties::new(DutyConfig::new(1, 20, 4, false), a.peer_id(), [7; 32]);
        // Past the validator commit window's settle point of epoch 3.
        drive(&mut machine, &[60, 74, 75], &me, &other);
        assert_eq!(machine.node(), Some(1));
        assert!(
            machine
                .done
                .records
                .contains_key(&RecordKind::ValidatorCommit.key(3)),
            "the validator commit of epoch 3 is built"
        );
    }
}
