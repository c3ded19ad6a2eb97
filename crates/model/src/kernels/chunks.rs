//! The newer GGUF block formats (Q5_0, Q5_1 and the K-quants Q2_K to Q6_K)
//! seen as runs of 32-value chunks, one per 8-bit activation block.
//!
//! Every one of them stores, per chunk of 32 weights, small unsigned codes
//! and per-16 scales and minimums, so that `w_i = scale_h * (code_i -
//! offset) + min_h` with `h = i / 16`. A block's [`Header`] unpacks those
//! scales (K-quants pack them in 4 or 6 bits per sub-block) once, and the
//! codes are read per chunk. The scalar code here is the portable kernel,
//! the dequantizer for embeddings, and the oracle the SIMD kernels are
//! tested against; the layouts follow ggml's `block_q*` structs.

use super::{QK, QRow, WeightFormat, f16_at};

/// Values in a K-quant super-block.
pub(super) const QK_K: usize = 256;

/// The scales of one block, per half-chunk of 16 values.
#[derive(Clone, Copy, Default)]
pub(super) struct Header {
    /// `scale[2k + h]` multiplies chunk `k`'s half `h`.
    pub(super) scale: [f32; 16],
    /// `min[2k + h]` is added to every weight of chunk `k`'s half `h`
    /// (0 for formats without a minimum).
    pub(super) min: [f32; 16],
}

impl WeightFormat {
    /// The constant subtracted from every code of this format.
    pub(super) fn code_offset(self) -> u8 {
        match self {
            Self::Q4_0 => 8,
            Self::Q5_0 => 16,
            Self::Q6K => 32,
            Self::Q3K => 4,
            _ => 0,
        }
    }

    /// Whether the format has minimums, and whether they differ between the
    /// two halves of a chunk (only Q2_K's do).
    pub(super) fn min_kind(self) -> MinKind {
        match self {
            Self::Q4_1 | Self::Q5_1 | Self::Q4K | Self::Q5K => MinKind::PerChunk,
            Self::Q2K => MinKind::PerHalf,
            _ => MinKind::None,
        }
    }

    /// Whether the two halves of a chunk have their own scale.
    pub(super) fn scale_per_half(self) -> bool {
        matches!(self, Self::Q2K | Self::Q3K | Self::Q6K)
    }
}

/// How a format's minimums enter a dot product.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum MinKind {
    /// No minimum: weights are `scale * (code - offset)`.
    None,
    /// One minimum per chunk: it meets the activation block's sum.
    PerChunk,
    /// A minimum per half-chunk: it meets each half's sum.
    PerHalf,
}

/// The 6-bit scale and minimum of sub-block `j` of a Q4_K or Q5_K block
/// (ggml's `get_scale_min_k4`).
fn scale_min_k4(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

/// The sixteen 6-bit scales of a Q3_K block, each minus 32.
fn q3k_scales(packed: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 {
            packed[i] & 0x0F
        } else {
            packed[i - 8] >> 4
        };
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

/// Unpacks the scales and minimums of one block of a chunked format.
pub(super) fn header(format: WeightFormat, blk: &[u8]) -> Header {
    let mut h = Header::default();
    match format {
        WeightFormat::Q5_0 => h.scale[..2].fill(f16_at(blk, 0)),
        WeightFormat::Q5_1 => {
            h.scale[..2].fill(f16_at(blk, 0));
            h.min[..2].fill(f16_at(blk, 2));
        }
        WeightFormat::Q4K | WeightFormat::Q5K => {
            let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
            for j in 0..8 {
                let (sc, m) = scale_min_k4(&blk[4..16], j);
                h.scale[2 * j..2 * j + 2].fill(d * f32::from(sc));
                h.min[2 * j..2 * j + 2].fill(-dmin * f32::from(m));
            }
        }
        WeightFormat::Q6K => {
            let d = f16_at(blk, 208);
            // Chunk k of half n (k = 0..4) holds 16-value groups whose
            // scales are sc[8n + 2k] and sc[8n + 2k + 1].
            for (i, s) in h.scale.iter_mut().enumerate() {
                *s = d * f32::from(blk[192 + i] as i8);
            }
        }
        WeightFormat::Q3K => {
            let d = f16_at(blk, 108);
            for (s, sc) in h.scale.iter_mut().zip(q3k_scales(&blk[96..108])) {
                *s = d * f32::from(sc);
            }
        }
        WeightFormat::Q2K => {
            let (d, dmin) = (f16_at(blk, 80), f16_at(blk, 82));
            for (i, packed) in blk[..16].iter().enumerate() {
                h.scale[i] = d * f32::from(packed & 0x0F);
                h.min[i] = -dmin * f32::from(packed >> 4);
            }
        }
        _ => unreachable!("{format:?} is not a chunked format"),
    }
    h
}

/// The 32 codes of chunk `k` of a block.
pub(super) fn codes(format: WeightFormat, blk: &[u8], k: usize, out: &mut [u8; QK]) {
    match format {
        WeightFormat::Q5_0 | WeightFormat::Q5_1 => {
            let at = if format == WeightFormat::Q5_0 { 2 } else { 4 };
            let qh = u32::from_le_bytes([blk[at], blk[at + 1], blk[at + 2], blk[at + 3]]);
            let qs = &blk[at + 4..at + 20];
            for j in 0..16 {
                out[j] = (qs[j] & 0x0F) | ((((qh >> j) & 1) as u8) << 4);
                out[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
            }
        }
        WeightFormat::Q4K => {
            let qs = &blk[16 + 32 * (k / 2)..][..32];
            for (o, q) in out.iter_mut().zip(qs) {
                *o = if k.is_multiple_of(2) {
                    q & 0x0F
                } else {
                    q >> 4
                };
            }
        }
        WeightFormat::Q5K => {
            let (qh, qs) = (&blk[16..48], &blk[48 + 32 * (k / 2)..][..32]);
            for l in 0..QK {
                let nibble = if k.is_multiple_of(2) {
                    qs[l] & 0x0F
                } else {
                    qs[l] >> 4
                };
                out[l] = nibble | (((qh[l] >> k) & 1) << 4);
            }
        }
        WeightFormat::Q6K => {
            // Half n = k / 4 of the block; within it, chunk c = k % 4 takes
            // low (c < 2) or high nibbles of ql[32 * (c % 2)..] and bits
            // 2c..2c+2 of qh.
            let (n, c) = (k / 4, k % 4);
            let ql = &blk[64 * n + 32 * (c % 2)..][..32];
            let qh = &blk[128 + 32 * n..][..32];
            for l in 0..QK {
                let low = if c < 2 { ql[l] & 0x0F } else { ql[l] >> 4 };
                out[l] = low | (((qh[l] >> (2 * c)) & 3) << 4);
            }
        }
        WeightFormat::Q3K => {
            let (n, j) = (k / 4, k % 4);
            let (hmask, qs) = (&blk[..32], &blk[32 + 32 * n..][..32]);
            for l in 0..QK {
                let high = (hmask[l] >> k) & 1;
                out[l] = ((qs[l] >> (2 * j)) & 3) | (high << 2);
            }
        }
        WeightFormat::Q2K => {
            let (n, j) = (k / 4, k % 4);
            let qs = &blk[16 + 32 * n..][..32];
            for l in 0..QK {
                out[l] = (qs[l] >> (2 * j)) & 3;
            }
        }
        _ => unreachable!("{format:?} is not a chunked format"),
    }
}

/// The dot product of a row of a chunked format with an activation row.
pub(super) fn dot(format: WeightFormat, w: &[u8], x: QRow<'_>) -> f32 {
    let chunks = format.block_values() / QK;
    let offset = i32::from(format.code_offset());
    let mut code = [0u8; QK];
    let mut acc = 0.0f32;
    for (s, blk) in w.chunks_exact(format.block_bytes()).enumerate() {
        let h = header(format, blk);
        for k in 0..chunks {
            codes(format, blk, k, &mut code);
            let b = s * chunks + k;
            let qa = &x.values[b * QK..(b + 1) * QK];
            let (mut dots, mut sums) = ([0i32; 2], [0i32; 2]);
            for i in 0..QK {
                dots[i / 16] += (i32::from(code[i]) - offset) * i32::from(qa[i]);
                sums[i / 16] += i32::from(qa[i]);
            }
            let dx = x.scale_sums[b][0];
            acc += dx * (h.scale[2 * k] * dots[0] as f32 + h.scale[2 * k + 1] * dots[1] as f32);
            acc += dx * (h.min[2 * k] * sums[0] as f32 + h.min[2 * k + 1] * sums[1] as f32);
        }
    }
    acc
}

/// Expands one row of a chunked format to f32.
pub(super) fn dequantize_row(format: WeightFormat, row: &[u8], out: &mut [f32]) {
    let chunks = format.block_values() / QK;
    let offset = i32::from(format.code_offset());
    let mut code = [0u8; QK];
    for (s, blk) in row.chunks_exact(format.block_bytes()).enumerate() {
        let h = header(format, blk);
        for k in 0..chunks {
            codes(format, blk, k, &mut code);
            let o = &mut out[(s * chunks + k) * QK..][..QK];
            for i in 0..QK {
                let half = 2 * k + i / 16;
                o[i] = h.scale[half] * (i32::from(code[i]) - offset) as f32 + h.min[half];
            }
        }
    }
}
