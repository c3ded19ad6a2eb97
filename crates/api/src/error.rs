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
    /// swarm covers every block, every server refused, or the servers
    /// running the blocks failed and none is left to take over): a 503
    /// with the reason.
    #[error("{0}")]
    Unavailable(String),
    /// The server has no room for the request now (its key/value cache is
    /// taken by running generations): a 503 with the reason, at once.
    #[error("{0}")]
    Full(String),
    /// The prompt and `max_tokens` together ask for more positions than
    /// the model's context holds.
    #[error(
        "this model's context holds {limit} tokens, but {requested} were requested \
         ({prompt} in the prompt and {completion} to generate); lower `max_tokens` \
         to at most {room} or shorten the prompt"
    )]
    ContextLength {
        /// The model's context length.
        limit: usize,
        /// Prompt plus completion tokens asked for.
        requested: usize,
        /// Tokens in the prompt.
        prompt: usize,
        /// Tokens to generate.
        completion: usize,
        /// The largest `max_tokens` that would fit this prompt.
        room: usize,
        /// The field to blame (`messages`, `prompt` or `max_tokens`).
        param: &'static str,
    },
    /// No route or handler exists for this method and path.
    #[error("unknown request URL: {method} {path}")]
    NotFound {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// The path exists but not with this method.
    #[error("method {method} is not allowed for {path}")]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
    },
    /// The body is (or declares itself) longer than the limit.
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The client did not send its body within the time allowed.
    #[error("the request body was not received within {0:?}")]
    RequestTimeout(std::time::Duration),
    /// Too many requests are already waiting for a generation slot, or
    /// this address has too many connections open.
    #[error("{0}")]
    TooManyRequests(String),
    /// Any other status the HTTP layer produced, in OpenAI's shape.
    #[error("{message}")]
    Http {
        /// The status to answer with.
        status: StatusCode,
        /// What went wrong.
        message: String,
    },
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
            ApiError::Unavailable(_) | ApiError::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::ContextLength { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Http { status, .. } => *status,
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
            ApiError::Full(_) => (
                self.to_string(),
                "service_unavailable",
                None,
                Some("server_full"),
            ),
            ApiError::ContextLength { param, .. } => (
                self.to_string(),
                "invalid_request_error",
                Some(param.to_string()),
                Some("context_length_exceeded"),
            ),
            ApiError::NotFound { .. } => (
                self.to_string(),
                "invalid_request_error",
                None,
                Some("unknown_url"),
            ),
            ApiError::MethodNotAllowed { .. } => (
                self.to_string(),
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
            ),
            ApiError::PayloadTooLarge { .. } => (
                self.to_string(),
                "invalid_request_error",
                None,
                Some("request_too_large"),
            ),
            ApiError::RequestTimeout(_) => (
                self.to_string(),
                "invalid_request_error",
                None,
                Some("request_timeout"),
            ),
            ApiError::TooManyRequests(_) => (
                self.to_string(),
                "rate_limit_error",
                None,
                Some("rate_limit_exceeded"),
            ),
            ApiError::Http { status, .. } => (
                self.to_string(),
                if status.is_server_error() {
                    "server_error"
                } else {
                    "invalid_request_error"
                },
                None,
                None,
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
