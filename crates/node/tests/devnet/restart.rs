//! The chain node restarts mid-run (as an operator would restart it): the
//! subnet's nodes reconnect by themselves and consensus carries on.

use std::time::Duration;

use hypertensor_chain_client::Client;

use crate::scenario::{BLOCK_MS, EPOCH_LENGTH, config, in_consensus_ratio, run};

#[test]
fn nodes_reconnect_after_the_chain_restarts_and_consensus_carries_on() {
    let mut config = config("restart");
    config.validators = 2;
    config.hosters = Some(3);
    config.blocks_per_hoster = 30;
    let mut s = run(config, 1);
    assert!(
        in_consensus_ratio(&s.reports[0]).is_some(),
        "{:?}",
        s.reports[0]
    );
    let devnet = &mut s.devnet;
    s.runtime.block_on(async {
        devnet.restart_chain().await.unwrap();
        let chain = Client::connect(&devnet.chain_url).await.unwrap();
        let restarted_in = chain.epoch_info().await.unwrap().epoch;
        // The epoch after the one the restart fell in must be settled in
        // consensus, by nodes that found the chain again on their own.
        let target = restarted_in + 1;
        let mut heads = chain.subscribe_new_heads().await.unwrap();
        let budget = Duration::from_millis(BLOCK_MS * EPOCH_LENGTH * 6);
        tokio::time::timeout(budget, async {
            while heads.next().await.unwrap().unwrap().header.height < (target + 1) * EPOCH_LENGTH {
            }
        })
        .await
        .expect("the chain runs on");
        let report = devnet.epoch_report(target).await.unwrap();
        assert!(
            in_consensus_ratio(&report).is_some(),
            "epoch {target} after the restart: {report:?}"
        );
    });
}
