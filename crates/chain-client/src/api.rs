//! The JSON-RPC interface of a chain node: method names, parameters,
//! results and error codes.
//!
//! Parameters are **positional** (a JSON array); trailing optional
//! parameters may be left out or given as `null`.
//!
//! | method | params | result |
//! |---|---|---|
//! | `author_submitExtrinsic` | `[extrinsic]` | [`SubmitResult`] |
//! | `chain_getHeader` | `[block?]` | [`HeaderInfo`] or `null` |
//! | `chain_getBlock` | `[block?]` | [`BlockInfo`] or `null` |
//! | `chain_getEvents` | `[block?]` | `[EventRecord]` or `null` |
//! | `chain_subscribeNewHeads` | `[]` | subscription id (WebSocket only) |
//! | `chain_unsubscribeNewHeads` | `[id]` | `bool` |
//! | `state_getAccount` | `[account]` | [`AccountInfo`] |
//! | `state_getTotals` | `[]` | `Totals` (issuance, free, staked, unbonding, vault, treasury) |
//! | `network_getSubnet` | `[subnet]` | `Subnet` or `null` |
//! | `network_getSubnetNodes` | `[subnet]` | `[SubnetNode]` |
//! | `network_proofOfStake` | `[subnet, peer_id, min_class]` | `bool` |
//! | `network_getElectedValidator` | `[subnet, epoch?]` | `SubnetNode` or `null` |
//! | `network_getConsensusData` | `[subnet, epoch?]` | `EpochConsensus` or `null` |
//! | `network_getEpochInfo` | `[]` | `EpochInfo` |
//! | `system_parameters` | `[]` | `Params` |
//! | `system_health` | `[]` | [`Health`] |
//!
//! `block` is a height (number) or a block hash (`"0x.."`); left out, the
//! best block. `epoch` left out means the current epoch. New heads arrive as
//! notifications `{"jsonrpc":"2.0","method":"chain_newHead","params":
//! {"subscription":id,"result":HeaderInfo}}`.
//!
//! Errors: the JSON-RPC 2.0 codes for protocol faults, and the codes in
//! [`codes`] for refused extrinsics and limits. `data` carries the
//! runtime's named error (externally tagged JSON, e.g.
//! `{"stale_nonce":{"expected":3,"got":1}}`) where there is one.

use std::fmt;

use hypertensor_primitives::{AccountId, Balance, H256};
use hypertensor_runtime::{Block, BlockNumber, EventRecord, Header, UnbondingEntry};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Method names, exactly as on the wire.
pub mod methods {
    /// Submit a signed extrinsic to the pool.
    pub const SUBMIT_EXTRINSIC: &str = "author_submitExtrinsic";
    /// A block header.
    pub const GET_HEADER: &str = "chain_getHeader";
    /// A block.
    pub const GET_BLOCK: &str = "chain_getBlock";
    /// A block's events.
    pub const GET_EVENTS: &str = "chain_getEvents";
    /// Subscribe to new best headers (WebSocket only).
    pub const SUBSCRIBE_NEW_HEADS: &str = "chain_subscribeNewHeads";
    /// End a new-heads subscription.
    pub const UNSUBSCRIBE_NEW_HEADS: &str = "chain_unsubscribeNewHeads";
    /// Notification method of new heads.
    pub const NEW_HEAD_NOTIFICATION: &str = "chain_newHead";
    /// An account.
    pub const GET_ACCOUNT: &str = "state_getAccount";
    /// Issuance and where it is.
    pub const GET_TOTALS: &str = "state_getTotals";
    /// A subnet.
    pub const GET_SUBNET: &str = "network_getSubnet";
    /// A subnet's nodes.
    pub const GET_SUBNET_NODES: &str = "network_getSubnetNodes";
    /// Whether a peer id is staked in a subnet with at least a class.
    pub const PROOF_OF_STAKE: &str = "network_proofOfStake";
    /// The elected validator of a subnet's epoch.
    pub const GET_ELECTED_VALIDATOR: &str = "network_getElectedValidator";
    /// Consensus data of a subnet's epoch.
    pub const GET_CONSENSUS_DATA: &str = "network_getConsensusData";
    /// Epoch, progress and block time.
    pub const GET_EPOCH_INFO: &str = "network_getEpochInfo";
    /// Chain parameters.
    pub const PARAMETERS: &str = "system_parameters";
    /// Node health.
    pub const HEALTH: &str = "system_health";
    /// Conflicting votes this node has seen (newest last).
    pub const GET_EVIDENCE: &str = "chain_getEvidence";
    /// The finalization certificate of a recent block, by hash (hex of
    /// commonware's encoding; null when this node has none for it).
    pub const GET_FINALIZATION: &str = "chain_getFinalization";
}

/// Stable error codes.
pub mod codes {
    /// The request is not valid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a valid JSON-RPC 2.0 request (or the batch is empty
    /// or too long, or the request is too large).
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Parameters missing or of the wrong type.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The node failed; details are in its log.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The request body is larger than the node accepts.
    pub const REQUEST_TOO_LARGE: i64 = -32001;
    /// Too many requests from this address; retry later.
    pub const RATE_LIMITED: i64 = -32002;
    /// Subscriptions need a WebSocket connection.
    pub const SUBSCRIPTION_NEEDS_WEBSOCKET: i64 = -32003;
    /// The extrinsic's signature is not valid for this network (wrong key,
    /// tampered payload, or signed for another genesis hash).
    pub const BAD_SIGNATURE: i64 = 1001;
    /// The nonce was already used.
    pub const STALE_NONCE: i64 = 1002;
    /// The nonce is further ahead than the pool holds.
    pub const FUTURE_NONCE: i64 = 1003;
    /// The free balance cannot pay the fee.
    pub const CANNOT_PAY_FEE: i64 = 1004;
    /// The free balance cannot pay the fee plus what the call moves.
    pub const INSUFFICIENT_BALANCE: i64 = 1005;
    /// A check of the call's arguments failed (the runtime error is in
    /// `data`).
    pub const INVALID_CALL: i64 = 1006;
    /// The same extrinsic is already in the pool.
    pub const ALREADY_IN_POOL: i64 = 1007;
    /// Another extrinsic with this signer and nonce is already in the pool.
    pub const NONCE_IN_POOL: i64 = 1008;
    /// The pool is full; retry later.
    pub const POOL_FULL: i64 = 1009;
    /// The sender has its maximum of pending extrinsics; wait for some to
    /// be included.
    pub const SENDER_LIMIT: i64 = 1010;
}

/// A JSON-RPC error object.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
#[error("RPC error {code}: {message}")]
pub struct RpcError {
    /// One of [`codes`].
    pub code: i64,
    /// Readable message naming what was wrong.
    pub message: String,
    /// Machine-readable details (the runtime's named error), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

impl RpcError {
    /// An error without data.
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The runtime error carried in `data`, if any.
    pub fn runtime_error(&self) -> Option<hypertensor_runtime::Error> {
        serde_json::from_str(self.data.as_ref()?.get()).ok()
    }
}

/// A block by height or hash. JSON: a number or a `"0x.."` string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockId {
    /// By height.
    Height(BlockNumber),
    /// By hash.
    Hash(H256),
}

impl Serialize for BlockId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BlockId::Height(h) => s.serialize_u64(*h),
            BlockId::Hash(h) => h.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for BlockId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BlockId, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = BlockId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a block height (number) or a block hash (\"0x\" + 64 hex digits)")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<BlockId, E> {
                Ok(BlockId::Height(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BlockId, E> {
                v.parse().map(BlockId::Hash).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockId::Height(h) => write!(f, "#{h}"),
            BlockId::Hash(h) => write!(f, "{h}"),
        }
    }
}

/// A header with its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderInfo {
    /// The block hash.
    pub hash: H256,
    /// The header.
    pub header: Header,
}

/// A block with its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    /// The block hash.
    pub hash: H256,
    /// The block.
    pub block: Block,
}

/// An account as the node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    /// The account.
    pub account: AccountId,
    /// Free balance (base units).
    pub free: Balance,
    /// Nonce in the best state.
    pub nonce: u64,
    /// Nonce the account's next extrinsic should carry, counting the
    /// extrinsics waiting in the pool.
    pub next_nonce: u64,
    /// Stake on its way back.
    pub unbonding: Vec<UnbondingEntry>,
}

/// What `author_submitExtrinsic` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResult {
    /// The extrinsic's hash.
    pub hash: H256,
    /// Whether it can go into the next block (false: it waits for lower
    /// nonces).
    pub ready: bool,
}

/// What `system_health` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Height of the best block.
    pub height: BlockNumber,
    /// Its hash.
    pub best_hash: H256,
    /// The network's genesis hash (bound into every signature).
    pub genesis_hash: H256,
    /// Extrinsics waiting in the pool.
    pub pending_extrinsics: u64,
    /// Whether this node is a validator (it votes on every block).
    pub producing: bool,
    /// Highest height consensus has finalized; `height` (what this node
    /// has committed and serves) trails it by the finality lag.
    #[serde(default)]
    pub finalized_tip: BlockNumber,
    /// Number of chain validators (the genesis set).
    #[serde(default)]
    pub validators: u32,
}

/// A record of one validator's conflicting votes (`chain_getEvidence`):
/// both signed messages in commonware's encoding, verifiable by anyone
/// holding the genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceInfo {
    /// `conflicting_notarize`, `conflicting_finalize` or `nullify_finalize`.
    pub kind: String,
    /// The validator that signed both messages.
    pub validator: AccountId,
    /// Consensus epoch of the round.
    pub epoch: u64,
    /// View of the round.
    pub view: u64,
    /// Both signed messages, hex.
    pub encoded: String,
}

/// Where an extrinsic was included and what it did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inclusion {
    /// The extrinsic's hash.
    pub extrinsic: H256,
    /// The block's hash.
    pub block: H256,
    /// The block's height.
    pub height: BlockNumber,
    /// Its index in the block.
    pub index: u32,
    /// The events of that extrinsic (fee, call effects, success or failure).
    pub events: Vec<EventRecord>,
}

impl Inclusion {
    /// The error of the call if it failed (`ExtrinsicFailed`).
    pub fn failure(&self) -> Option<&hypertensor_runtime::Error> {
        self.events.iter().find_map(|r| match &r.event {
            hypertensor_runtime::Event::ExtrinsicFailed { error } => Some(error),
            _ => None,
        })
    }
}

/// Parses a positional parameter list into its elements (absent or `null`
/// params count as an empty list).
pub fn positional(params: Option<&RawValue>) -> Result<Vec<&RawValue>, RpcError> {
    match params {
        None => Ok(Vec::new()),
        Some(raw) if raw.get().trim() == "null" => Ok(Vec::new()),
        Some(raw) => serde_json::from_str::<Vec<&RawValue>>(raw.get()).map_err(|_| {
            RpcError::new(
                codes::INVALID_PARAMS,
                "params must be a JSON array of positional parameters",
            )
        }),
    }
}

/// The required parameter at `index`, named `name` in errors.
pub fn required<'a, T: Deserialize<'a>>(
    params: &[&'a RawValue],
    index: usize,
    name: &str,
) -> Result<T, RpcError> {
    match optional(params, index, name)? {
        Some(value) => Ok(value),
        None => Err(RpcError::new(
            codes::INVALID_PARAMS,
            format!("missing parameter {index} ({name})"),
        )),
    }
}

/// The optional parameter at `index` (absent or `null` is `None`).
pub fn optional<'a, T: Deserialize<'a>>(
    params: &[&'a RawValue],
    index: usize,
    name: &str,
) -> Result<Option<T>, RpcError> {
    match params.get(index) {
        None => Ok(None),
        Some(raw) if raw.get().trim() == "null" => Ok(None),
        Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|e| {
            RpcError::new(
                codes::INVALID_PARAMS,
                format!("parameter {index} ({name}) is invalid: {e}"),
            )
        }),
    }
}

/// Wraps a serialization failure of our own data (a bug) as a JSON error.
pub fn to_raw<T: Serialize>(value: &T) -> Result<Box<RawValue>, RpcError> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| RpcError::new(codes::INTERNAL_ERROR, format!("cannot encode result: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_id_reads_numbers_and_hashes_and_names_bad_input() {
        assert_eq!(
            serde_json::from_str::<BlockId>("7").unwrap(),
            BlockId::Height(7)
        );
        let hash = format!("\"0x{}\"", "ab".repeat(32));
        assert!(matches!(
            serde_json::from_str::<BlockId>(&hash).unwrap(),
            BlockId::Hash(_)
        ));
        assert!(serde_json::from_str::<BlockId>("\"0x12\"").is_err());
        assert!(serde_json::from_str::<BlockId>("-1").is_err());
    }

    #[test]
    fn positional_params_name_the_bad_parameter() {
        let raw = RawValue::from_string("[1, \"x\"]".to_string()).unwrap();
        let params = positional(Some(&raw)).unwrap();
        assert_eq!(required::<u32>(&params, 0, "subnet").unwrap(), 1);
        let err = required::<u32>(&params, 1, "epoch").unwrap_err();
        assert_eq!(err.code, codes::INVALID_PARAMS);
        assert!(err.message.contains("epoch"), "{}", err.message);
        let err = required::<u32>(&params, 2, "node").unwrap_err();
        assert!(err.message.contains("missing parameter 2"));
        assert_eq!(optional::<u32>(&params, 5, "x").unwrap(), None);
        let obj = RawValue::from_string("{\"a\":1}".to_string()).unwrap();
        assert_eq!(
            positional(Some(&obj)).unwrap_err().code,
            codes::INVALID_PARAMS
        );
    }

    #[test]
    fn rpc_error_carries_the_runtime_error() {
        let data = to_raw(&hypertensor_runtime::Error::StaleNonce {
            expected: 3,
            got: 1,
        })
        .unwrap();
        let err = RpcError {
            code: codes::STALE_NONCE,
            message: "stale".into(),
            data: Some(data),
        };
        let text = serde_json::to_string(&err).unwrap();
        let back: RpcError = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back.runtime_error(),
            Some(hypertensor_runtime::Error::StaleNonce {
                expected: 3,
                got: 1
            })
        );
    }
}
