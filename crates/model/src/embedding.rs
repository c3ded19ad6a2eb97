//! The token embedding table: token ids in, hidden states out.

use std::sync::Arc;

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::hidden::HiddenStates;
use crate::kernels::QMatrix;

/// GGUF name of the embedding table.
pub(crate) const EMBEDDING_TENSOR: &str = "token_embd.weight";

/// Maps token ids to their embedding rows.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Arc<QMatrix>,
    /// Factor applied to every looked-up row (Gemma scales by sqrt(width)).
    scale: Option<f32>,
}

impl Embedding {
    /// Loads `token_embd.weight` (and nothing else).
    pub fn load(gguf: &GgufFile) -> Result<Self> {
        let config = gguf.config()?;
        let table = QMatrix::from_qtensor(EMBEDDING_TENSOR, &gguf.read_tensor(EMBEDDING_TENSOR)?)?;
        if (table.rows(), table.cols()) != (config.vocab_size, config.hidden_size) {
            return Err(ModelError::Tensor {
                name: EMBEDDING_TENSOR.into(),
                problem: format!(
                    "expected [{}, {}], found [{}, {}]",
                    config.vocab_size,
                    config.hidden_size,
                    table.rows(),
                    table.cols()
                ),
            });
        }
        Ok(Self {
            table: Arc::new(table),
            scale: config.embedding_scale,
        })
    }

    /// The table, for a head with tied weights.
    pub(crate) fn table(&self) -> Arc<QMatrix> {
        self.table.clone()
    }

    /// Looks up the embeddings of `tokens`.
    pub fn forward(&self, tokens: &[u32]) -> Result<HiddenStates> {
        let width = self.table.cols();
        let mut data = vec![0.0; tokens.len() * width];
        for (&id, row) in tokens.iter().zip(data.chunks_exact_mut(width)) {
            let id = id as usize;
            if id >= self.table.rows() {
                return Err(ModelError::InvalidInput(format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.table.rows()
                )));
            }
            self.table.dequantize_row(id, row);
            if let Some(scale) = self.scale {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        HiddenStates::new(width, data)
    }
}
