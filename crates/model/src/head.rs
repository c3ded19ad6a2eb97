//! The output head: final RMS norm and the projection to vocabulary logits.

use std::sync::Arc;

use crate::config::ModelConfig;
use crate::embedding::{EMBEDDING_TENSOR, Embedding};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::hidden::HiddenStates;
use crate::kernels::{Precision, QMatrix};
use crate::layers::RmsNorm;

const OUTPUT_TENSOR: &str = "output.weight";

/// Turns the last hidden states into next-token logits.
#[derive(Debug, Clone)]
pub struct Head {
    pub(crate) norm: RmsNorm,
    pub(crate) output: Arc<QMatrix>,
    hidden_size: usize,
}

impl Head {
    /// Loads `output_norm.weight` and `output.weight`, or the embedding table
    /// when the model ties its output to its input embeddings. Pass the
    /// already loaded `embedding` to share it instead of reading it again.
    pub fn load(gguf: &GgufFile, embedding: Option<&Embedding>) -> Result<Self> {
        Self::load_with_precision(gguf, embedding, Precision::default())
    }

    /// Like [`Head::load`], choosing how the output product is computed.
    pub fn load_with_precision(
        gguf: &GgufFile,
        embedding: Option<&Embedding>,
        precision: Precision,
    ) -> Result<Self> {
        let config: ModelConfig = gguf.config()?;
        let norm = RmsNorm::load(
            gguf,
            "output_norm.weight",
            config.hidden_size,
            config.rms_norm_eps,
        )?;
        let output = if gguf.has_tensor(OUTPUT_TENSOR) {
            Arc::new(QMatrix::from_qtensor(
                OUTPUT_TENSOR,
                &gguf.read_tensor(OUTPUT_TENSOR)?,
            )?)
        } else if let Some(embedding) = embedding {
            embedding.table()
        } else {
            Arc::new(QMatrix::from_qtensor(
                EMBEDDING_TENSOR,
                &gguf.read_tensor(EMBEDDING_TENSOR)?,
            )?)
        };
        if (output.rows(), output.cols()) != (config.vocab_size, config.hidden_size) {
            return Err(ModelError::Tensor {
                name: OUTPUT_TENSOR.into(),
                problem: format!(
                    "expected [{}, {}], found [{}, {}]",
                    config.vocab_size,
                    config.hidden_size,
                    output.rows(),
                    output.cols()
                ),
            });
        }
        let output = if precision == Precision::default() {
            output
        } else {
            Arc::new((*output).clone().with_precision(precision))
        };
        Ok(Self {
            norm,
            output,
            hidden_size: config.hidden_size,
        })
    }

    /// Logits of the next token after the last row of `hidden`.
    pub fn forward_last(&self, hidden: &HiddenStates) -> Result<Vec<f32>> {
        if hidden.width() != self.hidden_size || hidden.n_tokens() == 0 {
            return Err(ModelError::InvalidInput(format!(
                "head needs at least one row of width {}, got {} rows of {}",
                self.hidden_size,
                hidden.n_tokens(),
                hidden.width()
            )));
        }
        let last = hidden.row(hidden.n_tokens() - 1);
        Ok(self.forward_rows(&[last])?.pop().unwrap_or_default())
    }

    /// Logits after each of `rows` (hidden states of several sequences'
    /// last tokens) in one product over the output matrix. Each row's
    /// logits are bit for bit what [`Head::forward_last`] gives it alone.
    pub fn forward_rows(&self, rows: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let h = self.hidden_size;
        if let Some(bad) = rows.iter().find(|r| r.len() != h) {
            return Err(ModelError::InvalidInput(format!(
                "head needs rows of width {h}, got one of {}",
                bad.len()
            )));
        }
        let mut normed = vec![0.0; rows.len() * h];
        for (row, out) in rows.iter().zip(normed.chunks_exact_mut(h)) {
            self.norm.forward(row, out);
        }
        let vocab = self.output.rows();
        let mut logits = vec![0.0; rows.len() * vocab];
        crate::pool::run(|| self.output.matmul(&normed, &mut logits));
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }
}
