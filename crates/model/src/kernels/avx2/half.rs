//! SIMD products of F16 and BF16 weights with f32 activations: weights are
//! widened to f32 (F16C for F16, a shift for BF16) and met with every
//! activation row in turn, each row keeping two accumulators. One generic
//! loop serves one, four and eight activation rows (batch invariance), on
//! 256-bit vectors ([`dot_rows`]) or, where the CPU has AVX-512, 512-bit
//! ones ([`dot_rows_512`]), which run twice the multiply-adds per
//! instruction.

use std::arch::x86_64::*;

use super::super::WeightFormat;
use super::blocks::PREFETCH_AHEAD;
use super::hsum;

/// Eight weights at `p` (16 bytes) as f32.
#[inline(always)]
unsafe fn widen(p: *const u8, bf16: bool) -> __m256 {
    // SAFETY: the caller guarantees 16 readable bytes and AVX2 + F16C.
    unsafe {
        let raw = _mm_loadu_si128(p.cast());
        if bf16 {
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16))
        } else {
            _mm256_cvtph_ps(raw)
        }
    }
}

/// Row sums of one F16 or BF16 weight row against `R` f32 rows.
#[inline(always)]
pub(super) unsafe fn dot_rows<const R: usize>(
    format: WeightFormat,
    w: &[u8],
    xs: [&[f32]; R],
) -> [f32; R] {
    let n = w.len() / 2;
    for x in &xs {
        assert!(
            w.len() == 2 * n && x.len() == n && n.is_multiple_of(16),
            "half row shapes disagree"
        );
    }
    let bf16 = format == WeightFormat::BF16;
    // SAFETY: the shapes were checked above; the caller enabled AVX2, FMA
    // and F16C.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let mut i = 0;
        while i < n {
            if i % 32 == 0 {
                _mm_prefetch::<_MM_HINT_T0>(
                    w.as_ptr().add(2 * i).wrapping_add(PREFETCH_AHEAD).cast(),
                );
            }
            let w0 = widen(w.as_ptr().add(2 * i), bf16);
            let w1 = widen(w.as_ptr().add(2 * i + 16), bf16);
            for t in 0..R {
                let p = xs[t].as_ptr().add(i);
                acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p), acc[t][0]);
                acc[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(p.add(8)), acc[t][1]);
            }
            i += 16;
        }
        let mut out = [0.0; R];
        for t in 0..R {
            out[t] = hsum(_mm256_add_ps(acc[t][0], acc[t][1]));
        }
        out
    }
}

/// Sixteen weights at `p` (32 bytes) as f32.
#[inline(always)]
unsafe fn widen_512(p: *const u8, bf16: bool) -> __m512 {
    // SAFETY: the caller guarantees 32 readable bytes and AVX-512F.
    unsafe {
        let raw = _mm256_loadu_si256(p.cast());
        if bf16 {
            _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16))
        } else {
            _mm512_cvtph_ps(raw)
        }
    }
}

/// The sum of a 512-bit register's lanes, in a fixed order.
#[inline(always)]
unsafe fn hsum_512(v: __m512) -> f32 {
    // SAFETY: the caller runs with AVX-512F.
    unsafe {
        let half = _mm256_add_ps(
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
        );
        hsum(half)
    }
}

/// As [`dot_rows`], 32 weights per step on 512-bit vectors.
#[inline(always)]
pub(super) unsafe fn dot_rows_512<const R: usize>(
    format: WeightFormat,
    w: &[u8],
    xs: [&[f32]; R],
) -> [f32; R] {
    let n = w.len() / 2;
    for x in &xs {
        assert!(
            w.len() == 2 * n && x.len() == n && n.is_multiple_of(32),
            "half row shapes disagree"
        );
    }
    let bf16 = format == WeightFormat::BF16;
    // SAFETY: the shapes were checked above; the caller enabled AVX-512F,
    // AVX2, FMA and F16C.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let mut i = 0;
        while i < n {
            _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().add(2 * i).wrapping_add(PREFETCH_AHEAD).cast());
            let w0 = widen_512(w.as_ptr().add(2 * i), bf16);
            let w1 = widen_512(w.as_ptr().add(2 * i + 32), bf16);
            for t in 0..R {
                let p = xs[t].as_ptr().add(i);
                acc[t][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(p), acc[t][0]);
                acc[t][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(p.add(16)), acc[t][1]);
            }
            i += 32;
        }
        let mut out = [0.0; R];
        for t in 0..R {
            out[t] = hsum_512(_mm512_add_ps(acc[t][0], acc[t][1]));
        }
        out
    }
}
