//! Adversaries in one subnet (3 validators, 5 hosters each serving the
//! whole model): a hoster adding noise to its block outputs, a hoster
//! republishing another's commit, a validator revealing other scores than
//! it committed. Hosters become scored (Included) after two epochs, so
//! the run lasts five.

use std::sync::OnceLock;

use hypertensor_duties::byzantine::Behaviour;
use hypertensor_runtime::NodeClass;

use crate::scenario::{Scenario, byzantine, config, node_rewards, run};

fn adversaries() -> &'static Scenario {
    static SCENARIO: OnceLock<Scenario> = OnceLock::new();
    SCENARIO.get_or_init(|| {
        let mut config = config("adversaries");
        config.validators = 3;
        config.hosters = Some(5);
        config.blocks_per_hoster = 30;
        config.faults.insert(
            "hoster-0".into(),
            byzantine(Behaviour::NoisyHoster {
                relative_noise: 0.2,
            }),
        );
        config
            .faults
            .insert("hoster-1".into(), byzantine(Behaviour::CopyCommit));
        config
            .faults
            .insert("validator-0".into(), byzantine(Behaviour::LyingReveal));
        run(config, 5).stop_nodes()
    })
}

const HONEST_HOSTERS: [&str; 3] = ["hoster-2", "hoster-3", "hoster-4"];

#[test]
fn a_noisy_hoster_gets_the_lowest_score_and_a_smaller_reward() {
    let s = adversaries();
    let noisy = s.node_id("hoster-0");
    let mut compared = 0;
    for r in &s.reports {
        let score = |name: &str| {
            r.nodes
                .iter()
                .find(|n| n.name == name)
                .and_then(|n| n.score)
        };
        let Some(noisy_score) = score("hoster-0") else {
            continue;
        };
        let rewards = node_rewards(&s.settlement_events(r.epoch));
        for honest in HONEST_HOSTERS {
            let honest_score = score(honest).expect("honest hosters are scored with it");
            assert!(
                noisy_score < honest_score,
                "epoch {}: noisy {noisy_score} vs {honest} {honest_score}",
                r.epoch
            );
            let honest_id = s.node_id(honest);
            assert!(
                rewards.get(&noisy).copied().unwrap_or(0) < rewards[&honest_id],
                "epoch {}: rewards {rewards:?}",
                r.epoch
            );
        }
        // Every hoster that is scored and has a positive score outranks it.
        for n in r.nodes.iter().filter(|n| n.name.starts_with("hoster-")) {
            if n.name != "hoster-0" && n.score.is_some_and(|s| s > 0) {
                assert!(n.score.unwrap() > noisy_score);
            }
        }
        compared += 1;
    }
    assert!(
        compared >= 2,
        "the noisy hoster was scored in {compared} epochs"
    );
}

#[test]
fn a_hoster_republishing_another_commit_scores_zero() {
    let s = adversaries();
    let mut scored = 0;
    for r in &s.reports {
        let Some(n) = r.nodes.iter().find(|n| n.name == "hoster-1") else {
            continue;
        };
        if let Some(score) = n.score {
            assert_eq!(score, 0, "epoch {}", r.epoch);
            assert!(n.penalties > 0, "a zero score is penalized");
            scored += 1;
        }
        assert_ne!(
            n.class,
            NodeClass::Validator,
            "never promoted without a positive score"
        );
    }
    assert!(
        scored >= 2,
        "the copying hoster was scored in {scored} epochs"
    );
    // Its victims were still paid.
    let last_scored = s
        .reports
        .iter()
        .rev()
        .find(|r| {
            r.nodes
                .iter()
                .any(|n| n.name == "hoster-1" && n.score.is_some())
        })
        .unwrap();
    for honest in HONEST_HOSTERS {
        let n = last_scored.nodes.iter().find(|n| n.name == honest).unwrap();
        assert!(n.score.unwrap() > 0);
    }
}

#[test]
fn a_validator_whose_reveal_does_not_match_its_commit_scores_zero() {
    let s = adversaries();
    // Validator scores of epoch e are proposed in e + 1: from the second
    // consensus epoch on, until three zero scores remove the liar.
    let mut checked = 0;
    for r in &s.reports[1..] {
        let Some(liar) = r.nodes.iter().find(|n| n.name == "validator-0") else {
            continue;
        };
        assert_eq!(liar.score, Some(0), "epoch {}", r.epoch);
        for honest in ["validator-1", "validator-2"] {
            let n = r.nodes.iter().find(|n| n.name == honest).unwrap();
            assert!(n.score.unwrap() > 0, "epoch {}: {honest}", r.epoch);
        }
        checked += 1;
    }
    assert!(checked >= 1);
    assert!(
        s.reports
            .last()
            .unwrap()
            .nodes
            .iter()
            .all(|n| n.name != "validator-0"),
        "three penalties removed it"
    );
}
