//! Training through a span: the forward pass that keeps each block's
//! activations, with deep prompt vectors added to each block's input, and
//! the backward pass giving the gradients with respect to the span's
//! input and to every block's prompts (deep prompt tuning, as Petals
//! trains it: the servers' weights stay frozen).

use super::BlockSpan;
use crate::block::{BlockTape, DenseWeights};
use crate::error::{ModelError, Result};
use crate::hidden::HiddenStates;

/// A span's weights dequantized to f32, which its training passes run on:
/// made once for as long as training goes on (a trainer's whole run, a
/// server's one request) and dropped after.
#[derive(Debug)]
pub struct TrainingWeights {
    blocks: Vec<DenseWeights>,
    start: usize,
}

/// What [`BlockSpan::forward_train`] kept for [`BlockSpan::backward`].
#[derive(Debug, Clone)]
pub struct SpanTape {
    tapes: Vec<BlockTape>,
    positions: usize,
    prompt_rows: usize,
}

impl SpanTape {
    /// Floats held (every block's activations), for memory budgets.
    pub fn len(&self) -> usize {
        self.tapes.iter().map(BlockTape::len).sum()
    }

    /// Whether the tape is of an empty sequence.
    pub fn is_empty(&self) -> bool {
        self.positions == 0
    }

    /// Positions of the sequence the tape is of.
    pub fn positions(&self) -> usize {
        self.positions
    }
}

/// The gradients [`BlockSpan::backward`] computes.
#[derive(Debug, Clone)]
pub struct SpanGradients {
    /// With respect to the span's input hidden states.
    pub input: HiddenStates,
    /// With respect to each block's prompt vectors, in block order (empty
    /// when the forward had none): `prompt_rows * hidden` values each.
    pub prompts: Vec<Vec<f32>>,
}

impl BlockSpan {
    /// This span's weights in f32, for its training passes (about four
    /// bytes per weight: [`BlockSpan::training_weight_bytes`]).
    pub fn training_weights(&self) -> TrainingWeights {
        TrainingWeights {
            blocks: self.blocks.iter().map(|b| b.dense_weights()).collect(),
            start: self.range().start,
        }
    }

    /// Bytes [`BlockSpan::training_weights`] holds.
    pub fn training_weight_bytes(&self) -> usize {
        let c = self.config();
        let per_block = c.hidden_size * (2 * c.q_dim() + 2 * c.kv_dim() + 3 * c.intermediate_size);
        per_block * self.range().len() * std::mem::size_of::<f32>()
    }

    fn check_weights(&self, weights: &TrainingWeights) -> Result<()> {
        if weights.start != self.range().start || weights.blocks.len() != self.blocks.len() {
            return Err(ModelError::InvalidInput(
                "training weights of another span".into(),
            ));
        }
        Ok(())
    }

    /// Floats a [`SpanTape`] of a sequence of `positions` positions holds
    /// (an upper bound): what training one sequence through this span
    /// keeps in memory between its forward and backward passes.
    pub fn tape_len(&self, positions: usize) -> usize {
        let c = self.config();
        let per_block = positions
            * (4 * c.hidden_size + 3 * c.q_dim() + 3 * c.kv_dim() + 2 * c.intermediate_size + 6)
            + c.n_heads * positions * (positions + 1) / 2;
        per_block * self.range().len()
    }

    /// Runs one sequence `input` (positions `0..n`) through every block in
    /// f32 on `weights` (this span's), keeping what [`BlockSpan::backward`] needs. With `prompts`
    /// (one entry per block of the span, each `p * hidden` values, the
    /// same `p <= n` for all), block `b`'s prompt rows are added to the
    /// first `p` rows of its input: deep prompt tuning. Fails, changing
    /// nothing, on a wrong width or prompt shape.
    pub fn forward_train(
        &self,
        weights: &TrainingWeights,
        input: &HiddenStates,
        prompts: &[Vec<f32>],
    ) -> Result<(HiddenStates, SpanTape)> {
        self.check_weights(weights)?;
        let h = self.config().hidden_size;
        if input.width() != h {
            return Err(ModelError::InvalidInput(format!(
                "hidden states of width {} given to a span of width {h}",
                input.width()
            )));
        }
        let n = input.n_tokens();
        let prompt_rows = self.check_prompts(prompts, n)?;
        let mut x = input.as_slice().to_vec();
        let mut tapes = Vec::with_capacity(self.blocks.len());
        for (b, block) in self.blocks.iter().enumerate() {
            if let Some(prompt) = prompts.get(b) {
                super::add_prefix(&mut x, prompt);
            }
            let rope = self.ropes[self.rope_of_block[b]].table(0, n);
            tapes.push(block.forward_train(&weights.blocks[b], &mut x, &rope));
        }
        let output = HiddenStates::new(h, x)?;
        Ok((
            output,
            SpanTape {
                tapes,
                positions: n,
                prompt_rows,
            },
        ))
    }

    /// The gradients with respect to the span's input and its blocks'
    /// prompts, given `grad_output`, the gradient of the loss with respect
    /// to the span's output, for the forward `tape` kept. Fails on a tape
    /// of another span or a gradient of the wrong shape.
    pub fn backward(
        &self,
        weights: &TrainingWeights,
        tape: &SpanTape,
        grad_output: &HiddenStates,
    ) -> Result<SpanGradients> {
        self.check_weights(weights)?;
        let h = self.config().hidden_size;
        if tape.tapes.len() != self.blocks.len() {
            return Err(ModelError::InvalidInput(format!(
                "a tape of {} blocks given to a span of {}",
                tape.tapes.len(),
                self.blocks.len()
            )));
        }
        if grad_output.width() != h || grad_output.n_tokens() != tape.positions {
            return Err(ModelError::InvalidInput(format!(
                "a gradient of {} rows of width {} given for {} rows of width {h}",
                grad_output.n_tokens(),
                grad_output.width(),
                tape.positions
            )));
        }
        let mut grad = grad_output.as_slice().to_vec();
        let with_prompts = tape.prompt_rows > 0;
        let mut prompts = vec![Vec::new(); if with_prompts { self.blocks.len() } else { 0 }];
        for (b, block) in self.blocks.iter().enumerate().rev() {
            let rope = self.ropes[self.rope_of_block[b]].table(0, tape.positions);
            grad = block.backward(&weights.blocks[b], &tape.tapes[b], &grad, &rope);
            if with_prompts {
                // The prompt was added to the block's input: its gradient
                // is the input's, on the prompt's rows.
                prompts[b] = grad[..tape.prompt_rows * h].to_vec();
            }
        }
        Ok(SpanGradients {
            input: HiddenStates::new(h, grad)?,
            prompts,
        })
    }

    /// The rows each prompt covers (0 without prompts), or why `prompts`
    /// do not fit this span and a sequence of `n` positions.
    fn check_prompts(&self, prompts: &[Vec<f32>], n: usize) -> Result<usize> {
        if prompts.is_empty() {
            return Ok(0);
        }
        let h = self.config().hidden_size;
        if prompts.len() != self.blocks.len() {
            return Err(ModelError::InvalidInput(format!(
                "{} prompts given to a span of {} blocks (one per block)",
                prompts.len(),
                self.blocks.len()
            )));
        }
        let len = prompts[0].len();
        if len == 0 || !len.is_multiple_of(h) || prompts.iter().any(|p| p.len() != len) {
            return Err(ModelError::InvalidInput(format!(
                "every prompt must hold the same whole number of rows of width {h}"
            )));
        }
        let rows = len / h;
        if rows > n {
            return Err(ModelError::InvalidInput(format!(
                "prompts of {rows} rows for a sequence of {n} positions"
            )));
        }
        if let Some(bad) = prompts.iter().flatten().find(|v| !v.is_finite()) {
            return Err(ModelError::InvalidInput(format!(
                "a prompt holds the non-finite value {bad}"
            )));
        }
        Ok(rows)
    }
}
