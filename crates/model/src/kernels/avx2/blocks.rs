//! SIMD products of the 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0) in tiles of up to four weight rows by four activation rows.
//!
//! A tile unpacks each weight block once for all its activation rows and
//! loads each activation block once for all its weight rows; the scales of
//! the tile's weight rows are converted together and multiplied by an
//! activation scale in one instruction. Per weight row and activation row a
//! block costs an integer dot product, a conversion, a lane broadcast and
//! an FMA.
//!
//! Codes are met as unsigned bytes: a signed format's codes are offset
//! (Q4_0 by 8, Q5_0 by 16, Q8_0 by 128) and the offset's share is taken
//! back out of the integer sum, so every kernel set forms exactly
//! `Σ code · activation` per lane. Every (weight row, activation row) sum
//! runs through the same operations in the same order whatever the tile's
//! size, so a token's result does not depend on its batch: batch
//! invariance.

use std::arch::x86_64::*;

use super::super::{QK, QRow, WeightFormat};
use super::chunks::bytes_from_bits;
use super::hsum;

/// The most weight rows, and the most activation rows, in one tile.
pub(in super::super) const TILE: usize = 4;

/// How far ahead of the block being read the weights are prefetched, in
/// bytes. Rows follow one another in memory, so near a row's end this
/// fetches the next row. Without it, decoding waits on memory: the
/// hardware prefetchers alone left decode 30-40% slower on the 2-core Xeon
/// VM of `docs/benchmarks.md`; 1 KiB and 2 KiB ahead measured the same.
pub(super) const PREFETCH_AHEAD: usize = 1024;

/// Which block format a tile runs over.
#[derive(Clone, Copy)]
pub(super) enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
}

impl Format {
    /// The block format of a weight format, if it is one.
    pub(super) fn of(format: WeightFormat) -> Option<Self> {
        Some(match format {
            WeightFormat::Q4_0 => Self::Q4_0,
            WeightFormat::Q4_1 => Self::Q4_1,
            WeightFormat::Q5_0 => Self::Q5_0,
            WeightFormat::Q5_1 => Self::Q5_1,
            WeightFormat::Q8_0 => Self::Q8_0,
            _ => return None,
        })
    }

    fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
        }
    }

    /// Whether blocks carry a minimum (and so unsigned codes).
    fn with_min(self) -> bool {
        matches!(self, Self::Q4_1 | Self::Q5_1)
    }

    /// What the unsigned codes of [`codes`] exceed the signed ones by.
    fn offset(self) -> u8 {
        match self {
            Self::Q4_0 => 8,
            Self::Q5_0 => 16,
            Self::Q8_0 => 128,
            Self::Q4_1 | Self::Q5_1 => 0,
        }
    }
}

/// Exact integer dot products of unsigned weight codes with signed
/// activation bytes, per lane of four neighbouring bytes, with a format's
/// offset taken back out: `Σ (u - offset) · a`.
pub(super) trait BlockDot {
    /// What [`BlockDot::dot`] needs of an activation block besides its
    /// bytes (computed once per block and shared by the tile's rows).
    ///
    /// # Safety
    /// The CPU must have the features the implementation is for.
    unsafe fn context(a: __m256i, offset: u8) -> __m256i;

    /// The lanes of `Σ (u - offset) · a`.
    ///
    /// # Safety
    /// As for [`BlockDot::context`].
    unsafe fn dot(u: __m256i, a: __m256i, context: __m256i, offset: u8) -> __m256i;
}

/// AVX2: `maddubs` on the codes' magnitudes and the activations carrying
/// the codes' signs (its 16-bit pair sums cannot saturate: |q| <= 128 and
/// |a| <= 127 give at most 32,512).
pub(super) struct Avx2;

impl BlockDot for Avx2 {
    #[inline(always)]
    unsafe fn context(_a: __m256i, _offset: u8) -> __m256i {
        // SAFETY: the caller runs with AVX2.
        unsafe { _mm256_setzero_si256() }
    }

    #[inline(always)]
    unsafe fn dot(u: __m256i, a: __m256i, _context: __m256i, offset: u8) -> __m256i {
        // SAFETY: the caller runs with AVX2.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            if offset == 0 {
                return _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), ones);
            }
            let q = _mm256_sub_epi8(u, _mm256_set1_epi8(offset as i8));
            _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(a, q)),
                ones,
            )
        }
    }
}

/// AVX-512 VNNI: the fused u8 x i8 dot product, accumulating onto
/// `-offset · Σa` so the offset cancels.
pub(super) struct Vnni;

impl BlockDot for Vnni {
    #[inline(always)]
    unsafe fn context(a: __m256i, offset: u8) -> __m256i {
        // SAFETY: the caller runs with AVX2 + AVX-512 VNNI/VL.
        unsafe {
            let zero = _mm256_setzero_si256();
            if offset == 0 {
                return zero;
            }
            let shares = _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(offset as i8), a);
            _mm256_sub_epi32(zero, shares)
        }
    }

    #[inline(always)]
    unsafe fn dot(u: __m256i, a: __m256i, context: __m256i, _offset: u8) -> __m256i {
        // SAFETY: the caller runs with AVX2 + AVX-512 VNNI/VL.
        unsafe { _mm256_dpbusd_epi32(context, u, a) }
    }
}

/// The 32 nibbles of a 4-bit block: low nibbles first, then high ones.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes and AVX2.
    unsafe {
        let qs = _mm_loadu_si128(p.cast());
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(qs, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask);
        _mm256_set_m128i(hi, lo)
    }
}

/// The fifth bits of a Q5 block (the u32 at `p`) as 0x10 in each byte.
#[inline(always)]
unsafe fn fifth_bit(p: *const u8) -> __m256i {
    // SAFETY: the caller guarantees 4 readable bytes and AVX2.
    unsafe {
        let qh = p.cast::<u32>().read_unaligned();
        _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10))
    }
}

/// The 32 unsigned codes of the block at `blk`.
#[inline(always)]
unsafe fn codes(format: Format, blk: *const u8) -> __m256i {
    // SAFETY: the caller guarantees a whole block at `blk` and AVX2.
    unsafe {
        match format {
            Format::Q4_0 => nibbles(blk.add(2)),
            Format::Q4_1 => nibbles(blk.add(4)),
            Format::Q5_0 => _mm256_or_si256(nibbles(blk.add(6)), fifth_bit(blk.add(2))),
            Format::Q5_1 => _mm256_or_si256(nibbles(blk.add(8)), fifth_bit(blk.add(4))),
            Format::Q8_0 => _mm256_xor_si256(
                _mm256_loadu_si256(blk.add(2).cast()),
                _mm256_set1_epi8(i8::MIN),
            ),
        }
    }
}

/// Four f16 values as f32 in one register.
#[inline(always)]
unsafe fn halves(bits: [u16; TILE]) -> __m128 {
    // SAFETY: the caller runs with F16C.
    unsafe {
        let packed = bits
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 16) | u64::from(b));
        _mm_cvtph_ps(_mm_cvtsi64_si128(packed as i64))
    }
}

/// `R` weight rows by `T` activation rows of a block format: `out[r][t]`
/// is row `r`'s product with activation row `t`.
#[inline(always)]
pub(super) unsafe fn dot_tile<D: BlockDot, const R: usize, const T: usize>(
    format: Format,
    ws: [&[u8]; R],
    xs: [QRow<'_>; T],
) -> [[f32; T]; R] {
    let block_bytes = format.block_bytes();
    let nb = ws[0].len() / block_bytes;
    for w in &ws {
        assert_eq!(w.len(), nb * block_bytes, "weight rows of unequal length");
    }
    for x in &xs {
        assert!(
            x.scale_sums.len() == nb && x.values.len() == nb * QK,
            "quantized row shapes disagree"
        );
    }
    let offset = format.offset();
    let with_min = format.with_min();
    // SAFETY: the shapes were checked above (nb blocks in every weight row
    // and every activation row); the caller enabled the CPU features.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut mins = [_mm_setzero_ps(); T];
        for b in 0..nb {
            let mut d_bits = [0u16; TILE];
            let mut m_bits = [0u16; TILE];
            let mut u = [_mm256_setzero_si256(); R];
            for r in 0..R {
                let blk = ws[r].as_ptr().add(b * block_bytes);
                _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH_AHEAD).cast());
                d_bits[r] = blk.cast::<u16>().read_unaligned();
                if with_min {
                    m_bits[r] = blk.add(2).cast::<u16>().read_unaligned();
                }
                u[r] = codes(format, blk);
            }
            let d = halves(d_bits);
            let m = if with_min {
                halves(m_bits)
            } else {
                _mm_setzero_ps()
            };
            for t in 0..T {
                let a = _mm256_loadu_si256(xs[t].values.as_ptr().add(b * QK).cast());
                let [da, sum_a] = *xs[t].scale_sums.get_unchecked(b);
                let context = D::context(a, offset);
                let scales = _mm256_castps128_ps256(_mm_mul_ps(d, _mm_set1_ps(da)));
                if with_min {
                    mins[t] = _mm_fmadd_ps(m, _mm_set1_ps(sum_a), mins[t]);
                }
                for r in 0..R {
                    let p = D::dot(u[r], a, context, offset);
                    let s = _mm256_permutevar8x32_ps(scales, _mm256_set1_epi32(r as i32));
                    acc[r][t] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(p), acc[r][t]);
                }
            }
        }
        let mut out = [[0.0; T]; R];
        for t in 0..T {
            let mut m = [0.0f32; TILE];
            _mm_storeu_ps(m.as_mut_ptr(), mins[t]);
            for r in 0..R {
                out[r][t] = hsum(acc[r][t]) + m[r];
            }
        }
        out
    }
}
