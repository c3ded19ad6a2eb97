//! x86-64 SIMD kernels, chosen at run time: AVX2 + FMA + F16C, and where the
//! CPU has AVX-512 VNNI, the same loops with its fused u8 x i8 dot product.
//!
//! The 32-value block formats run in tiles of weight rows by activation
//! rows ([`blocks`]), the K-quants one weight row at a time over 32-value
//! chunks ([`chunks`]), F16 and BF16 on widened f32 ([`half`]).

#[cfg(target_arch = "x86_64")]
mod blocks;
#[cfg(target_arch = "x86_64")]
mod chunks;
#[cfg(target_arch = "x86_64")]
mod half;
#[cfg(target_arch = "x86_64")]
mod vector;
#[cfg(target_arch = "x86_64")]
use imp::{DotU8I8, hsum};

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    use super::super::{Kernels, QK, QRow, WeightFormat};

    pub(in super::super) fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    fn vnni_available() -> bool {
        available()
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512f")
    }

    /// The best kernel set for this CPU (callers checked `available()`).
    pub(in super::super) fn kernels() -> Kernels {
        if vnni_available() { VNNI } else { AVX2 }
    }

    /// Every kernel set this CPU can run, AVX2 first (for tests that hold
    /// the sets to each other).
    #[cfg(test)]
    pub(in super::super) fn sets() -> Vec<Kernels> {
        let mut sets = Vec::new();
        if available() {
            sets.push(AVX2);
        }
        if vnni_available() {
            sets.push(VNNI);
        }
        sets
    }

    const AVX2: Kernels = Kernels {
        quantize,
        dot_block: blocks_avx2::dot,
        rows_block: blocks_avx2::rows8,
        tile_block: blocks_avx2::tile,
        dot_chunked: dot_chunked_avx2,
        dot4_chunked: dot4_chunked_avx2,
        dot8_chunked: dot8_chunked_avx2,
        dot_half,
        dot4_half,
        dot8_half,
        dot_f32,
        axpy: super::vector::axpy,
        softmax: super::vector::softmax,
    };

    const VNNI: Kernels = Kernels {
        quantize,
        dot_block: blocks_vnni::dot,
        rows_block: blocks_vnni::rows8,
        tile_block: blocks_vnni::tile,
        dot_chunked: dot_chunked_vnni,
        dot4_chunked: dot4_chunked_vnni,
        dot8_chunked: dot8_chunked_vnni,
        dot_half: dot_half_512,
        dot4_half: dot4_half_512,
        dot8_half: dot8_half_512,
        dot_f32,
        axpy: super::vector::axpy,
        softmax: super::vector::softmax,
    };

    /// Integer dot products of 32 unsigned by 32 signed bytes, as 8 i32 lanes.
    pub(in super::super) trait DotU8I8 {
        /// # Safety
        /// The CPU must have the features the implementation is for.
        unsafe fn dot(u: __m256i, s: __m256i) -> __m256i;
    }

    struct Avx2Dot;
    impl DotU8I8 for Avx2Dot {
        #[inline(always)]
        unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
            // SAFETY: callers run inside `#[target_feature(enable = "avx2")]`.
            unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)) }
        }
    }

    struct VnniDot;
    impl DotU8I8 for VnniDot {
        #[inline(always)]
        unsafe fn dot(u: __m256i, s: __m256i) -> __m256i {
            // SAFETY: callers run inside a function enabling avx512vnni+vl.
            unsafe { _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s) }
        }
    }

    #[inline(always)]
    pub(in super::super) unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: the caller runs with AVX enabled.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    }

    macro_rules! block_kernel_set {
        ($set:ident, $features:literal, $dot:ident) => {
            /// The 32-value block formats with this set's features.
            mod $set {
                use super::super::super::{QRow, TILE_TOKENS, WeightFormat};
                use super::super::blocks::{ROWS, rows_any, tile_any, $dot};

                #[target_feature(enable = $features)]
                unsafe fn rows<const R: usize>(
                    format: WeightFormat,
                    ws: [&[u8]; R],
                    x: QRow<'_>,
                ) -> [f32; R] {
                    // SAFETY: forwarded from the caller.
                    unsafe { rows_any::<$dot, R>(format, ws, x) }
                }

                #[target_feature(enable = $features)]
                unsafe fn tile_of(
                    format: WeightFormat,
                    ws: [&[u8]; ROWS],
                    xs: [QRow<'_>; TILE_TOKENS],
                ) -> [[f32; TILE_TOKENS]; ROWS] {
                    // SAFETY: forwarded from the caller.
                    unsafe { tile_any::<$dot, TILE_TOKENS>(format, ws, xs) }
                }

                // SAFETY (each function below): this kernel set is only
                // chosen when the CPU has its features (`available()` /
                // `vnni_available()`).

                pub(in super::super::super) fn dot(
                    format: WeightFormat,
                    w: &[u8],
                    x: QRow<'_>,
                ) -> f32 {
                    let [v] = unsafe { rows::<1>(format, [w], x) };
                    v
                }

                pub(in super::super::super) fn rows8(
                    format: WeightFormat,
                    ws: [&[u8]; ROWS],
                    x: QRow<'_>,
                ) -> [f32; ROWS] {
                    unsafe { rows::<ROWS>(format, ws, x) }
                }

                pub(in super::super::super) fn tile(
                    format: WeightFormat,
                    ws: [&[u8]; ROWS],
                    xs: [QRow<'_>; TILE_TOKENS],
                ) -> [[f32; TILE_TOKENS]; ROWS] {
                    unsafe { tile_of(format, ws, xs) }
                }
            }
        };
    }

    block_kernel_set!(blocks_avx2, "avx2,fma,f16c", Avx2);
    block_kernel_set!(blocks_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", Vnni);

    /// One chunked-format row against `R` activation rows, with the
    /// format a constant in each arm so its decoding folds away.
    #[inline(always)]
    unsafe fn chunked<D: DotU8I8, const R: usize>(
        format: WeightFormat,
        w: &[u8],
        xs: [QRow<'_>; R],
    ) -> [f32; R] {
        use super::chunks::dot_rows;
        // SAFETY: forwarded from the caller.
        unsafe {
            match format {
                WeightFormat::Q2K => dot_rows::<D, R>(WeightFormat::Q2K, w, xs),
                WeightFormat::Q3K => dot_rows::<D, R>(WeightFormat::Q3K, w, xs),
                WeightFormat::Q4K => dot_rows::<D, R>(WeightFormat::Q4K, w, xs),
                WeightFormat::Q5K => dot_rows::<D, R>(WeightFormat::Q5K, w, xs),
                WeightFormat::Q6K => dot_rows::<D, R>(WeightFormat::Q6K, w, xs),
                _ => unreachable!("{format:?} is not a chunked format"),
            }
        }
    }

    macro_rules! chunked_kernel {
        ($name:ident, $features:literal, $dot:ty, $rows:literal) => {
            fn $name(format: WeightFormat, w: &[u8], xs: [QRow<'_>; $rows]) -> [f32; $rows] {
                #[target_feature(enable = $features)]
                unsafe fn inner(
                    format: WeightFormat,
                    w: &[u8],
                    xs: [QRow<'_>; $rows],
                ) -> [f32; $rows] {
                    // SAFETY: forwarded from the caller.
                    unsafe { chunked::<$dot, $rows>(format, w, xs) }
                }
                // SAFETY: this kernel set is only chosen when the CPU has
                // these features (`available()` / `vnni_available()`).
                unsafe { inner(format, w, xs) }
            }
        };
    }

    chunked_kernel!(dot8_chunked_avx2, "avx2,fma,f16c", Avx2Dot, 8);
    chunked_kernel!(
        dot8_chunked_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        8
    );
    chunked_kernel!(dot4_chunked_avx2, "avx2,fma,f16c", Avx2Dot, 4);
    chunked_kernel!(dot1_chunked_avx2, "avx2,fma,f16c", Avx2Dot, 1);
    chunked_kernel!(
        dot4_chunked_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        4
    );
    chunked_kernel!(
        dot1_chunked_vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        VnniDot,
        1
    );

    fn dot_chunked_avx2(format: WeightFormat, w: &[u8], x: QRow<'_>) -> f32 {
        dot1_chunked_avx2(format, w, [x])[0]
    }

    fn dot_chunked_vnni(format: WeightFormat, w: &[u8], x: QRow<'_>) -> f32 {
        dot1_chunked_vnni(format, w, [x])[0]
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn half_rows<const R: usize>(
        format: WeightFormat,
        w: &[u8],
        xs: [&[f32]; R],
    ) -> [f32; R] {
        // SAFETY: forwarded from the caller.
        unsafe { super::half::dot_rows_any::<super::half::Ymm, R>(format, w, xs) }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    unsafe fn half_rows_512<const R: usize>(
        format: WeightFormat,
        w: &[u8],
        xs: [&[f32]; R],
    ) -> [f32; R] {
        // SAFETY: forwarded from the caller.
        unsafe { super::half::dot_rows_any::<super::half::Zmm, R>(format, w, xs) }
    }

    macro_rules! half_kernel {
        ($name:ident, $rows:ident, $n:literal) => {
            fn $name(format: WeightFormat, w: &[u8], xs: [&[f32]; $n]) -> [f32; $n] {
                // SAFETY: the AVX2 set is only chosen when `available()`;
                // the 512-bit kernels only in the VNNI set, whose CPUs
                // have AVX-512F.
                unsafe { $rows::<$n>(format, w, xs) }
            }
        };
    }

    half_kernel!(dot4_half, half_rows, 4);
    half_kernel!(dot8_half, half_rows, 8);
    half_kernel!(dot4_half_512, half_rows_512, 4);
    half_kernel!(dot8_half_512, half_rows_512, 8);

    fn dot_half(format: WeightFormat, w: &[u8], x: &[f32]) -> f32 {
        // SAFETY: only chosen when `available()`.
        unsafe { half_rows::<1>(format, w, [x])[0] }
    }

    fn dot_half_512(format: WeightFormat, w: &[u8], x: &[f32]) -> f32 {
        // SAFETY: only in the VNNI set, whose CPUs have AVX-512F.
        unsafe { half_rows_512::<1>(format, w, [x])[0] }
    }

    fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot of unequal lengths");
        // SAFETY: only chosen when `available()`; lengths checked above.
        unsafe { dot_f32_avx2(a, b) }
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
                acc1 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(8)), _mm256_loadu_ps(pb.add(8)), acc1);
            }
            i += 16;
        }
        // SAFETY: AVX is enabled in this function.
        let mut sum = unsafe { hsum(_mm256_add_ps(acc0, acc1)) };
        while i < n {
            sum += a[i] * b[i];
            i += 1;
        }
        sum
    }

    fn quantize(x: &[f32], scale_sums: &mut [[f32; 2]], values: &mut [i8]) {
        let nb = x.len() / QK;
        assert!(
            x.len() == nb * QK && scale_sums.len() == nb && values.len() == nb * QK,
            "quantize shapes disagree"
        );
        // SAFETY: only chosen when `available()`; shapes checked above.
        unsafe { quantize_avx2(x, scale_sums, values) }
    }

    /// Same results as the scalar `quantize`: `d = max|x| / 127`, values
    /// rounded to nearest, ties to even.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn quantize_avx2(x: &[f32], scale_sums: &mut [[f32; 2]], values: &mut [i8]) {
        let sign = _mm256_set1_ps(-0.0);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (b, ds) in scale_sums.iter_mut().enumerate() {
            // SAFETY: block b of 32 values exists in `x` and `values`.
            unsafe {
                let p = x.as_ptr().add(b * QK);
                let v = [
                    _mm256_loadu_ps(p),
                    _mm256_loadu_ps(p.add(8)),
                    _mm256_loadu_ps(p.add(16)),
                    _mm256_loadu_ps(p.add(24)),
                ];
                let m = _mm256_max_ps(
                    _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                    _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
                );
                let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
                let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
                let d = amax / 127.0;
                let id = _mm256_set1_ps(if d == 0.0 { 0.0 } else { 1.0 / d });
                let q = [
                    _mm256_cvtps_epi32(_mm256_mul_ps(v[0], id)),
                    _mm256_cvtps_epi32(_mm256_mul_ps(v[1], id)),
                    _mm256_cvtps_epi32(_mm256_mul_ps(v[2], id)),
                    _mm256_cvtps_epi32(_mm256_mul_ps(v[3], id)),
                ];
                let s =
                    _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
                let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
                let sum = _mm_cvtsi128_si32(s);
                let packed = _mm256_packs_epi16(
                    _mm256_packs_epi32(q[0], q[1]),
                    _mm256_packs_epi32(q[2], q[3]),
                );
                let packed = _mm256_permutevar8x32_epi32(packed, order);
                _mm256_storeu_si256(values.as_mut_ptr().add(b * QK).cast(), packed);
                *ds = [d, d * sum as f32];
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
pub(super) use imp::sets;
#[cfg(target_arch = "x86_64")]
pub(super) use imp::{available, kernels};

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn available() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn kernels() -> super::Kernels {
    super::scalar::KERNELS
}
