//! A seeded, deterministic simulation of one subnet: the real runtime in
//! memory producing a block per simulated second, an in-memory DHT with
//! the real phase windows and proof of stake, and every node's duties
//! driven by the state machine. A seeded scheduler delays (and so
//! reorders) and drops every read, write and submission.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use hypertensor_consensus::phase::PhaseParams;
use hypertensor_consensus::records::{Challenge, SKETCH_LEN, Sketch};
use hypertensor_duties::byzantine::{Behaviour, Byzantine};
use hypertensor_duties::{
    Action, Answer, Duties, DutyConfig, DutyMachine, EpochChain, Input, Query, Sketches,
    SubmitError,
};
use hypertensor_primitives::{Balance, Keypair, PeerId, TENSOR};
use hypertensor_runtime::{
    BlockBuilder, Call, EpochConsensus, EventRecord, Extrinsic, GenesisAccount, GenesisConfig,
    GenesisNode, GenesisSubnet, NodeClass, NodeId, State, SubnetId,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// Blocks per epoch.
pub(crate) const EPOCH_LENGTH: u64 = 20;
/// Simulated milliseconds per block.
pub(crate) const BLOCK_MS: u64 = 1_000;
/// Transformer blocks of the simulated model.
pub(crate) const N_BLOCKS: u32 = 4;
/// The simulated subnet.
pub(crate) const SUBNET: SubnetId = 1;
/// Stake of every node.
pub(crate) const STAKE: Balance = 1_000 * TENSOR;

/// How hostile the network is.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Faults {
    /// Each read, write, submission and head is delayed uniformly up to
    /// this (so answers arrive out of order, some a block or more late).
    pub(crate) max_latency_ms: u64,
    /// Per mille of reads, writes and submissions lost.
    pub(crate) drop_per_mille: u32,
    /// Whether a retry right after a loss may be lost too (else losses
    /// are transient and every duty's retries fit their windows).
    pub(crate) losses_can_repeat: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            max_latency_ms: 400,
            drop_per_mille: 50,
            losses_can_repeat: false,
        }
    }
}

/// A node of the scenario.
#[derive(Clone, Debug)]
pub(crate) struct NodeSpec {
    /// `validator-<i>`, `hoster-<i>` or any name.
    pub(crate) name: String,
    /// Whether it hosts (the whole model).
    pub(crate) hosts: bool,
    /// Its class at genesis (`None`: joins later through transactions).
    pub(crate) class: Option<NodeClass>,
    /// Honest or faulty.
    pub(crate) behaviour: Behaviour,
}

/// A membership change at a height.
#[derive(Clone, Debug)]
pub(crate) enum Change {
    /// The node (a spec with `class: None`) registers and activates.
    Join(String),
    /// The node's owner removes it, and the node stops.
    Leave(String),
    /// The node's owner activates it (scheduled by a join).
    Activate(String),
    /// The node leaves as soon as the chain shows a proposal for this
    /// epoch (before the attestations are in).
    LeaveAfterProposal(String, u64),
}

/// What to simulate.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    /// The nodes.
    pub(crate) nodes: Vec<NodeSpec>,
    /// Heights to run to.
    pub(crate) until_height: u64,
    /// Membership changes, at heights.
    pub(crate) changes: Vec<(u64, Change)>,
    /// The network.
    pub(crate) faults: Faults,
}

/// `n` honest validators and `m` honest hosters, all scored from genesis.
pub(crate) fn subnet(validators: usize, hosters: usize) -> Vec<NodeSpec> {
    let mut nodes: Vec<NodeSpec> = (0..validators)
        .map(|i| NodeSpec {
            name: format!("validator-{i}"),
            hosts: false,
            class: Some(NodeClass::Validator),
            behaviour: Behaviour::Honest,
        })
        .collect();
    nodes.extend((0..hosters).map(|i| NodeSpec {
        name: format!("hoster-{i}"),
        hosts: true,
        class: Some(NodeClass::Included),
        behaviour: Behaviour::Honest,
    }));
    nodes
}

/// An honest hoster that is not on chain at genesis (it joins through a
/// [`Change::Join`]).
pub(crate) fn newcomer(name: &str) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        hosts: true,
        class: None,
        behaviour: Behaviour::Honest,
    }
}

struct SimNode {
    spec: NodeSpec,
    owner: Keypair,
    hotkey: Keypair,
    machine: Box<dyn DutyMachine>,
    online: bool,
    /// Named in `SIM_DUMP`: what it notices and asks for is printed as it
    /// happens.
    traced: bool,
}

enum Event {
    Block,
    Deliver(usize, Input),
    Serve(usize, Action),
    Change(Change),
}

/// What a run left behind, for the scenario's checks.
#[derive(Debug, PartialEq)]
pub(crate) struct Outcome {
    /// Every block's events, with the block's height.
    pub(crate) events: Vec<(u64, EventRecord)>,
    /// Every epoch's consensus data as the chain last showed it.
    pub(crate) consensus: BTreeMap<u64, EpochConsensus>,
    /// Node ids by name (nodes that joined included).
    pub(crate) ids: BTreeMap<String, NodeId>,
}

/// A simulation run.
pub(crate) struct Sim {
    rng: ChaCha20Rng,
    faults: Faults,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    state: State,
    /// Extrinsics for the next block, with who submitted them for which
    /// epoch (told the outcome once the block is built).
    pool: Vec<(Extrinsic, Option<(usize, u64)>)>,
    author: Keypair,
    nodes: Vec<SimNode>,
    dht: BTreeMap<String, BTreeMap<PeerId, Vec<u8>>>,
    phases: PhaseParams,
    log: Vec<(u64, EventRecord)>,
    consensus: BTreeMap<u64, EpochConsensus>,
    /// Actions whose last attempt was dropped: the next one goes through.
    dropped_last: std::collections::BTreeSet<(usize, String)>,
    /// Nodes to remove once an epoch's proposal is on chain.
    after_proposal: Vec<(String, u64)>,
}

fn key_of(name: &str, role: &str) -> Keypair {
    let mut secret = [0u8; 32];
    for (i, b) in format!("{role}/{name}").bytes().enumerate() {
        secret[i % 32] ^= b.wrapping_add(i as u8);
    }
    secret[31] ^= 0x5a;
    Keypair::from_secret(secret)
}

/// The sketch every honest hoster computes for `block` on `challenge`.
pub(crate) fn honest_sketch(challenge: &Challenge, block: u32) -> Sketch {
    let mut seed = challenge.seed;
    for (i, b) in block.to_le_bytes().iter().enumerate() {
        seed[i] ^= b;
    }
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut sketch = [0f32; SKETCH_LEN];
    for v in &mut sketch {
        *v = (rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
    }
    sketch
}

impl Sim {
    /// A simulation of `spec` seeded with `seed`.
    pub(crate) fn new(spec: &Spec, seed: u64) -> Sim {
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let mut rng = ChaCha20Rng::from_seed(seed_bytes);
        let author = key_of("author", "author");
        let mut genesis = GenesisConfig::dev();
        genesis.params.epoch_length = EPOCH_LENGTH;
        genesis.params.block_time_ms = BLOCK_MS;
        let mut subnet = GenesisSubnet {
            name: "sim".into(),
            model: "sim-model".into(),
            owner: author.account_id(),
            min_stake: STAKE,
            max_stake: STAKE * 10,
            active: true,
            nodes: Vec::new(),
        };
        let dump = std::env::var("SIM_DUMP").unwrap_or_default();
        let traced: Vec<&str> = dump.split(',').collect();
        let mut nodes = Vec::new();
        for node in &spec.nodes {
            let owner = key_of(&node.name, "owner");
            let hotkey = key_of(&node.name, "hotkey");
            for account in [&owner, &hotkey] {
                genesis.accounts.push(GenesisAccount {
                    account: account.account_id(),
                    balance: 10 * STAKE,
                });
            }
            if let Some(class) = node.class {
                subnet.nodes.push(GenesisNode {
                    owner: owner.account_id(),
                    hotkey: hotkey.account_id(),
                    peer_id: hotkey.peer_id(),
                    client_peer_id: None,
                    stake: STAKE,
                    class,
                });
            }
            let mut config = DutyConfig::new(SUBNET, EPOCH_LENGTH, N_BLOCKS, node.hosts);
            config.phases = PhaseParams::default();
            let mut machine_seed = [0u8; 32];
            rng.fill_bytes(&mut machine_seed);
            let duties = Duties::new(config, hotkey.peer_id(), machine_seed);
            let machine: Box<dyn DutyMachine> = match node.behaviour {
                Behaviour::Honest => Box::new(duties),
                behaviour => {
                    let mut fault_seed = [0u8; 32];
                    rng.fill_bytes(&mut fault_seed);
                    Box::new(Byzantine::new(duties, behaviour, fault_seed))
                }
            };
            nodes.push(SimNode {
                online: node.class.is_some(),
                spec: node.clone(),
                owner,
                hotkey,
                machine,
                traced: traced.iter().any(|t| *t == node.name),
            });
        }
        genesis.subnets.push(subnet);
        let state = genesis.build().expect("the genesis builds").state;
        let mut sim = Sim {
            rng,
            faults: spec.faults,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            state,
            pool: Vec::new(),
            author,
            nodes,
            dht: BTreeMap::new(),
            phases: PhaseParams::default(),
            log: Vec::new(),
            consensus: BTreeMap::new(),
            dropped_last: Default::default(),
            after_proposal: Vec::new(),
        };
        for h in 1..=spec.until_height {
            sim.at(h * BLOCK_MS, Event::Block);
        }
        for (height, change) in &spec.changes {
            // Just after the block, before the heads reach the nodes.
            sim.at(height * BLOCK_MS + 1, Event::Change(change.clone()));
        }
        sim
    }

    fn at(&mut self, time: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((time, self.seq)));
        self.events.insert(self.seq, event);
    }

    fn latency(&mut self) -> u64 {
        self.rng.next_u64() % (self.faults.max_latency_ms + 1)
    }

    /// Whether this attempt of `what` by node `i` is lost. Unless
    /// [`Faults::losses_can_repeat`], losses are transient: an attempt
    /// right after a lost one goes through, so the retries of the duties
    /// always fit their windows.
    fn dropped(&mut self, i: usize, what: String) -> bool {
        if self.dropped_last.remove(&(i, what.clone())) && !self.faults.losses_can_repeat {
            return false;
        }
        let lost = self.rng.next_u32() % 1000 < self.faults.drop_per_mille;
        if lost {
            self.dropped_last.insert((i, what));
        }
        lost
    }

    fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.spec.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    fn node_id(&self, index: usize) -> Option<NodeId> {
        let peer = self.nodes[index].hotkey.peer_id();
        self.state
            .subnet_nodes(SUBNET)
            .find(|n| n.peer_id == peer)
            .map(|n| n.id)
    }

    /// Runs every event; returns what the chain and the nodes ended with.
    pub(crate) fn run(mut self) -> Outcome {
        while let Some(Reverse((time, seq))) = self.queue.pop() {
            self.now = time;
            let event = self
                .events
                .remove(&seq)
                .expect("every queued event is stored");
            match event {
                Event::Block => self.block(),
                Event::Deliver(i, input) => self.deliver(i, input),
                Event::Serve(i, action) => self.serve(i, action),
                Event::Change(change) => self.change(change),
            }
        }
        // Genesis nodes have ids 1, 2, ... in order; the others are named
        // by their registration.
        let mut ids = BTreeMap::new();
        let genesis = self.nodes.iter().filter(|n| n.spec.class.is_some());
        for (id, n) in (1..).zip(genesis) {
            ids.insert(n.spec.name.clone(), id);
        }
        for event in &self.log {
            if let hypertensor_runtime::Event::NodeRegistered { node, peer_id, .. } = &event.1.event
            {
                for n in &self.nodes {
                    if n.hotkey.peer_id() == *peer_id {
                        ids.insert(n.spec.name.clone(), *node);
                    }
                }
            }
        }
        Outcome {
            events: self.log,
            consensus: self.consensus,
            ids,
        }
    }

    fn block(&mut self) {
        let timestamp = self.state.timestamp_ms() + BLOCK_MS;
        let mut builder = BlockBuilder::new(&self.state, self.author.account_id(), timestamp)
            .expect("a block can be started");
        let mut outcomes = Vec::new();
        for (xt, from) in std::mem::take(&mut self.pool) {
            // Refused extrinsics are dropped, as a pool would.
            let result = match builder.push(xt) {
                Ok(hypertensor_runtime::Applied::Success) => Ok(()),
                Ok(hypertensor_runtime::Applied::Failed(e)) => {
                    Err(SubmitError::Refused(format!("failed in its block: {e}")))
                }
                Err(e) => Err(SubmitError::Refused(e.to_string())),
            };
            if let Some((i, epoch)) = from {
                outcomes.push((i, Input::Submitted { epoch, result }));
            }
        }
        let built = builder.finish();
        if let Err(e) = built.state.check_invariants() {
            panic!("issuance invariant broken at {}: {e}", built.state.height());
        }
        self.state = built.state;
        let height = self.state.height();
        for (i, outcome) in outcomes {
            self.reply(i, outcome);
        }
        self.log
            .extend(built.events.into_iter().map(|e| (height, e)));
        let epoch = height / EPOCH_LENGTH;
        for e in [epoch.saturating_sub(1), epoch] {
            if let Some(c) = self.state.consensus_data(SUBNET, e) {
                self.consensus.insert(e, c.clone());
            }
        }
        let proposed = |e: &u64| {
            self.state
                .consensus_data(SUBNET, *e)
                .is_some_and(|c| c.proposal.is_some())
        };
        let due: Vec<String> = self
            .after_proposal
            .iter()
            .filter(|(_, e)| proposed(e))
            .map(|(name, _)| name.clone())
            .collect();
        self.after_proposal.retain(|(_, e)| !proposed(e));
        for name in due {
            self.change(Change::Leave(name));
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].online {
                let delay = self.latency() / 4;
                self.at(self.now + delay, Event::Deliver(i, Input::Head(height)));
            }
        }
    }

    fn deliver(&mut self, i: usize, input: Input) {
        if !self.nodes[i].online {
            return;
        }
        let actions = self.nodes[i].machine.handle(input);
        for action in actions {
            match action {
                Action::Notice(notice) => self.trace(i, &format!("{notice:?}")),
                Action::Guard { .. } => {}
                action => {
                    if self.nodes[i].traced {
                        let asked = match &action {
                            Action::Read { query, asked_at } => {
                                format!("read {query:?} at {asked_at}")
                            }
                            Action::Write { key, .. } => format!("write {key}"),
                            Action::Submit { epoch, .. } => format!("submit {epoch}"),
                            other => format!("{other:?}"),
                        };
                        self.trace(i, &asked);
                    }
                    let delay = self.latency();
                    self.at(self.now + delay, Event::Serve(i, action));
                }
            }
        }
    }

    fn trace(&self, i: usize, what: &str) {
        let node = &self.nodes[i];
        if node.traced {
            let (t, h) = (self.now, self.state.height());
            eprintln!("t={t} h={h} {}: {what}", node.spec.name);
        }
    }

    fn reply(&mut self, i: usize, input: Input) {
        let delay = self.latency() / 2;
        self.at(self.now + delay, Event::Deliver(i, input));
    }

    fn serve(&mut self, i: usize, action: Action) {
        let what = match &action {
            Action::Read { query, .. } => format!("read {query:?}"),
            Action::Write { key, .. } => format!("write {key}"),
            Action::Submit { epoch, .. } => format!("submit {epoch}"),
            _ => String::new(),
        };
        let lost = !what.is_empty() && self.dropped(i, what);
        match action {
            Action::Read { query, asked_at } => {
                let result = match lost {
                    true => Err("the read timed out".to_string()),
                    false => Ok(self.answer(&query)),
                };
                self.reply(
                    i,
                    Input::Read {
                        query,
                        asked_at,
                        result,
                    },
                );
            }
            Action::Write { key, bytes } => {
                let result = match lost {
                    true => Err("no peer acknowledged the write".to_string()),
                    false => self.store(i, &key, bytes),
                };
                self.reply(i, Input::Written { key, result });
            }
            Action::Submit { epoch, call } => match lost {
                // Lost: the answer never comes, and half the time the
                // extrinsic reached the pool anyway (it lands, unreported).
                true => {
                    if self.rng.next_u32().is_multiple_of(2) {
                        let xt = self.signed(&self.nodes[i].hotkey, call);
                        self.pool.push((xt, None));
                    }
                    let result = Err(SubmitError::Lost("the chain did not answer".into()));
                    self.reply(i, Input::Submitted { epoch, result });
                }
                // Told at the next block.
                false => {
                    let xt = self.signed(&self.nodes[i].hotkey, call);
                    self.pool.push((xt, Some((i, epoch))));
                }
            },
            Action::Sketch { epoch, challenge } => {
                let sketches = (0..N_BLOCKS)
                    .map(|b| honest_sketch(&challenge, b))
                    .collect();
                self.reply(
                    i,
                    Input::Sketched {
                        epoch,
                        result: Ok(Sketches {
                            span_start: 0,
                            sketches,
                        }),
                    },
                );
            }
            Action::Guard { .. } | Action::Notice(_) => {}
        }
    }

    fn answer(&self, query: &Query) -> Answer {
        let nodes = || self.state.subnet_nodes(SUBNET).cloned().collect::<Vec<_>>();
        match query {
            Query::Epoch(e) => Answer::Epoch(EpochChain {
                epoch: *e,
                nodes: nodes(),
                consensus: self.state.consensus_data(SUBNET, *e).cloned(),
                prev_snapshot: e
                    .checked_sub(1)
                    .and_then(|p| self.state.consensus_data(SUBNET, p))
                    .map(|c| c.snapshot.clone())
                    .unwrap_or_default(),
            }),
            Query::Nodes => Answer::Nodes(nodes()),
            Query::Consensus(e) => {
                Answer::Consensus(self.state.consensus_data(SUBNET, *e).cloned())
            }
            Query::Key(key) => Answer::Key(self.dht.get(key).cloned().unwrap_or_default()),
        }
    }

    /// The DHT's checks of a write, as its record validators make them:
    /// the writer is a node of the subnet, and the key is open at the
    /// chain's head within one block of grace.
    fn store(&mut self, i: usize, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        let peer = self.nodes[i].hotkey.peer_id();
        if !self
            .state
            .proof_of_stake(SUBNET, &peer, NodeClass::Registered)
        {
            return Err("rejected: not staked".into());
        }
        let height = self.state.height();
        let open = (height.saturating_sub(1)..=height + 1).any(|h| {
            let pos = hypertensor_consensus::phase::Position {
                epoch: h / EPOCH_LENGTH,
                offset: h % EPOCH_LENGTH,
                length: EPOCH_LENGTH,
            };
            self.phases.key_open(key, pos).unwrap_or(true)
        });
        if !open {
            return Err(format!("rejected: {key} is not open at {height}"));
        }
        self.dht
            .entry(key.to_string())
            .or_default()
            .insert(peer, bytes);
        Ok(())
    }

    fn signed(&self, key: &Keypair, call: Call) -> Extrinsic {
        let account = key.account_id();
        let pending = self
            .pool
            .iter()
            .filter(|(x, _)| x.signer == account)
            .count() as u64;
        let nonce = self.state.account(&account).nonce + pending;
        Extrinsic::sign(key, nonce, call, &self.state.genesis_hash())
    }

    fn change(&mut self, change: Change) {
        match change {
            Change::Join(name) => {
                let i = self.index(&name);
                let (owner, hotkey) = (&self.nodes[i].owner, &self.nodes[i].hotkey);
                let register = Call::RegisterSubnetNode {
                    subnet: SUBNET,
                    hotkey: hotkey.account_id(),
                    peer_id: hotkey.peer_id(),
                    client_peer_id: None,
                    stake: STAKE,
                };
                let xt = self.signed(owner, register);
                self.pool.push((xt, None));
                self.nodes[i].online = true;
                // A node may activate from the epoch after it registered.
                let next_epoch = (self.state.height() / EPOCH_LENGTH + 1) * EPOCH_LENGTH;
                self.at(
                    next_epoch * BLOCK_MS + 1,
                    Event::Change(Change::Activate(name)),
                );
            }
            Change::LeaveAfterProposal(name, epoch) => self.after_proposal.push((name, epoch)),
            Change::Activate(name) => {
                let i = self.index(&name);
                if let Some(node) = self.node_id(i) {
                    let owner = self.nodes[i].owner.clone();
                    let xt = self.signed(
                        &owner,
                        Call::ActivateSubnetNode {
                            subnet: SUBNET,
                            node,
                        },
                    );
                    self.pool.push((xt, None));
                }
            }
            Change::Leave(name) => {
                let i = self.index(&name);
                if let Some(node) = self.node_id(i) {
                    let owner = self.nodes[i].owner.clone();
                    let xt = self.signed(
                        &owner,
                        Call::RemoveSubnetNode {
                            subnet: SUBNET,
                            node,
                        },
                    );
                    self.pool.push((xt, None));
                }
                self.nodes[i].online = false;
            }
        }
    }
}

/// Runs `check` on `spec` for every seed of the run (`SIM_SEEDS` of them,
/// default `default_seeds`; or only `SIM_SEED`), naming the scenario and
/// the failing seed, and how to rerun it alone. Returns how many seeds
/// ran.
pub(crate) fn for_seeds(
    name: &str,
    default_seeds: u64,
    spec: impl Fn(u64) -> Spec,
    check: impl Fn(&Outcome),
) -> usize {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => {
            let n = std::env::var("SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(default_seeds);
            (0..n).collect()
        }
    };
    let runs = seeds.len();
    for seed in seeds {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let outcome = Sim::new(&spec(seed), seed).run();
            check(&outcome);
        }));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "scenario `{name}` failed at seed {seed}: {message}\n\
                 rerun it alone: SIM_SEED={seed} cargo test -p hypertensor-duties --test sim {name}"
            );
        }
    }
    runs
}
