//! A contiguous span of transformer blocks that loads and runs on its own.
//!
//! A span holds only its own blocks' weights; every sequence it serves has
//! its own [`SpanCache`], so one span can serve many sessions.

use std::ops::Range;
use std::sync::Arc;

use crate::block::{KvCache, TransformerBlock};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::hidden::HiddenStates;
use crate::kernels::Precision;
use crate::layers::Rope;

/// Blocks `start..end` of a model.
#[derive(Debug, Clone)]
pub struct BlockSpan {
    config: Arc<LlamaConfig>,
    range: Range<usize>,
    blocks: Vec<TransformerBlock>,
    rope: Rope,
}

/// The key/value caches of one sequence in one span.
#[derive(Debug, Clone)]
pub struct SpanCache {
    layers: Vec<KvCache>,
    positions: usize,
}

impl SpanCache {
    /// Number of token positions already processed.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// Bytes of keys and values held.
    pub fn byte_len(&self) -> usize {
        self.layers.iter().map(KvCache::byte_len).sum()
    }
}

impl BlockSpan {
    /// Loads blocks `range` from `gguf`, reading no other block's tensors.
    pub fn load(gguf: &GgufFile, range: Range<usize>) -> Result<Self> {
        Self::load_with_precision(gguf, range, Precision::default())
    }

    /// Like [`BlockSpan::load`], choosing how products are computed.
    pub fn load_with_precision(
        gguf: &GgufFile,
        range: Range<usize>,
        precision: Precision,
    ) -> Result<Self> {
        let config = Arc::new(gguf.config()?);
        if range.start >= range.end || range.end > config.n_blocks {
            return Err(ModelError::InvalidSpan {
                start: range.start,
                end: range.end,
                n_blocks: config.n_blocks,
            });
        }
        let blocks = range
            .clone()
            .map(|i| TransformerBlock::load(gguf, config.clone(), i, precision))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            rope: Rope::new(config.head_dim, config.rope_theta),
            config,
            range,
            blocks,
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The blocks this span runs.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }

    /// Bytes of weights held.
    pub fn byte_len(&self) -> usize {
        self.blocks.iter().map(TransformerBlock::byte_len).sum()
    }

    /// Bytes of key/value cache one token position takes in this span.
    pub fn cache_bytes_per_token(&self) -> usize {
        self.blocks.len() * 2 * self.config.kv_dim() * std::mem::size_of::<f32>()
    }

    /// An empty cache for a new sequence.
    pub fn new_cache(&self) -> SpanCache {
        SpanCache {
            layers: vec![KvCache::default(); self.blocks.len()],
            positions: 0,
        }
    }

    /// Runs `hidden` (the next tokens of the sequence) through every block.
    ///
    /// Fails, changing nothing, if the states have the wrong width or the
    /// sequence would outgrow the model's context.
    pub fn forward(&self, hidden: &mut HiddenStates, cache: &mut SpanCache) -> Result<()> {
        if hidden.width() != self.config.hidden_size {
            return Err(ModelError::InvalidInput(format!(
                "hidden states have width {}, the model's is {}",
                hidden.width(),
                self.config.hidden_size
            )));
        }
        if cache.layers.len() != self.blocks.len() {
            return Err(ModelError::InvalidInput(
                "cache belongs to a span of another size".into(),
            ));
        }
        let n = hidden.n_tokens();
        let requested = cache.positions + n;
        if requested > self.config.context_length {
            return Err(ModelError::ContextOverflow {
                requested,
                limit: self.config.context_length,
            });
        }
        let table = self.rope.table(cache.positions, n);
        crate::pool::run(|| {
            for (block, layer_cache) in self.blocks.iter().zip(&mut cache.layers) {
                block.forward(hidden.as_mut_slice(), layer_cache, &table);
            }
        });
        cache.positions = requested;
        Ok(())
    }

    /// Runs the same `input` through each block of the span on its own (fresh
    /// cache, positions from 0) and returns each block's output in span order:
    /// what a hoster sketches for the consensus challenge (SPEC §6), where
    /// every block must be comparable between hosters whatever their spans.
    ///
    /// Block `b`'s output is bit for bit what a one-block span `b..b + 1`
    /// gives from [`BlockSpan::forward`] with a new cache. Fails, computing
    /// nothing, if the states have the wrong width or more tokens than the
    /// model's context.
    pub fn forward_each_block(&self, input: &HiddenStates) -> Result<Vec<HiddenStates>> {
        if input.width() != self.config.hidden_size {
            return Err(ModelError::InvalidInput(format!(
                "hidden states have width {}, the model's is {}",
                input.width(),
                self.config.hidden_size
            )));
        }
        let n = input.n_tokens();
        if n > self.config.context_length {
            return Err(ModelError::ContextOverflow {
                requested: n,
                limit: self.config.context_length,
            });
        }
        let table = self.rope.table(0, n);
        let outputs = crate::pool::run(|| {
            self.blocks
                .iter()
                .map(|block| {
                    let mut hidden = input.clone();
                    let mut cache = KvCache::default();
                    block.forward(hidden.as_mut_slice(), &mut cache, &table);
                    hidden
                })
                .collect()
        });
        Ok(outputs)
    }

    /// Forgets every position from `positions` on (to rewind a sequence).
    pub fn truncate(&self, cache: &mut SpanCache, positions: usize) {
        for (block, layer_cache) in self.blocks.iter().zip(&mut cache.layers) {
            block.truncate_cache(layer_cache, positions);
            debug_assert!(block.cache_len(layer_cache) <= positions);
        }
        cache.positions = cache.positions.min(positions);
    }
}
