//! An OpenAI-compatible HTTP API over any text-generation backend.
//!
//! # Design
//!
//! * [`Backend`] is all the API needs from a model: its id, tokenizer,
//!   chat template and a blocking `generate` that streams text. The local
//!   model ([`LocalBackend`]) and a chain of servers in a swarm (the
//!   inference crate) both implement it, so the API is tested against the
//!   local model and serves the swarm unchanged.
//! * Endpoints: `GET /v1/models`, `POST /v1/completions`,
//!   `POST /v1/chat/completions` (prompt rendered with the GGUF's chat
//!   template), `GET /v1/swarm` (backends that have one). `stream: true`
//!   answers with server-sent events ending in `data: [DONE]`.
//! * Every request field is understood or refused by name (400); errors
//!   use OpenAI's JSON shape: 400 bad request, 404 unknown model, 503 when
//!   the backend has no route to a full model, a generic 500 for our own
//!   faults ([`ApiError`] maps them in one place).
//! * Each generation runs on a blocking thread; a semaphore bounds how many
//!   run at once (the rest wait their turn). A streaming client that goes
//!   away cancels its generation.

mod backend;
mod error;
mod handlers;
mod request;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use backend::{Backend, BackendError, LocalBackend};
pub use error::{ApiError, Result};

/// How the HTTP server behaves.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Most generations running at once; further requests wait.
    pub max_concurrent: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self { max_concurrent: 64 }
    }
}

/// The API's routes over `backend`.
pub fn router(backend: Arc<dyn Backend>, config: &ApiConfig) -> Router {
    let state = handlers::AppState {
        backend,
        permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
    };
    Router::new()
        .route("/v1/models", get(handlers::models))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/swarm", get(handlers::swarm))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes (requests in
/// flight are finished first).
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    config: &ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router(backend, config))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
