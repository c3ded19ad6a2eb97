//! The HTTP/1.1 server under the router: connections capped in total and
//! per client address, request heads read under a timeout (which also
//! closes idle keep-alive connections), and a graceful stop.
//!
//! `axum::serve` sets no timer on hyper, so a client that sends half a
//! request head and stops holds its socket forever; this loop gives hyper
//! a timer and the head timeout.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service;

use crate::error::ApiError;

/// Connection limits of [`serve_router`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    /// Most connections open at once.
    pub(crate) max_connections: usize,
    /// Most connections open at once from one IP address.
    pub(crate) max_per_address: usize,
    /// Longest time to receive a request head, counted from the end of the
    /// previous response on a kept-alive connection.
    pub(crate) header_timeout: Duration,
}

/// Counts open connections, in total and per address.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; its place is given back on drop.
struct Admitted {
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

/// Takes a place for a connection from `address`, or says which cap is full.
fn admit(
    open: &Arc<Mutex<Open>>,
    limits: &ConnectionLimits,
    address: IpAddr,
) -> Result<Admitted, String> {
    let mut state = open.lock().unwrap_or_else(|p| p.into_inner());
    if state.total >= limits.max_connections {
        return Err(format!(
            "the server has {} connections open, its limit; retry later",
            state.total
        ));
    }
    let mine = state.per_address.entry(address).or_default();
    if *mine >= limits.max_per_address {
        return Err(format!(
            "{address} already has {} connections open, the limit per address; \
             reuse a connection or close some",
            *mine
        ));
    }
    *mine += 1;
    state.total += 1;
    Ok(Admitted {
        open: open.clone(),
        address,
    })
}

/// Answers a refused connection with a 429 in OpenAI's shape and closes it,
/// without reading the request.
async fn refuse(mut stream: TcpStream, reason: String) {
    let body = ApiError::TooManyRequests(reason).body().to_string();
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Serves `router` on `listener` until `shutdown` completes; then stops
/// accepting, lets requests in flight finish, and returns.
pub(crate) async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = Arc::new(Mutex::new(Open::default()));
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
        match admit(&open, &limits, peer.ip()) {
            Ok(admitted) => {
                connections.spawn(connection(
                    stream,
                    router.clone(),
                    limits.header_timeout,
                    stop_rx.clone(),
                    admitted,
                ));
            }
            Err(reason) => {
                tracing::debug!(%peer, %reason, "connection refused");
                connections.spawn(refuse(stream, reason));
            }
        }
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until it closes, or until a stop is asked and its
/// request in flight (if any) is answered.
async fn connection(
    stream: TcpStream,
    router: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _admitted: Admitted,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut router = router.clone();
        router.call(request.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
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
