//! A started node: handles to its parts and the owner of its tasks.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hypertensor_inference::{BlockServer, SwarmClient};
use hypertensor_p2p::{Client, Multiaddr};
use tokio::sync::watch;

use crate::chain::ChainConnection;
use crate::dht::LoopMetrics;
use crate::epoch_loop::LoopStatus;
use crate::error::{NodeError, NodeResult};
use crate::tasks::{TaskFailure, TaskManager};

/// Longest a graceful stop takes: the API finishes its responses within
/// it, then every other task is aborted.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// A running node, built by [`crate::NodeBuilder`]. Dropping it aborts
/// every task; [`RunningNode::stop`] stops it gracefully.
pub struct RunningNode {
    /// Its P2P client.
    pub p2p: Client,
    /// Its block server, if it hosts.
    pub server: Option<Arc<BlockServer>>,
    /// How others reach its block server, if it hosts.
    pub reach: Option<crate::Reach>,
    /// The consensus loop's status, if it runs one.
    pub status: Option<watch::Receiver<LoopStatus>>,
    /// The consensus loop's counters, if it runs one.
    pub metrics: Option<Arc<LoopMetrics>>,
    /// The API's address, if it serves one.
    pub api_addr: Option<SocketAddr>,
    /// Where `/metrics`, `/health` and `/ready` are served on their own
    /// (`NodeOptions::metrics_addr`), if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Its swarm client, if it keeps one (asked for, or under the API).
    pub swarm: Option<Arc<SwarmClient>>,
    /// The latest chain head's height from the node's one head follower,
    /// if it follows a chain.
    pub heads: Option<watch::Receiver<u64>>,
    /// Its chain connection, if it follows a chain.
    pub chain: Option<Arc<ChainConnection>>,
    pub(crate) tasks: TaskManager,
}

impl RunningNode {
    /// The node's addresses with its peer id, to bootstrap others.
    pub async fn dial_addrs(&self) -> NodeResult<Vec<Multiaddr>> {
        let id = self.p2p.peer_id();
        Ok(self
            .p2p
            .listen_addrs()
            .await?
            .into_iter()
            .map(|a| a.with_p2p(id).unwrap_or_else(|a| a))
            .collect())
    }

    /// The names of the critical tasks running.
    pub fn task_names(&self) -> Vec<String> {
        self.tasks.names()
    }

    /// Waits until a critical task stops, and says which and why.
    /// Cancel-safe.
    pub async fn wait_for_failure(&mut self) -> TaskFailure {
        self.tasks.wait_for_failure().await
    }

    /// Stops the node gracefully: the API finishes its responses (within
    /// [`SHUTDOWN_DEADLINE`]), then everything else stops.
    pub async fn stop(&mut self) {
        self.tasks.shutdown(SHUTDOWN_DEADLINE).await;
    }

    /// Runs until `signal` completes (then stops gracefully and returns
    /// `Ok`) or a critical task stops (then logs it, stops the rest and
    /// returns [`NodeError::Task`] naming it).
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> NodeResult<()> {
        tokio::select! {
            failure = self.tasks.wait_for_failure() => {
                tracing::error!(task = %failure.name, exit = %failure.exit, "a critical task stopped; stopping the node");
                self.stop().await;
                Err(NodeError::Task(failure))
            }
            () = signal => {
                tracing::info!("stopping the node");
                self.stop().await;
                Ok(())
            }
        }
    }
}
