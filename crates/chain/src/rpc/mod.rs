//! The JSON-RPC 2.0 server: HTTP `POST /` and WebSocket `GET /` on one
//! port (axum).
//!
//! * Requests are parsed from raw text; parameters and results never pass
//!   through `serde_json::Value`, so `u128` balances stay exact.
//! * Errors map to the wire in one place ([`pool_error`]): the caller's
//!   faults get their code and reason; our own failures are logged and
//!   answered with a generic internal error.
//! * Bounds: connections in total and per client IP ([`serve`]), request
//!   heads and bodies read under timeouts, a declared body beyond the
//!   limit refused before it is read, request body / WebSocket message
//!   size, batch length, a token bucket per client IP (a batch takes one
//!   token per call), subscriptions per connection, and WebSocket
//!   connections without a subscription closed after an idle timeout. A
//!   slow subscriber whose buffer fills is disconnected rather than
//!   buffered without bound.
//! * JSON-RPC 2.0 exactly: `"id": null` is a request (answered with
//!   `"id": null`), only a missing id makes a notification; strings are
//!   compared decoded (`"2\u002e0"` is `"2.0"`); extra positional
//!   parameters and unknown fields of an extrinsic are invalid params.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Extension, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::{SinkExt, StreamExt};
use hypertensor_chain_client::api::{
    BlockId, codes, methods, optional, positional, required, to_raw,
};
use hypertensor_chain_client::{
    AccountInfo, BlockInfo, HeaderInfo, Health, RpcError, SubmitResult,
};
use hypertensor_http::client_key;
use hypertensor_http::observe::{MetricsRegistry, ReadyCheck};
use hypertensor_primitives::{AccountId, H256, PeerId, Signature};
use hypertensor_runtime::{Call, Epoch, Extrinsic, NodeClass, SubnetId};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};

use crate::metrics::READY_LAG;
use crate::node::Shared;
use crate::pool::{Pool, PoolError};
use crate::{Error, Result};

/// Outgoing messages buffered per WebSocket connection.
const OUTGOING_BOUND: usize = 1024;
/// Longest a WebSocket write may take before the connection is dropped.
const WS_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

type App = Arc<Shared>;
type RpcResult = std::result::Result<Box<RawValue>, RpcError>;

/// Serves until `stop` turns true.
pub(crate) async fn serve(
    shared: App,
    listener: tokio::net::TcpListener,
    metrics: MetricsRegistry,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let limits = shared.limits.clone();
    let ready = ready_check(Arc::downgrade(&shared));
    let app = Router::new()
        .route("/", post(http_handler).get(ws_handler))
        .with_state(shared)
        .merge(hypertensor_http::observe::routes(metrics, ready));
    let connections = hypertensor_http::ConnectionLimits {
        max_connections: limits.max_connections,
        max_per_address: limits.max_connections_per_ip,
        header_timeout: limits.header_timeout,
    };
    let mut stop = stop;
    let stopped = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    hypertensor_http::serve(listener, app, connections, refusal_body, stopped)
        .await
        .map_err(|e| Error::io("RPC server failed", e))
}

/// Ready when the committed state is within [`READY_LAG`] blocks of
/// what consensus has finalized: the node answers with current state.
fn ready_check(shared: std::sync::Weak<crate::node::Shared>) -> ReadyCheck {
    Arc::new(move || {
        let shared = shared.clone();
        Box::pin(async move {
            let shared = shared.upgrade().ok_or("the node is stopping")?;
            let height = shared.state().height();
            let finalized = shared
                .finalized_tip
                .load(std::sync::atomic::Ordering::Relaxed);
            if finalized >= height + READY_LAG {
                return Err(format!(
                    "catching up: committed height {height}, finalized {finalized}"
                ));
            }
            Ok(())
        })
    })
}

/// A refused connection's answer: a JSON-RPC error with a null id.
fn refusal_body(refusal: &hypertensor_http::Refusal) -> String {
    let code = if refusal.status.as_u16() == 429 {
        codes::RATE_LIMITED
    } else {
        codes::INTERNAL_ERROR
    };
    error_response("null", &RpcError::new(code, refusal.reason.clone()))
}

/// A token bucket per client address.
pub(crate) struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

/// Most addresses tracked; beyond it, full buckets are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

impl RateLimiter {
    pub(crate) fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `n` tokens for `ip`; false if there are not enough.
    pub(crate) fn allow(&self, ip: IpAddr, n: usize) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_ADDRESSES && !buckets.contains_key(&ip) {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, (tokens, last)| {
                *tokens + now.duration_since(*last).as_secs_f64() * per_second < burst
            });
        }
        let (tokens, last) = buckets.entry(ip).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        let cost = n as f64;
        if *tokens >= cost {
            *tokens -= cost;
            true
        } else {
            false
        }
    }
}

pub(crate) fn error_response(id: &str, error: &RpcError) -> String {
    let error = serde_json::to_string(error).unwrap_or_else(|_| {
        format!(
            "{{\"code\":{},\"message\":\"error\"}}",
            codes::INTERNAL_ERROR
        )
    });
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"error\":{error}}}")
}

fn result_response(id: &str, result: &RawValue) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{}}}",
        result.get()
    )
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn http_handler(
    AxumState(app): AxumState<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let limit = app.limits.max_request_bytes;
    let too_large = || {
        let error = RpcError::new(
            codes::REQUEST_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        );
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            error_response("null", &error),
        )
    };
    // A declared length beyond the limit is refused before any of the
    // body is read (or waited for).
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let read = tokio::time::timeout(app.limits.body_timeout, axum::body::to_bytes(body, limit));
    let bytes = match read.await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            let error = RpcError::new(
                codes::INVALID_REQUEST,
                format!(
                    "the request body did not arrive within {} ms",
                    app.limits.body_timeout.as_millis()
                ),
            );
            return json_response(StatusCode::REQUEST_TIMEOUT, error_response("null", &error));
        }
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        if !app.rate.allow(client_key(peer.ip()), 1) {
            return json_response(
                StatusCode::TOO_MANY_REQUESTS,
                error_response("null", &rate_error()),
            );
        }
        let error = RpcError::new(codes::PARSE_ERROR, "request is not UTF-8 text");
        return json_response(StatusCode::OK, error_response("null", &error));
    };
    match handle_text(&app, client_key(peer.ip()), text, None).await {
        Answer::Reply(body) => json_response(StatusCode::OK, body),
        Answer::Nothing => StatusCode::NO_CONTENT.into_response(),
        Answer::RateLimited(body) => json_response(StatusCode::TOO_MANY_REQUESTS, body),
    }
}

fn rate_error() -> RpcError {
    RpcError::new(
        codes::RATE_LIMITED,
        "too many requests from this address; retry later",
    )
}

async fn ws_handler(
    AxumState(app): AxumState<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Extension(admitted): Extension<Arc<hypertensor_http::Admitted>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Ok(permit) = Arc::clone(&app.connections).try_acquire_owned() else {
        let error = RpcError::new(
            codes::INTERNAL_ERROR,
            format!(
                "the node has {} WebSocket connections open, its limit; retry later",
                app.limits.max_connections
            ),
        );
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            error_response("null", &error),
        );
    };
    let limit = app.limits.max_request_bytes;
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            ws_connection(app, socket, peer).await;
            drop(permit);
            drop(admitted);
        })
}

/// Per-connection context for subscriptions.
struct Connection {
    outgoing: mpsc::Sender<String>,
    subscriptions: HashMap<u64, tokio::task::JoinHandle<()>>,
    next_subscription: u64,
}

async fn ws_connection(app: App, socket: WebSocket, peer: SocketAddr) {
    let (mut sink, mut stream) = socket.split();
    let (outgoing, mut queue) = mpsc::channel::<String>(OUTGOING_BOUND);
    // A client that stops reading must not hold its slot forever: a
    // write that does not finish in time ends the connection.
    let writer = tokio::spawn(async move {
        while let Some(text) = queue.recv().await {
            match tokio::time::timeout(WS_WRITE_TIMEOUT, sink.send(Message::text(text))).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        let _ = tokio::time::timeout(WS_WRITE_TIMEOUT, sink.close()).await;
    });
    let mut conn = Connection {
        outgoing,
        subscriptions: HashMap::new(),
        next_subscription: 1,
    };
    let mut stopping = app.stopping.clone();
    let idle = app.limits.ws_idle_timeout;
    let mut deadline = tokio::time::Instant::now() + idle;
    loop {
        let message = tokio::select! {
            message = stream.next() => match message {
                Some(Ok(message)) => message,
                _ => break,
            },
            _ = stopping.changed() => break,
            () = tokio::time::sleep_until(deadline) => {
                // A subscription whose task ended (its subscriber fell
                // behind) no longer keeps the connection.
                conn.subscriptions.retain(|_, task| !task.is_finished());
                if conn.subscriptions.is_empty() {
                    tracing::debug!(%peer, "closing a WebSocket connection idle without a subscription");
                    break;
                }
                deadline = tokio::time::Instant::now() + idle;
                continue;
            }
        };
        // Any frame (pings too) shows the client is there: our client
        // pings every 30 s so that a connection it keeps for lookups is
        // not cut; a socket nobody holds is freed, and one address can
        // hold at most its per-address cap of connections however it
        // pings.
        deadline = tokio::time::Instant::now() + idle;
        let reply = match message {
            Message::Text(text) => {
                match handle_text(&app, client_key(peer.ip()), text.as_str(), Some(&mut conn)).await
                {
                    Answer::Reply(reply) | Answer::RateLimited(reply) => Some(reply),
                    Answer::Nothing => None,
                }
            }
            Message::Binary(_) if !app.rate.allow(client_key(peer.ip()), 1) => {
                Some(error_response("null", &rate_error()))
            }
            Message::Binary(_) => Some(error_response(
                "null",
                &RpcError::new(
                    codes::INVALID_REQUEST,
                    "binary messages are not supported; send JSON text",
                ),
            )),
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => None,
        };
        if let Some(reply) = reply
            && conn.outgoing.send(reply).await.is_err()
        {
            break;
        }
    }
    for (_, task) in conn.subscriptions.drain() {
        task.abort();
    }
    drop(conn);
    let _ = writer.await;
}

/// One JSON-RPC request object. Strings are decoded (`String`, not a
/// borrowed `&str`), so escapes compare by meaning.
#[derive(Deserialize)]
struct Request<'a> {
    jsonrpc: Option<String>,
    /// `None`: no id member (a notification); `Some("null")`: a request
    /// whose id is null, answered.
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    method: Option<String>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
}

/// Keeps a member that is present, even as `null` (serde's `Option`
/// alone reads `null` as absent).
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// What a request text gets.
enum Answer {
    /// The answer (one object or a batch array).
    Reply(String),
    /// Notifications only: nothing to answer.
    Nothing,
    /// Over the rate limit (HTTP 429).
    RateLimited(String),
}

/// Answers a request or batch, after taking one rate-limit token per
/// call from `ip`'s bucket.
async fn handle_text(
    app: &App,
    ip: IpAddr,
    text: &str,
    mut conn: Option<&mut Connection>,
) -> Answer {
    let rate_limited = || Answer::RateLimited(error_response("null", &rate_error()));
    let Ok(raw) = serde_json::from_str::<&RawValue>(text) else {
        if !app.rate.allow(ip, 1) {
            return rate_limited();
        }
        return Answer::Reply(error_response(
            "null",
            &RpcError::new(codes::PARSE_ERROR, "request is not valid JSON"),
        ));
    };
    if raw.get().trim_start().starts_with('[') {
        let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(raw.get()) else {
            if !app.rate.allow(ip, 1) {
                return rate_limited();
            }
            return Answer::Reply(error_response(
                "null",
                &RpcError::new(codes::INVALID_REQUEST, "invalid batch"),
            ));
        };
        // Each call of a batch counts against the rate limit.
        if !app.rate.allow(ip, items.len().max(1)) {
            return rate_limited();
        }
        if items.is_empty() || items.len() > app.limits.max_batch {
            let error = RpcError::new(
                codes::INVALID_REQUEST,
                format!(
                    "a batch must hold 1 to {} requests, got {}",
                    app.limits.max_batch,
                    items.len()
                ),
            );
            return Answer::Reply(error_response("null", &error));
        }
        let mut answers = Vec::new();
        for item in items {
            if let Some(answer) = handle_one(app, item, conn.as_deref_mut()).await {
                answers.push(answer);
            }
        }
        if answers.is_empty() {
            return Answer::Nothing;
        }
        return Answer::Reply(format!("[{}]", answers.join(",")));
    }
    if !app.rate.allow(ip, 1) {
        return rate_limited();
    }
    match handle_one(app, raw, conn).await {
        Some(reply) => Answer::Reply(reply),
        None => Answer::Nothing,
    }
}

async fn handle_one(app: &App, raw: &RawValue, conn: Option<&mut Connection>) -> Option<String> {
    let request = match serde_json::from_str::<Request<'_>>(raw.get()) {
        Ok(r) => r,
        Err(e) => {
            let error = RpcError::new(
                codes::INVALID_REQUEST,
                format!("not a JSON-RPC 2.0 request: {e}"),
            );
            return Some(error_response("null", &error));
        }
    };
    let id = request.id.map_or("null", RawValue::get);
    let id_ok = request.id.is_none_or(|id| {
        let t = id.get().trim_start();
        t.starts_with('"')
            || t.starts_with('-')
            || t.starts_with(|c: char| c.is_ascii_digit())
            || t == "null"
    });
    if request.jsonrpc.as_deref() != Some("2.0") || !id_ok {
        let error = RpcError::new(
            codes::INVALID_REQUEST,
            "request must have \"jsonrpc\": \"2.0\" and a string or number id",
        );
        return Some(error_response(if id_ok { id } else { "null" }, &error));
    }
    let Some(method) = request.method else {
        return Some(error_response(
            id,
            &RpcError::new(codes::INVALID_REQUEST, "request has no method"),
        ));
    };
    let started = Instant::now();
    let result = dispatch(app, &method, request.params, conn).await;
    app.metrics
        .rpc_call(&method, arity(&method).is_some(), started.elapsed());
    request.id?;
    Some(match result {
        Ok(value) => result_response(id, &value),
        Err(error) => error_response(id, &error),
    })
}

fn internal(error: &Error) -> RpcError {
    tracing::error!(%error, "RPC request failed on the node's side");
    RpcError::new(codes::INTERNAL_ERROR, "internal error; see the node's log")
}

/// Maps a pool refusal to its stable code, with the runtime's named error
/// as `data`.
pub(crate) fn pool_error(error: &PoolError) -> RpcError {
    use hypertensor_runtime::Error as R;
    let (code, data) = match error {
        PoolError::Invalid(e) => {
            let code = match e {
                R::BadSignature => codes::BAD_SIGNATURE,
                R::StaleNonce { .. } => codes::STALE_NONCE,
                R::FutureNonce { .. } => codes::FUTURE_NONCE,
                R::CannotPayFee { .. } => codes::CANNOT_PAY_FEE,
                _ => codes::INVALID_CALL,
            };
            (code, to_raw(e).ok())
        }
        PoolError::InsufficientBalance { needed, free } => (
            codes::INSUFFICIENT_BALANCE,
            to_raw(&R::InsufficientBalance {
                needed: *needed,
                free: *free,
            })
            .ok(),
        ),
        PoolError::AlreadyInPool(_) => (codes::ALREADY_IN_POOL, None),
        PoolError::Stale { .. } => (codes::INTERNAL_ERROR, None),
        PoolError::NonceInPool { .. } => (codes::NONCE_IN_POOL, None),
        PoolError::Full { .. } => (codes::POOL_FULL, None),
        PoolError::SenderFull { .. } => (codes::SENDER_LIMIT, None),
        PoolError::TooManyFuture { .. } => (codes::FUTURE_NONCE, None),
        PoolError::SelfTransfer(_) => (codes::INVALID_CALL, None),
    };
    RpcError {
        code,
        message: error.to_string(),
        data,
    }
}

fn resolve_height(app: &App, block: Option<BlockId>) -> std::result::Result<Option<u64>, RpcError> {
    match block {
        None => Ok(Some(app.state().height())),
        Some(BlockId::Height(h)) => Ok(Some(h)),
        Some(BlockId::Hash(hash)) => app.store.height_of(&hash).map_err(|e| internal(&e)),
    }
}

async fn dispatch(
    app: &App,
    method: &str,
    params: Option<&RawValue>,
    conn: Option<&mut Connection>,
) -> RpcResult {
    let p = positional(params)?;
    if let Some(max) = arity(method)
        && p.len() > max
    {
        return Err(RpcError::new(
            codes::INVALID_PARAMS,
            format!(
                "{method} takes at most {max} parameter{}, got {}",
                if max == 1 { "" } else { "s" },
                p.len()
            ),
        ));
    }
    match method {
        methods::SUBMIT_EXTRINSIC => {
            let xt: StrictExtrinsic = required(&p, 0, "extrinsic")?;
            let xt = xt.into_extrinsic();
            // Signature check outside the pool's lock: submissions verify
            // in parallel on the server's workers. A block that lands in
            // between makes the check stale: check again on its state.
            let mut tries = 0;
            loop {
                tries += 1;
                let checked = Pool::check(&app.state(), xt.clone()).map_err(|e| pool_error(&e))?;
                match app.pool().insert(checked) {
                    Ok((hash, ready)) => {
                        // The other validators pool it too, so the next
                        // leader includes it whoever that is.
                        if let Ok(bytes) = serde_json::to_vec(&xt) {
                            let _ = app.gossip.try_send(bytes);
                        }
                        break to_raw(&SubmitResult { hash, ready });
                    }
                    Err(PoolError::Stale { .. }) if tries < 3 => continue,
                    Err(e) => return Err(pool_error(&e)),
                }
            }
        }
        methods::GET_HEADER | methods::GET_BLOCK | methods::GET_EVENTS => {
            let block: Option<BlockId> = optional(&p, 0, "block")?;
            let Some(height) = resolve_height(app, block)? else {
                return to_raw(&());
            };
            if method == methods::GET_EVENTS {
                let events = app.store.events(height).map_err(|e| internal(&e))?;
                return to_raw(&events);
            }
            let Some(block) = app.store.block(height).map_err(|e| internal(&e))? else {
                return to_raw(&());
            };
            let hash = block.hash();
            if method == methods::GET_HEADER {
                to_raw(&HeaderInfo {
                    hash,
                    header: block.header,
                })
            } else {
                to_raw(&BlockInfo { hash, block })
            }
        }
        methods::SUBSCRIBE_NEW_HEADS => subscribe(app, conn),
        methods::UNSUBSCRIBE_NEW_HEADS => {
            let id: u64 = required(&p, 0, "subscription")?;
            let Some(conn) = conn else {
                return Err(RpcError::new(
                    codes::SUBSCRIPTION_NEEDS_WEBSOCKET,
                    "subscriptions need a WebSocket connection",
                ));
            };
            let found = conn
                .subscriptions
                .remove(&id)
                .map(|task| task.abort())
                .is_some();
            to_raw(&found)
        }
        methods::GET_ACCOUNT => {
            let account: AccountId = required(&p, 0, "account")?;
            let state = app.state();
            let info = state.account(&account);
            let next_nonce = app.pool().next_nonce(&state, &account);
            to_raw(&AccountInfo {
                account,
                free: info.free,
                nonce: info.nonce,
                next_nonce,
                unbonding: state.unbonding(&account).to_vec(),
            })
        }
        methods::GET_TOTALS => to_raw(&app.state().totals()),
        methods::GET_SUBNET => {
            let subnet: SubnetId = required(&p, 0, "subnet")?;
            to_raw(&app.state().subnet(subnet))
        }
        methods::GET_SUBNET_NODES => {
            let subnet: SubnetId = required(&p, 0, "subnet")?;
            let state = app.state();
            let nodes: Vec<_> = state.subnet_nodes(subnet).collect();
            to_raw(&nodes)
        }
        methods::PROOF_OF_STAKE => {
            let subnet: SubnetId = required(&p, 0, "subnet")?;
            let peer: PeerId = required(&p, 1, "peer_id")?;
            let class: NodeClass = required(&p, 2, "min_class")?;
            to_raw(&app.state().proof_of_stake(subnet, &peer, class))
        }
        methods::GET_ELECTED_VALIDATOR | methods::GET_CONSENSUS_DATA => {
            let subnet: SubnetId = required(&p, 0, "subnet")?;
            let state = app.state();
            let epoch: Epoch = optional(&p, 1, "epoch")?.unwrap_or_else(|| state.epoch());
            if method == methods::GET_ELECTED_VALIDATOR {
                to_raw(&state.elected_validator(subnet, epoch))
            } else {
                to_raw(&state.consensus_data(subnet, epoch))
            }
        }
        methods::GET_EPOCH_INFO => to_raw(&app.state().epoch_info()),
        methods::PARAMETERS => to_raw(app.state().params()),
        methods::HEALTH => {
            let state = app.state();
            let pending = app.pool().len() as u64;
            to_raw(&Health {
                height: state.height(),
                best_hash: state.best_hash(),
                genesis_hash: state.genesis_hash(),
                pending_extrinsics: pending,
                producing: true,
                finalized_tip: app
                    .finalized_tip
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .max(state.height()),
                validators: state.chain_validators().len() as u32,
            })
        }
        methods::GET_FINALIZATION => {
            let hash: H256 = required(&p, 0, "hash")?;
            let kept = app.certificates.lock().unwrap_or_else(|p| p.into_inner());
            let found = kept
                .iter()
                .rev()
                .find(|(h, _)| *h == hash)
                .map(|(_, c)| hex::encode(c));
            to_raw(&found)
        }
        methods::GET_EVIDENCE => {
            let kept = app.evidence.lock().unwrap_or_else(|p| p.into_inner());
            to_raw(&kept.iter().collect::<Vec<_>>())
        }
        other => Err(RpcError::new(
            codes::METHOD_NOT_FOUND,
            format!("unknown method `{}`", truncate(other, 64)),
        )),
    }
}

/// The most positional parameters `method` takes (`None`: unknown method,
/// answered as such by the dispatcher).
fn arity(method: &str) -> Option<usize> {
    Some(match method {
        methods::GET_TOTALS
        | methods::SUBSCRIBE_NEW_HEADS
        | methods::GET_EPOCH_INFO
        | methods::PARAMETERS
        | methods::HEALTH
        | methods::GET_EVIDENCE => 0,
        methods::SUBMIT_EXTRINSIC
        | methods::GET_FINALIZATION
        | methods::GET_HEADER
        | methods::GET_BLOCK
        | methods::GET_EVENTS
        | methods::UNSUBSCRIBE_NEW_HEADS
        | methods::GET_ACCOUNT
        | methods::GET_SUBNET
        | methods::GET_SUBNET_NODES => 1,
        methods::GET_ELECTED_VALIDATOR | methods::GET_CONSENSUS_DATA => 2,
        methods::PROOF_OF_STAKE => 3,
        _ => return None,
    })
}

/// An extrinsic as submitted: exactly the four members of [`Extrinsic`];
/// any other member is an error, not silently dropped.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictExtrinsic {
    signer: AccountId,
    nonce: u64,
    call: Call,
    signature: Signature,
}

impl StrictExtrinsic {
    fn into_extrinsic(self) -> Extrinsic {
        Extrinsic {
            signer: self.signer,
            nonce: self.nonce,
            call: self.call,
            signature: self.signature,
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn subscribe(app: &App, conn: Option<&mut Connection>) -> RpcResult {
    let Some(conn) = conn else {
        return Err(RpcError::new(
            codes::SUBSCRIPTION_NEEDS_WEBSOCKET,
            "subscriptions need a WebSocket connection",
        ));
    };
    if conn.subscriptions.len() >= app.limits.max_subscriptions_per_connection {
        return Err(RpcError::new(
            codes::INVALID_REQUEST,
            format!(
                "at most {} subscriptions per connection",
                app.limits.max_subscriptions_per_connection
            ),
        ));
    }
    let id = conn.next_subscription;
    conn.next_subscription += 1;
    let mut heads = app.heads.subscribe();
    let outgoing = conn.outgoing.clone();
    let task = tokio::spawn(async move {
        loop {
            let head = match heads.recv().await {
                Ok(head) => head,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            let text = format!(
                "{{\"jsonrpc\":\"2.0\",\"method\":\"{}\",\"params\":{{\"subscription\":{id},\"result\":{head}}}}}",
                methods::NEW_HEAD_NOTIFICATION
            );
            // A subscriber too slow for its buffer is dropped, never
            // buffered without bound.
            if outgoing.try_send(text).is_err() {
                break;
            }
        }
    });
    conn.subscriptions.insert(id, task);
    to_raw(&id)
}
