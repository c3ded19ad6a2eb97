//! Matrix-vector and matrix-matrix products over quantized weights.
//!
//! Weights stay in their GGUF block format (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0
//! and the K-quants Q2_K to Q6_K) so decoding streams as few bytes as
//! possible; activations are quantized per row to 8-bit blocks of 32
//! ([`QuantizedRows`]) and multiplied with integer dot products, as
//! llama.cpp does. F16 and BF16 weights are widened in the kernel and met
//! with f32 activations; F32 weights are used as they are. Any other GGUF
//! type is refused by name at load.
//!
//! The hot loops have an AVX2 implementation (with AVX-512 VNNI's fused
//! dot product where the CPU has it) chosen at run time, and a portable
//! scalar one that is also the test oracle.

mod avx2;
mod chunks;
mod scalar;

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;
use rayon::prelude::*;

use crate::error::{ModelError, Result};

/// Elements per quantization block.
pub(crate) const QK: usize = 32;

/// Storage format of a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// 4-bit with a scale per block of 32 (GGUF Q4_0, 18 bytes per block).
    Q4_0,
    /// 4-bit with a scale and a minimum per block of 32 (GGUF Q4_1, 20 bytes).
    Q4_1,
    /// 5-bit with a scale per block of 32 (GGUF Q5_0, 22 bytes).
    Q5_0,
    /// 5-bit with a scale and a minimum per block of 32 (GGUF Q5_1, 24 bytes).
    Q5_1,
    /// 8-bit with a scale per block of 32 (GGUF Q8_0, 34 bytes).
    Q8_0,
    /// 2-bit K-quant: 256 values in 16 groups with 4-bit scales and
    /// minimums (GGUF Q2_K, 84 bytes).
    Q2K,
    /// 3-bit K-quant: 256 values in 16 groups with 6-bit scales (GGUF Q3_K,
    /// 110 bytes).
    Q3K,
    /// 4-bit K-quant: 256 values in 8 groups with 6-bit scales and minimums
    /// (GGUF Q4_K, 144 bytes).
    Q4K,
    /// 5-bit K-quant: as Q4_K with a fifth bit plane (GGUF Q5_K, 176 bytes).
    Q5K,
    /// 6-bit K-quant: 256 values in 16 groups with 8-bit scales (GGUF Q6_K,
    /// 210 bytes).
    Q6K,
    /// IEEE half precision, widened to f32 in the kernel.
    F16,
    /// bfloat16, widened to f32 in the kernel.
    BF16,
    /// Plain f32.
    F32,
}

impl WeightFormat {
    /// The format of a GGUF tensor type, or None for a type no kernel runs.
    fn of(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_0 => Self::Q4_0,
            GgmlDType::Q4_1 => Self::Q4_1,
            GgmlDType::Q5_0 => Self::Q5_0,
            GgmlDType::Q5_1 => Self::Q5_1,
            GgmlDType::Q8_0 => Self::Q8_0,
            GgmlDType::Q2K => Self::Q2K,
            GgmlDType::Q3K => Self::Q3K,
            GgmlDType::Q4K => Self::Q4K,
            GgmlDType::Q5K => Self::Q5K,
            GgmlDType::Q6K => Self::Q6K,
            GgmlDType::F16 => Self::F16,
            GgmlDType::BF16 => Self::BF16,
            GgmlDType::F32 => Self::F32,
            GgmlDType::Q8_1 | GgmlDType::Q8K => return None,
        })
    }

    /// The name llama.cpp gives this type.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::F32 => "F32",
        }
    }

    /// Values per stored block.
    fn block_values(self) -> usize {
        match self {
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K => chunks::QK_K,
            _ => QK,
        }
    }

    /// Bytes per stored block.
    fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::F16 | Self::BF16 => QK * 2,
            Self::F32 => QK * 4,
        }
    }

    /// Whether the format is read through [`chunks`] (32-value chunks with
    /// per-half scales) rather than a kernel of its own.
    fn is_chunked(self) -> bool {
        matches!(
            self,
            Self::Q5_0 | Self::Q5_1 | Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K
        )
    }

    /// Whether the format is a K-quant (blocks of 256, run by the chunked
    /// kernel); the 32-value formats have kernels of their own.
    fn is_superblock(self) -> bool {
        self.block_values() == chunks::QK_K
    }

    /// Whether activations meet this format as f32 rather than 8-bit blocks.
    fn is_half(self) -> bool {
        matches!(self, Self::F16 | Self::BF16)
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How activations meet quantized weights in a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Activations quantized to 8 bits per block of 32 and integer dot
    /// products, as llama.cpp does: fast, with a small rounding noise.
    #[default]
    Q8,
    /// Weights dequantized to f32 and multiplied with f32 activations:
    /// exact arithmetic on the stored weights, several times slower.
    F32,
}

/// The stored values of a matrix.
#[derive(Debug, Clone)]
enum Data {
    /// Raw GGUF blocks (quantized, F16 or BF16), row after row.
    Blocks(Vec<u8>),
    /// Plain values, row after row.
    F32(Vec<f32>),
}

/// A weight matrix of `rows` outputs by `cols` inputs, row-major.
#[derive(Debug, Clone)]
pub struct QMatrix {
    rows: usize,
    cols: usize,
    format: WeightFormat,
    data: Data,
}

impl QMatrix {
    /// Builds a matrix from a GGUF tensor of shape `[rows, cols]`.
    pub fn from_qtensor(name: &str, t: &QTensor) -> Result<Self> {
        let (rows, cols) = match t.shape().dims() {
            [r, c] => (*r, *c),
            dims => {
                return Err(ModelError::Tensor {
                    name: name.into(),
                    problem: format!("expected a matrix, found shape {dims:?}"),
                });
            }
        };
        let Some(format) = WeightFormat::of(t.dtype()) else {
            return Err(ModelError::Tensor {
                name: name.into(),
                problem: format!(
                    "type {:?} is not a weight type this engine runs (it runs F32, F16, \
                     BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K to Q6_K)",
                    t.dtype()
                ),
            });
        };
        // Half-precision rows not a whole number of blocks (no model has
        // them) are widened to f32 rather than refused.
        let native = format.is_half() && cols % QK == 0 || !format.is_half();
        if format != WeightFormat::F32 && native {
            let block = format.block_values();
            if cols % block != 0 {
                return Err(ModelError::Tensor {
                    name: name.into(),
                    problem: format!(
                        "{cols} columns is not a multiple of {format}'s block size {block}"
                    ),
                });
            }
            let bytes = t.data()?.into_owned();
            if bytes.len() != rows * cols / block * format.block_bytes() {
                return Err(ModelError::Tensor {
                    name: name.into(),
                    problem: format!(
                        "{} bytes of {format} data for a [{rows}, {cols}] matrix",
                        bytes.len()
                    ),
                });
            }
            return Ok(Self {
                rows,
                cols,
                format,
                data: Data::Blocks(bytes),
            });
        }
        let values: Vec<f32> = t
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self::from_f32(rows, cols, &values))
    }

    /// Builds an f32 matrix from row-major values.
    pub fn from_f32(rows: usize, cols: usize, values: &[f32]) -> Self {
        assert_eq!(values.len(), rows * cols, "matrix size mismatch");
        Self {
            rows,
            cols,
            format: WeightFormat::F32,
            data: Data::F32(values.to_vec()),
        }
    }

    /// The same matrix, multiplied at the given precision: [`Precision::F32`]
    /// expands the weights to f32 once, so products are exact f32 math.
    pub fn with_precision(self, precision: Precision) -> Self {
        match precision {
            Precision::Q8 => self,
            Precision::F32 if self.format == WeightFormat::F32 => self,
            Precision::F32 => {
                let mut values = vec![0.0; self.rows * self.cols];
                for (r, row) in values.chunks_exact_mut(self.cols).enumerate() {
                    self.dequantize_row(r, row);
                }
                Self::from_f32(self.rows, self.cols, &values)
            }
        }
    }

    /// Number of output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The storage format.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Bytes of weight data held.
    pub fn byte_len(&self) -> usize {
        match &self.data {
            Data::Blocks(b) => b.len(),
            Data::F32(v) => v.len() * std::mem::size_of::<f32>(),
        }
    }

    /// Row `r`'s stored blocks (empty for f32 matrices).
    fn row(&self, r: usize) -> &[u8] {
        match &self.data {
            Data::Blocks(b) => {
                let n = self.cols / self.format.block_values() * self.format.block_bytes();
                &b[r * n..(r + 1) * n]
            }
            Data::F32(_) => &[],
        }
    }

    /// Dequantizes row `r` into `out` (length `cols`); used for embeddings.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        match &self.data {
            Data::Blocks(_) if self.format.is_chunked() => {
                chunks::dequantize_row(self.format, self.row(r), out)
            }
            Data::Blocks(_) => scalar::dequantize_row(self.format, self.row(r), out),
            Data::F32(v) => out.copy_from_slice(&v[r * self.cols..(r + 1) * self.cols]),
        }
    }

    /// Computes `out[t][r] = Σ_c w[r][c] * x[t][c]` for every input row `t`.
    ///
    /// `x` holds `n` rows of `cols` values; `out` receives `n` rows of `rows`.
    pub fn matmul(&self, x: &[f32], out: &mut [f32]) {
        let n = x.len() / self.cols;
        assert_eq!(x.len(), n * self.cols, "input is not whole rows");
        assert_eq!(out.len(), n * self.rows, "output size mismatch");
        let kernels = Kernels::detect();
        let cols = self.cols;
        match &self.data {
            Data::F32(w) => {
                self.par_rows(out, n, |r0, nr, t0, nt, values| {
                    for (i, row) in values.iter_mut().enumerate().take(nr) {
                        let w = &w[(r0 + i) * cols..(r0 + i + 1) * cols];
                        for (j, v) in row.iter_mut().enumerate().take(nt) {
                            *v = (kernels.dot_f32)(w, &x[(t0 + j) * cols..][..cols]);
                        }
                    }
                });
            }
            Data::Blocks(_) if self.format.is_half() => {
                let format = self.format;
                let x = |t: usize| &x[t * cols..(t + 1) * cols];
                self.par_rows(out, n, |r0, nr, t0, nt, values| {
                    for (i, row) in values.iter_mut().enumerate().take(nr) {
                        let w = self.row(r0 + i);
                        if nt == TILE_TOKENS {
                            let xs = std::array::from_fn(|j| x(t0 + j));
                            *row = (kernels.dot8_half)(format, w, xs);
                            continue;
                        }
                        let mut j = 0;
                        while j + 4 <= nt {
                            let xs = [x(t0 + j), x(t0 + j + 1), x(t0 + j + 2), x(t0 + j + 3)];
                            row[j..j + 4].copy_from_slice(&(kernels.dot4_half)(format, w, xs));
                            j += 4;
                        }
                        for (k, v) in row.iter_mut().enumerate().take(nt).skip(j) {
                            *v = (kernels.dot_half)(format, w, x(t0 + k));
                        }
                    }
                });
            }
            Data::Blocks(_) => {
                let format = self.format;
                let q = QuantizedRows::quantize(x, cols, kernels);
                self.par_rows(out, n, |r0, nr, t0, nt, values| {
                    if nr == TILE_ROWS {
                        let ws = std::array::from_fn(|i| self.row(r0 + i));
                        if nt == TILE_TOKENS {
                            let xs = std::array::from_fn(|j| q.row(t0 + j));
                            *values = kernels.tile(format, ws, xs);
                        } else {
                            // Decoding (one input row), or the last few.
                            for j in 0..nt {
                                let column = kernels.rows(format, ws, q.row(t0 + j));
                                for (row, v) in values.iter_mut().zip(column) {
                                    row[j] = v;
                                }
                            }
                        }
                        return;
                    }
                    for (i, row) in values.iter_mut().enumerate().take(nr) {
                        let w = self.row(r0 + i);
                        let mut j = 0;
                        while j + 4 <= nt {
                            let xs = [
                                q.row(t0 + j),
                                q.row(t0 + j + 1),
                                q.row(t0 + j + 2),
                                q.row(t0 + j + 3),
                            ];
                            row[j..j + 4].copy_from_slice(&kernels.dot4(format, w, xs));
                            j += 4;
                        }
                        for (k, v) in row.iter_mut().enumerate().take(nt).skip(j) {
                            *v = kernels.dot(format, w, q.row(t0 + k));
                        }
                    }
                });
            }
        }
    }

    /// Fills the output tile by tile: `tile(r0, nr, t0, nt, values)` sets
    /// `values[i][j]` to weight row `r0 + i`'s product with input row
    /// `t0 + j`, for `i < nr` and `j < nt` (at most [`TILE_ROWS`] and
    /// [`TILE_TOKENS`]; fewer at the ends). Bands of weight rows are split
    /// across threads; within a band, each group of input rows meets every
    /// weight row of the band before the next group, so the band's weights
    /// and the group's activations stay in L1.
    fn par_rows(
        &self,
        out: &mut [f32],
        n: usize,
        tile: impl Fn(usize, usize, usize, usize, &mut [[f32; TILE_TOKENS]; TILE_ROWS]) + Sync,
    ) {
        const ROWS_PER_TASK: usize = 64;
        let rows = self.rows;
        let out_ptr = SendPtr(out.as_mut_ptr());
        (0..rows.div_ceil(ROWS_PER_TASK))
            .into_par_iter()
            .for_each(|band| {
                let (start, end) = (band * ROWS_PER_TASK, ((band + 1) * ROWS_PER_TASK).min(rows));
                let mut values = [[0.0; TILE_TOKENS]; TILE_ROWS];
                for t0 in (0..n).step_by(TILE_TOKENS) {
                    let nt = TILE_TOKENS.min(n - t0);
                    for r0 in (start..end).step_by(TILE_ROWS) {
                        let nr = TILE_ROWS.min(end - r0);
                        tile(r0, nr, t0, nt, &mut values);
                        for (i, row) in values.iter().enumerate().take(nr) {
                            for (j, v) in row.iter().enumerate().take(nt) {
                                // SAFETY: tasks own disjoint bands of weight
                                // rows, so each output element is written
                                // once; `out` outlives the parallel loop.
                                unsafe { *out_ptr.get().add((t0 + j) * rows + r0 + i) = *v };
                            }
                        }
                    }
                }
            });
    }
}

/// Weight rows one kernel call meets at most.
const TILE_ROWS: usize = 8;
/// Input rows one kernel call meets at most.
const TILE_TOKENS: usize = 8;

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used to write disjoint elements from parallel tasks.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// The f32 kernels attention runs on, chosen once for this CPU so an inner
/// loop calls them without dispatching again.
#[derive(Clone, Copy)]
pub(crate) struct VectorKernels {
    /// The dot product of two slices of equal length.
    pub(crate) dot: fn(&[f32], &[f32]) -> f32,
    /// `out += w * v`, slices of equal length.
    pub(crate) axpy: fn(&mut [f32], f32, &[f32]),
    /// Scores replaced by `exp(x - max) / Σ exp(x - max)`.
    pub(crate) softmax: fn(&mut [f32]),
}

impl VectorKernels {
    /// The fastest set this CPU has.
    pub(crate) fn detect() -> Self {
        let k = Kernels::detect();
        Self {
            dot: k.dot_f32,
            axpy: k.axpy,
            softmax: k.softmax,
        }
    }
}

/// Activation rows quantized to 8-bit blocks of 32: per block the pair
/// `[d, d * Σq]` (scale, and scaled sum for formats with a minimum), and 32
/// signed values.
pub(crate) struct QuantizedRows {
    blocks_per_row: usize,
    scale_sums: Vec<[f32; 2]>,
    /// Per block, the sum of its 32 values.
    sums: Vec<i32>,
    values: Vec<i8>,
}

impl QuantizedRows {
    fn quantize(x: &[f32], cols: usize, kernels: Kernels) -> Self {
        let n_blocks = x.len() / QK;
        let mut q = Self {
            blocks_per_row: cols / QK,
            scale_sums: vec![[0.0; 2]; n_blocks],
            sums: Vec::new(),
            values: vec![0; x.len()],
        };
        (kernels.quantize)(x, &mut q.scale_sums, &mut q.values);
        q.sums = q
            .values
            .chunks_exact(QK)
            .map(|block| block.iter().map(|&v| i32::from(v)).sum())
            .collect();
        q
    }

    fn row(&self, t: usize) -> QRow<'_> {
        let b0 = t * self.blocks_per_row;
        let b1 = b0 + self.blocks_per_row;
        QRow {
            scale_sums: &self.scale_sums[b0..b1],
            sums: &self.sums[b0..b1],
            values: &self.values[b0 * QK..b1 * QK],
        }
    }
}

/// One quantized activation row.
#[derive(Clone, Copy)]
pub(crate) struct QRow<'a> {
    scale_sums: &'a [[f32; 2]],
    sums: &'a [i32],
    values: &'a [i8],
}

/// A product for any format: the format is passed along (each kernel
/// serves several formats).
type DotAny = fn(WeightFormat, &[u8], QRow<'_>) -> f32;
type DotAny4 = for<'a> fn(WeightFormat, &[u8], [QRow<'a>; 4]) -> [f32; 4];
type DotAny8 = for<'a> fn(WeightFormat, &[u8], [QRow<'a>; TILE_TOKENS]) -> [f32; TILE_TOKENS];
type DotRows = for<'a, 'b> fn(WeightFormat, [&'a [u8]; TILE_ROWS], QRow<'b>) -> [f32; TILE_ROWS];
type DotTile = for<'a, 'b> fn(
    WeightFormat,
    [&'a [u8]; TILE_ROWS],
    [QRow<'b>; TILE_TOKENS],
) -> [[f32; TILE_TOKENS]; TILE_ROWS];
type DotHalf = fn(WeightFormat, &[u8], &[f32]) -> f32;
type DotHalf4 = for<'a> fn(WeightFormat, &[u8], [&'a [f32]; 4]) -> [f32; 4];
type DotHalf8 = for<'a> fn(WeightFormat, &[u8], [&'a [f32]; TILE_TOKENS]) -> [f32; TILE_TOKENS];

/// The kernel set for this CPU. Every kernel of a set sums a given (weight
/// row, activation row) pair in the same way, whatever else it computes
/// alongside it.
#[derive(Clone, Copy)]
struct Kernels {
    quantize: fn(&[f32], &mut [[f32; 2]], &mut [i8]),
    /// 32-value block formats: one weight row by one activation row.
    dot_block: DotAny,
    /// ... eight weight rows by one activation row.
    rows_block: DotRows,
    /// ... eight weight rows by eight activation rows.
    tile_block: DotTile,
    dot_chunked: DotAny,
    dot4_chunked: DotAny4,
    /// K-quants: one weight row by eight activation rows.
    dot8_chunked: DotAny8,
    dot_half: DotHalf,
    dot4_half: DotHalf4,
    dot8_half: DotHalf8,
    dot_f32: fn(&[f32], &[f32]) -> f32,
    /// `out += w * v` over f32.
    axpy: fn(&mut [f32], f32, &[f32]),
    /// A row of scores replaced by its softmax.
    softmax: fn(&mut [f32]),
}

impl Kernels {
    fn detect() -> Self {
        static KERNELS: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
        *KERNELS.get_or_init(|| {
            if avx2::available() {
                avx2::kernels()
            } else {
                scalar::KERNELS
            }
        })
    }

    /// One weight row of `format` against one 8-bit activation row.
    fn dot(self, format: WeightFormat, w: &[u8], x: QRow<'_>) -> f32 {
        if format.is_superblock() {
            (self.dot_chunked)(format, w, x)
        } else {
            (self.dot_block)(format, w, x)
        }
    }

    /// One weight row of `format` against four 8-bit activation rows, each
    /// summed exactly as [`Kernels::dot`] sums it.
    fn dot4(self, format: WeightFormat, w: &[u8], xs: [QRow<'_>; 4]) -> [f32; 4] {
        if format.is_superblock() {
            (self.dot4_chunked)(format, w, xs)
        } else {
            xs.map(|x| (self.dot_block)(format, w, x))
        }
    }

    /// Eight weight rows against one activation row, each as
    /// [`Kernels::dot`].
    fn rows(self, format: WeightFormat, ws: [&[u8]; TILE_ROWS], x: QRow<'_>) -> [f32; TILE_ROWS] {
        if format.is_superblock() {
            ws.map(|w| (self.dot_chunked)(format, w, x))
        } else {
            (self.rows_block)(format, ws, x)
        }
    }

    /// Eight weight rows against eight activation rows (`[row][token]`),
    /// each as [`Kernels::dot`].
    fn tile(
        self,
        format: WeightFormat,
        ws: [&[u8]; TILE_ROWS],
        xs: [QRow<'_>; TILE_TOKENS],
    ) -> [[f32; TILE_TOKENS]; TILE_ROWS] {
        if format.is_superblock() {
            ws.map(|w| (self.dot8_chunked)(format, w, xs))
        } else {
            (self.tile_block)(format, ws, xs)
        }
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

#[cfg(test)]
mod tests;
