//! The HTTP/1.1 server loop under the chain's JSON-RPC router and the
//! OpenAI-compatible API: connections capped in total and per client IP
//! address, request heads read under a timeout (which also closes idle
//! kept-alive connections), WebSocket upgrades, and a graceful stop.
//!
//! `axum::serve` caps nothing and sets no timer on hyper, so one process
//! could hold every connection, and a client that sent half a request head
//! held its socket forever. [`serve`] gives hyper a timer and the caps;
//! what a refusal says is the caller's (a JSON-RPC error, an OpenAI error).

pub mod observe;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service;

/// How many connections [`serve`] holds and how long it waits for a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once; beyond, 503.
    pub max_connections: usize,
    /// Most connections open at once from one IP address; beyond, 429.
    pub max_per_address: usize,
    /// Longest time to receive a request head, counted from the end of the
    /// previous response on a kept-alive connection.
    pub header_timeout: Duration,
}

/// Why a connection was refused before any request was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 503 when the server is full, 429 when the client's address is.
    pub status: StatusCode,
    /// What is full, for the client.
    pub reason: String,
}

/// Renders a refusal as the JSON body the server's clients expect.
pub type RefusalBody = fn(&Refusal) -> String;

/// Most refused connections being answered at once; past it a refused
/// connection is closed without an answer, so a connect flood cannot hold
/// unbounded sockets.
const MAX_REFUSING: usize = 64;

/// The address a client's connections are counted under: its IPv4
/// address, or the /64 of its IPv6 address (one host is routinely given a
/// whole /64, so counting single IPv6 addresses would count nothing).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// One admitted connection. Every request on it carries an
/// `Arc<Admitted>` extension (and a [`ConnectInfo`] of the peer), so a
/// handler that upgrades the connection keeps its place until the upgraded
/// connection ends too.
#[derive(Debug)]
pub struct Admitted {
    open: Arc<Mutex<Open>>,
    address: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                open.per_address.remove(&self.address);
            }
        }
    }
}

/// Counts open connections, in total and per address.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

fn lock(open: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    open.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes a place for a connection from `address`, or says which cap is full.
fn admit(
    open: &Arc<Mutex<Open>>,
    limits: &ConnectionLimits,
    address: IpAddr,
) -> Result<Admitted, Refusal> {
    let mut state = lock(open);
    if state.total >= limits.max_connections.max(1) {
        return Err(Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: format!(
                "the server has {} connections open, its limit; retry later",
                state.total
            ),
        });
    }
    let mine = state.per_address.entry(address).or_default();
    if *mine >= limits.max_per_address.max(1) {
        return Err(Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
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

/// Answers a refused connection with its status and `body`, then closes
/// it. The request head is read first (briefly, bounded), so the client is
/// not reset before it reads the answer.
async fn refuse(mut stream: TcpStream, refusal: Refusal, body: String) {
    let response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        refusal.status.as_u16(),
        refusal.status.canonical_reason().unwrap_or("Refused"),
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

/// Serves `router` on `listener` until `shutdown` completes; then stops
/// accepting, lets requests in flight finish (upgraded connections watch
/// their own stop signal), and returns. Refused connections are answered
/// with `refusal_body`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    refusal_body: RefusalBody,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let open = Arc::new(Mutex::new(Open::default()));
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
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
        match admit(&open, &limits, client_key(peer.ip())) {
            Ok(admitted) => {
                connections.spawn(connection(
                    stream,
                    peer,
                    router.clone(),
                    limits.header_timeout,
                    stop_rx.clone(),
                    admitted,
                ));
            }
            Err(refusal) => {
                tracing::debug!(%peer, reason = %refusal.reason, "connection refused");
                // Dropping the stream closes it at once when too many
                // refusals are being answered already.
                if let Ok(permit) = refusing.clone().try_acquire_owned() {
                    let body = refusal_body(&refusal);
                    connections.spawn(async move {
                        refuse(stream, refusal, body).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until it closes (or is upgraded and the upgraded
/// connection ends), or until a stop is asked and its request in flight
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_address_and_given_back() {
        let open = Arc::new(Mutex::new(Open::default()));
        let limits = ConnectionLimits {
            max_connections: 3,
            max_per_address: 2,
            header_timeout: Duration::from_secs(1),
        };
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = admit(&open, &limits, a).unwrap();
        let _second = admit(&open, &limits, a).unwrap();
        let refused = admit(&open, &limits, a).unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.reason.contains("127.0.0.2"), "{}", refused.reason);
        let _third = admit(&open, &limits, b).unwrap();
        let full = admit(&open, &limits, b).unwrap_err();
        assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
        drop(first);
        let _again = admit(&open, &limits, a).unwrap();
        assert_eq!(lock(&open).total, 3);
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_slash_64() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let other_in_same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let next_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(one), client_key(other_in_same_64));
        assert_ne!(client_key(one), client_key(next_64));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(client_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(client_key(v4), v4);
    }
}
