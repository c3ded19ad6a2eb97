//! An OpenAI-compatible HTTP API over any text-generation backend.
//!
//! # Design
//!
//! * [`Backend`] is all the API needs from a model: its id, tokenizer,
//!   chat template and a blocking `generate` that streams text. It lives
//!   in `hypertensor-backend` (no HTTP there) and is re-exported here. The
//!   local model ([`LocalBackend`]) and a chain of servers in a swarm (the
//!   inference crate) both implement it, so the API is tested against the
//!   local model and serves the swarm unchanged.
//! * Endpoints: `GET /v1/models`, `POST /v1/completions`,
//!   `POST /v1/chat/completions` (prompt rendered with the GGUF's chat
//!   template), `GET /v1/swarm` (backends that have one). `stream: true`
//!   answers with server-sent events ending in `data: [DONE]`.
//! * Every request field is understood or refused by name (400); errors
//!   use OpenAI's JSON shape: 400 bad request, 404 unknown model, 503 when
//!   the backend cannot serve now (no route to a full model, or the
//!   servers running the blocks failed mid-generation), a generic 500 for
//!   our own faults ([`ApiError`] maps them in one place).
//! * Each generation runs on a blocking thread; a semaphore bounds how many
//!   run at once (a bounded number wait their turn, the rest get 429). A
//!   client that goes away, streaming or not, cancels its generation
//!   within one step.
//! * The HTTP layer caps connections in total and per address, reads heads
//!   and bodies under timeouts, refuses a declared length beyond the limit
//!   at once, and answers unknown routes and methods (404, 405), 408, 413
//!   and 429 in the same JSON error shape.

mod error;
mod handlers;
mod limits;
mod observe;
mod request;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use error::{ApiError, Result};
pub use hypertensor_backend::{Backend, BackendError, BatchedBackend, LocalBackend, Tunings};
pub use hypertensor_http::observe::{MetricsRegistry, ReadyCheck, ReadyFuture, always_ready};
pub use observe::{ChainView, Surfaces};

/// How the HTTP server behaves: how much work it takes on and how long it
/// waits for a client (see `docs/inference.md` for why each default).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Most generations running at once; further requests wait.
    pub max_concurrent: usize,
    /// Most requests waiting for a generation slot; beyond, 429.
    pub max_waiting: usize,
    /// Largest request body, in bytes; beyond (or declared beyond), 413.
    pub max_body_bytes: usize,
    /// Longest time to receive a request's head; also how long an idle
    /// kept-alive connection stays open.
    pub header_timeout: Duration,
    /// Longest time to receive a request's body; beyond, 408.
    pub body_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one IP address; beyond, 429.
    pub max_connections_per_address: usize,
    /// Most tokens a chat completion generates when the caller gives no
    /// `max_tokens` (a caller's own `max_tokens` may go up to the context).
    pub chat_default_max_tokens: usize,
}

impl Default for ApiConfig {
    /// 64 generations at once, 256 waiting, 2 MiB bodies, 10 s for a
    /// head, 30 s for a body, 1,024 connections, 64 per address, and
    /// chats without `max_tokens` capped at 1,024 tokens.
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            max_waiting: 256,
            max_body_bytes: 2 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_address: 64,
            chat_default_max_tokens: 1024,
        }
    }
}

/// The API's routes over `backend`, with the body limits and OpenAI-shaped
/// errors for every status, the dashboard, and the default [`Surfaces`]
/// (metrics of the API alone, always ready, no chain).
pub fn router(backend: Arc<dyn Backend>, config: &ApiConfig) -> Router {
    router_with(backend, config, Surfaces::default())
}

/// [`router`] with the composition root's [`Surfaces`]: the API's metrics
/// join `surfaces.metrics`, which `/metrics` serves; `/ready` asks
/// `surfaces.ready`; `/v1/chain` reads `surfaces.chain`.
pub fn router_with(backend: Arc<dyn Backend>, config: &ApiConfig, surfaces: Surfaces) -> Router {
    let metrics = observe::ApiMetrics::default();
    surfaces.metrics.register(|r| metrics.register(r));
    let state = handlers::AppState {
        backend,
        permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
        waiting: Arc::new(AtomicUsize::new(0)),
        max_waiting: config.max_waiting,
        chat_default_max_tokens: config.chat_default_max_tokens.max(1),
        chain: surfaces.chain.clone(),
        metrics: metrics.clone(),
    };
    let body = limits::BodyLimits {
        max_bytes: config.max_body_bytes,
        timeout: config.body_timeout,
    };
    Router::new()
        .route("/v1/models", get(handlers::models))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/swarm", get(handlers::swarm))
        .route("/v1/status", get(observe::status))
        .route("/v1/chain", get(observe::chain))
        .merge(hypertensor_dashboard::routes())
        .merge(hypertensor_http::observe::routes(
            surfaces.metrics,
            surfaces.ready,
        ))
        .fallback(limits::not_found)
        .method_not_allowed_fallback(limits::method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            body,
            limits::read_body,
        ))
        .layer(axum::middleware::from_fn(limits::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            observe::track,
        ))
}

/// Serves the API on `listener` until `shutdown` completes (requests in
/// flight are finished first), with the connection limits and timeouts of
/// `config`.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    config: &ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_with(listener, backend, config, Surfaces::default(), shutdown).await
}

/// [`serve`] with the composition root's [`Surfaces`] (see
/// [`router_with`]).
pub async fn serve_with(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    config: &ApiConfig,
    surfaces: Surfaces,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let limits = hypertensor_http::ConnectionLimits {
        max_connections: config.max_connections,
        max_per_address: config.max_connections_per_address,
        header_timeout: config.header_timeout,
    };
    hypertensor_http::serve(
        listener,
        router_with(backend, config, surfaces),
        limits,
        refusal_body,
        shutdown,
    )
    .await?;
    Ok(())
}

/// A refused connection's answer, in OpenAI's error shape.
fn refusal_body(refusal: &hypertensor_http::Refusal) -> String {
    let error = if refusal.status.as_u16() == 429 {
        ApiError::TooManyRequests(refusal.reason.clone())
    } else {
        ApiError::Http {
            status: refusal.status,
            message: refusal.reason.clone(),
        }
    };
    error.body().to_string()
}
