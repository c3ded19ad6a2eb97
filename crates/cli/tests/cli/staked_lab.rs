//! The staked network across hosts: four chain validators, three subnet
//! validators, three hosters and a gateway, each a `hypertensor` process in
//! its own network namespace behind 10 ms links, set up by transactions
//! over the chain's RPC (see `hypertensor_labnet`). Skipped, with the
//! reason, where the lab cannot be made (not root, no TUN).

use std::time::Duration;

use hypertensor_labnet::{Network, Options, chain_host};
use hypertensor_netlab::Lab;
use hypertensor_node::devnet::EpochReport;
use hypertensor_runtime::SettlementOutcome;

const BIN: &str = env!("CARGO_BIN_EXE_hypertensor");

fn in_consensus(report: &EpochReport) -> bool {
    matches!(report.outcome, Some(SettlementOutcome::InConsensus { .. }))
}

/// Waits for `epoch` to be settled and returns its report.
fn settled(net: &Network, epoch: u64, epoch_secs: u64) -> EpochReport {
    net.wait_for_epoch(epoch + 1, Duration::from_secs(3 * epoch_secs + 30))
        .expect("the chain goes on");
    let report = net.report(epoch).expect("the epoch's report");
    eprintln!(
        "epoch {epoch}: elected {:?}, {} of {} attested, {:?}",
        report.elected,
        report.attesters.len(),
        report.snapshot,
        report.outcome
    );
    report
}

/// A subnet validator and a chain validator lose their links for a whole
/// epoch: the chain finalizes without the one, the epoch settles in
/// consensus without the other's attestation, and once the links are back
/// the chain validator catches up and the subnet validator attests again.
/// The gateway serves the local model's greedy tokens across the hosts.
#[test]
fn a_validator_partitioned_for_an_epoch_is_settled_without_and_rejoins() {
    if let Some(why) = Lab::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = std::env::temp_dir().join(format!("hypertensor-staked-lab-{}", std::process::id()));
    let model = hypertensor_fetch::default_model_path(true).expect("the default model");
    let options = Options::new(BIN.into(), model, dir.clone());
    let epoch_secs = options.epoch_length * options.block_time_ms / 1000;
    let mut net = Network::start(options).expect("the network starts");

    // The API, across hosts, gives the local model's greedy tokens.
    let prompt = "The capital of France is";
    let expected = crate::netns::local_greedy(prompt, "16");
    let mut answer = (0, String::new());
    for _ in 0..60 {
        answer = net.complete(prompt, 16).unwrap();
        if answer.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(answer.0, 200, "{}", answer.1);
    let v: serde_json::Value = serde_json::from_str(&answer.1).unwrap();
    assert_eq!(
        v["choices"][0]["text"].as_str().unwrap(),
        expected.trim_end_matches('\n')
    );

    // Consensus runs across the hosts: an epoch settles in consensus.
    let mut epoch = net.epoch().unwrap();
    let mut report = settled(&net, epoch, epoch_secs);
    for _ in 0..6 {
        if in_consensus(&report) {
            break;
        }
        epoch += 1;
        report = settled(&net, epoch, epoch_secs);
    }
    assert!(in_consensus(&report), "no epoch settled in consensus");

    // At the start of the next epoch, partition a subnet validator that
    // is not the elected one, and the last chain validator.
    let partitioned = epoch + 1;
    net.wait_for_epoch(partitioned, Duration::from_secs(3 * epoch_secs))
        .unwrap();
    let elected = net.report(partitioned).unwrap().elected;
    assert!(
        elected.is_some(),
        "no validator elected for epoch {partitioned}"
    );
    let victim = report
        .nodes
        .iter()
        .find(|n| n.name.starts_with("validator-") && Some(n.node) != elected)
        .expect("a validator that is not elected")
        .clone();
    let chain_victim = chain_host(net.chain_urls().len() - 1);
    net.cut(&victim.name).unwrap();
    net.cut(&chain_victim).unwrap();
    eprintln!(
        "epoch {partitioned}: {} and {chain_victim} cut",
        victim.name
    );

    let report = settled(&net, partitioned, epoch_secs);
    net.heal(&victim.name).unwrap();
    net.heal(&chain_victim).unwrap();
    assert!(
        in_consensus(&report),
        "the epoch without {} did not settle in consensus: {report:?}",
        victim.name
    );
    assert!(
        !report.attesters.contains(&victim.node),
        "the partitioned validator attested"
    );
    let totals = net.totals().unwrap();
    assert_eq!(totals.accounted(), Some(totals.issuance), "{totals:?}");

    // The chain validator catches up with the others.
    let status = net.chain_status().unwrap();
    let height = status.iter().flatten().map(|h| h.height).max().unwrap();
    let mut caught_up = false;
    for _ in 0..60 {
        let status = net.chain_status().unwrap();
        if status
            .last()
            .cloned()
            .flatten()
            .is_some_and(|h| h.height >= height)
        {
            caught_up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        caught_up,
        "{chain_victim} did not catch up to height {height}"
    );

    // The subnet validator attests again.
    let mut rejoined = None;
    for epoch in partitioned + 1..partitioned + 5 {
        let report = settled(&net, epoch, epoch_secs);
        if in_consensus(&report) && report.attesters.contains(&victim.node) {
            rejoined = Some(epoch);
            break;
        }
    }
    assert!(
        rejoined.is_some(),
        "{} never attested again after its link came back",
        victim.name
    );
    assert!(net.is_running(&victim.name), "{} exited", victim.name);
    assert!(net.is_running(&chain_victim), "{chain_victim} exited");
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}
