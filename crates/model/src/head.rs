//! The output head: final RMS norm and the projection to vocabulary logits.

use std::sync::Arc;

use crate::config::LlamaConfig;
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
    norm: RmsNorm,
    output: Arc<QMatrix>,
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
        let config: LlamaConfig = gguf.config()?;
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
        let mut normed = vec![0.0; self.hidden_size];
        self.norm.forward(last, &mut normed);
        let mut logits = vec![0.0; self.output.rows()];
        crate::pool::run(|| self.output.matmul(&normed, &mut logits));
        Ok(logits)
    }
}
