//! SIMD products of the 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0): one weight row, eight weight rows, or a tile of eight weight rows
//! by eight activation rows per call.
//!
//! Every product forms each block's exact integer sum `Σ code · activation`
//! and then, per block in order, `acc = fma(d_w · d_a, sum, acc)` (and for
//! formats with a minimum, `min = fma(m_w, d_a · Σa, min)`), returning
//! `acc + min`. The float steps are the same whichever kernel runs, so a
//! token's result does not depend on its batch (batch invariance); the
//! integer sums are exact, so how they are formed is free:
//!
//! * a tile transposes its eight weight rows' unpacked blocks so that each
//!   register holds four codes of every row, and meets them with four
//!   broadcast activation bytes: the integer sums of eight rows build up in
//!   the lanes of one register, and the float steps run once per eight
//!   rows. Per block and token that is eight integer dot products and
//!   three float instructions for eight rows;
//! * one activation row (decoding) against eight weight rows sums each
//!   row's dot product across lanes with a transposing reduction instead,
//!   which costs less when there is a single activation row to share it.
//!
//! Codes are met as unsigned bytes: a signed format's codes are offset
//! (Q4_0 by 8, Q5_0 by 16, Q8_0 by 128) and `offset · Σa` is taken back out
//! of the integer sum, so AVX2 and VNNI form the same sums.

use std::arch::x86_64::*;

use super::super::{QK, QRow, WeightFormat};
use super::chunks::bytes_from_bits;

/// Weight rows per tile, one per f32 lane.
pub(in super::super) const ROWS: usize = 8;

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

    /// The weight format this is.
    fn weight_format(self) -> WeightFormat {
        match self {
            Self::Q4_0 => WeightFormat::Q4_0,
            Self::Q4_1 => WeightFormat::Q4_1,
            Self::Q5_0 => WeightFormat::Q5_0,
            Self::Q5_1 => WeightFormat::Q5_1,
            Self::Q8_0 => WeightFormat::Q8_0,
        }
    }

    fn block_bytes(self) -> usize {
        self.weight_format().block_bytes()
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
/// offset taken back out.
pub(super) trait BlockDot {
    /// The starting point of a sum whose lanes add up to `-correction`
    /// (`correction = offset · Σa`): in lane 0 only, or (`every_lane`) in
    /// every lane, for sums that stay per lane.
    ///
    /// # Safety
    /// The CPU must have the features the implementation is for.
    unsafe fn start(correction: i32, every_lane: bool) -> __m256i;

    /// `acc` plus, per lane, `Σ (u - offset) · a` over its four bytes;
    /// implementations that take the offset out here ignore `start`'s
    /// correction.
    ///
    /// # Safety
    /// As for [`BlockDot::start`].
    unsafe fn accumulate(acc: __m256i, u: __m256i, a: __m256i, offset: u8) -> __m256i;
}

/// AVX2: `maddubs` on the codes' magnitudes and the activations carrying
/// the codes' signs (its 16-bit pair sums cannot saturate: |q| <= 128 and
/// |a| <= 127 give at most 32,512).
pub(super) struct Avx2;

impl BlockDot for Avx2 {
    #[inline(always)]
    unsafe fn start(_correction: i32, _every_lane: bool) -> __m256i {
        // SAFETY: the caller runs with AVX2.
        unsafe { _mm256_setzero_si256() }
    }

    #[inline(always)]
    unsafe fn accumulate(acc: __m256i, u: __m256i, a: __m256i, offset: u8) -> __m256i {
        // SAFETY: the caller runs with AVX2.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let lanes = if offset == 0 {
                _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), ones)
            } else {
                let q = _mm256_sub_epi8(u, _mm256_set1_epi8(offset as i8));
                _mm256_madd_epi16(
                    _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(a, q)),
                    ones,
                )
            };
            _mm256_add_epi32(acc, lanes)
        }
    }
}

/// AVX-512 VNNI: the fused u8 x i8 dot product, accumulating onto
/// `-offset · Σa` so the offset cancels.
pub(super) struct Vnni;

impl BlockDot for Vnni {
    #[inline(always)]
    unsafe fn start(correction: i32, every_lane: bool) -> __m256i {
        // SAFETY: the caller runs with AVX2.
        unsafe {
            if every_lane {
                _mm256_set1_epi32(-correction)
            } else {
                _mm256_zextsi128_si256(_mm_cvtsi32_si128(-correction))
            }
        }
    }

    #[inline(always)]
    unsafe fn accumulate(acc: __m256i, u: __m256i, a: __m256i, _offset: u8) -> __m256i {
        // SAFETY: the caller runs with AVX2 + AVX-512 VNNI/VL.
        unsafe { _mm256_dpbusd_epi32(acc, u, a) }
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

/// Eight f16 values as f32 in one register.
#[inline(always)]
unsafe fn halves(bits: [u16; ROWS]) -> __m256 {
    // SAFETY: the caller runs with F16C.
    unsafe {
        let pack = |four: &[u16]| {
            four.iter()
                .rev()
                .fold(0u64, |acc, &b| (acc << 16) | u64::from(b)) as i64
        };
        _mm256_cvtph_ps(_mm_set_epi64x(pack(&bits[4..]), pack(&bits[..4])))
    }
}

/// Eight registers of eight i32 lanes transposed: lane `r` of output `i`
/// is lane `i` of input `r`.
#[inline(always)]
unsafe fn transpose(u: [__m256i; 8]) -> [__m256i; 8] {
    // SAFETY: the caller runs with AVX2.
    unsafe {
        let t = [
            _mm256_unpacklo_epi32(u[0], u[1]),
            _mm256_unpackhi_epi32(u[0], u[1]),
            _mm256_unpacklo_epi32(u[2], u[3]),
            _mm256_unpackhi_epi32(u[2], u[3]),
            _mm256_unpacklo_epi32(u[4], u[5]),
            _mm256_unpackhi_epi32(u[4], u[5]),
            _mm256_unpacklo_epi32(u[6], u[7]),
            _mm256_unpackhi_epi32(u[6], u[7]),
        ];
        let s = [
            _mm256_unpacklo_epi64(t[0], t[2]),
            _mm256_unpackhi_epi64(t[0], t[2]),
            _mm256_unpacklo_epi64(t[1], t[3]),
            _mm256_unpackhi_epi64(t[1], t[3]),
            _mm256_unpacklo_epi64(t[4], t[6]),
            _mm256_unpackhi_epi64(t[4], t[6]),
            _mm256_unpacklo_epi64(t[5], t[7]),
            _mm256_unpackhi_epi64(t[5], t[7]),
        ];
        [
            _mm256_permute2x128_si256(s[0], s[4], 0x20),
            _mm256_permute2x128_si256(s[1], s[5], 0x20),
            _mm256_permute2x128_si256(s[2], s[6], 0x20),
            _mm256_permute2x128_si256(s[3], s[7], 0x20),
            _mm256_permute2x128_si256(s[0], s[4], 0x31),
            _mm256_permute2x128_si256(s[1], s[5], 0x31),
            _mm256_permute2x128_si256(s[2], s[6], 0x31),
            _mm256_permute2x128_si256(s[3], s[7], 0x31),
        ]
    }
}

/// Lane-wise `lo(a, b) + hi(a, b)` for an unpacking pair.
#[inline(always)]
unsafe fn fold32(a: __m256i, b: __m256i) -> __m256i {
    // SAFETY: the caller runs with AVX2.
    unsafe { _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b)) }
}

/// As [`fold32`] with 64-bit unpacking.
#[inline(always)]
unsafe fn fold64(a: __m256i, b: __m256i) -> __m256i {
    // SAFETY: the caller runs with AVX2.
    unsafe { _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b)) }
}

/// The lane sums of eight registers: lane `r` of the result is the sum of
/// register `r`'s lanes.
#[inline(always)]
unsafe fn lane_sums(p: [__m256i; 8]) -> __m256i {
    // SAFETY: the caller runs with AVX2. (Helpers, not closures: closures
    // would not inherit the kernel's target features.)
    unsafe {
        let low = fold64(fold32(p[0], p[1]), fold32(p[2], p[3]));
        let high = fold64(fold32(p[4], p[5]), fold32(p[6], p[7]));
        _mm256_add_epi32(
            _mm256_permute2x128_si256(low, high, 0x20),
            _mm256_permute2x128_si256(low, high, 0x31),
        )
    }
}

/// The sum of one register's lanes, in lane 0.
#[inline(always)]
unsafe fn lane_sum(p: __m256i) -> __m256i {
    // SAFETY: the caller runs with AVX2.
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
        _mm256_zextsi128_si256(s)
    }
}

/// Headers and codes of block `b` in `R` weight rows: `[d]`, `[m]` as
/// f32 lanes per row (unused lanes 0), and the rows' unsigned codes.
#[inline(always)]
unsafe fn block_of_rows<const R: usize>(
    format: Format,
    ws: &[&[u8]; R],
    b: usize,
) -> (__m256, __m256, [__m256i; R]) {
    let block_bytes = format.block_bytes();
    // SAFETY: the caller checked that block b exists in every row and runs
    // with AVX2 + F16C.
    unsafe {
        let mut d_bits = [0u16; ROWS];
        let mut m_bits = [0u16; ROWS];
        let mut u = [_mm256_setzero_si256(); R];
        for r in 0..R {
            let blk = ws[r].as_ptr().add(b * block_bytes);
            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(PREFETCH_AHEAD).cast());
            d_bits[r] = blk.cast::<u16>().read_unaligned();
            if format.with_min() {
                m_bits[r] = blk.add(2).cast::<u16>().read_unaligned();
            }
            u[r] = codes(format, blk);
        }
        let m = if format.with_min() {
            halves(m_bits)
        } else {
            _mm256_setzero_ps()
        };
        (halves(d_bits), m, u)
    }
}

/// Checks that every weight row and activation row holds the same number
/// of blocks, and returns it.
fn blocks_in<const R: usize, const T: usize>(
    format: Format,
    ws: &[&[u8]; R],
    xs: &[QRow<'_>; T],
) -> usize {
    let block_bytes = format.block_bytes();
    let nb = ws[0].len() / block_bytes;
    for w in ws {
        assert_eq!(w.len(), nb * block_bytes, "weight rows of unequal length");
    }
    for x in xs {
        assert!(
            x.scale_sums.len() == nb && x.sums.len() == nb && x.values.len() == nb * QK,
            "quantized row shapes disagree"
        );
    }
    nb
}

/// The per-row results in lanes: `acc + min`.
#[inline(always)]
unsafe fn finish(acc: __m256, min: __m256) -> [f32; ROWS] {
    let mut out = [0.0f32; ROWS];
    // SAFETY: `out` holds eight f32; the caller runs with AVX.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(acc, min)) };
    out
}

/// `R` (1 or 8) weight rows against one activation row: each row's dot
/// product is summed across lanes, then the float steps run for all rows
/// at once.
#[inline(always)]
pub(super) unsafe fn dot_rows<D: BlockDot, const R: usize>(
    format: Format,
    ws: [&[u8]; R],
    x: QRow<'_>,
) -> [f32; R] {
    assert!(R == 1 || R == ROWS, "one row or eight");
    let nb = blocks_in(format, &ws, &[x]);
    let offset = format.offset();
    // SAFETY: the shapes were checked above; the caller enabled the CPU
    // features.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut min = _mm256_setzero_ps();
        for b in 0..nb {
            let (d, m, u) = block_of_rows(format, &ws, b);
            let a = _mm256_loadu_si256(x.values.as_ptr().add(b * QK).cast());
            let [da, sum_a] = *x.scale_sums.get_unchecked(b);
            let start = D::start(i32::from(offset) * *x.sums.get_unchecked(b), false);
            let mut p = [_mm256_setzero_si256(); R];
            for r in 0..R {
                p[r] = D::accumulate(start, u[r], a, offset);
            }
            let sums = if R == 1 {
                lane_sum(p[0])
            } else {
                lane_sums([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]])
            };
            let s = _mm256_mul_ps(d, _mm256_set1_ps(da));
            acc = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(sums), acc);
            if format.with_min() {
                min = _mm256_fmadd_ps(m, _mm256_set1_ps(sum_a), min);
            }
        }
        let all = finish(acc, min);
        std::array::from_fn(|r| all[r])
    }
}

/// Eight weight rows against `T` activation rows (`out[r][t]`): the rows'
/// unpacked blocks are transposed so one register holds four codes of
/// every row, and the integer sums of all eight rows build up in one
/// register per activation row.
#[inline(always)]
pub(super) unsafe fn dot_tile<D: BlockDot, const T: usize>(
    format: Format,
    ws: [&[u8]; ROWS],
    xs: [QRow<'_>; T],
) -> [[f32; T]; ROWS] {
    let nb = blocks_in(format, &ws, &xs);
    let offset = format.offset();
    // SAFETY: the shapes were checked above; the caller enabled the CPU
    // features.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); T];
        let mut min = [_mm256_setzero_ps(); T];
        for b in 0..nb {
            let (d, m, u) = block_of_rows(format, &ws, b);
            let v = transpose(u);
            for t in 0..T {
                let a = xs[t].values.as_ptr().add(b * QK);
                let [da, sum_a] = *xs[t].scale_sums.get_unchecked(b);
                let mut sums = D::start(i32::from(offset) * *xs[t].sums.get_unchecked(b), true);
                for (i, v) in v.iter().enumerate() {
                    let four = _mm256_set1_epi32(a.add(4 * i).cast::<i32>().read_unaligned());
                    sums = D::accumulate(sums, *v, four, offset);
                }
                let s = _mm256_mul_ps(d, _mm256_set1_ps(da));
                acc[t] = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(sums), acc[t]);
                if format.with_min() {
                    min[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(sum_a), min[t]);
                }
            }
        }
        let mut out = [[0.0; T]; ROWS];
        for t in 0..T {
            for (r, v) in finish(acc[t], min[t]).into_iter().enumerate() {
                out[r][t] = v;
            }
        }
        out
    }
}

/// [`dot_rows`] for any block format, each arm with its format a constant
/// (so its decoding folds away once inlined into a kernel).
#[inline(always)]
pub(super) unsafe fn rows_any<D: BlockDot, const R: usize>(
    format: WeightFormat,
    ws: [&[u8]; R],
    x: QRow<'_>,
) -> [f32; R] {
    // SAFETY: forwarded from the caller.
    unsafe {
        match Format::of(format) {
            Some(Format::Q4_0) => dot_rows::<D, R>(Format::Q4_0, ws, x),
            Some(Format::Q4_1) => dot_rows::<D, R>(Format::Q4_1, ws, x),
            Some(Format::Q5_0) => dot_rows::<D, R>(Format::Q5_0, ws, x),
            Some(Format::Q5_1) => dot_rows::<D, R>(Format::Q5_1, ws, x),
            Some(Format::Q8_0) => dot_rows::<D, R>(Format::Q8_0, ws, x),
            None => unreachable!("{format} is not a 32-value block format"),
        }
    }
}

/// [`dot_tile`] for any block format, as [`rows_any`].
#[inline(always)]
pub(super) unsafe fn tile_any<D: BlockDot, const T: usize>(
    format: WeightFormat,
    ws: [&[u8]; ROWS],
    xs: [QRow<'_>; T],
) -> [[f32; T]; ROWS] {
    // SAFETY: forwarded from the caller.
    unsafe {
        match Format::of(format) {
            Some(Format::Q4_0) => dot_tile::<D, T>(Format::Q4_0, ws, xs),
            Some(Format::Q4_1) => dot_tile::<D, T>(Format::Q4_1, ws, xs),
            Some(Format::Q5_0) => dot_tile::<D, T>(Format::Q5_0, ws, xs),
            Some(Format::Q5_1) => dot_tile::<D, T>(Format::Q5_1, ws, xs),
            Some(Format::Q8_0) => dot_tile::<D, T>(Format::Q8_0, ws, xs),
            None => unreachable!("{format} is not a 32-value block format"),
        }
    }
}
