//! SIMD products for the K-quants (Q2_K to Q6_K); the 32-value block
//! formats have kernels of their own ([`super::blocks`]).
//!
//! A block's scales are unpacked once, with SIMD ([`fast_header`]); then each
//! chunk's 32 codes are unpacked into one register and met with every
//! activation row in turn. A chunk costs one integer dot product, one
//! conversion and one FMA per row, the same as a Q4_1 block; the scale of
//! each 16-value half sits in its own four lanes, since an i32 lane of the
//! dot product sums four neighbouring values.
//!
//! One generic loop serves one, four and eight activation rows, so every
//! row's sum is accumulated in the same order whatever the batch: batch
//! invariance.

use std::arch::x86_64::*;

use super::super::chunks::{Header, MinKind, header};
use super::super::{QK, QRow, WeightFormat};
use super::blocks::PREFETCH_AHEAD;
use super::{DotU8I8, hsum};

/// The byte at each position set where bit `i` of `bits` is set.
#[inline(always)]
pub(super) unsafe fn bytes_from_bits(bits: u32) -> __m256i {
    // SAFETY: the caller runs with AVX2.
    unsafe {
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(bits as i32),
            _mm256_setr_epi64x(
                0x0000_0000_0000_0000,
                0x0101_0101_0101_0101,
                0x0202_0202_0202_0202,
                0x0303_0303_0303_0303,
            ),
        );
        let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1))
    }
}

/// Bits `shift..shift + width` of every byte of `v` (width 1 or 2 given
/// by `mask`), at the bottom of each byte.
#[inline(always)]
unsafe fn bit_field(v: __m256i, shift: u32, mask: i8) -> __m256i {
    // SAFETY: the caller runs with AVX2.
    unsafe {
        _mm256_and_si256(
            _mm256_srl_epi16(v, _mm_cvtsi32_si128(shift as i32)),
            _mm256_set1_epi8(mask),
        )
    }
}

/// The low (`high == false`) or high nibbles of 32 bytes at `p`.
#[inline(always)]
unsafe fn nibble(p: *const u8, high: bool) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes and AVX2.
    unsafe {
        let v = _mm256_loadu_si256(p.cast());
        let v = if high { _mm256_srli_epi16(v, 4) } else { v };
        _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
    }
}

/// 32 bytes at `p`.
#[inline(always)]
unsafe fn bytes(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 32 readable bytes and AVX.
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// The 32 unsigned codes of chunk `k` of the block at `blk`.
#[inline(always)]
unsafe fn codes(format: WeightFormat, blk: *const u8, k: usize) -> __m256i {
    // SAFETY: the caller guarantees a whole block at `blk` and AVX2.
    unsafe {
        let load = |at: usize| blk.add(at);
        match format {
            WeightFormat::Q4K => nibble(load(16 + 32 * (k / 2)), k % 2 == 1),
            WeightFormat::Q5K => {
                let low = nibble(load(48 + 32 * (k / 2)), k % 2 == 1);
                let high = _mm256_slli_epi16(bit_field(bytes(load(16)), k as u32, 1), 4);
                _mm256_or_si256(low, high)
            }
            WeightFormat::Q6K => {
                let (n, c) = (k / 4, k % 4);
                let low = nibble(load(64 * n + 32 * (c % 2)), c >= 2);
                let high =
                    _mm256_slli_epi16(bit_field(bytes(load(128 + 32 * n)), 2 * c as u32, 3), 4);
                _mm256_or_si256(low, high)
            }
            WeightFormat::Q3K => {
                let (n, j) = (k / 4, k % 4);
                let low = bit_field(bytes(load(32 + 32 * n)), 2 * j as u32, 3);
                let high = _mm256_slli_epi16(bit_field(bytes(load(0)), k as u32, 1), 2);
                _mm256_or_si256(low, high)
            }
            WeightFormat::Q2K => bit_field(bytes(load(16 + 32 * (k / 4))), 2 * (k % 4) as u32, 3),
            _ => unreachable!("{format:?} is not a chunked format"),
        }
    }
}

/// The f16 at `p` as f32.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees 2 readable bytes and F16C.
    unsafe {
        let bits = i32::from(p.cast::<u16>().read_unaligned());
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
    }
}

/// Eight bytes (two little-endian words) as eight f32.
#[inline(always)]
unsafe fn widen(pair: [u32; 2]) -> __m256 {
    // SAFETY: the caller runs with AVX2.
    unsafe {
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi32(
            0,
            0,
            pair[1] as i32,
            pair[0] as i32,
        )))
    }
}

/// Eight f32 values written twice each: `[v0, v0, v1, v1, ...]` over 16.
#[inline(always)]
unsafe fn store_doubled(v: __m256, out: &mut [f32; 16]) {
    // SAFETY: the caller runs with AVX2; `out` holds 16 values.
    unsafe {
        let low = _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
        let high = _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(4, 4, 5, 5, 6, 6, 7, 7));
        _mm256_storeu_ps(out.as_mut_ptr(), low);
        _mm256_storeu_ps(out.as_mut_ptr().add(8), high);
    }
}

/// Sixteen small signed bytes times `factor`, as sixteen f32.
#[inline(always)]
unsafe fn store_signed16(bytes: __m128i, factor: f32, out: &mut [f32; 16]) {
    // SAFETY: the caller runs with AVX2; `out` holds 16 values.
    unsafe {
        let factor = _mm256_set1_ps(factor);
        let low = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
        let high = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(bytes, 8)));
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_mul_ps(low, factor));
        _mm256_storeu_ps(out.as_mut_ptr().add(8), _mm256_mul_ps(high, factor));
    }
}

/// The block's scales, unpacked with SIMD (the same values as the scalar
/// [`header`], which serves any other format).
#[inline(always)]
unsafe fn fast_header(format: WeightFormat, blk: *const u8) -> Header {
    // SAFETY: the caller guarantees a whole block at `blk` and AVX2 + F16C.
    unsafe {
        match format {
            WeightFormat::Q4K | WeightFormat::Q5K => {
                // ggml's unpacking of the twelve bytes of 6-bit scales and
                // minimums into eight bytes of each.
                const LOW6: u32 = 0x3f3f_3f3f;
                const LOW4: u32 = 0x0f0f_0f0f;
                const LOW2: u32 = 0x0303_0303;
                let word = |i: usize| blk.add(4 + 4 * i).cast::<u32>().read_unaligned();
                let (w0, w1, w2) = (word(0), word(1), word(2));
                let scales = [w0 & LOW6, (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4)];
                let mins = [w1 & LOW6, ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4)];
                let mut h = Header::default();
                store_doubled(
                    _mm256_mul_ps(widen(scales), _mm256_set1_ps(f16_at(blk))),
                    &mut h.scale,
                );
                store_doubled(
                    _mm256_mul_ps(widen(mins), _mm256_set1_ps(-f16_at(blk.add(2)))),
                    &mut h.min,
                );
                h
            }
            WeightFormat::Q6K => {
                let d = _mm256_set1_ps(f16_at(blk.add(208)));
                let packed = _mm_loadu_si128(blk.add(192).cast());
                let low = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(packed));
                let high = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(packed, 8)));
                let mut h = Header::default();
                _mm256_storeu_ps(h.scale.as_mut_ptr(), _mm256_mul_ps(low, d));
                _mm256_storeu_ps(h.scale.as_mut_ptr().add(8), _mm256_mul_ps(high, d));
                h
            }
            WeightFormat::Q3K => {
                // ggml's word-wise unpacking of twelve bytes into sixteen
                // 6-bit scales (stored plus 32).
                const LOW4: u32 = 0x0f0f_0f0f;
                const LOW2: u32 = 0x0303_0303;
                let word = |i: usize| blk.add(96 + 4 * i).cast::<u32>().read_unaligned();
                let (w0, w1, high) = (word(0), word(1), word(2));
                let packed = [
                    (w0 & LOW4) | ((high & LOW2) << 4),
                    (w1 & LOW4) | (((high >> 2) & LOW2) << 4),
                    ((w0 >> 4) & LOW4) | (((high >> 4) & LOW2) << 4),
                    ((w1 >> 4) & LOW4) | (((high >> 6) & LOW2) << 4),
                ];
                let scales = _mm_sub_epi8(
                    _mm_setr_epi32(
                        packed[0] as i32,
                        packed[1] as i32,
                        packed[2] as i32,
                        packed[3] as i32,
                    ),
                    _mm_set1_epi8(32),
                );
                let mut h = Header::default();
                store_signed16(scales, f16_at(blk.add(108)), &mut h.scale);
                h
            }
            WeightFormat::Q2K => {
                // Sixteen bytes: a scale in each low nibble, a minimum in
                // each high one.
                let packed = _mm_loadu_si128(blk.cast());
                let mask = _mm_set1_epi8(0x0F);
                let mut h = Header::default();
                store_signed16(
                    _mm_and_si128(packed, mask),
                    f16_at(blk.add(80)),
                    &mut h.scale,
                );
                store_signed16(
                    _mm_and_si128(_mm_srli_epi16(packed, 4), mask),
                    -f16_at(blk.add(82)),
                    &mut h.min,
                );
                h
            }
            _ => header(
                format,
                std::slice::from_raw_parts(blk, format.block_bytes()),
            ),
        }
    }
}

/// The per-lane scales of a chunk: lanes 0..4 cover its first 16 values,
/// lanes 4..8 its last 16.
#[inline(always)]
unsafe fn lanes(values: &[f32; 16], k: usize, per_half: bool) -> __m256 {
    // SAFETY: the caller runs with AVX.
    unsafe {
        if per_half {
            _mm256_set_m128(_mm_set1_ps(values[2 * k + 1]), _mm_set1_ps(values[2 * k]))
        } else {
            _mm256_set1_ps(values[2 * k])
        }
    }
}

/// Row sums of one weight row of a chunked format against `R` activation
/// rows.
#[inline(always)]
pub(super) unsafe fn dot_rows<D: DotU8I8, const R: usize>(
    format: WeightFormat,
    w: &[u8],
    xs: [QRow<'_>; R],
) -> [f32; R] {
    let block_bytes = format.block_bytes();
    let chunks = format.block_values() / QK;
    let nb = w.len() / block_bytes;
    for x in &xs {
        assert!(
            w.len() == nb * block_bytes
                && x.scale_sums.len() == nb * chunks
                && x.values.len() == nb * chunks * QK,
            "quantized row shapes disagree"
        );
    }
    let offset = format.code_offset();
    let min_kind = format.min_kind();
    let per_half = format.scale_per_half();
    // SAFETY: the shapes were checked above: nb blocks of weights and
    // nb * chunks activation blocks per row; the caller enabled the CPU
    // features the intrinsics need.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let mut min_acc = [_mm256_setzero_ps(); R];
        let mut min_sum = [0.0f32; R];
        for s in 0..nb {
            let blk = w.as_ptr().add(s * block_bytes);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH_AHEAD).cast());
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH_AHEAD + 64).cast());
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH_AHEAD + 128).cast());
            let h = fast_header(format, blk);
            for k in 0..chunks {
                let code = codes(format, blk, k);
                let signed = _mm256_sub_epi8(code, _mm256_set1_epi8(offset as i8));
                let magnitude = _mm256_sign_epi8(signed, signed);
                let scale = lanes(&h.scale, k, per_half);
                let min = lanes(&h.min, k, true);
                let b = s * chunks + k;
                for t in 0..R {
                    let a = _mm256_loadu_si256(xs[t].values.as_ptr().add(b * QK).cast());
                    let [dx, dsum] = *xs[t].scale_sums.get_unchecked(b);
                    let p = if offset == 0 {
                        D::dot(code, a)
                    } else {
                        D::dot(magnitude, _mm256_sign_epi8(a, signed))
                    };
                    let f = _mm256_mul_ps(scale, _mm256_set1_ps(dx));
                    acc[t][k % 2] = _mm256_fmadd_ps(f, _mm256_cvtepi32_ps(p), acc[t][k % 2]);
                    match min_kind {
                        MinKind::None => {}
                        MinKind::PerChunk => min_sum[t] += h.min[2 * k] * dsum,
                        MinKind::PerHalf => {
                            let sums = D::dot(_mm256_set1_epi8(1), a);
                            let f = _mm256_mul_ps(min, _mm256_set1_ps(dx));
                            min_acc[t] = _mm256_fmadd_ps(f, _mm256_cvtepi32_ps(sums), min_acc[t]);
                        }
                    }
                }
            }
        }
        let mut out = [0.0; R];
        for t in 0..R {
            out[t] = hsum(_mm256_add_ps(
                _mm256_add_ps(acc[t][0], acc[t][1]),
                min_acc[t],
            )) + min_sum[t];
        }
        out
    }
}
