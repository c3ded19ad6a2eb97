//! The API's error type and its one mapping to OpenAI's JSON error shape.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Everything a request can fail with; each variant maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The caller's request is malformed or asks for something we refuse.
    #[error("{message}")]
    BadRequest {
        /// What was wrong, for the caller.
        message: String,
        /// The request field at fault, when there is one.
        param: Option<String>,
    },
    /// The request names a model this server does not serve.
    #[error("the model `{0}` does not exist")]
    UnknownModel(String),
    /// The backend cannot serve the model right now (no route through the
    /// swarm covers every block, or every server refused).
    #[error("{0}")]
    Unavailable(String),
    /// Our fault: logged, answered with a generic message.
    #[error("internal error: {0}")]
    Internal(String),
    /// The server could not bind or serve.
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
}

/// The API crate's result type.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    /// A 400 naming the offending field.
    pub fn bad_param(param: &str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            message: message.into(),
            param: Some(param.to_string()),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnknownModel(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) | ApiError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body OpenAI's clients expect: `{"error": {message, type, param,
    /// code}}`. Internal errors are logged here and answered generically.
    pub fn body(&self) -> serde_json::Value {
        let (message, kind, param, code) = match self {
            ApiError::BadRequest { message, param } => (
                message.clone(),
                "invalid_request_error",
                param.clone(),
                None,
            ),
            ApiError::UnknownModel(_) => (
                self.to_string(),
                "invalid_request_error",
                Some("model".to_string()),
                Some("model_not_found"),
            ),
            ApiError::Unavailable(_) => (
                self.to_string(),
                "service_unavailable",
                None,
                Some("no_route"),
            ),
            ApiError::Internal(_) | ApiError::Io(_) => {
                tracing::error!(error = %self, "request failed");
                (
                    "the server failed to complete the request".to_string(),
                    "server_error",
                    None,
                    None,
                )
            }
        };
        json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}
