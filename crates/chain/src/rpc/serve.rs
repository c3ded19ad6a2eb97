//! The HTTP/1.1 accept loop under the JSON-RPC router: connections capped
//! in total and per client IP address, request heads read under a timeout
//! (which also closes idle keep-alive connections), WebSocket upgrades,
//! and a graceful stop.
//!
//! `axum::serve` sets no timer on hyper and caps nothing, so one process
//! could hold every connection and a client sending half a request head
//! held its socket forever; this loop gives hyper a timer and the caps.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hypertensor_chain_client::RpcError;
use hypertensor_chain_client::api::codes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service;

use crate::node::RpcLimits;

/// Counts open connections, in total and per address.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; its place is given back on drop (also when
/// the connection was upgraded to WebSocket and that ends).
pub(crate) struct Admitted {
    open: Arc<Mutex<Open>>,
    address: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.per_address.remove(&self.address);
            }
        }
    }
}

/// Why a connection was refused: the HTTP status and the reason.
struct Refusal {
    status: u16,
    reason: String,
}

/// Takes a place for a connection from `address`, or says which cap is full.
fn admit(
    open: &Arc<Mutex<Open>>,
    limits: &RpcLimits,
    address: IpAddr,
) -> Result<Admitted, Refusal> {
    let mut state = open.lock().unwrap_or_else(|p| p.into_inner());
    if state.total >= limits.max_connections {
        return Err(Refusal {
            status: 503,
            reason: format!(
                "the node has {} connections open, its limit; retry later",
                state.total
            ),
        });
    }
    let mine = state.per_address.entry(address).or_default();
    if *mine >= limits.max_connections_per_ip {
        return Err(Refusal {
            status: 429,
            reason: format!(
                "{address} already has {} connections open, the limit per address; \
                 reuse a connection or close some",
                *mine
            ),
        });
    }
    *mine += 1;
    state.total += 1;
    Ok(Admitted {
        open: open.clone(),
        address,
    })
}

/// Answers a refused connection with its status and a JSON-RPC error, then
/// closes it. The request head is read first (briefly, bounded), so the
/// client is not reset before it reads the answer.
async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    let code = if refusal.status == 429 {
        codes::RATE_LIMITED
    } else {
        codes::INTERNAL_ERROR
    };
    let error = RpcError::new(code, refusal.reason);
    let body = super::error_response("null", &error);
    let title = if refusal.status == 429 {
        "Too Many Requests"
    } else {
        "Service Unavailable"
    };
    let response = format!(
        "HTTP/1.1 {} {title}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        refusal.status,
        body.len()
    );
    let exchange = async {
        let mut head = [0u8; 4096];
        let mut seen = 0;
        while seen < head.len() {
            let n = stream.read(&mut head[seen..]).await?;
            if n == 0 {
                break;
            }
            seen += n;
            if head[..seen].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), exchange).await;
}

/// Serves `router` on `listener` until `stop` turns true; then stops
/// accepting, lets requests in flight finish, and returns. WebSocket
/// connections, once upgraded, watch the stop signal themselves.
pub(crate) async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: RpcLimits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let open = Arc::new(Mutex::new(Open::default()));
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before
                    // accept: wait a little rather than spin.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match admit(&open, &limits, peer.ip()) {
            Ok(admitted) => {
                connections.spawn(connection(
                    stream,
                    peer,
                    router.clone(),
                    limits.header_timeout,
                    stop.clone(),
                    admitted,
                ));
            }
            Err(refusal) => {
                tracing::debug!(%peer, reason = %refusal.reason, "connection refused");
                connections.spawn(refuse(stream, refusal));
            }
        }
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until it closes (or is upgraded and the
/// WebSocket ends), or until a stop is asked and its request in flight
/// (if any) is answered.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    admitted: Admitted,
) {
    let _ = stream.set_nodelay(true);
    // The place is held until the WebSocket task (if any) ends too.
    let admitted = Arc::new(admitted);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(Arc::clone(&admitted));
        let mut router = router.clone();
        router.call(request.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            outcome = conn.as_mut() => {
                if let Err(e) = outcome {
                    tracing::trace!(error = %e, "connection ended");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
