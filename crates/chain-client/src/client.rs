//! The WebSocket JSON-RPC client.
//!
//! One background task owns the socket. Calls send a command with a
//! `oneshot` for the answer over a bounded channel; the task tags each
//! request with an id and routes answers and subscription notifications.
//! When the socket closes every waiting call gets [`Error::Closed`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hypertensor_primitives::{AccountId, H256, Keypair, PeerId};
use hypertensor_runtime::{
    Call, Epoch, EpochConsensus, EpochInfo, EventRecord, Extrinsic, NodeClass, Params, Phase,
    Subnet, SubnetId, SubnetNode, Totals,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::api::{
    AccountInfo, BlockId, BlockInfo, EvidenceInfo, HeaderInfo, Health, Inclusion, RpcError,
    SubmitResult, methods,
};
use crate::{Error, Result};

/// Bound of the command channel and of each subscription's buffer.
const CHANNEL_BOUND: usize = 1024;

/// How often the client pings an otherwise quiet connection, so a node's
/// idle timeout (120 s by default) never closes a client that is in use.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// How long [`Client::submit_and_watch`] waits for inclusion by default.
const DEFAULT_INCLUSION_TIMEOUT: Duration = Duration::from_secs(60);

type Reply = oneshot::Sender<std::result::Result<String, RpcError>>;

struct Command {
    method: &'static str,
    params: String,
    reply: Reply,
    /// For subscriptions: where notifications go once subscribed.
    notifications: Option<mpsc::Sender<String>>,
}

/// A cloneable handle to a chain node's JSON-RPC over WebSocket.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    url: Arc<str>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("url", &self.url).finish()
    }
}

/// A stream of subscription notifications (new heads).
#[derive(Debug)]
pub struct Subscription<T> {
    receiver: mpsc::Receiver<String>,
    /// The node's subscription id and the way to cancel it on drop.
    id: u64,
    commands: mpsc::Sender<Command>,
    _marker: std::marker::PhantomData<fn() -> T>,
}

impl<T> Drop for Subscription<T> {
    /// Ends the subscription on the node too (best effort: if the command
    /// queue is full or closed, the connection's end cleans up instead).
    fn drop(&mut self) {
        let (reply, _) = oneshot::channel();
        let _ = self.commands.try_send(Command {
            method: methods::UNSUBSCRIBE_NEW_HEADS,
            params: format!("[{}]", self.id),
            reply,
            notifications: None,
        });
    }
}

impl<T: DeserializeOwned> Subscription<T> {
    /// The next item; `None` when the connection closed or the node dropped
    /// the subscription (a consumer too slow for its buffer).
    pub async fn next(&mut self) -> Option<Result<T>> {
        let text = self.receiver.recv().await?;
        Some(serde_json::from_str(&text).map_err(|e| Error::BadResponse {
            method: methods::NEW_HEAD_NOTIFICATION.to_string(),
            reason: e.to_string(),
        }))
    }
}

impl Client {
    /// Connects to `url` (`ws://host:port`; `http://` is accepted and
    /// means the same port over WebSocket). `url` may list several chain
    /// nodes separated by commas (`ws://a:9944,ws://b:9944`): they are
    /// tried in order and the first that answers is used, so a client
    /// fails over when a validator is down (reconnecting callers such as
    /// subnet nodes reach the next one).
    pub async fn connect(url: &str) -> Result<Client> {
        let mut last = None;
        for one in url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            match Client::connect_one(one).await {
                Ok(client) => return Ok(client),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Connect {
            url: url.to_string(),
            reason: "no URL given".to_string(),
        }))
    }

    async fn connect_one(url: &str) -> Result<Client> {
        let ws_url = if let Some(rest) = url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            url.to_string()
        };
        let (socket, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .map_err(|e| connect_error(url, e))?;
        let (commands, receiver) = mpsc::channel(CHANNEL_BOUND);
        tokio::spawn(run_connection(socket, receiver));
        Ok(Client {
            commands,
            url: url.into(),
        })
    }

    /// The finalization certificate of block `hash` (hex), if this node
    /// kept it (validators keep the last 1024).
    pub async fn finalization(&self, hash: H256) -> Result<Option<String>> {
        self.call(methods::GET_FINALIZATION, params(&[&to_json(&hash)]))
            .await
    }

    /// Conflicting votes by chain validators that this node has seen.
    pub async fn evidence(&self) -> Result<Vec<EvidenceInfo>> {
        self.call(methods::GET_EVIDENCE, "[]".into()).await
    }

    /// Calls `method` with positional `params` (a JSON array's text) and
    /// returns the raw JSON text of the result.
    pub async fn request_raw(&self, method: &'static str, params: String) -> Result<String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command {
                method,
                params,
                reply,
                notifications: None,
            })
            .await
            .map_err(|_| Error::Closed)?;
        Ok(answer.await.map_err(|_| Error::Closed)??)
    }

    async fn call<T: DeserializeOwned>(&self, method: &'static str, params: String) -> Result<T> {
        let text = self.request_raw(method, params).await?;
        serde_json::from_str(&text).map_err(|e| Error::BadResponse {
            method: method.to_string(),
            reason: e.to_string(),
        })
    }

    /// Submits a signed extrinsic to the node's pool.
    pub async fn submit_extrinsic(&self, xt: &Extrinsic) -> Result<SubmitResult> {
        self.call(methods::SUBMIT_EXTRINSIC, params(&[&to_json(xt)]))
            .await
    }

    /// A header (best block if `block` is `None`).
    pub async fn header(&self, block: Option<BlockId>) -> Result<Option<HeaderInfo>> {
        self.call(methods::GET_HEADER, params(&[&to_json(&block)]))
            .await
    }

    /// A block (best block if `block` is `None`).
    pub async fn block(&self, block: Option<BlockId>) -> Result<Option<BlockInfo>> {
        self.call(methods::GET_BLOCK, params(&[&to_json(&block)]))
            .await
    }

    /// A block's events (best block if `block` is `None`).
    pub async fn events(&self, block: Option<BlockId>) -> Result<Option<Vec<EventRecord>>> {
        self.call(methods::GET_EVENTS, params(&[&to_json(&block)]))
            .await
    }

    /// Subscribes to new best headers.
    pub async fn subscribe_new_heads(&self) -> Result<Subscription<HeaderInfo>> {
        let (reply, answer) = oneshot::channel();
        let (sender, receiver) = mpsc::channel(CHANNEL_BOUND);
        self.commands
            .send(Command {
                method: methods::SUBSCRIBE_NEW_HEADS,
                params: "[]".to_string(),
                reply,
                notifications: Some(sender),
            })
            .await
            .map_err(|_| Error::Closed)?;
        let text = answer.await.map_err(|_| Error::Closed)??;
        let id = serde_json::from_str(&text).map_err(|e| Error::BadResponse {
            method: methods::SUBSCRIBE_NEW_HEADS.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Subscription {
            receiver,
            id,
            commands: self.commands.clone(),
            _marker: std::marker::PhantomData,
        })
    }

    /// An account's balance, nonces and unbonding entries.
    pub async fn account(&self, account: &AccountId) -> Result<AccountInfo> {
        self.call(methods::GET_ACCOUNT, params(&[&to_json(account)]))
            .await
    }

    /// Issuance and where it is.
    pub async fn totals(&self) -> Result<Totals> {
        self.call(methods::GET_TOTALS, "[]".into()).await
    }

    /// A subnet.
    pub async fn subnet(&self, subnet: SubnetId) -> Result<Option<Subnet>> {
        self.call(methods::GET_SUBNET, params(&[&to_json(&subnet)]))
            .await
    }

    /// A subnet's nodes, by id.
    pub async fn subnet_nodes(&self, subnet: SubnetId) -> Result<Vec<SubnetNode>> {
        self.call(methods::GET_SUBNET_NODES, params(&[&to_json(&subnet)]))
            .await
    }

    /// Whether `peer_id` is a node (or client peer id) of `subnet` with at
    /// least `min_class`.
    pub async fn proof_of_stake(
        &self,
        subnet: SubnetId,
        peer_id: &PeerId,
        min_class: NodeClass,
    ) -> Result<bool> {
        let p = params(&[&to_json(&subnet), &to_json(peer_id), &to_json(&min_class)]);
        self.call(methods::PROOF_OF_STAKE, p).await
    }

    /// The elected validator of `subnet` in `epoch` (current if `None`).
    pub async fn elected_validator(
        &self,
        subnet: SubnetId,
        epoch: Option<Epoch>,
    ) -> Result<Option<SubnetNode>> {
        let p = params(&[&to_json(&subnet), &to_json(&epoch)]);
        self.call(methods::GET_ELECTED_VALIDATOR, p).await
    }

    /// Consensus data of `subnet` in `epoch` (current if `None`).
    pub async fn consensus_data(
        &self,
        subnet: SubnetId,
        epoch: Option<Epoch>,
    ) -> Result<Option<EpochConsensus>> {
        let p = params(&[&to_json(&subnet), &to_json(&epoch)]);
        self.call(methods::GET_CONSENSUS_DATA, p).await
    }

    /// Epoch, progress and block time.
    pub async fn epoch_info(&self) -> Result<EpochInfo> {
        self.call(methods::GET_EPOCH_INFO, "[]".into()).await
    }

    /// The chain parameters.
    pub async fn parameters(&self) -> Result<Params> {
        self.call(methods::PARAMETERS, "[]".into()).await
    }

    /// The node's health.
    pub async fn health(&self) -> Result<Health> {
        self.call(methods::HEALTH, "[]".into()).await
    }

    /// Signs `call` with `key` at the account's next nonce (pool included)
    /// for the node's network, and submits it.
    pub async fn sign_and_submit(&self, key: &Keypair, call: Call) -> Result<Extrinsic> {
        let genesis = self.health().await?.genesis_hash;
        let nonce = self.account(&key.account_id()).await?.next_nonce;
        let xt = Extrinsic::sign(key, nonce, call, &genesis);
        self.submit_extrinsic(&xt).await?;
        Ok(xt)
    }

    /// Signs and submits `call`, then waits until it is in a block.
    pub async fn sign_and_watch(&self, key: &Keypair, call: Call) -> Result<Inclusion> {
        let genesis = self.health().await?.genesis_hash;
        let nonce = self.account(&key.account_id()).await?.next_nonce;
        let xt = Extrinsic::sign(key, nonce, call, &genesis);
        self.submit_and_watch(&xt, DEFAULT_INCLUSION_TIMEOUT).await
    }

    /// Submits `xt` and waits (up to `timeout`) for the block that includes
    /// it; returns where it landed and its events.
    pub async fn submit_and_watch(&self, xt: &Extrinsic, timeout: Duration) -> Result<Inclusion> {
        let mut heads = self.subscribe_new_heads().await?;
        let submitted = self.submit_extrinsic(xt).await?;
        let wait = async {
            while let Some(head) = heads.next().await {
                let head = head?;
                let block = BlockId::Hash(head.hash);
                if let Some(found) = self.find_in_block(block, submitted.hash).await? {
                    return Ok(found);
                }
            }
            Err(Error::Closed)
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("extrinsic {} to be included", submitted.hash),
                seconds: timeout.as_secs(),
            })?
    }

    /// Looks for extrinsic `hash` in block `block` (by hash or height);
    /// `None` when the block does not hold it or does not exist yet.
    pub async fn find_in_block(&self, block: BlockId, hash: H256) -> Result<Option<Inclusion>> {
        let Some(info) = self.block(Some(block)).await? else {
            return Ok(None);
        };
        let block = info.hash;
        let Some(index) = info.block.extrinsics.iter().position(|x| x.hash() == hash) else {
            return Ok(None);
        };
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let events = self
            .events(Some(BlockId::Hash(block)))
            .await?
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.phase == Phase::Extrinsic(index))
            .collect();
        Ok(Some(Inclusion {
            extrinsic: hash,
            block,
            height: info.block.header.height,
            index,
            events,
        }))
    }
}

/// A refusal by a node (an HTTP answer instead of the upgrade) is not a
/// missing node: it says so, with the node's reason.
fn connect_error(url: &str, error: tokio_tungstenite::tungstenite::Error) -> Error {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match error {
        WsError::Http(response) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            #[derive(Deserialize)]
            struct Refusal {
                error: RpcError,
            }
            let reason = match serde_json::from_str::<Refusal>(&body) {
                Ok(r) => r.error.message,
                Err(_) if !body.trim().is_empty() => body.trim().chars().take(200).collect(),
                Err(_) => response
                    .status()
                    .canonical_reason()
                    .unwrap_or("no reason given")
                    .to_string(),
            };
            Error::Refused {
                url: url.to_string(),
                status,
                reason,
            }
        }
        other => Error::Connect {
            url: url.to_string(),
            reason: other.to_string(),
        },
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Our own types always serialize (no maps with non-string keys).
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

fn params(items: &[&str]) -> String {
    format!("[{}]", items.join(","))
}

/// An incoming frame: an answer (id) or a notification (method).
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<RpcError>,
    #[serde(default, borrow)]
    params: Option<NotificationParams<'a>>,
}

#[derive(Deserialize)]
struct NotificationParams<'a> {
    subscription: u64,
    #[serde(borrow)]
    result: &'a RawValue,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Pending {
    reply: Reply,
    notifications: Option<mpsc::Sender<String>>,
}

/// The task owning the socket. Ends when the socket closes or every client
/// handle is dropped.
async fn run_connection(socket: Socket, mut commands: mpsc::Receiver<Command>) {
    let (mut sink, mut stream) = socket.split();
    let next_id = AtomicU64::new(1);
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut subscriptions: HashMap<u64, mpsc::Sender<String>> = HashMap::new();
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    loop {
        tokio::select! {
            _ = keepalive.tick() => {
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            command = commands.recv() => {
                let Some(command) = command else { break };
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                let text = format!(
                    "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"{}\",\"params\":{}}}",
                    command.method, command.params
                );
                if sink.send(Message::text(text)).await.is_err() {
                    let _ = command.reply.send(Err(closed_error()));
                    break;
                }
                pending.insert(id, Pending { reply: command.reply, notifications: command.notifications });
            }
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Binary(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                route(text.as_str(), &mut pending, &mut subscriptions);
            }
        }
    }
    for (_, p) in pending {
        let _ = p.reply.send(Err(closed_error()));
    }
}

fn closed_error() -> RpcError {
    RpcError::new(crate::api::codes::INTERNAL_ERROR, "connection closed")
}

fn route(
    text: &str,
    pending: &mut HashMap<u64, Pending>,
    subscriptions: &mut HashMap<u64, mpsc::Sender<String>>,
) {
    let Ok(frame) = serde_json::from_str::<Incoming<'_>>(text) else {
        tracing_free_warn(text);
        return;
    };
    if let Some(params) = frame.params {
        if let Some(sender) = subscriptions.get(&params.subscription)
            && sender.try_send(params.result.get().to_string()).is_err()
        {
            // Consumer gone or too slow: end the subscription locally.
            subscriptions.remove(&params.subscription);
        }
        return;
    }
    let Some(id) = frame.id else { return };
    let Some(p) = pending.remove(&id) else { return };
    let answer = match (frame.result, frame.error) {
        (_, Some(error)) => Err(error),
        (Some(result), None) => {
            if let Some(sender) = p.notifications
                && let Ok(sub) = serde_json::from_str::<u64>(result.get())
            {
                subscriptions.insert(sub, sender);
            }
            Ok(result.get().to_string())
        }
        (None, None) => Ok("null".to_string()),
    };
    let _ = p.reply.send(answer);
}

/// Frames that are not JSON-RPC are ignored (the node never sends them).
fn tracing_free_warn(_text: &str) {}
