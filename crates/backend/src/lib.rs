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
//! * [`Tunings`] are the trained prompts a backend serves beside its plain
//!   model, each as its own model id (`<model>:<name>`); the API resolves
//!   the id and hands the prompt to [`Backend::generate`].
//! * The generation types ([`GenerationRequest`], [`Generation`],
//!   [`Flow`], ...) are the model crate's own, re-exported here so a
//!   backend or its user needs only this crate for the contract.

pub use hypertensor_model::{
    ChatTemplate, FinishReason, Flow, Generation, GenerationRequest, PromptTuning, SamplingParams,
    Tokenizer,
};

mod tunings;

pub use tunings::Tunings;

use std::sync::{Arc, Mutex};

use hypertensor_model::{
    BatchedModel, BatchedSession, LanguageModel, LocalModel, ModelError, generate,
};

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
    /// The server is at capacity (no room for the request's cache): retry
    /// when a generation ends.
    #[error("{0}")]
    Full(String),
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
    /// Transformer blocks of the model (wherever they run).
    fn block_count(&self) -> usize;
    /// The trained prompts served beside the plain model.
    fn tunings(&self) -> &Tunings {
        Tunings::none()
    }
    /// Runs one generation, after the trained prompt `tuning` if given
    /// (one of [`Backend::tunings`]), calling `on_text` once per generated
    /// token with the text it made certain (possibly empty); `Flow::Stop`
    /// from it cancels the generation before the next step.
    fn generate(
        &self,
        request: &GenerationRequest,
        tuning: Option<&PromptTuning>,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, BackendError>;
    /// A JSON description of the serving swarm (servers, spans, coverage),
    /// for `GET /v1/swarm`; `None` for a local model, an error when the
    /// swarm cannot be read now. Called on a blocking thread, like
    /// [`Backend::generate`].
    fn swarm(&self) -> Result<Option<serde_json::Value>, BackendError> {
        Ok(None)
    }
    /// Whether the blocks run in a swarm (`GET /v1/swarm` describes it)
    /// rather than in this process.
    fn serves_swarm(&self) -> bool {
        false
    }
}

/// A whole model in this process.
#[derive(Debug)]
pub struct LocalBackend {
    id: String,
    model: LocalModel,
    tunings: Tunings,
}

impl LocalBackend {
    /// Serves `model` under the name `id`.
    pub fn new(id: impl Into<String>, model: LocalModel) -> Self {
        Self {
            id: id.into(),
            model,
            tunings: Tunings::default(),
        }
    }

    /// Serves `tunings` too, each as its own model id.
    pub fn with_tunings(mut self, tunings: Tunings) -> Self {
        self.tunings = tunings;
        self
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

    fn block_count(&self) -> usize {
        self.model.config().n_blocks
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
        let mut session = match tuning {
            Some(tuning) => self.model.tuned_session(tuning)?,
            None => self.model.session(),
        };
        Ok(generate(
            &mut session,
            self.model.tokenizer(),
            request,
            on_text,
        )?)
    }
}

/// A whole model in this process serving many requests at once: their
/// steps run in shared batches ([`BatchedModel`]), and each generation
/// reserves its key/value cache in a budget first. What `hypertensor
/// serve` runs.
#[derive(Debug)]
pub struct BatchedBackend {
    id: String,
    model: BatchedModel,
    budget: Arc<CacheBudget>,
    tunings: Tunings,
}

/// Token positions of key/value cache the running generations may hold.
#[derive(Debug)]
struct CacheBudget {
    capacity: usize,
    used: Mutex<usize>,
}

/// A generation's positions, returned to the budget when dropped.
#[derive(Debug)]
struct CacheReservation {
    budget: Arc<CacheBudget>,
    positions: usize,
}

impl Drop for CacheReservation {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(self.positions);
    }
}

impl CacheBudget {
    /// Reserves `wanted` positions, or as many as are free if at least
    /// `needed`; else says how many are free.
    fn reserve(self: &Arc<Self>, wanted: usize, needed: usize) -> Result<CacheReservation, usize> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let free = self.capacity.saturating_sub(*used);
        if free < needed {
            return Err(free);
        }
        let positions = wanted.min(free);
        *used += positions;
        Ok(CacheReservation {
            budget: self.clone(),
            positions,
        })
    }
}

impl BatchedBackend {
    /// Serves `model` under the name `id`, with `cache_bytes` of key/value
    /// cache for all generations together.
    pub fn new(id: impl Into<String>, model: BatchedModel, cache_bytes: usize) -> Self {
        let per_token = model.model().cache_bytes_per_token().max(1);
        Self {
            id: id.into(),
            budget: Arc::new(CacheBudget {
                capacity: cache_bytes / per_token,
                used: Mutex::new(0),
            }),
            model,
            tunings: Tunings::default(),
        }
    }

    /// Serves `tunings` too, each as its own model id.
    pub fn with_tunings(mut self, tunings: Tunings) -> Self {
        self.tunings = tunings;
        self
    }

    /// The batched model (its batcher's counters among others).
    pub fn model(&self) -> &BatchedModel {
        &self.model
    }

    /// Token positions of cache not reserved now.
    pub fn free_cache_tokens(&self) -> usize {
        let used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
        self.budget.capacity.saturating_sub(*used)
    }
}

/// A batched sequence that reports its reservation as its context, so a
/// generation fitted to the free cache ends with `length` at its edge.
struct Reserved<'a> {
    session: BatchedSession<'a>,
    positions: usize,
}

impl LanguageModel for Reserved<'_> {
    fn forward(&mut self, tokens: &[u32]) -> hypertensor_model::Result<Vec<f32>> {
        self.session.forward(tokens)
    }

    fn reset(&mut self) {
        self.session.reset();
    }

    fn context_length(&self) -> usize {
        self.positions
    }
}

impl Backend for BatchedBackend {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn tokenizer(&self) -> &Tokenizer {
        self.model.model().tokenizer()
    }

    fn chat_template(&self) -> Option<&ChatTemplate> {
        self.model.model().chat_template()
    }

    fn context_length(&self) -> usize {
        self.model.model().config().context_length
    }

    fn block_count(&self) -> usize {
        self.model.model().config().n_blocks
    }

    fn tunings(&self) -> &Tunings {
        &self.tunings
    }

    /// Reserves the request's positions (a trained prompt's rows, prompt
    /// and completion), fitted to the free cache when there is room for
    /// the prompt and one token; when there is not, fails at once with
    /// [`BackendError::Full`] naming the free room, rather than queueing.
    fn generate(
        &self,
        request: &GenerationRequest,
        tuning: Option<&PromptTuning>,
        on_text: &mut dyn FnMut(&str) -> Flow,
    ) -> Result<Generation, BackendError> {
        let context = self.context_length();
        let rows = tuning.map_or(0, PromptTuning::tokens);
        let prompt = request.prompt.len().saturating_add(rows);
        let wanted = prompt.saturating_add(request.max_tokens).min(context);
        let needed = prompt.saturating_add(1).min(context);
        let reservation = self.budget.reserve(wanted, needed).map_err(|free| {
            BackendError::Full(format!(
                "the server is full: the request needs {needed} positions of key/value cache and {free} are free; retry when a generation ends"
            ))
        })?;
        let session = match tuning {
            Some(tuning) => self.model.tuned_session(tuning)?,
            None => self.model.session(),
        };
        let mut session = Reserved {
            session,
            // The sequence's own positions, after the prompt's rows.
            positions: reservation.positions.saturating_sub(rows),
        };
        let out = generate(
            &mut session,
            self.model.model().tokenizer(),
            request,
            on_text,
        )?;
        drop(reservation);
        Ok(out)
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
