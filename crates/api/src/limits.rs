//! What the HTTP layer refuses before a handler runs: bodies too large or
//! too slow, unknown routes and methods, and error responses of any other
//! origin, all answered in OpenAI's JSON error shape.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::error::ApiError;

/// The body limits the reading middleware enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// Largest body accepted, in bytes.
    pub(crate) max_bytes: usize,
    /// Longest time to receive the whole body.
    pub(crate) timeout: Duration,
}

/// The declared `Content-Length`, when there is a readable one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads the whole body before the handler runs: a declared length beyond
/// the limit is refused at once (413, without waiting for the body), a body
/// that grows beyond it while streaming is refused as soon as it does, and
/// a body not received within the timeout is answered 408.
pub(crate) async fn read_body(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let too_large = || {
        ApiError::PayloadTooLarge {
            limit: limits.max_bytes,
        }
        .into_response()
    };
    if declared_length(request.headers()).is_some_and(|n| n > limits.max_bytes as u64) {
        return close(too_large());
    }
    let (parts, body) = request.into_parts();
    let read = async {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::BadRequest {
                    message: format!("the request body could not be read: {e}"),
                    param: None,
                }
                .into_response()
            })?;
            if bytes.len() + chunk.len() > limits.max_bytes {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(bytes))
    };
    match tokio::time::timeout(limits.timeout, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(refusal)) => close(refusal),
        Err(_) => close(ApiError::RequestTimeout(limits.timeout).into_response()),
    }
}

/// Asks the client to close the connection: the rest of a refused body is
/// never read, so the connection cannot carry another request.
fn close(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// Any route the API does not have.
pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// A route the API has, asked with the wrong method.
pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}

/// Rewrites any error response that is not already JSON (from a layer or
/// extractor outside our handlers) into OpenAI's error shape, keeping its
/// status and headers.
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than the limit".to_string(),
        other => other
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_lowercase(),
    };
    let rewritten = ApiError::Http { status, message }.into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, rewritten.into_body())
}
