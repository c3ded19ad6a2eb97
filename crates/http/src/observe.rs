//! What every server of the system answers besides its own protocol:
//! Prometheus metrics at `GET /metrics`, liveness at `GET /health` and
//! readiness at `GET /ready`.
//!
//! * `/health` answers 200 while the process serves HTTP at all: a load
//!   balancer or supervisor restarts a process that stops answering it.
//! * `/ready` answers 200 when the server can do its job now (a gateway
//!   has a route through every block, a chain node has caught up with
//!   finality) and 503 with the reason otherwise: a load balancer sends
//!   traffic only to ready servers. What "ready" means is the caller's
//!   [`ReadyCheck`].
//! * `/metrics` is the OpenMetrics text of a [`MetricsRegistry`], which
//!   the composition root fills with every part's metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;

/// The content type of the OpenMetrics text format `/metrics` answers in.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A Prometheus registry shared between the parts that register metrics
/// and the HTTP handler that encodes them. Cloning shares it.
#[derive(Clone, Default)]
pub struct MetricsRegistry(Arc<Mutex<Registry>>);

impl std::fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsRegistry")
    }
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets `register` add metrics (or a sub-registry with a prefix or
    /// labels) to the registry.
    pub fn register<T>(&self, register: impl FnOnce(&mut Registry) -> T) -> T {
        let mut registry = self.0.lock().unwrap_or_else(|p| p.into_inner());
        register(&mut registry)
    }

    /// The registry's metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let registry = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail; a collector that fails
        // leaves what it wrote so far, which is still valid up to there.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

/// A future answering whether the server is ready, and if not, why.
pub type ReadyFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// What `/ready` asks: `Ok` when the server can do its job now, else the
/// reason it cannot.
pub type ReadyCheck = Arc<dyn Fn() -> ReadyFuture + Send + Sync>;

/// A readiness check that is always ready (a server ready once it
/// listens).
pub fn always_ready() -> ReadyCheck {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

/// The routes `GET /metrics`, `GET /health` and `GET /ready`, to merge
/// into a server's router.
pub fn routes<S: Clone + Send + Sync + 'static>(
    metrics: MetricsRegistry,
    ready: ReadyCheck,
) -> Router<S> {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route(
            "/health",
            get(|| async { json(StatusCode::OK, "ok", None) }),
        )
        .route(
            "/ready",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready().await {
                        Ok(()) => json(StatusCode::OK, "ready", None),
                        Err(reason) => {
                            json(StatusCode::SERVICE_UNAVAILABLE, "not ready", Some(&reason))
                        }
                    }
                }
            }),
        )
}

/// `{"status": ..., "reason": ...}` with `status`.
fn json(status: StatusCode, word: &str, reason: Option<&str>) -> Response {
    let body = match reason {
        Some(reason) => format!(
            "{{\"status\":\"{word}\",\"reason\":{}}}",
            json_string(reason)
        ),
        None => format!("{{\"status\":\"{word}\"}}"),
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_escaped_as_json() {
        assert_eq!(json_string("a \"b\"\n\\"), r#""a \"b\"\u000a\\""#);
    }

    #[test]
    fn the_registry_encodes_what_was_registered() {
        let metrics = MetricsRegistry::new();
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        metrics.register(|r| r.register("things", "Things seen", counter.clone()));
        counter.inc_by(3);
        let text = metrics.encode();
        assert!(text.contains("things_total 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
