//! The contract between the OpenAI-compatible API and whatever generates
//! text for it.
//!
//! # Design
//!
//! * [`Backend`] is all the API needs from a model: its id, tokenizer,
//!   chat template, context length and a blocking `generate` that streams
//!   text. The API (`hypertensor-api`, on axum) is written against it; the
//!   whole model in this process ([`LocalBackend`]) and a chain of servers
//!   in a swarm (`hypertensor-inference`) implement it. Neither
//!   implementation needs HTTP, and the API needs neither implementation,
//!   so this crate holds only the trait and plain types: no axum, no
//!   tokio, no network.
//! * [`BackendError`] sorts every failure by whose fault it is, which is
//!   all the API needs to choose a status: the caller's (400), the
//!   serving side's, now unable to serve (503), or ours (500).
//! * The generation types ([`GenerationRequest`], [`Generation`],
//!   [`Flow`], ...) are the model crate's own, re-exported here so a
//!   backend or its user needs only this crate for the contract.

pub use hypertensor_model::{
    ChatTemplate, FinishReason, Flow, Generation, GenerationRequest, SamplingParams, Tokenizer,
};

use hypertensor_model::{LocalModel, ModelError, generate};

/// Why a backend could not generate.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The request cannot be served as asked (bad parameters, prompt too
    /// long for the context): the caller's fault.
    #[error("{0}")]
    Invalid(String),
    /// The model cannot be served now (no route covers every block, the
    /// servers running the blocks failed or went away): retry later.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (a bug, a broken model file).
    #[error("{0}")]
    Failed(String),
}

impl From<ModelError> for BackendError {
    /// Sorts a model error by fault: bad input is the caller's, an
    /// unavailable block backend is the serving side's, the rest is ours.
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::InvalidInput(_) | ModelError::ContextOverflow { .. } => {
                BackendError::Invalid(e.to_string())
            }
            ModelError::Unavailable(_) => BackendError::Unavailable(e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_errors_are_sorted_by_whose_fault_they_are() {
        let invalid = BackendError::from(ModelError::InvalidInput("empty".into()));
        assert!(matches!(invalid, BackendError::Invalid(_)), "{invalid:?}");
        let overflow = BackendError::from(ModelError::ContextOverflow {
            requested: 9,
            limit: 8,
        });
        assert!(matches!(overflow, BackendError::Invalid(_)), "{overflow:?}");
        let gone = BackendError::from(ModelError::Unavailable("every server left".into()));
        match gone {
            BackendError::Unavailable(m) => assert!(m.contains("every server left"), "{m}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
        let ours = BackendError::from(ModelError::NonFiniteLogits { len: 3 });
        assert!(matches!(ours, BackendError::Failed(_)), "{ours:?}");
    }
}
