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
use candle_core::quantized::gguf_file::{TensorInfo, Value};
use candle_core::quantized::{GgmlDType, QTensor};

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};

mod error;
mod header;

pub use error::GgufError;
pub use header::{DEFAULT_ALIGNMENT, GgufHeader, GgufLimits, MAX_ARRAY_NESTING, MAX_TENSOR_DIMS};

/// An open GGUF file whose header has been read and checked.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    header: GgufHeader,
    reads: Mutex<Vec<String>>,
}

impl GgufFile {
    /// Opens a GGUF file and validates its header and tensor table, with the
    /// default [`GgufLimits`].
    ///
    /// Fails with [`ModelError::InvalidGguf`] naming what is wrong if the
    /// file is not GGUF, declares impossible or excessive counts, lengths,
    /// alignment, dims or offsets, or is truncated (any tensor extending
    /// past the end of the file); see [`GgufHeader::read`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_limits(path, &GgufLimits::default())
    }

    /// Like [`GgufFile::open`], with explicit limits (to open a file larger
    /// than the defaults allow).
    pub fn open_with_limits(path: impl AsRef<Path>, limits: &GgufLimits) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| ModelError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let header =
            GgufHeader::read(BufReader::new(file), file_len, limits).map_err(|problem| {
                ModelError::InvalidGguf {
                    path: path.clone(),
                    problem,
                }
            })?;
        Ok(Self {
            path,
            header,
            reads: Mutex::new(Vec::new()),
        })
    }

    /// The checked header.
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All metadata key/value pairs of the file.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        self.header.metadata()
    }

    /// The model hyper-parameters, checking that the architecture is llama.
    pub fn config(&self) -> Result<ModelConfig> {
        ModelConfig::from_metadata(self.metadata())
    }

    /// Whether the file holds a tensor of this name.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.header.tensor(name).is_some()
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
            .read(&mut reader, self.header.tensor_data_offset(), &Device::Cpu)
            .map_err(|e| ModelError::InvalidGguf {
                path: self.path.clone(),
                problem: GgufError::ReadTensor {
                    name: name.into(),
                    reason: e.to_string(),
                },
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
        self.header.tensor(name).ok_or_else(|| ModelError::Tensor {
            name: name.to_string(),
            problem: "missing from the GGUF file".into(),
        })
    }
}
