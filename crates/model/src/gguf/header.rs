//! A bounded reader of GGUF headers: metadata and the tensor table.
//!
//! Every value the file declares is checked before it is used to divide,
//! allocate or index: counts and lengths against the configured
//! [`GgufLimits`] and against the bytes that remain, `general.alignment`
//! for being a power of two, each tensor's dims, type and offset for being
//! possible and lying inside the file. Memory grows only with bytes actually
//! read, never with a declared length, so a 100-byte file cannot make the
//! reader reserve gigabytes.
//!
//! Values come out as candle's [`Value`] and [`TensorInfo`], which the rest
//! of the crate (tokenizer, tensor reads) already speaks.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{ErrorKind, Read};

use candle_core::Shape;
use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{TensorInfo, Value};

use super::error::GgufError;

type Result<T> = std::result::Result<T, GgufError>;

/// Alignment of tensor data when the file does not set `general.alignment`.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a GGUF tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_TENSOR_DIMS: u32 = 4;
/// Deepest nesting of metadata arrays accepted (models use at most 1).
pub const MAX_ARRAY_NESTING: usize = 4;

/// Upper bounds on what a GGUF header may declare.
///
/// The defaults hold every llama-family model published so far with a wide
/// margin (a 256k-token vocabulary and its merges are under a million
/// values and tens of megabytes), while bounding the memory a crafted file
/// can make the reader use to a few hundred megabytes. To open something
/// larger, pass raised limits to [`GgufFile::open_with_limits`](super::GgufFile::open_with_limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufLimits {
    /// Bytes of header (metadata and tensor table) read at most.
    pub max_header_bytes: u64,
    /// Most metadata key/value pairs.
    pub max_metadata_entries: u64,
    /// Most array elements, summed over all metadata arrays.
    pub max_metadata_values: u64,
    /// Longest string (key, value or tensor name), in bytes.
    pub max_string_bytes: u64,
    /// Most tensors.
    pub max_tensors: u64,
    /// Largest `general.alignment`.
    pub max_alignment: u64,
}

impl Default for GgufLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 256 << 20,
            max_metadata_entries: 1 << 16,
            max_metadata_values: 1 << 22,
            max_string_bytes: 16 << 20,
            max_tensors: 1 << 16,
            max_alignment: 1 << 20,
        }
    }
}

/// The checked header of a GGUF file.
#[derive(Debug)]
pub struct GgufHeader {
    version: u32,
    alignment: u64,
    metadata: HashMap<String, Value>,
    tensors: HashMap<String, TensorInfo>,
    tensor_data_offset: u64,
}

impl GgufHeader {
    /// Reads and checks a header from `reader`, positioned at the start of a
    /// file of `file_len` bytes.
    ///
    /// Only the header is read; `file_len` is what tensor extents are checked
    /// against, so a caller may pass a prefix of the file with its full
    /// length.
    pub fn read(reader: impl Read, file_len: u64, limits: &GgufLimits) -> Result<Self> {
        let mut src = Source {
            inner: reader,
            pos: 0,
            end: file_len.min(limits.max_header_bytes),
            file_len,
            max_header_bytes: limits.max_header_bytes,
        };
        let magic: [u8; 4] = src.array(|| "the magic bytes".into())?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic(magic));
        }
        let version = src.u32(|| "the version".into())?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        let tensor_count = src.u64(|| "the tensor count".into())?;
        let kv_count = src.u64(|| "the metadata count".into())?;
        check_limit("the tensor count", tensor_count, limits.max_tensors)?;
        check_limit("the metadata count", kv_count, limits.max_metadata_entries)?;
        // The smallest metadata entry: key length, type, one byte of value.
        // The smallest tensor entry: name length, n_dims, one dim, type, offset.
        let needed = kv_count
            .saturating_mul(8 + 4 + 1)
            .saturating_add(tensor_count.saturating_mul(8 + 4 + 8 + 4 + 8));
        src.fits(needed, || {
            format!("{kv_count} metadata entries and {tensor_count} tensors")
        })?;

        let mut budget = limits.max_metadata_values;
        let mut metadata = HashMap::new();
        for i in 0..kv_count {
            let key = src.string(limits, || format!("metadata key #{i}"))?;
            let value_type = src.u32(|| format!("the type of metadata key `{key}`"))?;
            let value = read_value(&mut src, limits, &mut budget, &key, value_type, 0)?;
            match metadata.entry(key) {
                Entry::Occupied(e) => return Err(GgufError::DuplicateKey(e.key().clone())),
                Entry::Vacant(e) => e.insert(value),
            };
        }
        let alignment = alignment(&metadata, limits)?;

        let mut table = Vec::new();
        let mut tensors = HashMap::new();
        for i in 0..tensor_count {
            let name = src.string(limits, || format!("the name of tensor #{i}"))?;
            let entry = read_tensor_info(&mut src, &name, alignment)?;
            table.push((name.clone(), entry.1));
            match tensors.entry(name) {
                Entry::Occupied(e) => return Err(GgufError::DuplicateTensor(e.key().clone())),
                Entry::Vacant(e) => e.insert(entry.0),
            };
        }
        let tensor_data_offset = src.pos.checked_next_multiple_of(alignment).ok_or_else(|| {
            GgufError::Alignment(format!("{alignment} overflows the data offset"))
        })?;
        check_extents(&tensors, &table, tensor_data_offset, file_len)?;
        Ok(Self {
            version,
            alignment,
            metadata,
            tensors,
            tensor_data_offset,
        })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// All metadata key/value pairs.
    pub fn metadata(&self) -> &HashMap<String, Value> {
        &self.metadata
    }

    /// Number of tensors in the table.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// Byte offset of the tensor data region in the file.
    pub fn tensor_data_offset(&self) -> u64 {
        self.tensor_data_offset
    }

    /// The table entry of one tensor.
    pub(crate) fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }
}

/// A reader that knows its position and how many bytes it may still read.
struct Source<R> {
    inner: R,
    pos: u64,
    /// Where reading must stop: the end of the file or the header limit.
    end: u64,
    file_len: u64,
    max_header_bytes: u64,
}

impl<R: Read> Source<R> {
    fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.pos)
    }

    /// Fails unless `needed` more bytes can be read.
    fn fits(&self, needed: u64, what: impl Fn() -> String) -> Result<()> {
        if needed <= self.remaining() {
            return Ok(());
        }
        if self.pos.saturating_add(needed) <= self.file_len {
            return Err(GgufError::OverLimit {
                what: format!("the header (at {})", what()),
                value: self.pos.saturating_add(needed),
                limit: self.max_header_bytes,
            });
        }
        if needed <= 8 {
            return Err(GgufError::Truncated {
                what: what(),
                at: self.pos,
            });
        }
        Err(GgufError::DoesNotFit {
            what: what(),
            needed,
            remaining: self.remaining(),
        })
    }

    fn fill(&mut self, buf: &mut [u8], what: impl Fn() -> String) -> Result<()> {
        let len = buf.len() as u64;
        self.fits(len, &what)?;
        let at = self.pos;
        self.inner.read_exact(buf).map_err(|source| {
            if source.kind() == ErrorKind::UnexpectedEof {
                GgufError::Truncated { what: what(), at }
            } else {
                GgufError::Io {
                    what: what(),
                    source,
                }
            }
        })?;
        self.pos += len;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: impl Fn() -> String) -> Result<[u8; N]> {
        let mut buf = [0; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    fn u32(&mut self, what: impl Fn() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl Fn() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A length-prefixed string, its length checked before any allocation.
    ///
    /// Trailing NULs are dropped and invalid UTF-8 replaced, as candle and
    /// llama.cpp tolerate both in published files.
    fn string(&mut self, limits: &GgufLimits, what: impl Fn() -> String) -> Result<String> {
        let len = self.u64(|| format!("the length of {}", what()))?;
        check_limit(
            &format!("the length of {}", what()),
            len,
            limits.max_string_bytes,
        )?;
        self.fits(len, &what)?;
        let mut bytes = vec![0; len as usize];
        self.fill(&mut bytes, &what)?;
        while bytes.last() == Some(&0) {
            bytes.pop();
        }
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

fn check_limit(what: &str, value: u64, limit: u64) -> Result<()> {
    if value > limit {
        return Err(GgufError::OverLimit {
            what: what.into(),
            value,
            limit,
        });
    }
    Ok(())
}

/// Smallest encoding of one value of a type, or `None` for an unknown type.
fn min_size(value_type: u32) -> Option<u64> {
    Some(match value_type {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,
        9 => 4 + 8,
        _ => return None,
    })
}

fn read_value<R: Read>(
    src: &mut Source<R>,
    limits: &GgufLimits,
    budget: &mut u64,
    key: &str,
    value_type: u32,
    depth: usize,
) -> Result<Value> {
    let what = || format!("the value of metadata key `{key}`");
    Ok(match value_type {
        0 => Value::U8(u8::from_le_bytes(src.array(what)?)),
        1 => Value::I8(i8::from_le_bytes(src.array(what)?)),
        2 => Value::U16(u16::from_le_bytes(src.array(what)?)),
        3 => Value::I16(i16::from_le_bytes(src.array(what)?)),
        4 => Value::U32(u32::from_le_bytes(src.array(what)?)),
        5 => Value::I32(i32::from_le_bytes(src.array(what)?)),
        6 => Value::F32(f32::from_le_bytes(src.array(what)?)),
        7 => match src.array::<1>(what)?[0] {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            byte => {
                return Err(GgufError::InvalidBool {
                    key: key.into(),
                    byte,
                });
            }
        },
        8 => Value::String(src.string(limits, what)?),
        9 => {
            if depth >= MAX_ARRAY_NESTING {
                return Err(GgufError::NestedTooDeep {
                    key: key.into(),
                    limit: MAX_ARRAY_NESTING,
                });
            }
            let elem_type = src.u32(|| format!("the element type of metadata key `{key}`"))?;
            let elem_size = min_size(elem_type).ok_or_else(|| GgufError::UnknownValueType {
                key: key.into(),
                value_type: elem_type,
            })?;
            let len = src.u64(|| format!("the array length of metadata key `{key}`"))?;
            check_limit(
                &format!("the array length of metadata key `{key}`"),
                len,
                *budget,
            )?;
            src.fits(len.saturating_mul(elem_size), || {
                format!("the array of {len} elements of metadata key `{key}`")
            })?;
            *budget -= len;
            // Grow with what is read, not with what is declared.
            let mut values = Vec::with_capacity(len.min(4096) as usize);
            for _ in 0..len {
                values.push(read_value(src, limits, budget, key, elem_type, depth + 1)?);
            }
            Value::Array(values)
        }
        10 => Value::U64(u64::from_le_bytes(src.array(what)?)),
        11 => Value::I64(i64::from_le_bytes(src.array(what)?)),
        12 => Value::F64(f64::from_le_bytes(src.array(what)?)),
        other => {
            return Err(GgufError::UnknownValueType {
                key: key.into(),
                value_type: other,
            });
        }
    })
}

/// `general.alignment`: an unsigned power of two within the limit.
fn alignment(metadata: &HashMap<String, Value>, limits: &GgufLimits) -> Result<u64> {
    let value = match metadata.get("general.alignment") {
        None => return Ok(DEFAULT_ALIGNMENT),
        Some(Value::U8(v)) => u64::from(*v),
        Some(Value::U16(v)) => u64::from(*v),
        Some(Value::U32(v)) => u64::from(*v),
        Some(Value::U64(v)) => *v,
        Some(Value::I8(v)) if *v >= 0 => *v as u64,
        Some(Value::I16(v)) if *v >= 0 => *v as u64,
        Some(Value::I32(v)) if *v >= 0 => *v as u64,
        Some(Value::I64(v)) if *v >= 0 => *v as u64,
        Some(other) => {
            return Err(GgufError::Alignment(format!(
                "expected an unsigned integer, found {other:?}"
            )));
        }
    };
    if !value.is_power_of_two() {
        return Err(GgufError::Alignment(format!(
            "{value} is not a power of two"
        )));
    }
    if value > limits.max_alignment {
        return Err(GgufError::Alignment(format!(
            "{value} is above the limit of {}",
            limits.max_alignment
        )));
    }
    Ok(value)
}

/// The ggml type ids candle can read.
fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// Reads one tensor table entry after its name, returning it and its data
/// size in bytes.
fn read_tensor_info<R: Read>(
    src: &mut Source<R>,
    name: &str,
    alignment: u64,
) -> Result<(TensorInfo, u64)> {
    let bad = |problem: String| GgufError::Tensor {
        name: name.into(),
        problem,
    };
    let n_dims = src.u32(|| format!("the number of dims of tensor `{name}`"))?;
    if !(1..=MAX_TENSOR_DIMS).contains(&n_dims) {
        return Err(bad(format!(
            "{n_dims} dimensions (1 to {MAX_TENSOR_DIMS} are allowed)"
        )));
    }
    // GGUF lists dims innermost first; candle's shapes are outermost first.
    let mut dims = Vec::with_capacity(n_dims as usize);
    for i in 0..n_dims {
        dims.push(src.u64(|| format!("dimension {i} of tensor `{name}`"))?);
    }
    let type_id = src.u32(|| format!("the type of tensor `{name}`"))?;
    let offset = src.u64(|| format!("the offset of tensor `{name}`"))?;

    if let Some(i) = dims.iter().position(|&d| d == 0) {
        return Err(bad(format!("dimension {i} is 0")));
    }
    let elems = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| bad(format!("dims {dims:?} have more elements than can exist")))?;
    let dtype = ggml_dtype(type_id).ok_or_else(|| bad(format!("unsupported type id {type_id}")))?;
    let block = dtype.block_size() as u64;
    if dims[0] % block != 0 {
        return Err(bad(format!(
            "its first dimension {} is not a multiple of the {dtype:?} block size {block}",
            dims[0]
        )));
    }
    let size = (elems / block)
        .checked_mul(dtype.type_size() as u64)
        .ok_or_else(|| bad(format!("dims {dims:?} have more bytes than can exist")))?;
    if offset % alignment != 0 {
        return Err(bad(format!(
            "offset {offset} is not a multiple of the alignment {alignment}"
        )));
    }
    let shape: Vec<usize> = dims
        .iter()
        .rev()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad(format!("dims {dims:?} do not fit in memory")))?;
    usize::try_from(size).map_err(|_| bad(format!("{size} bytes do not fit in memory")))?;
    let info = TensorInfo {
        ggml_dtype: dtype,
        shape: Shape::from(shape),
        offset,
    };
    Ok((info, size))
}

/// Every tensor lies inside the file, and no two share bytes.
fn check_extents(
    tensors: &HashMap<String, TensorInfo>,
    table: &[(String, u64)],
    data_offset: u64,
    file_len: u64,
) -> Result<()> {
    let mut extents = Vec::with_capacity(table.len());
    for (name, size) in table {
        let start = tensors
            .get(name)
            .and_then(|info| data_offset.checked_add(info.offset));
        let end = start.and_then(|s| s.checked_add(*size));
        let (Some(start), Some(end)) = (start, end) else {
            return Err(GgufError::Tensor {
                name: name.clone(),
                problem: "its offset overflows".into(),
            });
        };
        if end > file_len {
            return Err(GgufError::TensorPastEnd {
                name: name.clone(),
                end,
                file_len,
            });
        }
        extents.push((start, end, name));
    }
    extents.sort_unstable();
    for pair in extents.windows(2) {
        if pair[0].1 > pair[1].0 {
            return Err(GgufError::TensorsOverlap {
                first: pair[0].2.clone(),
                second: pair[1].2.clone(),
            });
        }
    }
    Ok(())
}
