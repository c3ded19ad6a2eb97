//! Hidden states: the activations that flow between embedding, block spans
//! and head (and, later, between servers).

use crate::error::{ModelError, Result};

/// A row-major `[n_tokens, width]` matrix of f32 activations.
#[derive(Debug, Clone, PartialEq)]
pub struct HiddenStates {
    width: usize,
    data: Vec<f32>,
}

impl HiddenStates {
    /// Wraps `data` as rows of `width` values, checking the shape.
    pub fn new(width: usize, data: Vec<f32>) -> Result<Self> {
        if width == 0 || !data.len().is_multiple_of(width) {
            return Err(ModelError::InvalidInput(format!(
                "{} values do not form rows of width {width}",
                data.len()
            )));
        }
        Ok(Self { width, data })
    }

    /// Number of token positions (rows).
    pub fn n_tokens(&self) -> usize {
        self.data.len() / self.width
    }

    /// Width of each row (the model's hidden size).
    pub fn width(&self) -> usize {
        self.width
    }

    /// All values, row after row.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// All values, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// One token's row.
    pub fn row(&self, t: usize) -> &[f32] {
        &self.data[t * self.width..(t + 1) * self.width]
    }

    /// Consumes the states, returning the raw values.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// The last `n` rows (the newest tokens).
    pub fn last_rows(&self, n: usize) -> Result<Self> {
        let total = self.n_tokens();
        if n > total {
            return Err(ModelError::InvalidInput(format!(
                "asked for the last {n} of {total} rows"
            )));
        }
        Ok(Self {
            width: self.width,
            data: self.data[(total - n) * self.width..].to_vec(),
        })
    }
}
