//! What the API needs from whatever generates text: a local model, or a
//! chain of servers in a swarm.

use hypertensor_model::{
    ChatTemplate, Flow, Generation, GenerationRequest, LocalModel, ModelError, Tokenizer, generate,
};

/// Why a backend could not generate.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The request cannot be served as asked (bad parameters, prompt too
    /// long for the context): the caller's fault.
    #[error("{0}")]
    Invalid(String),
    /// The model cannot be reached now (no route covers every block).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (a bug, a broken model file).
    #[error("{0}")]
    Failed(String),
}

impl From<ModelError> for BackendError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::InvalidInput(_) | ModelError::ContextOverflow { .. } => {
                BackendError::Invalid(e.to_string())
            }
            other => BackendError::Failed(other.to_string()),
        }
    }
}

/// A source of generations for one model. Methods are blocking; the API
/// calls [`Backend::generate`] on a blocking thread, many at once.
pub trait Backend: Send + Sync + 'static {
    /// The model's id as clients name it.
    fn model_id(&self) -> &str;
    /// The model's tokenizer.
    fn tokenizer(&self) -> &Tokenizer;
    /// The model's chat template, if the file carries one.
    fn chat_template(&self) -> Option<&ChatTemplate>;
    /// Positions the model's context holds (prompt plus completion).
    fn context_length(&self) -> usize;
    /// Runs one generation, calling `on_text` once per generated token with
    /// the text it made certain (possibly empty); `Flow::Stop` from it
    /// cancels the generation before the next step.
    fn generate(
        &self,
        request: &GenerationRequest,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, BackendError>;
    /// A JSON description of the serving swarm (servers, spans, coverage),
    /// for `GET /v1/swarm`; `None` for a local model. Called on a blocking
    /// thread, like [`Backend::generate`].
    fn swarm(&self) -> Option<serde_json::Value> {
        None
    }
}

/// A whole model in this process.
#[derive(Debug)]
pub struct LocalBackend {
    id: String,
    model: LocalModel,
}

impl LocalBackend {
    /// Serves `model` under the name `id`.
    pub fn new(id: impl Into<String>, model: LocalModel) -> Self {
        Self {
            id: id.into(),
            model,
        }
    }
}

impl Backend for LocalBackend {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn tokenizer(&self) -> &Tokenizer {
        self.model.tokenizer()
    }

    fn chat_template(&self) -> Option<&ChatTemplate> {
        self.model.chat_template()
    }

    fn context_length(&self) -> usize {
        self.model.config().context_length
    }

    fn generate(
        &self,
        request: &GenerationRequest,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, BackendError> {
        let mut session = self.model.session();
        Ok(generate(
            &mut session,
            self.model.tokenizer(),
            request,
            on_text,
        )?)
    }
}
