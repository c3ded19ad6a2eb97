//! A hoster given no span takes the weakest-covered one when it follows a
//! chain too: the same choice, made by the same builder, as without one
//! (which the CLI's two-hosters test shows).

use hypertensor_node::devnet::Devnet;
use hypertensor_node::{HostOptions, NodeBuilder, NodeOptions, SpanChoice};
use hypertensor_primitives::Keypair;

use crate::scenario::{config, model_path};

#[test]
fn a_hoster_following_a_chain_takes_the_weakest_covered_span() {
    let mut config = config("spans");
    config.validators = 2;
    // Four hosters of 10 blocks dealt round-robin: 0..10 twice, 10..30
    // once, so the weakest 15 blocks start at 10 (the old chain path took
    // 0..15, the strongest).
    config.hosters = Some(4);
    config.blocks_per_hoster = 10;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let devnet = Devnet::start(config).await.expect("the devnet starts");
        let served: Vec<_> = devnet
            .nodes
            .iter()
            .filter_map(|(_, n)| Some(n.server.as_ref()?.span().range()))
            .collect();
        assert_eq!(served, vec![0..10, 10..20, 20..30, 0..10]);
        let hoster = &devnet.nodes.last().expect("a hoster").1;
        // The choice reads the announcements once: wait until all four
        // are in the DHT.
        let announced = async {
            loop {
                let servers =
                    hypertensor_inference::announced_servers(&devnet.gateway.p2p, "smollm2", 30, 0)
                        .await
                        .unwrap_or_default();
                if servers.len() == 4 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), announced)
            .await
            .expect("the four hosters are announced");
        let mut options = NodeOptions::new(
            Keypair::from_secret(rand::random()),
            devnet.subnet,
            &devnet.chain_url,
            model_path(),
        );
        options.consensus = false;
        options.bootstrap = hoster.dial_addrs().await.unwrap();
        options.host = Some(HostOptions {
            blocks: SpanChoice::Weakest(15),
            cache_bytes: 64 << 20,
            throughput: Some(100.0),
            fault: None,
        });
        let mut node = NodeBuilder::new(options)
            .start()
            .await
            .expect("the node starts");
        let range = node.server.as_ref().expect("it hosts").span().range();
        assert_eq!(range, 10..25, "with a chain, the weakest blocks are taken");
        node.stop().await;
        devnet.stop().await;
    });
}
