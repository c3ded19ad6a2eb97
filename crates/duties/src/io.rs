//! What goes into the duty state machine and what comes out of it.
//!
//! The machine never waits: every read, write, submission and sketch is
//! an [`Action`] for whoever runs it (the node's executor over real
//! sockets, or a simulation), whose outcome comes back as an [`Input`].

use hypertensor_consensus::NodeId;
use hypertensor_consensus::records::{Challenge, Sketch};
use hypertensor_runtime::{Call, EpochConsensus, SubnetNode};

use crate::view::{Entries, EpochScores};

/// Something the machine needs to know, from the chain or the DHT.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Query {
    /// The chain's view of an epoch, as an [`EpochChain`].
    Epoch(u64),
    /// The subnet's nodes at the latest block.
    Nodes,
    /// The consensus data of an epoch at the latest block.
    Consensus(u64),
    /// Every entry under a DHT key.
    Key(String),
}

impl Query {
    /// The epoch this query is about, if it is about one (for pruning).
    pub fn epoch(&self) -> Option<u64> {
        match self {
            Query::Epoch(e) | Query::Consensus(e) => Some(*e),
            Query::Nodes => None,
            Query::Key(key) => hypertensor_consensus::phase::RecordKind::parse_key(key)
                .ok()
                .map(|(_, e)| e),
        }
    }
}

/// The chain's view of one epoch: who the nodes are, who was elected and
/// who may attest, and who validated the epoch before.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochChain {
    /// The epoch.
    pub epoch: u64,
    /// The subnet's nodes when read.
    pub nodes: Vec<SubnetNode>,
    /// The epoch's consensus data (election and snapshot), if the subnet
    /// has any for it.
    pub consensus: Option<EpochConsensus>,
    /// The validator snapshot of the epoch before (empty if none).
    pub prev_snapshot: Vec<NodeId>,
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// For [`Query::Epoch`].
    Epoch(EpochChain),
    /// For [`Query::Nodes`].
    Nodes(Vec<SubnetNode>),
    /// For [`Query::Consensus`].
    Consensus(Option<EpochConsensus>),
    /// For [`Query::Key`]: the entries by writer.
    Key(Entries),
}

/// A hoster's sketches of its blocks' outputs on an epoch's challenge.
#[derive(Clone, Debug, PartialEq)]
pub struct Sketches {
    /// The first block of the span.
    pub span_start: u32,
    /// One sketch per block of the span, in order.
    pub sketches: Vec<Sketch>,
}

/// An event the machine is told about.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The chain has a new head at this height.
    Head(u64),
    /// A [`Action::Read`] finished.
    Read {
        /// What was asked.
        query: Query,
        /// The head height the read was asked at (from the action).
        asked_at: u64,
        /// The answer, or why there is none.
        result: Result<Answer, String>,
    },
    /// An [`Action::Write`] finished.
    Written {
        /// The key written.
        key: String,
        /// Whether a peer acknowledged it.
        result: Result<(), String>,
    },
    /// An [`Action::Submit`] finished: the extrinsic is in a block and its
    /// call succeeded, or it was refused (by the pool or in its block), or
    /// lost.
    Submitted {
        /// The epoch of the proposal or attestation.
        epoch: u64,
        /// Included and successful, or why not.
        result: Result<(), SubmitError>,
    },
    /// An [`Action::Sketch`] finished.
    Sketched {
        /// The epoch of the challenge.
        epoch: u64,
        /// The sketches, or why there are none.
        result: Result<Sketches, String>,
    },
}

/// Why a submission did not land.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// It may never have reached the chain (no answer, a broken
    /// connection): sent again as it is, at once.
    Lost(String),
    /// The chain refused it, in its pool or in its block: made again from
    /// reads asked after it, at the next head.
    Refused(String),
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Lost(why) => write!(f, "lost: {why}"),
            SubmitError::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

/// What the machine asks its runner to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Read `query`; answer with [`Input::Read`] carrying `asked_at`.
    Read {
        /// What to read.
        query: Query,
        /// The head height it is asked at.
        asked_at: u64,
    },
    /// Store this node's entry `bytes` under DHT `key`; answer with
    /// [`Input::Written`].
    Write {
        /// The key.
        key: String,
        /// The entry's value.
        bytes: Vec<u8>,
    },
    /// Sign `call` with the node's hotkey, submit it and watch for its
    /// block; answer with [`Input::Submitted`].
    Submit {
        /// The epoch it is about.
        epoch: u64,
        /// `propose_attestation` or `attest`.
        call: Call,
    },
    /// Run the challenge input through every block of the hoster's span
    /// and sketch each output; answer with [`Input::Sketched`]. The block
    /// server must refuse this input from now on.
    Sketch {
        /// The epoch.
        epoch: u64,
        /// Its challenge.
        challenge: Challenge,
    },
    /// Tell the block server the epoch's challenge, so no one can buy its
    /// outputs from this server. Needs no answer.
    Guard {
        /// The epoch.
        epoch: u64,
        /// Its challenge.
        challenge: Challenge,
    },
    /// Something worth logging or showing; needs no answer.
    Notice(Notice),
}

/// A duty of the machine, for notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Duty {
    /// Writing `challenge/<e>`.
    Challenge,
    /// Sketching and committing `hoster-commit/<e>`.
    HosterCommit,
    /// Writing `hoster-reveal/<e>`.
    HosterReveal,
    /// Scoring and committing `validator-commit/<e>`.
    ValidatorCommit,
    /// Writing `validator-reveal/<e>`.
    ValidatorReveal,
    /// Submitting `propose_attestation`.
    Proposal,
    /// Submitting `attest`.
    Attestation,
    /// Reading the chain or the DHT.
    Read,
}

/// What happened, for logs, status displays and tests.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// The chain lists this node under this id.
    Registered {
        /// Its node id.
        node: NodeId,
    },
    /// A record of this node was acknowledged.
    Written {
        /// Which duty wrote it.
        duty: Duty,
        /// The record's epoch.
        epoch: u64,
    },
    /// Another validator's challenge was found in the fallback window:
    /// this one writes none.
    ChallengeFound {
        /// The epoch.
        epoch: u64,
    },
    /// This node scored an epoch (each time the scores change).
    Scored {
        /// The epoch.
        epoch: u64,
        /// The scores.
        scores: EpochScores,
    },
    /// A proposal or attestation was submitted.
    Submitted {
        /// Which.
        duty: Duty,
        /// The epoch.
        epoch: u64,
    },
    /// The chain shows this node's proposal or attestation.
    OnChain {
        /// Which.
        duty: Duty,
        /// The epoch.
        epoch: u64,
    },
    /// Not attesting: the proposal differs from this node's scores.
    Disagreed {
        /// The epoch.
        epoch: u64,
        /// How they differ.
        reason: String,
    },
    /// A duty failed this time; it is tried again while its window is open.
    Failed {
        /// Which.
        duty: Duty,
        /// The epoch.
        epoch: u64,
        /// Why.
        error: String,
    },
}

/// A machine that is fed [`Input`]s and returns [`Action`]s: the honest
/// [`Duties`](crate::Duties), or a wrapper around it.
pub trait DutyMachine: Send {
    /// Handles one input; returns what to do next.
    fn handle(&mut self, input: Input) -> Vec<Action>;
}
