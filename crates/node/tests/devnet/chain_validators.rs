//! The devnet's four chain validators: one goes down mid-run (the one
//! every client connected to first), the subnet's nodes fail over to the
//! next validator's RPC, the chain keeps finalizing and epochs keep
//! settling in consensus; it comes back and catches up.

use std::time::Duration;

use hypertensor_chain_client::{BlockId, Client};

use crate::scenario::{BLOCK_MS, EPOCH_LENGTH, config, in_consensus_ratio, post, run};

/// One chat completion through the gateway's API; the whole response.
async fn chat(addr: std::net::SocketAddr) -> String {
    let body =
        r#"{"model":"smollm2","messages":[{"role":"user","content":"Hello"}],"max_tokens":4}"#;
    post(addr, "/v1/chat/completions", body).await
}

#[test]
fn epochs_settle_with_a_chain_validator_down_and_it_catches_up() {
    let mut config = config("chain-validators");
    config.validators = 2;
    config.hosters = Some(3);
    config.blocks_per_hoster = 30;
    config.chain_validators = 4;
    let mut s = run(config, 1);
    assert!(
        in_consensus_ratio(&s.reports[0]).is_some(),
        "{:?}",
        s.reports[0]
    );
    let devnet = &mut s.devnet;
    s.runtime.block_on(async {
        devnet.stop_chain_validator(0).await.unwrap();
        // The list of URLs: the first is down, the next answers.
        let chain = Client::connect(&devnet.chain_url).await.unwrap();
        let stopped_in = chain.epoch_info().await.unwrap().epoch;
        let target = stopped_in + 1;
        let mut heads = chain.subscribe_new_heads().await.unwrap();
        let budget = Duration::from_millis(BLOCK_MS * EPOCH_LENGTH * 6);
        tokio::time::timeout(budget, async {
            while heads.next().await.unwrap().unwrap().header.height < (target + 1) * EPOCH_LENGTH {
            }
        })
        .await
        .expect("three of four validators keep finalizing");
        let report = devnet.epoch_report(target).await.unwrap();
        assert!(
            in_consensus_ratio(&report).is_some(),
            "epoch {target} with a chain validator down: {report:?}"
        );
        // The API still answers a chat.
        let reply = chat(devnet.api_addr).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.contains("\"choices\""), "{reply}");

        devnet.start_chain_validator(0).await.unwrap();
        let first = devnet.chain_url.split(',').next().unwrap().to_string();
        let back = Client::connect(&first).await.unwrap();
        let height = chain.health().await.unwrap().height;
        tokio::time::timeout(budget, async {
            while back.health().await.unwrap().height < height {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the restarted validator catches up");
        let theirs = chain.header(Some(BlockId::Height(height))).await.unwrap();
        let its = back.header(Some(BlockId::Height(height))).await.unwrap();
        assert_eq!(its, theirs, "the same block at {height}");
    });
}
