//! The swarm as a backend of the OpenAI-compatible API.

use std::sync::Arc;

use hypertensor_backend::{
    Backend, BackendError, ChatTemplate, Flow, Generation, GenerationRequest, PromptTuning,
    Tokenizer, Tunings,
};
use hypertensor_model::{ModelError, generate};

use crate::client::{SwarmClient, check_swarm_tuning};

/// Serves the API from a swarm under the name `id`.
#[derive(Debug)]
pub struct SwarmBackend {
    id: String,
    client: Arc<SwarmClient>,
    tunings: Tunings,
}

impl SwarmBackend {
    /// Wraps a client.
    pub fn new(id: impl Into<String>, client: Arc<SwarmClient>) -> Self {
        Self {
            id: id.into(),
            client,
            tunings: Tunings::default(),
        }
    }

    /// Serves `tunings` too, each as its own model id; fails on one of
    /// another shape than the swarm's model, naming it.
    pub fn with_tunings(mut self, tunings: Tunings) -> Result<Self, BackendError> {
        let model = self.client.model_config();
        for name in tunings.names() {
            let tuning = tunings.get(name).expect("a name it lists");
            check_swarm_tuning(tuning, model.hidden_size, model.n_blocks)
                .map_err(|e| BackendError::Invalid(format!("prompt tuning `{name}`: {e}")))?;
        }
        self.tunings = tunings;
        Ok(self)
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

    fn tunings(&self) -> &Tunings {
        &self.tunings
    }

    fn generate(
        &self,
        request: &GenerationRequest,
        tuning: Option<&PromptTuning>,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, BackendError> {
        // Reserve only what this request can use, so servers hold many
        // sessions at once, and no more than some route can hold now: a
        // request beyond the swarm's free cache is fitted to it (and ends
        // with `length`), never refused by every server in turn.
        let wanted = request.prompt.len().saturating_add(request.max_tokens);
        let (mut session, rows) = match tuning {
            Some(tuning) => (
                self.client.tuned_session_for(wanted, tuning)?,
                tuning.tokens(),
            ),
            None => (self.client.session_for(wanted), 0),
        };
        let needed = request.prompt.len().saturating_add(rows + 1);
        // Swarm failures, at opening or mid-generation, are sorted by
        // `From<InferenceError> for ModelError` and reach the API typed:
        // the request's own refusal a 400, the swarm unable to serve a 503.
        self.client
            .handle()
            .block_on(session.open_route(needed))
            .map_err(ModelError::from)?;
        Ok(generate(
            &mut session,
            self.client.tokenizer(),
            request,
            on_text,
        )?)
    }

    fn block_count(&self) -> usize {
        self.client.block_count()
    }

    fn serves_swarm(&self) -> bool {
        true
    }

    fn swarm(&self) -> Result<Option<serde_json::Value>, BackendError> {
        match self.client.handle().block_on(self.client.swarm_json()) {
            Ok(view) => Ok(Some(view)),
            Err(e) => Err(BackendError::Unavailable(format!(
                "cannot read the swarm now: {e}"
            ))),
        }
    }
}
