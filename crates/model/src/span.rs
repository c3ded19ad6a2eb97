//! A contiguous span of transformer blocks that loads and runs on its own.
//!
//! A span holds only its own blocks' weights; every sequence it serves has
//! its own [`SpanCache`], so one span can serve many sessions.

use std::ops::Range;
use std::sync::Arc;

use crate::block::{KvCache, TransformerBlock};
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::hidden::HiddenStates;
use crate::kernels::Precision;
use crate::layers::{Rope, RopeTable, load_vector};
use crate::prompt::DeepPrompts;

/// GGUF name of Llama 3's RoPE frequency factors.
mod train;

pub use train::{SpanGradients, SpanTape, TrainingWeights};

const ROPE_FREQS_TENSOR: &str = "rope_freqs.weight";

/// Adds `prefix` (whole rows) to the first rows of `x`.
fn add_prefix(x: &mut [f32], prefix: &[f32]) {
    for (a, b) in x.iter_mut().zip(prefix) {
        *a += b;
    }
}

/// Blocks `start..end` of a model.
#[derive(Debug, Clone)]
pub struct BlockSpan {
    config: Arc<ModelConfig>,
    range: Range<usize>,
    blocks: Vec<TransformerBlock>,
    /// The distinct rotations the span's blocks use (one, or a local and a
    /// global one), and which one each block uses.
    ropes: Vec<Rope>,
    rope_of_block: Vec<usize>,
}

/// The key/value caches of one sequence in one span.
#[derive(Debug, Clone)]
pub struct SpanCache {
    layers: Vec<KvCache>,
    positions: usize,
    /// The sequence's deep prompt rows for these blocks, if it is tuned.
    prompts: Option<DeepPrompts>,
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

    /// The deep prompt rows every forward over this cache adds.
    pub fn prompts(&self) -> Option<&DeepPrompts> {
        self.prompts.as_ref()
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
        // Llama 3's per-frequency factors, shared by every block.
        let freq_factors = if gguf.has_tensor(ROPE_FREQS_TENSOR) {
            Some(load_vector(gguf, ROPE_FREQS_TENSOR, config.head_dim / 2)?)
        } else {
            None
        };
        let mut ropes: Vec<Rope> = Vec::new();
        let mut rope_of_block = Vec::with_capacity(blocks.len());
        for i in range.clone() {
            let rope = Rope::new(
                config.head_dim,
                config.rope_theta_of(i),
                config.rope_scale_of(i),
                freq_factors.as_deref(),
                config.rope_layout,
            );
            let at = match ropes.iter().position(|r| *r == rope) {
                Some(at) => at,
                None => {
                    ropes.push(rope);
                    ropes.len() - 1
                }
            };
            rope_of_block.push(at);
        }
        Ok(Self {
            ropes,
            rope_of_block,
            config,
            range,
            blocks,
        })
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
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
            prompts: None,
        }
    }

    /// An empty cache for a sequence tuned with deep `prompts` (one per
    /// block of this span): every forward over it adds block `b`'s rows to
    /// that block's input at the prompt's positions, as
    /// [`BlockSpan::forward_train`] does. Fails on prompts of another
    /// shape or longer than the context.
    pub fn new_cache_with(&self, prompts: DeepPrompts) -> Result<SpanCache> {
        if prompts.block_count() != self.blocks.len() || prompts.hidden() != self.config.hidden_size
        {
            return Err(ModelError::InvalidInput(format!(
                "deep prompts for {} blocks of width {} given to a span of {} blocks of width {}",
                prompts.block_count(),
                prompts.hidden(),
                self.blocks.len(),
                self.config.hidden_size
            )));
        }
        if prompts.rows() > self.config.context_length {
            return Err(ModelError::ContextOverflow {
                requested: prompts.rows(),
                limit: self.config.context_length,
            });
        }
        Ok(SpanCache {
            prompts: Some(prompts),
            ..self.new_cache()
        })
    }

    /// Runs `hidden` (the next tokens of the sequence) through every block.
    ///
    /// Fails, changing nothing, if the states have the wrong width or the
    /// sequence would outgrow the model's context.
    pub fn forward(&self, hidden: &mut HiddenStates, cache: &mut SpanCache) -> Result<()> {
        self.forward_batch(&mut [(hidden, cache)])
    }

    /// Runs the next rows of several sequences through every block in one
    /// pass over the weights: each entry is a sequence's new hidden states
    /// (replaced by the span's outputs) and its cache. Decoding many
    /// sequences at once reads the weights once instead of once per
    /// sequence.
    ///
    /// Each sequence's outputs and cache are bit for bit what
    /// [`BlockSpan::forward`] gives it alone: products are row by row and
    /// attention stays within a sequence. Fails, changing nothing, if any
    /// entry has the wrong width, belongs to another span, or would outgrow
    /// the model's context (the error names the entry).
    pub fn forward_batch(&self, batch: &mut [(&mut HiddenStates, &mut SpanCache)]) -> Result<()> {
        for (i, (hidden, cache)) in batch.iter().enumerate() {
            self.check_entry(hidden, cache).map_err(|e| match e {
                ModelError::InvalidInput(m) if batch.len() > 1 => {
                    ModelError::InvalidInput(format!("sequence {i} of the batch: {m}"))
                }
                other => other,
            })?;
        }
        let h = self.config.hidden_size;
        let lens: Vec<usize> = batch.iter().map(|(hidden, _)| hidden.n_tokens()).collect();
        if batch.is_empty() {
            return Ok(());
        }
        let mut x = Vec::with_capacity(lens.iter().sum::<usize>() * h);
        // Each tuned sequence's rows, where they start in `x` and in it.
        let mut tuned = Vec::new();
        for (hidden, cache) in batch.iter() {
            if let Some(prompts) = &cache.prompts
                && cache.positions < prompts.rows()
            {
                tuned.push((x.len(), hidden.n_tokens(), cache.positions, prompts.clone()));
            }
            x.extend_from_slice(hidden.as_slice());
        }
        let tables: Vec<RopeTable> = self
            .ropes
            .iter()
            .map(|rope| {
                let mut entries = batch
                    .iter()
                    .map(|(hidden, cache)| rope.table(cache.positions, hidden.n_tokens()));
                let mut table = entries.next().expect("the batch is not empty");
                for rows in entries {
                    table.extend(&rows);
                }
                table
            })
            .collect();
        crate::pool::run(|| {
            for (l, block) in self.blocks.iter().enumerate() {
                let mut layer_caches: Vec<&mut KvCache> =
                    batch.iter_mut().map(|(_, c)| &mut c.layers[l]).collect();
                let table = &tables[self.rope_of_block[l]];
                for (first, rows, start, prompts) in &tuned {
                    prompts.add_to(l, *start, &mut x[*first..*first + rows * h]);
                }
                block.forward(&mut x, &lens, &mut layer_caches, table);
            }
        });
        let mut first = 0;
        for ((hidden, cache), len) in batch.iter_mut().zip(&lens) {
            hidden
                .as_mut_slice()
                .copy_from_slice(&x[first * h..(first + len) * h]);
            cache.positions += len;
            first += len;
        }
        Ok(())
    }

    /// Whether `cache` was made by a span of this one's size.
    pub fn owns(&self, cache: &SpanCache) -> bool {
        cache.layers.len() == self.blocks.len()
    }

    /// Why `hidden` cannot be run on `cache` by this span, if it cannot.
    fn check_entry(&self, hidden: &HiddenStates, cache: &SpanCache) -> Result<()> {
        if hidden.width() != self.config.hidden_size {
            return Err(ModelError::InvalidInput(format!(
                "hidden states have width {}, the model's is {}",
                hidden.width(),
                self.config.hidden_size
            )));
        }
        if !self.owns(cache) {
            return Err(ModelError::InvalidInput(
                "cache belongs to a span of another size".into(),
            ));
        }
        let requested = cache.positions + hidden.n_tokens();
        if requested > self.config.context_length {
            return Err(ModelError::ContextOverflow {
                requested,
                limit: self.config.context_length,
            });
        }
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
        let tables: Vec<RopeTable> = self.ropes.iter().map(|r| r.table(0, n)).collect();
        let outputs = crate::pool::run(|| {
            self.blocks
                .iter()
                .zip(&self.rope_of_block)
                .map(|(block, &rope)| {
                    let mut hidden = input.clone();
                    let mut cache = KvCache::default();
                    block.forward(
                        hidden.as_mut_slice(),
                        &[n],
                        &mut [&mut cache],
                        &tables[rope],
                    );
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
