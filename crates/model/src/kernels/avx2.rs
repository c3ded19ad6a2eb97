//! AVX2 + FMA + F16C kernels, selected at run time when the CPU has them.

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    use super::super::{scalar, Kernels, QRow, QK};

    pub(in super::super) fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    pub(in super::super) const KERNELS: Kernels = Kernels {
        quantize: scalar::quantize,
        dot_q4_0,
        dot_q4_1,
        dot_q8_0,
        dot_f32,
    };

    fn check(w: &[u8], block_bytes: usize, x: QRow<'_>) -> usize {
        let nb = w.len() / block_bytes;
        assert!(
            w.len() == nb * block_bytes
                && x.scales.len() == nb
                && x.sums.len() == nb
                && x.values.len() == nb * QK,
            "quantized row shapes disagree"
        );
        nb
    }

    fn dot_q4_0(w: &[u8], x: QRow<'_>) -> f32 {
        let nb = check(w, 18, x);
        // SAFETY: this kernel set is only chosen when `available()`, and
        // `check` proved every block read below is in bounds.
        unsafe { dot_q4_0_avx2(w.as_ptr(), x, nb) }
    }

    fn dot_q4_1(w: &[u8], x: QRow<'_>) -> f32 {
        let nb = check(w, 20, x);
        // SAFETY: as in `dot_q4_0`.
        unsafe { dot_q4_1_avx2(w.as_ptr(), x, nb) }
    }

    fn dot_q8_0(w: &[u8], x: QRow<'_>) -> f32 {
        let nb = check(w, 34, x);
        // SAFETY: as in `dot_q4_0`.
        unsafe { dot_q8_0_avx2(w.as_ptr(), x, nb) }
    }

    fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot of unequal lengths");
        // SAFETY: only chosen when `available()`; lengths checked above.
        unsafe { dot_f32_avx2(a, b) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_at(p: *const u8) -> f32 {
        // SAFETY: the caller guarantees two readable bytes at `p`.
        let bits = unsafe { p.cast::<u16>().read_unaligned() };
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Sums of products of 32 signed bytes, as 8 lanes of i32, via the
    /// unsigned-times-signed instruction: |w| * (a with w's sign).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn signed_dot(w: __m256i, a: __m256i) -> __m256i {
        let ones = _mm256_set1_epi16(1);
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
        _mm256_madd_epi16(p, ones)
    }

    /// The 32 nibbles of a 4-bit block: low nibbles first, then high ones.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        // SAFETY: the caller guarantees 16 readable bytes at `p`.
        let qs = unsafe { _mm_loadu_si128(p.cast()) };
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(qs, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_q4_0_avx2(w: *const u8, x: QRow<'_>, nb: usize) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let eight = _mm256_set1_epi8(8);
        for b in 0..nb {
            // SAFETY: b < nb blocks of 18 bytes in `w`, 32 values in `x`.
            unsafe {
                let blk = w.add(b * 18);
                let wv = _mm256_sub_epi8(nibbles(blk.add(2)), eight);
                let av = _mm256_loadu_si256(x.values.as_ptr().add(b * QK).cast());
                let scale = f16_at(blk) * *x.scales.get_unchecked(b);
                acc = _mm256_fmadd_ps(
                    _mm256_set1_ps(scale),
                    _mm256_cvtepi32_ps(signed_dot(wv, av)),
                    acc,
                );
            }
        }
        hsum(acc)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_q4_1_avx2(w: *const u8, x: QRow<'_>, nb: usize) -> f32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0.0f32;
        for b in 0..nb {
            // SAFETY: b < nb blocks of 20 bytes in `w`, 32 values in `x`.
            unsafe {
                let blk = w.add(b * 20);
                let wv = nibbles(blk.add(4));
                let av = _mm256_loadu_si256(x.values.as_ptr().add(b * QK).cast());
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones);
                let scale = f16_at(blk) * *x.scales.get_unchecked(b);
                acc = _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(p), acc);
                mins += f16_at(blk.add(2)) * *x.sums.get_unchecked(b);
            }
        }
        hsum(acc) + mins
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_q8_0_avx2(w: *const u8, x: QRow<'_>, nb: usize) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            // SAFETY: b < nb blocks of 34 bytes in `w`, 32 values in `x`.
            unsafe {
                let blk = w.add(b * 34);
                let wv = _mm256_loadu_si256(blk.add(2).cast());
                let av = _mm256_loadu_si256(x.values.as_ptr().add(b * QK).cast());
                let scale = f16_at(blk) * *x.scales.get_unchecked(b);
                acc = _mm256_fmadd_ps(
                    _mm256_set1_ps(scale),
                    _mm256_cvtepi32_ps(signed_dot(wv, av)),
                    acc,
                );
            }
        }
        hsum(acc)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n = a.len() = b.len().
            unsafe {
                let pa = a.as_ptr().add(i);
                let pb = b.as_ptr().add(i);
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa), _mm256_loadu_ps(pb), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(8)),
                    _mm256_loadu_ps(pb.add(8)),
                    acc1,
                );
            }
            i += 16;
        }
        let mut sum = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            sum += a[i] * b[i];
            i += 1;
        }
        sum
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use imp::{available, KERNELS};

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn available() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) const KERNELS: super::Kernels = super::scalar::KERNELS;
