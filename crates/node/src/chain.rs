//! A connection to the chain's RPC that survives the chain node
//! restarting or the socket breaking.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hypertensor_chain_client::Client as ChainClient;
use tokio::sync::RwLock;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The chain's RPC at one URL. [`ChainConnection::client`] hands out the
/// live client; whoever finds it closed calls
/// [`ChainConnection::reconnect`], and everyone gets the new one.
pub struct ChainConnection {
    url: String,
    current: RwLock<Arc<ChainClient>>,
    reconnecting: AtomicBool,
}

impl ChainConnection {
    /// Connects to `url` (`ws://…` or `http://…`).
    pub async fn connect(url: &str) -> hypertensor_chain_client::Result<Arc<Self>> {
        let client = ChainClient::connect(url).await?;
        Ok(Arc::new(ChainConnection {
            url: url.to_string(),
            current: RwLock::new(Arc::new(client)),
            reconnecting: AtomicBool::new(false),
        }))
    }

    /// The chain's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The current client.
    pub async fn client(&self) -> Arc<ChainClient> {
        self.current.read().await.clone()
    }

    /// Replaces `broken` with a new connection, retrying with backoff
    /// until the chain answers; if another caller already replaced it,
    /// returns that one. Other callers of [`ChainConnection::client`] are
    /// never blocked meanwhile.
    pub async fn reconnect(&self, broken: &Arc<ChainClient>) -> Arc<ChainClient> {
        let mut backoff = Duration::from_millis(250);
        loop {
            {
                let current = self.current.read().await;
                if !Arc::ptr_eq(&current, broken) {
                    return current.clone();
                }
            }
            match ChainClient::connect(&self.url).await {
                Ok(client) => {
                    let mut current = self.current.write().await;
                    if Arc::ptr_eq(&current, broken) {
                        tracing::info!(url = %self.url, "reconnected to the chain");
                        *current = Arc::new(client);
                    }
                    return current.clone();
                }
                Err(e) => {
                    tracing::warn!(url = %self.url, error = %e, ?backoff, "the chain is unreachable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Starts [`ChainConnection::reconnect`] in the background unless one
    /// is already running (for callers that must not wait, like the DHT's
    /// stake checks).
    pub fn reconnect_in_background(self: &Arc<Self>, broken: Arc<ChainClient>) {
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.reconnect(&broken).await;
            this.reconnecting.store(false, Ordering::Release);
        });
    }
}
