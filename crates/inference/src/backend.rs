//! The swarm as a backend of the OpenAI-compatible API.

use std::sync::Arc;

use hypertensor_api::{Backend, BackendError};
use hypertensor_model::{ChatTemplate, Flow, Generation, GenerationRequest, Tokenizer, generate};

use crate::client::SwarmClient;
use crate::error::InferenceError;

/// Serves the API from a swarm under the name `id`.
#[derive(Debug)]
pub struct SwarmBackend {
    id: String,
    client: Arc<SwarmClient>,
}

impl SwarmBackend {
    /// Wraps a client.
    pub fn new(id: impl Into<String>, client: Arc<SwarmClient>) -> Self {
        Self {
            id: id.into(),
            client,
        }
    }

    /// The client underneath.
    pub fn client(&self) -> &SwarmClient {
        &self.client
    }
}

impl Backend for SwarmBackend {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn tokenizer(&self) -> &Tokenizer {
        self.client.tokenizer()
    }

    fn chat_template(&self) -> Option<&ChatTemplate> {
        self.client.chat_template()
    }

    fn context_length(&self) -> usize {
        // A request longer than one session may reserve can never be
        // served, however long it waits: a 400, not a 503.
        self.client.max_session_tokens()
    }

    fn generate(
        &self,
        request: &GenerationRequest,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, BackendError> {
        // Reserve only what this request can use, so servers hold many
        // sessions at once, and no more than some route can hold now: a
        // request beyond the swarm's free cache is fitted to it (and ends
        // with `length`), never refused by every server in turn.
        let wanted = request.prompt.len().saturating_add(request.max_tokens);
        let mut session = self.client.session_for(wanted);
        let needed = request.prompt.len().saturating_add(1);
        let opened = self.client.handle().block_on(session.open_route(needed));
        if let Err(e) = opened {
            return Err(backend_error(e));
        }
        let outcome = generate(&mut session, self.client.tokenizer(), request, on_text);
        match (outcome, session.take_error()) {
            (Ok(g), _) => Ok(g),
            (Err(_), Some(e)) => Err(backend_error(e)),
            (Err(e), None) => Err(e.into()),
        }
    }

    fn swarm(&self) -> Option<serde_json::Value> {
        match self.client.handle().block_on(self.client.swarm_json()) {
            Ok(view) => Some(view),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the swarm");
                None
            }
        }
    }
}

/// How a swarm failure reaches the API: the request's own fault is a 400,
/// no route or no room a 503, anything else ours.
fn backend_error(e: InferenceError) -> BackendError {
    match e {
        InferenceError::Rejected { .. } => BackendError::Invalid(e.to_string()),
        InferenceError::NoRoute { .. }
        | InferenceError::GaveUp { .. }
        | InferenceError::InsufficientCapacity { .. }
        | InferenceError::Full { .. } => BackendError::Unavailable(e.to_string()),
        other => BackendError::Failed(other.to_string()),
    }
}
