//! What the API server shows besides the OpenAI endpoints: the dashboard
//! page and the JSON it reads (`/v1/status`, `/v1/chain`), Prometheus
//! metrics of the API itself (request latency, tokens), and `/health`,
//! `/ready` and `/metrics` over the registry the composition root shares.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::future::BoxFuture;
use hypertensor_http::observe::{MetricsRegistry, ReadyCheck, always_ready};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::error::{ApiError, Result};
use crate::handlers::AppState;

/// The chain as the dashboard's chain view shows it: a JSON overview
/// (finalized head, epoch, elected validator, nodes, settled epochs with
/// scores and rewards; the shape is in `docs/dashboard.md`), or why it
/// cannot be read now.
pub trait ChainView: Send + Sync + 'static {
    /// Reads the overview.
    fn overview(&self) -> BoxFuture<'static, std::result::Result<Value, String>>;
}

/// What the composition root gives the API server beyond its backend: the
/// registry `/metrics` serves (the API adds its own metrics to it), what
/// `/ready` means, and the chain behind the dashboard's chain view.
#[derive(Clone)]
pub struct Surfaces {
    /// The process's metrics.
    pub metrics: MetricsRegistry,
    /// When the server is ready for traffic.
    pub ready: ReadyCheck,
    /// The chain, for a server connected to one.
    pub chain: Option<Arc<dyn ChainView>>,
}

impl Default for Surfaces {
    /// A fresh registry, ready as soon as it listens, no chain: a server
    /// of a local model.
    fn default() -> Self {
        Self {
            metrics: MetricsRegistry::new(),
            ready: always_ready(),
            chain: None,
        }
    }
}

/// Every path the API answers, as request metrics label them (any other
/// path counts as `other`, so callers cannot grow the label set).
const KNOWN_PATHS: [&str; 12] = [
    "/v1/models",
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/swarm",
    "/v1/status",
    "/v1/chain",
    "/metrics",
    "/health",
    "/ready",
    "/",
    "/app.js",
    "/style.css",
];

/// Labels of a request: its path and status.
type RequestLabels = Vec<(&'static str, String)>;

/// The API's own metrics.
#[derive(Clone, Debug)]
pub(crate) struct ApiMetrics {
    /// Seconds from a request's arrival to its response head (a stream's
    /// first event), by path and status.
    requests: Family<RequestLabels, Histogram>,
    /// Prompt tokens of finished generations.
    pub(crate) prompt_tokens: Counter,
    /// Tokens generated.
    pub(crate) completion_tokens: Counter,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            prompt_tokens: Counter::default(),
            completion_tokens: Counter::default(),
        }
    }
}

impl ApiMetrics {
    /// Registers the metrics under the prefix `api`.
    pub(crate) fn register(&self, registry: &mut Registry) {
        let api = registry.sub_registry_with_prefix("api");
        api.register(
            "request_seconds",
            "Time from a request's arrival to its response head (a stream's first event), by path and status",
            self.requests.clone(),
        );
        api.register(
            "prompt_tokens",
            "Prompt tokens of finished generations",
            self.prompt_tokens.clone(),
        );
        api.register(
            "completion_tokens",
            "Tokens generated",
            self.completion_tokens.clone(),
        );
    }
}

/// Times every request.
pub(crate) async fn track(
    State(metrics): State<ApiMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let path = KNOWN_PATHS
        .iter()
        .find(|p| **p == request.uri().path())
        .copied()
        .unwrap_or("other");
    let response = next.run(request).await;
    metrics
        .requests
        .get_or_create(&vec![
            ("path", path.to_string()),
            ("status", response.status().as_u16().to_string()),
        ])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /v1/status`: what this server serves, for the dashboard's header.
pub(crate) async fn status(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "model": state.backend.model_id(),
        "backend": if state.backend.serves_swarm() { "swarm" } else { "local" },
        "context_length": state.backend.context_length(),
        "blocks": state.backend.block_count(),
        "chain": state.chain.is_some(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /v1/chain`: the chain overview, 404 on a server without a chain,
/// 503 when the chain cannot be read now.
pub(crate) async fn chain(State(state): State<AppState>) -> Result<Json<Value>> {
    let Some(chain) = state.chain.clone() else {
        return Err(ApiError::Http {
            status: axum::http::StatusCode::NOT_FOUND,
            message: "this server is not connected to a chain".into(),
        });
    };
    chain
        .overview()
        .await
        .map(Json)
        .map_err(|e| ApiError::Unavailable(format!("cannot read the chain: {e}")))
}
