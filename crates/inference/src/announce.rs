//! What a server announces in the DHT under `"<model>.<block>"` for every
//! block it holds (SPEC §5), and the schema that checks it.

use std::time::Duration;

use hypertensor_p2p::KeySchema;
use serde::{Deserialize, Serialize};

/// Longest an announcement may live; servers refresh well before.
pub const ANNOUNCE_MAX_TTL: Duration = Duration::from_secs(300);
/// Largest announcement value accepted.
const MAX_ANNOUNCE_BYTES: usize = 4096;

/// A server's life cycle as others see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Loading or measuring; not serving yet.
    Joining,
    /// Serving sessions.
    Online,
    /// Leaving; no new sessions.
    Offline,
}

/// One server's announcement (the same value under each of its blocks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerInfo {
    /// Life-cycle state.
    pub state: ServerState,
    /// First block served.
    pub start: u32,
    /// One past the last block served.
    pub end: u32,
    /// Decode steps per second a session sees through the whole span, as
    /// measured under the server's current load.
    pub throughput: f64,
    /// Sessions open on the server when it announced.
    #[serde(default)]
    pub sessions: u32,
    /// Token positions its cache budget can still reserve.
    pub free_cache_tokens: u64,
    /// Software version.
    pub version: String,
    /// Addresses to dial it at.
    pub addrs: Vec<String>,
    /// Whether those addresses go through a relay (the server is behind
    /// NAT); routing prefers direct servers (see `routing`). Left out when
    /// false, so direct servers' announcements read as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relayed: bool,
}

impl ServerInfo {
    /// Encodes as JSON.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and checks: a non-empty span, a finite positive throughput.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let info: ServerInfo =
            serde_json::from_slice(bytes).map_err(|e| format!("not a server announcement: {e}"))?;
        if info.start >= info.end {
            return Err(format!("empty span {}..{}", info.start, info.end));
        }
        if !(info.throughput.is_finite() && info.throughput > 0.0) {
            return Err(format!("throughput {} is not positive", info.throughput));
        }
        Ok(info)
    }
}

/// The DHT key of block `block` of `model`.
pub fn block_key(model: &str, block: usize) -> String {
    format!("{model}.{block}")
}

/// The schema of every `"<model>.<block>"` key.
pub fn announce_schema(model: &str) -> KeySchema {
    let prefix = format!("{model}.");
    let check_prefix = prefix.clone();
    KeySchema::typed(
        &prefix,
        "server announcement",
        MAX_ANNOUNCE_BYTES,
        ANNOUNCE_MAX_TTL,
        move |value| {
            ServerInfo::decode(value)
                .map(|_| ())
                .map_err(|e| format!("{check_prefix}*: {e}"))
        },
    )
}
