//! The configuration of one node's P2P layer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hypertensor_primitives::{H256, Keypair};
use libp2p::Multiaddr;

use crate::Result;
use crate::rpc::{Admission, RpcHandler};
use crate::schema::SchemaRegistry;
use crate::validate::{PhaseClock, StakeOracle};

/// Everything [`crate::new`] needs. Build with [`Config::new`] and adjust
/// the public fields.
#[derive(Clone)]
pub struct Config {
    /// The node's identity (also its record and RPC signing key).
    pub keypair: Keypair,
    /// The subnet this DHT serves (names the protocols).
    pub subnet_id: u32,
    /// The network's genesis hash, mixed into every signature.
    pub genesis: H256,
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/4001`.
    pub listen: Vec<Multiaddr>,
    /// Addresses to announce to others (public addresses behind NAT).
    pub announce: Vec<Multiaddr>,
    /// Bootstrap peers; each must end in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Which keys exist, their value types, sizes and TTLs.
    pub schemas: SchemaRegistry,
    /// The chain's epoch and the key windows.
    pub phase: Arc<dyn PhaseClock>,
    /// Proof of stake for writers and callers.
    pub stake: Arc<dyn StakeOracle>,
    /// Entries one writer may add per epoch on this node.
    pub writes_per_epoch: u32,
    /// Who may call our RPC methods.
    pub admission: Admission,
    /// The unary RPC handler; without one every request is refused with
    /// "unknown method".
    pub rpc_handler: Option<Arc<dyn RpcHandler>>,
    /// Session methods this node accepts (delivered as
    /// [`crate::Event::InboundSession`]).
    pub session_methods: Vec<String>,
    /// Kademlia's k: how many peers hold each record.
    pub replication_factor: usize,
    /// A `get` stops after this many peers (counting ourselves) answered
    /// with a record, or when the lookup ends.
    pub get_quorum: usize,
    /// Longest a DHT query may run.
    pub query_timeout: Duration,
    /// How often an owner re-publishes its unexpired entries.
    pub republish_interval: Duration,
    /// How often holders re-replicate stored records (Kademlia's job).
    pub replication_interval: Option<Duration>,
    /// How often expired entries are evicted from the local store.
    pub eviction_interval: Duration,
    /// Largest RPC frame (request, response or session frame).
    pub max_frame_bytes: usize,
    /// Largest encoded dictionary stored or sent.
    pub max_record_bytes: usize,
    /// Most inbound validations and RPCs handled at once; beyond it new
    /// work is dropped (inbound puts) or refused (RPC: "overloaded").
    pub max_inbound_work: usize,
    /// Capacity of the command and event channels.
    pub channel_capacity: usize,
    /// Offer a bounded circuit relay to nodes behind NAT, once this node
    /// is known to be reachable (see [`crate::nat`]).
    pub relay_service: bool,
}

impl Config {
    /// A configuration with the defaults (listening on no address).
    pub fn new(
        keypair: Keypair,
        subnet_id: u32,
        genesis: H256,
        schemas: SchemaRegistry,
        phase: Arc<dyn PhaseClock>,
        stake: Arc<dyn StakeOracle>,
    ) -> Config {
        Config {
            keypair,
            subnet_id,
            genesis,
            listen: Vec::new(),
            announce: Vec::new(),
            bootstrap: Vec::new(),
            schemas,
            phase,
            stake,
            writes_per_epoch: 64,
            admission: Admission::StakedOnly,
            rpc_handler: None,
            session_methods: Vec::new(),
            replication_factor: 20,
            get_quorum: 3,
            query_timeout: Duration::from_secs(10),
            republish_interval: Duration::from_secs(60),
            replication_interval: Some(Duration::from_secs(300)),
            eviction_interval: Duration::from_secs(1),
            max_frame_bytes: 8 << 20,
            max_record_bytes: 1 << 20,
            max_inbound_work: 256,
            channel_capacity: 64,
            relay_service: true,
        }
    }

    /// The Kademlia protocol of the subnet: `/hypertensor/<subnet>/kad/1.0.0`.
    pub fn kad_protocol(&self) -> String {
        format!("/hypertensor/{}/kad/1.0.0", self.subnet_id)
    }

    /// The unary RPC protocol: `/hypertensor/<subnet>/rpc/1.0.0`.
    pub fn rpc_protocol(&self) -> String {
        format!("/hypertensor/{}/rpc/1.0.0", self.subnet_id)
    }

    /// The session protocol: `/hypertensor/<subnet>/session/1.0.0`.
    pub fn session_protocol(&self) -> String {
        format!("/hypertensor/{}/session/1.0.0", self.subnet_id)
    }
}

/// Reads an identity from a key file in libp2p's protobuf encoding (what
/// `hypertensor keygen` writes).
pub fn load_identity(path: &Path) -> Result<Keypair> {
    let bytes = std::fs::read(path)?;
    Ok(Keypair::from_protobuf_encoding(&bytes)?)
}

/// The libp2p identity of a keypair (same key, libp2p's types).
pub fn libp2p_identity(keypair: &Keypair) -> Result<libp2p::identity::Keypair> {
    libp2p::identity::Keypair::from_protobuf_encoding(&keypair.to_protobuf_encoding()).map_err(
        |e| crate::P2pError::Malformed {
            what: "libp2p identity",
            reason: e.to_string(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_give_the_same_identity_to_libp2p_and_to_signing() {
        let key = Keypair::dev("alice");
        let path = std::env::temp_dir().join(format!("p2p-key-{}.bin", std::process::id()));
        std::fs::write(&path, key.to_protobuf_encoding()).unwrap();
        let loaded = load_identity(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let libp2p = libp2p_identity(&loaded).unwrap();
        assert_eq!(
            libp2p.public().to_peer_id(),
            crate::record::peer_id_of(&key)
        );
        assert_eq!(
            libp2p.public().to_peer_id().to_string(),
            key.peer_id().to_string()
        );
        assert!(load_identity(Path::new("/nonexistent/key")).is_err());
    }
}
