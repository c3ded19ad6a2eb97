//! The scenarios: an honest subnet, faulty hosters and validators, a
//! silent elected validator, nodes joining and leaving, and a node removed
//! between the proposal and the attestations.

use std::cell::Cell;
use std::collections::BTreeMap;

use hypertensor_duties::byzantine::Behaviour;
use hypertensor_primitives::Fixed;
use hypertensor_runtime::{Event, NodeId, SettlementOutcome};

use crate::harness::{
    Change, EPOCH_LENGTH, Faults, NodeSpec, Outcome, Sim, Spec, for_seeds, newcomer, subnet,
};

/// Seeds per scenario in the default test run.
const SEEDS: u64 = 500;
/// Consensus epochs checked: 1 (the first with an election) to 4.
const EPOCHS: std::ops::RangeInclusive<u64> = 1..=4;
/// Long enough for the last checked epoch to be settled.
const UNTIL: u64 = (5 * EPOCH_LENGTH) + 1;
/// The churn scenario runs longer, until a newcomer is scored.
const CHURN_EPOCHS: u64 = 6;

fn spec(nodes: Vec<NodeSpec>) -> Spec {
    Spec {
        nodes,
        until_height: UNTIL,
        changes: Vec::new(),
        faults: Faults::default(),
    }
}

fn with(mut nodes: Vec<NodeSpec>, name: &str, behaviour: Behaviour) -> Vec<NodeSpec> {
    let node = nodes
        .iter_mut()
        .find(|n| n.name == name)
        .expect("the node exists");
    node.behaviour = behaviour;
    nodes
}

impl Outcome {
    fn id(&self, name: &str) -> NodeId {
        self.ids[name]
    }

    fn settled(&self, epoch: u64) -> &SettlementOutcome {
        self.consensus
            .get(&epoch)
            .and_then(|c| c.outcome.as_ref())
            .unwrap_or_else(|| panic!("epoch {epoch} is not settled"))
    }

    fn in_consensus(&self, epoch: u64) {
        match self.settled(epoch) {
            SettlementOutcome::InConsensus { ratio, .. } => assert!(
                *ratio >= Fixed::from_decimal(66, 2),
                "epoch {epoch}: ratio {ratio}"
            ),
            other => panic!("epoch {epoch}: {other:?}, {:?}", self.consensus[&epoch]),
        }
    }

    /// Every epoch is in consensus, except that `left_in` may have no
    /// proposal if the node that left then was its elected validator and
    /// left before proposing.
    fn in_consensus_unless_elected_left(&self, gone: NodeId, left_in: u64) {
        for e in EPOCHS {
            if e == left_in && self.consensus[&e].validator == gone {
                // It may have proposed before it left.
                match self.settled(e) {
                    SettlementOutcome::NoProposal => {}
                    _ => self.in_consensus(e),
                }
            } else {
                self.in_consensus(e);
            }
        }
    }

    /// Every epoch is in consensus, the faulty hoster `name` scores zero
    /// in each while honest `hoster-0` scores, and it is paid less.
    fn hoster_scores_zero(&self, name: &str) {
        for e in EPOCHS {
            self.in_consensus(e);
            let scores = self.scores(e);
            assert_eq!(scores[name], 0, "epoch {e}: {scores:?}");
            assert!(scores["hoster-0"] > 0, "epoch {e}: {scores:?}");
            let rewards = self.rewards(e);
            let faulty = rewards.get(&self.id(name)).copied().unwrap_or(0);
            assert!(
                faulty < rewards[&self.id("hoster-0")],
                "epoch {e}: {rewards:?}"
            );
        }
    }

    /// The proposed score of each node, by name.
    fn scores(&self, epoch: u64) -> BTreeMap<String, u128> {
        let proposal = self.consensus[&epoch]
            .proposal
            .clone()
            .unwrap_or_else(|| panic!("epoch {epoch} has no proposal"));
        // A node the proposal leaves out scores zero.
        self.ids
            .iter()
            .map(|(name, id)| {
                let score = proposal.iter().find(|(n, _)| n == id).map_or(0, |s| s.1);
                (name.clone(), score)
            })
            .collect()
    }

    /// Score-and-stake rewards paid at the settlement of `epoch`, by node.
    fn rewards(&self, epoch: u64) -> BTreeMap<NodeId, u128> {
        let settlement = (epoch + 1) * EPOCH_LENGTH;
        let mut out = BTreeMap::new();
        for (height, record) in &self.events {
            if let Event::RewardPaid {
                node,
                amount,
                validator_reward: false,
                ..
            } = &record.event
                && *height == settlement
            {
                *out.entry(*node).or_default() += amount;
            }
        }
        out
    }

    fn penalties_at(&self, epoch: u64, node: NodeId) -> usize {
        let settlement = (epoch + 1) * EPOCH_LENGTH;
        self.events
            .iter()
            .filter(|(h, r)| {
                *h == settlement
                    && matches!(&r.event, Event::PenaltyAdded { node: n, .. } if *n == node)
            })
            .count()
    }
}

const HOSTERS: [&str; 4] = ["hoster-0", "hoster-1", "hoster-2", "hoster-3"];

#[test]
fn honest_subnet_every_epoch_in_consensus_and_honest_hosters_paid_alike() {
    for_seeds(
        "honest",
        SEEDS,
        |_| spec(subnet(3, 4)),
        |o| {
            for e in EPOCHS {
                o.in_consensus(e);
                let scores = o.scores(e);
                let first = scores["hoster-0"];
                assert!(first > 0, "epoch {e}: {scores:?}");
                for h in HOSTERS {
                    assert_eq!(scores[h], first, "epoch {e}: {scores:?}");
                }
                let rewards = o.rewards(e);
                let paid: Vec<u128> = HOSTERS.iter().map(|h| rewards[&o.id(h)]).collect();
                assert!(
                    paid.iter().all(|r| *r == paid[0] && *r > 0),
                    "epoch {e}: {paid:?}"
                );
            }
            // Validators are scored on the epoch before: from epoch 2 on.
            for e in 2..=*EPOCHS.end() {
                let scores = o.scores(e);
                for v in ["validator-0", "validator-1", "validator-2"] {
                    assert!(scores[v] > 0, "epoch {e}: {scores:?}");
                }
            }
        },
    );
}

#[test]
fn a_noisy_hoster_gets_the_lowest_score_and_a_smaller_reward() {
    let nodes = with(
        subnet(3, 4),
        "hoster-0",
        Behaviour::NoisyHoster {
            relative_noise: 0.2,
        },
    );
    for_seeds(
        "noisy",
        SEEDS,
        |_| spec(nodes.clone()),
        |o| {
            for e in EPOCHS {
                o.in_consensus(e);
                let scores = o.scores(e);
                for h in &HOSTERS[1..] {
                    assert!(scores["hoster-0"] < scores[*h], "epoch {e}: {scores:?}");
                }
                let rewards = o.rewards(e);
                let noisy = rewards.get(&o.id("hoster-0")).copied().unwrap_or(0);
                assert!(noisy < rewards[&o.id("hoster-1")], "epoch {e}: {rewards:?}");
            }
        },
    );
}

#[test]
fn a_hoster_republishing_another_commit_scores_zero() {
    let nodes = with(subnet(3, 4), "hoster-1", Behaviour::CopyCommit);
    for_seeds(
        "republishing",
        SEEDS,
        |_| spec(nodes.clone()),
        |o| {
            o.hoster_scores_zero("hoster-1");
        },
    );
}

#[test]
fn a_hoster_whose_reveal_does_not_match_its_commit_scores_zero() {
    let nodes = with(subnet(3, 4), "hoster-2", Behaviour::LyingHosterReveal);
    for_seeds(
        "hoster_whose_reveal",
        SEEDS,
        |_| spec(nodes.clone()),
        |o| {
            o.hoster_scores_zero("hoster-2");
        },
    );
}

#[test]
fn a_validator_whose_reveal_does_not_match_its_commit_scores_zero() {
    let nodes = with(subnet(4, 4), "validator-0", Behaviour::LyingReveal);
    for_seeds(
        "reveal_does_not_match",
        SEEDS,
        |_| spec(nodes.clone()),
        |o| {
            for e in EPOCHS {
                o.in_consensus(e);
            }
            for e in 2..=*EPOCHS.end() {
                let scores = o.scores(e);
                assert_eq!(scores["validator-0"], 0, "epoch {e}: {scores:?}");
                assert!(scores["validator-1"] > 0, "epoch {e}: {scores:?}");
            }
        },
    );
}

#[test]
fn a_silent_elected_validator_is_penalized_and_the_emission_stays_in_the_vault() {
    let nodes = with(subnet(3, 4), "validator-0", Behaviour::SilentWhenElected);
    // Elections are seeded by the chain: count those the silent validator
    // won, so the scenario cannot pass without testing its point.
    let elected = Cell::new(0usize);
    let runs = for_seeds(
        "silent",
        SEEDS,
        |_| spec(nodes.clone()),
        |o| {
            let silent = o.id("validator-0");
            for e in EPOCHS {
                let consensus = &o.consensus[&e];
                if consensus.validator == silent {
                    elected.set(elected.get() + 1);
                    assert_eq!(o.settled(e), &SettlementOutcome::NoProposal, "epoch {e}");
                    assert!(o.penalties_at(e, silent) > 0, "epoch {e}: not penalized");
                    assert!(
                        o.rewards(e).is_empty(),
                        "epoch {e}: paid {:?}",
                        o.rewards(e)
                    );
                } else {
                    // The others write the challenge in the fallback window
                    // when needed, so every other epoch is accepted.
                    o.in_consensus(e);
                }
            }
        },
    );
    // One validator in three is elected: about 4/3 elections per seed.
    if runs >= 20 {
        assert!(
            elected.get() * 2 >= runs,
            "the silent validator was elected {} times in {runs} seeds",
            elected.get()
        );
    }
}

#[test]
fn nodes_joining_and_leaving_mid_epoch_do_not_stop_consensus() {
    let mut nodes = subnet(3, 4);
    nodes.push(newcomer("hoster-4"));
    let spec = |seed: u64| {
        let mut s = spec(nodes.clone());
        s.until_height = (CHURN_EPOCHS + 1) * EPOCH_LENGTH + 1;
        // Mid-epoch, at a height that changes with the seed: a join in
        // epoch 1 and a leave in epoch 2 before its proposal window (a
        // removal after the proposal is the next scenario).
        s.changes = vec![
            (
                EPOCH_LENGTH + 2 + seed % 15,
                Change::Join("hoster-4".into()),
            ),
            (
                2 * EPOCH_LENGTH + 2 + seed % 10,
                Change::Leave("hoster-3".into()),
            ),
        ];
        s
    };
    for_seeds("joining_and_leaving", SEEDS, spec, |o| {
        let gone = o.id("hoster-3");
        o.in_consensus_unless_elected_left(gone, 2);
        for e in 3..=*EPOCHS.end() {
            let proposal = o.consensus[&e].proposal.clone().unwrap_or_default();
            assert!(
                proposal.iter().all(|(n, _)| *n != gone),
                "epoch {e}: {proposal:?}"
            );
            assert!(
                !o.rewards(e).contains_key(&gone),
                "epoch {e}: the removed node was paid"
            );
        }
        // The newcomer is Idle (not scored) while it waits for promotion
        // (two epochs in consensus), then takes part like everyone else.
        let newcomer = o.id("hoster-4");
        let proposal = o.consensus[&2].proposal.clone().unwrap_or_default();
        assert!(proposal.iter().all(|(n, _)| *n != newcomer), "{proposal:?}");
        for e in (*EPOCHS.end() + 1)..=CHURN_EPOCHS {
            o.in_consensus(e);
            // (The genesis hosters are Validator class by then and are
            // scored for validating too, so only positivity compares.)
            let scores = o.scores(e);
            assert!(scores["hoster-4"] > 0, "epoch {e}: {scores:?}");
            assert!(
                o.rewards(e)[&newcomer] > 0,
                "epoch {e}: the newcomer was not paid"
            );
        }
    });
}

#[test]
fn a_node_removed_between_proposal_and_attestation_leaves_the_epoch_in_consensus() {
    let spec = |_| {
        let mut s = spec(subnet(3, 4));
        // Removed by its owner in the block after epoch 2's proposal, while
        // the validators attest.
        s.changes = vec![(1, Change::LeaveAfterProposal("hoster-3".into(), 2))];
        s
    };
    for_seeds("removed_between", SEEDS, spec, |o| {
        let gone = o.id("hoster-3");
        o.in_consensus_unless_elected_left(gone, 2);
        assert!(
            !o.rewards(2).contains_key(&gone),
            "the removed node was paid"
        );
        if o.consensus[&2].validator != gone {
            let scores = o.scores(2);
            assert!(scores["hoster-0"] > 0, "{scores:?}");
        }
    });
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let mut nodes = with(subnet(3, 4), "hoster-1", Behaviour::CopyCommit);
    nodes.push(newcomer("hoster-4"));
    let spec = |seed: u64| {
        let mut s = spec(nodes.clone());
        s.changes = vec![(EPOCH_LENGTH + 3 + seed % 7, Change::Join("hoster-4".into()))];
        s.faults = harsh_network();
        s
    };
    for seed in 0..20 {
        let first = Sim::new(&spec(seed), seed).run();
        let second = Sim::new(&spec(seed), seed).run();
        assert!(first == second, "seed {seed} ran two ways");
    }
    // And the seed matters: two seeds do not run the same way.
    assert!(Sim::new(&spec(0), 0).run() != Sim::new(&spec(0), 1).run());
}

/// The epochs before the genesis hosters can be promoted to Validator
/// (two epochs in consensus with a positive score).
const BEFORE_PROMOTION: std::ops::Range<u64> = 1..3;

/// Answers up to a block late (the grace every window keeps for late
/// writes), and one attempt in seven lost, retries included.
fn harsh_network() -> Faults {
    Faults {
        max_latency_ms: 1_000,
        drop_per_mille: 150,
        losses_can_repeat: true,
    }
}

#[test]
fn an_honest_subnet_on_a_harsh_network_mostly_agrees_and_pays_honest_hosters_alike() {
    let agreed = Cell::new(0usize);
    let runs = for_seeds(
        "harsh_network",
        SEEDS,
        |_| Spec {
            faults: harsh_network(),
            ..spec(subnet(3, 4))
        },
        |o| {
            for e in EPOCHS {
                if matches!(o.settled(e), SettlementOutcome::InConsensus { .. }) {
                    agreed.set(agreed.get() + 1);
                }
            }
            // Before any hoster is promoted to Validator (and scored for
            // validating too), a hoster whose records were lost scores
            // zero and every other honest hoster scores the same.
            for e in BEFORE_PROMOTION.start..BEFORE_PROMOTION.end {
                if !matches!(o.settled(e), SettlementOutcome::InConsensus { .. }) {
                    continue;
                }
                let scores = o.scores(e);
                let best = HOSTERS.iter().map(|h| scores[*h]).max().unwrap_or(0);
                for h in HOSTERS {
                    assert!(scores[h] == 0 || scores[h] == best, "epoch {e}: {scores:?}");
                }
                let rewards = o.rewards(e);
                let paid: Vec<u128> = HOSTERS
                    .iter()
                    .filter(|h| scores[**h] > 0)
                    .map(|h| rewards[&o.id(h)])
                    .collect();
                assert!(paid.iter().all(|r| *r == paid[0]), "epoch {e}: {paid:?}");
            }
        },
    );
    let epochs = runs * EPOCHS.count();
    eprintln!(
        "harsh network: {} of {epochs} epochs in consensus",
        agreed.get()
    );
    // Measured: 1,725 of 2,000 (86%) over the 500 default seeds. The rest
    // fall short of attestations: a proposal that lands late leaves the
    // attesters a few blocks, and a lost attestation retried a block
    // later can miss the epoch's end (see docs/consensus.md).
    if runs >= 20 {
        assert!(
            agreed.get() * 10 >= epochs * 8,
            "only {} of {epochs} epochs in consensus",
            agreed.get()
        );
    }
}
