//! SIMD products of F16 and BF16 weights with f32 activations: weights are
//! widened to f32 (F16C for F16, a shift for BF16) and met with every
//! activation row in turn, each row keeping two accumulators. One generic
//! loop ([`dot_rows`]) serves one, four and eight activation rows (batch
//! invariance), on 256-bit vectors ([`Ymm`]) or, where the CPU has
//! AVX-512, 512-bit ones ([`Zmm`]), which run twice the multiply-adds per
//! instruction.

use std::arch::x86_64::*;

use super::super::WeightFormat;
use super::blocks::PREFETCH_AHEAD;
use super::hsum;

/// A vector width the loop runs at.
pub(super) trait Width {
    /// A register of f32 lanes.
    type V: Copy;
    /// f32 lanes per register.
    const LANES: usize;

    /// # Safety
    /// The CPU must have the features the width needs (every function).
    unsafe fn zero() -> Self::V;
    /// `LANES` half-precision weights at `p` as f32.
    ///
    /// # Safety
    /// As above, and `2 * LANES` readable bytes at `p`.
    unsafe fn widen(p: *const u8, bf16: bool) -> Self::V;
    /// # Safety
    /// As above, and `LANES` readable f32 at `p`.
    unsafe fn load(p: *const f32) -> Self::V;
    /// # Safety
    /// As above.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// The sum of `a + b`'s lanes, in a fixed order.
    ///
    /// # Safety
    /// As above.
    unsafe fn sum(a: Self::V, b: Self::V) -> f32;
}

/// 256-bit vectors: AVX2 + FMA + F16C.
pub(super) struct Ymm;

impl Width for Ymm {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        // SAFETY: the caller runs with AVX.
        unsafe { _mm256_setzero_ps() }
    }

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

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f32 and AVX.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: the caller runs with FMA.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }

    #[inline(always)]
    unsafe fn sum(a: __m256, b: __m256) -> f32 {
        // SAFETY: the caller runs with AVX.
        unsafe { hsum(_mm256_add_ps(a, b)) }
    }
}

/// 512-bit vectors: AVX-512F (with F16C's conversions widened).
pub(super) struct Zmm;

impl Width for Zmm {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        // SAFETY: the caller runs with AVX-512F.
        unsafe { _mm512_setzero_ps() }
    }

    #[inline(always)]
    unsafe fn widen(p: *const u8, bf16: bool) -> __m512 {
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

    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable f32 and AVX-512F.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: the caller runs with AVX-512F.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }

    #[inline(always)]
    unsafe fn sum(a: __m512, b: __m512) -> f32 {
        // SAFETY: the caller runs with AVX-512F.
        unsafe {
            let v = _mm512_add_ps(a, b);
            let half = _mm256_add_ps(
                _mm512_castps512_ps256(v),
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
            );
            hsum(half)
        }
    }
}

/// Row sums of one F16 or BF16 weight row against `R` f32 rows, two
/// registers of weights per step.
#[inline(always)]
pub(super) unsafe fn dot_rows<W: Width, const R: usize>(
    format: WeightFormat,
    w: &[u8],
    xs: [&[f32]; R],
) -> [f32; R] {
    let step = 2 * W::LANES;
    let n = w.len() / 2;
    for x in &xs {
        assert!(
            w.len() == 2 * n && x.len() == n && n.is_multiple_of(step),
            "half row shapes disagree"
        );
    }
    let bf16 = format == WeightFormat::BF16;
    // SAFETY: the shapes were checked above; the caller enabled the
    // width's CPU features.
    unsafe {
        let mut acc = [[W::zero(); 2]; R];
        let mut i = 0;
        while i < n {
            if i % 32 == 0 {
                _mm_prefetch::<_MM_HINT_T0>(
                    w.as_ptr().add(2 * i).wrapping_add(PREFETCH_AHEAD).cast(),
                );
            }
            let w0 = W::widen(w.as_ptr().add(2 * i), bf16);
            let w1 = W::widen(w.as_ptr().add(2 * (i + W::LANES)), bf16);
            for t in 0..R {
                let p = xs[t].as_ptr().add(i);
                acc[t][0] = W::fma(w0, W::load(p), acc[t][0]);
                acc[t][1] = W::fma(w1, W::load(p.add(W::LANES)), acc[t][1]);
            }
            i += step;
        }
        let mut out = [0.0; R];
        for t in 0..R {
            out[t] = W::sum(acc[t][0], acc[t][1]);
        }
        out
    }
}

/// [`dot_rows`] with the format a constant in each arm, so the widening
/// folds away once inlined into a kernel.
#[inline(always)]
pub(super) unsafe fn dot_rows_any<W: Width, const R: usize>(
    format: WeightFormat,
    w: &[u8],
    xs: [&[f32]; R],
) -> [f32; R] {
    // SAFETY: forwarded from the caller.
    unsafe {
        if format == WeightFormat::BF16 {
            dot_rows::<W, R>(WeightFormat::BF16, w, xs)
        } else {
            dot_rows::<W, R>(WeightFormat::F16, w, xs)
        }
    }
}
