//! Reading GGUF files: metadata, and individual tensors on demand.
//!
//! Opening a file reads only its header. Tensors are read one at a time by
//! name, so a server that runs blocks 10..20 never touches the bytes of the
//! other blocks. Every read is recorded, which lets tests prove it.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::{GgmlDType, QTensor};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};

/// An open GGUF file whose header has been read and checked.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reads: Mutex<Vec<String>>,
}

impl GgufFile {
    /// Opens a GGUF file and validates its header and tensor table.
    ///
    /// Fails with a clear error if the file is missing, is not GGUF, or is
    /// truncated (any tensor extending past the end of the file).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| ModelError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| ModelError::InvalidGguf {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        for (name, info) in &content.tensor_infos {
            let end = tensor_byte_len(info)
                .and_then(|len| {
                    content
                        .tensor_data_offset
                        .checked_add(info.offset)?
                        .checked_add(len)
                })
                .ok_or_else(|| ModelError::InvalidGguf {
                    path: path.clone(),
                    reason: format!("tensor `{name}` has an impossible size or offset"),
                })?;
            if end > file_len {
                return Err(ModelError::InvalidGguf {
                    path: path.clone(),
                    reason: format!(
                        "truncated: tensor `{name}` ends at byte {end} but the file has {file_len} bytes"
                    ),
                });
            }
        }
        Ok(Self {
            path,
            content,
            reads: Mutex::new(Vec::new()),
        })
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All metadata key/value pairs of the file.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.content.metadata
    }

    /// The model hyper-parameters, checking that the architecture is llama.
    pub fn config(&self) -> Result<LlamaConfig> {
        LlamaConfig::from_metadata(self.metadata())
    }

    /// Whether the file holds a tensor of this name.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The storage type and dims (outermost first) of a tensor.
    pub fn tensor_info(&self, name: &str) -> Result<(GgmlDType, Vec<usize>)> {
        let info = self.info(name)?;
        Ok((info.ggml_dtype, info.shape.dims().to_vec()))
    }

    /// Reads one tensor from disk, and records that it was read.
    pub fn read_tensor(&self, name: &str) -> Result<QTensor> {
        let info = self.info(name)?;
        let file = File::open(&self.path).map_err(|source| ModelError::Io {
            path: self.path.clone(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let tensor = info
            .read(&mut reader, self.content.tensor_data_offset, &Device::Cpu)
            .map_err(|e| ModelError::InvalidGguf {
                path: self.path.clone(),
                reason: format!("reading tensor `{name}`: {e}"),
            })?;
        self.reads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(name.to_string());
        Ok(tensor)
    }

    /// Names of the tensors read so far, in order.
    pub fn tensors_read(&self) -> Vec<String> {
        self.reads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.content
            .tensor_infos
            .get(name)
            .ok_or_else(|| ModelError::Tensor {
                name: name.to_string(),
                problem: "missing from the GGUF file".into(),
            })
    }
}

fn tensor_byte_len(info: &TensorInfo) -> Option<u64> {
    let elems = info.shape.elem_count();
    let block = info.ggml_dtype.block_size();
    if !elems.is_multiple_of(block) {
        return None;
    }
    u64::try_from((elems / block).checked_mul(info.ggml_dtype.type_size())?).ok()
}
