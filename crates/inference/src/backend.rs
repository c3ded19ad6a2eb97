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

    fn generate(
        &self,
        request: &GenerationRequest,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, BackendError> {
        // Reserve only what this request can use, so servers hold many
        // sessions at once.
        let tokens = request.prompt.len().saturating_add(request.max_tokens);
        let mut session = self.client.session_for(tokens);
        let outcome = generate(&mut session, self.client.tokenizer(), request, on_text);
        match (outcome, session.take_error()) {
            (Ok(g), _) => Ok(g),
            (Err(_), Some(e)) => Err(match e {
                InferenceError::NoRoute { .. } | InferenceError::GaveUp { .. } => {
                    BackendError::Unavailable(e.to_string())
                }
                other => BackendError::Failed(other.to_string()),
            }),
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
