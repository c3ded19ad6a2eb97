//! Trained soft prompts as they are served: rows put before a sequence's
//! token embeddings (shallow), and rows added to each block's input at the
//! sequence's first positions (deep), exactly as
//! [`crate::tune::Tuner`] trained them.
//!
//! A prompt's rows take the sequence's first positions, so a tuned
//! sequence has that many fewer for its tokens. Deep rows travel with a
//! sequence's [`crate::SpanCache`]: every forward over the cache, alone or
//! batched, adds them where they belong.

use std::path::Path;
use std::sync::Arc;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::hidden::HiddenStates;
use crate::tune::SoftPrompts;

/// Rows added to the input of each block of a span at a sequence's first
/// positions: block `b`'s rows `0..rows` go to positions `0..rows`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepPrompts {
    rows: usize,
    hidden: usize,
    blocks: Arc<[Vec<f32>]>,
}

impl DeepPrompts {
    /// Prompts of `rows` rows of width `hidden` for consecutive blocks (one
    /// vector of `rows * hidden` values each). Fails on another shape or a
    /// value that is not finite.
    pub fn new(rows: usize, hidden: usize, blocks: Vec<Vec<f32>>) -> Result<Self> {
        if rows == 0 || hidden == 0 {
            return Err(ModelError::InvalidInput(
                "deep prompts need at least one row".into(),
            ));
        }
        for (b, values) in blocks.iter().enumerate() {
            if values.len() != rows * hidden {
                return Err(ModelError::InvalidInput(format!(
                    "the deep prompt of block {b} holds {} values, not {rows} rows of width {hidden}",
                    values.len()
                )));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::InvalidInput(format!(
                    "the deep prompt of block {b} holds a non-finite value"
                )));
            }
        }
        Ok(Self {
            rows,
            hidden,
            blocks: blocks.into(),
        })
    }

    /// Prompt rows per block.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Width of each row.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Blocks covered.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The rows of the `b`th block covered.
    pub fn block(&self, b: usize) -> &[f32] {
        &self.blocks[b]
    }

    /// Adds block `b`'s rows to the input rows `x` (of width `hidden`) of
    /// positions `start..start + x.len() / hidden`, where they overlap the
    /// prompt's.
    pub fn add_to(&self, b: usize, start: usize, x: &mut [f32]) {
        if start >= self.rows {
            return;
        }
        let h = self.hidden;
        let count = (self.rows - start).min(x.len() / h);
        let src = &self.blocks[b][start * h..(start + count) * h];
        x[..count * h]
            .iter_mut()
            .zip(src)
            .for_each(|(a, p)| *a += p);
    }
}

/// A trained prompt ready to serve on a model: what `--prompt-tuning`
/// loads.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptTuning {
    model: String,
    shallow: HiddenStates,
    deep: Option<DeepPrompts>,
}

impl PromptTuning {
    /// The prompts of `trained` for a model of `config`, checked to fit it
    /// (width, blocks, context).
    pub fn new(trained: &SoftPrompts, config: &ModelConfig) -> Result<Self> {
        if trained.hidden != config.hidden_size {
            return Err(ModelError::InvalidInput(format!(
                "the prompt's rows have width {}, the model's hidden size is {}",
                trained.hidden, config.hidden_size
            )));
        }
        if !trained.deep.is_empty() && trained.deep.len() != config.n_blocks {
            return Err(ModelError::InvalidInput(format!(
                "the prompt has deep rows for {} blocks, the model has {}",
                trained.deep.len(),
                config.n_blocks
            )));
        }
        if trained.tokens >= config.context_length {
            return Err(ModelError::InvalidInput(format!(
                "the prompt's {} rows leave no room in the model's context of {}",
                trained.tokens, config.context_length
            )));
        }
        let shallow = HiddenStates::new(trained.hidden, trained.shallow.clone())?;
        if shallow.n_tokens() != trained.tokens {
            return Err(ModelError::InvalidInput(format!(
                "the prompt holds {} rows, its header says {}",
                shallow.n_tokens(),
                trained.tokens
            )));
        }
        let deep = if trained.deep.is_empty() {
            None
        } else {
            Some(DeepPrompts::new(
                trained.tokens,
                trained.hidden,
                trained.deep.clone(),
            )?)
        };
        Ok(Self {
            model: trained.model.clone(),
            shallow,
            deep,
        })
    }

    /// Loads a file [`SoftPrompts::save`] wrote, for a model of `config`.
    pub fn load(path: &Path, config: &ModelConfig) -> Result<Self> {
        let trained = SoftPrompts::load(path)?;
        Self::new(&trained, config)
            .map_err(|e| ModelError::InvalidInput(format!("{}: {e}", path.display())))
    }

    /// The model the prompt was trained for (its name in DHT keys).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Positions the prompt takes at the start of every sequence.
    pub fn tokens(&self) -> usize {
        self.shallow.n_tokens()
    }

    /// Width of the prompt's rows (the model's hidden size).
    pub fn width(&self) -> usize {
        self.shallow.width()
    }

    /// The per-block rows, if the prompt is deep.
    pub fn deep(&self) -> Option<&DeepPrompts> {
        self.deep.as_ref()
    }

    /// `embedded` (a sequence's first token rows) after the prompt's rows.
    pub fn prefixed(&self, embedded: &HiddenStates) -> Result<HiddenStates> {
        let mut rows = self.shallow.as_slice().to_vec();
        rows.extend_from_slice(embedded.as_slice());
        HiddenStates::new(self.shallow.width(), rows)
    }
}
