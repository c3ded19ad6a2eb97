//! A whole model in one process: embedding, every block, head, tokenizer.

use std::path::Path;
use std::sync::Arc;

use crate::batch::{BatchConfig, Batcher, OpenSequence, StepOutput};
use crate::config::ModelConfig;
use crate::embedding::Embedding;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::head::Head;
use crate::hidden::HiddenStates;
use crate::kernels::Precision;
use crate::prompt::PromptTuning;
use crate::span::{BlockSpan, SpanCache};
use crate::tokenizer::{ChatTemplate, Tokenizer};

/// Something that turns token ids into next-token logits while remembering
/// the sequence so far: the local model, or a chain of servers in a swarm.
pub trait LanguageModel {
    /// Feeds the next `tokens` of the sequence and returns the logits that
    /// follow the last one. A model whose blocks run elsewhere fails with
    /// [`ModelError::Unavailable`](crate::ModelError::Unavailable) when that
    /// backend cannot serve the step.
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;
    /// Forgets the sequence, to start a new one.
    fn reset(&mut self);
    /// Number of positions the model can attend to.
    fn context_length(&self) -> usize;
}

/// Every part of a GGUF model, loaded locally.
#[derive(Debug)]
pub struct LocalModel {
    config: ModelConfig,
    embedding: Embedding,
    blocks: Arc<BlockSpan>,
    head: Arc<Head>,
    tokenizer: Tokenizer,
    chat_template: Option<ChatTemplate>,
}

impl LocalModel {
    /// Loads a GGUF file of the llama family.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with_precision(path, Precision::default())
    }

    /// Like [`LocalModel::load`], choosing how products are computed.
    pub fn load_with_precision(path: impl AsRef<Path>, precision: Precision) -> Result<Self> {
        let gguf = GgufFile::open(path)?;
        let config = gguf.config()?;
        let tokenizer = Tokenizer::from_gguf(gguf.metadata())?;
        let chat_template = ChatTemplate::from_gguf(gguf.metadata()).ok();
        let embedding = Embedding::load(&gguf)?;
        let blocks = BlockSpan::load_with_precision(&gguf, 0..config.n_blocks, precision)?;
        let head = Head::load_with_precision(&gguf, Some(&embedding), precision)?;
        Ok(Self {
            config,
            embedding,
            blocks: Arc::new(blocks),
            head: Arc::new(head),
            tokenizer,
            chat_template,
        })
    }

    /// The model hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The tokenizer built from the file's metadata.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template the file carries, if any.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// Bytes of key/value cache one token position takes.
    pub fn cache_bytes_per_token(&self) -> usize {
        self.blocks.cache_bytes_per_token()
    }

    /// A fresh sequence over this model.
    pub fn session(&self) -> LocalSession<'_> {
        LocalSession {
            model: self,
            cache: self.blocks.new_cache(),
            tuning: None,
        }
    }

    /// A fresh sequence that starts with a trained prompt's rows (and adds
    /// its deep rows in every block). Fails on a prompt of another shape
    /// than this model's.
    pub fn tuned_session(&self, tuning: &PromptTuning) -> Result<LocalSession<'_>> {
        Ok(LocalSession {
            model: self,
            cache: tuned_cache(&self.blocks, tuning)?,
            tuning: Some(tuning.clone()),
        })
    }

    /// This model behind a batching thread: concurrent sequences share
    /// each forward pass (see [`crate::batch`]).
    pub fn batched(self, config: BatchConfig) -> BatchedModel {
        let batcher = Batcher::start(self.blocks.clone(), Some(self.head.clone()), config);
        BatchedModel {
            model: self,
            batcher,
        }
    }
}

/// A [`LocalModel`] whose sequences are run in shared batches: what a
/// server answering many requests at once uses. Each sequence's logits
/// are bit for bit those of [`LocalModel::session`].
#[derive(Debug)]
pub struct BatchedModel {
    model: LocalModel,
    batcher: Batcher,
}

impl BatchedModel {
    /// The model underneath (tokenizer, chat template, configuration).
    pub fn model(&self) -> &LocalModel {
        &self.model
    }

    /// The batching thread (its parameters and counters).
    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    /// A fresh sequence, counted as open (batches wait for its steps)
    /// until it drops.
    pub fn session(&self) -> BatchedSession<'_> {
        BatchedSession {
            model: self,
            cache: Some(self.model.blocks.new_cache()),
            tuning: None,
            _open: self.batcher.open(),
        }
    }

    /// A fresh sequence tuned with a trained prompt, as
    /// [`LocalModel::tuned_session`]: batched with any others, tuned or
    /// not.
    pub fn tuned_session(&self, tuning: &PromptTuning) -> Result<BatchedSession<'_>> {
        Ok(BatchedSession {
            model: self,
            cache: Some(tuned_cache(&self.model.blocks, tuning)?),
            tuning: Some(tuning.clone()),
            _open: self.batcher.open(),
        })
    }
}

/// A new cache of all `blocks` for a sequence tuned with `tuning`.
fn tuned_cache(blocks: &BlockSpan, tuning: &PromptTuning) -> Result<SpanCache> {
    let width = blocks.config().hidden_size;
    if tuning.width() != width {
        return Err(ModelError::InvalidInput(format!(
            "the prompt's rows have width {}, the model's hidden size is {width}",
            tuning.width()
        )));
    }
    match tuning.deep() {
        Some(deep) => blocks.new_cache_with(deep.clone()),
        None => Ok(blocks.new_cache()),
    }
}

/// The rows a step of a sequence feeds its blocks: the token embeddings,
/// after the trained prompt's rows on the sequence's first step.
fn step_rows(
    embedding: &Embedding,
    tokens: &[u32],
    tuning: Option<&PromptTuning>,
    cache: Option<&SpanCache>,
) -> Result<HiddenStates> {
    let embedded = embedding.forward(tokens)?;
    match tuning {
        Some(tuning) if cache.is_some_and(|c| c.positions() == 0) => tuning.prefixed(&embedded),
        _ => Ok(embedded),
    }
}

/// The context left to a sequence's tokens once a prompt took its rows.
fn context_after(config: &ModelConfig, tuning: Option<&PromptTuning>) -> usize {
    config
        .context_length
        .saturating_sub(tuning.map_or(0, PromptTuning::tokens))
}

/// A new cache for a sequence restarting with `tuning` (checked when the
/// session began).
fn fresh_cache(blocks: &BlockSpan, tuning: Option<&PromptTuning>) -> SpanCache {
    tuning
        .and_then(|t| tuned_cache(blocks, t).ok())
        .unwrap_or_else(|| blocks.new_cache())
}

/// One sequence of a [`BatchedModel`].
#[derive(Debug)]
pub struct BatchedSession<'a> {
    model: &'a BatchedModel,
    /// `None` only if a step lost it (the batching thread stopped).
    cache: Option<crate::span::SpanCache>,
    tuning: Option<PromptTuning>,
    _open: OpenSequence,
}

impl LanguageModel for BatchedSession<'_> {
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let hidden = step_rows(
            &self.model.model.embedding,
            tokens,
            self.tuning.as_ref(),
            self.cache.as_ref(),
        )?;
        let cache = self.cache.take().ok_or_else(|| {
            ModelError::Unavailable("the sequence's cache was lost with the batching thread".into())
        })?;
        let (cache, outcome) = self.model.batcher.run(cache, hidden);
        self.cache = Some(cache);
        match outcome? {
            StepOutput::Logits(logits) => Ok(logits),
            StepOutput::Hidden(_) => {
                Err(ModelError::InvalidInput("the batcher has no head".into()))
            }
        }
    }

    fn reset(&mut self) {
        self.cache = Some(fresh_cache(&self.model.model.blocks, self.tuning.as_ref()));
    }

    fn context_length(&self) -> usize {
        context_after(&self.model.model.config, self.tuning.as_ref())
    }
}

/// One sequence being generated by a [`LocalModel`].
#[derive(Debug)]
pub struct LocalSession<'a> {
    model: &'a LocalModel,
    cache: SpanCache,
    tuning: Option<PromptTuning>,
}

impl LanguageModel for LocalSession<'_> {
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let mut hidden = step_rows(
            &self.model.embedding,
            tokens,
            self.tuning.as_ref(),
            Some(&self.cache),
        )?;
        self.model.blocks.forward(&mut hidden, &mut self.cache)?;
        self.model.head.forward_last(&hidden)
    }

    fn reset(&mut self) {
        self.cache = fresh_cache(&self.model.blocks, self.tuning.as_ref());
    }

    fn context_length(&self) -> usize {
        context_after(&self.model.config, self.tuning.as_ref())
    }
}
